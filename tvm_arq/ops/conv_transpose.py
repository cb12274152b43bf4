"""Transposed conv2d (``relax.nn.conv2d_transpose``, the upsampling layers of DBNet / FPN / segmentation heads).

A transposed conv is an integer group anchor like conv2d (:mod:`tvm_arq.ops.conv`): per-channel symmetric int8
weights, the bias add and ReLU / ReLU6 / clip that follow it folded into one kernel, fixed-point requantization
per output channel (:func:`tvm_arq.qmath.quantize_multiplier`), the int32 bias carrying the zero-point
correction, bias correction of the weight rounding, a lookup-table activation fused into the NHWC kernel.

**The kernel: a direct gather over the contributing taps, one stride phase at a time.** With stride ``s``,
padding ``p`` and a ``K``-tap kernel (dilation 1), output row ``i`` receives input row ``h`` through tap
``ky = i + p - s*h``. Writing ``r = (i + p) mod s`` (the output's *stride phase*) and ``q = (i + p) div s``,
the contributing taps are exactly ``ky = r + s*t`` with input row ``h = q - t``, ``t < T = ceil(K / s)``. So
each output is a small dense conv of ``T x T`` taps over the *original* input, whose weights depend on the
phase (the classic stride-phase decomposition into ``s*s`` convolutions, written as one compute whose weight
and bias index carry the phase). Compared with the textbook "insert ``s-1`` zeros between input pixels, then
conv with the flipped kernel", it does ``s*s`` times fewer multiply-adds (4x at stride 2, 16x at stride 4)
and materializes nothing; compared with a scatter it has no write conflicts and is an ordinary reduction
(spatial loops ``n, i, j, o``, reduction ``t, u, c``) that MetaSchedule's default rules tile, vectorize and
parallelize (its post-order-apply space generator yields 3 design spaces for the NHWC kernel). Untuned builds
run it with TVM's plain loops, like the grouped NHWC conv; it is not mapped onto the packed ``sdot`` /
``vpdpbusd`` conv template (see "Not done" below).

**Zero points, bit-exact.** The kernel's inner loop is ``sum q_x * q_w`` as in conv. Rows and columns the
gather reads outside the input hold the zero point ``z_x`` (real 0), taps ``ky >= K`` of the last phase have
weight 0. Because the set of taps depends on the phase, so does the zero-point correction: the int32 bias is
``b'[ry, rx, o] = round(b / (s_x * s_w)) - z_x * sum_{c, ky = ry mod s, kx = rx mod s} q_w`` -- one bias per
phase and output channel, folded at compile time exactly like conv's ``b - z_x * sum(q_w)``. The numpy twin
computes the same integers by a different algorithm (a scatter of ``(q_x - z_x) * q_w`` over the output
canvas), so the hypothesis tests compare two independent formulations.

**Weights.** Relax stores the weight IOHW (``[Cin, O/groups, KH, KW]``); its per-channel scales run along
axis 1. With ``groups == 1`` that is one scale per output channel; with groups, channel ``o`` uses the scale
of ``o mod (O/groups)`` (shared by the groups; per tensor for a depthwise transposed conv).

**Layouts.** NCHW: ``qconv2d_transpose`` takes the IOHW weight as is. On targets that run NHWC (every
:class:`~tvm_arq.layoutspec.LayoutPlan` of this project), ``ConvertLayout`` turns it into
``qconv2d_transpose_nhwc`` with the weight packed at compile time per phase ``[s_h, s_w, T_h, T_w, C/groups, O]``
(zero beyond ``K``), zero points and clamp in the ``qp`` operand like the NHWC conv kernels, and the
only-consumer lookup-table activation fused (:func:`tvm_arq.ops.conv_nhwc.lut_operands`).

Unsupported forms stay float with a reason: dilation other than 1, layouts other than NCHW / IOHW, a
non-constant weight, a dynamic input shape.

Not done: the packed, tensorized (integer dot-product instruction) template -- the phase-dependent weight
index does not fit the packed conv schedule, and the two DBNet upsampling layers are a small share of the
detector's work; a stride-phase split into ``s*s`` packed 1x1 / ``T x T`` convs would reuse that template.
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import is_const, is_op

from ..qmath import QuantizationError, quantize_multiplier, requantize_np
from .common import (
    DQ_X,
    I32,
    I64,
    Q_SCALE,
    Q_ZP,
    RealizeContext,
    act_clamp,
    activation,
    dq,
    is_float_tensor,
    pad_const,
    qinfo,
    requant,
    which,
)
from .conv import ACC64_MAX, INT32_MAX, INT32_MIN, _bias, accumulator_bounds, conv_weight_shift, fit_int32
from .conv_nhwc import epilogue, finish_np, lut_operands, pad_nhwc, requant_qp
from .irutil import Binding, const_value, tensor_shape
from .registry import (
    Kind,
    PlanRule,
    Quant,
    Role,
    Stage,
    emit_kernel,
    register_kernel,
    register_layout,
    register_plan,
    register_realize,
    register_reference,
)

logger = logging.getLogger(__name__)

OP = "relax.nn.conv2d_transpose"


# -- geometry --------------------------------------------------------------------------------------


def transpose_out_hw(h: int, w: int, kernel, strides, padding, output_padding) -> tuple[int, int]:
    """Output height and width of a transposed conv (dilation 1); ``padding`` is ``(top, left, bottom, right)``."""
    pt, pl, pb, pr = padding
    return ((h - 1) * strides[0] - pt - pb + kernel[0] + output_padding[0],
            (w - 1) * strides[1] - pl - pr + kernel[1] + output_padding[1])


def _taps(k: int, s: int) -> int:
    """``T = ceil(K / s)``: taps per phase along one axis."""
    return -(-k // s)


def _gather_pads(h: int, out: int, k: int, s: int, before: int) -> tuple[int, int]:
    """Zero-point padding ``(top, bottom)`` of the input so the gather row ``(i + before) div s - t + T - 1`` is
    always in range."""
    t = _taps(k, s)
    last = (out - 1 + before) // s
    return t - 1, max(0, last - (h - 1))


def iohw_to_oihw(w: np.ndarray, groups: int) -> np.ndarray:
    """``[Cin, O/g, KH, KW]`` -> ``[O, Cin/g, KH, KW]``: the weights each output channel reads (not flipped)."""
    cin, opg, kh, kw = w.shape
    cg = cin // groups
    return np.ascontiguousarray(w.reshape(groups, cg, opg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(-1, cg, kh, kw))


def oihw_to_iohw(w: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of :func:`iohw_to_oihw`."""
    o, cg, kh, kw = w.shape
    opg = o // groups
    return np.ascontiguousarray(w.reshape(groups, opg, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(-1, opg, kh, kw))


def phase_weight_sums(w_oihw: np.ndarray, strides) -> np.ndarray:
    """``[s_h, s_w, O]``: per stride phase and output channel, the sum of the weights of its taps (int64)."""
    sh, sw = strides
    w64 = w_oihw.astype(np.int64)
    out = np.zeros((sh, sw, w_oihw.shape[0]), np.int64)
    for ry in range(sh):
        for rx in range(sw):
            out[ry, rx] = w64[:, :, ry::sh, rx::sw].sum(axis=(1, 2, 3))
    return out


def pack_phase_weight(w: np.ndarray, strides, groups: int) -> np.ndarray:
    """IOHW int8 -> ``[s_h, s_w, T_h, T_w, Cin/g, O]`` with ``wp[ry, rx, t, u, c, o] = W_o[o, c, ry + s_h t,
    rx + s_w u]`` (zero beyond the kernel)."""
    wo = iohw_to_oihw(w, groups)
    o, cg, kh, kw = wo.shape
    sh, sw = strides
    th, tw = _taps(kh, sh), _taps(kw, sw)
    full = np.zeros((o, cg, th * sh, tw * sw), np.int8)
    full[:, :, :kh, :kw] = wo
    # [o, c, t, ry, u, rx] -> [ry, rx, t, u, c, o]
    return np.ascontiguousarray(full.reshape(o, cg, th, sh, tw, sw).transpose(3, 5, 2, 4, 1, 0))


def unpack_phase_weight(wp: np.ndarray, kernel, groups: int) -> np.ndarray:
    """Inverse of :func:`pack_phase_weight` (``kernel = (KH, KW)``)."""
    sh, sw, th, tw, cg, o = wp.shape
    full = wp.transpose(5, 4, 2, 0, 3, 1).reshape(o, cg, th * sh, tw * sw)
    return oihw_to_iohw(full[:, :, :kernel[0], :kernel[1]], groups)


# -- planner ---------------------------------------------------------------------------------------


def _convt_ok(b: Binding, _var2val) -> str:
    """Why ``conv2d_transpose`` binding ``b`` cannot head an integer group (``""`` if it can)."""
    a = b.value.attrs
    if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "IOHW" or str(a.out_layout) != "NCHW":
        return f"layout {a.data_layout}/{a.kernel_layout}/{a.out_layout} (only NCHW/IOHW/NCHW)"
    if any(int(d) != 1 for d in a.dilation):
        return f"dilation {[int(d) for d in a.dilation]} (only 1)"
    if const_value(b.value.args[1]) is None:
        return "weight is not a constant"
    x = b.value.args[0]
    if not (isinstance(x, relax.Var) and is_float_tensor(x)) or not is_float_tensor(b.value):
        return "input is not a static float32 tensor"
    return ""


def convt_weight_shift(d: np.ndarray, mean: np.ndarray, call) -> np.ndarray:
    """Expected output shift per output channel of IOHW weight errors ``d``: an output reads on average
    ``KH * KW / (s_h * s_w)`` taps per input channel, so conv's shift divided by the number of phases."""
    a = call.attrs
    groups = int(a.groups)
    sh, sw = (int(v) for v in a.strides)
    return conv_weight_shift(iohw_to_oihw(d, groups), mean, groups) / float(sh * sw)


register_plan(PlanRule((OP,), Kind.GROUP, Role.ANCHOR, check=_convt_ok, inputs=lambda b, v2v: [b.value.args[0]],
                       bias=_bias, weight_axis=1, input_axis=1, weight_shift=convt_weight_shift))


# -- realize ---------------------------------------------------------------------------------------

W = is_const()
BIAS = is_const()
DQ_W = dq(W)
CONVT = is_op(OP)(DQ_X, DQ_W)
BIASED = is_op("relax.add")(CONVT, BIAS) | is_op("relax.add")(BIAS, CONVT)
LINEAR = BIASED | CONVT
RELU, CLIP = activation(LINEAR)
#: quantize(act?(add?(conv2d_transpose(dequantize(x), dequantize(w)), bias)))
QCONVT = is_op("relax.quantize")(RELU | CLIP | LINEAR, Q_SCALE, Q_ZP)


def phase_bias(w_oihw: np.ndarray, b_fold: np.ndarray, z_x: int, strides, x_dtype: str, layer: str) -> np.ndarray:
    """``[s_h, s_w, O]`` int32 bias per stride phase from conv's folded bias ``b_fold = b_q - z_x * sum(q_w)``.

    ``b_q - z_x * sum_{taps of the phase} q_w``; raises :class:`QuantizationError` if it, or the accumulator
    plus it, leaves the int32 / int64-requantization range (:data:`tvm_arq.ops.conv.ACC64_MAX`).
    """
    sums = phase_weight_sums(w_oihw, strides)
    b_q = b_fold.astype(np.int64) + int(z_x) * w_oihw.reshape(w_oihw.shape[0], -1).astype(np.int64).sum(axis=1)
    bias = b_q[None, None, :] - int(z_x) * sums
    lo, hi = accumulator_bounds(w_oihw, x_dtype)
    bad = (bias < INT32_MIN) | (bias > INT32_MAX) | (np.maximum(hi + bias, -(lo + bias)) > ACC64_MAX)
    if np.any(bad):
        raise QuantizationError(f"conv2d_transpose {layer!r}: the per-phase int32 bias does not fit; keep it in "
                                f"float (QuantConfig(skip_ops=('{OP}',)))")
    return bias.astype(np.int32)


@register_realize(Stage.PATTERN, pattern=QCONVT)
def realize_conv_transpose(ctx: RealizeContext, m: dict, out: Quant):
    """conv2d_transpose group -> ``qconv2d_transpose``."""
    layer = ctx.name.removesuffix("_q")
    qx = qinfo(m[DQ_X])
    dq_w = m[DQ_W]
    a = m[CONVT].attrs
    groups = int(a.groups)
    strides = [int(v) for v in a.strides]
    qw = iohw_to_oihw(dq_w.args[0].value.numpy().astype(np.int8), groups)
    n_out = qw.shape[0]
    s_w = dq_w.args[1].value.numpy().astype(np.float64).reshape(-1)
    s_w = np.full(n_out, s_w[0]) if s_w.size == 1 else np.tile(s_w, n_out // s_w.size)
    bias_c = m.get(BIAS)
    bias = np.zeros(n_out) if bias_c is None else bias_c.value.numpy().astype(np.float64).reshape(-1)
    if bias.size == 1:
        bias = np.full(n_out, bias[0])
    qw, s_w, b_fold = fit_int32(qw, s_w, bias, qx.scale, qx.zp, qx.dtype, f"conv2d_transpose {layer!r}")
    b_ph = phase_bias(qw, b_fold, qx.zp, strides, qx.dtype, layer)
    m0, rs = quantize_multiplier(np.float64(qx.scale) * s_w / out.scale, saturate=True)
    qlo, qhi = act_clamp(which(m, RELU, CLIP), out)
    tensors = [ctx.remap(m[DQ_X].args[0]), relax.const(oihw_to_iohw(qw, groups), "int8"),
               relax.const(b_ph, "int32"), relax.const(m0, "int32"), relax.const(rs, "int32")]
    params = {"strides": strides, "padding": [int(v) for v in a.padding],
              "output_padding": [int(v) for v in a.output_padding], "groups": groups,
              "zp_x": qx.zp, "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qconv2d_transpose", tensors, params)


# -- kernels ---------------------------------------------------------------------------------------


def _phase(i, before: int, s: int):
    """``(r, q)`` = stride phase and gather base of output index ``i``."""
    return (i + before) % s, (i + before) // s


@register_kernel("qconv2d_transpose")
def qconv2d_transpose_nchw(x, w, bias, m0, rshift, *, strides, padding, output_padding, groups: int, zp_x: int,
                           zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Quantized transposed conv2d, NCHW x IOHW: gather over the taps of each output's stride phase.

    ``y[n, o, i, j] = requant(sum_{c, t, u} xp[n, c, q_i - t, q_j - u] * w[c, o, r_i + s_h t, r_j + s_w u]
    + bias[r_i, r_j, o])`` with ``(r, q)`` the phase and base of ``i + pad_top`` (see the module docstring),
    ``xp`` the input padded with ``zp_x``, taps beyond the kernel skipped.
    """
    n, c, h, wd = (int(v) for v in x.shape)
    cin, opg, kh, kw = (int(v) for v in w.shape)
    sh, sw = strides
    pt, pl, _, _ = padding
    o, cg = opg * groups, cin // groups
    oh, ow = transpose_out_hw(h, wd, (kh, kw), strides, padding, output_padding)
    th, tw = _taps(kh, sh), _taps(kw, sw)
    xp = pad_const(x, [(0, 0), (0, 0), _gather_pads(h, oh, kh, sh, pt), _gather_pads(wd, ow, kw, sw, pl)], zp_x)
    rc = te.reduce_axis((0, cg), name="rc")
    rt = te.reduce_axis((0, th), name="rt")
    ru = te.reduce_axis((0, tw), name="ru")
    ragged = kh % sh != 0 or kw % sw != 0

    def tap(b, k, i, j):
        ry, qy = _phase(i, pt, sh)
        rx, qx = _phase(j, pl, sw)
        ky, kx = ry + sh * rt, rx + sw * ru
        ci = (k // opg) * cg + rc
        wv = w[ci, k % opg, tirx.min(ky, kh - 1), tirx.min(kx, kw - 1)].astype(I32)
        if ragged:
            wv = tirx.if_then_else(tirx.all(ky < kh, kx < kw), wv, tirx.const(0, I32))
        return xp[b, ci, qy - rt + th - 1, qx - ru + tw - 1].astype(I32) * wv

    acc = te.compute((n, o, oh, ow), lambda b, k, i, j: te.sum(tap(b, k, i, j), axis=[rc, rt, ru]), name="acc")
    return te.compute(
        (n, o, oh, ow),
        lambda b, k, i, j: requant(acc[b, k, i, j].astype(I64) + bias[(i + pt) % sh, (j + pl) % sw, k].astype(I64),
                                   m0[k], rshift[k], zp_y, qlo, qhi, out_dtype),
        name="qconv2d_transpose",
    )


@register_kernel("qconv2d_transpose_nhwc")
def qconv2d_transpose_nhwc(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, out_hw, kernel,
                           groups: int, out_dtype: str, lut_axis: int = -1, lut_qmin: int = 0,
                           requant32: bool = False):
    """Quantized transposed conv2d, NHWC x phase-packed ``[s_h, s_w, T_h, T_w, C/groups, O]`` weights
    (:func:`pack_phase_weight`), ``qp = [zp_x, zp_y, qlo, qhi]``, optional fused table activation.

    ``requant32`` (set by the shared conv conversion) is not used: the per-phase bias keeps the int64
    requantization here."""
    del requant32
    n, h, wd, c = (int(v) for v in x.shape)
    sh, sw, th, tw, cg, o = (int(v) for v in w.shape)
    pt, pl, _, _ = padding
    oh, ow = out_hw
    ph, pw = _gather_pads(h, oh, kernel[0], sh, pt), _gather_pads(wd, ow, kernel[1], sw, pl)
    xp = pad_nhwc(x, (ph[0], pw[0], ph[1], pw[1]), c, qp, 0, str(x.dtype))
    opg = o // groups
    rt = te.reduce_axis((0, th), name="rt")
    ru = te.reduce_axis((0, tw), name="ru")
    rc = te.reduce_axis((0, cg), name="rc")

    def tap(b, i, j, k):
        ry, qy = _phase(i, pt, sh)
        rx, qx = _phase(j, pl, sw)
        return (xp[b, qy - rt + th - 1, qx - ru + tw - 1, (k // opg) * cg + rc].astype(I32)
                * w[ry, rx, rt, ru, rc, k].astype(I32))

    acc = te.compute((n, oh, ow, o), lambda b, i, j, k: te.sum(tap(b, i, j, k), axis=[rt, ru, rc]), name="convt")

    def finish(b, i, j, k):
        v = requant_qp(acc[b, i, j, k].astype(I64) + bias[(i + pt) % sh, (j + pl) % sw, k].astype(I64), m0[k],
                       rshift[k], qp)
        return epilogue(v, table, lut_axis, lut_qmin, k, out_dtype)

    return te.compute((n, oh, ow, o), finish, name="requant")


# -- numpy twins (scatter formulation) -------------------------------------------------------------


def convt_acc_np(x: np.ndarray, w: np.ndarray, bias: np.ndarray, zp_x: int, strides, padding, output_padding,
                 groups: int) -> np.ndarray:
    """int64 ``acc + bias`` (NCHW) of a transposed conv: scatter of ``(q_x - zp_x) * q_w`` onto the output canvas
    plus ``bias[phase] + zp_x * (sum of the phase's weights)`` -- the integers the gather kernels compute."""
    n, c, h, wd = x.shape
    cin, opg, kh, kw = w.shape
    sh, sw = strides
    pt, pl, _, _ = padding
    cg = cin // groups
    oh, ow = transpose_out_hw(h, wd, (kh, kw), strides, padding, output_padding)
    canvas = np.zeros((n, opg * groups, max((h - 1) * sh + kh, oh + pt), max((wd - 1) * sw + kw, ow + pl)), np.int64)
    xs = x.astype(np.int64) - int(zp_x)
    w64 = w.astype(np.int64)
    for g in range(groups):
        xg = xs[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                canvas[:, g * opg:(g + 1) * opg, ky:ky + sh * (h - 1) + 1:sh, kx:kx + sw * (wd - 1) + 1:sw] += \
                    np.einsum("nchw,co->nohw", xg, w64[g * cg:(g + 1) * cg, :, ky, kx])
    acc = canvas[:, :, pt:pt + oh, pl:pl + ow]
    b_eff = bias.astype(np.int64) + int(zp_x) * phase_weight_sums(iohw_to_oihw(w, groups), strides)
    ry, rx = (np.arange(oh) + pt) % sh, (np.arange(ow) + pl) % sw
    return acc + b_eff[ry[:, None], rx[None, :], :].transpose(2, 0, 1)[None]


@register_reference("qconv2d_transpose")
def qconv2d_transpose_np(x, w, bias, m0, rshift, *, strides, padding, output_padding, groups, zp_x, zp_y, qlo, qhi,
                         out_dtype):
    acc = convt_acc_np(x, w, bias, zp_x, strides, padding, output_padding, groups)
    y = requantize_np(acc, m0.reshape(1, -1, 1, 1), rshift.reshape(1, -1, 1, 1)) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


@register_reference("qconv2d_transpose_nhwc")
def qconv2d_transpose_nhwc_np(x, w, bias, m0, rshift, qp, table=None, *, strides, padding, out_hw, kernel, groups,
                              out_dtype, lut_axis=-1, lut_qmin=0, requant32=False):
    del requant32
    wi = unpack_phase_weight(w, kernel, groups)
    oh0, ow0 = transpose_out_hw(x.shape[1], x.shape[2], kernel, strides, padding, (0, 0))
    acc = convt_acc_np(x.transpose(0, 3, 1, 2), wi, bias, int(qp[0]), strides, padding,
                       (out_hw[0] - oh0, out_hw[1] - ow0), groups)
    return finish_np(acc.transpose(0, 2, 3, 1), np.zeros(w.shape[-1], np.int64), m0, rshift, qp, table, lut_axis,
                     lut_qmin, out_dtype)


# -- layout ----------------------------------------------------------------------------------------


@register_layout("qconv2d_transpose")
def convert_conv_transpose(ctx, name: str, args: list, p: dict) -> bool:
    """``qconv2d_transpose`` -> ``qconv2d_transpose_nhwc`` (phase-packed weights, LUT consumer fused)."""
    x, w, bias, m0, rs = args
    shp = tensor_shape(x)
    if not all(isinstance(a, tvm.ir.expr.Constant) for a in (w, bias, m0, rs)) or shp is None or len(shp) != 4:
        return False
    qw = w.value.numpy()
    kernel = [int(qw.shape[2]), int(qw.shape[3])]
    out_hw = list(transpose_out_hw(int(shp[2]), int(shp[3]), kernel, p["strides"], p["padding"],
                                   p["output_padding"]))
    tensors = [ctx.as_nhwc(x), relax.const(pack_phase_weight(qw, p["strides"], p["groups"]), "int8"), bias, m0, rs,
               relax.const(np.array([p["zp_x"], p["zp_y"], p["qlo"], p["qhi"]], np.int32), "int32")]
    params = {"strides": p["strides"], "padding": p["padding"], "out_hw": out_hw, "kernel": kernel,
              "groups": p["groups"], "out_dtype": p["out_dtype"]}
    defined = lut_operands(ctx, name, tensors, params)
    ctx.nhwc[defined] = ctx.emit("qconv2d_transpose_nhwc", tensors, params)
    return True


__all__ = ["QCONVT", "convert_conv_transpose", "convt_acc_np", "iohw_to_oihw", "oihw_to_iohw", "pack_phase_weight",
           "phase_bias", "phase_weight_sums", "qconv2d_transpose_nchw", "qconv2d_transpose_nhwc",
           "transpose_out_hw", "unpack_phase_weight"]
