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
