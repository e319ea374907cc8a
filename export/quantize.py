"""Post-training INT8 quantization of the exported embedding graph (no torch needed).

OpenVINO IR: NNCF ``nncf.quantize`` on the ``ov.Model``. ONNX: ONNX Runtime
static quantization in QDQ format (per-channel INT8 weights, UINT8 activations),
fed by a :class:`CalibrationDataReader`. Calibration images go through the same
:class:`~apc_edge.preprocess.Preprocessor` as every frame.

Example::

    quantize_openvino(Path("fp32/backbone.xml"), Path("int8/backbone.xml"), calib_paths, pre)
    quantize_onnx(Path("fp32/backbone.onnx"), Path("int8/backbone.onnx"), calib_paths, pre)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from apc_edge.preprocess import Preprocessor, load_image


def preprocessed(paths: list[Path], pre: Preprocessor) -> Iterator[np.ndarray]:
    """Yield one (1, 3, H, W) float32 tensor per image, loaded lazily."""
    for p in paths:
        yield pre(load_image(p))


# PatchCore's aggregation (3x3 average, upsampling, concatenation) stays in float: it is cheap, and
# quantizing it puts rounding straight onto the embedding (measured on bottle: largest held-out
# image-score change 0.13 with it quantized, 0.05 without). So does the stage norm before it (squares,
# their sum, its square root, the division and the product: in these backbones the only Multiply, ReduceSum,
# Sqrt and Divide ops): quantized, its per-cell factor took one 8-bit range for every cell, and
# magnetic_tile's INT8 + HNSW image AUROC fell 0.0048 below FP32's.
FLOAT_OP_TYPES = ("AvgPool", "Interpolate", "Concat", "Multiply", "ReduceSum", "Sqrt", "Divide")
ONNX_FLOAT_OP_TYPES = ("AveragePool", "Resize", "Concat", "Mul", "ReduceSum", "Sqrt", "Div")


# Activation ranges: "mean" is NNCF's default for per-tensor activations (the mean over calibration images
# of each image's min and max); "max" takes the min and max over all calibration images. Calibration sees
# good parts only, so "mean" clips the larger activations a defect raises; "max" keeps them, at a coarser
# step for the rest.
INT8_RANGES = ("mean", "max")


def activation_ranges(ranges: str):
    """NNCF advanced parameters for :data:`INT8_RANGES` (``None``: NNCF's defaults)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if ranges not in INT8_RANGES:
        raise ValueError(f"unknown INT8 activation ranges {ranges!r}; choose one of {', '.join(INT8_RANGES)}")
    if ranges == "mean":
        return None
    return AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


# Mixed precision, the guard's last fallback: layers kept in float besides the aggregation. "stem" is the
# first convolution (it sees the raw pixels); "stride8" is every operation up to the stride-8 tap (the
# ancestors of the first 3x3 average: convolutions and the residual additions between them), the
# high-resolution part where a small defect is a few activations.
INT8_FLOAT_PARTS = ("none", "stem", "stride8")
CONV_TYPES = ("Convolution", "GroupConvolution")


def float_layers(model, part: str) -> list[str]:
    """Friendly names of the operations of an OpenVINO ``model`` that :data:`INT8_FLOAT_PARTS` ``part``
    keeps in float (empty for ``none``)."""
    if part not in INT8_FLOAT_PARTS:
        raise ValueError(f"unknown INT8 float part {part!r}; choose one of {', '.join(INT8_FLOAT_PARTS)}")
    ordered = list(model.get_ordered_ops())
    convs = [op for op in ordered if op.get_type_name() in CONV_TYPES]
    if part == "none" or not convs:
        return []
    if part == "stem":
        return [convs[0].get_friendly_name()]
    pools = [op for op in ordered if op.get_type_name() == "AvgPool"]
    if not pools:
        raise ValueError("the graph has no 3x3 average (AvgPool) to find its stride-8 tap by")
    seen, todo = set(), [pools[0]]
    while todo:
        node = todo.pop()
        for value in node.input_values():
            parent = value.get_node()
            if parent.get_friendly_name() not in seen:
                seen.add(parent.get_friendly_name())
                todo.append(parent)
    quantizable = {"Parameter", "Constant", "Result", "Convert"}
    return [op.get_friendly_name() for op in ordered
            if op.get_friendly_name() in seen and op.get_type_name() not in quantizable]


def quantize_openvino(xml_in: Path, xml_out: Path, calib_paths: list[Path], pre: Preprocessor,
                      preset: str = "performance", ranges: str = "mean", float_part: str = "none") -> None:
    """INT8 IR at ``xml_out`` (+ ``.bin``) from the FP32 IR ``xml_in``; NNCF picks the quantizer places
    except in the aggregation ops (:data:`FLOAT_OP_TYPES`) and the layers of ``float_part``
    (:data:`INT8_FLOAT_PARTS`); ``ranges`` is one of :data:`INT8_RANGES`."""
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = ov.Core().read_model(str(xml_in))
    dataset = nncf.Dataset(calib_paths, lambda p: pre(load_image(p)))
    present = {op.get_type_name() for op in model.get_ops()}
    ignored = nncf.IgnoredScope(types=[t for t in FLOAT_OP_TYPES if t in present],
                                names=float_layers(model, float_part))
    quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset(preset),
                              subset_size=len(calib_paths), ignored_scope=ignored,
                              advanced_parameters=activation_ranges(ranges))
    ov.save_model(quantized, str(xml_out), compress_to_fp16=False)


class _Reader:
    """ONNX Runtime calibration data reader over image paths (built lazily: onnxruntime is imported late)."""

    def __new__(cls, input_name: str, paths: list[Path], pre: Preprocessor):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.rewind()

            def get_next(self):
                x = next(self._it, None)
                return None if x is None else {input_name: x}

            def rewind(self):
                self._it = preprocessed(paths, pre)

        return Reader()


def quantize_onnx(onnx_in: Path, onnx_out: Path, calib_paths: list[Path], pre: Preprocessor) -> None:
    """QDQ INT8 ONNX at ``onnx_out`` from the FP32 ``onnx_in`` (MinMax calibration, per-channel weights;
    the aggregation ops stay float, as for OpenVINO)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = onnx_out.with_name(onnx_out.stem + ".prep.onnx")
    quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared), load_external_data=False).graph
    keep_float = [n.name for n in graph.node if n.op_type in ONNX_FLOAT_OP_TYPES]
    try:
        quantize_static(str(prepared), str(onnx_out), _Reader(graph.input[0].name, calib_paths, pre),
                        quant_format=QuantFormat.QDQ, per_channel=True, nodes_to_exclude=keep_float,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
