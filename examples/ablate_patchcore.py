"""The screening harness behind the table "Why our defaults lost to anomalib" in docs/accuracy.md.

Our PatchCore on the torch path (no export), with each difference from anomalib's recipe switchable:
input size, resize interpolation (``cv``: our Preprocessor's rule, ``sep``: OpenCV per axis, ``linear``,
``aa``: torchvision-style antialiased bilinear as anomalib), 3x3 aggregation padding (``include``: zeros
counted, ``exclude``: cells inside the image only), hold-out share, coreset ratio. Prints one JSON line and
writes per-image scores for ``apc-compare``.

Example::

    .venv/bin/python examples/ablate_patchcore.py ../shared/data/magnetic_tile --size 256 256 --interp aa \
        --pad include --holdout 0 --ratio 0.01 --csv mtd.csv
    .venv/bin/apc-compare mtd.csv ../shared/peer/scores/magnetic_tile-c0.01.csv
"""
import argparse
import csv
import json
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pathlib import Path
from apc_edge.export.backbones import build_backbone
from apc_edge.export.embedder import PatchEmbedder
from apc_edge.coreset import greedy_coreset
from apc_edge.export.patchcore import split_holdout
from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.calibration import metrics
from apc_edge.index import ExactIndex
from apc_edge.scoring import score_embedding, smooth_map
from apc_edge.preprocess import load_image
torch.set_num_threads(2)
MEAN = np.array([0.485, 0.456, 0.406], np.float32); STD = np.array([0.229, 0.224, 0.225], np.float32)

def to_rgb(img):
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

def resize(img, hw, interp):
    h, w = img.shape[:2]; H, W = hw
    if interp == "cv":
        return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA if (h > H or w > W) else cv2.INTER_LINEAR)
    if interp == "linear":
        return cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    if interp == "sep":   # per axis: area when shrinking, linear when enlarging
        x = img
        x = cv2.resize(x, (W, x.shape[0]), interpolation=cv2.INTER_AREA if w > W else cv2.INTER_LINEAR)
        x = cv2.resize(x, (W, H), interpolation=cv2.INTER_AREA if h > H else cv2.INTER_LINEAR)
        return x
    raise ValueError(interp)

def prep(img, hw, interp):
    rgb = to_rgb(img)
    if interp == "aa":
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        t = F.interpolate(t, size=hw, mode="bilinear", antialias=True, align_corners=False)[0]
        x = t.permute(1, 2, 0).numpy()
    else:
        x = resize(rgb, hw, interp).astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)

class Emb(PatchEmbedder):
    def __init__(self, bb, include_pad):
        super().__init__(bb); self.include_pad = include_pad
    def aggregate(self, stages):
        feats = [F.avg_pool2d(stages[i], 3, stride=1, padding=1, count_include_pad=self.include_pad) for i in self.levels]
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat(feats, 1)

@torch.no_grad()
def embed(emb, paths, hw, interp, bs=8):
    out = []
    for i in range(0, len(paths), bs):
        x = np.stack([prep(load_image(p), hw, interp) for p in paths[i:i+bs]])
        out.append(emb(torch.from_numpy(x)).numpy())
    return np.concatenate(out)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data"); ap.add_argument("--size", type=int, nargs=2, default=[224, 224])
    ap.add_argument("--interp", default="cv"); ap.add_argument("--pad", default="exclude")
    ap.add_argument("--holdout", type=float, default=0.1); ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--b", type=int, default=9); ap.add_argument("--csv"); ap.add_argument("--tag", default="")
    ap.add_argument("--maps", action="store_true"); ap.add_argument("--mapup", default="bilinear")
    a = ap.parse_args()
    t0 = time.time()
    data = MVTecCategory(a.data); hw = tuple(a.size)
    bank_paths, _ = split_holdout(data.train_good(), a.holdout, 0)
    emb = Emb(build_backbone("mobilenet_v2"), a.pad == "include").eval()
    tr = embed(emb, bank_paths, hw, a.interp)
    feats = np.ascontiguousarray(tr.transpose(0, 2, 3, 1).reshape(-1, tr.shape[1]))
    ids = greedy_coreset(feats, a.ratio, progress=False); bank = np.ascontiguousarray(feats[ids]); del feats
    index = ExactIndex(bank)
    samples = data.test_samples()
    te = embed(emb, [s.path for s in samples], hw, a.interp)
    scores, maps, masks = [], [], []
    for s, e in zip(samples, te):
        ps = score_embedding(e, index, bank, a.b)
        scores.append(ps.image_score)
        if a.maps:
            if a.mapup == "nearest":
                up = cv2.resize(ps.patch_map, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
                up = cv2.GaussianBlur(up, (33, 33), 4, borderType=cv2.BORDER_REFLECT)
            else:
                up = smooth_map(ps.patch_map, hw, 4.0)
            maps.append(up)
            m = s.load_mask(load_image(s.path).shape[:2]).astype(np.uint8)
            masks.append(cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0)
    labels = np.array([s.is_anomalous for s in samples]); scores = np.array(scores)
    res = {"tag": a.tag, "data": data.name, "size": hw, "interp": a.interp, "pad": a.pad, "holdout": a.holdout,
           "ratio": a.ratio, "bank": len(bank), "image_auroc": round(metrics.auroc(labels, scores), 4)}
    if a.maps:
        res["pixel_auroc"] = round(metrics.pixel_auroc(masks, maps), 4); res["pro"] = round(metrics.pro_auc(masks, maps), 4)
    res["s"] = round(time.time() - t0, 1)
    print(json.dumps(res), flush=True)
    if a.csv:
        root = Path(a.data)
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f); w.writerow(["image", "label", "raw_score"])
            for s, sc in zip(samples, scores): w.writerow([s.path.relative_to(root).as_posix(), int(s.is_anomalous), f"{sc:.6f}"])

if __name__ == "__main__":
    main()
