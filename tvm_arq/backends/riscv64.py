"""riscv64: packed conv that LLVM vectorizes for the V extension, NHWC depthwise.

Weights are packed ``[O/16, KH, KW, C, 16, 1]`` (``kgroup=1``): for each input channel the 16 weights
of a lane block are contiguous, so the inner statement ``acc[0:16] += x * w[0:16]`` is a broadcast
scalar times a unit-stride vector. With ``+v`` LLVM lowers the 8-bit x 8-bit products accumulated in
int32 to widening multiply-adds (``vwmacc``/``vwmaccsu``/``vwmulsu`` + ``vwadd``); without it the same
kernel compiles to scalar code. Activations keep their storage dtype (RVV has u8 x s8 and s8 x s8).

Boards: no wheels exist, so the runtime is cross-built with ``riscv64-linux-gnu-g++`` (GCC implements
sub-word atomics in libatomic: ``-latomic``); emulated with ``qemu-riscv64 -L /usr/riscv64-linux-gnu``,
``-cpu rv64,v=false`` (rv64gc) or ``-cpu rv64,v=true,vlen=128,elen=64,vext_spec=v1.0`` (needs QEMU >= 8).
"""

from __future__ import annotations

from typing import Any

from tvm.target import Target, codegen

from ..layoutspec import DepthwiseTarget, LayoutPlan
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

__all__ = ["DEPTHWISE", "RVV_CONV", "RiscV64Backend"]

#: the target-neutral vectorized conv, which RVV's widening multiply-adds serve well
RVV_CONV = PORTABLE_VECTOR_CONV

# int32_epilogue=False: TVM 0.27 fails to compile the vectorized q_multiply_shift_per_axis of the RVV depthwise
# schedule (unsupported_dtype_legalize: "MatchType(value.ty())"); the packed conv's epilogue compiles
DEPTHWISE = DepthwiseTarget(rule="arq_rvv_dwconv", max_vector=16, acc_budget=8, vectorize_pad=False,
                            int32_epilogue=False)

_DEFAULT_MCPU = "generic-rv64"
#: rv64gc: what every riscv64 Linux distribution (lp64d ABI) assumes.
_DEFAULT_MATTR: tuple[str, ...] = ("+m", "+a", "+f", "+d", "+c")
_TOOLCHAIN = Toolchain("riscv64-linux-gnu-g++", "g++-riscv64-linux-gnu", "/usr/riscv64-linux-gnu", ("-latomic",))


class RiscV64Backend(TargetBackend):
    """riscv64 (rv64gc, optionally the V extension)."""

    arch = Arch.RISCV64
    triple_names = ("riscv64",)
    canonical_triple = "riscv64-linux-gnu"
    default_mcpu = _DEFAULT_MCPU
    default_mattr = _DEFAULT_MATTR
    act_dtype = "int8"
    elf_machine = 243
    toolchain = _TOOLCHAIN
    isa_features = ("m", "a", "f", "d", "c", "v", "zvfh")
    conv_kernels = (RVV_CONV,)
    depthwise_kernel = DEPTHWISE
    runtime_recipe = RuntimeRecipe("riscv64", RuntimeSource.CROSS_BUILD, _TOOLCHAIN)
    boards = (
        # QEMU >= 8 enables the vector extension in its default rv64 CPU: a plain rv64gc board turns it off
        BoardSpec("riscv64", "riscv64", "qemu-riscv64", "rv64,v=false", "riscv64"),
        BoardSpec("riscv64-rvv", "riscv64", "qemu-riscv64", "rv64,v=true,vlen=128,elen=64,vext_spec=v1.0",
                  "riscv64-rvv"),
    )

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        return {
            "riscv64": {
                "kind": "llvm",
                "mtriple": "riscv64-linux-gnu",
                "mcpu": _DEFAULT_MCPU,
                "mattr": list(_DEFAULT_MATTR),
            },
            "riscv64-rvv": {
                "kind": "llvm",
                "mtriple": "riscv64-linux-gnu",
                "mcpu": _DEFAULT_MCPU,
                "mattr": [*_DEFAULT_MATTR, "+v"],
            },
        }

    def detect_features(self, target: Target) -> CpuFeatures:
        return CpuFeatures(has_rvv=bool(codegen.target_has_features("v", target)))

    def select_kernels(self) -> LayoutPlan:
        return LayoutPlan(RVV_CONV, RVV_CONV, DEPTHWISE)
