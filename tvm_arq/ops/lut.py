"""Activations: ReLU / clip as an integer clamp (``qclamp``, or folded into a group's output clamp), and
single-input element-wise subgraphs (sigmoid, SiLU, hardswish, GELU, ...; see
:mod:`tvm_arq.ops.elementwise`) realized as one 256-entry lookup table (``qlut``) computed in float64 from
the subgraph's own ops."""

from __future__ import annotations

import numpy as np
import tvm.ir.prim.expr
from tvm import relax, te, tirx

from ..qmath import dtype_range
from .common import AXIS_NHWC, DQ_ACT, I64, RealizeContext, act_clamp, clamp, pass_check, qinfo
from .elementwise import grow_region, lut_table, region_name
from .registry import (
    Agnostic,
    Kind,
    PlanRule,
    Quant,
    Stage,
    TableEpilogue,
    emit_kernel,
    register_epilogue,
    register_kernel,
    register_layout,
    register_plan,
    register_realize,
    register_reference,
)

_IMM = (tvm.ir.prim.expr.FloatImm, tvm.ir.prim.expr.IntImm)


def _clip_ok(b, shp) -> str:
    if b.op == "relax.clip":
        lo, hi = b.value.args[1], b.value.args[2]
        if not (isinstance(lo, _IMM) and isinstance(hi, _IMM)):
            return "non-constant clip bounds"
    return ""


def _act_nonneg(b) -> bool:
    if b.op == "relax.nn.relu":
        return True
    if b.op == "relax.clip":
        lo = b.value.args[1]
        return float(lo.value) >= 0.0
    return False


# ReLU6 is clip(0, 6) in Relax
register_plan(PlanRule(("relax.nn.relu", "relax.clip"), Kind.PASS, check=pass_check(_clip_ok), epilogue=True,
                       nonneg=_act_nonneg))


@register_realize(Stage.PASS, ops=("relax.nn.relu", "relax.clip"))
def realize_clamp(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    lo, hi = act_clamp(call, out)
    return emit_kernel(ctx.bb, "qclamp", [x], {"lo": lo, "hi": hi})


@register_realize(Stage.FALLBACK)
def realize_lut(ctx: RealizeContext, inner: relax.Var, out: Quant):
    """A single-input element-wise region on a dequantize -> ``qlut``."""
    v2v = ctx.var2val
    region = grow_region(inner, v2v, lambda v: True)
    if region is None or region.leaf not in v2v or not DQ_ACT.match(v2v[region.leaf]):
        return None
    dq_src = v2v[region.leaf]
    qx = qinfo(dq_src)
    table = lut_table(region, v2v, qx.scale, qx.zp, qx.dtype, out.scale, out.zp, out.dtype)
    params = {"axis": region.axis, "qmin": dtype_range(qx.dtype)[0], "fn": region_name(region, v2v)}
    return emit_kernel(ctx.bb, "qlut", [ctx.remap(dq_src.args[0]), relax.const(table, out.dtype)], params)


@register_kernel("qclamp")
def qclamp(x, *, lo: int, hi: int):
    """ReLU / clip in the integer domain (same scale and zero point)."""
    return te.compute(x.shape, lambda *i: clamp(x(*i), lo, hi, x.dtype), name="qclamp")


@register_kernel("qlut")
def qlut(x, table, *, axis: int, qmin: int, fn: str = ""):
    """Lookup-table activation: ``y = table[c, x - qmin]`` (``c`` = index along ``axis``, or 0).

    ``table`` is ``[rows, 256]`` in the output dtype, computed at compile time (one row, or one row per
    channel for per-channel constants such as PReLU slopes). ``fn`` only names the activation.
    """
    del fn
    per_channel = axis >= 0 and int(table.shape[0]) > 1

    def f(*i):
        row = i[axis] if per_channel else tirx.const(0, "int64")
        col = x(*i).astype(I64) - tirx.const(qmin, I64)
        return table[row, col]

    return te.compute(x.shape, f, name="qlut")


@register_reference("qclamp")
def qclamp_np(x, *, lo, hi):
    return np.clip(x, lo, hi).astype(x.dtype)


@register_reference("qlut")
def qlut_np(x, table, *, axis, qmin, fn=""):
    col = x.astype(np.int64) - qmin
    if axis < 0 or table.shape[0] == 1:
        return table[0][col]
    shape = [1] * x.ndim
    shape[axis] = -1
    rows = np.arange(x.shape[axis]).reshape(shape)
    return table[rows, col]


@register_epilogue("qlut")
def lut_epilogue(args: list, p: dict) -> TableEpilogue | None:
    """A ``qlut`` call with a constant table, as a table a producing kernel can apply."""
    if not isinstance(args[1], tvm.ir.expr.Constant):
        return None
    table = args[1].value.numpy()
    return TableEpilogue(table, p["axis"] if p["axis"] >= 0 and table.shape[0] > 1 else -1, int(p["qmin"]))


register_layout("qclamp", Agnostic())
register_layout("qlut", Agnostic(lambda p: {**p, "axis": AXIS_NHWC[p["axis"] % 4]} if p["axis"] >= 0 else p,
                                 activations=1))

__all__ = ["lut_epilogue", "qclamp", "qclamp_np", "qlut", "qlut_np"]
