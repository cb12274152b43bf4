"""Matmul of two quantized activations (attention ``Q K^T`` and ``A V``): ``qmatmul``.

``relax.matmul`` by a constant weight is the ``dense`` anchor of :mod:`tvm_arq.ops.conv` (any lhs rank: the
realization reshapes an N-D activation to rows around the 2-D ``qdense`` kernel). This module plans the other
form -- both operands are activations -- as a quantization point of its own (a *variant* of the matmul rule,
:attr:`~tvm_arq.ops.registry.PlanRule.when`):

- batched, the batch dimensions broadcast (numpy rules);
- a ``permute_dims`` that swaps the last two axes of an operand (``K^T``) is folded into the kernel's indexing
  (``transpose_a`` / ``transpose_b``), so the transposed copy is never made;
- zero points on both sides: with ``K`` the reduction length,
  ``sum_k (a - z_a)(b - z_b) = sum_k a b - z_b * rowsum(a) - z_a * colsum(b) + K z_a z_b``; the inner loop is the
  plain ``sum_k a b`` (what the dot-product instructions compute), the row and column sums are computed in the
  kernel (only where the other side's zero point is non-zero);
- int32 accumulation whenever ``K * max|a| * max|b|`` fits int32 (always for int8 / uint8 up to ``K = 33025``),
  int64 otherwise (int16 operands);
- the project's requantization epilogue (:func:`~tvm_arq.ops.common.requant`): one fixed-point multiplier
  ``s_a s_b / s_y`` as ``(M0, rshift)``, with ``M0`` shortened (:func:`fit_multiplier`) when the widest
  accumulator times ``M0`` could leave int64 (16-bit operands).

The operand dtypes are parameters of nothing: the kernel and its numpy twin read them off the tensors
(int8, uint8, int16, mixed).

Unsupported forms stay in float with a reason in ``model.fallbacks``: a dynamic shape, a 1-D operand, a
constant lhs times an activation, a non-float32 operand.

Scheduling: the kernel is a plain TE reduction without a template, so MetaSchedule tunes it with its generic
CPU rules (multi-level tiling, parallelization, vectorization, unrolling; ``extract_tasks`` gives each
``qmatmul`` a task of its own); untuned builds get
:func:`tvm_arq.backends.schedules.schedule_qmatmul`. It is not tensorized with the dot-product intrinsics (x86 VNNI needs u8 x s8 with
``[N/16, K/4, 16, 4]`` packed operands, which an activation rhs would have to be repacked into per call).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.dpl import is_op

from ..qmath import dtype_range, quantize_multiplier, requantize_np
from .common import (
    DQ_X,
    DQ_Y,
    I32,
    I64,
    Q_SCALE,
    Q_ZP,
    RealizeContext,
    call_args,
    is_tensor_var,
    qinfo,
    requant,
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

#: ``|acc| * M0 + 2**(rshift - 1)`` must stay below this (int64, with a margin for the zero-point terms)
INT64_SAFE = 2**62


# -- planner ---------------------------------------------------------------------------------------


def _activation_rhs(b: Binding) -> bool:
    """``relax.matmul`` whose rhs is not a constant: the activation x activation variant."""
    return len(b.value.args) == 2 and const_value(b.value.args[1]) is None


def matmul_check(b: Binding, _var2val) -> str:
    """Why the activation x activation matmul ``b`` stays float (``""``: it can be integer)."""
    lhs, rhs = b.value.args
    if const_value(lhs) is not None:
        return "lhs is a constant and rhs an activation (only activation x activation or x constant weight)"
    for side, x in (("lhs", lhs), ("rhs", rhs)):
        if tensor_dtype(x) != "float32":
            return f"{side} is not a float32 tensor"
        shp = tensor_shape(x)
        if shp is None:
            return f"{side} has a dynamic shape"
        if len(shp) < 2:
            return f"{side} is a 1-D vector"
        if not is_tensor_var(x):
            return f"{side} is not quantizable"
    if tensor_shape(b.value) is None:
        return "dynamic output shape"
    return ""


register_plan(PlanRule(("relax.matmul",), Kind.POINT, Role.MATMUL, check=matmul_check, inputs=call_args,
                       when=_activation_rhs))


# -- integer parameters ----------------------------------------------------------------------------


def max_abs(dtype: str, zp: int = 0) -> int:
    """Largest ``|q - zp|`` of a ``dtype`` tensor."""
    lo, hi = dtype_range(dtype)
    return max(abs(lo - zp), abs(hi - zp))


def acc_dtype(a_dtype: str, b_dtype: str, k: int) -> str:
    """Accumulator dtype of ``sum_k a b``: int32 if it cannot overflow, else int64."""
    return I32 if k * max_abs(a_dtype) * max_abs(b_dtype) <= 2**31 - 1 else I64


def fit_multiplier(m0: int, rshift: int, acc_bound: int) -> tuple[int, int]:
    """``(M0, rshift)`` with ``acc_bound * M0 + 2**(rshift-1)`` inside int64.

    ``M0`` (``< 2**31``) loses low bits, and ``rshift`` as many, until the product fits; 8-bit operands never
    need it, 16-bit ones with a long reduction do (the multiplier keeps ``31 - drop`` significant bits).
    """
    drop = 0
    while acc_bound * (m0 >> drop) + (1 << max(rshift - drop - 1, 0)) >= INT64_SAFE and rshift - drop > 1:
        drop += 1
    return m0 >> drop, rshift - drop


def _transposed_source(ctx: RealizeContext, dq_call: relax.Call) -> relax.Expr | None:
    """The integer tensor ``q`` if ``dq_call`` dequantizes ``permute_dims(q)`` swapping the last two axes
    with the same parameters (a transposed operand to fold into the kernel), else ``None``."""
    v2v = ctx.var2val
    qvar = dq_call.args[0]
    qcall = v2v.get(qvar) if isinstance(qvar, relax.Var) else None
    if not (isinstance(qcall, relax.Call) and getattr(qcall.op, "name", "") == "relax.quantize"):
        return None
    perm = v2v.get(qcall.args[0]) if isinstance(qcall.args[0], relax.Var) else None
    if not (isinstance(perm, relax.Call) and getattr(perm.op, "name", "") == "relax.permute_dims"):
        return None
    src = v2v.get(perm.args[0]) if isinstance(perm.args[0], relax.Var) else None
    if src is None or not DQ_X.match(src):
        return None
    nd = len(tensor_shape(perm))
    axes = perm.attrs.axes
    swap = list(range(nd - 2)) + [nd - 1, nd - 2]
    qi, qo = qinfo(src), qinfo(qcall)
    if axes is None or [int(a) for a in axes] != swap or qi != qo or qinfo(dq_call) != qo:
        return None
    return ctx.remap(src.args[0])


MATMUL = is_op("relax.matmul")(DQ_X, DQ_Y)
#: quantize(matmul(dequantize(a), dequantize(b)))
QMATMUL = is_op("relax.quantize")(MATMUL, Q_SCALE, Q_ZP)


@register_realize(Stage.PATTERN, pattern=QMATMUL)
def realize_matmul(ctx: RealizeContext, m: dict, out: Quant):
    """Activation x activation matmul -> ``qmatmul`` (transposes of either operand folded)."""
    operands, flags = [], []
    for pat in (DQ_X, DQ_Y):
        src = _transposed_source(ctx, m[pat])
        flags.append(src is not None)
        operands.append(src if src is not None else ctx.remap(m[pat].args[0]))
    qa, qb = qinfo(m[DQ_X]), qinfo(m[DQ_Y])
    k = int(tensor_shape(m[DQ_X])[-1])
    (m0,), (rs,) = quantize_multiplier(np.float64(qa.scale) * np.float64(qb.scale) / np.float64(out.scale),
                                       saturate=True)
    m0, rs = fit_multiplier(int(m0), int(rs), k * max_abs(qa.dtype, qa.zp) * max_abs(qb.dtype, qb.zp))
    qlo, qhi = out.range
    params = {"out_shape": [int(d) for d in tensor_shape(m[MATMUL])], "transpose_a": flags[0],
              "transpose_b": flags[1], "zp_a": qa.zp, "zp_b": qb.zp, "m0": m0, "rshift": rs, "zp_y": out.zp,
              "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qmatmul", operands, params)


# -- kernel ----------------------------------------------------------------------------------------


def _batch_index(t: te.Tensor, nbatch: int, idx: Sequence) -> list:
    """Batch indices of operand ``t`` (its leading ``ndim - 2`` axes) broadcast to the output's ``idx``."""
    tb = len(t.shape) - 2
    off = nbatch - tb
    return [tirx.const(0, I64) if int(t.shape[i]) == 1 else idx[i + off] for i in range(tb)]


@register_kernel("qmatmul")
def qmatmul(a: te.Tensor, b: te.Tensor, *, out_shape: Sequence[int], transpose_a: bool, transpose_b: bool,
            zp_a: int, zp_b: int, m0: int, rshift: int, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Batched integer matmul of two activations with zero points on both sides, fused requantization.

    ``a`` is ``[..., M, K]`` (``[..., K, M]`` with ``transpose_a``), ``b`` is ``[..., K, N]`` (``[..., N, K]``
    with ``transpose_b``); the batch axes broadcast to ``out_shape[:-2]``. ``y = clip(((acc * M0 +
    2**(rshift-1)) >> rshift) + z_y)`` with ``acc = sum_k a b - z_b rowsum(a) - z_a colsum(b) + K z_a z_b``.
    """
    nb = len(out_shape) - 2
    k = int(a.shape[-2] if transpose_a else a.shape[-1])
    adt = acc_dtype(str(a.dtype), str(b.dtype), k)

    def av(bi, i, r):
        return a[(*bi, r, i) if transpose_a else (*bi, i, r)]

    def bv(bi, j, r):
        return b[(*bi, j, r) if transpose_b else (*bi, r, j)]

    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute(
        tuple(out_shape),
        lambda *ix: te.sum(av(_batch_index(a, nb, ix), ix[nb], rk).astype(adt)
                           * bv(_batch_index(b, nb, ix), ix[nb + 1], rk).astype(adt), axis=rk),
        name="acc",
    )
    total = acc
    if zp_b:
        rr = te.reduce_axis((0, k), name="rr")
        rowsum = te.compute(tuple(a.shape[:-2]) + (out_shape[-2],),
                            lambda *ix: te.sum(av(ix[:-1], ix[-1], rr).astype(I32), axis=rr), name="rowsum")
    if zp_a:
        rc = te.reduce_axis((0, k), name="rc")
        colsum = te.compute(tuple(b.shape[:-2]) + (out_shape[-1],),
                            lambda *ix: te.sum(bv(ix[:-1], ix[-1], rc).astype(I32), axis=rc), name="colsum")

    def epilogue(*ix):
        v = total[ix].astype(I64)
        if zp_b:
            v = v - rowsum[(*_batch_index(a, nb, ix), ix[nb])].astype(I64) * tirx.const(zp_b, I64)
        if zp_a:
            v = v - colsum[(*_batch_index(b, nb, ix), ix[nb + 1])].astype(I64) * tirx.const(zp_a, I64)
        if zp_a and zp_b:
            v = v + tirx.const(k * zp_a * zp_b, I64)
        return requant(v, tirx.const(m0, I32), tirx.const(rshift, I32), zp_y, qlo, qhi, out_dtype)

    return te.compute(tuple(out_shape), epilogue, name="qmatmul")


@register_reference("qmatmul")
def qmatmul_np(a, b, *, out_shape, transpose_a, transpose_b, zp_a, zp_b, m0, rshift, zp_y, qlo, qhi, out_dtype):
    """Numpy twin of :func:`qmatmul`: ``(a - z_a) @ (b - z_b)`` in int64, same requantization."""
    a = a.astype(np.int64) - zp_a
    b = b.astype(np.int64) - zp_b
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    acc = np.matmul(a, b)
    y = requantize_np(acc, np.int64(m0), np.int64(rshift)) + zp_y
    return np.broadcast_to(np.clip(y, qlo, qhi), tuple(out_shape)).astype(out_dtype)


__all__ = ["QMATMUL", "acc_dtype", "fit_multiplier", "matmul_check", "max_abs", "qmatmul", "qmatmul_np"]
