import numpy as np
import pytest

from apc_edge.coreset import covering_radius, greedy_coreset, random_projection


def test_coreset_covers_every_cluster_and_the_outlier():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 32)) * 20
    pts = np.concatenate([c + rng.standard_normal((400, 32)) for c in centres]).astype(np.float32)
    pts = np.concatenate([pts, np.full((1, 32), 200.0, np.float32)])      # one far outlier
    ids = greedy_coreset(pts, size=8, proj_dim=16, progress=False)
    assert len(set(ids.tolist())) == 8
    assert len(pts) - 1 in ids                                             # k-center picks the outlier
    cluster_of = np.minimum(ids // 400, 5)
    assert set(cluster_of.tolist()) == {0, 1, 2, 3, 4, 5}


def test_coreset_radius_beats_random_subset():
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((3000, 24)).astype(np.float32) ** 3         # heavy tails
    ids = greedy_coreset(pts, ratio=0.02, proj_dim=128, progress=False)
    rand = rng.choice(len(pts), len(ids), replace=False)

    def radius(sel):
        d = np.linalg.norm(pts[:, None, :] - pts[sel][None], axis=2).min(1)
        return d.max()

    assert radius(ids) < radius(rand)


def test_coreset_size_and_errors():
    pts = np.random.default_rng(2).standard_normal((100, 8)).astype(np.float32)
    assert len(greedy_coreset(pts, ratio=0.1, progress=False)) == 10
    assert len(greedy_coreset(pts, ratio=1.0, progress=False)) == 100
    with pytest.raises(ValueError, match="ratio"):
        greedy_coreset(pts, ratio=0.0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        greedy_coreset(pts[:0], ratio=0.5, progress=False)


def test_projection_preserves_distances_roughly():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 1024)).astype(np.float32)
    z = random_projection(x, 128, seed=0)
    d_x = np.linalg.norm(x[0] - x[1:], axis=1)
    d_z = np.linalg.norm(z[0] - z[1:], axis=1)
    assert np.median(np.abs(d_z / d_x - 1)) < 0.1


def textbook_greedy(points: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """One pick at a time, every distance recomputed: the reference the batched coreset must equal."""
    min_d = np.full(len(points), np.inf)
    chosen = [int(np.random.default_rng(seed).integers(len(points)))]
    while True:
        min_d = np.minimum(min_d, ((points.astype(np.float64) - points[chosen[-1]]) ** 2).sum(1))
        if len(chosen) == size:
            return np.array(chosen)
        chosen.append(int(np.argmax(min_d)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_coreset_makes_the_textbook_greedy_picks(seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, 16)) * 6
    pts = (centres[rng.integers(12, size=6000)] + rng.standard_normal((6000, 16))).astype(np.float32)
    ids = greedy_coreset(pts, size=600, proj_dim=128, seed=seed, progress=False)
    ref = textbook_greedy(pts, 600, seed)
    assert ids[0] == ref[0]
    assert set(ids.tolist()) == set(ref.tolist())
    assert covering_radius(pts, ids) == pytest.approx(covering_radius(pts, ref), rel=1e-5)


@pytest.mark.parametrize("max_work", [0.0, 1.0])
def test_pruned_and_lazy_updates_both_make_the_textbook_picks(monkeypatch, max_work):
    """0.0: the cluster pruning is left for lazy updates at the first check; 1.0: it is kept to the end."""
    from apc_edge import coreset

    monkeypatch.setattr(coreset, "PRUNE_MAX_WORK", max_work)
    monkeypatch.setattr(coreset, "PATCHES_PER_CLUSTER", 256)         # 32 clusters of the 8000 rows
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((40, 16)) * 8
    pts = (centres[rng.integers(40, size=8000)] + rng.standard_normal((8000, 16)) * 0.5).astype(np.float32)
    pruning = []
    add = coreset._LazyDistances.add
    monkeypatch.setattr(coreset._LazyDistances, "add", lambda self, rows: (add(self, rows), pruning.append(self.pruning)))
    ids = greedy_coreset(pts, size=800, progress=False)
    ref = textbook_greedy(pts, 800)
    assert set(ids.tolist()) == set(ref.tolist())
    assert all(pruning) == (max_work == 1.0) and pruning[0]
    assert covering_radius(pts, ids) == pytest.approx(covering_radius(pts, ref), rel=1e-5)


def test_a_sample_decides_whether_to_cluster_at_all(monkeypatch):
    from apc_edge import coreset

    monkeypatch.setattr(coreset, "PRUNE_SAMPLE", 4096)
    monkeypatch.setattr(coreset, "SAMPLE_ROWS_PER_CLUSTER", 64)
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((20, 16)) * 10
    tight = (centres[rng.integers(20, size=20000)] + rng.standard_normal((20000, 16)) * 0.3).astype(np.float32)
    spread = rng.standard_normal((20000, 64)).astype(np.float32)       # distances concentrate: nothing to prune
    assert coreset._pruning_pays(tight, 2000, seed=0)
    assert not coreset._pruning_pays(spread, 2000, seed=0)
    ids = greedy_coreset(spread, size=300, proj_dim=128, progress=False)     # the lazy path from the start
    assert set(ids.tolist()) == set(textbook_greedy(spread, 300).tolist())


def test_copies_of_picks_are_never_picked_again():
    pts = np.repeat(np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32), 100, axis=0)
    ids = greedy_coreset(pts, size=10, progress=False)
    assert len(set(ids.tolist())) == len(ids) >= 3                 # no index twice
    assert covering_radius(pts, ids) < 1e-2                        # float rounding of |p|^2 - 2pc + |c|^2
    assert greedy_coreset(np.ones((500, 8), np.float32), size=10, progress=False).size == 1


def test_covering_radius_is_the_largest_distance_to_a_pick():
    pts = np.array([[0, 0], [1, 0], [0, 3], [10, 0]], np.float32)
    assert covering_radius(pts, np.array([0, 3])) == pytest.approx(3.0)
    assert covering_radius(pts, np.arange(4)) == pytest.approx(0.0, abs=1e-3)


def test_coreset_size_is_the_ratio_capped_at_max_bank_rows():
    from apc_edge.export.patchcore import TrainConfig, coreset_size

    assert coreset_size(1_344_415, TrainConfig()) == 80_000                     # 10 % would be 134442
    assert coreset_size(100_000, TrainConfig()) == 10_000                       # under the cap: the ratio
    assert coreset_size(1_344_415, TrainConfig(max_bank_rows=None)) == 134_442
    assert coreset_size(10, TrainConfig(coreset_ratio=0.01)) == 1


def test_threshold_image_limit_scales_with_the_cost_of_each_image():
    from apc_edge.export.patchcore import MIN_THRESHOLD_IMAGES, threshold_image_limit

    assert threshold_image_limit(200, 1024, 20_000) == 200                      # cheap: all asked for
    assert threshold_image_limit(200, 4096, 40_000) == 61                       # 1e10 distances in all
    assert threshold_image_limit(200, 4096, 1_000_000) == MIN_THRESHOLD_IMAGES  # never below the floor
    assert threshold_image_limit(20, 4096, 1_000_000) == 20                     # nor above what was asked
    # searched through HNSW first, each patch costs about a thousand distances, not the whole bank
    assert threshold_image_limit(200, 12_544, 40_000, approximate=True) == 200
    assert threshold_image_limit(200, 12_544, 40_000) == MIN_THRESHOLD_IMAGES


def test_extend_coreset_continues_the_greedy_from_an_existing_bank():
    from apc_edge.coreset import extend_coreset

    rng = np.random.default_rng(5)
    bank = rng.standard_normal((50, 8)).astype(np.float32)
    new = np.concatenate([rng.standard_normal((300, 8)), rng.standard_normal((100, 8)) + 6]).astype(np.float32)
    d2 = ((new[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1).min(1)
    radius = 1.5
    # the one-at-a-time rule: add the farthest new row while it is farther than the radius
    want, md = [], d2.copy()
    while md.max() > radius ** 2:
        j = int(np.argmax(md))
        want.append(j)
        md = np.minimum(md, ((new.astype(np.float64) - new[j]) ** 2).sum(1))
    got = extend_coreset(new, d2.astype(np.float32), radius, limit=1000)
    assert got.tolist() == want and len(want) > 5
    assert got[0] >= 300                                  # the far cluster is what the bank lacked most
    assert extend_coreset(new, d2.astype(np.float32), radius, limit=3).tolist() == want[:3]
    assert extend_coreset(new, d2.astype(np.float32), 100.0, limit=10).size == 0
