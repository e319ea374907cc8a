"""NG overlays never cost a verdict: a disk budget, a full disk, a hung write, and SIGTERM meanwhile.

Real filesystems only: a small tmpfs that fills up (mounted by the test, which
needs root; skipped with a message otherwise), ``/dev/full`` for a write that
fails with ENOSPC, and a FIFO nobody reads for a write that never returns.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from apc_edge.cli.inspect import main
from apc_edge.runtime.overlay_writer import OverlayBudget, OverlayWriter
from apc_edge.runtime.verdict_log import write_file_atomic
from runlog import lines, overlay_files, verdicts

REPO = Path(__file__).resolve().parents[1]
FRAME = np.full((64, 64, 3), 120, np.uint8)
AMAP = np.zeros((64, 64), np.float32)



@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs of its own, unmounted after the test."""
    mnt = tmp_path / "small_fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}); the ENOSPC path is still "
                    f"tested through /dev/full")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def no_dev_full():
    return not os.path.exists("/dev/full")


# -- the atomic writer and the overlay writer on their own -------------------------------

@pytest.mark.skipif(no_dev_full(), reason="needs /dev/full")
def test_atomic_write_removes_its_temp_file_on_enospc(tmp_path):
    target = tmp_path / "a.png"
    os.symlink("/dev/full", tmp_path / ".a.png.tmp")            # every write to it fails with ENOSPC
    with pytest.raises(OSError) as info:
        write_file_atomic(target, b"x" * 100_000)
    assert info.value.errno == errno.ENOSPC
    assert not os.path.lexists(tmp_path / ".a.png.tmp") and not target.exists()


@pytest.mark.skipif(no_dev_full(), reason="needs /dev/full")
def test_overlay_writer_stops_on_a_full_disk(tmp_path):
    writer = OverlayWriter(keep_free_on=tmp_path)
    os.symlink("/dev/full", tmp_path / ".00.png.tmp")
    assert writer.admit(FRAME, AMAP) is None
    writer.put(tmp_path / "00.png", FRAME, AMAP, 1.0)
    deadline = time.monotonic() + 20
    while writer.counts.stopped is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.admit(FRAME, AMAP) == "disk full"                          # no more overlays this run
    counts = writer.close()
    assert (counts.written, counts.failed, counts.dropped_budget, counts.stopped) == (0, 1, 1, "disk full")
    assert temp_files(tmp_path) == [] and not (tmp_path / "00.png").exists()


def test_overlay_writer_never_waits_and_gives_up_on_a_hung_write(tmp_path):
    fifo = tmp_path / ".00.png.tmp"
    os.mkfifo(fifo)                                     # opening it for writing blocks until a reader comes
    writer = OverlayWriter(depth=2)
    try:
        assert writer.admit(FRAME, AMAP) is None
        writer.put(tmp_path / "00.png", FRAME, AMAP, 1.0)
        deadline = time.monotonic() + 20
        while writer._queue.qsize() and time.monotonic() < deadline:      # the thread took it and hangs
            time.sleep(0.02)
        assert writer.admit(FRAME, AMAP) is None
        writer.put(tmp_path / "01.png", FRAME, AMAP, 1.0)
        assert writer.admit(FRAME, AMAP) == "queue full"              # put never waits: the overlay is dropped
        t0 = time.monotonic()
        counts = writer.close(timeout_s=1.0)
        assert time.monotonic() - t0 < 20                  # bounded, although a write is stuck
        assert (counts.written, counts.dropped_queue_full, counts.abandoned) == (0, 1, 2)
        assert writer.stuck_on == tmp_path / "00.png"
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)          # release the stuck thread
        time.sleep(0.5)
        os.close(reader)


# -- apc-inspect runs -----------------------------------------------------------------

def run_all_ng(model, frames, out, *extra) -> int:
    """30 frames, every one NG (a tiny threshold), overlays for all unless a budget stops them."""
    return main([str(model), "--folder", str(frames), "--loop", "--max-frames", "30", "--threshold", "1e-6",
                 "--out", str(out), "-q", *extra])


def check_every_verdict_logged(out: Path, n: int = 30) -> tuple[list[dict], dict]:
    recs = lines(out / "verdicts.jsonl")
    assert recs == verdicts(recs) and [r["verdict"] for r in recs] == ["NG"] * n
    assert [r["frame_id"] for r in recs] == list(range(n))
    summary = json.loads((out / "summary.json").read_text())
    o = summary["overlays"]
    assert summary["frames"] == n and summary["ok"]
    assert o["written"] + o["dropped_budget"] + o["dropped_queue_full"] + o["failed"] + o["abandoned"] == n
    pngs = sorted(p.relative_to(out).as_posix() for p in overlay_files(out))
    assert len(pngs) == o["written"] and set(pngs) <= {r.get("overlay") for r in recs}
    assert all(cv2.imread(str(out / p)) is not None for p in pngs)
    assert temp_files(out) == []
    return recs, o


def test_overlays_fill_a_small_filesystem_and_every_verdict_is_logged(small_fs, model_dir_openvino, frames_dir,
                                                                       capsys):
    out = small_fs / "out"
    assert run_all_ng(model_dir_openvino, frames_dir, out, "--min-free-mb", "0") == 0
    recs, o = check_every_verdict_logged(out)
    assert o["stopped"] == "disk full" and o["failed"] == 1 and o["written"] >= 1 and o["dropped_budget"] >= 1
    assert any(r.get("overlay_dropped") == "disk full" for r in recs)
    assert "NG overlays:" in capsys.readouterr().out


def test_min_free_space_keeps_room_for_the_log(small_fs, model_dir_openvino, frames_dir):
    out = small_fs / "out"
    assert run_all_ng(model_dir_openvino, frames_dir, out, "--min-free-mb", "1") == 0
    _, o = check_every_verdict_logged(out)
    assert o["stopped"] == "min free space" and o["failed"] == 0 and o["dropped_budget"] >= 1
    st = os.statvfs(small_fs)
    assert st.f_bavail * st.f_frsize >= 2**20 - 64 * 1024       # the log lines since took a few pages at most


def test_byte_budget_stops_overlays(model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert run_all_ng(model_dir_openvino, frames_dir, out, "--ng-bytes-max", "300K") == 0
    _, o = check_every_verdict_logged(out)
    assert o["stopped"] == "max bytes" and 1 <= o["written"] < 30 and o["bytes"] <= 300 * 1024
    assert sum(p.stat().st_size for p in out.glob("ng/*/*.png")) == o["bytes"]


def test_hung_overlay_write_never_blocks_the_lane_and_sigterm_ends_the_run(model_dir_openvino, frames_dir,
                                                                            tmp_path):
    out = tmp_path / "out"
    log_path = out / "verdicts.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "apc_edge.cli.inspect", str(model_dir_openvino), "--folder",
                             str(frames_dir), "--loop", "--threshold", "1e-6", "--out", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not (log_path.exists() and log_path.read_bytes().count(b"\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "apc-inspect did not start judging"
            time.sleep(0.05)
        run = json.loads(log_path.read_text().splitlines()[0])["run"]
        # from here on, each overlay's temporary file is a FIFO nobody reads: the first write the
        # writer starts on one never returns, as on a hung network share
        names = [p.stem for p in sorted(frames_dir.glob("*.png"))]
        ng_dir = out / "ng" / run
        ng_dir.mkdir(parents=True, exist_ok=True)
        for frame_id in range(20000):
            try:
                os.mkfifo(ng_dir / f".{frame_id:08d}_{names[frame_id % len(names)]}.png.tmp")
            except FileExistsError:                  # being written right now, or written already
                pass
        hung_from = log_path.read_bytes().count(b"\n")
        while b'"overlay_dropped":"queue full"' not in log_path.read_bytes():   # the queue fills up, and
            assert proc.poll() is None and time.monotonic() < deadline + 120, "the lane stalled"
            time.sleep(0.05)
        judged = log_path.read_bytes().count(b"\n")
        while log_path.read_bytes().count(b"\n") < judged + 5:                # the lane goes on judging
            assert proc.poll() is None and time.monotonic() < deadline + 120, "the lane stalled"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)          # ends although a writer thread is stuck
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM" in stdout and "abandoned" in stdout
    recs = lines(log_path)
    summary = json.loads((out / "summary.json").read_text())
    assert recs == verdicts(recs) and [r["frame_id"] for r in recs] == list(range(len(recs)))
    assert summary["frames"] == len(recs) >= judged + 5 > hung_from
    o = summary["overlays"]
    assert o["abandoned"] >= 1 and o["dropped_queue_full"] >= 1
    assert o["written"] + o["dropped_budget"] + o["dropped_queue_full"] + o["failed"] + o["abandoned"] == len(recs)
    assert "overlay writer still busy" in stderr
