"""Frame sources: folders, videos, and Basler cameras on pylon's camera emulator.

The camera tests run against the real pylon emulator (``PYLON_CAMEMU`` emulated
devices replaying image files the tests write); pypylon is not mocked.
Device removal is produced with the emulator's ``FirePnPCallback`` command, which
makes pylon report the device as removed (``IsCameraDeviceRemoved()``), so the
source's real reconnect path runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from apc_edge.sources import (CameraConfig, CameraSource, FolderSource, Frame, RejectOutput, SourceError,
                              SourceTimeout, VideoSource, open_source)

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "bottle" / "test" / "good"

pypylon = pytest.importorskip("pypylon.pylon", reason="pypylon not installed: camera tests need its emulator")


# -- test images ---------------------------------------------------------------

def _mono_images(n=5, shape=(48, 64)):
    rng = np.random.default_rng(7)
    images = []
    for i in range(n):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        img[:4, :4] = i * 40          # a visible per-file marker
        images.append(img)
    return images


def _colour_images(n=5, shape=(48, 64)):
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def _write(folder: Path, images, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        assert cv2.imwrite(str(folder / f"{i:03d}{ext}"), img)
    return images


@pytest.fixture
def mono(tmp_path):
    folder = tmp_path / "mono"
    return folder, _write(folder, _mono_images())


@pytest.fixture
def colour(tmp_path):
    folder = tmp_path / "colour"
    return folder, _write(folder, _colour_images())


@pytest.fixture
def emu(monkeypatch):
    """Two emulated cameras (serials 0815-0000 and 0815-0001)."""
    monkeypatch.setenv("PYLON_CAMEMU", "2")
    return ("0815-0000", "0815-0001")


def emu_config(folder, **overrides) -> CameraConfig:
    extra = {"TestImageSelector": "Off", "ImageFileMode": "On", "ImageFilename": str(folder)}
    extra.update(overrides.pop("extra", {}))
    settings = dict(reconnect_backoff_s=(0.05, 0.1), reconnect_max_wait_s=5.0, grab_timeout_ms=2000)
    settings.update(overrides)
    return CameraConfig(extra=extra, **settings)


def _index_of(image, images):
    return [i for i, ref in enumerate(images) if ref.shape == image.shape and np.array_equal(ref, image)]


# -- import hygiene ---------------------------------------------------------------

def test_import_pulls_in_neither_torch_nor_pypylon():
    code = ("import sys, apc_edge.sources; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'pypylon' not in sys.modules, 'pypylon imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- FolderSource -----------------------------------------------------------------

def test_folder_order_extensions_and_end(tmp_path):
    imgs = _mono_images(6)
    names = ["b.png", "a.bmp", "c.jpg", "e.TIF", "d.jpeg", "f.PNG"]
    for name, img in zip(names, imgs):
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    with FolderSource(tmp_path) as src:
        frames = list(src)
        assert src.read() is None
    assert [f.name for f in frames] == sorted(names)
    assert [f.frame_id for f in frames] == list(range(6))
    by_name = dict(zip(names, imgs))
    for f in frames:
        assert isinstance(f, Frame) and f.source_id == str(tmp_path) and f.skipped_before == 0
        if not f.name.lower().endswith((".jpg", ".jpeg")):        # lossless formats: exact
            assert np.array_equal(f.image, by_name[f.name])
    assert frames[0].image.ndim == 2


def test_folder_loop_and_output_format(mono):
    folder, imgs = mono
    with FolderSource(folder, loop=True, output_format="BGR8") as src:
        frames = [src.read() for _ in range(12)]
    assert [f.frame_id for f in frames] == list(range(12))
    assert [f.name for f in frames[5:7]] == ["000.png", "001.png"]
    assert frames[7].image.shape == (48, 64, 3)
    assert np.array_equal(frames[7].image[..., 1], imgs[2])


def test_folder_bad_path_and_empty_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SourceError, match="image folder not found: .*nope"):
        FolderSource(missing).open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path / "empty").open()


def test_folder_corrupt_file_is_counted_and_passed(mono, caplog):
    folder, imgs = mono
    (folder / "002.png").write_bytes(b"this is not a png")
    with FolderSource(folder) as src:
        frames = list(src)
        stats = src.stats
    assert [f.name for f in frames] == ["000.png", "001.png", "003.png", "004.png"]
    assert [f.frame_id for f in frames] == [0, 1, 3, 4]
    assert frames[2].skipped_before == 1
    assert stats["errors"] == 1 and stats["delivered"] == 4 and stats["skipped"] == 1
    assert any("002.png" in r.getMessage() for r in caplog.records)


# -- VideoSource ------------------------------------------------------------------

def _write_video(path: Path, n=8, shape=(64, 96)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (shape[1], shape[0]))
    assert writer.isOpened()
    levels = [20 + 25 * i for i in range(n)]
    for level in levels:
        writer.write(np.full((*shape, 3), level, np.uint8))
    writer.release()
    return levels


def test_video_frames_end_and_loop(tmp_path):
    path = tmp_path / "line.avi"
    levels = _write_video(path)
    with VideoSource(path) as src:
        frames = list(src)
        assert src.read() is None
    assert len(frames) == len(levels)
    assert [f.frame_id for f in frames] == list(range(len(levels)))
    for f, level in zip(frames, levels):
        assert f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8
        assert abs(float(f.image.mean()) - level) < 3           # MJPG is lossy
    with VideoSource(path, loop=True, output_format="Mono8") as src:
        looped = [src.read() for _ in range(len(levels) + 2)]
    assert looped[-1].image.ndim == 2 and abs(float(looped[-1].image.mean()) - levels[1]) < 3


def test_video_bad_path(tmp_path):
    with pytest.raises(SourceError, match="video file not found"):
        VideoSource(tmp_path / "missing.avi").open()
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"garbage")
    with pytest.raises(SourceError, match="cannot decode"):
        VideoSource(bad).open()


def test_open_source_specs(tmp_path, mono):
    folder, _ = mono
    video = tmp_path / "v.avi"
    _write_video(video, n=2)
    assert isinstance(open_source(folder), FolderSource)
    assert isinstance(open_source(str(video), loop=True), VideoSource)
    cam = open_source("camera:0815-0001", trigger="software")
    assert isinstance(cam, CameraSource) and cam.config.serial == "0815-0001" and not cam.is_open
    assert open_source("camera").config.serial is None
    with pytest.raises(SourceError, match="not found"):
        open_source(tmp_path / "nothing")
    with pytest.raises(SourceError, match="not a folder or a video"):
        open_source(folder / "000.png")


# -- CameraSource on the emulator -------------------------------------------------

def test_camera_free_run_latest_delivers_exact_pixels(emu, mono):
    folder, imgs = mono
    with CameraSource(emu_config(folder, output_format="Mono8")) as cam:
        assert cam.config.grab_strategy == "latest"
        frames = []
        for _ in range(6):
            time.sleep(0.03)                  # the emulator runs on meanwhile: older frames are dropped
            frames.append(cam.read())
        stats = cam.stats
    assert all(f.source_id == emu[0] for f in frames)
    ids = [f.frame_id for f in frames]
    assert ids == sorted(set(ids))
    for f in frames:
        # the emulator replays the files in order, one per camera frame: block id n shows file n % 5
        assert np.array_equal(f.image, imgs[f.frame_id % len(imgs)])
    assert sum(f.skipped_before for f in frames[1:]) > 0
    assert stats["delivered"] == 6 and stats["delivered"] + stats["skipped"] == ids[-1] + 1


def test_camera_software_trigger_in_file_order(emu, mono):
    folder, imgs = mono
    with CameraSource(emu_config(folder, trigger="software", output_format="Mono8")) as cam:
        frames = [cam.read() for _ in range(7)]
    assert [f.frame_id for f in frames] == list(range(7))
    assert [_index_of(f.image, imgs) for f in frames] == [[0], [1], [2], [3], [4], [0], [1]]
    assert all(f.skipped_before == 0 and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].timestamp <= frames[-1].timestamp


def test_camera_mono_files_as_bgr_output(emu, mono):
    folder, imgs = mono
    with CameraSource(emu_config(folder, trigger="software")) as cam:      # default output BGR8
        image = cam.read().image
    assert image.shape == (48, 64, 3)
    assert all(np.array_equal(image[..., c], imgs[0]) for c in range(3))


@pytest.mark.parametrize("pixel_format", ["BGR8Packed", "RGB8Packed"])
def test_camera_colour_to_bgr_exact(emu, colour, pixel_format):
    folder, imgs = colour
    with CameraSource(emu_config(folder, trigger="software", pixel_format=pixel_format)) as cam:
        frames = [cam.read() for _ in range(3)]
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3)
        assert np.array_equal(f.image, imgs[i]), f"{pixel_format} frame {i} differs"


def test_camera_bayer_to_bgr(emu, tmp_path):
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    img = np.kron(colours, np.ones((16, 16, 1), np.uint8))          # 16x16 blocks of flat colour
    _write(tmp_path / "blocks", [img])
    inner = np.zeros(img.shape[:2], bool)
    for i in range(4):
        for j in range(6):
            inner[i * 16 + 2:(i + 1) * 16 - 2, j * 16 + 2:(j + 1) * 16 - 2] = True
    for pixel_format in ("BayerRG8", "BayerBG8"):
        with CameraSource(emu_config(tmp_path / "blocks", trigger="software", pixel_format=pixel_format)) as cam:
            out = cam.read().image
        assert out.shape == img.shape
        # demosaicing interpolates only across colour edges; flat areas come back exact
        assert np.array_equal(out[inner], img[inner]), pixel_format


def test_camera_colour_to_mono_output(emu, colour):
    folder, imgs = colour
    with CameraSource(emu_config(folder, trigger="software", pixel_format="BGR8Packed",
                                 output_format="Mono8")) as cam:
        image = cam.read().image
    assert image.shape == (48, 64)
    # pylon's own luminance weights differ slightly from OpenCV's
    diff = np.abs(image.astype(int) - cv2.cvtColor(imgs[0], cv2.COLOR_BGR2GRAY).astype(int))
    assert diff.max() <= 16 and diff.mean() < 6


def test_camera_failed_buffers_counted_and_survived(emu, mono, caplog):
    folder, imgs = mono
    cfg = emu_config(folder, trigger="software", output_format="Mono8", extra={"ForceFailedBufferCount": 2})
    with CameraSource(cfg) as cam:
        first = [cam.read() for _ in range(2)]
        cam.node_map.GetNode("ForceFailedBuffer").Execute()
        after = [cam.read() for _ in range(3)]
        stats = cam.stats
    assert stats["failed_buffers"] == 2 and stats["skipped"] == 2 and stats["delivered"] == 5
    assert after[0].skipped_before == 2 and after[0].frame_id == first[-1].frame_id + 3
    assert [f.skipped_before for f in after[1:]] == [0, 0]
    for f in first + after:                   # failed buffers use up their file too
        assert np.array_equal(f.image, imgs[f.frame_id % len(imgs)])
    assert any("failed grab" in r.getMessage() for r in caplog.records)


def test_camera_missing_image_folder_gives_clear_error(emu, tmp_path):
    cfg = emu_config(tmp_path / "no_such_folder", max_consecutive_failed=5)
    with CameraSource(cfg) as cam:
        with pytest.raises(SourceError, match="5 grabs in a row failed.*Failed to load image file.*no_such_folder"):
            cam.read()
        assert cam.stats["failed_buffers"] == 5 and cam.stats["delivered"] == 0


def test_camera_reconnects_after_removal_free_run(emu, mono):
    folder, imgs = mono
    with CameraSource(emu_config(folder, output_format="Mono8")) as cam:
        before = [cam.read() for _ in range(3)]
        generation = cam.generation
        cam.node_map.GetNode("FirePnPCallback").Execute()        # pylon now reports the device removed
        assert cam.camera.IsCameraDeviceRemoved()
        after = [cam.read() for _ in range(3)]
        stats = cam.stats
    assert stats["reconnects"] == 1 and cam.generation == generation + 1
    assert after[0].source_id == emu[0]
    ids = [f.frame_id for f in before + after]
    assert ids == sorted(set(ids))
    assert after[0].skipped_before >= 1            # the outage is counted as skipped frames
    for f in after:
        assert len(_index_of(f.image, imgs)) == 1


def test_camera_restarts_when_grabbing_stops(emu, mono):
    folder, imgs = mono
    with CameraSource(emu_config(folder, trigger="software", output_format="Mono8")) as cam:
        cam.read()
        cam.camera.StopGrabbing()                 # e.g. stopped by the transport layer
        frame = cam.read()
        assert cam.stats["reconnects"] == 1
    assert _index_of(frame.image, imgs) == [0]


def test_camera_reconnect_waits_for_the_camera_to_come_back(emu, mono, monkeypatch):
    folder, imgs = mono
    with CameraSource(emu_config(folder, trigger="software", output_format="Mono8")) as cam:
        cam.read()
        monkeypatch.setenv("PYLON_CAMEMU", "0")                   # enumeration finds nothing now
        cam.node_map.GetNode("FirePnPCallback").Execute()
        timer = threading.Timer(0.6, os.environ.__setitem__, ("PYLON_CAMEMU", "2"))
        timer.start()
        t0 = time.monotonic()
        frame = cam.read()
        waited = time.monotonic() - t0
        timer.join()
        assert cam.stats["reconnects"] == 1
    assert waited >= 0.5
    assert _index_of(frame.image, imgs) == [0]     # a fresh device restarts its file sequence


def test_camera_not_back_in_time_raises_naming_serial(emu, mono, monkeypatch):
    folder, _ = mono
    with CameraSource(emu_config(folder, reconnect_max_wait_s=0.4)) as cam:
        cam.read()
        monkeypatch.setenv("PYLON_CAMEMU", "0")
        cam.node_map.GetNode("FirePnPCallback").Execute()
        with pytest.raises(SourceError, match=r"camera 0815-0000 lost .*not back within 0.4 s"):
            cam.read()


def test_camera_removal_without_reconnect_raises(emu, mono):
    folder, _ = mono
    with CameraSource(emu_config(folder, reconnect=False)) as cam:
        cam.read()
        cam.node_map.GetNode("FirePnPCallback").Execute()
        with pytest.raises(SourceError, match="0815-0000 lost .*reconnect is disabled"):
            cam.read()


def test_no_camera_found(monkeypatch, mono):
    monkeypatch.setenv("PYLON_CAMEMU", "0")
    with pytest.raises(SourceError, match=r"no Basler camera found \(serial=None\); cameras found: none"):
        CameraSource(emu_config(mono[0])).open()


def test_wrong_serial_lists_what_was_found(emu, mono):
    with pytest.raises(SourceError, match=r"no Basler camera found \(serial='12345678'\).*0815-0000.*0815-0001"):
        CameraSource(emu_config(mono[0], serial="12345678")).open()


def test_two_cameras_by_serial_deliver_independently(emu, mono, colour):
    (mono_dir, mono_imgs), (colour_dir, colour_imgs) = mono, colour
    cfg_a = emu_config(mono_dir, serial=emu[1], trigger="software", output_format="Mono8")
    cfg_b = emu_config(colour_dir, serial=emu[0], trigger="software", pixel_format="RGB8Packed")
    with CameraSource(cfg_a) as a, CameraSource(cfg_b) as b:
        got_a, got_b = [], []
        for i in range(6):
            got_a.append(a.read())
            if i % 2 == 0:
                got_b.append(b.read())
    assert {f.source_id for f in got_a} == {emu[1]} and {f.source_id for f in got_b} == {emu[0]}
    assert [_index_of(f.image, mono_imgs) for f in got_a] == [[0], [1], [2], [3], [4], [0]]
    assert [_index_of(f.image, colour_imgs) for f in got_b] == [[0], [1], [2]]


def test_hardware_trigger_timeout_is_recoverable(emu, mono):
    with CameraSource(emu_config(mono[0], trigger="hardware", trigger_line="Line1")) as cam:
        assert cam.node_map.GetNode("TriggerSource").GetValue() == "Line1"
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(SourceTimeout, match="no frame within 0.200 s"):
                cam.read(timeout_s=0.2)
            assert time.monotonic() - t0 < 1.0
        assert cam.is_open and cam.stats["reconnects"] == 0


def test_camera_settings_written_and_bad_ones_named(emu, mono):
    folder, _ = mono
    with CameraSource(emu_config(folder, exposure_us=2500, gain=3.0, width=640, height=480)) as cam:
        nm = cam.node_map
        assert nm.GetNode("ExposureTime").GetValue() == pytest.approx(2500)
        assert nm.GetNode("Gain").GetValue() == pytest.approx(3.0, abs=0.1)
        assert (nm.GetNode("Width").GetValue(), nm.GetNode("Height").GetValue()) == (640, 480)
    with pytest.raises(SourceError, match="'PixelFormat' has no entry 'YUV9'"):
        CameraSource(emu_config(folder, pixel_format="YUV9")).open()
    with pytest.raises(SourceError, match="'Width'.*Max = 4096"):
        CameraSource(emu_config(folder, width=100000)).open()
    with pytest.raises(SourceError, match="no node 'NoSuchNode'"):
        CameraSource(emu_config(folder, extra={"NoSuchNode": 1})).open()
    # a failed open releases the device: it can be opened again right away
    with CameraSource(emu_config(folder, trigger="software")) as cam:
        assert cam.read() is not None


def test_reject_output_pulse(emu, mono):
    with CameraSource(emu_config(mono[0], trigger="software")) as cam:
        nm = cam.node_map
        cam.pulse_output("Line2", duration_ms=300)
        nm.GetNode("LineSelector").SetValue("Line2")
        assert nm.GetNode("LineMode").GetValue() == "Output"
        assert nm.GetNode("LineSource").GetValue() == "UserOutput1"
        assert nm.GetNode("UserOutputValue").GetValue() is True
        time.sleep(0.6)
        assert nm.GetNode("UserOutputValue").GetValue() is False
        with pytest.raises(SourceError, match="'LineSelector' has no entry 'Line9'"):
            RejectOutput(cam, line="Line9").pulse(10)


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="../shared/data not found: real-data camera test skipped")
def test_camera_replays_real_images(emu, tmp_path):
    files = sorted(REAL_DATA.glob("*.png"))[:3]
    assert files, f"no PNG files in {REAL_DATA}"
    folder = tmp_path / "real"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    expected = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
    pixel_format = "BGR8Packed" if expected[0].ndim == 3 else "Mono8"
    with CameraSource(emu_config(folder, trigger="software", pixel_format=pixel_format)) as cam:
        frames = [cam.read() for _ in range(len(files))]
    for frame, ref, f in zip(frames, expected, files):
        assert np.array_equal(frame.image, ref), f"{f.name} not replayed exactly"


def test_folder_source_reads_files_as_training_and_evaluation_do(tmp_path, model_dir_openvino, synthetic_category):
    """One image reader: a 12-bit image in a 16-bit PNG, a BGRA PNG and a mono PNG reach the Inspector
    from the folder source exactly as ``load_image`` (training, apc-eval) gives them, so they score the same."""
    import cv2
    import numpy as np

    from apc_edge import Inspector
    from apc_edge.preprocess import load_image
    from apc_edge.sources import FolderSource

    src = sorted((synthetic_category / "test" / "spot").glob("*.png"))[0]
    bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    cv2.imwrite(str(tmp_path / "a_16bit.png"), (bgr.astype(np.uint16) * 16))            # 12-bit values
    cv2.imwrite(str(tmp_path / "b_bgra.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "c_mono.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    inspector = Inspector(model_dir_openvino)
    with FolderSource(tmp_path) as source:
        frames = {f.name: f.image for f in source}
    assert sorted(frames) == ["a_16bit.png", "b_bgra.png", "c_mono.png"]
    for name, frame in frames.items():
        expected = load_image(tmp_path / name)
        np.testing.assert_array_equal(frame, expected)
        if name == "c_mono.png":                     # this model was trained on colour images: refused alike
            for image in (frame, expected):
                with pytest.raises(ValueError, match="trained on colour images"):
                    inspector.check(image)
            continue
        assert inspector.check(frame).raw_score == inspector.check(expected).raw_score
