"""Compilation targets: presets, familiar CLI strings and TVM 0.27 target dicts.

The resolver lives in :mod:`tvm_arq.backends.resolve` and reads every per-architecture fact
(triples, presets, default features, toolchain, activation dtype) from the target backends
(:mod:`tvm_arq.backends`); this module keeps the public names where users import them.
"""

from __future__ import annotations

from .backends.base import Arch, CpuFeatures, TargetInfo
from .backends.resolve import PRESETS, arch_from_triple, get_backend, host_arch, host_cpu, resolve_target

__all__ = [
    "PRESETS",
    "Arch",
    "CpuFeatures",
    "TargetInfo",
    "arch_from_triple",
    "get_backend",
    "host_arch",
    "host_cpu",
    "resolve_target",
]
