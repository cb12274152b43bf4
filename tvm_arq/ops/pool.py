"""Pooling in the integer domain (output keeps the input's scale and zero point): max pooling, average
pooling and the global mean over H, W; NCHW kernels, their NHWC versions and numpy twins."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from ..qmath import dtype_range
from .common import (
    I32,
    I64,
    RealizeContext,
    clamp,
    out_hw,
    pad_const,
    pad_np,
    pass_check,
    round_div_np,
    windows_np,
)
from .irutil import tensor_shape
from .registry import (
    Kind,
    PlanRule,
    Quant,
    Stage,
    emit_kernel,
    register_kernel,
    register_layout,
    register_plan,
    register_realize,
    register_reference,
)

# -- planner ---------------------------------------------------------------------------------------


def _pool_ok(b, shp) -> str:
    if str(b.value.attrs.layout) != "NCHW" or bool(b.value.attrs.ceil_mode):
        return "layout other than NCHW or ceil_mode"
    return ""


def _adaptive_ok(b, shp) -> str:
    if str(b.value.attrs.layout) != "NCHW" or tensor_shape(b.value)[2:] != (1, 1):
        return "only global (1x1) adaptive average pooling"
    return ""


def is_mean_hw(call: relax.Call, shp) -> bool:
    """``call`` is a mean over H, W of a 4-D tensor with keepdims (global average pooling)."""
    axes = sorted(int(a) % len(shp) for a in call.attrs.axis) if call.attrs.axis is not None else None
    return len(shp) == 4 and axes == [2, 3] and bool(call.attrs.keepdims)


register_plan(PlanRule(("relax.nn.max_pool2d",), Kind.PASS, check=pass_check(_pool_ok), exact=lambda b: True))
register_plan(PlanRule(("relax.nn.avg_pool2d",), Kind.PASS, check=pass_check(_pool_ok)))
register_plan(PlanRule(("relax.nn.adaptive_avg_pool2d",), Kind.PASS, check=pass_check(_adaptive_ok)))
# relax.mean on any axes is planned by tvm_arq.ops.reduce; its H, W case is realized here


# -- realize ---------------------------------------------------------------------------------------


@register_realize(Stage.PASS, ops=("relax.nn.max_pool2d",))
def realize_maxpool(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    a = call.attrs
    params = {"pool": [int(v) for v in a.pool_size], "strides": [int(v) for v in a.strides],
              "padding": [int(v) for v in a.padding], "dilation": [int(v) for v in a.dilation],
              "qmin": out.range[0]}
    return emit_kernel(ctx.bb, "qmaxpool2d", [x], params)


@register_realize(Stage.PASS, ops=("relax.nn.avg_pool2d",))
def realize_avgpool(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    a = call.attrs
    if any(int(d) != 1 for d in a.dilation):
        return None
    qlo, qhi = out.range
    params = {"pool": [int(v) for v in a.pool_size], "strides": [int(v) for v in a.strides],
              "padding": [int(v) for v in a.padding], "count_include_pad": bool(a.count_include_pad),
              "zp": qin.zp, "qlo": qlo, "qhi": qhi}
    return emit_kernel(ctx.bb, "qavgpool2d", [x], params)


@register_realize(Stage.PASS, ops=("relax.nn.adaptive_avg_pool2d", "relax.mean"))
def realize_mean(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    if call.op.name == "relax.mean" and not is_mean_hw(call, tensor_shape(call.args[0])):
        return None  # other axes: tvm_arq.ops.reduce
    qlo, qhi = out.range
    return emit_kernel(ctx.bb, "qmean_hw", [x], {"zp": qin.zp, "qlo": qlo, "qhi": qhi})


# -- kernels (NCHW) --------------------------------------------------------------------------------


def _window_count(count_include_pad: bool, pool, strides, padding, h, wd):
    """``count(i, j)``: the number of input pixels averaged at output ``(i, j)`` (int64)."""
    kh, kw = pool
    sh, sw = strides
    pt, pl = padding[0], padding[1]

    def count(i, j):
        if count_include_pad:
            return tirx.const(kh * kw, I64)
        h0 = i * sh - pt
        w0 = j * sw - pl
        hc = tirx.min(h0 + kh, h) - tirx.max(h0, 0)
        wc = tirx.min(w0 + kw, wd) - tirx.max(w0, 0)
        return (hc * wc).astype(I64)

    return count


def sum_dtype(x_dtype: str, count: int) -> str:
    """Accumulator dtype of a sum of ``count`` values ``q - z`` of ``x_dtype``: int32 when it cannot overflow
    (8-bit inputs: any window below 2**23 elements; int16: below 2**15), else int64."""
    lo, hi = dtype_range(str(x_dtype))
    return I32 if count * (hi - lo) < 2**31 else I64


def _round_avg(total, cnt, zp: int, qlo: int, qhi: int, dtype):
    """``clamp(z + floor((2 * total + cnt) / (2 * cnt)))`` (round half up) in int64, cast to ``dtype``."""
    v = tirx.floordiv(total.astype(I64) * tirx.const(2, I64) + cnt, cnt * tirx.const(2, I64))
    return clamp(v + tirx.const(zp, I64), qlo, qhi, I64).astype(dtype)


@register_kernel("qmaxpool2d")
def qmaxpool2d_nchw(x, *, pool, strides, padding, dilation, qmin: int):
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
    xp = pad_const(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], qmin)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, c, oh, ow),
        lambda b, k, i, j: te.max(xp[b, k, i * sh + ry * dh, j * sw + rx * dw], axis=[ry, rx]),
        name="qmaxpool",
    )


@register_kernel("qavgpool2d")
def qavgpool2d_nchw(x, *, pool, strides, padding, count_include_pad: bool, zp: int, qlo: int, qhi: int):
    """Average pooling in the integer domain (output keeps the input's scale and zero point):
    ``y = z + floor((2 * sum(q - z) + cnt) / (2 * cnt))`` (round half up)."""
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding)
    xp = pad_const(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], zp)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc_t = sum_dtype(x.dtype, kh * kw)
    acc = te.compute(
        (n, c, oh, ow),
        lambda b, k, i, j: te.sum(xp[b, k, i * sh + ry, j * sw + rx].astype(acc_t) - tirx.const(zp, acc_t),
                                  axis=[ry, rx]),
        name="acc",
    )

    count = _window_count(count_include_pad, pool, strides, padding, h, wd)

    def f(b, k, i, j):
        return _round_avg(acc[b, k, i, j], count(i, j), zp, qlo, qhi, x.dtype)

    return te.compute((n, c, oh, ow), f, name="qavgpool")


@register_kernel("qmean_hw")
def qmean_hw(x, *, zp: int, qlo: int, qhi: int):
    """Global average pooling over H, W (NCHW), keepdims, integer domain, round half up."""
    n, c, h, wd = x.shape
    ry = te.reduce_axis((0, h), name="ry")
    rx = te.reduce_axis((0, wd), name="rx")
    acc_t = sum_dtype(x.dtype, int(h) * int(wd))
    acc = te.compute(
        (n, c, 1, 1),
        lambda b, k, i, j: te.sum(x[b, k, ry, rx].astype(acc_t) - tirx.const(zp, acc_t), axis=[ry, rx]),
        name="acc",
    )
    cnt = int(h) * int(wd)

    def f(b, k, i, j):
        return _round_avg(acc[b, k, i, j], tirx.const(cnt, I64), zp, qlo, qhi, x.dtype)

    return te.compute((n, c, 1, 1), f, name="qmean")


# -- kernels (NHWC) --------------------------------------------------------------------------------


@register_kernel("qmaxpool2d_nhwc")
def qmaxpool2d_nhwc(x, *, pool, strides, padding, dilation, qmin: int):
    """Max pooling, NHWC, padded with the smallest integer."""
    n, h, wd, c = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh, ow = out_hw(int(h), int(wd), (kh, kw), strides, padding, dilation)
    xp = pad_const(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], qmin)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, oh, ow, c),
        lambda b, i, j, k: te.max(xp[b, i * sh + ry * dh, j * sw + rx * dw, k], axis=[ry, rx]),
        name="qmaxpool",
    )


@register_kernel("qavgpool2d_nhwc")
def qavgpool2d_nhwc(x, *, pool, strides, padding, count_include_pad: bool, zp: int, qlo: int, qhi: int):
    """Average pooling, NHWC, integer domain, round half up (same arithmetic as the NCHW kernel)."""
    n, h, wd, c = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    oh, ow = out_hw(int(h), int(wd), (kh, kw), strides, padding)
    xp = pad_const(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], zp)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc_t = sum_dtype(x.dtype, kh * kw)
    acc = te.compute(
        (n, oh, ow, c),
        lambda b, i, j, k: te.sum(xp[b, i * sh + ry, j * sw + rx, k].astype(acc_t) - tirx.const(zp, acc_t),
                                  axis=[ry, rx]),
        name="acc",
    )

    count = _window_count(count_include_pad, pool, strides, padding, h, wd)

    def f(b, i, j, k):
        return _round_avg(acc[b, i, j, k], count(i, j), zp, qlo, qhi, x.dtype)

    return te.compute((n, oh, ow, c), f, name="qavgpool")


@register_kernel("qmean_hw_nhwc")
def qmean_hw_nhwc(x, *, zp: int, qlo: int, qhi: int):
    """Global average pooling over H, W of an NHWC tensor -> ``[N, 1, 1, C]``, round half up."""
    n, h, wd, c = x.shape
    ry = te.reduce_axis((0, h), name="ry")
    rx = te.reduce_axis((0, wd), name="rx")
    acc_t = sum_dtype(x.dtype, int(h) * int(wd))
    acc = te.compute(
        (n, 1, 1, c),
        lambda b, i, j, k: te.sum(x[b, ry, rx, k].astype(acc_t) - tirx.const(zp, acc_t), axis=[ry, rx]),
        name="acc",
    )
    cnt = int(h) * int(wd)

    def f(b, i, j, k):
        return _round_avg(acc[b, i, j, k], tirx.const(cnt, I64), zp, qlo, qhi, x.dtype)

    return te.compute((n, 1, 1, c), f, name="qmean")


# -- numpy twins -----------------------------------------------------------------------------------


@register_reference("qmaxpool2d")
def qmaxpool2d_np(x, *, pool, strides, padding, dilation, qmin):
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    xp = pad_np(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], qmin)
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
    out = np.full((n, c, oh, ow), qmin, x.dtype)
    for i in range(kh):
        for j in range(kw):
            out = np.maximum(out, xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw])
    return out


@register_reference("qavgpool2d")
def qavgpool2d_np(x, *, pool, strides, padding, count_include_pad, zp, qlo, qhi):
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    xc = x.astype(np.int64) - zp
    xp = pad_np(xc, [(0, 0), (0, 0), (pt, pb), (pl, pr)], 0)
    valid = pad_np(np.ones((h, wd), np.int64), [(pt, pb), (pl, pr)], 0)
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding)
    acc = np.zeros((n, c, oh, ow), np.int64)
    cnt = np.zeros((oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += xp[:, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
            cnt += valid[i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
    if count_include_pad:
        cnt = np.full_like(cnt, kh * kw)
    y = round_div_np(acc, cnt[None, None]) + zp
    return np.clip(y, qlo, qhi).astype(x.dtype)


@register_reference("qmean_hw")
def qmean_hw_np(x, *, zp, qlo, qhi):
    acc = (x.astype(np.int64) - zp).sum(axis=(2, 3), keepdims=True)
    cnt = np.int64(x.shape[2] * x.shape[3])
    return np.clip(round_div_np(acc, cnt) + zp, qlo, qhi).astype(x.dtype)


@register_reference("qmaxpool2d_nhwc")
def qmaxpool2d_nhwc_np(x, *, pool, strides, padding, dilation, qmin):
    n, h, wd, c = x.shape
    kh, kw = pool
    pt, pl, pb, pr = padding
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=qmin)
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
    out = np.full((n, oh, ow, c), qmin, x.dtype)
    for _, _, patch in windows_np(xp, kh, kw, oh, ow, strides, dilation):
        out = np.maximum(out, patch)
    return out


@register_reference("qavgpool2d_nhwc")
def qavgpool2d_nhwc_np(x, *, pool, strides, padding, count_include_pad, zp, qlo, qhi):
    n, h, wd, c = x.shape
    kh, kw = pool
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(np.int64) - zp, [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    valid = np.pad(np.ones((1, h, wd, 1), np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding)
    acc = np.zeros((n, oh, ow, c), np.int64)
    cnt = np.zeros((1, oh, ow, 1), np.int64)
    for (_, _, patch), (_, _, vpatch) in zip(windows_np(xp, kh, kw, oh, ow, strides),
                                             windows_np(valid, kh, kw, oh, ow, strides), strict=True):
        acc += patch
        cnt += vpatch
    if count_include_pad:
        cnt = np.full_like(cnt, kh * kw)
    y = np.floor_divide(2 * acc + cnt, 2 * cnt) + zp
    return np.clip(y, qlo, qhi).astype(x.dtype)


@register_reference("qmean_hw_nhwc")
def qmean_hw_nhwc_np(x, *, zp, qlo, qhi):
    acc = (x.astype(np.int64) - zp).sum(axis=(1, 2), keepdims=True)
    cnt = np.int64(x.shape[1] * x.shape[2])
    return np.clip(np.floor_divide(2 * acc + cnt, 2 * cnt) + zp, qlo, qhi).astype(x.dtype)


# -- layout conversion -----------------------------------------------------------------------------


@register_layout("qmaxpool2d")
def convert_maxpool(ctx, name: str, args: list, p: dict) -> bool:
    ctx.nhwc[name] = ctx.emit("qmaxpool2d_nhwc", [ctx.as_nhwc(args[0])], p)
    return True


@register_layout("qavgpool2d")
def convert_avgpool(ctx, name: str, args: list, p: dict) -> bool:
    ctx.nhwc[name] = ctx.emit("qavgpool2d_nhwc", [ctx.as_nhwc(args[0])], p)
    return True


@register_layout("qmean_hw")
def convert_mean(ctx, name: str, args: list, p: dict) -> bool:
    out = tensor_shape(ctx.vars[name])
    if not ctx.in_nhwc(args[0]) or out is None or len(out) != 4 or out[2:] != (1, 1):
        return False
    ctx.nhwc[name] = ctx.emit("qmean_hw_nhwc", [ctx.as_nhwc(args[0])], p)
    return True


__all__ = ["is_mean_hw", "qavgpool2d_nchw", "qavgpool2d_nhwc", "qmaxpool2d_nchw", "qmaxpool2d_nhwc", "qmean_hw", "qmean_hw_nhwc"]
