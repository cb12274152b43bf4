"""AArch64: ``sdot`` packed conv (``+dotprod``), NEON fallback, NHWC depthwise.

``sdot`` multiplies **signed** 8-bit vectors (TVM ships s8 x s8 and u8 x u8 dot products for ARM, no
u8 x s8), so activations are stored int8 on AArch64; a model built with uint8 activations is shifted
by -128 inside the conv kernel's padding stage (``+128 * sum(w)`` folded into the bias).

The weight packing is the x86 one, ``[O/16, KH, KW, C/4, 16, 4]``: each ``[4 lanes, 4 inputs]``
sub-block (16 contiguous bytes, one ``q`` register) is one call of TVM's 4x4 intrinsic
(``dot_4x4_i8i8s32_sdot`` -> ``sdot v.4s, v.16b, v.4b[0]``; without ``+dotprod``
``dot_4x4_i8i8s32_neon``: ``smull``/``saddlp``/``addp``). When shifting the activations into int8
could overflow, the conv falls back to the target-neutral vectorized kernel
(:data:`~tvm_arq.backends.base.PORTABLE_VECTOR_CONV`).

Boards: the runtime comes from the ``manylinux_2_28_aarch64`` wheels; emulated with
``qemu-aarch64 -L /usr/aarch64-linux-gnu``.
"""

from __future__ import annotations

from typing import Any

from tvm.target import Target, codegen

from ..layoutspec import DepthwiseTarget, LayoutPlan, PackedConvTarget
from .base import (
    PORTABLE_VECTOR_CONV,
    Arch,
    BoardSpec,
    CpuFeatures,
    RuntimeRecipe,
    RuntimeSource,
    TargetBackend,
    Toolchain,
)
from .intrinsics import load_cpu_tensor_intrinsics

__all__ = ["DEPTHWISE", "NEON_CONV", "SDOT_CONV", "AArch64Backend"]

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

_DEFAULT_MATTR: tuple[str, ...] = ("+neon",)
_TOOLCHAIN = Toolchain("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "/usr/aarch64-linux-gnu")


class AArch64Backend(TargetBackend):
    """AArch64 (activations int8 for ``sdot``'s s8 x s8 dot product)."""

    arch = Arch.AARCH64
    triple_names = ("aarch64", "arm64")
    canonical_triple = "aarch64-linux-gnu"
    default_mattr = _DEFAULT_MATTR
    act_dtype = "int8"
    elf_machine = 183
    toolchain = _TOOLCHAIN
    isa_features = ("neon", "dotprod", "i8mm", "fullfp16", "bf16", "sve", "sve2", "sme")
    conv_kernels = (SDOT_CONV, NEON_CONV)
    depthwise_kernel = DEPTHWISE
    runtime_recipe = RuntimeRecipe("aarch64", RuntimeSource.WHEELS, _TOOLCHAIN, "manylinux_2_28_aarch64")
    boards = (BoardSpec("aarch64", "aarch64", "qemu-aarch64", None, "aarch64"),)

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        return {
            "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": list(_DEFAULT_MATTR)},
            "aarch64-dotprod": {
                "kind": "llvm",
                "mtriple": "aarch64-linux-gnu",
                "mattr": [*_DEFAULT_MATTR, "+dotprod"],
            },
        }

    def detect_features(self, target: Target) -> CpuFeatures:
        return CpuFeatures(has_dotprod=bool(codegen.target_has_features("dotprod", target)),
                           has_i8mm=bool(codegen.target_has_features("i8mm", target)))

    def register_tensor_intrinsics(self) -> None:
        load_cpu_tensor_intrinsics()

    def select_kernels(self) -> LayoutPlan:
        conv = SDOT_CONV if self.info.has_dotprod else NEON_CONV
        return LayoutPlan(conv, PORTABLE_VECTOR_CONV, DEPTHWISE)
