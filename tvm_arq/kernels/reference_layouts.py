"""Numpy twins of the NHWC / packed-weight kernels of :mod:`tvm_arq.kernels.nhwc`.

Each twin unpacks its weights, computes in int64 with explicit zero points (no TVM) and must equal
the compiled kernel bit for bit. They are registered in :data:`tvm_arq.reference.KERNELS_NP` under
the kernel names, so :class:`~tvm_arq.reference.ReferenceInterpreter` replays target-layout modules.
"""

from __future__ import annotations

import numpy as np

from ..qmath import requantize_np


def _out(size: int, k: int, s: int, a: int, b: int, d: int = 1) -> int:
    return (size + a + b - d * (k - 1) - 1) // s + 1


def unpack_conv_weight(w: np.ndarray, out_channels: int, in_channels: int) -> np.ndarray:
    """``[O/L, KH, KW, C/G, L, G]`` -> ``[O, KH, KW, C]`` (drops the zero padding)."""
    ob, kh, kw, cb, lanes, kg = w.shape
    full = w.transpose(0, 4, 1, 2, 3, 5).reshape(ob * lanes, kh, kw, cb * kg)
    return full[:out_channels, :, :, :in_channels]


def _finish(acc: np.ndarray, bias, m0, rshift, qp, table, lut_axis: int, lut_qmin: int, out_dtype: str):
    """Requantize ``acc`` (last axis = channels), clamp, optional table lookup."""
    zp_y, qlo, qhi = (int(v) for v in np.asarray(qp)[1:4])
    y = requantize_np(acc + bias.astype(np.int64), m0, rshift) + zp_y
    y = np.clip(y, qlo, qhi)
    if table is None:
        return y.astype(out_dtype)
    col = y - lut_qmin
    if lut_axis >= 0 and table.shape[0] > 1:
        return table[np.arange(y.shape[-1]), col]
    return table[0][col]


def _conv_acc(xp: np.ndarray, w: np.ndarray, oh: int, ow: int, strides, dilation) -> np.ndarray:
    """``sum xp[n, i*sh+ry*dh, j*sw+rx*dw, c] * w[o, ry, rx, c]`` in int64, NHWC."""
    n = xp.shape[0]
    o, kh, kw, _ = w.shape
    sh, sw = strides
    dh, dw = dilation
    acc = np.zeros((n, oh, ow, o), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            acc += np.einsum("nhwc,oc->nhwo", patch, w[:, i, j].astype(np.int64))
    return acc


def qconv2d_nhwc_packed(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_channels,
                        in_offset, domain_dtype, out_dtype, lut_axis=-1, lut_qmin=0, schedule=""):
    del domain_dtype, schedule
    n, h, wd, c = x.shape
    wu = unpack_conv_weight(w, out_channels, c)
    pt, pl, pb, pr = padding
    xs = x.astype(np.int64) + in_offset
    xp = np.pad(xs, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=int(qp[0]))
    oh = _out(h, wu.shape[1], strides[0], pt, pb, dilation[0])
    ow = _out(wd, wu.shape[2], strides[1], pl, pr, dilation[1])
    acc = _conv_acc(xp, wu, oh, ow, strides, dilation)
    return _finish(acc, bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype)


def qdwconv2d_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_dtype, lut_axis=-1,
                   lut_qmin=0, schedule=""):
    del schedule
    n, h, wd, c = x.shape
    kh, kw, _ = w.shape
    pt, pl, pb, pr = padding
    sh, sw = strides
    dh, dw = dilation
    xp = np.pad(x.astype(np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=int(qp[0]))
    oh = _out(h, kh, sh, pt, pb, dh)
    ow = _out(wd, kw, sw, pl, pr, dw)
    acc = np.zeros((n, oh, ow, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            acc += patch * w[i, j].astype(np.int64)
    return _finish(acc, bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype)


def qconv2d_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, groups, out_dtype,
                 lut_axis=-1, lut_qmin=0):
    n, h, wd, c = x.shape
    kh, kw, cg, o = w.shape
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=int(qp[0]))
    oh = _out(h, kh, strides[0], pt, pb, dilation[0])
    ow = _out(wd, kw, strides[1], pl, pr, dilation[1])
    opg = o // groups
    acc = np.zeros((n, oh, ow, o), np.int64)
    for g in range(groups):
        wg = w[:, :, :, g * opg:(g + 1) * opg].transpose(3, 0, 1, 2)  # [opg, KH, KW, cg]
        acc[..., g * opg:(g + 1) * opg] = _conv_acc(xp[..., g * cg:(g + 1) * cg], wg, oh, ow, strides, dilation)
    return _finish(acc, bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype)


def _windows(xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, strides, dilation=(1, 1)):
    sh, sw = strides
    dh, dw = dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def qmaxpool2d_nhwc(x, *, pool, strides, padding, dilation, qmin):
    n, h, wd, c = x.shape
    kh, kw = pool
    pt, pl, pb, pr = padding
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=qmin)
    oh = _out(h, kh, strides[0], pt, pb, dilation[0])
    ow = _out(wd, kw, strides[1], pl, pr, dilation[1])
    out = np.full((n, oh, ow, c), qmin, x.dtype)
    for _, _, patch in _windows(xp, kh, kw, oh, ow, strides, dilation):
        out = np.maximum(out, patch)
    return out


def qavgpool2d_nhwc(x, *, pool, strides, padding, count_include_pad, zp, qlo, qhi):
    n, h, wd, c = x.shape
    kh, kw = pool
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(np.int64) - zp, [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    valid = np.pad(np.ones((1, h, wd, 1), np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    oh = _out(h, kh, strides[0], pt, pb)
    ow = _out(wd, kw, strides[1], pl, pr)
    acc = np.zeros((n, oh, ow, c), np.int64)
    cnt = np.zeros((1, oh, ow, 1), np.int64)
    for (_, _, patch), (_, _, vpatch) in zip(_windows(xp, kh, kw, oh, ow, strides),
                                             _windows(valid, kh, kw, oh, ow, strides), strict=True):
        acc += patch
        cnt += vpatch
    if count_include_pad:
        cnt = np.full_like(cnt, kh * kw)
    y = np.floor_divide(2 * acc + cnt, 2 * cnt) + zp
    return np.clip(y, qlo, qhi).astype(x.dtype)


def qmean_hw_nhwc(x, *, zp, qlo, qhi):
    acc = (x.astype(np.int64) - zp).sum(axis=(1, 2), keepdims=True)
    cnt = np.int64(x.shape[1] * x.shape[2])
    return np.clip(np.floor_divide(2 * acc + cnt, 2 * cnt) + zp, qlo, qhi).astype(x.dtype)


def qresize_nearest_nhwc(x, iy, ix):
    return x[:, iy.astype(np.int64)][:, :, ix.astype(np.int64)]


def qresize_bilinear_nhwc(x, ty, tx, *, bits):
    x64 = x.astype(np.int64)
    ty = ty.astype(np.int64)
    tx = tx.astype(np.int64)
    one = np.int64(1) << bits
    wy = ty[2][None, :, None, None]
    wx = tx[2][None, None, :, None]

    def at(r: int, c: int) -> np.ndarray:
        return x64[:, ty[r]][:, :, tx[c]]

    top = (one - wx) * at(0, 0) + wx * at(0, 1)
    bot = (one - wx) * at(1, 0) + wx * at(1, 1)
    v = (one - wy) * top + wy * bot + (np.int64(1) << (2 * bits - 1))
    return (v >> (2 * bits)).astype(x.dtype)


def quantize_to_nhwc(x, *, scale, zp, qlo, qhi, out_dtype):
    v = np.rint(x.astype(np.float32) / np.float32(scale)) + np.float32(zp)
    return np.ascontiguousarray(np.clip(v, qlo, qhi).astype(out_dtype).transpose(0, 2, 3, 1))


def dequantize_to_nchw(q, *, scale, zp):
    y = (q.astype(np.int32) - np.int32(zp)).astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray(y.astype(np.float32).transpose(0, 3, 1, 2))


#: kernel name -> numpy twin
KERNELS_NP_LAYOUT = {
    "qconv2d_nhwc_packed": qconv2d_nhwc_packed,
    "qdwconv2d_nhwc": qdwconv2d_nhwc,
    "qconv2d_nhwc": qconv2d_nhwc,
    "qmaxpool2d_nhwc": qmaxpool2d_nhwc,
    "qavgpool2d_nhwc": qavgpool2d_nhwc,
    "qmean_hw_nhwc": qmean_hw_nhwc,
    "qresize_nearest_nhwc": qresize_nearest_nhwc,
    "qresize_bilinear_nhwc": qresize_bilinear_nhwc,
    "quantize_to_nhwc": quantize_to_nhwc,
    "dequantize_to_nchw": dequantize_to_nchw,
}


def register(kernels_np: dict) -> None:
    """Add the twins to a reference-interpreter registry (``tvm_arq.reference.KERNELS_NP``)."""
    kernels_np.update(KERNELS_NP_LAYOUT)


__all__ = ["KERNELS_NP_LAYOUT", "register", "unpack_conv_weight"]
