"""Data movement on quantized tensors: reshape, flatten, transpose, squeeze, expand_dims, strided slice and
split keep the input's parameters and run as the same Relax op on the integer tensor."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .common import AXIS_NHWC, DQ_ACT, TO_NHWC, RealizeContext, pass_check, qinfo
from .irutil import tensor_shape
from .registry import (
    Kind,
    PlanRule,
    Quant,
    Stage,
    register_plan,
    register_realize,
    register_relax_layout,
    register_relax_reference,
)

SHAPE_OPS = ("relax.reshape", "relax.flatten", "relax.permute_dims", "relax.squeeze", "relax.expand_dims")

register_plan(PlanRule(SHAPE_OPS, Kind.PASS, check=pass_check(), exact=lambda b: True))
register_plan(PlanRule(("relax.strided_slice",), Kind.PASS, exact=lambda b: True,
                       check=pass_check(lambda b, shp: "dynamic slice" if tensor_shape(b.value) is None else "")))
# the tuple itself stays unquantized; its items (TupleGetItem) carry the parameters
register_plan(PlanRule(("relax.split",), Kind.PASS, tuple_output=True,
                       check=lambda b, v2v: "" if tensor_shape(b.value.args[0]) is not None else "dynamic shape"))
# shape glue: float by nature of the graph, never warrants a warning
register_plan(PlanRule(("relax.shape_of", "relax.call_tir"), Kind.FLOAT))


@register_realize(Stage.PASS, ops=(*SHAPE_OPS, "relax.strided_slice"))
def realize_movement(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    """Same op on the integer tensor."""
    return relax.Call(call.op, [x] + [ctx.remap(a) for a in call.args[1:]], call.attrs, call.ty_args)


@register_realize(Stage.ITEM, ops=("relax.split",))
def realize_split_item(ctx: RealizeContext, call: relax.Call, index: int, out: Quant):
    """``split(dequantize(x))[i]`` -> ``strided_slice`` of the integer ``x``."""
    v2v = ctx.var2val
    src = call.args[0]
    srcv = v2v.get(src) if isinstance(src, relax.Var) else None
    if srcv is None or not DQ_ACT.match(srcv):
        return None
    qx = qinfo(srcv)
    if not (np.float32(qx.scale) == np.float32(out.scale) and qx.zp == out.zp):
        return None
    shp = tensor_shape(src)
    axis = int(call.attrs.axis) % len(shp)
    ios = call.attrs.indices_or_sections
    if isinstance(ios, tvm.ir.prim.expr.IntImm | int):
        n = int(ios)
        step = shp[axis] // n
        bounds = [i * step for i in range(n)] + [shp[axis]]
    else:
        bounds = [0] + [int(v) for v in ios] + [shp[axis]]
    i = int(index)
    return ctx.bb.emit(relax.op.strided_slice(ctx.remap(srcv.args[0]), axes=[axis], begin=[bounds[i]],
                                              end=[bounds[i + 1]]))


# -- layout conversion -----------------------------------------------------------------------------


@register_relax_layout("relax.strided_slice")
def convert_slice(ctx, name: str, call: relax.Call) -> bool:
    x = call.args[0]
    shp = tensor_shape(x)
    if not ctx.in_nhwc(x) or shp is None or len(shp) != 4:
        return False
    axes = [AXIS_NHWC[int(a.value) % 4] for a in call.args[1].fields]
    begin = [int(a.value) for a in call.args[2].fields]
    end = [int(a.value) for a in call.args[3].fields]
    strides = [int(a.value) for a in call.args[4].fields] if len(call.args) > 4 else None
    ctx.nhwc[name] = ctx.bb.emit(relax.op.strided_slice(ctx.as_nhwc(x), axes, begin, end, strides,
                                                        assume_inbound=bool(call.attrs.assume_inbound)))
    return True


@register_relax_layout("relax.permute_dims")
def convert_permute(ctx, name: str, call: relax.Call) -> bool:
    x = call.args[0]
    shp = tensor_shape(x)
    if not ctx.in_nhwc(x) or shp is None or len(shp) != 4 or call.attrs.axes is None:
        return False
    axes = [int(a) for a in call.attrs.axes]
    # out_nhwc = in_nchw.transpose(axes).transpose(TO_NHWC) = in_nhwc.transpose(composed)
    composed = [TO_NHWC.index(axes[TO_NHWC[i]]) for i in range(4)]
    if composed == [0, 1, 2, 3]:
        ctx.nhwc[name] = ctx.nhwc[x.name]
    else:
        ctx.nhwc[name] = ctx.bb.emit(relax.op.permute_dims(ctx.as_nhwc(x), composed))
    return True


@register_relax_layout("relax.reshape", "relax.flatten", "relax.squeeze")
def convert_reshape(ctx, name: str, call: relax.Call) -> bool:
    """A reshape of an ``[N, C, 1, 1]`` tensor reads the same bytes as of its NHWC ``[N, 1, 1, C]``."""
    x = call.args[0]
    shp = tensor_shape(x)
    if not ctx.in_nhwc(x) or shp is None or len(shp) != 4 or shp[2] != 1 or shp[3] != 1:
        return False
    if isinstance(x, relax.Var) and x.name in ctx.nchw:
        return False
    out_shape = tensor_shape(ctx.vars[name])
    if out_shape is None:
        return False
    ctx.nchw[name] = ctx.bb.emit(relax.op.reshape(ctx.nhwc[x.name], list(out_shape)), name)
    return True


# -- reference -------------------------------------------------------------------------------------


def _ints(expr) -> list[int]:
    """Integers of a Relax tuple of PrimValues / a ShapeExpr."""
    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values]
    return [int(f.value) for f in expr.fields]


def strided_slice(x: np.ndarray, axes, begin, end, strides) -> np.ndarray:
    """``relax.strided_slice`` on a numpy array (Python slice semantics: out-of-range ends clamp)."""
    sl = [slice(None)] * x.ndim
    strides = strides if strides else [1] * len(axes)
    for a, b, e, st in zip(axes, begin, end, strides, strict=True):
        sl[a % x.ndim] = slice(b, e, st)
    return x[tuple(sl)]


@register_relax_reference("relax.strided_slice")
def strided_slice_np(call: relax.Call, evaluate) -> np.ndarray:
    x = evaluate(call.args[0])
    strides = _ints(call.args[4]) if len(call.args) > 4 and call.args[4] is not None else None
    return strided_slice(x, _ints(call.args[1]), _ints(call.args[2]), _ints(call.args[3]), strides)


@register_relax_reference("relax.reshape")
def reshape_np(call: relax.Call, evaluate) -> np.ndarray:
    return evaluate(call.args[0]).reshape([int(d) for d in call.args[1].values])


@register_relax_reference("relax.flatten")
def flatten_np(call: relax.Call, evaluate) -> np.ndarray:
    x = evaluate(call.args[0])
    return x.reshape(x.shape[0], -1)


@register_relax_reference("relax.permute_dims")
def permute_dims_np(call: relax.Call, evaluate) -> np.ndarray:
    axes = call.attrs.axes
    return np.transpose(evaluate(call.args[0]), None if axes is None else [int(a) for a in axes])


@register_relax_reference("relax.squeeze")
def squeeze_np(call: relax.Call, evaluate) -> np.ndarray:
    axis = call.attrs.axis
    return np.squeeze(evaluate(call.args[0]), None if axis is None else tuple(int(a) for a in axis))


@register_relax_reference("relax.expand_dims")
def expand_dims_np(call: relax.Call, evaluate) -> np.ndarray:
    return np.expand_dims(evaluate(call.args[0]), tuple(int(a) for a in call.attrs.axis))


__all__ = ["SHAPE_OPS", "strided_slice"]
