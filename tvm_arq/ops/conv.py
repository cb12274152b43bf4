"""conv2d and dense (matmul by a constant): the anchors of integer groups, NCHW / OIHW kernels.

A group is the anchor with the bias add and the activation (ReLU, ReLU6, clip) that follow it when they
are its only consumer; it becomes one kernel whose integer parameters are computed at compile time:

- int32 bias ``b_q = round(b / (s_x * s_w))`` with the zero-point correction folded in:
  ``b' = b_q - z_x * sum(q_w)`` per output channel (the kernel pads with ``z_x``);
- fixed-point requantization ``(M0, rshift)`` per output channel for ``s_x * s_w / s_y``;
- the activation folded into the output clamp.

The target layouts (NHWC, packed weights) are in :mod:`tvm_arq.ops.conv_nhwc`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from tvm import relax, te
from tvm.relax.dpl import is_const, is_op

from ..qmath import QuantizationError, dtype_range, quantize_multiplier, requantize_np
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
    out_hw,
    pad_const,
    pad_np,
    qinfo,
    requant,
    which,
)
from .irutil import Binding, const_value, tensor_dtype, tensor_shape
from .registry import (
    Kind,
    PlanRule,
    Quant,
    Role,
    Stage,
    emit_kernel,
    register_kernel,
    register_plan,
    register_realize,
    register_reference,
)

logger = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: largest ``|acc + bias|`` for which ``acc * M0 + 2**(rshift - 1)`` (``M0 < 2**31``, ``rshift <= 62``) fits int64
ACC64_MAX = 3 * 2**30


# -- planner ---------------------------------------------------------------------------------------


def _is_float_tensor(expr) -> bool:
    return tensor_dtype(expr) == "float32" and tensor_shape(expr) is not None


def _conv_ok(b: Binding) -> str:
    a = b.value.attrs
    if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
        return f"layout {a.data_layout}/{a.kernel_layout} (only NCHW/OIHW)"
    if const_value(b.value.args[1]) is None:
        return "weight is not a constant"
    if not _is_float_tensor(b.value.args[0]):
        return "input is not a static float32 tensor"
    return ""


def _dense_ok(b: Binding) -> str:
    x, w = b.value.args
    wv = const_value(w)
    if wv is None or wv.ndim != 2:
        return "rhs is not a constant 2-D weight"
    xs = tensor_shape(x)
    if xs is None:
        return "lhs has a dynamic shape"
    if len(xs) < 2:
        return "lhs is a 1-D vector"
    return ""


def _anchor_ok(op_ok: Callable[[Binding], str]) -> Callable[[Binding, dict], str]:
    """The plan check of an anchor: ``op_ok`` and a quantizable input."""

    def check(b: Binding, _var2val) -> str:
        """Why conv2d / matmul ``b`` cannot head an integer group ("" if it can)."""
        why = op_ok(b)
        if not why and not (isinstance(b.value.args[0], relax.Var) and _is_float_tensor(b.value.args[0])):
            why = "input not quantizable"
        return why

    return check


def conv_weight_shift(d: np.ndarray, mean: np.ndarray, groups: int = 1) -> np.ndarray:
    """``sum_k d[o, k] * mean[k]`` of OIHW weight errors ``d`` (``groups`` groups) and per-input-channel means."""
    o, i_per_group = d.shape[0], d.shape[1]
    d = d.reshape(groups, o // groups, i_per_group, -1).sum(axis=3)
    return np.einsum("goi,gi->go", d, mean.reshape(groups, i_per_group)).reshape(o)


def dense_weight_shift(d: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``mean @ d`` for ``(in, out)`` weight errors ``d``."""
    return mean @ d


def _bias(anchor: Binding, nxt: Binding, var2val) -> bool:
    """``nxt`` adds a constant with one value per output channel to ``anchor`` (axis 1 of a conv, the last
    axis of a dense)."""
    if nxt.op != "relax.add":
        return False
    other = [a for a in nxt.value.args if not (isinstance(a, relax.Var) and a.name == anchor.name)]
    cv = const_value(other[0], var2val) if len(other) == 1 else None
    if cv is None:
        return False
    if anchor.op == "relax.nn.conv2d":
        return cv.size == tensor_shape(anchor.value)[1]
    return cv.size == tensor_shape(anchor.value)[-1] and cv.shape[-1] == cv.size


register_plan(PlanRule(("relax.nn.conv2d",), Kind.GROUP, Role.ANCHOR, check=_anchor_ok(_conv_ok),
                       inputs=lambda b, v2v: [b.value.args[0]], bias=_bias, weight_axis=0, input_axis=1,
                       weight_shift=lambda d, mean, call: conv_weight_shift(d, mean, int(call.attrs.groups))))
register_plan(PlanRule(("relax.matmul",), Kind.GROUP, Role.ANCHOR, check=_anchor_ok(_dense_ok),
                       inputs=lambda b, v2v: [b.value.args[0]], bias=_bias, weight_axis=1, input_axis=-1,
                       weight_shift=lambda d, mean, call: dense_weight_shift(d, mean)))


# -- realize ---------------------------------------------------------------------------------------

W = is_const()          # int8 weight constant
BIAS = is_const()       # float bias constant
DQ_W = dq(W)
CONV = is_op("relax.nn.conv2d")(DQ_X, DQ_W)
DENSE = is_op("relax.matmul")(DQ_X, DQ_W)
ANCHOR = CONV | DENSE
BIASED = is_op("relax.add")(ANCHOR, BIAS) | is_op("relax.add")(BIAS, ANCHOR)
LINEAR = BIASED | ANCHOR
RELU, CLIP = activation(LINEAR)
#: quantize(act?(add?(conv2d|matmul(dequantize(x), dequantize(w)), bias)))
QLINEAR = is_op("relax.quantize")(RELU | CLIP | LINEAR, Q_SCALE, Q_ZP)


@register_realize(Stage.PATTERN, pattern=QLINEAR)
def realize_linear(ctx: RealizeContext, m: dict, out: Quant):
    """conv2d / dense group -> ``qconv2d`` / ``qdense``."""
    layer = ctx.name.removesuffix("_q")
    dq_x = m[DQ_X]
    dq_w = m[DQ_W]
    qx = qinfo(dq_x)
    s_x, z_x, x_dtype = qx.scale, qx.zp, qx.dtype
    qw = dq_w.args[0].value.numpy().astype(np.int8)
    s_w = dq_w.args[1].value.numpy().astype(np.float64).reshape(-1)
    is_conv = CONV in m
    anchor = m[CONV] if is_conv else m[DENSE]
    if not is_conv:
        qw = np.ascontiguousarray(qw.T)  # [K, O] -> [O, K]
    n_out = qw.shape[0]
    if s_w.size == 1:
        s_w = np.full(n_out, s_w[0])
    bias_c = m.get(BIAS)
    bias = np.zeros(n_out, np.float64) if bias_c is None else bias_c.value.numpy().astype(np.float64).reshape(-1)
    if bias.size == 1:
        bias = np.full(n_out, bias[0])
    kind = "conv2d" if is_conv else "dense"
    qw, s_w, b_fold = fit_int32(qw, s_w, bias, s_x, z_x, x_dtype, f"{kind} {layer!r}")
    acc_scale = np.float64(s_x) * s_w
    m0, rs = quantize_multiplier(acc_scale / out.scale, saturate=True)
    qlo, qhi = act_clamp(which(m, RELU, CLIP), out)
    tensors = [
        ctx.remap(m[DQ_X].args[0]),
        relax.const(qw, "int8"),
        relax.const(b_fold.astype(np.int32), "int32"),
        relax.const(m0, "int32"),
        relax.const(rs, "int32"),
    ]
    if is_conv:
        a = anchor.attrs
        params = {
            "strides": [int(v) for v in a.strides],
            "padding": [int(v) for v in a.padding],
            "dilation": [int(v) for v in a.dilation],
            "groups": int(a.groups),
            "zp_x": z_x, "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype,
        }
        return emit_kernel(ctx.bb, "qconv2d", tensors, params)
    params = {"zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    # dense has no padding: fold the zero point exactly like conv
    shape = tensor_shape(anchor)
    if len(shape) == 2:
        return emit_kernel(ctx.bb, "qdense", tensors, params)
    # an N-D activation (tokens of a transformer): the same 2-D kernel on the rows, reshaped around it
    rows = int(np.prod(shape[:-1]))
    tensors[0] = ctx.bb.emit(relax.op.reshape(tensors[0], [rows, int(tensor_shape(m[DQ_X])[-1])]))
    y = emit_kernel(ctx.bb, "qdense", tensors, params)
    return relax.op.reshape(y, [int(d) for d in shape])
def accumulator_bounds(qw: np.ndarray, x_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the extreme partial sums of ``sum_k q_x * q_w`` over any subset of ``k``.

    ``q_x`` ranges over the storage range of ``x_dtype`` (the kernel pads with the zero point, which is in
    range), so these bound the int32 accumulator whatever the input and the summation order.
    """
    lo, hi = dtype_range(x_dtype)
    w = qw.reshape(qw.shape[0], -1).astype(np.int64)
    t_hi, t_lo = np.maximum(w * lo, w * hi), np.minimum(w * lo, w * hi)
    return np.minimum(t_lo, 0).sum(axis=1), np.maximum(t_hi, 0).sum(axis=1)


def fit_int32(qw: np.ndarray, s_w: np.ndarray, bias: np.ndarray, s_x: float, z_x: int, x_dtype: str,
              layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer weights, weight scales and folded int32 bias of a conv/dense whose arithmetic cannot overflow.

    The kernels accumulate ``sum_k q_x * q_w`` in int32, add the folded bias
    ``b' = round(b / (s_x * s_w)) - z_x * sum_k q_w`` and requantize ``(acc * M0) >> rshift`` in int64.
    Per output channel:

    - the accumulator bound (:func:`accumulator_bounds`, ``<= K * |q_x|max * |q_w|max``) must fit int32,
      else ``OverflowError`` naming the layer (it depends on the weights and dtype only: e.g. uint8
      activations with ``K = Cin/groups * KH * KW > 66k`` full-scale weights);
    - ``b'`` must fit int32 and ``|acc + b'| <= ACC64_MAX`` (which keeps ``acc * M0 + 2**(rshift-1)`` inside
      int64). A near-constant input (tiny scale ``s_x``) makes ``b / (s_x * s_w)`` huge; the channel's weight
      scale is then raised until it fits and its weights re-rounded. The added error is below
      ``K * 2**-24 * |b|`` in real units.
    """
    qw = qw.astype(np.int8)
    s_w = s_w.astype(np.float64).copy()
    n_out = qw.shape[0]
    per_channel = (-1,) + (1,) * (qw.ndim - 1)
    acc_lo, acc_hi = accumulator_bounds(qw, x_dtype)
    over = (acc_hi > INT32_MAX) | (acc_lo < INT32_MIN)
    if np.any(over):
        c = int(np.argmax(np.maximum(acc_hi, -acc_lo)))
        k = int(np.prod(qw.shape[1:]))
        raise QuantizationError(
            f"{layer}: the int32 accumulator can overflow: with {x_dtype} activations, reduction size "
            f"K = {k} and these weights, output channel {c} can reach {int(max(acc_hi[c], -acc_lo[c])):.4g} "
            f"> 2**31 - 1. Use int8 activations (QuantConfig(act_dtype='int8'); for int16 ones: leave the layer "
            f"out of QuantConfig(int16=...)), split the layer along its input channels, or keep it in float "
            f"(QuantConfig(skip_ops=...))"
        )
    changed = np.zeros(n_out, bool)
    for _ in range(64):
        b_q = np.rint(bias / (np.float64(s_x) * s_w))  # float64: may exceed int64 too
        w_sum = qw.reshape(n_out, -1).astype(np.float64).sum(axis=1)
        b_fold = b_q - float(z_x) * w_sum
        acc_lo, acc_hi = accumulator_bounds(qw, x_dtype)
        need = np.maximum(np.abs(b_fold) / INT32_MAX,
                          np.maximum(acc_hi + b_fold, -(acc_lo + b_fold)) / ACC64_MAX)
        bad = need > 1.0
        if not np.any(bad):
            break
        # everything in accumulator units scales with 1 / s_w: coarsen the weights of those channels
        w_real = qw.astype(np.float64) * s_w.reshape(per_channel)
        s_w = np.where(bad, s_w * need * 1.001, s_w)
        requant = np.clip(np.rint(w_real / s_w.reshape(per_channel)), -127, 127)
        qw = np.where(bad.reshape(per_channel), requant, qw).astype(np.int8)
        changed |= bad
    else:  # pragma: no cover - the factor shrinks every round
        raise QuantizationError(f"{layer}: cannot fit the folded bias into int32")
    if np.any(changed):
        logger.warning(
            "%s: the folded bias does not fit the int32 arithmetic at input scale %.3g (a near-constant "
            "input?): coarsened the weight scale of %d of %d output channel(s)", layer, s_x,
            int(changed.sum()), n_out)
    return qw, s_w, b_fold.astype(np.int64)



# -- kernels ---------------------------------------------------------------------------------------


@register_kernel("qconv2d")
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
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
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
        lambda b, k, i, j: requant(
            acc[b, k, i, j].astype(I64) + bias[k].astype(I64), m0[k], rshift[k], zp_y, qlo, qhi, out_dtype
        ),
        name="qconv2d",
    )


@register_kernel("qdense")
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
        lambda i, j: requant(acc[i, j].astype(I64) + bias[j].astype(I64), m0[j], rshift[j], zp_y, qlo, qhi,
                             out_dtype),
        name="qdense",
    )


@register_reference("qconv2d")
def qconv2d_np(x, w, bias, m0, rshift, *, strides, padding, dilation, groups, zp_x, zp_y, qlo, qhi, out_dtype):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    xp = pad_np(x.astype(np.int64), [(0, 0), (0, 0), (pt, pb), (pl, pr)], zp_x)
    oh, ow = out_hw(h, wd, (kh, kw), strides, padding, dilation)
    acc = np.zeros((n, o, oh, ow), np.int64)
    opg = o // groups
    w64 = w.astype(np.int64)
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w64[g * opg:(g + 1) * opg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
                acc[:, g * opg:(g + 1) * opg] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    acc = acc + bias.astype(np.int64).reshape(1, -1, 1, 1)
    y = requantize_np(acc, m0.reshape(1, -1, 1, 1), rshift.reshape(1, -1, 1, 1)) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


@register_reference("qdense")
def qdense_np(x, w, bias, m0, rshift, *, zp_y, qlo, qhi, out_dtype):
    acc = x.astype(np.int64) @ w.astype(np.int64).T + bias.astype(np.int64)
    y = requantize_np(acc, m0.reshape(1, -1), rshift.reshape(1, -1)) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


__all__ = ["ACC64_MAX", "INT32_MAX", "INT32_MIN", "QLINEAR", "accumulator_bounds", "fit_int32", "qconv2d_nchw",
           "qdense"]
