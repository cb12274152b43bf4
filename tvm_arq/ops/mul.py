"""Element-wise product of two quantized tensors (squeeze-excitation): ``qmul``, one fixed-point multiplier
``s_a * s_b / s_y``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import te, tirx
from tvm.relax.dpl import is_op

from ..qmath import dtype_range, quantize_multiplier
from .add import nhwc_out_shape
from .common import (
    DQ_X,
    DQ_Y,
    I64,
    Q_SCALE,
    Q_ZP,
    RealizeContext,
    bcast_index,
    binary_check,
    call_args,
    clamp,
    qinfo,
)
from .irutil import tensor_shape
from .registry import (
    Agnostic,
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

register_plan(PlanRule(("relax.multiply",), Kind.POINT, Role.MUL, check=binary_check, inputs=call_args))

#: quantize(multiply(dequantize(a), dequantize(b)))
MUL = is_op("relax.multiply")(DQ_X, DQ_Y)
QMUL = is_op("relax.quantize")(MUL, Q_SCALE, Q_ZP)


def fit_product_multiplier(m0: int, rshift: int, a: Quant, b: Quant) -> tuple[int, int]:
    """``(M0, rshift)`` with ``|q_a - z_a| * |q_b - z_b| * M0 + 2**(rshift-1)`` inside int64.

    Two 8-bit operands leave ``M0 < 2**31`` untouched (``255 * 255 * 2**31 < 2**47``); two int16 operands
    (``|product| <= 65535**2 < 2**32``) would not: ``M0`` and ``rshift`` then drop the same number of low bits
    (``M0`` rounded), a relative multiplier change below ``2**-28``.
    """
    bound = 1
    for q in (a, b):
        lo, hi = q.range
        bound *= max(abs(lo - q.zp), abs(hi - q.zp))
    drop = max(0, bound.bit_length() + max(m0, 1).bit_length() - 62)
    drop = min(drop, rshift - 1)
    if drop:
        m0, rshift = (m0 + (1 << (drop - 1))) >> drop, rshift - drop
    return m0, rshift


@register_realize(Stage.PATTERN, pattern=QMUL)
def realize_mul(ctx: RealizeContext, m: dict, out: Quant):
    a, b = qinfo(m[DQ_X]), qinfo(m[DQ_Y])
    m0, rs = quantize_multiplier(np.float64(a.scale) * np.float64(b.scale) / np.float64(out.scale), saturate=True)
    m0, rs = fit_product_multiplier(int(m0[0]), int(rs[0]), a, b)
    qlo, qhi = dtype_range(out.dtype)
    params = {"out_shape": list(tensor_shape(m[MUL])), "zps": [a.zp, b.zp], "m0": m0,
              "rshift": rs, "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qmul", [ctx.remap(m[DQ_X].args[0]), ctx.remap(m[DQ_Y].args[0])], params)


@register_kernel("qmul")
def qmul(a, b, *, out_shape, zps: Sequence[int], m0: int, rshift: int, zp_y: int, qlo: int, qhi: int,
         out_dtype: str):
    """Element-wise product of two quantized tensors (with broadcasting), integer requantization:
    ``y = clip(((q_a - z_a) * (q_b - z_b) * M0 + 2**(rshift-1)) >> rshift) + z_y)``."""
    nd = len(out_shape)

    def f(*idx):
        va = a(*bcast_index(a, nd, idx)).astype(I64) - tirx.const(zps[0], I64)
        vb = b(*bcast_index(b, nd, idx)).astype(I64) - tirx.const(zps[1], I64)
        v = (va * vb * tirx.const(m0, I64) + tirx.const(1 << (rshift - 1), I64)) >> tirx.const(rshift, I64)
        return clamp(v + tirx.const(zp_y, I64), qlo, qhi, I64).astype(out_dtype)

    return te.compute(out_shape, f, name="qmul")


@register_reference("qmul")
def qmul_np(a, b, *, out_shape, zps, m0, rshift, zp_y, qlo, qhi, out_dtype):
    prod = (a.astype(np.int64) - zps[0]) * (b.astype(np.int64) - zps[1])
    y = ((prod * np.int64(m0) + (np.int64(1) << (rshift - 1))) >> rshift) + zp_y
    return np.broadcast_to(np.clip(y, qlo, qhi), tuple(out_shape)).astype(out_dtype)


register_layout("qmul", Agnostic(nhwc_out_shape, all_4d=True))

__all__ = ["QMUL", "fit_product_multiplier", "qmul", "qmul_np"]
