"""The registered target backends, one per architecture, selected by architecture or triple.

Adding an architecture: a :class:`~tvm_arq.backends.base.TargetBackend` subclass in its own module, an
:class:`~tvm_arq.backends.base.Arch` member, and one line in :data:`_BACKENDS` below.
"""

from __future__ import annotations

import functools

from .aarch64 import AArch64Backend
from .base import Arch, BoardSpec, RuntimeRecipe, TargetBackend
from .riscv64 import RiscV64Backend
from .x86_64 import X86Backend

__all__ = [
    "all_backends",
    "backend_class",
    "backend_for_arch",
    "backend_for_triple",
    "board_specs",
    "register_kernel_rules",
    "runtime_recipe",
]

#: The backends, in the order their presets and boards are listed.
_BACKENDS: tuple[type[TargetBackend], ...] = (AArch64Backend, RiscV64Backend, X86Backend)


@functools.cache
def _by_arch() -> dict[Arch, TargetBackend]:
    return {cls.arch: cls() for cls in _BACKENDS}  # type: ignore[misc]


def all_backends() -> tuple[TargetBackend, ...]:
    """One unbound instance of every backend (architecture-level facts only)."""
    return tuple(_by_arch().values())


def backend_class(arch: Arch | str) -> type[TargetBackend]:
    """The backend class of an architecture."""
    return type(backend_for_arch(arch))


def backend_for_arch(arch: Arch | str) -> TargetBackend:
    """The unbound backend of an architecture.

    Raises
    ------
    ValueError
        For an architecture without a backend.
    """
    try:
        return _by_arch()[Arch(arch)]
    except (KeyError, ValueError):
        raise ValueError(f"no target backend for architecture {arch!r}; "
                         f"known: {', '.join(a.value for a in _by_arch())}") from None


def backend_for_triple(triple: str) -> TargetBackend | None:
    """The unbound backend whose architecture an LLVM triple names (``None`` if none does)."""
    head = triple.split("-", 1)[0].lower()
    for backend in all_backends():
        if head in backend.triple_names:
            return backend
    return None


def board_specs() -> dict[str, BoardSpec]:
    """Every emulated board: name -> spec."""
    return {spec.name: spec for backend in all_backends() for spec in backend.boards}


def runtime_recipe(name: str) -> RuntimeRecipe | None:
    """The runtime recipe of a runtime architecture or of a board name (``riscv64-rvv`` -> riscv64)."""
    arch = board_specs()[name].runtime_arch if name in board_specs() else name
    for backend in all_backends():
        recipe = backend.runtime_recipe
        if recipe is not None and recipe.arch == arch:
            return recipe
    return None


def register_kernel_rules() -> None:
    """Register the tensor intrinsics and MetaSchedule custom rules of every backend (idempotent).

    The kernels carry a ``schedule_rule`` block annotation naming a global function
    ``s_tir.meta_schedule.cpu.<rule>``, which must exist in the tuning process (and the tensor
    intrinsics they use in every process that applies a database).
    """
    for backend in all_backends():
        backend.register()
