"""quantize / dequantize between float and integer tensors (graph edges, float fallbacks), and their
target-layout versions that fuse the NCHW <-> NHWC transform at the graph input and output."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from .common import I32
from .irutil import tensor_shape
from .registry import Quant, emit_kernel, register_kernel, register_layout, register_reference


def emit_quantize(bb: relax.BlockBuilder, x: relax.Expr, out: Quant) -> relax.Var:
    """float -> int kernel at a quantization point."""
    qlo, qhi = out.range
    return emit_kernel(bb, "quantize", [x], {"scale": out.scale, "zp": out.zp, "qlo": qlo, "qhi": qhi,
                                             "out_dtype": out.dtype})


def emit_dequantize(bb: relax.BlockBuilder, q: relax.Expr, qin: Quant) -> relax.Var:
    """int -> float kernel (graph outputs, inputs of float ops)."""
    return emit_kernel(bb, "dequantize", [q], {"scale": qin.scale, "zp": qin.zp})


def _quantize_value(xv, scale: float, zp: int, qlo: int, qhi: int, out_dtype: str):
    """One quantized element: ``clip(round_half_even(x / scale) + zp)`` in float32, NaN -> ``zp``.

    Non-finite inputs have ONE defined result, shared with the numpy twins (:func:`_quantize_np_values`):
    ``+Inf`` -> ``qhi``, ``-Inf`` -> ``qlo`` (the float clip saturates them before the cast), ``NaN`` ->
    the zero point. The clip happens in float BEFORE the float -> int cast (a cast of NaN or Inf is
    undefined in LLVM) and NaN is selected explicitly (``min``/``max`` of NaN are not defined either).
    For finite inputs the arithmetic is unchanged.
    """
    v = tirx.round(xv / tirx.const(scale, "float32")) + tirx.const(float(zp), "float32")
    v = tirx.max(tirx.min(v, tirx.const(float(qhi), "float32")), tirx.const(float(qlo), "float32"))
    v = tirx.Select(tirx.isnan(xv), tirx.const(float(zp), "float32"), v)
    return v.astype(out_dtype)


def _quantize_np_values(x, scale, zp, qlo, qhi, out_dtype):
    """The numpy twin of :func:`_quantize_value` (same NaN/Inf semantics), in the input's layout."""
    x = x.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        v = np.clip(np.rint(x / np.float32(scale)) + np.float32(zp), qlo, qhi)
    v = np.where(np.isnan(x), np.float32(zp), v)
    return v.astype(out_dtype)


@register_kernel("quantize")
def quantize(x, *, scale: float, zp: int, qlo: int, qhi: int, out_dtype: str):
    """``clip(round_half_even(x / scale) + zp)`` computed in float32 (NaN -> ``zp``, +-Inf saturate)."""

    def f(*i):
        return _quantize_value(x(*i), scale, zp, qlo, qhi, out_dtype)

    return te.compute(x.shape, f, name="quantize")


@register_kernel("dequantize")
def dequantize(q, *, scale: float, zp: int):
    """``(int32(q) - zp) * scale`` in float32."""
    return te.compute(
        q.shape,
        lambda *i: (q(*i).astype(I32) - tirx.const(zp, I32)).astype("float32") * tirx.const(scale, "float32"),
        name="dequantize",
    )


@register_kernel("quantize_to_nhwc")
def quantize_to_nhwc(x, *, scale: float, zp: int, qlo: int, qhi: int, out_dtype: str):
    """``quantize`` of a float NCHW tensor, written NHWC (the graph-input layout transform, fused)."""
    n, c, h, wd = x.shape

    def f(b, i, j, k):
        return _quantize_value(x[b, k, i, j], scale, zp, qlo, qhi, out_dtype)

    return te.compute((n, h, wd, c), f, name="quantize")


@register_kernel("dequantize_to_nchw")
def dequantize_to_nchw(q, *, scale: float, zp: int):
    """``dequantize`` of an NHWC integer tensor, written as float NCHW (the graph-output transform)."""
    n, h, wd, c = q.shape
    return te.compute(
        (n, c, h, wd),
        lambda b, k, i, j: (q[b, i, j, k].astype(I32) - tirx.const(zp, I32)).astype("float32")
        * tirx.const(scale, "float32"),
        name="dequantize",
    )


@register_reference("quantize")
def quantize_np(x, *, scale, zp, qlo, qhi, out_dtype):
    return _quantize_np_values(x, scale, zp, qlo, qhi, out_dtype)


@register_reference("dequantize")
def dequantize_np(q, *, scale, zp):
    return ((q.astype(np.int32) - np.int32(zp)).astype(np.float32) * np.float32(scale)).astype(np.float32)


@register_reference("quantize_to_nhwc")
def quantize_to_nhwc_np(x, *, scale, zp, qlo, qhi, out_dtype):
    return np.ascontiguousarray(_quantize_np_values(x, scale, zp, qlo, qhi, out_dtype).transpose(0, 2, 3, 1))


@register_reference("dequantize_to_nchw")
def dequantize_to_nchw_np(q, *, scale, zp):
    y = (q.astype(np.int32) - np.int32(zp)).astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray(y.astype(np.float32).transpose(0, 3, 1, 2))


@register_layout("quantize")
def convert_quantize(ctx, name: str, args: list, p: dict) -> bool:
    """The graph input ``quantize`` writes NHWC."""
    shp = tensor_shape(args[0])
    if shp is None or len(shp) != 4:
        return False
    ctx.nhwc[name] = ctx.emit("quantize_to_nhwc", [ctx.as_nchw(args[0])], p)
    return True


@register_layout("dequantize")
def convert_dequantize(ctx, name: str, args: list, p: dict) -> bool:
    """The output ``dequantize`` reads NHWC."""
    x = args[0]
    if not ctx.in_nhwc(x) or (isinstance(x, relax.Var) and x.name in ctx.nchw):
        return False
    ctx.nchw[name] = ctx.emit("dequantize_to_nchw", [ctx.nhwc[x.name]], p)
    return True


__all__ = ["dequantize", "dequantize_to_nchw", "emit_dequantize", "emit_quantize", "quantize", "quantize_to_nhwc"]
