"""A QDQ ONNX model evaluated in float64: the reference "what the model means" for pre-quantized models.

onnxruntime evaluates a QDQ graph in float32 (``DequantizeLinear`` -> float op -> ``QuantizeLinear``), so its
sums carry float32 rounding; where a value lies within that rounding of a quantization boundary it can round
either way. This evaluator runs the same graph with ``onnx.reference`` in float64 (every float initializer and
constant widened, ``DequantizeLinear`` producing float64, ``QuantizeLinear`` dividing and rounding half to even
in float64), which is the exact value of the model's arithmetic up to float64 rounding (~1e-16 relative). It is
slow (pure numpy): meant for a few samples in ``scripts/bench_qdq.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

__all__ = ["Float64QDQ", "widen"]


def _per_axis(x: np.ndarray, v: np.ndarray | None, axis: int | None) -> Any:
    if v is None:
        return 0.0
    v = np.asarray(v).astype(np.float64)
    if v.size > 1:
        shape = [1] * x.ndim
        shape[(1 if axis is None else axis) % x.ndim] = -1
        return v.reshape(shape)
    return v.reshape(())


class DequantizeLinear(OpRun):
    """``(x - zero_point) * scale`` in float64."""

    op_domain = ""

    def _run(self, x, x_scale, x_zero_point=None, axis=None, block_size=None, output_dtype=None):  # noqa: D102
        del block_size, output_dtype
        return ((x.astype(np.float64) - _per_axis(x, x_zero_point, axis)) * _per_axis(x, x_scale, axis),)


class QuantizeLinear(OpRun):
    """``saturate(rint(x / scale) + zero_point)`` in float64 (round half to even, as ONNX defines it)."""

    op_domain = ""

    def _run(self, x, y_scale, y_zero_point=None, axis=None, saturate=None, block_size=None,  # noqa: D102
             output_dtype=None, precision=None):
        del saturate, block_size, output_dtype, precision
        dt = np.asarray(y_zero_point).dtype if y_zero_point is not None else np.dtype(np.uint8)
        info = np.iinfo(dt)
        q = np.rint(x.astype(np.float64) / _per_axis(x, y_scale, axis)) + _per_axis(x, y_zero_point, axis)
        return (np.clip(q, info.min, info.max).astype(dt),)


def widen(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose float32 initializers, ``Constant`` values and ``Cast``-to-float are float64."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    # Q/DQ scales must stay what the model states: widening float32 to float64 is exact, nothing else changes
    del g.value_info[:]
    return m


class Float64QDQ:
    """Evaluate a QDQ model in float64; ``run(x)`` takes the model's float32 input(s) by position."""

    def __init__(self, model: onnx.ModelProto | str) -> None:
        if isinstance(model, str):
            model = onnx.load(model)
        self.model = widen(model)
        self._inputs = [i.name for i in self.model.graph.input
                        if i.name not in {t.name for t in self.model.graph.initializer}]
        self._eval = ReferenceEvaluator(self.model, new_ops=[DequantizeLinear, QuantizeLinear])

    def run(self, *inputs: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        """Outputs (the graph's, or the named intermediate tensors) in float64 / their integer dtype."""
        feeds = {k: np.asarray(v, np.float64) for k, v in zip(self._inputs, inputs, strict=True)}
        return list(self._eval.run(outputs, feeds))
