import numpy as np
import pytest

from apc_edge.export.coreset import greedy_coreset, random_projection


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
