"""Turn a training run dir into a deployable model dir (ONNX or OpenVINO IR; FP32, FP16 or INT8; exact or HNSW).

Only image -> patch embeddings goes into the graph; the memory bank is written
beside it as ``memory_bank.npy`` (and, for HNSW, ``index.hnsw``), so the graph
does not grow with the bank. A compressed graph gets its own bank (the same
coreset patches, re-embedded) and must pass the accuracy guard, else nothing is
written.

Example::

    export_model("runs/bottle", "models/bottle", target="openvino")
    export_model("runs/bottle", "models/bottle_int8", options=ExportOptions(precision="int8", index="auto"))
"""
from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from apc_edge.backends import Backend, OnnxRuntimeBackend, OpenVINOBackend
from apc_edge.bank_neighbours import FILE_NAME as NEIGHBOURS_FILE, compute_bank_neighbours
from apc_edge.calibration.imagesets import (calibration_subset, collect_images, threshold_image_indexes,
                                            training_images)
from apc_edge.calibration.thresholds import robust_good_threshold
from apc_edge.calibration.int8_guard import (GuardTolerance, Pipeline, QuantizationGuardError, compare_pipelines,
                                             embed_images, guard_failures, region_cosines)
from apc_edge.index import ExactIndex, leave_one_out_index
from apc_edge.manifest import write_manifest
from apc_edge import graph_probe
from apc_edge.preprocess import Preprocessor, load_image, patch_regions
from apc_edge.progress import StageClock
from apc_edge.scoring import score_embedding

from .bank_rebuild import coreset_patch_ids, embed_patches
from .guard_anomalies import cutpaste_anomalies
from .hnsw_build import INDEX_MODES, HnswTargets, IndexChoice, choose_index
from .patchcore import ONE_IMAGE_METHOD, load_bank, load_run, own_rows, shifted_copies, threshold_block
from .quantize import INT8_FLOAT_PARTS, INT8_RANGES, quantize_onnx, quantize_openvino

TARGETS = ("openvino", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
BANK_DTYPES = ("float32", "float16")
INT8_PRESETS = ("performance", "mixed")
ONNX_OPSET = 17
# Below this many bank rows `--index auto` keeps exact search without measuring (see docs/edge-compression.md).
AUTO_EXACT_BELOW = 4096


@dataclass
class ExportOptions:
    """How to compress and index; defaults give an FP32 graph and ``auto`` index choice."""

    target: str = "openvino"
    precision: str = "fp32"                   # fp32 | fp16 (OpenVINO only) | int8
    index: str = "auto"                       # exact | hnsw | auto
    data_dir: str | None = None               # default: the run's training.data_dir
    calibration_images: int | None = None     # INT8 calibration set size; None: min(300, all bank images)
    guard_images: list[str] = field(default_factory=list)   # extra images (e.g. anomalies) for guard and sweep
    guard_anomalies: list[str] = field(default_factory=list)  # real anomalies (files/folders) for the INT8 guard
    guard_synthetic: int = 30                 # CutPaste anomalies made from the goods when no real ones are known
    int8_fallback: bool = True                # on a failed guard, try the other NNCF presets/ranges before refusing
    guard: GuardTolerance = field(default_factory=GuardTolerance)
    hnsw: HnswTargets = field(default_factory=HnswTargets)
    bank_dtype: str = "float32"
    int8_preset: str = "performance"          # NNCF preset (OpenVINO): performance | mixed
    int8_ranges: str = "mean"                 # NNCF activation ranges (OpenVINO): mean | max
    int8_float: str = "none"                  # layers kept float (OpenVINO): none | stem | stride8
    seed: int = 0

    def validate(self) -> "ExportOptions":
        for name, value, allowed in (("target", self.target, TARGETS), ("precision", self.precision, PRECISIONS),
                                     ("index", self.index, INDEX_MODES), ("bank dtype", self.bank_dtype, BANK_DTYPES)):
            if value not in allowed:
                raise ValueError(f"unknown export {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.int8_preset not in INT8_PRESETS:
            raise ValueError(f"unknown INT8 preset {self.int8_preset!r}; choose one of {', '.join(INT8_PRESETS)}")
        if self.int8_ranges not in INT8_RANGES:
            raise ValueError(f"unknown INT8 activation ranges {self.int8_ranges!r}; "
                             f"choose one of {', '.join(INT8_RANGES)}")
        if self.int8_float not in INT8_FLOAT_PARTS:
            raise ValueError(f"unknown INT8 float part {self.int8_float!r}; choose one of {', '.join(INT8_FLOAT_PARTS)}")
        if self.guard_synthetic < 0:
            raise ValueError(f"--guard-synthetic must be >= 0, got {self.guard_synthetic}")
        if self.precision == "fp16" and self.target != "openvino":
            raise ValueError("--fp16 applies to --target openvino (FP16-compressed IR); ONNX exports FP32 or INT8")
        self.guard.validate()
        return self


def export_onnx(embedder: torch.nn.Module, input_hw: tuple[int, int], path: Path) -> None:
    """Write the embedder as a single-file ONNX graph (input ``image``, output ``embedding``)."""
    dummy = torch.zeros(1, 3, *input_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # the TorchScript exporter is the one we want
        torch.onnx.export(embedder, (dummy,), str(path), input_names=["image"], output_names=["embedding"],
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)


def onnx_to_openvino(onnx_path: Path, xml_path: Path, compress_to_fp16: bool = False) -> None:
    """Convert an ONNX graph to OpenVINO IR (``.xml`` + ``.bin``), FP32 unless asked otherwise."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)


def graph_files(target: str) -> tuple[str, list[str]]:
    if target == "openvino":
        return "backbone.xml", ["backbone.xml", "backbone.bin"]
    return "backbone.onnx", ["backbone.onnx"]


def _backend(target: str, path: Path, precision: str) -> Backend:
    return OpenVINOBackend(path, "CPU", precision) if target == "openvino" else OnnxRuntimeBackend(path, "CPU", precision)


def _build_graph(tmp: Path, embedder, pre, opts: ExportOptions, calib_paths) -> tuple[str, list[str], Path, dict]:
    """Write the final graph into ``tmp``; return (main file, files, FP32 reference graph path, quantization info).

    The FP32 graphs written by an earlier call into the same ``tmp`` (an earlier INT8 setting) are reused."""
    onnx_fp32 = tmp / "fp32.onnx"
    if not onnx_fp32.is_file():
        export_onnx(embedder, pre.input_hw, onnx_fp32)
    main_file, files = graph_files(opts.target)
    ref = onnx_fp32
    info: dict = {}
    if opts.target == "openvino":
        if opts.precision == "fp32":
            onnx_to_openvino(onnx_fp32, tmp / main_file)
            ref = tmp / main_file
        else:
            ref = tmp / "fp32.xml"
            if not ref.is_file():
                onnx_to_openvino(onnx_fp32, ref)
            if opts.precision == "fp16":
                onnx_to_openvino(onnx_fp32, tmp / main_file, compress_to_fp16=True)
                info = {"method": "OpenVINO FP16 weight compression (save_model compress_to_fp16)"}
            else:
                t0 = time.perf_counter()
                quantize_openvino(ref, tmp / main_file, calib_paths, pre, opts.int8_preset, opts.int8_ranges,
                                  opts.int8_float)
                kept = {"none": "", "stem": ", the first convolution",
                        "stride8": ", the operations up to the stride-8 tap"}[opts.int8_float]
                info = {"method": f"NNCF post-training quantization (nncf.quantize, preset {opts.int8_preset}, "
                                  f"activation ranges {opts.int8_ranges}, fast bias correction; "
                                  f"aggregation ops{kept} kept float)",
                        "seconds": round(time.perf_counter() - t0, 1)}
    elif opts.precision == "int8":
        t0 = time.perf_counter()
        quantize_onnx(onnx_fp32, tmp / main_file, calib_paths, pre)
        info = {"method": "ONNX Runtime static quantization, QDQ, per-channel INT8 weights, UINT8 activations, "
                          "MinMax calibration", "seconds": round(time.perf_counter() - t0, 1)}
    else:
        onnx_fp32.replace(tmp / main_file)
        ref = tmp / main_file
    return main_file, files, ref, info


def export_model(run_dir: str | Path, out_dir: str | Path, target: str | None = None, overwrite: bool = False,
                 options: ExportOptions | None = None) -> dict:
    """Export ``run_dir`` to ``out_dir``; returns the manifest written.

    The dir is assembled in a temporary sibling and moved into place at the end,
    so a failed export (including a failed accuracy guard) never leaves a
    half-written model dir, nor touches an existing one.
    """
    opts = options or ExportOptions()
    if target is not None:
        opts.target = target
    opts.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    clock = StageClock()
    with clock("load run"):
        embedder, info, pre = load_run(run_dir)
        bank = load_bank(run_dir).astype(np.float32, copy=False)
    b = int(info["scoring"]["num_neighbours"])
    peak = float(info["scoring"].get("peak_sigma", 0.0))    # the run's image-score rule (0: runs made before it)
    grid = tuple(info["patch_grid"])
    compressed = opts.precision != "fp32"
    needs_images = (compressed or opts.index == "hnsw" or opts.bank_dtype != "float32"
                    or (opts.index == "auto" and bank.shape[0] >= AUTO_EXACT_BELOW))
    bank_paths, held, extra, data_note, loo = [], [], [], None, []
    if needs_images or opts.data_dir or opts.guard_images:
        try:
            bank_paths, held = training_images(info["training"], opts.data_dir)
            # no held-out goods: measure on the bank images the run scored leave-one-out
            loo = [] if held else threshold_image_indexes(info["training"], bank_paths, opts.data_dir)
        except ValueError as exc:
            if compressed or opts.index == "hnsw":
                raise
            data_note = f"no held-out images to measure on ({exc})"
        extra = collect_images(opts.guard_images)
    calib = calibration_subset(bank_paths, opts.calibration_images, opts.seed) if opts.precision == "int8" else []
    with clock("guard anomalies"):
        anomalies, anomaly_source = (guard_anomaly_set(info, opts, bank_paths) if compressed and bank_paths
                                     else ([], ""))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # a one-image run: its threshold came from shifted copies of that image, which stand in for goods here
        one_image = info["threshold"].get("method") == ONE_IMAGE_METHOD and len(bank_paths) == 1 and not held
        copies = shifted_copies(load_image(bank_paths[0]), pre.input_hw, embedder.stride) if one_image else []
        goods = held + [bank_paths[j] for j in loo] + copies
        part_only = bool(info["scoring"].get("part_only", False))
        regions = patch_regions(pre, goods + extra, grid, part_only)
        ids = coreset_patch_ids(run_dir, bank, bank_paths) if (compressed or loo) else None
        excludes = [None] * len(held) + own_rows(ids, loo, grid) + [None] * (len(copies) + len(extra))
        threshold = info["threshold"]
        final_bank = bank
        if compressed:
            # the guard scores goods, then anomalies, then the extra images; only goods and extras go on
            guard_set = goods + anomalies + extra
            guard_regions = regions[:len(goods)] + patch_regions(pre, anomalies, grid, part_only) + regions[len(goods):]
            guard_excludes = excludes[:len(goods)] + [None] * len(anomalies) + excludes[len(goods):]
            known = training_loo_scores(info, loo) if not (held or copies) else None
            guard_known = (known or [None] * len(goods)) + [None] * (len(anomalies) + len(extra))
            ref_emb = None
            # the guard scores goods leave-one-out: through HNSW first on a large bank (exact image scores)
            ref_index = leave_one_out_index(bank)
            reference = None
            attempts: list[dict] = []         # every setting built, in that order
            chosen, last = None, None
            stages = _guard_stages(_int8_attempts(opts))
            for stage_no, stage in enumerate(stages):
                built = []
                for attempt_opts in stage:
                    with clock("graph and quantization"):
                        main_file, files, ref_graph, quant = _build_graph(tmp, embedder, pre, attempt_opts, calib)
                        final = _backend(opts.target, tmp / main_file, opts.precision)
                        reference = reference or _backend(opts.target, ref_graph, "fp32")
                    with clock("guard embeddings"):
                        ref_emb = ref_emb if ref_emb is not None else embed_images(reference, pre, guard_set)
                        test_emb = embed_images(final, pre, guard_set)
                    cos = region_cosines(ref_emb, test_emb, guard_regions)
                    aside = f"attempt{len(attempts)}."
                    for name in files:      # moved, not copied: the backend maps its weights file, and the next
                        (tmp / name).replace(tmp / f"{aside}{name}")   # setting's graph must not overwrite it
                    cand = _Candidate(main_file, files, ref_graph, quant, final, test_emb, aside,
                                      {"mean": float(cos.mean()), "p01": float(np.quantile(cos, 0.01))})
                    record = {"method": quant.get("method"), "passed": None, "problems": [], "anomaly_auroc": None,
                              "embedding_cosine_p01": cand.cosine["p01"]}
                    attempts.append(record)
                    built.append((cand, record))
                # a pair is guarded closer-first (:func:`guard_preference`); the other only if that one fails
                ranked = sorted(built, key=lambda cr: guard_preference({"embedding_cosine": cr[0].cosine}))
                for rank, (cand, record) in enumerate(ranked):
                    last_chance = stage_no == len(stages) - 1 and rank == len(ranked) - 1
                    if cand.cosine["mean"] < opts.guard.min_cosine and not last_chance:
                        # fails the cheapest tolerance: no bank re-embedding, no scoring
                        record.update(passed=False, problems=[f"mean embedding cosine INT8 vs FP32 "
                                                              f"{cand.cosine['mean']:.4f} < --int8-min-cosine "
                                                              f"{opts.guard.min_cosine}"])
                        continue
                    t1 = time.perf_counter()
                    with clock("bank re-embedding"):
                        final_bank = embed_patches(cand.final, pre, bank_paths, ids, grid,
                                                   label=f"{opts.precision} bank")
                    bank_seconds = time.perf_counter() - t1
                    with clock("guard scoring"):
                        guard = compare_pipelines(
                            Pipeline(reference, bank, ref_index, b, peak),
                            Pipeline(cand.final, final_bank, leave_one_out_index(final_bank), b, peak), pre, guard_set,
                            n_good=len(goods), threshold=float(info["threshold"]["value"]), regions=guard_regions,
                            excludes=guard_excludes, n_anomalies=len(anomalies), anomaly_source=anomaly_source,
                            embeddings=(ref_emb, cand.test_emb), reference_scores=guard_known)
                    problems = guard_failures(guard.report, opts.guard)
                    record.update(passed=not problems, problems=problems,
                                  anomaly_auroc=guard.report.get("anomaly_auroc"))
                    last = (cand, final_bank, guard, problems, bank_seconds)
                    if not problems:
                        chosen = last
                        break
                if len(built) > 1:
                    for cand, record in built:
                        record["chosen"] = chosen is not None and chosen[0] is cand
                        if record["passed"] is None:
                            record["not_guarded"] = ("the other activation ranges came closer to FP32 "
                                                     "(1st-percentile cosine) and passed")
                for cand, _ in built:      # only the last guarded setting's embeddings and graph are still needed
                    if last is None or cand is not last[0]:
                        cand.test_emb, cand.final = [], None
                if chosen:
                    break
            cand, final_bank, guard, problems, bank_seconds = chosen or last
            for name in cand.files:
                (tmp / f"{cand.aside}{name}").replace(tmp / name)
            main_file, files, ref_graph, quant, final = cand.main_file, cand.files, cand.ref_graph, cand.quant, cand.final
            report = guard.report
            del ref_emb
            if any(a.get("chosen") for a in attempts):
                quant["chosen_by"] = ("of the two activation-range settings, the one with the higher 1st-percentile "
                                      "patch cosine against FP32 that passed the guard (the other is guarded only "
                                      "when the closer one fails)")
            quant.update({"precision": opts.precision,
                          "calibration": {"n_images": len(calib), "from": "train/good bank images",
                                          "seed": opts.seed} if calib else None,
                          "bank": f"re-embedded with the {opts.precision} graph (same {len(ids)} coreset patches)",
                          "bank_seconds": round(bank_seconds, 1),
                          "guard": report, "tolerance": asdict(opts.guard), "passed": not problems,
                          "attempts": attempts})
            if problems:
                tried = "; ".join(f"[{a['method']}] " + ", ".join(a["problems"]) for a in attempts)
                raise QuantizationGuardError(
                    f"{opts.precision.upper()} accuracy guard failed on {report['n_images']} images "
                    f"({report['n_held_out_good']} goods, {len(anomalies)} {anomaly_source} anomalies, "
                    f"{len(extra)} --guard-images) in each of {len(attempts)} quantization setting(s): {tried}. "
                    f"No model dir written ({out_dir} left as it was); export FP32 (drop --int8) or loosen the "
                    f"tolerances named.")
            embeddings = guard.embeddings[:len(goods)] + guard.embeddings[len(goods) + len(anomalies):]
            # the goods' scores with this graph and bank, exact search, own rows excluded: the threshold's
            guard_good_scores = guard.scores[:len(goods)]
        else:
            guard_good_scores = None
            with clock("graph and quantization"):
                main_file, files, ref_graph, quant = _build_graph(tmp, embedder, pre, opts, calib)
                final = _backend(opts.target, tmp / main_file, opts.precision)
            eval_paths = goods + extra
            with clock("measurement embeddings"):
                embeddings = embed_images(final, pre, eval_paths) if needs_images and eval_paths else []
        for p in tmp.iterdir():               # only the final graph stays
            if p.name not in files:
                p.unlink()

        stored_bank = final_bank.astype(opts.bank_dtype)
        bank_block = {"file": "memory_bank.npy", "size": int(stored_bank.shape[0]), "dtype": opts.bank_dtype,
                      "source": "training run" if not compressed else f"re-embedded with the {opts.precision} graph"}
        used_bank = stored_bank.astype(np.float32)
        if opts.bank_dtype != "float32" and embeddings:
            exact32, exact16 = ExactIndex(final_bank), ExactIndex(used_bank)
            s32 = np.array([score_embedding(e, exact32, final_bank, b, region=r, peak_sigma=peak).image_score
                            for e, r in zip(embeddings, regions)])
            s16 = np.array([score_embedding(e, exact16, used_bank, b, region=r, peak_sigma=peak).image_score
                            for e, r in zip(embeddings, regions)])
            bank_block["image_score_max_rel_change_vs_float32"] = float(np.max(np.abs(s16 - s32) / np.abs(s32)))
        np.save(tmp / "memory_bank.npy", stored_bank, allow_pickle=False)
        files.append("memory_bank.npy")
        if b > 1:
            with clock("bank neighbours"):      # Eq. 7's neighbourhoods: read by each check, never searched
                np.save(tmp / NEIGHBOURS_FILE, compute_bank_neighbours(used_bank, b), allow_pickle=False)
            files.append(NEIGHBOURS_FILE)
            bank_block["neighbours"] = NEIGHBOURS_FILE

        with clock("index choice"):
            choice = _choose_index(used_bank, embeddings, b, opts, data_note, regions, peak)
            if choice.kind == "hnsw":
                choice.index.save(tmp / "index.hnsw")
                files.append("index.hnsw")
        exact = ExactIndex(used_bank)
        index = choice.index if choice.kind == "hnsw" else exact
        computed_with = {"precision": opts.precision, "index": choice.kind, "bank_dtype": opts.bank_dtype}
        with clock("threshold"):
            if (compressed or choice.kind == "hnsw" or opts.bank_dtype != "float32") and held:
                # scored as the Inspector scores: HNSW, then the top patches again exactly
                held_scores = [score_embedding(e, index, used_bank, b, exact=exact,
                                               refine_top=choice.report.get("refine_top", 16), region=r,
                                               peak_sigma=peak).image_score
                               for e, r in zip(embeddings[:len(held)], regions)]
                threshold = {**threshold_block(held_scores), "computed_with": computed_with}
            elif (compressed or opts.bank_dtype != "float32") and (loo or copies):
                # leave-one-out (or the one image's shifted copies) with this graph and bank: exact image
                # scores (leave_one_out_index refines HNSW's maximum exactly)
                if guard_good_scores is not None and opts.bank_dtype == "float32":
                    good_scores = guard_good_scores
                else:
                    loo_index = leave_one_out_index(used_bank)
                    good_scores = [score_embedding(e, loo_index, used_bank, b, region=r, exclude=x,
                                                   peak_sigma=peak).image_score
                                   for e, r, x in zip(embeddings[:len(goods)], regions, excludes)]
                target = float(info["threshold"].get("target_false_alarm", 0.01))
                rule = robust_good_threshold(good_scores, target, **({"method": ONE_IMAGE_METHOD} if copies else {}))
                threshold = {**rule, "computed_with": computed_with}

        graph = {"file": main_file, "format": opts.target, "precision": opts.precision, "input": "image",
                 "output": "embedding", "input_shape": [1, 3, *pre.input_hw],
                 "probe": graph_probe.fingerprint(final, pre.input_hw)}     # what the loader checks it computes
        if opts.target == "openvino":
            graph["cpu_inference_precision_hint"] = "f32"
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "backbone": info["backbone"],
            "graph": graph,
            "preprocess": info["preprocess"],
            "patch_grid": info["patch_grid"],
            "embedding_dim": info["embedding_dim"],
            "memory_bank": bank_block,
            "index": choice.report,
            "scoring": info["scoring"],
            "threshold": threshold,
            "training": info["training"],
            "export": {"seconds": None, "torch": torch.__version__},
            "files": files,
        }
        if compressed:
            manifest["quantization"] = quant
        for key in ("fine_tuning", "few_shot_anomalies"):
            if key in info:
                manifest[key] = info[key]
        manifest["export"]["seconds"] = round(time.perf_counter() - t0, 2)
        manifest["export"]["stage_seconds"] = clock.seconds
        write_manifest(tmp, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def training_loo_scores(info: dict, loo: list[int]) -> list[float] | None:
    """The FP32 leave-one-out scores the training run computed for its threshold, one per image of ``loo``
    (the same images, in the same order), or ``None`` when the run did not threshold that way. Within a few
    millionths of the export's own FP32 graph's scores on magnetic_tile."""
    scores = info.get("holdout_scores") or []
    if info["threshold"].get("method") != "leave_one_image_out" or not loo or len(scores) != len(loo):
        return None
    return [float(s) for s in scores]


def guard_anomaly_set(info: dict, opts: ExportOptions, bank_paths: list[Path]) -> tuple[list, str]:
    """Anomalies the INT8 guard scores, and what they are: ``--guard-anomalies``, else the few real
    anomalies an AnomalousPatchCore run was fine-tuned with, else CutPaste made from the bank images."""
    if opts.guard_anomalies:
        return collect_images(opts.guard_anomalies), "real (--guard-anomalies)"
    few_shot = info.get("few_shot_anomalies") or {}
    keys = few_shot.get("images") or []
    if few_shot.get("folder"):                       # apc-train --anomalies-dir
        real = [Path(few_shot["folder"]) / Path(k).name for k in keys]
    else:
        real = [Path(opts.data_dir or info["training"]["data_dir"]) / "test" / k for k in keys]
    if real and all(p.is_file() for p in real):
        return real, "real (the run's few-shot anomalies)"
    if opts.guard_synthetic and bank_paths:
        bits = Preprocessor.from_dict(info["preprocess"]).uint16_bits
        return cutpaste_anomalies(bank_paths, opts.guard_synthetic, opts.seed, bits), "synthetic CutPaste"
    return [], ""


@dataclass
class _Candidate:
    """One INT8 setting, built and embedded, not yet guarded; its graph files wait under ``aside``."""

    main_file: str
    files: list[str]
    ref_graph: Path
    quant: dict
    final: Backend
    test_emb: list
    aside: str
    cosine: dict          # {"mean", "p01"} patch cosine against FP32 over every guard image


def _guard_stages(candidates: list[ExportOptions]) -> list[list[ExportOptions]]:
    """The settings grouped as they are guarded: the asked one with its ranges twin (:func:`_ranges_twin`),
    when there is one, as a pair, then every other setting alone."""
    pair = 2 if len(candidates) > 1 and _ranges_twin(candidates[0]) == candidates[1] else 1
    return [candidates[:pair]] + [[c] for c in candidates[pair:]]


def guard_preference(report: dict) -> float:
    """Sort key of two INT8 settings by their ``embedding_cosine`` figures (a guard report's, or as measured
    before scoring), lower is closer to FP32: minus the 1st-percentile patch cosine over every guard image,
    where clipped activations show. The closer one is guarded first and kept when it passes, so the other is
    scored only when it fails (the pass/fail outcome is the same as guarding both and keeping the closer of
    those that pass). The goods-vs-anomalies AUROC is not the key: on 30 synthetic anomalies its differences
    below the tolerance are noise (on raw features a ``max`` export gained 0.0005 there and lost 0.0054 on
    real defects)."""
    return -float(report["embedding_cosine"]["p01"])


def _ranges_twin(opts: ExportOptions) -> ExportOptions | None:
    """The asked INT8 setting with the other activation ranges, measured even when the asked one passes
    (``None`` unless OpenVINO INT8 with fallback on and no float part asked). Neither range wins everywhere:
    ``mean`` clips the rare large activations a defect can make, ``max`` spends resolution on them."""
    if (opts.precision != "int8" or opts.target != "openvino" or not opts.int8_fallback
            or opts.int8_float != "none"):
        return None
    return replace(opts, int8_ranges="max" if opts.int8_ranges == "mean" else "mean")


def _int8_attempts(opts: ExportOptions) -> list[ExportOptions]:
    """The quantization settings to try in order: the one asked for, then (OpenVINO INT8 with fallback on)
    its twin with the other activation ranges (:func:`_ranges_twin`), the other NNCF presets and ranges,
    the wider ``max`` ranges clipping defects less, and last mixed precision: ``max`` ranges with the first
    convolution, then every convolution up to the stride-8 tap, kept float (slower, and tried only when
    full INT8 fails)."""
    if opts.precision != "int8" or opts.target != "openvino" or not opts.int8_fallback:
        return [opts]
    twin = _ranges_twin(opts)
    ordered = [opts] + ([twin] if twin is not None else [])
    others = [(p, r, "none") for r in ("mean", "max") for p in ("performance", "mixed")]
    others += [(opts.int8_preset, "max", f) for f in INT8_FLOAT_PARTS[1:]]
    taken = {(o.int8_preset, o.int8_ranges, o.int8_float) for o in ordered}
    return ordered + [replace(opts, int8_preset=p, int8_ranges=r, int8_float=f) for p, r, f in others
                      if (p, r, f) not in taken]


def _choose_index(bank: np.ndarray, embeddings: list, b: int, opts: ExportOptions, data_note: str | None,
                  regions: list | None = None, peak_sigma: float = 0.0) -> IndexChoice:
    if opts.index == "auto" and bank.shape[0] < AUTO_EXACT_BELOW:
        return IndexChoice("exact", None, {"type": "exact", "chosen_by": f"auto: bank below {AUTO_EXACT_BELOW} rows"})
    if opts.index == "auto" and not embeddings:
        return IndexChoice("exact", None, {"type": "exact", "chosen_by": f"auto: {data_note or 'no held-out images'}"})
    return choose_index(bank, embeddings, b, opts.index, opts.hnsw, seed=opts.seed, regions=regions,
                        peak_sigma=peak_sigma)
