"""x86-64: AVX-512 VNNI packed conv (``vpdpbusd``), AVX-512/AVX2 fallback, NHWC depthwise.

VNNI multiplies **unsigned** 8-bit activations by **signed** 8-bit weights (``vpdpbusd``: 4 u8 x s8
products summed into each of 16 int32 lanes), so activations are stored uint8 on x86 (a symmetric
int8 tensor is the uint8 tensor with zero point 128: the "+128 shift"). When a model is nevertheless
built with int8 activations, the layout pass shifts them by +128 inside the conv kernel's padding
stage and folds ``-128 * sum(w)`` into the bias at compile time.

Weights are packed ``[O/16, KH, KW, C/4, 16, 4]``: the 64 bytes of one ``[16 lanes, 4 inputs]`` block
are one ``zmm`` operand. Our LLVM-22-correct intrinsic ``dot_16x4_vnni`` is registered by
:func:`tvm_arq.backends.intrinsics.register_vnni_intrinsic`.
"""

from __future__ import annotations

from typing import Any

from tvm.target import Target, codegen

from ..layoutspec import DepthwiseTarget, LayoutPlan, PackedConvTarget
from .base import Arch, CpuFeatures, TargetBackend, Toolchain
from .intrinsics import load_cpu_tensor_intrinsics

__all__ = ["DEPTHWISE", "VECTOR_CONV", "VNNI_CONV", "X86Backend"]

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


class X86Backend(TargetBackend):
    """x86-64 (activations uint8 for VNNI's u8 x s8 dot product)."""

    arch = Arch.X86_64
    triple_names = ("x86_64", "amd64")
    canonical_triple = "x86_64-linux-gnu"
    act_dtype = "uint8"
    elf_machine = 62
    toolchain = Toolchain("x86_64-linux-gnu-g++", "g++-x86-64-linux-gnu", "/usr/x86_64-linux-gnu")
    isa_features = (
        "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "bmi", "bmi2", "avx512f", "avx512bw",
        "avx512dq", "avx512vl", "avx512cd", "avx512vnni", "avxvnni", "avx512bf16", "avx512fp16",
        "avx512vbmi", "avx512vbmi2", "avx512ifma", "avx512bitalg", "avx512vpopcntdq", "amx-tile",
        "amx-int8", "amx-bf16", "gfni", "vaes", "vpclmulqdq", "sse4a", "xop", "fma4",
    )  # fmt: skip
    conv_kernels = (VNNI_CONV, VECTOR_CONV)
    depthwise_kernel = DEPTHWISE

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        # Cascade Lake is the oldest Intel core with AVX-512 VNNI.
        return {"x86-vnni": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}}

    def detect_features(self, target: Target) -> CpuFeatures:
        return CpuFeatures(has_vnni=bool(codegen.target_has_features("avx512vnni", target)))

    def register_tensor_intrinsics(self) -> None:
        load_cpu_tensor_intrinsics()  # TVM's CPU intrinsics, then our VNNI one over the shipped one

    def select_kernels(self) -> LayoutPlan:
        return LayoutPlan(VNNI_CONV if self.info.has_vnni else VECTOR_CONV, VECTOR_CONV, DEPTHWISE)
