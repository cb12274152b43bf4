"""Nearest and bilinear resize in the integer domain (same scale and zero point as the input), with
compile-time source-index (and, for bilinear, integer weight) tables; NCHW and NHWC kernels."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from .common import I64, RealizeContext, pass_check
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

#: fractional bits of the bilinear resize weights (per axis)
RESIZE_BITS = 12


def _resize_ok(b, shp) -> str:
    v = b.value
    a = v.attrs
    if tensor_shape(v) is None or len(shp) != 4 or str(a.layout) != "NCHW":
        return "only static NCHW resize"
    if str(a.method) not in ("nearest_neighbor", "linear"):
        return f"resize method {a.method} (only nearest and bilinear)"
    if str(a.coordinate_transformation_mode) == "tf_crop_and_resize":
        return "tf_crop_and_resize"
    if a.out_dtype is not None and str(a.out_dtype) not in ("", "float32"):
        return f"resize out_dtype {a.out_dtype}"
    return ""


register_plan(PlanRule(("relax.image.resize2d",), Kind.PASS, check=pass_check(_resize_ok),
                       exact=lambda b: str(b.value.attrs.method) == "nearest_neighbor"))


@register_realize(Stage.PASS, ops=("relax.image.resize2d",))
def realize_resize(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    a = call.attrs
    _, _, ih, iw = tensor_shape(call.args[0])
    _, _, oh, ow = tensor_shape(call)
    mode, method = str(a.coordinate_transformation_mode), str(a.method)
    rounding = str(a.rounding_method)
    if method == "nearest_neighbor":
        iy = resize_source_index(ih, oh, mode, rounding)
        ix = resize_source_index(iw, ow, mode, rounding)
        return emit_kernel(ctx.bb, "qresize_nearest", [x, relax.const(iy, "int32"), relax.const(ix, "int32")], {})
    ty = resize_linear_table(ih, oh, mode, RESIZE_BITS)
    tx = resize_linear_table(iw, ow, mode, RESIZE_BITS)
    return emit_kernel(ctx.bb, "qresize_bilinear", [x, relax.const(ty, "int32"), relax.const(tx, "int32")],
                       {"bits": RESIZE_BITS})


def _resize_coord(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """Source coordinate of every output index, in float32 as the float resize computes it."""
    x = np.arange(out_size, dtype=np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    half = np.float32(0.5)
    if mode == "half_pixel":
        return (x + half) * scale - half
    if mode == "align_corners":
        if out_size == 1:
            return np.zeros(1, np.float32)
        return np.float32(in_size - 1) / np.float32(out_size - 1) * x
    if mode == "asymmetric":
        return scale * x
    if mode == "pytorch_half_pixel":
        return (x + half) * scale - half if out_size > 1 else np.zeros(out_size, np.float32)
    if mode == "tf_half_pixel_for_nn":
        return (x + half) * scale
    raise ValueError(f"unsupported resize coordinate transformation {mode!r}")


def resize_source_index(in_size: int, out_size: int, mode: str, rounding: str) -> np.ndarray:
    """Nearest-neighbour source index per output index (int32), clamped to the input."""
    if rounding == "":
        rounding = "round" if mode == "align_corners" else "floor"
    if mode == "asymmetric" and rounding == "floor" and out_size % in_size == 0:
        idx = np.arange(out_size) // (out_size // in_size)  # exact integer ratio
    else:
        c = _resize_coord(in_size, out_size, mode)
        eps = np.float32(1e-5)
        if rounding == "round":
            idx = np.rint(c)
        elif rounding == "round_prefer_floor":
            idx = np.ceil(c - np.float32(0.5))
        elif rounding == "round_prefer_ceil":
            idx = np.floor(c + np.float32(0.5))
        elif rounding == "floor":
            idx = np.floor(c + eps)
        elif rounding == "ceil":
            idx = np.ceil(c - eps)
        else:
            raise ValueError(f"unsupported nearest rounding {rounding!r}")
    return np.clip(idx, 0, in_size - 1).astype(np.int32)


def resize_linear_table(in_size: int, out_size: int, mode: str, bits: int) -> np.ndarray:
    """``[3, out]`` int32: the two source indices (clamped) and the integer weight of the second one."""
    c = _resize_coord(in_size, out_size, mode)
    i0 = np.floor(c)
    w1 = np.rint((c - i0).astype(np.float64) * (1 << bits)).astype(np.int64)
    i0 = i0.astype(np.int64)
    return np.stack([np.clip(i0, 0, in_size - 1), np.clip(i0 + 1, 0, in_size - 1), w1]).astype(np.int32)



# -- kernels ---------------------------------------------------------------------------------------


@register_kernel("qresize_nearest")
def qresize_nearest(x, iy, ix):
    """Nearest-neighbour resize (NCHW) as a gather: ``y[n, c, i, j] = x[n, c, iy[i], ix[j]]``.

    The source indices (int32 tables) are computed at compile time from the resize attributes."""
    n, c = x.shape[0], x.shape[1]
    return te.compute((n, c, iy.shape[0], ix.shape[0]),
                      lambda b, k, i, j: x[b, k, iy[i], ix[j]], name="qresize_nearest")


def _bilinear(pixel, ty, tx, i: tirx.PrimExpr, j: tirx.PrimExpr, bits: int, dtype):
    """Output ``(i, j)`` of an integer bilinear resize; ``pixel(y, x)`` reads the input at row ``y``, column
    ``x`` (of the current batch and channel)."""
    one = tirx.const(1 << bits, I64)
    y0, y1, wy = ty[0, i], ty[1, i], ty[2, i].astype(I64)
    x0, x1, wx = tx[0, j], tx[1, j], tx[2, j].astype(I64)
    top = (one - wx) * pixel(y0, x0).astype(I64) + wx * pixel(y0, x1).astype(I64)
    bot = (one - wx) * pixel(y1, x0).astype(I64) + wx * pixel(y1, x1).astype(I64)
    v = (one - wy) * top + wy * bot + tirx.const(1 << (2 * bits - 1), I64)
    return (v >> tirx.const(2 * bits, I64)).astype(dtype)


@register_kernel("qresize_bilinear")
def qresize_bilinear(x, ty, tx, *, bits: int):
    """Bilinear resize (NCHW) with integer weights, same scale and zero point as the input.

    ``ty`` / ``tx`` are ``[3, out]`` int32 tables ``(i0, i1, w1)`` with ``w1`` in ``[0, 2**bits]``;
    ``y = (sum_{a,b} wy_a * wx_b * x[i_a, j_b] + 2**(2*bits-1)) >> (2*bits)`` in int64 (round half up).
    """
    n, c = x.shape[0], x.shape[1]

    def f(b, k, i, j):
        return _bilinear(lambda yy, xx: x[b, k, yy, xx], ty, tx, i, j, bits, x.dtype)

    return te.compute((n, c, ty.shape[1], tx.shape[1]), f, name="qresize_bilinear")


@register_kernel("qresize_nearest_nhwc")
def qresize_nearest_nhwc(x, iy, ix):
    """Nearest-neighbour resize of an NHWC tensor as a gather of whole pixels."""
    n, c = x.shape[0], x.shape[3]
    return te.compute((n, iy.shape[0], ix.shape[0], c), lambda b, i, j, k: x[b, iy[i], ix[j], k],
                      name="qresize_nearest")


@register_kernel("qresize_bilinear_nhwc")
def qresize_bilinear_nhwc(x, ty, tx, *, bits: int):
    """Bilinear resize of an NHWC tensor with integer weights (see the NCHW kernel)."""
    n, c = x.shape[0], x.shape[3]

    def f(b, i, j, k):
        return _bilinear(lambda yy, xx: x[b, yy, xx, k], ty, tx, i, j, bits, x.dtype)

    return te.compute((n, ty.shape[1], tx.shape[1], c), f, name="qresize_bilinear")


# -- numpy twins -----------------------------------------------------------------------------------


@register_reference("qresize_nearest")
def qresize_nearest_np(x, iy, ix):
    return x[:, :, iy.astype(np.int64)][:, :, :, ix.astype(np.int64)]


def _bilinear_np(x: np.ndarray, ty: np.ndarray, tx: np.ndarray, bits: int, axes: tuple[int, int]) -> np.ndarray:
    """Numpy twin of :func:`_bilinear` over the H, W axes ``axes`` of ``x``."""
    x64 = x.astype(np.int64)
    ty = ty.astype(np.int64)
    tx = tx.astype(np.int64)
    one = np.int64(1) << bits
    wshape = [1] * x.ndim
    wshape[axes[0]] = -1
    wy = ty[2].reshape(wshape)
    wshape = [1] * x.ndim
    wshape[axes[1]] = -1
    wx = tx[2].reshape(wshape)

    def at(r: int, c: int) -> np.ndarray:
        return np.take(np.take(x64, ty[r], axis=axes[0]), tx[c], axis=axes[1])

    top = (one - wx) * at(0, 0) + wx * at(0, 1)
    bot = (one - wx) * at(1, 0) + wx * at(1, 1)
    v = (one - wy) * top + wy * bot + (np.int64(1) << (2 * bits - 1))
    return (v >> (2 * bits)).astype(x.dtype)


@register_reference("qresize_bilinear")
def qresize_bilinear_np(x, ty, tx, *, bits):
    return _bilinear_np(x, ty, tx, bits, (2, 3))


@register_reference("qresize_nearest_nhwc")
def qresize_nearest_nhwc_np(x, iy, ix):
    return x[:, iy.astype(np.int64)][:, :, ix.astype(np.int64)]


@register_reference("qresize_bilinear_nhwc")
def qresize_bilinear_nhwc_np(x, ty, tx, *, bits):
    return _bilinear_np(x, ty, tx, bits, (1, 2))


# -- layout conversion -----------------------------------------------------------------------------


@register_layout("qresize_nearest")
def convert_nearest(ctx, name: str, args: list, p: dict) -> bool:
    ctx.nhwc[name] = ctx.emit("qresize_nearest_nhwc", [ctx.as_nhwc(args[0]), args[1], args[2]], p)
    return True


@register_layout("qresize_bilinear")
def convert_bilinear(ctx, name: str, args: list, p: dict) -> bool:
    ctx.nhwc[name] = ctx.emit("qresize_bilinear_nhwc", [ctx.as_nhwc(args[0]), args[1], args[2]], p)
    return True


__all__ = ["RESIZE_BITS", "qresize_bilinear", "qresize_bilinear_nhwc", "qresize_nearest", "qresize_nearest_nhwc",
           "resize_linear_table", "resize_source_index"]
