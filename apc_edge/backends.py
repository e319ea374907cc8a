"""Inference backends: run the exported image -> patch-embedding graph.

The graph holds only the backbone and patch aggregation; the memory bank stays
outside (see :mod:`apc_edge.index`). A backend is chosen from the model dir's
``graph.format``: ``openvino`` (``.xml``/``.bin``) or ``onnx``. In a model dir
the graph is built from the bytes that were verified against the manifest: the
IR from memory, the ONNX file (and its external data) from a private copy.

Example::

    backend = open_backend(manifest.graph, verified_bytes, model_dir, device="CPU")
    emb = backend.run(x)              # (1, D, h, w) float32
    OpenVINOBackend.from_bytes(xml_bytes, bin_bytes, "backbone.xml")   # or OpenVINOBackend(path) for your own file
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from .manifest import GraphSpec, ModelDirError
from .model_files import private_copy


def _import(module: str, extra: str, what: str):
    try:
        return __import__(module)
    except ImportError:
        raise ModelDirError(f"this model dir's graph is {what}, but {module} is not installed here: "
                            f"pip install 'apc-edge[{extra}]'") from None


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

    def __init__(self, xml_path: Path, device: str = "CPU", precision: str = "fp32", num_requests: int = 1,
                 model=None, threads: int = 0):
        ov = _import("openvino", "openvino", "an OpenVINO IR")

        self.device = device.upper()
        self.precision = precision
        self.path = Path(xml_path)
        self.core = core = ov.Core()
        config = {}
        if self.device == "CPU" and precision in ("fp32", "fp16", "int8"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if self.device == "CPU" and threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = model if model is not None else core.read_model(str(xml_path))
            self.compiled = core.compile_model(self.model, self.device, config)
        except RuntimeError as exc:
            raise ModelDirError(f"OpenVINO could not load {xml_path} on device {self.device}: {exc}") from None
        self.compile_config = dict(config)
        self._local = threading.local()
        if self.device == "CPU":
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        else:
            self.inference_precision = "device default"

    @classmethod
    def from_bytes(cls, xml: bytes | bytearray, weights: bytes | bytearray, xml_path: Path, device: str = "CPU",
                   precision: str = "fp32", threads: int = 0) -> "OpenVINOBackend":
        """Build from an IR's bytes (``xml_path`` names it in messages); nothing else is read."""
        ov = _import("openvino", "openvino", "an OpenVINO IR")

        try:
            text = bytes(xml).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelDirError(f"{xml_path} is not an OpenVINO IR: not UTF-8 XML") from None
        if not text.lstrip("\ufeff \t\r\n").startswith("<?xml"):
            raise ModelDirError(f"{xml_path} is not an OpenVINO IR: it does not start with an XML declaration")
        try:
            model = ov.Core().read_model(text, ov.Tensor(np.frombuffer(weights, np.uint8)))
        except RuntimeError as exc:
            raise ModelDirError(f"OpenVINO could not read {xml_path}: {exc}") from None
        return cls(xml_path, device, precision, model=model, threads=threads)

    def run(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    def describe(self) -> dict:
        threads = self.compiled.get_property("INFERENCE_NUM_THREADS") if self.device == "CPU" else None
        return {**super().describe(), "inference_precision": self.inference_precision, "threads": threads}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU execution provider (``device='GPU'`` asks for CUDA)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, device: str = "CPU", precision: str = "fp32", threads: int = 0,
                 shown_as: Path | None = None):
        ort = _import("onnxruntime", "onnx", "ONNX")

        self.device = device.upper()
        self.precision = precision
        self.path = Path(shown_as or onnx_path)     # the name messages use (a model dir's file, not its copy)
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
            raise ModelDirError(f"ONNX Runtime could not load {self.path}: {exc}") from None
        self._input = self.session.get_inputs()[0].name
        self.threads = threads

    def describe(self) -> dict:
        return {**super().describe(), "threads": self.threads or "onnxruntime default"}

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


def open_backend(graph: GraphSpec, blobs: dict, model_dir: Path, device: str = "CPU", threads: int = 0) -> Backend:
    """Build the backend the manifest's ``graph`` block names from the verified bytes ``blobs`` (name -> bytes).
    ``threads``: the graph's CPU threads (0: the library's default)."""
    path = Path(model_dir) / graph.file
    if graph.format == "openvino":
        return OpenVINOBackend.from_bytes(blobs[graph.file], blobs[graph.weights], path, device, graph.precision,
                                          threads=threads)
    # ONNX Runtime resolves external data beside the model file: a private dir holds the verified files only
    with private_copy({name: blobs[name] for name in graph.files}) as tmp:
        return OnnxRuntimeBackend(tmp / graph.file, device, graph.precision, threads=threads, shown_as=path)
