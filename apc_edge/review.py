"""Review labels for the frames an ``apc-inspect`` run kept: plain files any tool can write or read.

A run folder (``OUT`` of ``apc-inspect``, one ``verdicts.jsonl`` per camera) names each kept frame
in its verdict lines (``"frame": "ng/<run>/<id>.frame.png"``). A reviewer marks them:

* ``false_alarm``: flagged NG, but the part is good (it should teach the model what good looks like);
* ``defect``: a real defect (optionally with a rough mask, a PNG whose non-zero pixels are the defect);
* ``good``: a kept OK frame, confirmed good.

The labels live in ``OUT/review/labels.csv`` (columns ``frame,label,mask,note,reviewed_at``, the frame
path relative to ``OUT``; one row per frame, the latest decision wins), written atomically.
:func:`export_reviewed` turns them into the plain folders ``apc-update --good`` and
``apc-train --anomalies-dir`` read: ``good/``, ``defect/`` and ``defect_masks/`` (same file names).

Example::

    frames = kept_frames("out")                          # [KeptFrame(frame="ng/.../00000003.frame.png", ...)]
    mark("out", frames[0].frame, "false_alarm")
    export_reviewed("out", "reviewed")                   # reviewed/good/<lane>_00000003.png
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .runtime.verdict_log import write_file_atomic

LABELS = ("false_alarm", "defect", "good")
LABELS_FILE = Path("review") / "labels.csv"
COLUMNS = ("frame", "label", "mask", "note", "reviewed_at")


@dataclass(frozen=True)
class KeptFrame:
    """A frame the run kept: its path relative to the run folder, verdict, score and source file name."""

    frame: str
    verdict: str
    score: float | None
    raw_score: float | None
    source: str | None
    file: str | None
    overlay: str | None


def _logs(out: Path) -> list[Path]:
    logs = sorted([out / "verdicts.jsonl"] if (out / "verdicts.jsonl").is_file() else out.glob("*/verdicts.jsonl"))
    if not logs:
        raise ValueError(f"{out} holds no verdicts.jsonl (nor <camera>/verdicts.jsonl): not an apc-inspect run folder")
    return logs


def kept_frames(out: str | Path) -> list[KeptFrame]:
    """Every kept frame of the run folder ``out`` whose file exists, in log order."""
    out = Path(out)
    frames = []
    for log_path in _logs(out):
        prefix = log_path.parent.relative_to(out)
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue                      # a line cut short by a power loss
            if not isinstance(rec, dict) or not isinstance(rec.get("frame"), str):
                continue
            rel = (prefix / rec["frame"]).as_posix()
            if (out / rel).is_file():
                overlay = rec.get("overlay")
                frames.append(KeptFrame(rel, str(rec.get("verdict")), rec.get("score"), rec.get("raw_score"),
                                        rec.get("source"), rec.get("file"),
                                        (prefix / overlay).as_posix() if isinstance(overlay, str) else None))
    return frames


def read_labels(out: str | Path) -> dict[str, dict]:
    """``frame -> row`` of ``OUT/review/labels.csv`` (empty when nothing is reviewed yet)."""
    path = Path(out) / LABELS_FILE
    if not path.is_file():
        return {}
    rows = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("frame") and row.get("label") in LABELS:
                rows[row["frame"]] = {k: row.get(k, "") or "" for k in COLUMNS}
    return rows


def _write_labels(out: Path, rows: dict[str, dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for frame in sorted(rows):
        writer.writerow(rows[frame])
    (out / LABELS_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out / LABELS_FILE, buf.getvalue().encode("utf-8"))


def mark(out: str | Path, frame: str, label: str | None, mask: str | Path | None = None, note: str = "") -> dict:
    """Label one kept frame (``label=None`` removes its label); returns the row written.

    ``frame``: its path relative to ``out`` as :func:`kept_frames` lists it, or its file name.
    ``mask`` (defects only): a PNG of the frame's size, copied into ``OUT/review/masks/``.
    """
    out = Path(out)
    known = {f.frame: f for f in kept_frames(out)}
    matches = [k for k in known if k == frame or Path(k).name == frame]
    if len(matches) != 1:
        raise ValueError(f"{frame!r} is {'not a kept frame' if not matches else 'ambiguous'} of {out} "
                         f"(list them with apc-review {out})")
    frame = matches[0]
    rows = read_labels(out)
    if label is None:
        rows.pop(frame, None)
        _write_labels(out, rows)
        return {}
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    if mask is not None and label != "defect":
        raise ValueError("a mask marks where a defect is: give it with the label 'defect' only")
    mask_rel = ""
    if mask is not None:
        mask = Path(mask)
        if not mask.is_file():
            raise ValueError(f"mask file {mask} does not exist")
        _check_mask(mask, out / frame)
        mask_rel = (LABELS_FILE.parent / "masks" / Path(frame).name).as_posix()
        (out / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mask, out / mask_rel)
    row = {"frame": frame, "label": label, "mask": mask_rel, "note": note.replace("\n", " "),
           "reviewed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rows[frame] = row
    _write_labels(out, rows)
    return row


def _check_mask(mask: Path, frame: Path) -> None:
    import cv2

    m, f = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), cv2.imread(str(frame), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f"cannot read mask {mask} as an image")
    if f is not None and m.shape[:2] != f.shape[:2]:
        raise ValueError(f"mask {mask} is {m.shape[1]}x{m.shape[0]}, the frame {f.shape[1]}x{f.shape[0]}")
    if not m.any():
        raise ValueError(f"mask {mask} is empty: mark the defect's pixels non-zero")


def export_reviewed(out: str | Path, dest: str | Path) -> dict:
    """Copy the reviewed frames of ``out`` into ``dest/good`` (false alarms, confirmed goods) and
    ``dest/defect`` (masks in ``dest/defect_masks``); returns the counts. File names carry the lane, so
    frames of several cameras do not clash."""
    out, dest = Path(out), Path(dest)
    rows = read_labels(out)
    if not rows:
        raise ValueError(f"nothing reviewed in {out} yet ({out / LABELS_FILE} is missing or empty)")
    counts = {"good": 0, "defect": 0, "defect_masks": 0}
    for frame, row in rows.items():
        src = out / frame
        if not src.is_file():
            continue
        parts = Path(frame).parts
        lane = parts[0] if parts[0] not in ("ng", "ok") else ""
        name = (f"{lane}_" if lane else "") + src.name.replace(".frame.png", ".png")
        kind = "defect" if row["label"] == "defect" else "good"
        (dest / kind).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / kind / name)
        counts[kind] += 1
        if kind == "defect" and row["mask"]:
            (dest / "defect_masks").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / row["mask"], dest / "defect_masks" / name)
            counts["defect_masks"] += 1
    return counts
