"""Concatenation of quantized tensors: ``qconcat`` rescales each input to the output's parameters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx

from ..qmath import common_multipliers, dtype_range
from .common import AXIS_NHWC, DQ_ACT, I64, RealizeContext, clamp, is_float_tensor, qinfo
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


def _tuple_fields(expr, var2val) -> list | None:
    if isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, relax.Tuple):
        return list(expr.fields)
    return None


def _check(b, var2val) -> str:
    fields = _tuple_fields(b.value.args[0], var2val)
    if fields and all(isinstance(f, relax.Var) and is_float_tensor(f) for f in fields):
        return ""
    return "inputs are not static float tensors"


register_plan(PlanRule(("relax.concat",), Kind.POINT, Role.CONCAT, check=_check,
                       inputs=lambda b, v2v: _tuple_fields(b.value.args[0], v2v)))


@register_realize(Stage.PRODUCER, ops=("relax.concat",))
def realize_concat(ctx: RealizeContext, cat: relax.Call, out: Quant):
    v2v = ctx.var2val
    tup = cat.args[0]
    if isinstance(tup, relax.Var):
        tup = v2v[tup]
    srcs, zps, scales = [], [], []
    for f in tup.fields:
        fv = v2v.get(f) if isinstance(f, relax.Var) else None
        if fv is None or not DQ_ACT.match(fv):
            return None
        q = qinfo(fv)
        srcs.append(ctx.remap(fv.args[0]))
        zps.append(q.zp)
        scales.append(q.scale / out.scale)
    mults, shift = common_multipliers(scales)
    qlo, qhi = dtype_range(out.dtype)
    params = {"axis": int(cat.attrs.axis), "zps": zps, "mults": mults, "shift": shift,
              "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qconcat", [srcs], params)


@register_kernel("qconcat", tensor_list=True)
def qconcat(inputs: Sequence[te.Tensor], *, axis: int, zps: Sequence[int], mults: Sequence[int], shift: int,
            zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Concatenate along ``axis`` rescaling each input to the output's scale and zero point."""
    nd = len(inputs[0].shape)
    axis = axis % nd
    sizes = [int(t.shape[axis]) for t in inputs]
    out_shape = list(inputs[0].shape)
    out_shape[axis] = sum(sizes)

    def piece(t, z, m, idx, start):
        src = list(idx)
        src[axis] = idx[axis] - start
        v = (t(*src).astype(I64) - tirx.const(z, I64)) * tirx.const(m, I64) + tirx.const(1 << (shift - 1), I64)
        v = (v >> tirx.const(shift, I64)) + tirx.const(zp_y, I64)
        return clamp(v, qlo, qhi, I64).astype(out_dtype)

    def f(*idx):
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        val = piece(inputs[-1], zps[-1], mults[-1], idx, starts[-1])
        for i in range(len(inputs) - 2, -1, -1):
            val = tirx.if_then_else(idx[axis] < starts[i + 1], piece(inputs[i], zps[i], mults[i], idx, starts[i]),
                                    val)
        return val

    return te.compute(out_shape, f, name="qconcat")


@register_reference("qconcat")
def qconcat_np(inputs, *, axis, zps, mults, shift, zp_y, qlo, qhi, out_dtype):
    parts = []
    for t, z, m in zip(inputs, zps, mults, strict=True):
        v = (((t.astype(np.int64) - z) * np.int64(m) + (1 << (shift - 1))) >> shift) + zp_y
        parts.append(np.clip(v, qlo, qhi))
    return np.concatenate(parts, axis=axis).astype(out_dtype)


register_layout("qconcat", Agnostic(lambda p: {**p, "axis": AXIS_NHWC[p["axis"] % 4]}, all_4d=True))

__all__ = ["qconcat", "qconcat_np"]
