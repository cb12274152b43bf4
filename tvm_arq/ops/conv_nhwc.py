"""conv2d / dense in the target layouts: NHWC activations, weights packed at compile time.

The NCHW/OIHW kernels of :mod:`tvm_arq.ops.conv` cannot be tensorized to the integer dot-product
instructions of CPUs (``vpdpbusd``, ``sdot``). The kernels here keep activations in NHWC (channels
innermost) and take weights packed so that one dot-product instruction covers ``lanes`` output channels
and ``kgroup`` input channels:

- conv weights ``[ceil(O/lanes), KH, KW, ceil(C/kgroup), lanes, kgroup]``, zero beyond ``O`` and ``C``
  (x86 VNNI and AArch64 ``sdot``: ``lanes=16, kgroup=4``; RISC-V V: ``kgroup=1``, contiguous lanes);
  a dense layer is run as a 1x1 conv on a ``[1, 1, N, K]`` view of its input;
- grouped conv weights ``[KH, KW, C/groups, O]`` (depthwise: :mod:`tvm_arq.ops.depthwise`).

Each quantized op is **one** PrimFunc: the zero-point padding (and the input-channel padding to
``kgroup``), the int32 accumulation, the folded bias, the fixed-point requantization, the clamp and
optionally a fused lookup-table activation.

Conv and depthwise take their zero points and clamp bounds as a small int32 operand
``qp = [zp_x, zp_y, qlo, qhi]`` rather than as compile-time constants: a symmetric and a hybrid
(asymmetric) build of the same network then have structurally identical kernels, share tuning
records, and run the same machine code with different constants. ``zp_x`` is the pad value in the
kernel's input domain (see ``in_offset``).

Layout conversion (``qconv2d``, ``qdense``): conv2d with ``groups == 1`` and dense ->
``qconv2d_nhwc_packed`` (the activation shifted into the dot product's operand type inside the kernel
when its storage differs -- int8 on x86 -> ``+128``, uint8 on ARM -> ``-128`` -- the bias absorbing
``-shift * sum(w)``; a shift that could overflow int32 keeps the plan's fallback kernel); depthwise ->
``qdwconv2d_nhwc``; other grouped convs -> ``qconv2d_nhwc``. int16 activations (W8A16) take the target's
``conv_fallback`` configuration (no dot-product intrinsic, ``kgroup=1``, lanes vectorized): the product is
written as ``int32(x) * int32(w)`` and LLVM picks the widening multiply-adds. A lookup-table activation that is the only
consumer of a conv is fused into its epilogue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..layoutspec import PackedConvTarget
from ..qmath import dtype_range, requantize_np
from .common import I32, I64, SCHEDULE_RULE, out_hw
from .conv import INT32_MAX, INT32_MIN, accumulator_bounds
from .irutil import tensor_shape
from .registry import REGISTRY, TableEpilogue, register_kernel, register_layout, register_reference

logger = logging.getLogger(__name__)


# -- TE helpers shared with the depthwise kernel -----------------------------------------------------

#: headroom kept below the int32 limits by :func:`requant32_exact` for the zero point added in int32
ZP_MARGIN = 1 << 16


def requant_qp(acc64, m0, rshift, qp):
    """``clip(((acc * m0 + 2**(rshift-1)) >> rshift) + qp[1], qp[2], qp[3])`` in int64 (not cast)."""
    one = tirx.const(1, I64)
    rs = rshift.astype(I64)
    v = (acc64 * m0.astype(I64) + (one << (rs - one))) >> rs
    v = v + qp[1].astype(I64)
    return tirx.max(tirx.min(v, qp[3].astype(I64)), qp[2].astype(I64))


def requant_qp32(acc32, m0, rshift, qp):
    """:func:`requant_qp` on an int32 value whose requantized value fits int32 (see :func:`requant32_exact`).

    The product is ``tirx.q_multiply_shift_per_axis`` (``(int64(acc) * m0 + 2**(q+rs-1)) >> (q+rs)`` with
    ``q = 31``, ``rs = rshift - 31``: the same single rounding for every ``rshift`` in ``[1, 62]``), which
    stays opaque to the simplifier until lowering, so the multiply remains a sign-extended 32x32->64 one
    (``vpmuldq``, ``smull``/``smlal``) instead of a full 64-bit multiply (a plain ``int64(acc + bias) * m0``
    is rewritten by the simplifier to ``int64(acc) + int64(bias)``, a 33-bit operand: ``vpmullq``). The
    result is narrowed to int32 there; the zero point and the clamp stay in int32
    (:func:`requant32_exact` leaves :data:`ZP_MARGIN` of headroom for the zero point).
    """
    v = tirx.q_multiply_shift_per_axis(acc32, m0, tirx.const(0, I32), rshift - tirx.const(31, I32),
                                       tirx.const(31, I32), tirx.const(False, "bool"), tirx.const(True, "bool"))
    return tirx.max(tirx.min(v + qp[1], qp[3]), qp[2])


def requant32_exact(acc_lo: np.ndarray, acc_hi: np.ndarray, bias: np.ndarray, m0: np.ndarray,
                    rshift: np.ndarray) -> bool:
    """Whether :func:`requant_qp32` equals :func:`requant_qp` for every accumulator in ``[acc_lo, acc_hi]``.

    Per channel: ``acc + bias`` fits int32 (it is added in int32), ``rshift`` is in ``[1, 62]`` (the
    intrinsic's total shift ``q + rs``) and the requantized value of both extremes fits int32 (the
    requantization is monotone in its input since ``m0 >= 0``) with :data:`ZP_MARGIN` to spare, so
    narrowing it and adding any 8/16-bit zero point in int32 loses nothing. Decided at
    build time from the weights (``acc_lo``/``acc_hi``: :func:`~tvm_arq.ops.conv.accumulator_bounds`).
    """
    lo = np.asarray(acc_lo, np.int64) + np.asarray(bias, np.int64)
    hi = np.asarray(acc_hi, np.int64) + np.asarray(bias, np.int64)
    rs = np.asarray(rshift, np.int64)
    m0 = np.asarray(m0, np.int64)
    if lo.size == 0:
        return True
    if lo.min() < INT32_MIN or hi.max() > INT32_MAX or rs.min() < 1 or rs.max() > 62 or m0.min() < 0:
        return False
    v_lo, v_hi = requantize_np(lo, m0, rs), requantize_np(hi, m0, rs)
    return bool(v_lo.min() >= INT32_MIN + ZP_MARGIN and v_hi.max() <= INT32_MAX - ZP_MARGIN)


def epilogue(v, table, lut_axis: int, lut_qmin: int, channel, out_dtype: str, v_dtype: str = I64):
    """Store the requantized value ``v`` (of ``v_dtype``), or look it up in the fused activation table.

    The table index is clamped to the table (a no-op for real operands, whose clamp bounds lie in the
    8-bit range): MetaSchedule measures candidates on random operands, ``qp`` included.
    """
    if table is None:
        return v.astype(out_dtype)
    dt = v_dtype
    row = channel if lut_axis >= 0 and int(table.shape[0]) > 1 else tirx.const(0, I64)
    col = tirx.max(tirx.min(v - tirx.const(lut_qmin, dt), tirx.const(int(table.shape[1]) - 1, dt)),
                   tirx.const(0, dt))
    return table[row, col]


def requant_nhwc(acc, shape, bias, m0, rshift, qp, table, lut_axis: int, lut_qmin: int, out_dtype: str,
                 requant32: bool = False):
    """The ``requant`` stage of an NHWC conv: per output channel bias, requantization and :func:`epilogue`
    of the int32 accumulator ``acc`` (which may cover more channels than ``shape``).

    ``requant32`` (chosen at build time by :func:`requant32_exact`): the bias is added in int32 and the
    requantization is :func:`requant_qp32`; otherwise everything after the accumulator is int64. With a
    ``table`` the int64 epilogue is kept: the requantized value becomes a buffer index there, and TE's
    index normalization widens every integer inside an index to int64, ``q_multiply_shift_per_axis``'s
    operands included, which its lowering rejects.
    """
    requant32 = requant32 and table is None

    def f(b, i, j, o):
        if requant32:
            v = requant_qp32(acc[b, i, j, o] + bias[o], m0[o], rshift[o], qp)
        else:
            v = requant_qp(acc[b, i, j, o].astype(I64) + bias[o].astype(I64), m0[o], rshift[o], qp)
        return epilogue(v, table, lut_axis, lut_qmin, o, out_dtype, I32 if requant32 else I64)

    return te.compute(shape, f, name="requant")


def pad_nhwc(x, pads_hw: Sequence[int], channels: int, qp, in_offset: int, domain_dtype: str, name: str = "pad"):
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
@register_kernel("qconv2d_nhwc_packed")
def qconv2d_nhwc_packed(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_channels: int,
                        in_offset: int, domain_dtype: str, out_dtype: str, lut_axis: int = -1, lut_qmin: int = 0,
                        schedule: str = "", requant32: bool = False):
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
    oh, ow = out_hw(int(h), int(wd), (kh, kw), strides, padding, dilation)
    xp = pad_nhwc(x, padding, cb * kg, qp, in_offset, domain_dtype)
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

    return requant_nhwc(acc, (n, oh, ow, out_channels), bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype,
                        requant32)


@register_kernel("qconv2d_nhwc")
def qconv2d_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, groups: int, out_dtype: str,
                 lut_axis: int = -1, lut_qmin: int = 0, requant32: bool = False):
    """Quantized grouped conv2d, NHWC x ``[KH, KW, C/groups, O]`` (the fallback for grouped convs)."""
    n, h, wd, c = x.shape
    kh, kw, cg, o = (int(v) for v in w.shape)
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh, ow = out_hw(int(h), int(wd), (kh, kw), strides, padding, dilation)
    xp = pad_nhwc(x, padding, int(c), qp, 0, str(x.dtype))
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

    return requant_nhwc(acc, (n, oh, ow, o), bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype, requant32)



# -- numpy twins -----------------------------------------------------------------------------------


def unpack_conv_weight(w: np.ndarray, out_channels: int, in_channels: int) -> np.ndarray:
    """``[O/L, KH, KW, C/G, L, G]`` -> ``[O, KH, KW, C]`` (drops the zero padding)."""
    ob, kh, kw, cb, lanes, kg = w.shape
    full = w.transpose(0, 4, 1, 2, 3, 5).reshape(ob * lanes, kh, kw, cb * kg)
    return full[:out_channels, :, :, :in_channels]


def finish_np(acc: np.ndarray, bias, m0, rshift, qp, table, lut_axis: int, lut_qmin: int, out_dtype: str):
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


@register_reference("qconv2d_nhwc_packed")
def qconv2d_nhwc_packed_np(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, out_channels,
                           in_offset, domain_dtype, out_dtype, lut_axis=-1, lut_qmin=0, schedule="",
                           requant32=False):
    del domain_dtype, schedule, requant32  # requant32 changes how, not what, the kernel computes
    n, h, wd, c = x.shape
    wu = unpack_conv_weight(w, out_channels, c)
    pt, pl, pb, pr = padding
    xs = x.astype(np.int64) + in_offset
    xp = np.pad(xs, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=int(qp[0]))
    oh, ow = out_hw(h, wd, (wu.shape[1], wu.shape[2]), strides, padding, dilation)
    acc = _conv_acc(xp, wu, oh, ow, strides, dilation)
    return finish_np(acc, bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype)


@register_reference("qconv2d_nhwc")
def qconv2d_nhwc_np(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, dilation, groups, out_dtype,
                    lut_axis=-1, lut_qmin=0, requant32=False):
    del requant32
    n, h, wd, c = x.shape
    kh, kw, cg, o = w.shape
    pt, pl, pb, pr = padding
    xp = np.pad(x.astype(np.int64), [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=int(qp[0]))
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
    opg = o // groups
    acc = np.zeros((n, oh, ow, o), np.int64)
    for g in range(groups):
        wg = w[:, :, :, g * opg:(g + 1) * opg].transpose(3, 0, 1, 2)  # [opg, KH, KW, cg]
        acc[..., g * opg:(g + 1) * opg] = _conv_acc(xp[..., g * cg:(g + 1) * cg], wg, oh, ow, strides, dilation)
    return finish_np(acc, bias, m0, rshift, qp, table, lut_axis, lut_qmin, out_dtype)


# -- layout conversion -----------------------------------------------------------------------------


def pack_conv_weight(w: np.ndarray, lanes: int, kgroup: int) -> np.ndarray:
    """OIHW int8 -> ``[ceil(O/lanes), KH, KW, ceil(C/kgroup), lanes, kgroup]``, zero padded."""
    o, c, kh, kw = w.shape
    ob, cb = -(-o // lanes), -(-c // kgroup)
    full = np.zeros((ob * lanes, cb * kgroup, kh, kw), np.int8)
    full[:o, :c] = w
    return np.ascontiguousarray(full.reshape(ob, lanes, cb, kgroup, kh, kw).transpose(0, 4, 5, 2, 1, 3))


def _const(expr) -> np.ndarray:
    return expr.value.numpy()


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant)


def _fusable_lut(ctx, name: str) -> tuple[str, TableEpilogue] | None:
    """The single consumer of ``name`` that is a fusable table epilogue (per tensor, or per channel of NCHW
    axis 1)."""
    users = ctx.users.get(name, [])
    if len(users) != 1 or users[0] == "<output>":
        return None
    value = ctx.values.get(users[0])
    if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
            and value.op.name == "relax.call_tir"):
        return None
    prim = ctx.mod[value.args[0]]
    kernel = REGISTRY.kernels.get(str(prim.attrs.get("arq.op", ""))) if prim.attrs is not None else None
    if kernel is None or kernel.epilogue is None:
        return None
    args = list(value.args[1].fields)
    if not (isinstance(args[0], relax.Var) and args[0].name == name):
        return None
    lut = kernel.epilogue(args, json.loads(str(prim.attrs["arq.params"])))
    if lut is None or lut.axis not in (-1, 1):
        return None
    return users[0], lut


def lut_operands(ctx, name: str, tensors: list, params: dict) -> str:
    """Fuse the LUT consumer of ``name`` if any; returns the name whose value the kernel defines."""
    fusable = _fusable_lut(ctx, name)
    if fusable is None:
        return name
    lut_name, lut = fusable
    tensors.append(relax.const(lut.table, str(lut.table.dtype)))
    params["lut_axis"] = 3 if lut.axis >= 0 else -1
    params["lut_qmin"] = lut.qmin
    params["out_dtype"] = str(lut.table.dtype)
    params["requant32"] = False  # see requant_nhwc: a table index keeps the int64 epilogue
    ctx.fused.add(lut_name)
    ctx.count("fused_lut")
    return lut_name


@register_layout("qconv2d")
def convert_conv(ctx, name: str, args: list, p: dict) -> bool:
    """``qconv2d`` -> packed (groups 1), depthwise or grouped NHWC kernel."""
    x, w, bias, m0, rs = args
    if not all(_is_const(a) for a in (w, bias, m0, rs)) or len(tensor_shape(x) or ()) != 4:
        return False
    qw, b, m0v, rsv = (_const(a) for a in (w, bias, m0, rs))
    o, cg, kh, kw = qw.shape
    c = int(tensor_shape(x)[1])
    groups = int(p["groups"])
    x_dtype = str(x.ty.dtype)
    common = {"strides": p["strides"], "padding": p["padding"], "dilation": p["dilation"]}
    qp = [p["zp_x"], p["zp_y"], p["qlo"], p["qhi"]]
    if groups == 1:
        _packed(ctx, name, ctx.as_nhwc(x), x_dtype, qw, b, m0v, rsv, qp, common, p["out_dtype"])
        return True
    if groups == c == o and cg == 1:
        tensors = [ctx.as_nhwc(x), relax.const(np.ascontiguousarray(qw[:, 0].transpose(1, 2, 0)), "int8"),
                   relax.const(b, "int32"), relax.const(m0v, "int32"), relax.const(rsv, "int32"),
                   relax.const(np.array(qp, np.int32), "int32")]
        params = {**common, "out_dtype": p["out_dtype"], "schedule": ctx.plan.depthwise.rule,
                  "requant32": ctx.plan.depthwise.int32_epilogue and _requant32(qw, x_dtype, b, m0v, rsv)}
        defined = lut_operands(ctx, name, tensors, params)
        ctx.nhwc[defined] = ctx.emit("qdwconv2d_nhwc", tensors, params, opaque=True)
        return True
    tensors = [ctx.as_nhwc(x), relax.const(np.ascontiguousarray(qw.transpose(2, 3, 1, 0)), "int8"),
               relax.const(b, "int32"), relax.const(m0v, "int32"), relax.const(rsv, "int32"),
               relax.const(np.array(qp, np.int32), "int32")]
    params = {**common, "groups": groups, "out_dtype": p["out_dtype"], "requant32": _requant32(qw, x_dtype, b, m0v, rsv)}
    defined = lut_operands(ctx, name, tensors, params)
    ctx.nhwc[defined] = ctx.emit("qconv2d_nhwc", tensors, params)
    return True


def _requant32(qw: np.ndarray, x_dtype: str, bias: np.ndarray, m0: np.ndarray, rshift: np.ndarray) -> bool:
    """Whether the int32 epilogue (:func:`requant_qp32`) is exact for this layer (inputs of ``x_dtype``)."""
    lo, hi = accumulator_bounds(qw, x_dtype)
    ok = requant32_exact(lo, hi, bias, m0, rshift)
    if not ok:
        logger.info("conv: the int32 epilogue could overflow for this layer; keeping the int64 one")
    return ok


def _choose_conv(ctx, qw: np.ndarray, bias: np.ndarray, x_dtype: str) -> tuple[PackedConvTarget, int, np.ndarray]:
    """Packed config, input shift and shifted bias (falls back when the shift could overflow)."""
    cfg = ctx.plan.conv
    if np.dtype(x_dtype).itemsize > 1:
        # int16 activations (W8A16): no 8-bit dot product takes them; the fallback configuration has no
        # intrinsic and multiplies in the activation's own dtype (sign-extended to int32)
        return ctx.plan.conv_fallback, 0, bias
    dom = cfg.domain_dtype or x_dtype
    if dom == x_dtype:
        return cfg, 0, bias
    shift = dtype_range(dom)[0] - dtype_range(x_dtype)[0]  # +128: int8 -> uint8, -128: uint8 -> int8
    w_sum = qw.reshape(qw.shape[0], -1).astype(np.int64).sum(axis=1)
    new_bias = bias.astype(np.int64) - shift * w_sum
    lo, hi = accumulator_bounds(qw, dom)
    if np.all(new_bias >= INT32_MIN) and np.all(new_bias <= INT32_MAX) and np.all(lo >= INT32_MIN) \
            and np.all(hi <= INT32_MAX):
        return cfg, shift, new_bias.astype(np.int32)
    logger.info("conv: shifting %s activations to %s could overflow int32; using %s", x_dtype, dom,
                ctx.plan.conv_fallback.rule)
    return ctx.plan.conv_fallback, 0, bias


def _packed(ctx, name: str, x_nhwc, x_dtype: str, qw, bias, m0v, rsv, qp: list, common: dict,
            out_dtype: str, define_nhwc: bool = True):
    cfg, shift, bias = _choose_conv(ctx, qw, bias, x_dtype)
    dom = cfg.domain_dtype or x_dtype
    qp = [int(qp[0]) + shift, *(int(v) for v in qp[1:])]
    tensors = [x_nhwc, relax.const(pack_conv_weight(qw, cfg.lanes, cfg.kgroup), "int8"),
               relax.const(np.asarray(bias, np.int32), "int32"), relax.const(m0v, "int32"),
               relax.const(rsv, "int32"), relax.const(np.array(qp, np.int32), "int32")]
    params = {**common, "out_channels": int(qw.shape[0]), "in_offset": int(shift), "domain_dtype": dom,
              "out_dtype": out_dtype, "schedule": cfg.rule, "requant32": _requant32(qw, dom, bias, m0v, rsv)}
    defined = lut_operands(ctx, name, tensors, params) if define_nhwc else name
    out = ctx.emit("qconv2d_nhwc_packed", tensors, params, opaque=True)
    if define_nhwc:
        ctx.nhwc[defined] = out
    return out


@register_layout("qdense")
def convert_dense(ctx, name: str, args: list, p: dict) -> bool:
    """``qdense`` -> the packed conv kernel on a ``[1, 1, N, K]`` view (a 1x1 conv)."""
    x, w, bias, m0, rs = args
    shp = tensor_shape(x)
    if not all(_is_const(a) for a in (w, bias, m0, rs)) or shp is None or len(shp) != 2:
        return False
    n, k = shp
    qw = _const(w)
    x4 = ctx.bb.emit(relax.op.reshape(ctx.as_nchw(x), [1, 1, n, k]))
    common = {"strides": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1]}
    # realize folds the zero point into the bias; dense has no padding, the pad value is unused
    qp = [0, p["zp_y"], p["qlo"], p["qhi"]]
    y4 = _packed(ctx, name, x4, str(x.ty.dtype), qw.reshape(*qw.shape, 1, 1), _const(bias), _const(m0),
                 _const(rs), qp, common, p["out_dtype"], define_nhwc=False)
    ctx.nchw[name] = ctx.bb.emit(relax.op.reshape(y4, [n, int(qw.shape[0])]), name)
    return True


__all__ = ["SCHEDULE_RULE", "convert_conv", "convert_dense", "epilogue", "finish_np", "lut_operands",
           "pack_conv_weight", "pad_nhwc", "qconv2d_nhwc", "qconv2d_nhwc_packed", "requant32_exact", "requant_qp",
           "requant_qp32", "unpack_conv_weight"]
