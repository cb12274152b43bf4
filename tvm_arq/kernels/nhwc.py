"""Integer kernels in NHWC with packed weights (TE), used by :mod:`tvm_arq.passes.layout`.

The generic kernels of :mod:`tvm_arq.kernels.generic` are NCHW/OIHW and cannot be tensorized to the
integer dot-product instructions of CPUs (``vpdpbusd``, ``sdot``). The kernels here keep activations
in NHWC (channels innermost) and take weights packed at compile time so that one dot-product
instruction covers ``lanes`` output channels and ``kgroup`` input channels:

- conv weights ``[ceil(O/lanes), KH, KW, ceil(C/kgroup), lanes, kgroup]``, zero beyond ``O`` and ``C``
  (x86 VNNI and AArch64 ``sdot``: ``lanes=16, kgroup=4``; RISC-V V: ``kgroup=1``, contiguous lanes);
  a dense layer is run as a 1x1 conv on a ``[1, 1, N, K]`` view of its input;
- depthwise weights ``[KH, KW, C]``; grouped conv weights ``[KH, KW, C/groups, O]``.

As in the generic kernels, each quantized op is **one** PrimFunc: the zero-point padding (and the
input-channel padding to ``kgroup``), the int32 accumulation, the folded bias, the fixed-point
requantization, the clamp and optionally a fused lookup-table activation.

Conv and depthwise take their zero points and clamp bounds as a small int32 operand
``qp = [zp_x, zp_y, qlo, qhi]`` rather than as compile-time constants: a symmetric and a hybrid
(asymmetric) build of the same network then have structurally identical kernels, share tuning
records, and run the same machine code with different constants. ``zp_x`` is the pad value in the
kernel's input domain (see ``in_offset``).

The numpy twins are in :mod:`tvm_arq.kernels.reference_layouts`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from .generic import pad_const

I32 = "int32"
I64 = "int64"

#: block annotation read by MetaSchedule's ``ApplyCustomRule`` (see :mod:`tvm_arq.kernels.schedules`)
SCHEDULE_RULE = "schedule_rule"


def out_size(size: int, kernel: int, stride: int, before: int, after: int, dilation: int = 1) -> int:
    """Output extent of a sliding window."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def _requant_qp(acc64, m0, rshift, qp):
    """``clip(((acc * m0 + 2**(rshift-1)) >> rshift) + qp[1], qp[2], qp[3])`` in int64 (not cast)."""
    one = tirx.const(1, I64)
    rs = rshift.astype(I64)
    v = (acc64 * m0.astype(I64) + (one << (rs - one))) >> rs
    v = v + qp[1].astype(I64)
    return tirx.max(tirx.min(v, qp[3].astype(I64)), qp[2].astype(I64))


def _epilogue(v64, table, lut_axis: int, lut_qmin: int, channel, out_dtype: str):
    """Store the requantized value, or look it up in the fused activation table.

    The table index is clamped to the table (a no-op for real operands, whose clamp bounds lie in the
    8-bit range): MetaSchedule measures candidates on random operands, ``qp`` included.
    """
    if table is None:
        return v64.astype(out_dtype)
    row = channel if lut_axis >= 0 and int(table.shape[0]) > 1 else tirx.const(0, I64)
    col = tirx.max(tirx.min(v64 - tirx.const(lut_qmin, I64), tirx.const(int(table.shape[1]) - 1, I64)),
                   tirx.const(0, I64))
    return table[row, col]


def _pad_nhwc(x, pads_hw: Sequence[int], channels: int, qp, in_offset: int, domain_dtype: str, name: str = "pad"):
    """Zero-point pad of H, W (and of C up to ``channels``) in the kernel's input domain.

    ``x`` is shifted by ``in_offset`` into ``domain_dtype`` (``+128``: int8 storage -> uint8 domain,
    ``-128``: uint8 -> int8); the pad value is ``qp[0]`` (already in the domain).
    """
    n, h, wd, c = x.shape
    pt, pl, pb, pr = pads_hw
    c = int(c)
    if not any(pads_hw) and c == channels and in_offset == 0 and str(x.dtype) == domain_dtype:
        return x

    def value(b, i, j, k):
        v = x[b, i, j, k]
        if in_offset:
            v = (v.astype(I32) + tirx.const(in_offset, I32)).astype(domain_dtype)
        return v

    def f(b, i, j, k):
        conds = []
        if pt or pb:
            conds += [i >= pt, i < h + pt]
        if pl or pr:
            conds += [j >= pl, j < wd + pl]
        if channels != c:
            conds.append(k < c)
        src_k = tirx.min(k, c - 1) if channels != c else k
        v = value(b, i - pt, j - pl, src_k)
        if not conds:
            return v
        return tirx.if_then_else(tirx.all(*conds), v, qp[0].astype(domain_dtype))

    return te.compute((n, h + pt + pb, wd + pl + pr, channels), f, name=name)


def qconv2d_nhwc_packed(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_channels: int,
                        in_offset: int, domain_dtype: str, out_dtype: str, lut_axis: int = -1, lut_qmin: int = 0,
                        schedule: str = ""):
    """Quantized conv2d, NHWC activations x weights packed ``[O/L, KH, KW, C/G, L, G]``.

    ``y[n, i, j, o] = requant(sum_{ry, rx, c} xp[n, i*sh + ry*dh, j*sw + rx*dw, c] * w[o, c, ry, rx] + bias[o])``
    with ``xp`` the input shifted by ``in_offset`` and padded with ``qp[0]``; the bias has the zero
    point correction (of the shifted domain) folded in. The int32 accumulator covers the padded
    output channels ``ceil(O/L)*L`` (tensorized blocks are whole), the output only the ``O`` real ones.
    With ``table`` the output is ``table[row, y - lut_qmin]`` (a fused lookup-table activation).
    """
    n, h, wd, c = x.shape
    ob, kh, kw, cb, lanes, kg = (int(v) for v in w.shape)
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = out_size(int(h), kh, sh, pt, pb, dh)
    ow = out_size(int(wd), kw, sw, pl, pr, dw)
    xp = _pad_nhwc(x, padding, cb * kg, qp, in_offset, domain_dtype)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, cb * kg), name="rc")
    attrs = {SCHEDULE_RULE: schedule} if schedule else None
    acc = te.compute(
        (n, oh, ow, ob * lanes),
        lambda b, i, j, o: te.sum(
            xp[b, i * sh + ry * dh, j * sw + rx * dw, rc].astype(I32)
            * w[o // lanes, ry, rx, rc // kg, o % lanes, rc % kg].astype(I32),
            axis=[ry, rx, rc],
        ),
        name="conv",
        attrs=attrs,
    )

    def f(b, i, j, o):
        v = _requant_qp(acc[b, i, j, o].astype(I64) + bias[o].astype(I64), m0[o], rshift[o], qp)
        return _epilogue(v, table, lut_axis, lut_qmin, o, out_dtype)

    return te.compute((n, oh, ow, out_channels), f, name="requant")


def qdwconv2d_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_dtype: str,
                   lut_axis: int = -1, lut_qmin: int = 0, schedule: str = ""):
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
    oh = out_size(int(h), kh, sh, pt, pb, dh)
    ow = out_size(int(wd), kw, sw, pl, pr, dw)
    xp = _pad_nhwc(x, padding, int(c), qp, 0, str(x.dtype))
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

    def f(b, i, j, k):
        v = _requant_qp(acc[b, i, j, k].astype(I64) + bias[k].astype(I64), m0[k], rshift[k], qp)
        return _epilogue(v, table, lut_axis, lut_qmin, k, out_dtype)

    return te.compute((n, oh, ow, c), f, name="requant")


def qconv2d_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, groups: int, out_dtype: str,
                 lut_axis: int = -1, lut_qmin: int = 0):
    """Quantized grouped conv2d, NHWC x ``[KH, KW, C/groups, O]`` (the fallback for grouped convs)."""
    n, h, wd, c = x.shape
    kh, kw, cg, o = (int(v) for v in w.shape)
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = out_size(int(h), kh, sh, pt, pb, dh)
    ow = out_size(int(wd), kw, sw, pl, pr, dw)
    xp = _pad_nhwc(x, padding, int(c), qp, 0, str(x.dtype))
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, cg), name="rc")
    opg = o // groups
    acc = te.compute(
        (n, oh, ow, o),
        lambda b, i, j, k: te.sum(
            xp[b, i * sh + ry * dh, j * sw + rx * dw, (k // opg) * cg + rc].astype(I32) * w[ry, rx, rc, k].astype(I32),
            axis=[ry, rx, rc],
        ),
        name="gconv",
    )

    def f(b, i, j, k):
        v = _requant_qp(acc[b, i, j, k].astype(I64) + bias[k].astype(I64), m0[k], rshift[k], qp)
        return _epilogue(v, table, lut_axis, lut_qmin, k, out_dtype)

    return te.compute((n, oh, ow, o), f, name="requant")


def _clamp(v, lo: int, hi: int, dtype: str):
    return tirx.max(tirx.min(v, tirx.const(hi, dtype)), tirx.const(lo, dtype))


def qmaxpool2d_nhwc(x, *, pool, strides, padding, dilation, qmin: int):
    """Max pooling, NHWC, padded with the smallest integer."""
    n, h, wd, c = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = out_size(int(h), kh, sh, pt, pb, dh)
    ow = out_size(int(wd), kw, sw, pl, pr, dw)
    xp = pad_const(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], qmin)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, oh, ow, c),
        lambda b, i, j, k: te.max(xp[b, i * sh + ry * dh, j * sw + rx * dw, k], axis=[ry, rx]),
        name="qmaxpool",
    )


def qavgpool2d_nhwc(x, *, pool, strides, padding, count_include_pad: bool, zp: int, qlo: int, qhi: int):
    """Average pooling, NHWC, integer domain, round half up (same arithmetic as the NCHW kernel)."""
    n, h, wd, c = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    oh = out_size(int(h), kh, sh, pt, pb)
    ow = out_size(int(wd), kw, sw, pl, pr)
    xp = pad_const(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], zp)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc = te.compute(
        (n, oh, ow, c),
        lambda b, i, j, k: te.sum(xp[b, i * sh + ry, j * sw + rx, k].astype(I32) - tirx.const(zp, I32), axis=[ry, rx]),
        name="acc",
    )

    def count(i, j):
        if count_include_pad:
            return tirx.const(kh * kw, I64)
        h0 = i * sh - pt
        w0 = j * sw - pl
        hc = tirx.min(h0 + kh, h) - tirx.max(h0, 0)
        wc = tirx.min(w0 + kw, wd) - tirx.max(w0, 0)
        return (hc * wc).astype(I64)

    def f(b, i, j, k):
        cnt = count(i, j)
        v = tirx.floordiv(acc[b, i, j, k].astype(I64) * tirx.const(2, I64) + cnt, cnt * tirx.const(2, I64))
        return _clamp(v + tirx.const(zp, I64), qlo, qhi, I64).astype(x.dtype)

    return te.compute((n, oh, ow, c), f, name="qavgpool")


def qmean_hw_nhwc(x, *, zp: int, qlo: int, qhi: int):
    """Global average pooling over H, W of an NHWC tensor -> ``[N, 1, 1, C]``, round half up."""
    n, h, wd, c = x.shape
    ry = te.reduce_axis((0, h), name="ry")
    rx = te.reduce_axis((0, wd), name="rx")
    acc = te.compute(
        (n, 1, 1, c),
        lambda b, i, j, k: te.sum(x[b, ry, rx, k].astype(I32) - tirx.const(zp, I32), axis=[ry, rx]),
        name="acc",
    )
    cnt = int(h) * int(wd)

    def f(b, i, j, k):
        v = tirx.floordiv(acc[b, i, j, k].astype(I64) * tirx.const(2, I64) + tirx.const(cnt, I64),
                          tirx.const(2 * cnt, I64))
        return _clamp(v + tirx.const(zp, I64), qlo, qhi, I64).astype(x.dtype)

    return te.compute((n, 1, 1, c), f, name="qmean")


def qresize_nearest_nhwc(x, iy, ix):
    """Nearest-neighbour resize of an NHWC tensor as a gather of whole pixels."""
    n, c = x.shape[0], x.shape[3]
    return te.compute((n, iy.shape[0], ix.shape[0], c), lambda b, i, j, k: x[b, iy[i], ix[j], k],
                      name="qresize_nearest")


def qresize_bilinear_nhwc(x, ty, tx, *, bits: int):
    """Bilinear resize of an NHWC tensor with integer weights (see the NCHW kernel)."""
    n, c = x.shape[0], x.shape[3]
    one = tirx.const(1 << bits, I64)

    def f(b, i, j, k):
        y0, y1, wy = ty[0, i], ty[1, i], ty[2, i].astype(I64)
        x0, x1, wx = tx[0, j], tx[1, j], tx[2, j].astype(I64)
        top = (one - wx) * x[b, y0, x0, k].astype(I64) + wx * x[b, y0, x1, k].astype(I64)
        bot = (one - wx) * x[b, y1, x0, k].astype(I64) + wx * x[b, y1, x1, k].astype(I64)
        v = (one - wy) * top + wy * bot + tirx.const(1 << (2 * bits - 1), I64)
        return (v >> tirx.const(2 * bits, I64)).astype(x.dtype)

    return te.compute((n, ty.shape[1], tx.shape[1], c), f, name="qresize_bilinear")


def quantize_to_nhwc(x, *, scale: float, zp: int, qlo: int, qhi: int, out_dtype: str):
    """``quantize`` of a float NCHW tensor, written NHWC (the graph-input layout transform, fused)."""
    n, c, h, wd = x.shape

    def f(b, i, j, k):
        v = tirx.round(x[b, k, i, j] / tirx.const(scale, "float32")) + tirx.const(float(zp), "float32")
        v = tirx.max(tirx.min(v, tirx.const(float(qhi), "float32")), tirx.const(float(qlo), "float32"))
        return v.astype(out_dtype)

    return te.compute((n, h, wd, c), f, name="quantize")


def dequantize_to_nchw(q, *, scale: float, zp: int):
    """``dequantize`` of an NHWC integer tensor, written as float NCHW (the graph-output transform)."""
    n, h, wd, c = q.shape
    return te.compute(
        (n, c, h, wd),
        lambda b, k, i, j: (q[b, i, j, k].astype(I32) - tirx.const(zp, I32)).astype("float32")
        * tirx.const(scale, "float32"),
        name="dequantize",
    )


#: kernel name -> TE compute function (same calling convention as :data:`tvm_arq.kernels.KERNELS`)
NHWC_KERNELS = {
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

__all__ = ["NHWC_KERNELS", "SCHEDULE_RULE", *NHWC_KERNELS]
