"""RISC-V kernels: packed conv that LLVM vectorizes for the V extension, NHWC depthwise.

Weights are packed ``[O/16, KH, KW, C, 16, 1]`` (``kgroup=1``): for each input channel the 16 weights
of a lane block are contiguous, so the inner statement ``acc[0:16] += x * w[0:16]`` is a broadcast
scalar times a unit-stride vector. With ``+v`` LLVM lowers the 8-bit x 8-bit products accumulated in
int32 to widening multiply-adds (``vwmacc``/``vwmaccsu``/``vwmulsu`` + ``vwadd``); without it the same
kernel compiles to scalar code. Activations keep their storage dtype (RVV has u8 x s8 and s8 x s8).
"""

from __future__ import annotations

from ..layoutspec import DepthwiseTarget, PackedConvTarget
from .schedules import register_rule

RVV_CONV = PackedConvTarget(
    rule="arq_rvv_conv", lanes=16, kgroup=1, domain_dtype=None, intrin=None, sub_lanes=16,
    acc_budget=6, max_tile_w=8, epilogue_vector=8, vectorize_pad=False,
)

DEPTHWISE = DepthwiseTarget(rule="arq_rvv_dwconv", max_vector=16, acc_budget=8, vectorize_pad=False)


def register() -> None:
    """Register the MetaSchedule custom rules of RISC-V."""
    register_rule("packed_conv", RVV_CONV)
    register_rule("depthwise", DEPTHWISE)


__all__ = ["DEPTHWISE", "RVV_CONV", "register"]
