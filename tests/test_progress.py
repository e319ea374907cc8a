"""Progress bars redraw on a terminal only; logs get plain lines."""
import io

from apc_edge.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_stream_gets_plain_lines_and_a_final_one():
    log = io.StringIO()
    with Progress(100, "coreset", stream=log, min_interval_s=0.0) as bar:
        for _ in range(100):
            bar.update(1, loss=0.5)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 9 <= len(lines) <= 11 and lines[-1].startswith("coreset: 100/100 in ") and "loss=0.5" in lines[-1]


def test_terminal_redraws_in_place():
    tty = Terminal()
    with Progress(10, "features", stream=tty, min_interval_s=0.0) as bar:
        for _ in range(10):
            bar.update(1)
    assert tty.getvalue().count("\r") == 10 and tty.getvalue().endswith("\n")
