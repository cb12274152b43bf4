"""Depthwise conv2d in NHWC (channels in vector lanes): the target-layout kernel of a ``qconv2d`` with
``groups == channels`` (chosen by :func:`tvm_arq.ops.conv_nhwc.convert_conv`), and its numpy twin."""

from __future__ import annotations

import numpy as np
from tvm import te

from .common import I32, SCHEDULE_RULE, out_hw
from .conv_nhwc import finish_np, pad_nhwc, requant_nhwc
from .registry import register_kernel, register_reference


@register_kernel("qdwconv2d_nhwc")
def qdwconv2d_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_dtype: str,
                   lut_axis: int = -1, lut_qmin: int = 0, schedule: str = "", requant32: bool = False):
    """Quantized depthwise conv2d, NHWC x ``[KH, KW, C]``, zero-point padding, fused requantization.

    Channels are the vector lanes; products and the accumulator are int32 (on AVX-512 one
    ``vpmovzxbd`` + ``vpmulld`` + ``vpaddd`` per 16 channels and tap, faster than int16 products that
    must be widened again).
    """
    n, h, wd, c = x.shape
    kh, kw, _ = (int(v) for v in w.shape)
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh, ow = out_hw(int(h), int(wd), (kh, kw), strides, padding, dilation)
    xp = pad_nhwc(x, padding, int(c), qp, 0, str(x.dtype))
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    attrs = {SCHEDULE_RULE: schedule} if schedule else None
    acc = te.compute(
        (n, oh, ow, c),
        lambda b, i, j, k: te.sum(
            xp[b, i * sh + ry * dh, j * sw + rx * dw, k].astype(I32) * w[ry, rx, k].astype(I32),
            axis=[ry, rx],
        ),
        name="dwconv",
        attrs=attrs,
    )

    return requant_nhwc(acc, (n, oh, ow, c), bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype, requant32)


@register_reference("qdwconv2d_nhwc")
def qdwconv2d_nhwc_np(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_dtype, lut_axis=-1,
                      lut_qmin=0, schedule="", requant32=False):
    del schedule, requant32
    n, h, wd, c = x.shape
    kh, kw, _ = w.shape
    pt, pl, pb, pr = padding
    sh, sw = strides
    dh, dw = dilation
    xp = np.pad(x.astype(np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=int(qp[0]))
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
    acc = np.zeros((n, oh, ow, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            acc += patch * w[i, j].astype(np.int64)
    return finish_np(acc, bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype)


__all__ = ["qdwconv2d_nhwc", "qdwconv2d_nhwc_np"]
