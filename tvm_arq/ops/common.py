"""Helpers shared by the op families: TE arithmetic (requantization, clamps, padding), their numpy
counterparts, QDQ patterns and the reading of quantization parameters off QDQ calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.dpl import is_const, is_op, wildcard

from ..qmath import dtype_range
from .irutil import const_value, tensor_dtype, tensor_shape
from .registry import Quant

I32 = "int32"
I64 = "int64"

#: block annotation read by MetaSchedule's ``ApplyCustomRule`` (the target backends' schedule rules)
SCHEDULE_RULE = "schedule_rule"

#: NCHW -> NHWC and back
TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
#: NCHW axis -> NHWC axis
AXIS_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


# -- TE --------------------------------------------------------------------------------------------


def requant(acc64, m0, rshift, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """``clip(((acc * m0 + 2**(rshift-1)) >> rshift) + zp_y, qlo, qhi)`` in int64."""
    one = tirx.const(1, I64)
    rs = rshift.astype(I64)
    v = (acc64 * m0.astype(I64) + (one << (rs - one))) >> rs
    v = v + tirx.const(zp_y, I64)
    v = tirx.max(tirx.min(v, tirx.const(qhi, I64)), tirx.const(qlo, I64))
    return v.astype(out_dtype)


def clamp(v, lo: int, hi: int, dtype: str):
    """``min(max(v, lo), hi)`` with constants of ``dtype``."""
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


def out_size(size: int, kernel: int, stride: int, before: int, after: int, dilation: int = 1) -> int:
    """Output extent of a sliding window."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def out_hw(h, wd, kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int] = (1, 1)) -> tuple:
    """Output height and width of a 2-D sliding window; ``padding`` is ``(top, left, bottom, right)``."""
    pt, pl, pb, pr = padding
    return (out_size(h, kernel[0], strides[0], pt, pb, dilation[0]),
            out_size(wd, kernel[1], strides[1], pl, pr, dilation[1]))


def bcast_index(t: te.Tensor, out_ndim: int, idx):
    """Index of ``t`` broadcast (numpy rules) to an ``out_ndim``-D output index ``idx``."""
    off = out_ndim - len(t.shape)
    return [tirx.const(0, "int64") if int(t.shape[i]) == 1 else idx[i + off] for i in range(len(t.shape))]


# -- numpy -----------------------------------------------------------------------------------------


def pad_np(x: np.ndarray, pads: Sequence[tuple[int, int]], value: int) -> np.ndarray:
    """Constant padding of a numpy array."""
    return np.pad(x, pads, mode="constant", constant_values=value)


def round_div_np(acc: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """``acc / cnt`` rounded half up (floor division of ``2 * acc + cnt`` by ``2 * cnt``)."""
    return np.floor_divide(2 * acc + cnt, 2 * cnt)


def windows_np(xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, strides, dilation=(1, 1)):
    """``(i, j, patch)`` of every window tap of an NHWC array ``xp`` (already padded)."""
    sh, sw = strides
    dh, dw = dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


# -- QDQ graph -------------------------------------------------------------------------------------


def dq(x):
    """``dequantize(x, const scale, const zero_point)``."""
    return is_op("relax.dequantize")(x, is_const(), is_const())


X = wildcard()          # quantized activation (int8/uint8)
Y = wildcard()          # second quantized activation (add, mul)
Q_SCALE = is_const()
Q_ZP = is_const()
DQ_X = dq(X)
DQ_Y = dq(Y)
#: dequantize(x) of an activation (the weight dequantizes die with their float ops)
DQ_ACT = dq(X)


def activation(inner):
    """``relu(inner)`` and ``clip(inner, lo, hi)`` (ReLU6 imports as clip(0, 6))."""
    relu = is_op("relax.nn.relu")(inner)
    clip = is_op("relax.clip")(inner, wildcard(), wildcard())
    return relu, clip


def which(m: dict, *pats):
    """The matched expression of the first of ``pats`` present in match ``m``."""
    for p in pats:
        if p in m:
            return m[p]
    return None


def _scalar(expr) -> float:
    return float(np.asarray(expr.value.numpy()).reshape(-1)[0])


def qinfo(q_call: relax.Call) -> Quant:
    """Scale, zero point and dtype of a quantize/dequantize call with scalar constants."""
    return Quant(_scalar(q_call.args[1]), int(_scalar(q_call.args[2])), str(q_call.args[2].value.dtype))


def act_clamp(act_call: relax.Call | None, out: Quant) -> tuple[int, int]:
    """Output clamp ``(qlo, qhi)`` of an activation (ReLU or clip, ``None``: none) folded into a kernel."""
    qlo, qhi = dtype_range(out.dtype)
    if act_call is None:
        return qlo, qhi

    def q(v: float) -> int:
        return int(np.clip(out.zp + np.rint(np.float32(v) / np.float32(out.scale)), qlo, qhi))

    if act_call.op.name == "relax.nn.relu":
        return max(qlo, out.zp), qhi
    lo, hi = float(act_call.args[1].value), float(act_call.args[2].value)
    return max(qlo, q(lo)), min(qhi, q(hi))


@dataclass
class RealizeContext:
    """What a realize function of an op family gets from ``RealizeInteger``.

    Attributes
    ----------
    bb
        The block builder of the new ``main``.
    remap
        Old expression -> the same expression in the new function.
    var2val
        Bindings of the annotated (old) ``main``.
    name
        Name of the ``quantize`` binding being realized.
    """

    bb: relax.BlockBuilder
    remap: Callable[[relax.Expr], relax.Expr]
    var2val: dict
    name: str = ""




def pass_check(check: Callable | None = None) -> Callable:
    """Planner check of a pass-through op: a static input shape, then ``check(binding, shape)``."""
    def run(b, _var2val) -> str:
        shp = tensor_shape(b.value.args[0]) if b.value.args else None
        if shp is None:
            return "dynamic shape"
        return check(b, shp) if check is not None else ""

    return run


def is_float_tensor(expr) -> bool:
    """A float32 tensor of static shape."""
    return tensor_dtype(expr) == "float32" and tensor_shape(expr) is not None


def is_tensor_var(expr) -> bool:
    """A var holding a float32 tensor of static shape."""
    return isinstance(expr, relax.Var) and is_float_tensor(expr)


def binary_check(b, var2val) -> str:
    """Plan check of an element-wise op: ``""`` if binding ``b`` combines two non-constant static float
    tensors into a static float tensor."""
    args = b.value.args
    ok = len(args) == 2 and all(is_tensor_var(a) and const_value(a, var2val) is None for a in args) \
        and is_float_tensor(b.value)
    return "" if ok else "no integer implementation"


def call_args(b, var2val) -> list:
    """Plan ``inputs`` of an op whose every argument is an integer operand."""
    return list(b.value.args)


__all__ = [
    "AXIS_NHWC", "DQ_ACT", "DQ_X", "DQ_Y", "I32", "I64", "SCHEDULE_RULE", "TO_NCHW", "TO_NHWC", "RealizeContext",
    "act_clamp", "activation", "bcast_index", "binary_check", "call_args", "is_float_tensor", "is_tensor_var", "clamp", "dq", "out_hw", "out_size", "pad_const", "pad_np", "pass_check", "qinfo",
    "requant",
    "round_div_np", "which", "windows_np",
]
