"""Target backends: one module per CPU architecture behind one abstract :class:`TargetBackend`.

=====================  ==================================================================
module                 holds
=====================  ==================================================================
``base``               the :class:`TargetBackend` ABC, :class:`TargetInfo`, toolchain /
                       runtime recipe / board spec data classes
``x86_64``             AVX-512 VNNI / vector conv, depthwise, presets, toolchain
``aarch64``            ``sdot`` / NEON conv, depthwise, presets, toolchain, runtime, boards
``riscv64``            RVV conv, depthwise, presets, toolchain, runtime, boards
``registry``           the list of backends (selection by architecture or triple)
``resolve``            target resolution (:func:`resolve_target`, :func:`get_backend`)
``schedules``          schedule templates, MetaSchedule custom rules
``default_schedules``  :class:`ApplyDefaultSchedules` (untuned builds)
``intrinsics``         CPU tensor intrinsics (TVM's and our VNNI one)
``export``             linking a compiled executable with the backend's toolchain
=====================  ==================================================================

Typical use::

    backend = get_backend("aarch64-dotprod")
    plan = backend.layout_plan()          # kernels for the target's features, rules registered
    backend.toolchain.cross_compiler      # "aarch64-linux-gnu-g++"
"""

from __future__ import annotations

from .base import (
    PORTABLE_VECTOR_CONV,
    Arch,
    BoardSpec,
    CpuFeatures,
    RuntimeRecipe,
    RuntimeSource,
    TargetBackend,
    TargetInfo,
    Toolchain,
)
from .default_schedules import ApplyDefaultSchedules
from .intrinsics import VNNI_INTRIN_NAME, load_cpu_tensor_intrinsics, register_vnni_intrinsic
from .registry import (
    all_backends,
    backend_for_arch,
    backend_for_triple,
    board_specs,
    register_kernel_rules,
    runtime_recipe,
)
from .resolve import PRESETS, get_backend, resolve_target
from .schedules import (
    ConvTile,
    apply_default_schedule,
    default_conv_tile,
    default_depthwise_tile,
    default_schedule,
    register_rule,
    rule_of,
)

__all__ = [
    "PORTABLE_VECTOR_CONV",
    "PRESETS",
    "VNNI_INTRIN_NAME",
    "ApplyDefaultSchedules",
    "Arch",
    "BoardSpec",
    "ConvTile",
    "CpuFeatures",
    "RuntimeRecipe",
    "RuntimeSource",
    "TargetBackend",
    "TargetInfo",
    "Toolchain",
    "all_backends",
    "apply_default_schedule",
    "backend_for_arch",
    "backend_for_triple",
    "board_specs",
    "default_conv_tile",
    "default_depthwise_tile",
    "default_schedule",
    "get_backend",
    "load_cpu_tensor_intrinsics",
    "register_kernel_rules",
    "register_rule",
    "register_vnni_intrinsic",
    "resolve_target",
    "rule_of",
    "runtime_recipe",
]
