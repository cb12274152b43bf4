"""Integer LayerNorm and RMS norm: ``qnorm``, one kernel per normalization block.

Recognition
    The ONNX importer of TVM 0.27 emits ``LayerNormalization`` as ``R.nn.layer_norm``, but graphs exported
    with older opsets carry the decomposed form ``mean, subtract, power 2 (or d * d), mean, add eps, sqrt,
    divide (or rsqrt, multiply), multiply gamma, add beta``; without the mean subtraction it is an RMS norm.
    :func:`recognize_norms` (a registered rewrite, run on the float module before planning) replaces such a
    chain over trailing axes by ``R.nn.layer_norm`` / ``R.nn.rms_norm``, which the planner then treats as one
    quantization point.

Integer arithmetic
    With ``d = q - z_x`` over the ``N`` normalized elements of a row, ``S1 = sum d``, ``S2 = sum d**2``
    (int64), LayerNorm is scale invariant, so::

        (x - mean) / sqrt(var + eps) = c / sqrt(D),  c = N * d - S1,  D = N * S2 - S1**2 + E,
        E = round(N**2 * eps / s_x**2)                (RMS norm: c = N * d, D = N * S2 + E)

    ``sqrt`` is the exact integer square root ``r = isqrt(D << 2k)`` (31 fixed bit steps; ``k`` chosen at
    compile time so that ``D << 2k < 2**61``), the normalized value is the fixed-point
    ``T = round(c * 2**(F + k) / r)`` (``F`` fractional bits, ``|T| < 2**31``), and the affine output is
    ``y = z_y + ((T * M_i + B_i + 2**(shift - 1)) >> shift)`` with ``M_i = round(gamma_i / s_y * 2**(shift - F))``
    (``|M_i| < 2**27``) and ``B_i = round(beta_i / s_y * 2**shift)`` per normalized element. Every product stays
    below ``2**63``; all divisions round half up.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax import op as R
from tvm.relax.dpl import is_const, is_op

from ..qmath import QuantizationError, dtype_range
from .common import DQ_X, I64, Q_SCALE, Q_ZP, RealizeContext, clamp, is_float_tensor, is_tensor_var, qinfo
from .irutil import Rebuilder, bindings_of, const_value, tensor_shape, uses
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
    register_rewrite,
)

#: bits of the integer square root (``D << 2k < 2**61`` so ``isqrt < 2**31``)
SQRT_BITS = 31
#: largest ``E`` (the epsilon term); an epsilon that large against ``s_x**2`` flattens the row anyway
MAX_EPS_INT = 1 << 59
#: ``|M_i| < 2**MULT_BITS``
MULT_BITS = 27
#: ``|B_i| <= 2**BIAS_BITS`` (beyond it the output saturates either way)
BIAS_BITS = 60
MAX_SHIFT = 50


# -- block recognition (float -> float) -------------------------------------------------------------


def _trailing_axes(axes, ndim: int) -> list[int] | None:
    """Axes normalized to ``[a, ..., ndim - 1]``, or ``None`` if they are not the trailing axes."""
    if axes is None:
        return list(range(ndim))
    ax = sorted(int(a) % ndim for a in axes)
    return ax if ax and ax == list(range(ax[0], ndim)) else None


def _affine_param(c: np.ndarray | None, shape: tuple[int, ...], axes: list[int]) -> np.ndarray | None:
    """A constant broadcast only along the normalized ``axes`` of ``shape``, as an array of the normalized
    shape (``None`` if it is not such a constant)."""
    if c is None or c.ndim > len(shape) or c.dtype != np.float32:
        return None
    full = (1,) * (len(shape) - c.ndim) + c.shape
    for i, d in enumerate(full):
        if d != 1 and (i not in axes or d != shape[i]):
            return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(full), shape)[(0,) * axes[0]]).astype(np.float32)


def _other(call: relax.Call, x) -> relax.Expr | None:
    """The operand of a binary ``call`` that is not ``x``."""
    a, b = call.args
    if a.same_as(x):
        return b
    if b.same_as(x):
        return a
    return None


def _match_norm(tail_div: relax.Call, v2v: dict, n_users) -> dict | None:
    """Match the normalization ``d / sqrt(mean(d**2) + eps)`` ending in ``tail_div``; the rest of the block
    (mean subtraction, gamma, beta) is matched by the caller."""
    op = tail_div.op.name
    d, den = tail_div.args
    if op == "relax.multiply":  # d * rsqrt(v + eps), either order
        for dd, rr in ((d, den), (den, d)):
            rv = v2v.get(rr) if isinstance(rr, relax.Var) else None
            if isinstance(rv, relax.Call) and rv.op.name == "relax.rsqrt":
                d, den = dd, rr
                break
        else:
            return None
        root = v2v[den]
    else:
        root = v2v.get(den) if isinstance(den, relax.Var) else None
        if not (isinstance(root, relax.Call) and root.op.name == "relax.sqrt"):
            return None
    if not isinstance(d, relax.Var) or n_users(den) != 1:
        return None
    add = v2v.get(root.args[0]) if isinstance(root.args[0], relax.Var) else None
    if not (isinstance(add, relax.Call) and add.op.name == "relax.add") or n_users(root.args[0]) != 1:
        return None
    var = next((a for a in add.args if isinstance(a, relax.Var) and isinstance(v2v.get(a), relax.Call)
                and v2v[a].op.name == "relax.mean"), None)
    eps = const_value(_other(add, var), v2v) if var is not None else None
    if eps is None or eps.size != 1 or n_users(var) != 1:
        return None
    mv = v2v[var]
    sq = v2v.get(mv.args[0]) if isinstance(mv.args[0], relax.Var) else None
    if not bool(mv.attrs.keepdims) or not isinstance(sq, relax.Call) or n_users(mv.args[0]) != 1:
        return None
    if sq.op.name == "relax.power":
        two = const_value(sq.args[1], v2v)
        if not sq.args[0].same_as(d) or two is None or two.size != 1 or float(two.reshape(-1)[0]) != 2.0:
            return None
    elif not (sq.op.name == "relax.multiply" and sq.args[0].same_as(d) and sq.args[1].same_as(d)):
        return None
    shape = tensor_shape(d)
    if shape is None or tensor_shape(tail_div) != shape:
        return None
    axes = _trailing_axes(mv.attrs.axis, len(shape))
    if axes is None:
        return None
    return {"d": d, "axes": axes, "eps": float(eps.reshape(-1)[0]), "shape": shape}


def _match_block(b, v2v: dict, by_name: dict, users: dict) -> tuple[str, relax.Call] | None:
    """``(name of the block's last binding, replacement call)`` if binding ``b`` ends the normalization
    part of a LayerNorm / RMS norm block."""
    def n_users(v) -> int:
        return len(users.get(v.name, [])) if isinstance(v, relax.Var) else 0

    def single_user(name: str):
        u = users.get(name, [])
        return by_name.get(u[0]) if len(u) == 1 else None

    if b.op not in ("relax.divide", "relax.multiply"):
        return None
    m = _match_norm(b.value, v2v, n_users)
    if m is None:
        return None
    d, axes, shape = m["d"], m["axes"], m["shape"]
    x, center = d, False
    dv = v2v.get(d)
    if isinstance(dv, relax.Call) and dv.op.name == "relax.subtract" and n_users(d) == 2:
        mean = v2v.get(dv.args[1]) if isinstance(dv.args[1], relax.Var) else None
        if (isinstance(mean, relax.Call) and mean.op.name == "relax.mean" and mean.args[0].same_as(dv.args[0])
                and bool(mean.attrs.keepdims) and _trailing_axes(mean.attrs.axis, len(shape)) == axes
                and n_users(dv.args[1]) == 1):
            x, center = dv.args[0], True
    if not is_tensor_var(x) or tensor_shape(x) != shape:
        return None
    nshape = shape[axes[0]:]
    gamma = np.ones(nshape, np.float32)
    beta = np.zeros(nshape, np.float32)
    tail = b
    nxt = single_user(tail.name)
    if nxt is not None and nxt.op == "relax.multiply":
        g = _affine_param(const_value(_other(nxt.value, tail.var), v2v), shape, axes)
        if g is not None and tensor_shape(nxt.var) == shape:
            gamma, tail = g, nxt
            nxt = single_user(tail.name)
    if center and nxt is not None and nxt.op == "relax.add":
        bt = _affine_param(const_value(_other(nxt.value, tail.var), v2v), shape, axes)
        if bt is not None and tensor_shape(nxt.var) == shape:
            beta, tail = bt, nxt
    g, bt = relax.const(gamma, "float32"), relax.const(beta, "float32")
    if center:
        return tail.name, R.nn.layer_norm(x, g, bt, axes, epsilon=m["eps"])
    return tail.name, R.nn.rms_norm(x, g, axes, epsilon=m["eps"])


@register_rewrite
def recognize_norms(mod: tvm.IRModule) -> tvm.IRModule:
    """Replace decomposed LayerNorm / RMS norm chains over trailing axes by ``R.nn.layer_norm`` /
    ``R.nn.rms_norm`` (float, same semantics); the dead intermediate bindings are removed."""
    func = mod["main"]
    v2v = relax.analysis.get_var2val(func)
    bs = bindings_of(func)
    by_name = {b.name: b for b in bs}
    users = uses(func)
    repl: dict[str, relax.Call] = {}
    for b in bs:
        hit = _match_block(b, v2v, by_name, users)
        if hit is not None:
            repl[hit[0]] = hit[1]
    if not repl:
        return mod

    def on_binding(rb: Rebuilder, b, value):
        return rb.remap(repl[b.name]) if b.name in repl else value

    return Rebuilder(mod).run(on_binding)


# -- planner ---------------------------------------------------------------------------------------


def _norm_check(b, v2v) -> str:
    call = b.value
    x = call.args[0]
    if not is_tensor_var(x) or not is_float_tensor(call):
        return "dynamic shape"
    shape = tensor_shape(x)
    axes = _trailing_axes(call.attrs.axes, len(shape))
    if axes is None:
        return "normalization over axes other than the trailing ones"
    nconst = 3 if call.op.name == "relax.nn.layer_norm" else 2
    if any(const_value(a, v2v) is None for a in call.args[1:nconst]):
        return "gamma / beta are not constants"
    if call.op.name == "relax.nn.layer_norm" and not (bool(call.attrs.center) and bool(call.attrs.scale)):
        return "layer_norm without center or scale"
    if not float(call.attrs.epsilon) > 0:
        return "epsilon 0: the variance can be 0 (division by 0), kept in float"
    return ""


register_plan(PlanRule(("relax.nn.layer_norm", "relax.nn.rms_norm"), Kind.POINT, Role.NORM, check=_norm_check,
                       inputs=lambda b, v2v: [b.value.args[0]]))


# -- compile-time constants ------------------------------------------------------------------------


def norm_constants(s_x: float, s_y: float, n: int, eps: float, gamma: np.ndarray, beta: np.ndarray
                   ) -> dict:
    """Integer constants of ``qnorm`` (see the module docstring).

    Returns ``{"eps_int", "k", "frac", "shift", "mult", "bias"}`` (``mult`` / ``bias``: int64 arrays of the
    normalized shape).
    """
    s_x = float(np.float32(s_x))
    s_y = float(np.float32(s_y))
    vmax = n * n * 255 * 255
    if vmax >= MAX_EPS_INT:
        raise QuantizationError(f"normalization over {n} elements is too long for int64 arithmetic")
    eps_int = int(min(max(1, round(n * n * eps / (s_x * s_x))), MAX_EPS_INT))
    k = max(0, (61 - (vmax + eps_int).bit_length()) // 2)
    frac = min(30 - math.isqrt(n).bit_length(), 61 - (n * 255).bit_length() - k)
    if frac < 8:
        raise QuantizationError(f"normalization over {n} elements leaves {frac} fractional bits")
    real = gamma.astype(np.float64) / s_y * 2.0**-frac
    amax = float(np.max(np.abs(real))) if real.size else 0.0
    shift = MULT_BITS - int(np.frexp(amax)[1]) if amax > 0 else 1
    shift = int(np.clip(shift, 1, MAX_SHIFT))
    mult = np.rint(real * 2.0**shift)
    if np.any(np.abs(mult) >= 2**MULT_BITS):
        raise QuantizationError(f"normalization gamma / output scale {amax * 2**frac:.3g} is too large")
    lim = float(1 << BIAS_BITS)
    bias = np.clip(np.rint(beta.astype(np.float64) / s_y * 2.0**shift), -lim, lim)
    return {"eps_int": eps_int, "k": k, "frac": frac, "shift": shift,
            "mult": mult.astype(np.int64), "bias": bias.astype(np.int64)}


# -- realize ---------------------------------------------------------------------------------------

LN = is_op("relax.nn.layer_norm")(DQ_X, is_const(), is_const())
RMS = is_op("relax.nn.rms_norm")(DQ_X, is_const())
#: quantize(layer_norm(dequantize(x), gamma, beta)) | quantize(rms_norm(dequantize(x), gamma))
QNORM = is_op("relax.quantize")(LN | RMS, Q_SCALE, Q_ZP)


@register_realize(Stage.PATTERN, pattern=QNORM)
def realize_norm(ctx: RealizeContext, m: dict, out: Quant):
    call = m[LN] if LN in m else m[RMS]
    center = call.op.name == "relax.nn.layer_norm"
    qx = qinfo(m[DQ_X])
    shape = tensor_shape(call)
    axes = _trailing_axes(call.attrs.axes, len(shape))
    nshape = shape[axes[0]:]
    gamma = np.broadcast_to(const_value(call.args[1]), nshape)
    beta = np.broadcast_to(const_value(call.args[2]), nshape) if center else np.zeros(nshape, np.float32)
    c = norm_constants(qx.scale, out.scale, int(np.prod(nshape)), float(call.attrs.epsilon), gamma, beta)
    qlo, qhi = dtype_range(out.dtype)
    params = {"axis": axes[0], "zp": qx.zp, "center": center, "eps_int": c["eps_int"], "k": c["k"],
              "frac": c["frac"], "shift": c["shift"], "zp_y": out.zp, "qlo": qlo, "qhi": qhi,
              "out_dtype": out.dtype}
    tensors = [ctx.remap(m[DQ_X].args[0]), relax.const(c["mult"], "int64"), relax.const(c["bias"], "int64")]
    return emit_kernel(ctx.bb, "qnorm", tensors, params)


# -- kernel ----------------------------------------------------------------------------------------


def _isqrt_te(v: te.Tensor) -> te.Tensor:
    """Exact ``floor(sqrt(v))`` of a non-negative int64 tensor below ``2**62``, one bit per stage."""
    def stage(r: te.Tensor, bit: int):
        def step(*i):
            cand = r(*i) | tirx.const(1 << bit, I64)
            return tirx.Select(cand * cand <= v(*i), cand, r(*i))

        return step

    r = te.compute(v.shape, lambda *i: tirx.const(0, I64), name="isqrt")
    for bit in range(SQRT_BITS - 1, -1, -1):
        r = te.compute(v.shape, stage(r, bit), name=f"isqrt{bit}")
    return r


@register_kernel("qnorm")
def qnorm(x, mult, bias, *, axis: int, zp: int, center: bool, eps_int: int, k: int, frac: int, shift: int,
          zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Integer LayerNorm (``center``) / RMS norm over the trailing axes ``axis..``, see the module docstring."""
    nd = len(x.shape)
    nshape = [int(d) for d in x.shape[axis:]]
    n = int(np.prod(nshape))
    red_shape = [x.shape[i] if i < axis else 1 for i in range(nd)]
    c64 = lambda v: tirx.const(v, I64)  # noqa: E731

    def row_sum(fn, name):
        rs = [te.reduce_axis((0, d), name=f"r{j}") for j, d in enumerate(nshape)]
        return te.compute(red_shape, lambda *i: te.sum(fn(x(*i[:axis], *rs).astype(I64) - c64(zp)), axis=rs),
                          name=name)

    s1 = row_sum(lambda d: d, "s1")
    s2 = row_sum(lambda d: d * d, "s2")

    def den(*i):
        v = c64(n) * s2(*i) - (s1(*i) * s1(*i) if center else c64(0))
        return (v + c64(eps_int)) << c64(2 * k)

    r = _isqrt_te(te.compute(red_shape, den, name="den"))

    def f(*i):
        row = list(i[:axis]) + [0] * (nd - axis)
        d = x(*i).astype(I64) - c64(zp)
        c = c64(n) * d - (s1(*row) if center else c64(0))
        sq = r(*row)
        t = tirx.floordiv((c << c64(frac + k + 1)) + sq, sq * c64(2))
        acc = t * mult(*i[axis:]) + bias(*i[axis:]) + c64(1 << (shift - 1))
        return clamp((acc >> c64(shift)) + c64(zp_y), qlo, qhi, I64).astype(out_dtype)

    return te.compute(x.shape, f, name="qnorm")


def isqrt_np(v: np.ndarray) -> np.ndarray:
    """Exact ``floor(sqrt(v))`` of non-negative int64 values below ``2**62`` (bit by bit)."""
    r = np.zeros_like(v, dtype=np.int64)
    for bit in range(SQRT_BITS - 1, -1, -1):
        cand = r | np.int64(1 << bit)
        r = np.where(cand * cand <= v, cand, r)
    return r


@register_reference("qnorm")
def qnorm_np(x, mult, bias, *, axis, zp, center, eps_int, k, frac, shift, zp_y, qlo, qhi, out_dtype):
    red = tuple(range(axis, x.ndim))
    n = np.int64(np.prod(x.shape[axis:]))
    d = x.astype(np.int64) - zp
    s1 = d.sum(axis=red, keepdims=True)
    s2 = (d * d).sum(axis=red, keepdims=True)
    v = n * s2 - (s1 * s1 if center else 0)
    r = isqrt_np((v + np.int64(eps_int)) << np.int64(2 * k))
    c = n * d - (s1 if center else 0)
    t = np.floor_divide((c << np.int64(frac + k + 1)) + r, 2 * r)
    acc = t * mult.astype(np.int64) + bias.astype(np.int64) + (np.int64(1) << np.int64(shift - 1))
    return np.clip((acc >> np.int64(shift)) + zp_y, qlo, qhi).astype(out_dtype)


__all__ = ["QNORM", "isqrt_np", "norm_constants", "qnorm", "qnorm_np", "recognize_norms"]
