"""The abstract target backend: everything the project needs to know about one CPU architecture.

Each architecture (x86-64, AArch64, riscv64) is one module of :mod:`tvm_arq.backends` with one
:class:`TargetBackend` subclass; target resolution, the layout conversion, tuning, export, the board
runtimes and the emulated boards read the facts they need from it instead of branching on the
architecture. The data classes here are what a backend hands out (toolchain, runtime recipe, board
spec); :class:`Arch`, :class:`CpuFeatures` and :class:`TargetInfo` describe a resolved target.
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm.target import Target

from ..layoutspec import DepthwiseTarget, LayoutPlan, PackedConvTarget
from .schedules import register_rule

__all__ = [
    "PORTABLE_VECTOR_CONV",
    "Arch",
    "BoardSpec",
    "CpuFeatures",
    "RuntimeRecipe",
    "RuntimeSource",
    "TargetBackend",
    "TargetInfo",
    "Toolchain",
    "clean_export",
    "llvm_options",
]


class Arch(str, enum.Enum):
    """CPU architecture of a target (one :class:`TargetBackend` each)."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"
    RISCV64 = "riscv64"


#: Packed conv with the 16 lanes vectorized and no dot-product instruction (``kgroup=1``). LLVM lowers
#: it to the target's widening multiply-adds (RISC-V ``vwmacc``), so it is target neutral: riscv64 uses
#: it as its conv, AArch64 as the fallback when shifting activations into ``int8`` could overflow. The
#: rule name is historical (the kernels carry it as their ``schedule_rule`` annotation).
PORTABLE_VECTOR_CONV = PackedConvTarget(
    rule="arq_rvv_conv", lanes=16, kgroup=1, domain_dtype=None, intrin=None, sub_lanes=16,
    acc_budget=6, max_tile_w=8, epilogue_vector=8, vectorize_pad=False,
)


@dataclass(frozen=True)
class CpuFeatures:
    """Integer dot-product features of a target.

    Attributes
    ----------
    has_vnni
        x86 AVX-512 VNNI (``vpdpbusd``, u8 x s8 -> s32).
    has_dotprod
        AArch64 ``+dotprod`` (``sdot``/``udot``, s8 x s8 or u8 x u8).
    has_i8mm
        AArch64 ``+i8mm`` (``smmla``/``usmmla``).
    has_rvv
        RISC-V vector extension ``+v``.
    """

    has_vnni: bool = False
    has_dotprod: bool = False
    has_i8mm: bool = False
    has_rvv: bool = False


@dataclass(frozen=True)
class Toolchain:
    """The Debian cross toolchain of an architecture.

    Attributes
    ----------
    cross_compiler
        C++ driver that compiles and links for the architecture.
    debian_package
        Package that provides :attr:`cross_compiler`.
    sysroot
        The toolchain's sysroot (``qemu-<arch> -L`` prefix for emulation).
    extra_link_options
        Options appended to every link command (``-latomic`` on riscv64).
    """

    cross_compiler: str
    debian_package: str
    sysroot: str
    extra_link_options: tuple[str, ...] = ()


class RuntimeSource(str, enum.Enum):
    """Where a board's TVM runtime libraries come from."""

    #: the binary wheels of the installed ``apache-tvm`` / ``apache-tvm-ffi`` versions for the board
    WHEELS = "wheels"
    #: cross-built from the runtime sources the host wheels ship (no wheels exist for the board)
    CROSS_BUILD = "cross-build"


@dataclass(frozen=True)
class RuntimeRecipe:
    """How :mod:`tvm_arq.deploy.runtime_build` provides the TVM runtime of a board architecture.

    Attributes
    ----------
    arch
        Runtime architecture name (cache key, ``RuntimeBundle.arch``).
    source
        Wheels or a cross-build, see :class:`RuntimeSource`.
    toolchain
        Cross toolchain that builds the RPC server (and, for a cross-build, the runtime).
    wheel_platform
        ``pip download --platform`` of the wheels (:attr:`RuntimeSource.WHEELS` only).
    """

    arch: str
    source: RuntimeSource
    toolchain: Toolchain
    wheel_platform: str | None = None


@dataclass(frozen=True)
class BoardSpec:
    """How to emulate one kind of board.

    Attributes
    ----------
    name
        Board name (``aarch64``, ``riscv64``, ``riscv64-rvv``).
    runtime_arch
        Architecture of the TVM runtime it runs (a :attr:`RuntimeRecipe.arch`).
    qemu
        qemu-user executable.
    qemu_cpu
        ``-cpu`` option, if any.
    target
        The target preset whose code runs on this board.
    debian_package
        Package that provides :attr:`qemu`.
    """

    name: str
    runtime_arch: str
    qemu: str
    qemu_cpu: str | None
    target: str
    debian_package: str = "qemu-user"


@dataclass(frozen=True)
class TargetInfo:
    """A resolved compilation target and what the project needs to know about it.

    Attributes
    ----------
    target
        The TVM 0.27 target (always ``kind="llvm"``).
    arch
        CPU architecture.
    is_host
        Whether code built for this target can run on this machine.
    features
        Integer dot-product features, see :class:`CpuFeatures`.
    act_dtype
        Storage dtype that suits the hardware's int8 dot product: ``"uint8"`` on x86-64 (VNNI is
        u8 x s8), ``"int8"`` on AArch64 (``sdot`` is s8 x s8) and RISC-V.
    triple
        Normalized LLVM target triple.
    cross_compiler
        C++ driver that links shared objects for the target, ``None`` when the host's own compiler does.
    debian_package
        Debian package that provides :attr:`cross_compiler`, ``None`` for the host.
    extra_link_options
        Options appended to the link command (``-latomic`` on riscv64).
    """

    target: Target
    arch: Arch
    is_host: bool
    features: CpuFeatures
    act_dtype: str
    triple: str
    cross_compiler: str | None = None
    debian_package: str | None = None
    extra_link_options: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_vnni(self) -> bool:
        """Shortcut for ``features.has_vnni``."""
        return self.features.has_vnni

    @property
    def has_dotprod(self) -> bool:
        """Shortcut for ``features.has_dotprod``."""
        return self.features.has_dotprod

    @property
    def has_i8mm(self) -> bool:
        """Shortcut for ``features.has_i8mm``."""
        return self.features.has_i8mm

    @property
    def has_rvv(self) -> bool:
        """Shortcut for ``features.has_rvv``."""
        return self.features.has_rvv

    @property
    def is_cross(self) -> bool:
        """Whether linking needs a cross toolchain."""
        return self.cross_compiler is not None

    def to_dict(self) -> dict[str, Any]:
        """The target as a plain TVM 0.27 target dict (JSON-serializable)."""
        return clean_export(self.target)

    def __str__(self) -> str:
        return json.dumps(self.to_dict())


def llvm_options() -> dict[str, str]:
    """Options of TVM's ``llvm`` target kind: name -> type name."""
    return {str(k): str(v) for k, v in tvm.target.target.TargetKind.options_from_name("llvm").items()}


def clean_export(target: Target) -> dict[str, Any]:
    """Export a Target to a dict that the Target constructor accepts again."""
    options = llvm_options()
    out: dict[str, Any] = {}
    for key, value in target.export().items():
        key = str(key)
        if key not in options or key in ("from_device", "target_device_type"):
            continue  # computed attributes such as "feature.has_dotprod"
        if key == "tag" and not value:
            continue
        if key == "host":
            continue
        out[key] = _to_python(value)
    return out


def _to_python(value: Any) -> Any:
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_python(v) for k, v in value.items()}
    try:
        return [_to_python(v) for v in value]
    except TypeError:
        return str(value)


class TargetBackend(abc.ABC):
    """One CPU architecture: presets, toolchain, kernels, schedules, runtime and boards.

    Architecture-level facts (presets, toolchain, runtime, boards) need no target; the kernel choice
    (:meth:`layout_plan`) depends on the target's features, so it needs a backend *bound* to a
    resolved target, as :func:`tvm_arq.backends.get_backend` returns.

    Parameters
    ----------
    info
        The resolved target this backend serves, ``None`` for architecture-level use.
    """

    def __init__(self, info: TargetInfo | None = None) -> None:
        if info is not None and info.arch is not self.arch:
            raise ValueError(f"{type(self).__name__} serves {self.arch.value} targets, not {info.arch.value}")
        self._info = info

    @property
    def info(self) -> TargetInfo:
        """The resolved target this backend is bound to.

        Raises
        ------
        ValueError
            If the backend is not bound to a target.
        """
        return self._bound_info()

    def _bound_info(self) -> TargetInfo:
        if self._info is None:
            raise ValueError(f"{self!r} is not bound to a target; use tvm_arq.backends.get_backend(target)")
        return self._info

    # ---- identity and target resolution -----------------------------------------------------

    @property
    @abc.abstractmethod
    def arch(self) -> Arch:
        """The architecture this backend implements."""

    @property
    @abc.abstractmethod
    def triple_names(self) -> tuple[str, ...]:
        """Lower-case first components of the LLVM triples of this architecture (``x86_64``, ``amd64``)."""

    @property
    @abc.abstractmethod
    def canonical_triple(self) -> str:
        """Linux triple used when only the architecture is named (``aarch64-linux-gnu``)."""

    @property
    @abc.abstractmethod
    def presets(self) -> dict[str, dict[str, Any]]:
        """Target presets of this architecture: name -> TVM 0.27 target dict."""

    @property
    def default_mcpu(self) -> str | None:
        """``-mcpu`` set when a target of this architecture gives none (``None``: leave it)."""
        return None

    @property
    def default_mattr(self) -> tuple[str, ...] | None:
        """Features prepended to ``-mattr`` unless mentioned (``None``: leave ``-mattr`` as given)."""
        return None

    @property
    @abc.abstractmethod
    def isa_features(self) -> tuple[str, ...]:
        """LLVM CPU features that decide whether code built for a target runs on a given CPU."""

    @abc.abstractmethod
    def detect_features(self, target: Target) -> CpuFeatures:
        """Integer dot-product features of a target of this architecture."""

    @property
    @abc.abstractmethod
    def act_dtype(self) -> str:
        """Activation storage dtype that suits the architecture's int8 dot product."""

    # ---- toolchain and binaries ------------------------------------------------------------

    @property
    @abc.abstractmethod
    def toolchain(self) -> Toolchain:
        """Cross toolchain that links shared objects for this architecture on another host."""

    @property
    @abc.abstractmethod
    def elf_machine(self) -> int:
        """ELF ``e_machine`` value of this architecture's binaries."""

    # ---- kernels and schedules -------------------------------------------------------------

    @abc.abstractmethod
    def select_kernels(self) -> LayoutPlan:
        """Kernel configurations for :attr:`info`, from its features."""

    def layout_plan(self) -> LayoutPlan:
        """The kernels :attr:`info` uses (see :meth:`select_kernels`), their custom rules registered.

        Raises
        ------
        ValueError
            If the backend is not bound to a target.
        """
        self._bound_info()
        plan = self.select_kernels()
        self.register()
        for cfg in (plan.conv, plan.conv_fallback):
            register_rule("packed_conv", cfg)  # the fallback may be target neutral
        register_rule("depthwise", plan.depthwise)
        return plan

    def register_tensor_intrinsics(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Register the tensor intrinsics the kernels of this architecture tensorize with (idempotent)."""

    @property
    @abc.abstractmethod
    def conv_kernels(self) -> tuple[PackedConvTarget, ...]:
        """Packed conv configurations of this architecture (one MetaSchedule custom rule each)."""

    @property
    @abc.abstractmethod
    def depthwise_kernel(self) -> DepthwiseTarget:
        """Depthwise configuration of this architecture."""

    def register(self) -> None:
        """Register the tensor intrinsics and MetaSchedule custom rules of this architecture (idempotent)."""
        self.register_tensor_intrinsics()
        for cfg in self.conv_kernels:
            register_rule("packed_conv", cfg)
        register_rule("depthwise", self.depthwise_kernel)

    # ---- boards ------------------------------------------------------------------------------

    @property
    def runtime_recipe(self) -> RuntimeRecipe | None:
        """How the TVM runtime of a board of this architecture is provided (``None``: no boards)."""
        return None

    @property
    def boards(self) -> tuple[BoardSpec, ...]:
        """Emulated boards of this architecture."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.arch.value})"
