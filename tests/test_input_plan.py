"""The model input chosen from the training images' sizes (export/input_plan.py, patchcore.resolve_input)."""
import cv2
import numpy as np
import pytest

from apc_edge.export.input_plan import (MAX_INPUT_PIXELS, MIN_SCALE, PIXEL_BUDGET, SIDE_STEP, image_facts,
                                        plan_input)
from apc_edge.export.patchcore import TrainConfig, part_patch_rows, resolve_input


def test_one_camera_size_is_stretched_with_its_aspect_ratio_and_a_pixel_budget():
    square = plan_input([(900, 900)] * 5)
    assert (square.mode, square.resize) == ("stretch", (512, 512))
    tall = plan_input([(1260, 500)] * 5)
    assert tall.mode == "stretch"
    h, w = tall.resize
    assert h % SIDE_STEP == 0 and w % SIDE_STEP == 0
    assert h * w <= PIXEL_BUDGET * 1.05
    assert abs(h / w - 1260 / 500) < 0.1          # not squashed to a square


def test_small_images_keep_their_scale_and_tiny_ones_are_enlarged():
    texture = plan_input([(512, 512)] * 3)
    assert texture.resize == (512, 512) and texture.scale == pytest.approx(1.0)
    mid = plan_input([(320, 320)] * 3)
    assert mid.resize == (320, 320)
    tiny = plan_input([(100, 120)] * 3)
    assert min(tiny.resize) >= 256


def test_high_resolution_images_are_shrunk_at_most_by_half_until_the_input_cap():
    # 1024x1024 (MVTec's texture size) is halved onto the budget as before.
    assert plan_input([(1024, 1024)] * 3).resize == (512, 512)
    # 2 MP: squeezing it into 512x512 pixels would shrink a 4 px defect to 1.5 px; it is halved instead.
    two_mp = plan_input([(1200, 1600)] * 3)
    assert two_mp.scale == pytest.approx(MIN_SCALE)
    assert two_mp.resize == (608, 800) and "1.8x" in two_mp.reason
    # 5 MP and 12 MP cameras: the input grows to the cap, no further.
    for hw in [(2048, 2448), (3000, 4096)]:
        plan = plan_input([hw] * 3)
        h, w = plan.resize
        assert PIXEL_BUDGET < h * w <= MAX_INPUT_PIXELS * 1.05
        assert abs(h / w - hw[0] / hw[1]) < 0.05
        assert "largest input allowed" in plan.reason
    # Pad mode follows the same rule for its median image.
    varied = plan_input([(1100, 1500), (1200, 1600), (1300, 1700)])
    assert varied.mode == "pad" and varied.scale == pytest.approx(MIN_SCALE)


def test_varying_sizes_give_pad_mode_with_a_canvas_for_the_large_ones():
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in zip(rng.integers(200, 400, 50), rng.integers(100, 620, 50))]
    plan = plan_input(sizes)
    assert plan.mode == "pad"
    h95, w95 = np.percentile([s[0] for s in sizes], 95), np.percentile([s[1] for s in sizes], 95)
    assert plan.resize[0] >= h95 * plan.scale and plan.resize[1] >= w95 * plan.scale
    assert "vary" in plan.reason


def test_sizes_within_two_percent_count_as_one_size():
    assert plan_input([(900, 900), (905, 898), (896, 900)]).mode == "stretch"
    assert plan_input([(900, 900), (960, 900)]).mode == "pad"


def test_a_forced_mode_is_planned_with_that_mode():
    assert plan_input([(900, 900)] * 3, mode="pad").mode == "pad"
    assert plan_input([(300, 200), (200, 300)], mode="stretch").mode == "stretch"
    with pytest.raises(ValueError, match="mode"):
        plan_input([(10, 10)], mode="tile")
    with pytest.raises(ValueError, match="no image sizes"):
        plan_input([])


def _write(tmp_path, sizes):
    paths = []
    for i, (h, w) in enumerate(sizes):
        p = tmp_path / f"{i:03d}.png"
        cv2.imwrite(str(p), np.full((h, w, 3), 100, np.uint8))
        paths.append(p)
    return paths


def test_resolve_input_keeps_what_the_user_gave_and_plans_the_rest(tmp_path):
    paths = _write(tmp_path, [(300, 200), (250, 400), (350, 300)])
    assert image_facts(paths)[0] == [(300, 200), (250, 400), (350, 300)]
    planned = resolve_input(TrainConfig(), paths)
    assert planned.resize_mode == "pad" and planned.scale > 0 and planned.input_plan["reason"]
    given = resolve_input(TrainConfig(resize=(224, 224)), paths)
    assert (given.resize_mode, given.resize, given.input_plan["reason"]) == ("stretch", (224, 224), "given by the user")
    pad_scale = resolve_input(TrainConfig(resize_mode="pad", scale=0.5), paths)
    assert pad_scale.scale == 0.5 and "0.500 (given)" in pad_scale.input_plan["reason"]
    assert pad_scale.resize < planned.resize and pad_scale.resize[1] >= 0.5 * 380    # canvas planned for the scale
    assert resolve_input(planned, paths) is planned                      # settled once
    with pytest.raises(ValueError, match="resize_mode"):
        resolve_input(TrainConfig(resize_mode="squash"), paths)


def test_resolve_input_names_an_unreadable_image(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="x.png"):
        resolve_input(TrainConfig(), [bad])


def test_part_patch_rows_keeps_each_images_region_cells_only():
    a = np.zeros((2, 3), bool)
    a[0, 1] = True
    b = np.ones((2, 3), bool)
    assert part_patch_rows([a, b], (2, 3)).tolist() == [1, 6, 7, 8, 9, 10, 11]
    assert part_patch_rows([None, a], (2, 3)).tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert part_patch_rows([None, None], (2, 3)) is None


def test_the_canvas_holds_every_training_image_unless_outliers_would_double_it():
    sizes = [(300, 300)] * 40 + [(340, 420)] * 10
    plan = plan_input(sizes)
    assert plan.mode == "pad" and plan.resize[0] >= 340 * plan.scale and plan.resize[1] >= 420 * plan.scale
    assert "every training image" in plan.reason
    with_outlier = plan_input(sizes + [(1800, 2400)])           # one huge image: the 95th percentile decides
    assert with_outlier.resize == plan.resize and "shrunk to fit" in with_outlier.reason


def test_the_training_images_kind_is_recorded_for_the_runtime(tmp_path):
    from apc_edge.export.input_plan import channels_of

    colour = []
    for i in range(2):
        colour.append(tmp_path / f"c{i}.png")
        cv2.imwrite(str(colour[-1]), np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((64, 64), 90, np.uint8))
    assert resolve_input(TrainConfig(resize=(64, 64)), colour).channels == "color"
    assert resolve_input(TrainConfig(), [grey]).channels == "mono"
    assert resolve_input(TrainConfig(), colour + [grey]).channels == "any"
    assert resolve_input(TrainConfig(channels="any"), colour).channels == "any"
    assert channels_of(["mono", "mono"]) == "mono" and channels_of([]) == "any"
