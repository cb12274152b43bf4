"""``relax.divide``: what stays in float, and why.

Division by a constant is integer elsewhere: a single-input chain such as ``x / 6`` becomes part of a lookup
table (:mod:`tvm_arq.ops.lut`), and the divisions inside LayerNorm / RMSNorm and softmax are parts of those
blocks' integer kernels (:mod:`tvm_arq.ops.norm`, :mod:`tvm_arq.ops.softmax`). What is left is a division of
two tensors, ``a / b``. An integer kernel for it would need the divisor's range to exclude 0 on every input,
which calibration cannot promise (a calibrated range is what was *seen*; one unseen zero or a sign change
would be a division by zero or a jump from -inf to +inf in a fixed-point program), so it stays in float with
that reason in ``model.fallbacks``; the float op keeps IEEE semantics (inf / nan) on every input.
"""

from __future__ import annotations

from .common import is_tensor_var
from .irutil import const_value
from .registry import Kind, PlanRule, Role, register_plan

#: The reason listed in ``model.fallbacks`` for a division by a tensor.
DIVIDE_BY_TENSOR = (
    "division by a tensor: the divisor can be 0 or change sign on inputs calibration did not see, so no "
    "fixed-point kernel can be exact on every input; kept in float"
)


def _divide_reason(b, var2val) -> str:
    """Why ``b = a / d`` stays float (``""``: not a reported fallback, e.g. shapes or scalars)."""
    args = b.value.args
    if len(args) != 2 or not is_tensor_var(args[1]):
        return ""
    if const_value(args[1], var2val) is not None:
        return "division by a constant outside a lookup-table chain (its input is not a single quantized tensor)"
    return DIVIDE_BY_TENSOR


register_plan(PlanRule(("relax.divide",), Kind.FLOAT, Role.FLOAT, check=_divide_reason))
