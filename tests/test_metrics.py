"""Tests for apc_edge.calibration.metrics (scikit-learn / scipy only as references here)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from apc_edge.calibration import metrics as M

SEEDS = range(40)


def _random_binary(seed: int):
    """Random labels/scores with many ties (scores rounded to a coarse grid)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False  # both classes
    rng.shuffle(labels)
    scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 2), int(rng.integers(0, 3)))
    return labels.astype(int), scores


def _sk_best_f1(labels, scores) -> float:
    p, r, _ = precision_recall_curve(labels, scores)
    p, r = p[:-1], r[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return float(f1.max())


# --------------------------------------------------------------------------- #
# image level: hand cases
# --------------------------------------------------------------------------- #
def test_auroc_perfect_inverted_and_ties():
    y = [0, 0, 0, 1, 1]
    assert M.auroc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert M.auroc(y, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0
    assert M.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # ties: pos {0.5, 0.9} vs neg {0.5, 0.2}: 0.5 + 1 + 1 + 1 = 3.5 of 4 pairs
    assert M.auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    assert M.auroc([0, 1], [3.0, 3.0]) == 0.5
    assert isinstance(M.auroc([False, True], [0.0, 1.0]), float)


def test_roc_curve_hand_case():
    fpr, tpr, thr = M.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    # ties collapse to one point
    fpr, tpr, thr = M.roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5, 0.2])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])


def test_f1_hand_case():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # t=.8: 2/3, t=.4: 1/2, t=.35: 4/5, t=.1: 4/6
    assert M.best_f1(y, s) == (0.8, 0.35)
    assert M.f1_at(y, s, 0.35) == pytest.approx(0.8)
    assert M.f1_at(y, s, 0.4) == pytest.approx(0.5)
    assert M.f1_at(y, s, 0.8) == pytest.approx(2 / 3)
    assert M.f1_at(y, s, 5.0) == 0.0
    assert M.f1_at(y, s, -5.0) == pytest.approx(2 / 3)
    # equal best F1 at .9 (2/3) and .2 (2/3): the higher threshold wins
    f1, t = M.best_f1([1, 0, 0, 1], [0.9, 0.5, 0.4, 0.2])
    assert f1 == pytest.approx(2 / 3) and t == 0.9


def test_threshold_for_recall_hand_case():
    y, s = [0, 0, 1, 1, 1, 1], [0.1, 0.5, 0.2, 0.4, 0.6, 0.9]  # defect scores .9 .6 .4 .2
    assert M.threshold_for_recall(y, s, 1.0) == 0.2
    assert M.threshold_for_recall(y, s, 0.75) == 0.4
    assert M.threshold_for_recall(y, s, 0.5) == 0.6
    assert M.threshold_for_recall(y, s, 0.3) == 0.6
    assert M.threshold_for_recall(y, s, 0.25) == 0.9
    assert M.threshold_for_recall(y, s, 0.01) == 0.9
    # k/n rounding: 0.3 * 10 is 3.0000000000000004 in floats, still 3 defects suffice
    y10 = [1] * 10 + [0]
    s10 = list(range(10, 0, -1)) + [0]
    assert M.threshold_for_recall(y10, s10, 0.3) == 8
    assert M.threshold_for_recall(y10, s10, 0.7) == 4


def test_threshold_for_false_alarm_hand_case():
    good = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert M.threshold_for_false_alarm(good, 0.1) == pytest.approx(0.95)
    assert M.threshold_for_false_alarm(good, 0.25) == pytest.approx(0.85)  # 2 alarms allowed
    assert M.threshold_for_false_alarm(good, 0.3) == pytest.approx(0.75)   # 0.3 * 10 rounding
    t0 = M.threshold_for_false_alarm(good, 0.0)
    assert t0 == np.nextafter(1.0, 2.0)
    assert M.threshold_for_false_alarm(good, 0.05) == t0
    # ties: five scores, two distinct values
    tied = [1, 1, 1, 2, 2]
    assert M.threshold_for_false_alarm(tied, 0.4) == 1.5
    assert M.threshold_for_false_alarm(tied, 0.2) == np.nextafter(2.0, 3.0)  # cannot cut between tied 2s
    assert M.threshold_for_false_alarm(tied, 0.99) == 1.5
    assert M.threshold_for_false_alarm([1.0, np.nextafter(1.0, 2.0)], 0.5) == np.nextafter(1.0, 2.0)


# --------------------------------------------------------------------------- #
# image level: agreement with scikit-learn and brute force
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", SEEDS)
def test_agrees_with_sklearn(seed):
    y, s = _random_binary(seed)
    assert abs(M.auroc(y, s) - roc_auc_score(y, s)) < 1e-9
    fpr, tpr, thr = M.roc_curve(y, s)
    sfpr, stpr, sthr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr, atol=1e-12)
    np.testing.assert_allclose(tpr, stpr, atol=1e-12)
    np.testing.assert_array_equal(thr[1:], sthr[1:])
    assert thr[0] == np.inf
    f1, t = M.best_f1(y, s)
    assert abs(f1 - _sk_best_f1(y, s)) < 1e-12
    assert M.f1_at(y, s, t) == pytest.approx(f1, abs=1e-15)
    assert t in set(s.tolist())


@pytest.mark.parametrize("seed", SEEDS)
def test_thresholds_brute_force(seed):
    y, s = _random_binary(seed)
    y = np.asarray(y, bool)
    rng = np.random.default_rng(seed + 1000)
    distinct = np.unique(s)
    for target in rng.uniform(0.01, 1.0, 5).tolist() + [1.0]:
        t = M.threshold_for_recall(y, s, target)
        ok = [c for c in distinct if np.mean(s[y] >= c) >= target]
        assert t == max(ok)
    good = s[~y]
    for a in rng.uniform(0, 0.99, 5).tolist() + [0.0]:
        t = M.threshold_for_false_alarm(good, a)
        assert np.mean(good >= t) <= a
        lower = good[good < t]
        if lower.size:  # any lower good score as threshold would exceed the budget
            assert np.mean(good >= lower.max()) > a


# --------------------------------------------------------------------------- #
# pixel level
# --------------------------------------------------------------------------- #
def _random_pixels(seed: int, n: int = 6, shape=(24, 32), levels: int | None = 64):
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n):
        m = np.zeros(shape, np.uint8)
        if i % 3 != 2:  # some good images with empty masks
            for _ in range(int(rng.integers(1, 4))):
                r0, c0 = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
                h, w = rng.integers(1, 8, 2)
                m[r0:r0 + h, c0:c0 + w] = 255
        x = rng.normal(size=shape) + (m > 0) * rng.uniform(0.5, 3.0) + rng.normal(size=shape) * (m > 0)
        if levels:
            x = np.round(x * levels / 8) / (levels / 8)  # ties
        masks.append(m if i % 2 else m > 0)  # mixed 0/255 and bool masks
        maps.append(x.astype(np.float32))
    return masks, maps


def _flat(masks, maps):
    y = np.concatenate([np.asarray(m).ravel() != 0 for m in masks]).astype(int)
    s = np.concatenate([np.asarray(x).ravel() for x in maps])
    return y, s


@pytest.mark.parametrize("seed", range(15))
def test_pixel_auroc_and_f1_agree_with_sklearn(seed):
    masks, maps = _random_pixels(seed, levels=None if seed % 3 == 0 else 64)
    y, s = _flat(masks, maps)
    assert abs(M.pixel_auroc(masks, maps) - roc_auc_score(y, s)) < 1e-9
    f1, t = M.pixel_f1(masks, maps)
    exact = _sk_best_f1(y, s)
    assert f1 <= exact + 1e-12          # grid search is a lower bound
    assert exact - f1 < 2e-3            # documented binning tolerance
    assert M.f1_at(y, s, t) == pytest.approx(f1, abs=1e-12)  # F1 exact at the returned threshold


def test_pixel_f1_coarse_grid_and_outlier():
    masks, maps = _random_pixels(3, levels=None)
    maps[0] = maps[0].copy()
    maps[0][0, 0] = 1e6  # an outlier stretching the range: the defect-score quantiles keep the grid useful
    y, s = _flat(masks, maps)
    exact = _sk_best_f1(y, s)
    f1, t = M.pixel_f1(masks, maps)
    assert exact - 2e-3 < f1 <= exact + 1e-12
    f1_coarse, t_coarse = M.pixel_f1(masks, maps, num_bins=10)
    assert f1_coarse <= f1 + 1e-12
    assert M.f1_at(y, s, t_coarse) == pytest.approx(f1_coarse, abs=1e-12)


def test_pixel_metrics_stacked_and_ragged_inputs():
    masks, maps = _random_pixels(7)
    stacked = M.pixel_auroc(np.stack(masks).astype(bool), np.stack(maps))
    assert stacked == M.pixel_auroc(masks, maps)
    # images of different sizes, float64 and uint8 maps
    m2 = [masks[0], np.zeros((5, 7), bool)]
    x2 = [maps[0].astype(np.float64), np.zeros((5, 7), np.uint8)]
    y, s = _flat(m2, x2)
    assert abs(M.pixel_auroc(m2, x2) - roc_auc_score(y, s)) < 1e-9
    assert 0.0 <= M.pro_auc(m2, x2) <= 1.0
    assert isinstance(M.pixel_f1(m2, x2)[0], float)


def test_binner_matches_searchsorted():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = np.round(rng.normal(size=20000), 2).astype(dtype)
        thr = np.unique(np.r_[rng.choice(x, 300), x.min(), np.nextafter(x.max(), dtype(np.inf))].astype(dtype))
        b = M._Binner(thr, float(x.min()), float(x.max()), fine_bins=1 << 10)
        np.testing.assert_array_equal(b.index(x), np.searchsorted(thr, x, side="right"))
        np.testing.assert_array_equal(b.index(thr), np.searchsorted(thr, thr, side="right"))
    const = np.full(50, 2.0, np.float32)
    b = M._Binner(np.array([2.0], np.float32), 2.0, 2.0)
    np.testing.assert_array_equal(b.index(const), np.ones(50))


# --------------------------------------------------------------------------- #
# PRO
# --------------------------------------------------------------------------- #
def _two_region_case():
    """Region A (2x2) fully above 1.0, region B (2x4) half above; normal pixels 0."""
    mask = np.zeros((10, 10), np.uint8)
    amap = np.zeros((10, 10), np.float32)
    mask[1:3, 1:3] = 255
    amap[1:3, 1:3] = 1.0
    mask[6:8, 2:6] = 255
    amap[6:8, 2:4] = 1.0
    return mask, amap


def test_pro_two_regions_hand_case():
    mask, amap = _two_region_case()
    fpr, pro, thr = M.pro_curve([mask], [amap])
    at1 = np.flatnonzero((thr > 0) & (thr <= 1.0))  # any threshold in (0, 1] means "map >= 1"
    assert at1.size
    assert np.all(pro[at1] == 0.75)   # (1 + 0.5) / 2
    assert np.all(fpr[at1] == 0.0)
    at0 = np.flatnonzero(thr == 0.0)[0]
    assert pro[at0] == 1.0 and fpr[at0] == 1.0
    # curve (0,0) -> (0,.75) -> (1,1): integral to .3 is .75*.3 + .25*.3**2/2, over .3
    assert M.pro_auc([mask], [amap]) == pytest.approx(0.7875)
    assert M.pro_auc([mask], [amap], max_fpr=1.0) == pytest.approx(0.875)


def test_pro_empty_mask_images_only_count_as_normal():
    mask, amap = _two_region_case()
    good_low = (np.zeros((10, 10), bool), np.zeros((10, 10), np.float32))
    assert M.pro_auc([mask, good_low[0]], [amap, good_low[1]]) == pytest.approx(0.7875)
    # a good image that fires everywhere at 1.0: FPR at t=1 becomes 100/188, PRO stays .75
    good_high = (np.zeros((10, 10), np.uint8), np.ones((10, 10), np.float32))
    expected = 0.75 * 0.3 / (100 / 188) / 2  # linear from (0,0) to (100/188, .75), normalised
    assert M.pro_auc([mask, good_high[0]], [amap, good_high[1]]) == pytest.approx(expected)


def test_pro_uses_8_connectivity():
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True
    mask[2, 2] = True  # touches the 2x2 block diagonally only
    amap = np.zeros((8, 8), np.float32)
    amap[2, 2] = 1.0
    fpr, pro, thr = M.pro_curve([mask], [amap])
    i = np.flatnonzero((thr > 0) & (thr <= 1.0))[0]
    assert pro[i] == pytest.approx(0.2)  # one region of 5 pixels (4-connectivity would give 0.5)


def test_pro_perfect_and_constant_maps():
    masks, _ = _random_pixels(1)
    perfect = [(np.asarray(m) != 0).astype(np.float32) for m in masks]
    assert M.pro_auc(masks, perfect) == pytest.approx(1.0)
    constant = [np.full(np.shape(m), 0.5, np.float32) for m in masks]
    assert M.pro_auc(masks, constant) == pytest.approx(0.15)  # curve (0,0)->(1,1): max_fpr / 2
    assert M.pro_auc(masks, constant) < 0.2


def _reference_pro_curve(masks, maps, thresholds):
    """Slow, explicit PRO curve: loop over thresholds and regions (scipy labelling)."""
    regions, normals = [], []
    for m, x in zip(masks, maps):
        m = np.asarray(m) != 0
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(lab == r, x) for r in range(1, n + 1)]
        normals.append(x[~m])
    normals = np.concatenate(normals)
    fpr, pro = [], []
    for t in thresholds:
        fpr.append(np.mean(normals >= t))
        pro.append(np.mean([np.sum(x[r] >= t) / np.sum(r) for r, x in regions]))
    return np.array(fpr), np.array(pro)


def _reference_pro_auc(masks, maps, max_fpr):
    s = np.unique(np.concatenate([np.ravel(x) for x in maps]))
    fpr, pro = _reference_pro_curve(masks, maps, np.r_[np.inf, s[::-1]])
    keep = fpr <= max_fpr
    x, y = list(fpr[keep]), list(pro[keep])
    j = np.flatnonzero(~keep)
    if j.size:
        j = j[0]
        y.append(pro[j - 1] + (pro[j] - pro[j - 1]) * (max_fpr - fpr[j - 1]) / (fpr[j] - fpr[j - 1]))
        x.append(max_fpr)
    x, y = np.array(x), np.array(y)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / max_fpr)


@pytest.mark.parametrize("seed", range(8))
def test_pro_agrees_with_slow_reference(seed):
    masks, maps = _random_pixels(seed, n=5, shape=(20, 24), levels=None if seed % 2 else 32)
    max_fpr = [0.3, 0.05, 0.5, 1.0][seed % 4]
    # same thresholds: identical curve
    fpr, pro, thr = M.pro_curve(masks, maps, max_fpr=max_fpr)
    rfpr, rpro = _reference_pro_curve(masks, maps, thr)
    np.testing.assert_allclose(fpr, rfpr, atol=1e-12)
    np.testing.assert_allclose(pro, rpro, atol=1e-12)
    assert np.all(np.diff(fpr) >= 0)
    # bounded grid vs every distinct score
    ref = _reference_pro_auc(masks, maps, max_fpr)
    assert abs(M.pro_auc(masks, maps, max_fpr=max_fpr) - ref) < 1e-3
    assert abs(M.pro_auc(masks, maps, max_fpr=max_fpr, num_thresholds=1000) - ref) < 2e-4


# --------------------------------------------------------------------------- #
# errors and import hygiene
# --------------------------------------------------------------------------- #
LABEL_FUNCS = [
    lambda y, s: M.roc_curve(y, s),
    lambda y, s: M.auroc(y, s),
    lambda y, s: M.best_f1(y, s),
    lambda y, s: M.f1_at(y, s, 0.5),
    lambda y, s: M.threshold_for_recall(y, s, 0.5),
]


@pytest.mark.parametrize("func", LABEL_FUNCS)
@pytest.mark.parametrize("labels, scores, match", [
    ([0, 1, 1], [0.1, 0.2], "labels has 3 elements but scores has 2"),
    ([], [], "empty"),
    ([0, 0, 0], [0.1, 0.2, 0.3], "only one class"),
    ([1, 1], [0.1, 0.2], "only one class"),
    ([0, 1], [0.1, np.nan], "scores contains NaN"),
    ([0, 1], [0.1, np.inf], "scores contains infinite"),
    ([0, 2], [0.1, 0.2], "labels must be 0/1"),
    (["a", "b"], [0.1, 0.2], "labels must be 0/1"),
    ([[0, 1]], [0.1, 0.2], "labels must be 1-D"),
    ([0, 1], [[0.1, 0.2]], "scores must be 1-D"),
    ([0, 1], ["x", "y"], "scores must be real numbers"),
])
def test_label_score_errors(func, labels, scores, match):
    with pytest.raises(ValueError, match=match):
        func(labels, scores)


def test_argument_errors():
    y, s = [0, 1, 1], [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="threshold is NaN"):
        M.f1_at(y, s, float("nan"))
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="recall must be in"):
            M.threshold_for_recall(y, s, bad)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="max_false_alarm must be in"):
            M.threshold_for_false_alarm(s, bad)
    with pytest.raises(ValueError, match="good_scores is empty"):
        M.threshold_for_false_alarm([], 0.1)
    with pytest.raises(ValueError, match="good_scores contains NaN"):
        M.threshold_for_false_alarm([0.1, np.nan], 0.1)
    with pytest.raises(ValueError, match="good_scores must be 1-D"):
        M.threshold_for_false_alarm([[0.1]], 0.1)


PIXEL_FUNCS = [M.pixel_auroc, M.pixel_f1, M.pro_auc, M.pro_curve]


@pytest.mark.parametrize("func", PIXEL_FUNCS)
def test_pixel_errors(func):
    m = np.zeros((10, 10), bool)
    m[2:4, 2:4] = True
    x = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    cases = [
        (([m, m], [x]), "got 2 masks but 1 maps"),
        (([], []), "masks and maps are empty"),
        (([m, m], [x, x[:, :8]]), r"masks\[1\] has shape \(10, 10\) but maps\[1\] has \(10, 8\)"),
        (([m], [x[None]]), r"maps\[0\] must be 2-D"),
        (([m[None]], [x]), r"masks\[0\] must be 2-D"),
        (([m[:0]], [x[:0]]), r"maps\[0\] is empty"),
        (([m, m], [x, np.where(m, np.nan, x)]), r"maps\[1\] contains NaN"),
        (([m], [np.where(m, np.inf, x)]), r"maps\[0\] contains infinite"),
        (([np.zeros_like(m)], [x]), "all masks are empty"),
        (([np.ones_like(m)], [x]), "all mask pixels are anomalous"),
        (([m], [np.full((10, 10), "a")]), r"maps\[0\] must be real numbers"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            func(*args)


def test_pixel_argument_errors():
    m = np.zeros((10, 10), bool)
    m[2:4, 2:4] = True
    x = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="max_fpr must be in"):
            M.pro_auc([m], [x], max_fpr=bad)
    for bad in (1, 2.5):
        with pytest.raises(ValueError, match="num_thresholds must be"):
            M.pro_auc([m], [x], num_thresholds=bad)
    with pytest.raises(ValueError, match="num_bins must be"):
        M.pixel_f1([m], [x], num_bins=0)


def test_metrics_return_python_floats():
    y, s = _random_binary(0)
    masks, maps = _random_pixels(0)
    values = [M.auroc(y, s), *M.best_f1(y, s), M.f1_at(y, s, 0.0), M.threshold_for_recall(y, s, 0.5),
              M.threshold_for_false_alarm(s, 0.1), M.pixel_auroc(masks, maps), *M.pixel_f1(masks, maps),
              M.pro_auc(masks, maps)]
    assert all(type(v) is float for v in values)


def test_import_is_torch_and_sklearn_free():
    code = ("import sys, apc_edge.calibration.metrics; "
            "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pixel_metrics_at_a_fixed_size_weigh_each_image_the_same():
    """Native grids count a large image's pixels more; resized to one size, each image counts the same."""
    from apc_edge.calibration.evaluate import ScoredSample, pixel_metrics_at
    big_mask = np.zeros((40, 40), bool)
    big_mask[:20] = True                                   # a perfectly found defect on a large image
    small_good = np.full((4, 4), 2.0, np.float32)          # a small good image scored above every defect
    scored = [ScoredSample(None, 0.0, 0.0, big_mask.astype(np.float32), big_mask),
              ScoredSample(None, 0.0, 0.0, small_good, np.zeros((4, 4), bool))]
    native = M.pixel_auroc([s.input_mask for s in scored], [s.input_map for s in scored])
    assert native == pytest.approx(800 / 816)              # 800 defect pixels above 800 of 816 good ones
    fixed = pixel_metrics_at(scored, (4, 4))
    assert fixed["size"] == [4, 4]
    assert fixed["pixel_auroc"] == pytest.approx(8 / 24)   # at 4x4: 8 defect pixels above 8 of 24 good ones
