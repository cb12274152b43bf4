"""Element-wise difference of two quantized tensors: the ``qadd`` kernel with the second input's multiplier
negated, ``y = clip(((q_a - z_a) * M_a - (q_b - z_b) * M_b + 2**(shift-1)) >> shift) + z_y)``."""

from __future__ import annotations

from tvm.relax.dpl import is_op

from ..qmath import dtype_range
from .add import emit_rescale_sum
from .common import DQ_X, DQ_Y, Q_SCALE, Q_ZP, RealizeContext, binary_check, call_args
from .registry import Kind, PlanRule, Quant, Role, Stage, register_plan, register_realize

register_plan(PlanRule(("relax.subtract",), Kind.POINT, Role.ADD, check=binary_check, inputs=call_args))

SUB = is_op("relax.subtract")(DQ_X, DQ_Y)
#: quantize(subtract(dequantize(a), dequantize(b)))
QSUB = is_op("relax.quantize")(SUB, Q_SCALE, Q_ZP)


@register_realize(Stage.PATTERN, pattern=QSUB)
def realize_sub(ctx: RealizeContext, m: dict, out: Quant):
    return emit_rescale_sum(ctx, m, out, SUB, *dtype_range(out.dtype), sign_b=-1)

__all__ = ["QSUB"]
