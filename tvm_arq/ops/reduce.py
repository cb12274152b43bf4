"""Integer reductions over any axes, with or without ``keepdims``.

- ``relax.mean``, ``relax.max``, ``relax.min`` keep the input's scale and zero point (pass-through):
  ``qreduce``, the mean as ``z + floor((2 * sum(q - z) + n) / (2 * n))`` (round half up), max / min exact;
- ``relax.sum`` is a quantization point of its own: ``qsum``, ``sum(q - z)`` in int64 requantized with one
  fixed-point multiplier ``s_x / s_y``.

The global mean over H, W with keepdims (``qmean_hw`` of :mod:`tvm_arq.ops.pool`, with its NHWC kernel) is
tried first (:mod:`tvm_arq.ops.pool` registers its realize rule before this module).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.dpl import is_op

from ..qmath import QuantizationError, dtype_range, quantize_multiplier
from .common import (
    DQ_X,
    I64,
    Q_SCALE,
    Q_ZP,
    RealizeContext,
    clamp,
    is_float_tensor,
    pass_check,
    qinfo,
    requant,
)
from .irutil import tensor_shape
from .registry import (
    Kind,
    PlanRule,
    Quant,
    Role,
    Stage,
    emit_kernel,
    register_kernel,
    register_plan,
    register_realize,
    register_reference,
)


def reduce_axes(call: relax.Call, ndim: int) -> list[int]:
    """The reduced axes of ``call`` (sorted, non-negative; ``axis=None``: all)."""
    ax = call.attrs.axis
    return list(range(ndim)) if ax is None else sorted({int(a) % ndim for a in ax})


def _static_out(b, shp) -> str:
    return "" if tensor_shape(b.value) is not None else "dynamic shape"


register_plan(PlanRule(("relax.mean",), Kind.PASS, check=pass_check(_static_out)))
register_plan(PlanRule(("relax.max", "relax.min"), Kind.PASS, check=pass_check(_static_out), exact=lambda b: True))
register_plan(PlanRule(
    ("relax.sum",), Kind.POINT, Role.REDUCE,
    check=lambda b, v2v: "" if isinstance(b.value.args[0], relax.Var) and is_float_tensor(b.value.args[0])
    and is_float_tensor(b.value) else "dynamic shape",
    inputs=lambda b, v2v: [b.value.args[0]]))


# -- realize ---------------------------------------------------------------------------------------


@register_realize(Stage.PASS, ops=("relax.mean", "relax.max", "relax.min"))
def realize_reduce(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    qlo, qhi = out.range
    shape = tensor_shape(call.args[0])
    params = {"reduce": call.op.name.split(".")[-1], "axes": reduce_axes(call, len(shape)),
              "keepdims": bool(call.attrs.keepdims), "zp": qin.zp, "qlo": qlo, "qhi": qhi}
    return emit_kernel(ctx.bb, "qreduce", [x], params)


SUM = is_op("relax.sum")(DQ_X)
#: quantize(sum(dequantize(x)))
QSUM = is_op("relax.quantize")(SUM, Q_SCALE, Q_ZP)


@register_realize(Stage.PATTERN, pattern=QSUM)
def realize_sum(ctx: RealizeContext, m: dict, out: Quant):
    call = m[SUM]
    qx = qinfo(m[DQ_X])
    shape = tensor_shape(call.args[0])
    axes = reduce_axes(call, len(shape))
    n = int(np.prod([shape[a] for a in axes]))
    if n * 255 >= 2**31:
        raise QuantizationError(f"sum over {n} elements overflows the int32 accumulator")
    m0, rs = quantize_multiplier(np.float64(qx.scale) / np.float64(out.scale), saturate=True)
    qlo, qhi = dtype_range(out.dtype)
    params = {"axes": axes, "keepdims": bool(call.attrs.keepdims), "zp": qx.zp, "m0": int(m0[0]),
              "rshift": int(rs[0]), "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qsum", [ctx.remap(m[DQ_X].args[0])], params)


# -- kernels ---------------------------------------------------------------------------------------


def _reduction(x: te.Tensor, axes: Sequence[int], keepdims: bool, body, combine, name: str) -> te.Tensor:
    """``combine(body(x[idx]), axis=...)`` over ``axes``; output shape with or without kept dims."""
    nd = len(x.shape)
    rs = {a: te.reduce_axis((0, x.shape[a]), name=f"r{a}") for a in axes}
    keep = [i for i in range(nd) if i not in rs]
    out_shape = [1 if i in rs else x.shape[i] for i in range(nd)] if keepdims else [x.shape[i] for i in keep]

    def f(*o):
        if keepdims:
            src = [rs[i] if i in rs else o[i] for i in range(nd)]
        else:
            it = iter(o)
            src = [rs[i] if i in rs else next(it) for i in range(nd)]
        return combine(body(x(*src)), axis=list(rs.values()))

    return te.compute(out_shape, f, name=name)


@register_kernel("qreduce")
def qreduce(x, *, reduce: str, axes: Sequence[int], keepdims: bool, zp: int, qlo: int, qhi: int):
    """Mean / max / min over ``axes`` in the integer domain (output keeps the input's parameters)."""
    if reduce in ("max", "min"):
        return _reduction(x, axes, keepdims, lambda v: v, te.max if reduce == "max" else te.min, "qreduce")
    n = int(np.prod([int(x.shape[a]) for a in axes]))
    acc = _reduction(x, axes, keepdims, lambda v: v.astype(I64) - tirx.const(zp, I64), te.sum, "acc")
    cnt = tirx.const(n, I64)

    def f(*i):
        v = tirx.floordiv(acc(*i) * tirx.const(2, I64) + cnt, cnt * tirx.const(2, I64)) + tirx.const(zp, I64)
        return clamp(v, qlo, qhi, I64).astype(x.dtype)

    return te.compute(acc.shape, f, name="qmean")


@register_kernel("qsum")
def qsum(x, *, axes: Sequence[int], keepdims: bool, zp: int, m0: int, rshift: int, zp_y: int, qlo: int, qhi: int,
         out_dtype: str):
    """``y = clip(((sum(q - z) * M0 + 2**(rshift-1)) >> rshift) + z_y)`` over ``axes``."""
    acc = _reduction(x, axes, keepdims, lambda v: v.astype(I64) - tirx.const(zp, I64), te.sum, "acc")
    m = tirx.const(m0, "int32")
    r = tirx.const(rshift, "int32")
    return te.compute(acc.shape, lambda *i: requant(acc(*i), m, r, zp_y, qlo, qhi, out_dtype), name="qsum")


@register_reference("qreduce")
def qreduce_np(x, *, reduce, axes, keepdims, zp, qlo, qhi):
    ax = tuple(axes)
    if reduce == "max":
        return x.max(axis=ax, keepdims=keepdims)
    if reduce == "min":
        return x.min(axis=ax, keepdims=keepdims)
    n = np.int64(np.prod([x.shape[a] for a in ax]))
    acc = (x.astype(np.int64) - zp).sum(axis=ax, keepdims=keepdims)
    return np.clip(np.floor_divide(2 * acc + n, 2 * n) + zp, qlo, qhi).astype(x.dtype)


@register_reference("qsum")
def qsum_np(x, *, axes, keepdims, zp, m0, rshift, zp_y, qlo, qhi, out_dtype):
    acc = (x.astype(np.int64) - zp).sum(axis=tuple(axes), keepdims=keepdims)
    y = ((acc * np.int64(m0) + (np.int64(1) << np.int64(rshift - 1))) >> np.int64(rshift)) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


__all__ = ["QSUM", "qreduce", "qreduce_np", "qsum", "qsum_np", "reduce_axes"]
