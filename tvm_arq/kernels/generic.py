"""Integer kernels in TE, layout NCHW / OIHW, target independent.

Each function takes TE tensors plus Python constants and returns the output TE tensor; the passes
emit them with ``BlockBuilder.emit_te`` so that every quantized operator becomes **one** PrimFunc:
the zero-point padding, the int32 accumulation, the folded bias, the fixed-point requantization and
the activation clamp live in the same kernel.  The numpy twins are in :mod:`tvm_arq.reference`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

I32 = "int32"
I64 = "int64"


def _requant(acc64, m0, rshift, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """``clip(((acc * m0 + 2**(rshift-1)) >> rshift) + zp_y, qlo, qhi)`` in int64."""
    one = tirx.const(1, I64)
    rs = rshift.astype(I64)
    v = (acc64 * m0.astype(I64) + (one << (rs - one))) >> rs
    v = v + tirx.const(zp_y, I64)
    v = tirx.max(tirx.min(v, tirx.const(qhi, I64)), tirx.const(qlo, I64))
    return v.astype(out_dtype)


def _clamp(v, lo: int, hi: int, dtype: str):
    return tirx.max(tirx.min(v, tirx.const(hi, dtype)), tirx.const(lo, dtype))


def pad_const(x: te.Tensor, pads: Sequence[tuple[int, int]], value: int, name: str = "pad") -> te.Tensor:
    """Pad every axis ``i`` with ``pads[i] = (before, after)`` using the integer constant ``value``."""
    if all(a == 0 and b == 0 for a, b in pads):
        return x
    shape = [x.shape[i] + a + b for i, (a, b) in enumerate(pads)]

    def f(*idx):
        conds = []
        src = []
        for i, (a, _b) in enumerate(pads):
            j = idx[i] - a
            src.append(j)
            if pads[i] != (0, 0):
                conds.append(tirx.all(j >= 0, j < x.shape[i]))
        cond = tirx.all(*conds) if len(conds) > 1 else conds[0]
        return tirx.if_then_else(cond, x(*src), tirx.const(value, x.dtype))

    return te.compute(shape, f, name=name)


def qconv2d_nchw(x, w, bias, m0, rshift, *, strides, padding, dilation, groups: int, zp_x: int,
                 zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Quantized conv2d (NCHW x OIHW, grouped/depthwise), zero-point padding, fused requantization.

    ``bias`` is the int32 bias with the zero-point correction already folded in
    (``b' = b - zp_x * sum(q_w)`` per output channel), so the inner loop is ``sum q_x * q_w``.
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = pad_const(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], zp_x)
    rc = te.reduce_axis((0, cg), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    opg = o // groups
    acc = te.compute(
        (n, o, oh, ow),
        lambda b, k, i, j: te.sum(
            xp[b, (k // opg) * cg + rc, i * sh + ry * dh, j * sw + rx * dw].astype(I32)
            * w[k, rc, ry, rx].astype(I32),
            axis=[rc, ry, rx],
        ),
        name="acc",
    )
    return te.compute(
        (n, o, oh, ow),
        lambda b, k, i, j: _requant(
            acc[b, k, i, j].astype(I64) + bias[k].astype(I64), m0[k], rshift[k], zp_y, qlo, qhi, out_dtype
        ),
        name="qconv2d",
    )


def qdense(x, w, bias, m0, rshift, *, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Quantized dense ``[N, K] x [O, K]^T`` with folded bias and fused requantization."""
    n, k = x.shape
    o, _ = w.shape
    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute(
        (n, o), lambda i, j: te.sum(x[i, rk].astype(I32) * w[j, rk].astype(I32), axis=rk), name="acc"
    )
    return te.compute(
        (n, o),
        lambda i, j: _requant(acc[i, j].astype(I64) + bias[j].astype(I64), m0[j], rshift[j], zp_y, qlo, qhi,
                              out_dtype),
        name="qdense",
    )


def _bcast_index(t: te.Tensor, out_ndim: int, idx):
    off = out_ndim - len(t.shape)
    return [tirx.const(0, "int64") if int(t.shape[i]) == 1 else idx[i + off] for i in range(len(t.shape))]


def qrescale_sum(inputs: Sequence[te.Tensor], out_shape, *, zps: Sequence[int], mults: Sequence[int],
                 shift: int, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Element-wise integer sum of rescaled inputs (add with broadcasting):
    ``y = clip(((sum_i (q_i - z_i) * M_i) + 2**(shift-1)) >> shift) + z_y``."""
    nd = len(out_shape)

    def f(*idx):
        acc = tirx.const(1 << (shift - 1), I64)
        for t, z, m in zip(inputs, zps, mults, strict=True):
            v = t(*_bcast_index(t, nd, idx)).astype(I64) - tirx.const(z, I64)
            acc = acc + v * tirx.const(m, I64)
        v = (acc >> tirx.const(shift, I64)) + tirx.const(zp_y, I64)
        return _clamp(v, qlo, qhi, I64).astype(out_dtype)

    return te.compute(out_shape, f, name="qadd")


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
        return _clamp(v, qlo, qhi, I64).astype(out_dtype)

    def f(*idx):
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        val = piece(inputs[-1], zps[-1], mults[-1], idx, starts[-1])
        for i in range(len(inputs) - 2, -1, -1):
            val = tirx.if_then_else(idx[axis] < starts[i + 1], piece(inputs[i], zps[i], mults[i], idx, starts[i]),
                                    val)
        return val

    return te.compute(out_shape, f, name="qconcat")


def qmaxpool2d_nchw(x, *, pool, strides, padding, dilation, qmin: int):
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = pad_const(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], qmin)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, c, oh, ow),
        lambda b, k, i, j: te.max(xp[b, k, i * sh + ry * dh, j * sw + rx * dw], axis=[ry, rx]),
        name="qmaxpool",
    )


def qavgpool2d_nchw(x, *, pool, strides, padding, count_include_pad: bool, zp: int, qlo: int, qhi: int):
    """Average pooling in the integer domain (output keeps the input's scale and zero point):
    ``y = z + floor((2 * sum(q - z) + cnt) / (2 * cnt))`` (round half up)."""
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    oh = (h + pt + pb - kh) // sh + 1
    ow = (wd + pl + pr - kw) // sw + 1
    xp = pad_const(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], zp)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc = te.compute(
        (n, c, oh, ow),
        lambda b, k, i, j: te.sum(xp[b, k, i * sh + ry, j * sw + rx].astype(I32) - tirx.const(zp, I32),
                                  axis=[ry, rx]),
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

    def f(b, k, i, j):
        cnt = count(i, j)
        v = tirx.floordiv(acc[b, k, i, j].astype(I64) * tirx.const(2, I64) + cnt, cnt * tirx.const(2, I64))
        return _clamp(v + tirx.const(zp, I64), qlo, qhi, I64).astype(x.dtype)

    return te.compute((n, c, oh, ow), f, name="qavgpool")


def qmean_hw(x, *, zp: int, qlo: int, qhi: int):
    """Global average pooling over H, W (NCHW), keepdims, integer domain, round half up."""
    n, c, h, wd = x.shape
    ry = te.reduce_axis((0, h), name="ry")
    rx = te.reduce_axis((0, wd), name="rx")
    acc = te.compute(
        (n, c, 1, 1),
        lambda b, k, i, j: te.sum(x[b, k, ry, rx].astype(I32) - tirx.const(zp, I32), axis=[ry, rx]),
        name="acc",
    )
    cnt = int(h) * int(wd)

    def f(b, k, i, j):
        v = tirx.floordiv(acc[b, k, i, j].astype(I64) * tirx.const(2, I64) + tirx.const(cnt, I64),
                          tirx.const(2 * cnt, I64))
        return _clamp(v + tirx.const(zp, I64), qlo, qhi, I64).astype(x.dtype)

    return te.compute((n, c, 1, 1), f, name="qmean")


def qclamp(x, *, lo: int, hi: int):
    """ReLU / clip in the integer domain (same scale and zero point)."""
    return te.compute(x.shape, lambda *i: _clamp(x(*i), lo, hi, x.dtype), name="qclamp")


def quantize(x, *, scale: float, zp: int, qlo: int, qhi: int, out_dtype: str):
    """``clip(round_half_even(x / scale) + zp)`` computed in float32."""

    def f(*i):
        v = tirx.round(x(*i) / tirx.const(scale, "float32")) + tirx.const(float(zp), "float32")
        v = tirx.max(tirx.min(v, tirx.const(float(qhi), "float32")), tirx.const(float(qlo), "float32"))
        return v.astype(out_dtype)

    return te.compute(x.shape, f, name="quantize")


def dequantize(q, *, scale: float, zp: int):
    """``(int32(q) - zp) * scale`` in float32."""
    return te.compute(
        q.shape,
        lambda *i: (q(*i).astype(I32) - tirx.const(zp, I32)).astype("float32") * tirx.const(scale, "float32"),
        name="dequantize",
    )


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


def qmul(a, b, *, out_shape, zps: Sequence[int], m0: int, rshift: int, zp_y: int, qlo: int, qhi: int,
         out_dtype: str):
    """Element-wise product of two quantized tensors (with broadcasting), integer requantization:
    ``y = clip(((q_a - z_a) * (q_b - z_b) * M0 + 2**(rshift-1)) >> rshift) + z_y)``."""
    nd = len(out_shape)

    def f(*idx):
        va = a(*_bcast_index(a, nd, idx)).astype(I64) - tirx.const(zps[0], I64)
        vb = b(*_bcast_index(b, nd, idx)).astype(I64) - tirx.const(zps[1], I64)
        v = (va * vb * tirx.const(m0, I64) + tirx.const(1 << (rshift - 1), I64)) >> tirx.const(rshift, I64)
        return _clamp(v + tirx.const(zp_y, I64), qlo, qhi, I64).astype(out_dtype)

    return te.compute(out_shape, f, name="qmul")


def qresize_nearest(x, iy, ix):
    """Nearest-neighbour resize (NCHW) as a gather: ``y[n, c, i, j] = x[n, c, iy[i], ix[j]]``.

    The source indices (int32 tables) are computed at compile time from the resize attributes."""
    n, c = x.shape[0], x.shape[1]
    return te.compute((n, c, iy.shape[0], ix.shape[0]),
                      lambda b, k, i, j: x[b, k, iy[i], ix[j]], name="qresize_nearest")


def qresize_bilinear(x, ty, tx, *, bits: int):
    """Bilinear resize (NCHW) with integer weights, same scale and zero point as the input.

    ``ty`` / ``tx`` are ``[3, out]`` int32 tables ``(i0, i1, w1)`` with ``w1`` in ``[0, 2**bits]``;
    ``y = (sum_{a,b} wy_a * wx_b * x[i_a, j_b] + 2**(2*bits-1)) >> (2*bits)`` in int64 (round half up).
    """
    n, c = x.shape[0], x.shape[1]
    one = tirx.const(1 << bits, I64)

    def f(b, k, i, j):
        y0, y1, wy = ty[0, i], ty[1, i], ty[2, i].astype(I64)
        x0, x1, wx = tx[0, j], tx[1, j], tx[2, j].astype(I64)
        top = (one - wx) * x[b, k, y0, x0].astype(I64) + wx * x[b, k, y0, x1].astype(I64)
        bot = (one - wx) * x[b, k, y1, x0].astype(I64) + wx * x[b, k, y1, x1].astype(I64)
        v = (one - wy) * top + wy * bot + tirx.const(1 << (2 * bits - 1), I64)
        return (v >> tirx.const(2 * bits, I64)).astype(x.dtype)

    return te.compute((n, c, ty.shape[1], tx.shape[1]), f, name="qresize_bilinear")


def qpad(x, *, pads: Sequence[Sequence[int]], value: int):
    """Constant padding in the integer domain: ``value`` is the quantized pad value (the zero point for
    a real 0)."""
    return pad_const(x, [tuple(p) for p in pads], value, name="qpad")


def qsoftmax(x, table, *, axis: int, mult: int, shift: int, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Integer softmax along ``axis``.

    ``e = table[max(q) - q]`` (``table[k] = round(exp(-s_x * k) * 2**20)``, compile time), then
    ``y = z_y + round(e * mult / (sum(e) * 2**shift))`` with ``mult = round(2**shift / s_y)``, all in
    int64 (floor division of non-negative numbers, round half up).
    """
    nd = len(x.shape)
    axis = axis % nd
    n = x.shape[axis]
    red_shape = [1 if i == axis else x.shape[i] for i in range(nd)]

    def along(idx, j):
        src = list(idx)
        src[axis] = j
        return src

    r = te.reduce_axis((0, n), name="r")
    mx = te.compute(red_shape, lambda *i: te.max(x(*along(i, r)), axis=r), name="qmax")
    r2 = te.reduce_axis((0, n), name="r2")
    zero = tirx.const(0, I64)

    def e(idx, mx_idx):
        return table[mx(*mx_idx).astype(I64) - x(*idx).astype(I64)].astype(I64)

    sm = te.compute(red_shape, lambda *i: te.sum(e(along(i, r2), i), axis=r2), name="qsum")

    def f(*i):
        i0 = along(i, zero)
        den = sm(*i0) << tirx.const(shift, I64)
        num = e(i, i0) * tirx.const(mult, I64)
        v = tirx.floordiv(num * tirx.const(2, I64) + den, den * tirx.const(2, I64)) + tirx.const(zp_y, I64)
        return _clamp(v, qlo, qhi, I64).astype(out_dtype)

    return te.compute(x.shape, f, name="qsoftmax")
