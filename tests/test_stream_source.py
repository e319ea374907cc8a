"""Any camera OpenCV opens: a network stream served by the test on the loopback address, dropped and back."""
import http.server
import socket
import threading
from functools import partial

import cv2
import numpy as np
import pytest

from apc_edge.cli.inspect import main as inspect_main
from apc_edge.sources import SourceTimeout
from apc_edge.sources.stream import StreamSource, is_stream_spec
from runlog import lines, verdicts


def write_video(path, frames):
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(f)
    out.release()


class Server:
    """A plain HTTP server on 127.0.0.1 for a folder; stop() and start() again on the same port."""

    def __init__(self, folder):
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.start()

    def start(self):
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(self.folder))
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(synthetic_category, tmp_path):
    files = sorted((synthetic_category / "test" / "good").glob("*.png"))[:2] + \
        sorted((synthetic_category / "test" / "spot").glob("*.png"))[:2]
    write_video(tmp_path / "line.avi", [cv2.imread(str(p)) for p in files] * 2)
    server = Server(tmp_path)
    yield server, f"http://127.0.0.1:{server.port}/line.avi"
    server.stop()


def test_spec_recognition():
    assert is_stream_spec("rtsp://10.0.0.7/line1") and is_stream_spec("usb:0") and is_stream_spec("http://x/y")
    assert not is_stream_spec("line1.avi") and not is_stream_spec("usb:x")
    assert StreamSource("rtsp://op:secret@10.0.0.7/a").source_id == "rtsp://op:***@10.0.0.7/a"


def test_stream_frames_loss_and_reconnect(served):
    server, url = served
    with StreamSource(url, read_timeout_s=5.0, reconnect_max_wait_s=30) as src:
        got = [src.read() for _ in range(8)]
        assert all(f.image.shape == (256, 256, 3) for f in got) and [f.frame_id for f in got] == list(range(8))
        with pytest.raises(SourceTimeout):            # the end of the served clip: the stream is gone
            src.read()
        assert src.stats["failed_buffers"] == 1 and any("lost" in e for e in src.take_events())
        frame = None
        for _ in range(20):                             # the server is still there: it comes back
            try:
                frame = src.read()
                break
            except SourceTimeout:
                continue
        assert frame is not None and src.stats["reconnects"] == 1
        assert any("reconnected" in e for e in src.take_events())


def test_unreachable_stream_is_refused_at_open():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from apc_edge.sources import SourceError

    with pytest.raises(SourceError, match="cannot open stream"):
        StreamSource(f"http://127.0.0.1:{port}/none.avi", open_timeout_s=3).open()


def test_apc_inspect_judges_a_stream(served, model_dir_openvino, tmp_path):
    _, url = served
    out = tmp_path / "out"
    rc = inspect_main([str(model_dir_openvino), "--stream", url, "--out", str(out), "-q", "--max-frames", "8",
                       "--reconnect-max-wait", "2"])
    assert rc in (0, 1)
    recs = lines(out / "verdicts.jsonl")
    judged = verdicts(recs)
    assert len(judged) == 8 and {r["verdict"] for r in judged} <= {"OK", "NG"}
    assert all(r["source"].startswith("http://127.0.0.1") and r["raw_score"] > 0 for r in judged)
    # the served clip ends and is reopened: the losses and reconnects are logged, never invented frames
    assert any(r.get("error_kind") == "source" and "reconnected" in r["error"] for r in recs)


def test_video_given_a_url_points_to_stream(model_dir_openvino, capsys):
    assert inspect_main([str(model_dir_openvino), "--video", "rtsp://10.0.0.7/line1"]) == 2
    assert "give it as --stream rtsp://10.0.0.7/line1" in capsys.readouterr().err
