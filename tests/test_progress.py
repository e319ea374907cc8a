"""Progress bars redraw on a terminal only; logs get plain lines."""
import io

import pytest

from apc_edge.progress import Progress, set_quiet


@pytest.fixture(autouse=True)
def loud():
    """Commands run earlier in this process may have left -q on: these tests start without it."""
    set_quiet(False)
    yield
    set_quiet(False)


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


def test_quiet_commands_print_no_progress(model_dir_openvino, synthetic_category, capsys):
    from apc_edge.calibration.cli_eval import main as eval_main

    assert eval_main([str(model_dir_openvino), str(synthetic_category), "-q"]) == 0
    captured = capsys.readouterr()
    assert "scoring" not in captured.err and "image AUROC" in captured.out
    assert eval_main([str(model_dir_openvino), str(synthetic_category)]) == 0
    assert "scoring: 12/12" in capsys.readouterr().err            # without -q the log gets its lines again
