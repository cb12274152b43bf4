"""AArch64 kernels: ``sdot`` packed conv (``+dotprod``), NEON fallback, NHWC depthwise.

``sdot`` multiplies **signed** 8-bit vectors (TVM ships s8 x s8 and u8 x u8 dot products for ARM, no
u8 x s8), so activations are stored int8 on AArch64; a model built with uint8 activations is shifted
by -128 inside the conv kernel's padding stage (``+128 * sum(w)`` folded into the bias).

The weight packing is the x86 one, ``[O/16, KH, KW, C/4, 16, 4]``: each ``[4 lanes, 4 inputs]``
sub-block (16 contiguous bytes, one ``q`` register) is one call of TVM's 4x4 intrinsic
(``dot_4x4_i8i8s32_sdot`` -> ``sdot v.4s, v.16b, v.4b[0]``; without ``+dotprod``
``dot_4x4_i8i8s32_neon``: ``smull``/``saddlp``/``addp``).
"""

from __future__ import annotations

from ..layoutspec import DepthwiseTarget, PackedConvTarget
from .schedules import register_rule

#: 4 ``q`` accumulators per 16-lane block; 6 blocks leave room for weights and activations
SDOT_CONV = PackedConvTarget(
    rule="arq_arm_sdot_conv", lanes=16, kgroup=4, domain_dtype="int8", intrin="dot_4x4_i8i8s32_sdot", sub_lanes=4,
    acc_budget=6, max_tile_w=8, epilogue_vector=8,
)

NEON_CONV = PackedConvTarget(
    rule="arq_arm_neon_conv", lanes=16, kgroup=4, domain_dtype="int8", intrin="dot_4x4_i8i8s32_neon", sub_lanes=4,
    acc_budget=4, max_tile_w=8, epilogue_vector=8,
)

DEPTHWISE = DepthwiseTarget(rule="arq_arm_dwconv", max_vector=16, acc_budget=8)


def register() -> None:
    """Register the MetaSchedule custom rules of AArch64 (the intrinsics ship with TVM)."""
    from ..tune import load_cpu_tensor_intrinsics

    load_cpu_tensor_intrinsics()
    register_rule("packed_conv", SDOT_CONV)
    register_rule("packed_conv", NEON_CONV)
    register_rule("depthwise", DEPTHWISE)


__all__ = ["DEPTHWISE", "NEON_CONV", "SDOT_CONV", "register"]
