"""Inspector on exported model dirs: verdicts, maps, bad frames, threshold override."""
import cv2
import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.preprocess import load_image


@pytest.fixture(scope="module")
def inspector(model_dir_openvino):
    return Inspector(model_dir_openvino)


def test_defects_score_above_goods(inspector, synthetic_category):
    samples = MVTecCategory(synthetic_category).test_samples()
    good = [inspector.check(load_image(s.path)).raw_score for s in samples if not s.is_anomalous]
    bad = [inspector.check(load_image(s.path)).raw_score for s in samples if s.is_anomalous]
    assert np.mean(bad) > np.mean(good)
    assert max(bad) > max(good)


def test_result_fields(inspector, synthetic_category):
    frame = load_image(next(iter(MVTecCategory(synthetic_category).test_samples())).path)
    r = inspector.check(frame)
    assert r.anomaly_map.shape == frame.shape[:2] and r.anomaly_map.dtype == np.float32
    assert 0.0 <= r.score <= 1.0
    assert r.is_anomalous == (r.raw_score >= inspector.threshold)
    assert set(r.timings) == {"preprocess", "backbone", "search", "scoring", "map", "total"}
    assert inspector.check(frame, with_map=False).anomaly_map is None


def test_odd_sizes_and_the_training_images_channels(inspector, model_dir_openvino):
    import json

    assert json.loads((model_dir_openvino / "manifest.json").read_text())["preprocess"]["channels"] == "color"
    rng = np.random.default_rng(0)
    assert inspector.check(rng.integers(0, 256, (97, 411, 3), dtype=np.uint8)).anomaly_map.shape == (97, 411)
    for shape in [(300, 200), (300, 200, 1)]:      # a colour model cannot see colour defects in a mono frame
        with pytest.raises(ValueError, match="mono .* trained on colour images"):
            inspector.check(rng.integers(0, 256, shape, dtype=np.uint8))


def test_a_mono_model_turns_colour_frames_grey_as_it_was_trained():
    from apc_edge.preprocess import Preprocessor

    pre = Preprocessor(resize=(64, 64), channels="mono")
    colour = np.random.default_rng(1).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(pre(colour), pre(grey))
    anything = Preprocessor(resize=(64, 64))                  # models made before channels were recorded
    assert anything.channels == "any" and anything(grey).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="channels"):
        Preprocessor(channels="rgb")


@pytest.mark.parametrize("frame, problem", [
    (np.zeros((100, 100, 3), np.float32), "dtype"),
    (np.zeros((100, 100, 3), np.int16), "dtype"),
    (np.zeros((100, 100, 2), np.uint8), "channels"),
    (np.zeros((4, 100), np.uint8), "too small"),
    (np.zeros((100,), np.uint8), "dimensions"),
    (None, "ndarray"),
])
def test_bad_frames(inspector, frame, problem):
    with pytest.raises(ValueError, match=problem):
        inspector.check(frame)


def test_threshold_override_moves_verdict_and_normalization(model_dir_openvino, synthetic_category):
    frame = load_image(MVTecCategory(synthetic_category).test_samples()[0].path)
    base = Inspector(model_dir_openvino)
    raw = base.check(frame).raw_score
    low = Inspector(model_dir_openvino, threshold=raw * 0.5)
    high = Inspector(model_dir_openvino, threshold=raw * 2.0)
    assert low.check(frame).is_anomalous and not high.check(frame).is_anomalous
    base.threshold = raw
    r = base.check(frame)
    assert r.is_anomalous and r.score == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="threshold"):
        base.threshold = -1.0


def test_openvino_and_onnxruntime_agree(model_dir_openvino, model_dir_onnx, synthetic_category):
    ov, ort = Inspector(model_dir_openvino), Inspector(model_dir_onnx)
    assert ov.backend.name == "openvino" and ort.backend.name == "onnxruntime"
    for s in MVTecCategory(synthetic_category).test_samples()[:4]:
        frame = load_image(s.path)
        assert ov.check(frame).raw_score == pytest.approx(ort.check(frame).raw_score, rel=1e-4)


def test_a_frame_over_the_pixel_limit_is_refused_not_resized(model_dir_openvino):
    small = Inspector(model_dir_openvino, max_frame_pixels=300 * 300)
    with pytest.raises(ValueError, match="frame is too large: 400x300 = 120000 pixels, more than the limit of 90000"):
        small.check(np.zeros((300, 400, 3), np.uint8))
    assert small.check(np.zeros((300, 300, 3), np.uint8)).raw_score >= 0
    with pytest.raises(ValueError, match="max_frame_pixels"):
        Inspector(model_dir_openvino, max_frame_pixels=0)
    from apc_edge.preprocess import MAX_FRAME_PIXELS, validate_frame
    big = np.zeros((1, 1, 3), np.uint8)
    big = np.broadcast_to(big, (10001, 10000, 3))            # 100 010 000 pixels, no memory behind it
    with pytest.raises(ValueError, match="too large"):
        validate_frame(big)
    assert validate_frame(big, max_pixels=2 * MAX_FRAME_PIXELS) is big   # a larger limit is the caller's


def test_the_image_score_is_the_map_peak_recorded_at_training_and_older_dirs_keep_the_maximum(
        model_dir_openvino, synthetic_category, tmp_path):
    """apc-train records the map-peak rule; the runtime scores by it, and a dir made before it (no
    ``scoring.peak_sigma``) keeps the most anomalous patch, which its threshold was set on."""
    import json
    import shutil

    manifest = json.loads((model_dir_openvino / "manifest.json").read_text())
    assert manifest["scoring"]["peak_sigma"] == pytest.approx(np.sqrt(16 + 64 / 6) / 8, abs=1e-5)
    older = tmp_path / "older"
    shutil.copytree(model_dir_openvino, older)
    del manifest["scoring"]["peak_sigma"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    peak, maximum = Inspector(model_dir_openvino), Inspector(older)
    assert peak.peak_sigma > 0 and maximum.peak_sigma == 0
    for s in MVTecCategory(synthetic_category).test_samples()[:4]:
        frame = load_image(s.path)
        # smoothing lowers the hottest patch: the peak's score lies below the maximum's
        assert 0 < peak.check(frame).raw_score < maximum.check(frame).raw_score
