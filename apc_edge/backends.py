"""Inference backends: run the exported image -> patch-embedding graph.

The graph holds only the backbone and patch aggregation; the memory bank stays
outside (see :mod:`apc_edge.index`). A backend is chosen from the model dir's
``graph.format``: ``openvino`` (``.xml``/``.bin``) or ``onnx``.

Example::

    backend = open_backend(Path("models/bottle"), manifest, device="CPU")
    emb = backend.run(x)              # (1, D, h, w) float32
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from .manifest import ModelDirError


class Backend(ABC):
    """Runs a preprocessed (N, 3, H, W) float32 batch through the embedding graph."""

    name: str = "?"
    device: str = "CPU"
    precision: str = "?"

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Return the patch embeddings, (N, D, h, w) float32."""

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision": self.precision}


class OpenVINOBackend(Backend):
    """OpenVINO runtime. On the CPU every graph (FP32, FP16-compressed, INT8) runs
    with ``INFERENCE_PRECISION_HINT=f32`` so that CPUs with BF16 units don't
    silently lower precision; INT8 layers stay INT8. One infer request per thread,
    so several threads may call :meth:`run` at once."""

    name = "openvino"

    def __init__(self, xml_path: Path, device: str = "CPU", precision: str = "fp32", num_requests: int = 1):
        import openvino as ov

        self.device = device.upper()
        self.precision = precision
        self.path = Path(xml_path)
        self.core = core = ov.Core()
        config = {}
        if self.device == "CPU" and precision in ("fp32", "fp16", "int8"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            model = core.read_model(str(xml_path))
            self.compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:
            raise ModelDirError(f"OpenVINO could not load {xml_path} on device {self.device}: {exc}") from None
        self.compile_config = dict(config)
        self._local = threading.local()
        if self.device == "CPU":
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        else:
            self.inference_precision = "device default"

    def run(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    def describe(self) -> dict:
        return {**super().describe(), "inference_precision": self.inference_precision}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU execution provider (``device='GPU'`` asks for CUDA)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, device: str = "CPU", precision: str = "fp32", threads: int = 0):
        import onnxruntime as ort

        self.device = device.upper()
        self.precision = precision
        self.path = Path(onnx_path)
        providers = ["CPUExecutionProvider"]
        if self.device in ("GPU", "CUDA"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelDirError(f"device {device!r} asked for, but this ONNX Runtime build has no CUDA provider "
                                    f"(available: {ort.get_available_providers()})")
            providers.insert(0, "CUDAExecutionProvider")
        elif self.device != "CPU":
            raise ModelDirError(f"ONNX Runtime backend supports device CPU or GPU, not {device!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelDirError(f"ONNX Runtime could not load {onnx_path}: {exc}") from None
        self._input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


def open_backend(model_dir: Path, manifest: dict, device: str = "CPU") -> Backend:
    """Pick and load the backend named by the manifest's ``graph`` block."""
    graph = manifest["graph"]
    fmt = graph.get("format")
    path = Path(model_dir) / graph["file"]
    precision = graph.get("precision", "fp32")
    if fmt == "openvino":
        return OpenVINOBackend(path, device, precision)
    if fmt == "onnx":
        return OnnxRuntimeBackend(path, device, precision)
    raise ModelDirError(f"unknown graph format {fmt!r} in manifest (expected 'openvino' or 'onnx')")
