"""Reading what apc-inspect wrote, for the tests: verdict log lines, checked to be whole."""
from __future__ import annotations

import json
from pathlib import Path


def lines(path: Path) -> list[dict]:
    """Every record of a verdict log; fails when the log ends in a partial line."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the verdict log ends in a partial line"
    return [json.loads(line) for line in text.splitlines()]


def verdicts(records: list[dict]) -> list[dict]:
    """The records with an OK or NG verdict."""
    return [r for r in records if r["verdict"] in ("OK", "NG")]


def overlay_files(out: Path) -> list[Path]:
    """The NG overlay PNGs of a run (the kept original frames are ``*.frame.png`` beside them)."""
    return [p for p in out.glob("ng/*/*.png") if not p.name.endswith(".frame.png")]
