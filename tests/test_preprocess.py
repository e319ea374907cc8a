import cv2
import numpy as np
import pytest

from apc_edge.preprocess import Preprocessor, load_image, validate_frame

PRE = Preprocessor(resize=(64, 80), crop=None)


@pytest.mark.parametrize("frame, problem", [
    (np.zeros((64, 64), np.float32), "dtype"),
    (np.zeros((64, 64, 3, 1), np.uint8), "dimensions"),
    (np.zeros((64, 64, 4), np.uint8), "channels"),
    (np.zeros((0, 64), np.uint8), "empty"),
    (np.zeros((10, 64), np.uint8), "too small"),
    ([[1, 2], [3, 4]], "numpy.ndarray"),
])
def test_bad_frames_raise_value_error_naming_the_problem(frame, problem):
    with pytest.raises(ValueError, match=problem):
        validate_frame(frame)


def test_matches_manual_computation():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)   # already model size: no resampling
    x = PRE(frame)
    rgb = frame[:, :, ::-1].astype(np.float32) / 255.0
    expected = ((rgb - np.array(PRE.mean, np.float32)) / np.array(PRE.std, np.float32)).transpose(2, 0, 1)
    assert x.shape == (1, 3, 64, 80) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], expected, rtol=1e-6, atol=1e-6)


def test_batch_writes_every_frame_into_its_own_slot():
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(3)]
    batch = PRE.batch(frames)
    assert batch.shape == (3, 3, 64, 80)
    for frame, x in zip(frames, batch):
        rgb = frame[:, :, ::-1].astype(np.float32) / 255.0
        expected = ((rgb - np.array(PRE.mean, np.float32)) / np.array(PRE.std, np.float32)).transpose(2, 0, 1)
        np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(x, PRE(frame)[0])


def test_mono_frame_equals_grey_bgr_frame():
    rng = np.random.default_rng(1)
    mono = rng.integers(0, 256, (120, 150), dtype=np.uint8)
    bgr = cv2.merge([mono, mono, mono])
    np.testing.assert_array_equal(PRE(mono), PRE(bgr))
    np.testing.assert_array_equal(PRE(mono[:, :, None]), PRE(bgr))


def test_crop_and_map_back_to_frame():
    pre = Preprocessor(resize=(100, 100), crop=(80, 80))
    assert pre.input_hw == (80, 80)
    m = np.zeros((80, 80), np.float32)
    m[30:50, 30:50] = 1.0
    full = pre.map_to_frame(m, (200, 200, 3))
    assert full.shape == (200, 200)
    # The hot square sits at the frame centre; the border outside the crop is filled with the minimum.
    assert full[100, 100] == pytest.approx(1.0)
    assert full[5, 5] == 0.0
    mask = np.zeros((200, 200), bool)
    mask[80:120, 80:120] = True
    assert pre.to_input_grid(mask, nearest=True)[40, 40]


def test_roundtrip_dict():
    pre = Preprocessor(resize=(256, 256), crop=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocessor.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="preprocessing"):
        Preprocessor.from_dict({"resize": [1]})


def test_load_image_errors_and_grey_detection(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "missing.png")
    grey = np.full((40, 40), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), cv2.merge([grey, grey, grey]))
    assert load_image(tmp_path / "g.png").ndim == 2


def test_pad_mode_keeps_pixel_scale_and_maps_back():
    pre = Preprocessor(resize=(64, 96), mode="pad", scale=0.5)
    frame = np.full((60, 40), 200, np.uint8)
    top, left, h, w = pre.placement(frame.shape)
    assert (h, w) == (30, 20) and (top, left) == (17, 38)           # scale 0.5, centred on the canvas
    x = pre(frame)[0]
    assert x.shape == (3, 64, 96)
    assert np.abs(x[:, 0, 0]).max() < 0.01                           # canvas holds the mean colour (~0)
    assert x[0, top + 5, left + 5] > 1.0                             # the frame itself
    big = np.zeros((400, 100), np.uint8)                             # too tall at scale 0.5: shrunk to fit
    assert pre.placement(big.shape)[2] == 64
    m = np.zeros((64, 96), np.float32)
    m[top:top + h, left:left + w] = 1.0
    assert np.all(pre.map_to_frame(m, frame.shape) == 1.0)           # only the frame's region maps back
    assert pre.to_input_grid(np.ones((60, 40), bool), nearest=True).shape == (30, 20)
    on_canvas = pre.to_input_canvas(np.ones((60, 40), bool), nearest=True)      # aligned with pre(frame)
    assert on_canvas.shape == (64, 96) and on_canvas.sum() == 30 * 20
    assert on_canvas[top:top + h, left:left + w].all()
    assert Preprocessor.from_dict(pre.to_dict()) == pre


def test_pad_mode_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        Preprocessor(mode="zoom")
    with pytest.raises(ValueError, match="pad mode"):
        Preprocessor(mode="pad", crop=(10, 10))


def test_16_bit_frames_scale_by_the_models_bit_depth_not_by_their_own_maximum(tmp_path):
    from apc_edge.preprocess import bit_depth_of, to_8bit

    dark = np.full((40, 40), 1000, np.uint16)
    bright = np.full((40, 40), 4095, np.uint16)
    assert bit_depth_of(bright) == 12 and bit_depth_of(np.zeros((4, 4), np.uint16)) == 9
    assert bit_depth_of(np.zeros((4, 4), np.uint8)) == 8
    assert to_8bit(bright, 12).max() == 255 and to_8bit(dark, 12).max() == round(1000 * 255 / 4095)
    twelve = Preprocessor(resize=(32, 32), bit_depth=12)
    eight = Preprocessor(resize=(32, 32))
    as_uint8 = np.full((40, 40), round(1000 * 255 / 4095), np.uint8)
    np.testing.assert_allclose(twelve(dark), twelve(as_uint8), atol=1e-6)
    np.testing.assert_allclose(eight(dark.astype(np.uint16) * 16), eight(to_8bit(dark * 16, 16)), atol=1e-6)
    assert not np.allclose(twelve(dark), twelve(bright))          # brightness survives: no per-image stretch
    cv2.imwrite(str(tmp_path / "d.png"), dark)
    assert load_image(tmp_path / "d.png").dtype == np.uint16
    assert load_image(tmp_path / "d.png", bit_depth=12).dtype == np.uint8
    with pytest.raises(ValueError, match="bit_depth"):
        Preprocessor(bit_depth=17)
    with pytest.raises(ValueError, match="bit depth"):
        to_8bit(dark, 8)


def test_training_records_the_bit_depth_of_16_bit_images(synthetic_category, tmp_path):
    """A 12-bit data set (16-bit PNGs holding 0..4095) trains with bit_depth 12, and a model dir scores a
    uint16 frame exactly as its 8-bit equivalent."""
    import shutil

    from apc_edge import Inspector
    from apc_edge.export.model_export import ExportOptions, export_model
    from apc_edge.export.patchcore import TrainConfig, fit_patchcore

    data = tmp_path / "washer12"
    shutil.copytree(synthetic_category, data)
    for png in (data / "train" / "good").glob("*.png"):
        img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(png), (img.astype(np.uint32) * 4095 // 255).astype(np.uint16))
    info = fit_patchcore(data, tmp_path / "run", TrainConfig(resize=(64, 64), coreset_ratio=0.5))
    assert info["preprocess"]["bit_depth"] == 12
    export_model(tmp_path / "run", tmp_path / "model", options=ExportOptions(target="onnx", index="exact"))
    inspector = Inspector(tmp_path / "model")
    assert inspector.preprocessor.bit_depth == 12
    frame8 = load_image(sorted((data / "test" / "good").glob("*.png"))[0])
    frame12 = (frame8.astype(np.uint32) * 4095 // 255).astype(np.uint16)
    assert inspector.check(frame12).raw_score == pytest.approx(inspector.check(to8(frame12)).raw_score, rel=1e-5)


def to8(frame12):
    from apc_edge.preprocess import to_8bit

    return to_8bit(frame12, 12)
