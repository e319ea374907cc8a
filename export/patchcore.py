"""Fit PatchCore on a folder of good images and write a training run dir.

Run dir: ``run.json`` (configuration, threshold, provenance), ``backbone.pt``
(the backbone's state dict, torchvision key names), ``memory_bank.npy`` and
``coreset_ids.npy`` (which patch of which bank image each bank row is).
``apc-export`` turns it into a deployable model dir.

Example::

    info = fit_patchcore("../shared/data/bottle", "runs/bottle", TrainConfig(backbone="mobilenet_v2"))
    embedder, info, pre = load_run("runs/bottle")
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.calibration.thresholds import robust_good_threshold
from apc_edge.index import ExactIndex, NeighbourIndex, leave_one_out_index
from apc_edge.preprocess import Preprocessor, load_image, patch_regions
from apc_edge.scoring import peak_sigma_cells, score_embedding

from .backbones import build_backbone
from apc_edge.coreset import greedy_coreset
from .embedder import PatchEmbedder
from .graph_features import FeatureEngine
from .input_plan import channels_of, image_facts, plan_input
from apc_edge.progress import Progress

RUN_INFO = "run.json"
BACKBONE_FILE = "backbone.pt"
BANK_FILE = "memory_bank.npy"
CORESET_IDS_FILE = "coreset_ids.npy"      # bank row -> flat patch index over the bank images (INT8 export rebuilds the bank)


@dataclass
class TrainConfig:
    """Everything that decides a PatchCore model; stored in ``run.json``."""

    backbone: str = "mobilenet_v2"
    weights: str | None = None            # None: the packaged ImageNet weights; a path; or "random"
    levels: tuple[int, int] | None = None  # backbone stage indexes; None: the stride-8 and stride-16 stages
    patch_size: int = 3
    aggregation_padding: str = "zeros"    # "zeros": zero padding counted at the border (PatchCore reference); "valid"
    stage_norm: str = "soft"              # each level's cell vectors v / sqrt(|v|^2 + c^2) before the averaging:
                                          # "soft" (c: median cell norm of training images), "l2" (c = 0), "none"
    dim: int | None = None                # channel reduction; None keeps all channels
    resize: tuple[int, int] | None = None  # model input (H, W); None: chosen from the training images (input_plan)
    crop: tuple[int, int] | None = None
    resize_mode: str = "auto"             # "auto": chosen from the training image sizes; "stretch"; "pad"
    scale: float | None = None            # pixel scale factor in pad mode; None: chosen from the training images
    channels: str | None = None           # "color", "mono" or "any"; None: what the training images are
    bit_depth: int | None = None          # 8, or 9..16 for 16-bit images; None: what the training images are
    coreset_ratio: float = 0.1
    max_bank_rows: int | None = 80_000    # coreset size cap (training time grows with patches x bank rows); None: none
    projection_dim: int = 128
    num_neighbours: int = 9
    map_sigma: float = 4.0
    image_score: str = "map_peak"         # "map_peak": the patch map's peak at the map's blur; "max_patch": the paper's
    part_only: bool | None = None         # score only patches on the part; None: yes in pad mode
    holdout: float = 0.0                  # share of train/good kept out of the bank (0: every good image in the bank)
    max_false_alarm: float = 0.01         # threshold target on the training goods' leave-one-out scores
    threshold_images: int = 1000          # at most this many bank images are scored leave-one-out for the threshold
    seed: int = 0
    batch_size: int = 8
    exclude: list[str] = field(default_factory=list)  # extra provenance, e.g. few-shot anomalies used
    input_plan: dict | None = None        # what resolve_input decided and why (filled in by training)


def resolve_input(cfg: TrainConfig, paths: list[Path]) -> TrainConfig:
    """``cfg`` with its model input settled: what the user gave is kept, the rest is planned from the sizes
    of ``paths`` (:func:`input_plan.plan_input`). An explicit ``resize`` without a mode means stretch.

    Example::

        cfg = resolve_input(TrainConfig(), goods)    # e.g. stretch 512x512 for 900x900 images
    """
    if cfg.resize_mode not in ("auto", "stretch", "pad"):
        raise ValueError(f"resize_mode must be 'auto', 'stretch' or 'pad', got {cfg.resize_mode!r}")
    if cfg.input_plan is not None:
        return cfg
    sizes, kinds, depth = image_facts(paths)
    channels = cfg.channels or channels_of(kinds)
    cfg = replace(cfg, bit_depth=cfg.bit_depth or depth)
    mode = cfg.resize_mode if cfg.resize_mode != "auto" else ("stretch" if cfg.resize or cfg.crop else None)
    if mode == "stretch" and cfg.resize:
        return replace(cfg, resize_mode="stretch", scale=1.0, channels=channels,
                       input_plan={"mode": "stretch", "resize": list(cfg.resize), "reason": "given by the user"})
    if mode == "pad" and cfg.resize and cfg.scale:
        return replace(cfg, channels=channels, input_plan={"mode": "pad", "resize": list(cfg.resize),
                                                           "scale": cfg.scale, "reason": "given by the user"})
    plan = plan_input(sizes, mode, cfg.scale if mode == "pad" else None)
    resize = tuple(cfg.resize) if mode == "pad" and cfg.resize else plan.resize
    scale = plan.scale if plan.mode == "pad" else 1.0
    return replace(cfg, resize_mode=plan.mode, resize=resize, scale=scale, channels=channels,
                   input_plan={**plan.to_dict(), "resize": list(resize), "scale": round(scale, 4)})


def make_preprocessor(cfg: TrainConfig, backbone) -> Preprocessor:
    """The Preprocessor of a settled ``cfg`` (see :func:`resolve_input`); an explicit ``resize`` under
    ``auto`` means stretch."""
    if not cfg.resize:
        raise ValueError("the model input is not settled yet: call resolve_input(cfg, training images) first")
    mode = "stretch" if cfg.resize_mode == "auto" else cfg.resize_mode
    return Preprocessor(resize=tuple(cfg.resize), crop=tuple(cfg.crop) if cfg.crop else None,
                        mode=mode, scale=cfg.scale or 1.0, channels=cfg.channels or "any",
                        bit_depth=cfg.bit_depth or 8,
                        mean=tuple(backbone.input_mean), std=tuple(backbone.input_std))


def uses_part_only(cfg: TrainConfig) -> bool:
    """Whether a run scores only the part's patches: ``cfg.part_only``, by default in pad mode only (the
    canvas around a padded part holds no defects, and its flat patches only add noise and search time)."""
    return cfg.resize_mode == "pad" if cfg.part_only is None else bool(cfg.part_only)


def split_holdout(paths: list[Path], share: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split of good images into (bank images, held-out images)."""
    n_hold = int(round(share * len(paths))) if len(paths) >= 2 else 0
    n_hold = min(max(n_hold, 1 if share > 0 and len(paths) >= 2 else 0), len(paths) - 1)
    order = np.random.default_rng(seed).permutation(len(paths))
    hold = sorted(order[:n_hold].tolist())
    held = set(hold)
    return [p for i, p in enumerate(paths) if i not in held], [paths[i] for i in hold]


def collect_patches(embedder: PatchEmbedder | FeatureEngine, pre: Preprocessor, paths: list[Path],
                    batch_size: int = 8) -> np.ndarray:
    """All patch embeddings of ``paths`` as one (N * h * w, D) float32 array (through OpenVINO when it
    converts the embedder: see :mod:`graph_features`)."""
    engine = embedder if isinstance(embedder, FeatureEngine) else FeatureEngine(embedder, pre.input_hw,
                                                                               batch_size=batch_size)
    embedder = engine.embedder
    grid = embedder.grid(pre.input_hw)
    per_image = grid[0] * grid[1]
    feats = np.empty((len(paths) * per_image, embedder.dim), np.float32)
    with Progress(len(paths), "features") as bar:
        for i, emb in enumerate(engine.embed(pre, paths)):
            feats[i * per_image:(i + 1) * per_image] = emb.reshape(embedder.dim, -1).T
            bar.update(1)
    return feats


SAMPLE_IMAGES = 8       # training images an ensemble's member scales and the stage-norm floors are measured on


def calibrate_embedder(embedder: PatchEmbedder, pre: Preprocessor,
                       paths: list[Path]) -> tuple[list[float] | None, list[float] | None]:
    """``(member_scales, floors)`` from up to ``SAMPLE_IMAGES`` evenly spaced training images, read once: an
    ensemble's member scales first (None for one backbone), then the ``"soft"`` stage-norm floors on the
    balanced members' cells (None for the other stage norms)."""
    ensemble = hasattr(embedder.backbone, "member_channels")
    if not ensemble and embedder.stage_norm != "soft":
        return None, None
    picks = np.unique(np.linspace(0, len(paths) - 1, min(SAMPLE_IMAGES, len(paths))).round().astype(int))
    batch = torch.from_numpy(pre.batch([load_image(paths[i]) for i in picks]))
    scales = embedder.balance_ensemble(batch) if ensemble else None
    floors = embedder.measure_floors(batch) if embedder.stage_norm == "soft" else None
    return scales, floors


ONE_IMAGE_METHOD = "shifted_copies_of_the_one_image"
SHIFT_SHARE = 0.25    # of the patch stride: the mean misalignment of a new frame's patch grid, per axis


def shifted_copies(frame: np.ndarray, input_hw: tuple[int, int], stride: int) -> list[np.ndarray]:
    """The frame moved by a quarter of the model input's patch stride, in each of 8 directions (mirrored
    at the border).

    A new frame's patch grid falls anywhere within a stride of the training image's, a quarter of it
    per axis on average: the copies are the same part seen through such a sampling of the feature grid,
    the smallest change a second image of the same part would show.
    """
    h, w = frame.shape[:2]
    dy, dx = SHIFT_SHARE * stride * h / input_hw[0], SHIFT_SHARE * stride * w / input_hw[1]
    copies = []
    for sy in (-1, 0, 1):
        for sx in (-1, 0, 1):
            if sx or sy:
                move = np.float32([[1, 0, sx * dx], [0, 1, sy * dy]])
                copies.append(cv2.warpAffine(frame, move, (w, h), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REFLECT_101))
    return copies


IMAGE_SCORES = ("map_peak", "max_patch")


def image_peak_sigma(cfg: "TrainConfig", stride: int) -> float:
    """The ``peak_sigma`` (patch cells) of ``cfg.image_score``: the map's own blur at ``map_peak``
    (:func:`apc_edge.scoring.peak_sigma_cells`), 0 at ``max_patch`` (the PatchCore paper's maximum)."""
    if cfg.image_score not in IMAGE_SCORES:
        raise ValueError(f"image_score must be one of {', '.join(IMAGE_SCORES)}, got {cfg.image_score!r}")
    return round(peak_sigma_cells(cfg.map_sigma, stride), 6) if cfg.image_score == "map_peak" else 0.0


def shifted_copy_scores(engine: FeatureEngine, pre: Preprocessor, path: Path, bank: np.ndarray, region,
                        num_neighbours: int, stride: int, peak_sigma: float = 0.0) -> list[float]:
    """Image scores of the one training image's shifted copies (``shifted_copies``) against its own bank.

    What a threshold rests on when there is a single good image: nothing can be left out of the bank, so
    the image is scored as it would be seen again a few pixels off. This gives a low threshold (no second
    part's variation is in it): a one-image model flags more goods, never fewer defects, and the screening
    loop (``apc-review``, ``apc-update``) raises it as reviewed goods come in.
    """
    frame = load_image(path)
    index = ExactIndex(bank)
    return [score_embedding(emb, index, bank, num_neighbours, region=region, peak_sigma=peak_sigma).image_score
            for emb in engine.embed(pre, shifted_copies(frame, pre.input_hw, stride))]


def leave_one_out_scores(feats: np.ndarray, bank: np.ndarray, ids: np.ndarray, grid: tuple[int, int],
                         images: list[int], num_neighbours: int, regions: list | None = None,
                         index: NeighbourIndex | None = None, peak_sigma: float = 0.0) -> list[float]:
    """Image score of each bank image in ``images`` against the bank without the rows it contributed.

    ``feats``: every bank image's patches, image after image (the coreset's input); ``ids``: the
    flat patch index of each bank row. A bank image then scores as an unseen good image would,
    without holding any image out of the bank. ``index``: the search over ``bank``
    (default ``leave_one_out_index(bank)``: exact image scores either way).
    """
    per_image = grid[0] * grid[1]
    index = index if index is not None else leave_one_out_index(bank)
    regions = regions if regions is not None else [None] * len(images)
    scores = []
    for i, region, own in zip(images, regions, own_rows(ids, images, grid)):
        emb = feats[i * per_image:(i + 1) * per_image].T.reshape(-1, *grid)
        scores.append(score_embedding(emb, index, bank, num_neighbours, region=region, exclude=own,
                                      peak_sigma=peak_sigma).image_score)
    return scores


def own_rows(ids: np.ndarray | None, images: list[int], grid) -> list[np.ndarray]:
    """For each bank image position in ``images``: the bank rows it contributed (``ids``: flat patch index per row)."""
    if not images:
        return []
    row_image = np.asarray(ids) // (int(grid[0]) * int(grid[1]))
    return [np.flatnonzero(row_image == j) for j in images]


def coreset_size(n_patches: int, cfg: TrainConfig) -> int:
    """Bank rows of a coreset of ``n_patches``: ``coreset_ratio`` of them, at most ``max_bank_rows``.

    Example::

        coreset_size(1_344_415, TrainConfig())    # 80000 (10 % would be 134442)
    """
    size = int(np.ceil(cfg.coreset_ratio * n_patches))
    if cfg.max_bank_rows is not None:
        size = min(size, int(cfg.max_bank_rows))
    return max(1, min(size, n_patches))


def part_patch_rows(regions: list, grid: tuple[int, int]) -> np.ndarray | None:
    """Flat patch indexes (image after image) of the cells inside each image's region (pad mode's part and
    its edge ring); ``None`` when no image has a region (every cell counts)."""
    if all(r is None for r in regions):
        return None
    per_image = int(grid[0]) * int(grid[1])
    rows = [i * per_image + (np.arange(per_image) if r is None else np.flatnonzero(np.asarray(r).ravel()))
            for i, r in enumerate(regions)]
    return np.concatenate(rows).astype(np.int64)


THRESHOLD_WORK = 1e10        # patch-to-bank distances the leave-one-out threshold may compute (12-40 s)
MIN_THRESHOLD_IMAGES = 50
HNSW_QUERY_WORK = 1000       # distances an HNSW query of leave_one_out_index costs, counted generously


def threshold_image_limit(limit: int, queries_per_image: float, bank_rows: int, approximate: bool = False) -> int:
    """How many bank images to score leave-one-out: ``limit``, fewer when each costs much (a large input
    and bank: ``THRESHOLD_WORK`` distances in all), but not below ``MIN_THRESHOLD_IMAGES``. Searched through
    an HNSW graph first (``approximate``), each patch costs about ``HNSW_QUERY_WORK`` distances."""
    per_query = min(bank_rows, HNSW_QUERY_WORK) if approximate else bank_rows
    affordable = int(THRESHOLD_WORK // max(1.0, queries_per_image * per_query))
    return max(1, min(int(limit), max(MIN_THRESHOLD_IMAGES, affordable)))


def threshold_image_sample(n_images: int, limit: int, seed: int) -> list[int]:
    """Which bank images are scored leave-one-out: all, or ``limit`` of them spread at random (sorted)."""
    if n_images <= limit:
        return list(range(n_images))
    return sorted(np.random.default_rng(seed).choice(n_images, limit, replace=False).tolist())


def threshold_block(holdout_scores: list[float]) -> dict:
    """Provisional threshold: the largest held-out good score (refined later by calibration)."""
    s = np.asarray(holdout_scores, np.float64)
    t = float(s.max())
    lo = float(s.min())
    return {"value": t, "method": "max_holdout_good", "norm_lo": lo, "norm_hi": max(2 * t - lo, t + 1e-6),
            "n_images": int(s.size)}


def fit_patchcore(data_dir: str | Path, run_dir: str | Path, cfg: TrainConfig,
                  backbone: torch.nn.Module | None = None, extra: dict | None = None) -> dict:
    """Build the memory bank from ``data_dir/train/good`` and write the run dir. Returns run info."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = MVTecCategory(data_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    goods = data.train_good()
    cfg = resolve_input(cfg, goods)
    if not 0 <= cfg.holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {cfg.holdout}")
    bank_paths, holdout_paths = split_holdout(goods, cfg.holdout, cfg.seed)
    if holdout_paths and not bank_paths:
        raise ValueError(f"holdout {cfg.holdout} leaves no image for the memory bank")
    if backbone is None:
        backbone = build_backbone(cfg.backbone, cfg.weights)
    embedder = PatchEmbedder(backbone, cfg.levels, cfg.patch_size, cfg.dim, cfg.aggregation_padding,
                             cfg.stage_norm).eval()
    pre = make_preprocessor(cfg, backbone)
    member_scales, floors = calibrate_embedder(embedder, pre, bank_paths)
    grid = embedder.grid(pre.input_hw)
    peak_sigma = image_peak_sigma(cfg, embedder.stride)

    t0 = time.perf_counter()
    engine = FeatureEngine(embedder, pre.input_hw, batch_size=cfg.batch_size)
    feats = collect_patches(engine, pre, bank_paths)
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    part_only = uses_part_only(cfg)
    bank_regions = patch_regions(pre, bank_paths, grid, part_only)     # read once: coreset and threshold
    candidates = part_patch_rows(bank_regions, grid)
    n_patches = len(feats) if candidates is None else int(candidates.size)
    size = coreset_size(n_patches, cfg)
    if candidates is None:
        ids = greedy_coreset(feats, cfg.coreset_ratio, cfg.projection_dim, cfg.seed, size=size)
    else:   # pad mode: the bank holds the part's patches, not the canvas it sits on
        ids = candidates[greedy_coreset(feats[candidates], cfg.coreset_ratio, cfg.projection_dim, cfg.seed, size=size)]
    bank = np.ascontiguousarray(feats[ids])
    t_coreset = time.perf_counter() - t0

    t0 = time.perf_counter()
    if holdout_paths:
        index = ExactIndex(bank)
        regions = patch_regions(pre, holdout_paths, grid, part_only)
        hold_scores = [score_embedding(e, index, bank, cfg.num_neighbours, region=r, peak_sigma=peak_sigma).image_score
                       for e, r in zip(engine.embed(pre, holdout_paths), regions)]
        threshold, scored = threshold_block(hold_scores), []
    elif len(bank_paths) == 1:
        hold_scores = shifted_copy_scores(engine, pre, bank_paths[0], bank, bank_regions[0], cfg.num_neighbours,
                                          embedder.stride, peak_sigma)
        threshold, scored = robust_good_threshold(hold_scores, cfg.max_false_alarm, method=ONE_IMAGE_METHOD), []
    else:
        queries = grid[0] * grid[1] if candidates is None else candidates.size / len(bank_paths)
        loo_index = leave_one_out_index(bank)
        limit = threshold_image_limit(cfg.threshold_images, queries, bank.shape[0], loo_index.approximate)
        scored = threshold_image_sample(len(bank_paths), limit, cfg.seed)
        hold_scores = leave_one_out_scores(feats, bank, ids, grid, scored, cfg.num_neighbours,
                                           [bank_regions[i] for i in scored], loo_index, peak_sigma)
        threshold = robust_good_threshold(hold_scores, cfg.max_false_alarm)
    del feats
    t_threshold = time.perf_counter() - t0
    if not np.isfinite(threshold["value"]) or threshold["value"] <= 0:
        raise ValueError(f"the threshold came out as {threshold['value']}: the good images' scores cannot set one")

    torch.save(backbone.state_dict(), run_dir / BACKBONE_FILE)
    np.save(run_dir / BANK_FILE, bank, allow_pickle=False)
    np.save(run_dir / CORESET_IDS_FILE, np.asarray(ids, np.int64), allow_pickle=False)
    cfg_dict = asdict(cfg)
    weights = cfg.weights or "imagenet (packaged)"
    if extra and "fine_tuning" in extra:
        weights = f"fine-tuned ({extra['fine_tuning'].get('method', 'fine-tuning')}) from {weights}"
    info = {
        "config": cfg_dict,
        "backbone": {"name": backbone.name, "levels": list(embedder.levels), "patch_size": cfg.patch_size,
                     "aggregation_padding": embedder.padding, "stage_norm": embedder.stage_norm,
                     **({"stage_norm_floors": floors} if floors else {}),
                     "dim": embedder.dim, "weights": weights,
                     **({"member_scales": member_scales} if member_scales else {})},
        "preprocess": pre.to_dict(),
        "patch_grid": list(grid),
        "embedding_dim": embedder.dim,
        "scoring": {"num_neighbours": cfg.num_neighbours, "map_sigma": cfg.map_sigma, "part_only": part_only,
                    "peak_sigma": peak_sigma},
        "threshold": threshold,
        "holdout_scores": [float(s) for s in hold_scores],
        "training": {
            "data_dir": str(Path(data_dir).resolve()), "category": data.name,
            "n_train_good": len(goods), "n_bank_images": len(bank_paths),
            "holdout_images": [data.image_key(p) for p in holdout_paths],
            "threshold_images": [data.image_key(bank_paths[i]) for i in scored],
            "n_patches": n_patches,
            "bank_size": int(bank.shape[0]),
            "coreset_ratio": cfg.coreset_ratio, "max_bank_rows": cfg.max_bank_rows,
            "seed": cfg.seed,
            "features_computed_with": {"engine": engine.name, "note": engine.note},
            "seconds": {"features": round(t_feat, 2), "coreset": round(t_coreset, 2),
                        "threshold": round(t_threshold, 2),
                        "total": round(time.perf_counter() - t_start, 2)},
            "torch": torch.__version__, "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    if extra:
        info.update(extra)
    (run_dir / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def load_run(run_dir: str | Path) -> tuple[PatchEmbedder, dict, Preprocessor]:
    """Rebuild the embedder of a run dir from its ``run.json`` and ``backbone.pt`` (weights_only load)."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run dir: {RUN_INFO} is missing (run apc-train first)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    bb_info = info["backbone"]
    backbone = build_backbone(bb_info["name"], run_dir / BACKBONE_FILE)
    # runs made before the padding choice averaged only the cells inside the image, and before the stage
    # norm averaged raw activations
    embedder = PatchEmbedder(backbone, tuple(bb_info["levels"]), bb_info["patch_size"], bb_info["dim"],
                             bb_info.get("aggregation_padding", "valid"), bb_info.get("stage_norm", "none"),
                             bb_info.get("stage_norm_floors")).eval()
    return embedder, info, Preprocessor.from_dict(info["preprocess"])


def load_bank(run_dir: str | Path) -> np.ndarray:
    return np.load(Path(run_dir) / BANK_FILE, allow_pickle=False)


def load_coreset_ids(run_dir: str | Path) -> np.ndarray | None:
    """Flat patch index (image * h * w + patch) of each bank row, or None for runs made before it was stored."""
    path = Path(run_dir) / CORESET_IDS_FILE
    return np.load(path, allow_pickle=False) if path.is_file() else None
