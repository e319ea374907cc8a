"""The evaluation report a quality engineer looks at: one self-contained ``report.html`` plus its PNGs.

What it shows, at the model's deployed threshold:

* the score histogram of the goods and of each defect type, with the threshold line;
* the ROC curve with the operating point the threshold gives;
* a per-defect-type table (count, recall at the threshold, AUROC against the goods) and the confusion matrix;
* the worst false alarms and the worst misses as original | heatmap overlay | ground-truth outline, each
  with its file name and raw score (when there are none, the goods and defects closest to the threshold).

Everything is drawn with OpenCV and inlined as base64 PNGs, so the HTML opens anywhere, offline.

Example::

    write_report("reports/bottle", scored, inspector, report)      # report.html, *.png, metrics.json, scores.csv
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import cv2
import numpy as np

from apc_edge.overlay import overlay
from apc_edge.preprocess import Preprocessor, load_image

from . import metrics

WORST = 6                      # triplets per list
GOOD_COLOUR = (90, 160, 40)    # BGR
TYPE_COLOURS = [(40, 40, 220), (0, 140, 255), (180, 60, 160), (200, 120, 0), (60, 180, 200), (120, 80, 40),
                (160, 160, 0), (80, 0, 160)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img, text, org, scale=0.45, colour=(0, 0, 0), thickness=1):
    cv2.putText(img, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _axes(size: tuple[int, int], margin: int = 56):
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = margin, h - margin, w - 20, 36
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    return img, (x0, y0, x1, y1)


def roc_plot(labels: np.ndarray, scores: np.ndarray, threshold: float | None, title: str,
             size: int = 480) -> np.ndarray:
    """ROC curve (BGR image): labelled axes, the diagonal, the curve, AUROC, and the threshold's operating point."""
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    img, (x0, y0, x1, y1) = _axes((size, size), margin=72)

    def px(x, y):
        return int(x0 + x * (x1 - x0)), int(y0 - y * (y0 - y1))

    cv2.line(img, px(0, 0), px(1, 1), (190, 190, 190), 1, cv2.LINE_AA)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        _text(img, f"{v:.2f}", (px(v, 0)[0] - 14, y0 + 18), 0.4)
        _text(img, f"{v:.2f}", (x0 - 38, px(0, v)[1] + 4), 0.4)
    cv2.polylines(img, [np.array([px(x, y) for x, y in zip(fpr, tpr)], np.int32)], False, (200, 60, 0), 2,
                  cv2.LINE_AA)
    _text(img, f"{title}  AUROC {metrics.auroc(labels, scores):.4f}", (x0, 24), 0.5)
    _text(img, "false alarm rate (goods flagged NG)", (x0 + 40, size - 14), 0.45)
    vertical = np.full((20, y0 - y1), 255, np.uint8)
    cv2.putText(vertical, "recall (defects flagged NG)", (10, 15), FONT, 0.45, 0, 1, cv2.LINE_AA)
    img[y1:y0, 4:24] = np.rot90(vertical)[:, :, None]
    if threshold is not None:
        op_fpr = float(np.mean(scores[labels == 0] >= threshold)) if (labels == 0).any() else 0.0
        op_tpr = float(np.mean(scores[labels == 1] >= threshold)) if (labels == 1).any() else 0.0
        cv2.circle(img, px(op_fpr, op_tpr), 6, (0, 0, 220), 2, cv2.LINE_AA)
        _text(img, f"threshold: {100 * op_fpr:.1f} % false alarms, {100 * op_tpr:.1f} % recall",
              (px(op_fpr, op_tpr)[0] + 10 if op_fpr < 0.5 else x0 + 10, px(op_fpr, op_tpr)[1] + 20), 0.42,
              (0, 0, 200))
    return img


def score_histogram(groups: dict[str, np.ndarray], threshold: float | None, size=(360, 720), bins: int = 40):
    """Histogram of raw scores per group ("good" first, then each defect type) with the threshold line."""
    values = np.concatenate([v for v in groups.values() if len(v)])
    lo, hi = float(values.min()), float(values.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = {k: np.histogram(v, edges)[0] / max(1, len(v)) for k, v in groups.items()}
    top = max(float(c.max()) for c in counts.values()) or 1.0
    img, (x0, y0, x1, y1) = _axes(size)

    def px(score, share):
        return int(x0 + (score - lo) / (hi - lo) * (x1 - x0)), int(y0 - share / top * (y0 - y1 - 10))

    for i, (name, share) in enumerate(counts.items()):
        colour = GOOD_COLOUR if name == "good" else TYPE_COLOURS[(i - 1) % len(TYPE_COLOURS)]
        pts = []
        for b in range(bins):
            pts += [px(edges[b], share[b]), px(edges[b + 1], share[b])]
        cv2.polylines(img, [np.array([px(lo, 0)] + pts + [px(hi, 0)], np.int32)], False, colour, 2, cv2.LINE_AA)
        _text(img, f"{name} ({len(groups[name])})", (x1 - 190, y1 + 18 + 18 * i), 0.45, colour)
    if threshold is not None:
        x = px(threshold, 0)[0]
        cv2.line(img, (x, y1), (x, y0), (0, 0, 200), 2, cv2.LINE_AA)
        _text(img, f"threshold {threshold:.4g}", (min(x + 6, x1 - 140), y1 + 16), 0.45, (0, 0, 200))
    for v in np.linspace(lo, hi, 5):
        _text(img, f"{v:.3g}", (px(v, 0)[0] - 14, y0 + 18), 0.4)
    _text(img, "raw score (share of each group per bin)", (x0 + 150, size[0] - 14), 0.45)
    _text(img, "score distribution: goods against each defect type", (x0, 24), 0.5)
    return img


def frame_map(pre: Preprocessor, input_map: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """A map on evaluation's model-input grid (``Preprocessor.to_input_grid``) back on the frame's pixels.

    In pad mode that grid already is the frame's own region of the canvas, so it is only resized;
    ``map_to_frame`` takes a whole-canvas map and would cut the region out a second time.

    Example::

        full = frame_map(inspector.preprocessor, scored_sample.input_map, frame.shape)
    """
    if pre.mode == "pad":
        h, w = frame_shape[:2]
        return cv2.resize(input_map.astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_LINEAR)
    return pre.map_to_frame(input_map, frame_shape)


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def triplet(s, inspector, tile: int = 256) -> np.ndarray:
    """original | overlay | ground-truth outline of one scored sample, captioned with its file and raw score."""
    frame = _bgr(inspector.preprocessor.to_8bit(load_image(s.sample.path)))
    heat = overlay(frame, frame_map(inspector.preprocessor, s.input_map, frame.shape), inspector.threshold)
    truth = frame.copy()
    mask = s.sample.load_mask(frame.shape[:2])
    if mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(truth, contours, -1, (0, 255, 0), max(2, frame.shape[1] // 200))
    h, w = frame.shape[:2]
    scale = tile / max(h, w)
    panels = [cv2.resize(p, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
              for p in (frame, heat, truth)]
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    row = np.hstack([panels[0], gap, panels[1], gap, panels[2]])
    caption = np.full((26, row.shape[1], 3), 255, np.uint8)
    verdict = "NG" if s.raw_score >= inspector.threshold else "OK"
    _text(caption, f"{s.sample.key}   raw score {s.raw_score:.4f}   {verdict}", (4, 18), 0.45)
    return np.vstack([caption, row])


def _stack(rows: list[np.ndarray]) -> np.ndarray | None:
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.hstack([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)]) for r in rows]
    return np.vstack([np.vstack([p, np.full((8, width, 3), 255, np.uint8)]) for p in padded])


def worst_cases(scored, threshold: float) -> tuple[list, str, list, str]:
    """The false alarms (highest first) and misses (lowest first); when a list is empty, the goods and
    defects nearest the threshold instead, and a heading that says which."""
    goods = sorted((s for s in scored if not s.sample.is_anomalous), key=lambda s: -s.raw_score)
    defects = sorted((s for s in scored if s.sample.is_anomalous), key=lambda s: s.raw_score)
    alarms = [s for s in goods if s.raw_score >= threshold]
    misses = [s for s in defects if s.raw_score < threshold]
    a_head = "Worst false alarms" if alarms else "No false alarms: the goods scoring closest to the threshold"
    m_head = "Worst misses" if misses else "No misses: the defects scoring closest to the threshold"
    return (alarms or goods)[:WORST], a_head, (misses or defects)[:WORST], m_head


def per_type_rows(scored, threshold: float) -> list[dict]:
    goods = np.array([s.raw_score for s in scored if not s.sample.is_anomalous])
    rows = []
    for t in sorted({s.sample.defect_type for s in scored if s.sample.is_anomalous}):
        sc = np.array([s.raw_score for s in scored if s.sample.defect_type == t])
        auroc = metrics.auroc(np.r_[np.zeros(len(goods)), np.ones(len(sc))], np.r_[goods, sc]) if len(goods) else None
        rows.append({"type": t, "count": int(len(sc)), "recall": float(np.mean(sc >= threshold)), "auroc": auroc})
    return rows


def _png(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _html(report: dict, threshold: float, confusion: dict, rows: list[dict], images: dict[str, np.ndarray | None],
          heads: tuple[str, str], model_dir: str) -> str:
    e = html.escape
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    num = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    table = "".join(f"<tr><td>{e(r['type'])}</td><td>{r['count']}</td><td>{pct(r['recall'])}</td>"
                    f"<td>{num(r['auroc'])}</td></tr>" for r in rows)
    c = confusion
    img = lambda key, alt: (f'<img alt="{e(alt)}" src="data:image/png;base64,{_png(images[key])}">'  # noqa: E731
                            if images.get(key) is not None else "<p>(none)</p>")
    metric_cells = "".join(f"<td>{report[k]:.4f}</td>" if isinstance(report.get(k), (int, float)) else "<td>n/a</td>"
                           for k in ("image_auroc", "pixel_auroc", "pro"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>apc-edge report: {e(str(report.get('category', '')))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1500px; }}
table {{ border-collapse: collapse; margin: 8px 0 18px; }} td, th {{ border: 1px solid #bbb; padding: 4px 10px; }}
th {{ background: #eee; }} .row {{ display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }}
img {{ max-width: 100%; }} .ng {{ color: #b00; font-weight: bold; }}
</style></head><body>
<h1>{e(str(report.get('category', '')))}: {report.get('n_test')} test images</h1>
<p>Model dir <code>{e(model_dir)}</code>, deployed threshold (raw score) <b>{threshold:.4f}</b>.</p>
<table><tr><th>image AUROC</th><th>pixel AUROC</th><th>PRO</th><th>false alarms at the threshold</th>
<th>recall at the threshold</th></tr><tr>{metric_cells}<td>{pct(report['at_threshold'].get('false_alarm_rate'))}</td>
<td>{pct(report['at_threshold'].get('recall'))}</td></tr></table>
<div class="row"><div>{img('histogram', 'score histogram')}</div><div>{img('roc', 'ROC curve')}</div></div>
<div class="row"><div><h2>Per defect type</h2><table><tr><th>type</th><th>count</th><th>recall at the threshold</th>
<th>AUROC vs goods</th></tr>{table}</table></div>
<div><h2>Confusion matrix at the threshold</h2><table><tr><th></th><th>verdict NG</th><th>verdict OK</th></tr>
<tr><th>defect</th><td>{c['tp']}</td><td{' class="ng"' if c['fn'] else ''}>{c['fn']} missed</td></tr>
<tr><th>good</th><td{' class="ng"' if c['fp'] else ''}>{c['fp']} false alarms</td><td>{c['tn']}</td></tr></table></div></div>
<h2>{e(heads[0])}</h2><p>original | heatmap overlay | ground truth</p>{img('false_alarms', heads[0])}
<h2>{e(heads[1])}</h2><p>original | heatmap overlay | ground truth (green outline)</p>{img('misses', heads[1])}
</body></html>
"""


def write_report(out_dir: str | Path, scored, inspector, report: dict) -> list[Path]:
    """Write ``report.html`` (self-contained), ``histogram.png``, ``roc.png``, ``false_alarms.png``,
    ``misses.png``, ``metrics.json`` and ``scores.csv`` (file, label, raw score, verdict) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = float(inspector.threshold)
    labels = np.array([int(s.sample.is_anomalous) for s in scored])
    scores = np.array([s.raw_score for s in scored], np.float64)
    groups = {"good": scores[labels == 0]}
    for ty in sorted({s.sample.defect_type for s in scored if s.sample.is_anomalous}):
        groups[ty] = np.array([s.raw_score for s in scored if s.sample.defect_type == ty])
    alarms, a_head, misses, m_head = worst_cases(scored, t)
    flagged = scores >= t
    confusion = {"tp": int((flagged & (labels == 1)).sum()), "fn": int((~flagged & (labels == 1)).sum()),
                 "fp": int((flagged & (labels == 0)).sum()), "tn": int((~flagged & (labels == 0)).sum())}
    images = {"histogram": score_histogram(groups, t),
              "roc": roc_plot(labels, scores, t, str(report.get("category", ""))) if 0 < labels.sum() < len(labels)
              else None,
              "false_alarms": _stack([triplet(s, inspector) for s in alarms]),
              "misses": _stack([triplet(s, inspector) for s in misses])}
    paths = []
    for name, img in images.items():
        if img is not None:
            paths.append(out / f"{name}.png")
            cv2.imwrite(str(paths[-1]), img)
    rows = per_type_rows(scored, t)
    full = {**report, "confusion_at_threshold": confusion, "per_defect_type": rows}
    (out / "metrics.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "label", "raw_score", "verdict"])
    for s, flag in zip(scored, flagged):
        w.writerow([s.sample.key, s.sample.defect_type, f"{s.raw_score:.6f}", "NG" if flag else "OK"])
    (out / "scores.csv").write_text(buf.getvalue(), encoding="utf-8")
    (out / "report.html").write_text(_html(report, t, confusion, rows, images, (a_head, m_head),
                                           str(inspector.model_dir)), encoding="utf-8")
    return [out / "report.html", *paths, out / "metrics.json", out / "scores.csv"]
