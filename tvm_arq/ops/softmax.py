"""Integer softmax: ``exp`` of ``q - max(q)`` from a compile-time table, integer normalization."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.dpl import is_op

from ..qmath import dtype_range
from .common import (
    AXIS_NHWC,
    DQ_X,
    I64,
    Q_SCALE,
    Q_ZP,
    RealizeContext,
    clamp,
    is_float_tensor,
    is_tensor_var,
    qinfo,
)
from .registry import (
    Agnostic,
    Kind,
    PlanRule,
    Quant,
    Role,
    Stage,
    emit_kernel,
    register_kernel,
    register_layout,
    register_plan,
    register_realize,
    register_reference,
)

register_plan(PlanRule(
    ("relax.nn.softmax",), Kind.POINT, Role.SOFTMAX,
    check=lambda b, v2v: "" if is_tensor_var(b.value.args[0]) and is_float_tensor(b.value)
    else "no integer implementation",
    inputs=lambda b, v2v: [b.value.args[0]], nonneg=lambda b: True))

#: quantize(softmax(dequantize(x)))
SOFTMAX = is_op("relax.nn.softmax")(DQ_X)
QSOFTMAX = is_op("relax.quantize")(SOFTMAX, Q_SCALE, Q_ZP)

#: fractional bits of the softmax exp table (``exp(0) = 2**EXP_BITS``)
EXP_BITS = 20


def softmax_constants(s_x: float, s_y: float, levels: int) -> tuple[np.ndarray, int, int]:
    """Integer softmax constants.

    Returns ``(table, shift, mult)``: ``table[k] = round(exp(-s_x * k) * 2**EXP_BITS)`` for the ``levels``
    possible distances ``k = max(q) - q``, and ``mult = round(2**shift / s_y)`` (< 2**31), so that
    ``y = z_y + round(table[k] * mult / (sum(table[k]) * 2**shift))``.
    """
    k = np.arange(levels, dtype=np.float64)
    table = np.rint(np.exp(-float(np.float32(s_x)) * k) * (1 << EXP_BITS)).astype(np.int64)
    s_y = float(np.float32(s_y))
    shift = int(np.clip(30 + np.floor(np.log2(s_y)), 0, 30))
    mult = int(np.rint((1 << shift) / s_y))
    if mult >= 2**31:
        raise OverflowError(f"softmax output scale {s_y:g} too small")
    return table.astype(np.int32), shift, mult


@register_realize(Stage.PATTERN, pattern=QSOFTMAX)
def realize_softmax(ctx: RealizeContext, m: dict, out: Quant):
    qx = qinfo(m[DQ_X])
    lo, hi = dtype_range(qx.dtype)
    table, shift, mult = softmax_constants(qx.scale, out.scale, hi - lo + 1)
    qlo, qhi = dtype_range(out.dtype)
    params = {"axis": int(m[SOFTMAX].attrs.axis), "mult": mult, "shift": shift, "zp_y": out.zp,
              "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qsoftmax", [ctx.remap(m[DQ_X].args[0]), relax.const(table, "int32")], params)


@register_kernel("qsoftmax")
def qsoftmax(x, table, *, axis: int, mult: int, shift: int, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Integer softmax along ``axis``.

    ``e = table[max(q) - q]`` (``table[k] = round(exp(-s_x * k) * 2**20)``, compile time), then
    ``y = z_y + round(e * mult / (sum(e) * 2**shift))`` with ``mult = round(2**shift / s_y)``, all in
    int64 (floor division of non-negative numbers, round half up).
    """
    nd = len(x.shape)
    axis = axis % nd
    n = x.shape[axis]
    red_shape = [1 if i == axis else x.shape[i] for i in range(nd)]

    def along(idx, j):
        src = list(idx)
        src[axis] = j
        return src

    r = te.reduce_axis((0, n), name="r")
    mx = te.compute(red_shape, lambda *i: te.max(x(*along(i, r)), axis=r), name="qmax")
    r2 = te.reduce_axis((0, n), name="r2")
    zero = tirx.const(0, I64)

    def e(idx, mx_idx):
        return table[mx(*mx_idx).astype(I64) - x(*idx).astype(I64)].astype(I64)

    sm = te.compute(red_shape, lambda *i: te.sum(e(along(i, r2), i), axis=r2), name="qsum")

    def f(*i):
        i0 = along(i, zero)
        den = sm(*i0) << tirx.const(shift, I64)
        num = e(i, i0) * tirx.const(mult, I64)
        v = tirx.floordiv(num * tirx.const(2, I64) + den, den * tirx.const(2, I64)) + tirx.const(zp_y, I64)
        return clamp(v, qlo, qhi, I64).astype(out_dtype)

    return te.compute(x.shape, f, name="qsoftmax")


@register_reference("qsoftmax")
def qsoftmax_np(x, table, *, axis, mult, shift, zp_y, qlo, qhi, out_dtype):
    x64 = x.astype(np.int64)
    e = table.astype(np.int64)[x64.max(axis=axis, keepdims=True) - x64]
    den = e.sum(axis=axis, keepdims=True) << np.int64(shift)
    y = np.floor_divide(2 * e * np.int64(mult) + den, 2 * den) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


register_layout("qsoftmax", Agnostic(lambda p: {**p, "axis": AXIS_NHWC[p["axis"] % 4]}, activations=1))

__all__ = ["EXP_BITS", "QSOFTMAX", "qsoftmax", "qsoftmax_np", "softmax_constants"]
