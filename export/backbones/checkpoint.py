"""Reading weight checkpoints safely and fitting them to a backbone.

Files are read with ``torch.load(..., weights_only=True)`` only: tensors and
plain containers, never arbitrary pickled objects. Accepted layouts:

* a raw state dict, or one nested under ``"state_dict"``, ``"model"`` or
  ``"model_state_dict"`` (training checkpoints);
* keys with a ``module.`` prefix (DataParallel), MoCo v3 (``base_encoder.``;
  ``momentum_encoder.`` and ``predictor.`` are dropped), MoCo v1/v2
  (``encoder_q.``; ``encoder_k.`` is dropped) and CLIP (``visual.``; the text tower is ignored).
  CLIP's own ``.pt`` downloads are TorchScript archives, which are refused (they run code when
  loaded); save their state dict once: ``torch.save(torch.jit.load(f).state_dict(), "rn50.pth")``.

Keys of layers the backbone does not build (``layer4``, ``fc``, deeper
``features``/``_blocks``, heads) are ignored; every tensor the backbone needs
must be present with its exact shape, otherwise ``BackboneError``.

Example:
    >>> bb = build_backbone("resnet50", weights="random")
    >>> report = load_checkpoint_into(bb, "moco_v3_r50.pth.tar")  # MoCo v3 training checkpoint
    >>> report.loaded, report.ignored[:2]
    (258, ('fc.0.weight', 'fc.1.bias'))
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import BackboneError, FeatureBackbone

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
STRIPPED_PREFIXES = ("module.", "base_encoder.", "encoder_q.", "visual.")     # visual.: CLIP's image tower
DROPPED_PREFIXES = ("momentum_encoder.", "predictor.", "encoder_k.")

# How many offending keys an error message lists.
_SHOWN = 5


@dataclass(frozen=True)
class LoadReport:
    """What ``load_checkpoint_into`` did: source, tensors loaded, checkpoint keys ignored."""

    source: str
    loaded: int
    ignored: tuple[str, ...]


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _torch_load(path: Path) -> object:
    if not path.exists():
        raise BackboneError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise BackboneError(f"checkpoint path is not a file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            what = f" (it contains {found.group(1)})" if found else ""
            raise BackboneError(
                f"refusing to load {path}: it stores Python objects that need full unpickling{what}; "
                "only plain tensor checkpoints are read. Re-save the weights with "
                "torch.save(model.state_dict(), FILE)"
            ) from None
        raise BackboneError(f"cannot read {path}: not a PyTorch checkpoint ({exc})") from None
    except Exception as exc:  # corrupt zip, text file, truncated file, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackboneError(f"cannot read {path}: not a PyTorch checkpoint ({type(exc).__name__}: {reason})") from None


def _normalize_key(key: str) -> str | None:
    """Strip wrapper prefixes; None for keys of MoCo's auxiliary networks."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    return None if key.startswith(DROPPED_PREFIXES) else key


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and with normalized key names.

    Example:
        >>> sd = read_state_dict("mocov3_r50.pth.tar")   # {"state_dict": {"module.base_encoder.conv1.weight": ...}}
        >>> "conv1.weight" in sd
        True
    """
    path = Path(path)
    obj = _torch_load(path)
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise BackboneError(f"{path}: expected a state dict (a dict of tensors), found {type(obj).__name__}")
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for raw_key, value in obj.items():
        if not isinstance(raw_key, str) or not isinstance(value, torch.Tensor):
            continue
        key = _normalize_key(raw_key)
        if key is None:
            continue
        if key in state:
            raise BackboneError(f"{path}: keys {origin[key]!r} and {raw_key!r} both map to {key!r}")
        state[key] = value
        origin[key] = raw_key
    if not state:
        keys = [str(k) for k in obj.keys()]
        raise BackboneError(
            f"{path}: no tensors found (expected a state dict, optionally under one of "
            f"{', '.join(WRAPPER_KEYS)}); top-level keys: {_first(keys) or 'none'}"
        )
    return state


def apply_state_dict(module: FeatureBackbone, state: Mapping[str, torch.Tensor], source: str = "state dict") -> LoadReport:
    """Copy ``state`` into ``module`` after checking it covers every needed tensor.

    ``source`` names the origin in error messages. Raises ``BackboneError`` on
    missing keys, shape mismatches, or extra keys inside the built layers (a
    deeper variant of the same family, e.g. ResNet-101 into ResNet-50).
    """
    expected = module.state_dict()
    built_children = {name for name, _ in module.named_children()}
    missing, mismatched = [], []
    to_load: dict[str, torch.Tensor] = {}
    for key, ref in expected.items():
        value = state.get(key)
        if value is None:
            if key.endswith("num_batches_tracked") or key in module.defaulted_keys:  # older checkpoints omit these
                to_load[key] = ref
            else:
                missing.append(key)
        elif tuple(value.shape) != tuple(ref.shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(ref.shape)} expected")
        else:
            to_load[key] = value
    extra = [k for k in state if k not in expected]
    conflicting = [k for k in extra if k.split(".", 1)[0] in built_children and not module.is_unbuilt_key(k)]
    if missing or mismatched or conflicting:
        name = getattr(module, "name", type(module).__name__)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_first(mismatched)}")
        if conflicting:
            parts.append(f"{len(conflicting)} unexpected keys inside the built layers: {_first(conflicting)}")
        hint = ""
        if not any(key in state for key in expected):
            hint = f"; none of the backbone's keys were found, the checkpoint's keys look like: {_first(list(state))}"
        raise BackboneError(f"{source} does not fit backbone {name!r}: " + "; ".join(parts) + hint)
    module.load_state_dict(to_load, strict=True)
    return LoadReport(source=source, loaded=len(to_load), ignored=tuple(sorted(extra)))


def load_checkpoint_into(module: FeatureBackbone, path: str | os.PathLike) -> LoadReport:
    """Load a checkpoint file into ``module`` (see the module docstring for accepted layouts).

    Example:
        >>> bb = build_backbone("resnet50", weights="random")
        >>> load_checkpoint_into(bb, "resnet50-imagenet.pth").ignored[:2]  # a torchvision file
        ('fc.bias', 'fc.weight')
    """
    return apply_state_dict(module, read_state_dict(path), source=str(path))
