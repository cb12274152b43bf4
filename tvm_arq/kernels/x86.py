"""x86-64 kernels: AVX-512 VNNI packed conv (``vpdpbusd``), AVX-512/AVX2 fallbacks, NHWC depthwise.

VNNI multiplies **unsigned** 8-bit activations by **signed** 8-bit weights (``vpdpbusd``: 4 u8 x s8
products summed into each of 16 int32 lanes), so activations are stored uint8 on x86 (a symmetric
int8 tensor is the uint8 tensor with zero point 128: the "+128 shift"). When a model is nevertheless
built with int8 activations, the layout pass shifts them by +128 inside the conv kernel's padding
stage and folds ``-128 * sum(w)`` into the bias at compile time.

Weights are packed ``[O/16, KH, KW, C/4, 16, 4]``: the 64 bytes of one ``[16 lanes, 4 inputs]`` block
are one ``zmm`` operand. Our LLVM-22-correct intrinsic ``dot_16x4_vnni`` is registered by
:func:`tvm_arq.tune.register_vnni_intrinsic`.
"""

from __future__ import annotations

from ..layoutspec import DepthwiseTarget, PackedConvTarget
from .schedules import register_rule

#: AVX-512 VNNI: 16 output channels x 4 input channels per ``vpdpbusd zmm``; up to 24 zmm accumulators
VNNI_CONV = PackedConvTarget(
    rule="arq_x86_vnni_conv", lanes=16, kgroup=4, domain_dtype="uint8", intrin="dot_16x4_vnni", sub_lanes=16,
    acc_budget=24, max_tile_w=16, epilogue_vector=16,
)

#: x86 without VNNI: the 16 lanes vectorized (int32 multiply-add), no dot-product instruction
VECTOR_CONV = PackedConvTarget(
    rule="arq_x86_vector_conv", lanes=16, kgroup=1, domain_dtype=None, intrin=None, sub_lanes=16,
    acc_budget=12, max_tile_w=8, epilogue_vector=16,
)

#: NHWC depthwise, channels in vector lanes
DEPTHWISE = DepthwiseTarget(rule="arq_x86_dwconv", max_vector=16, acc_budget=16)


def register() -> None:
    """Register the intrinsic and the MetaSchedule custom rules of x86 (idempotent)."""
    from ..tune import load_cpu_tensor_intrinsics

    load_cpu_tensor_intrinsics()  # TVM's CPU intrinsics, then our VNNI one over the shipped one
    register_rule("packed_conv", VNNI_CONV)
    register_rule("packed_conv", VECTOR_CONV)
    register_rule("depthwise", DEPTHWISE)


__all__ = ["DEPTHWISE", "VECTOR_CONV", "VNNI_CONV", "register"]
