"""``AnnotateQuantization``: make the quantization decision visible in the IR.

Every tensor computed in the integer domain gets a ``quantize -> dequantize`` pair carrying its scale,
zero point and storage dtype; conv2d / dense weights become ``dequantize(int8 constant, per-channel
scale, 0)``.  The result still runs in float (fake quantization), which is what ``RealizeInteger``
pattern-matches and lowers to integer kernels.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from ..qmath import QParams, quantize_weights_per_channel
from .analysis import QuantPlan, Role
from .graph import Rebuilder


def qdq(bb: relax.BlockBuilder, x: relax.Expr, qp: QParams, name: str) -> relax.Var:
    """Emit ``dequantize(quantize(x))`` with the tensor's parameters; return the dequantized var."""
    s = relax.const(np.float32(qp.scale), "float32")
    z = relax.const(qp.zero_point, qp.dtype)
    q = bb.emit(R.quantize(x, s, z, axis=-1, out_dtype=qp.dtype), name + "_q")
    return bb.emit(R.dequantize(q, s, z, axis=-1, out_dtype="float32"), name + "_dq")


def dq_weight(w: np.ndarray, axis: int) -> relax.Expr:
    qw, scales = quantize_weights_per_channel(w, axis=axis)
    return R.dequantize(
        relax.const(qw, "int8"),
        relax.const(scales, "float32"),
        relax.const(np.zeros(scales.shape, np.int8), "int8"),
        axis=axis,
        out_dtype="float32",
    )


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.AnnotateQuantization")
class AnnotateQuantization:
    """Insert quantize/dequantize pairs according to a plan and calibrated parameters.

    Parameters
    ----------
    plan
        From :func:`~tvm_arq.passes.analysis.plan_quantization` on the same module.
    qparams
        Parameters of every quantization point (``plan.points``).
    """

    def __init__(self, plan: QuantPlan, qparams: dict[str, QParams]):
        missing = [p for p in plan.points if p not in qparams]
        if missing:
            raise KeyError(f"no quantization parameters for {missing[:5]}")
        self.plan = plan
        self.qparams = qparams

    def _qp(self, name: str) -> QParams:
        return self.qparams[self.plan.qsource[name]]

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        plan = self.plan

        def on_start(rb: Rebuilder):
            for p in rb.func.params:
                if plan.is_int(p.name):
                    rb.env[p.name] = qdq(rb.bb, rb.env[p.name], self._qp(p.name), p.name)

        def on_binding(rb: Rebuilder, b, value):
            op_plan = plan.ops.get(b.name)
            if op_plan is not None and op_plan.role is Role.ANCHOR:
                w = value.args[1].value.numpy()
                axis = 0 if b.op == "relax.nn.conv2d" else 1
                value = relax.Call(value.op, [value.args[0], dq_weight(w, axis)], value.attrs, value.ty_args)
            quantized_here = plan.is_int(b.name) and not (
                op_plan is not None and op_plan.role in (Role.ANCHOR, Role.EPILOGUE) and op_plan.group_output != b.name
            )
            if not quantized_here:
                return value
            v = rb.bb.emit(value, b.name)
            return qdq(rb.bb, v, self._qp(b.name), b.name)

        return Rebuilder(mod).run(on_binding, on_start=on_start)
