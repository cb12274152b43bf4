"""Element-wise difference of two quantized tensors: the ``qadd`` kernel with the second input's multiplier
negated, ``y = clip(((q_a - z_a) * M_a - (q_b - z_b) * M_b + 2**(shift-1)) >> shift) + z_y)``."""

from __future__ import annotations

from tvm.relax.dpl import is_op

from ..qmath import common_multipliers, dtype_range
from .common import DQ_X, DQ_Y, Q_SCALE, Q_ZP, RealizeContext, binary_check, call_args, qinfo
from .irutil import tensor_shape
from .registry import Kind, PlanRule, Quant, Role, Stage, emit_kernel, register_plan, register_realize

register_plan(PlanRule(("relax.subtract",), Kind.POINT, Role.ADD, check=binary_check, inputs=call_args))

SUB = is_op("relax.subtract")(DQ_X, DQ_Y)
#: quantize(subtract(dequantize(a), dequantize(b)))
QSUB = is_op("relax.quantize")(SUB, Q_SCALE, Q_ZP)


@register_realize(Stage.PATTERN, pattern=QSUB)
def realize_sub(ctx: RealizeContext, m: dict, out: Quant):
    a, b = qinfo(m[DQ_X]), qinfo(m[DQ_Y])
    (ma, mb), shift = common_multipliers([a.scale / out.scale, b.scale / out.scale])
    qlo, qhi = dtype_range(out.dtype)
    params = {"out_shape": list(tensor_shape(m[SUB])), "zps": [a.zp, b.zp], "mults": [ma, -mb], "shift": shift,
              "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qadd", [[ctx.remap(m[DQ_X].args[0]), ctx.remap(m[DQ_Y].args[0])]], params)


__all__ = ["QSUB"]
