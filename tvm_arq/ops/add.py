"""Element-wise add of two quantized tensors (residuals): ``qadd``, a group head with its activation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import te, tirx
from tvm.relax.dpl import is_op

from ..qmath import common_multipliers
from .common import (
    DQ_X,
    DQ_Y,
    I64,
    Q_SCALE,
    Q_ZP,
    TO_NHWC,
    RealizeContext,
    act_clamp,
    activation,
    bcast_index,
    binary_check,
    call_args,
    clamp,
    qinfo,
    which,
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

register_plan(PlanRule(("relax.add",), Kind.GROUP, Role.ADD, check=binary_check, inputs=call_args))

ADD = is_op("relax.add")(DQ_X, DQ_Y)
ADD_RELU, ADD_CLIP = activation(ADD)
#: quantize(act?(add(dequantize(a), dequantize(b))))
QADD = is_op("relax.quantize")(ADD_RELU | ADD_CLIP | ADD, Q_SCALE, Q_ZP)


def emit_rescale_sum(ctx: RealizeContext, m: dict, out: Quant, node, qlo: int, qhi: int, sign_b: int = 1):
    """Emit ``qadd`` for ``quantize(dequantize(a) + sign_b * dequantize(b))`` matched as ``DQ_X`` / ``DQ_Y``
    (``sign_b=-1``: subtract); ``node`` is the matched add/subtract (its shape is the output shape)."""
    a, b = qinfo(m[DQ_X]), qinfo(m[DQ_Y])
    (ma, mb), shift = common_multipliers([a.scale / out.scale, b.scale / out.scale])
    params = {"out_shape": list(tensor_shape(m[node])), "zps": [a.zp, b.zp], "mults": [ma, sign_b * mb],
              "shift": shift, "zp_y": out.zp, "qlo": qlo, "qhi": qhi, "out_dtype": out.dtype}
    return emit_kernel(ctx.bb, "qadd", [[ctx.remap(m[DQ_X].args[0]), ctx.remap(m[DQ_Y].args[0])]], params)


@register_realize(Stage.PATTERN, pattern=QADD)
def realize_add(ctx: RealizeContext, m: dict, out: Quant):
    qlo, qhi = act_clamp(which(m, ADD_RELU, ADD_CLIP), out)
    return emit_rescale_sum(ctx, m, out, ADD, qlo, qhi)


@register_kernel("qadd", tensor_list=True)
def qrescale_sum(inputs: Sequence[te.Tensor], out_shape, *, zps: Sequence[int], mults: Sequence[int],
                 shift: int, zp_y: int, qlo: int, qhi: int, out_dtype: str):
    """Element-wise integer sum of rescaled inputs (add with broadcasting):
    ``y = clip(((sum_i (q_i - z_i) * M_i) + 2**(shift-1)) >> shift) + z_y``."""
    nd = len(out_shape)

    def f(*idx):
        acc = tirx.const(1 << (shift - 1), I64)
        for t, z, m in zip(inputs, zps, mults, strict=True):
            v = t(*bcast_index(t, nd, idx)).astype(I64) - tirx.const(z, I64)
            acc = acc + v * tirx.const(m, I64)
        v = (acc >> tirx.const(shift, I64)) + tirx.const(zp_y, I64)
        return clamp(v, qlo, qhi, I64).astype(out_dtype)

    return te.compute(out_shape, f, name="qadd")


@register_reference("qadd")
def qadd_np(inputs, *, out_shape, zps, mults, shift, zp_y, qlo, qhi, out_dtype):
    acc = np.full(tuple(out_shape), 1 << (shift - 1), np.int64)
    for t, z, m in zip(inputs, zps, mults, strict=True):
        acc = acc + (t.astype(np.int64) - z) * np.int64(m)
    y = (acc >> shift) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


def nhwc_out_shape(p: dict) -> dict:
    """``out_shape`` parameter in NHWC (element-wise kernels with broadcasting)."""
    return {**p, "out_shape": [int(p["out_shape"][i]) for i in TO_NHWC]}


register_layout("qadd", Agnostic(nhwc_out_shape, all_4d=True))

__all__ = ["QADD", "nhwc_out_shape", "qadd_np", "qrescale_sum"]
