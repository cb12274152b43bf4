"""Compilation targets: presets, familiar CLI strings and TVM 0.27 target dicts.

TVM 0.27 only accepts targets as JSON-like dicts (``{"kind": "llvm", "mtriple": ...}``); the CLI string
form (``"llvm -mtriple=aarch64-linux-gnu"``) that older TVM and most tutorials use raises. This module
accepts every form a user is likely to type and returns a :class:`TargetInfo` that also tells the rest of
the project what it needs to know about the target: architecture, int8 dot-product features, the
activation storage dtype that suits the hardware, and the toolchain needed to link a shared object.

Two traps of TVM 0.27 are handled here:

- ``"mcpu": "native"`` and a plain ``"llvm"`` both give a *generic* CPU (no AVX at all on x86); the host
  CPU is always resolved with :func:`tvm.target.codegen.llvm_get_system_cpu` instead.
- an unknown ``mcpu`` only logs an error and silently falls back to ``generic``; it is rejected here.
"""

from __future__ import annotations

import enum
import json
import logging
import platform
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm.target import Target, codegen

__all__ = [
    "Arch",
    "CpuFeatures",
    "PRESETS",
    "TargetInfo",
    "arch_from_triple",
    "host_arch",
    "host_cpu",
    "resolve_target",
]

logger = logging.getLogger(__name__)


class Arch(str, enum.Enum):
    """CPU architecture of a target."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"
    RISCV64 = "riscv64"


#: Canonical Linux triples used when the user gives only an architecture name.
_CANONICAL_TRIPLES: dict[str, str] = {
    "aarch64": "aarch64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
    "x86_64": "x86_64-linux-gnu",
    "amd64": "x86_64-linux-gnu",
}

_AARCH64_DEFAULT_MATTR: tuple[str, ...] = ("+neon",)
_RISCV64_DEFAULT_MCPU = "generic-rv64"
#: rv64gc: what every riscv64 Linux distribution (lp64d ABI) assumes.
_RISCV64_DEFAULT_MATTR: tuple[str, ...] = ("+m", "+a", "+f", "+d", "+c")


@dataclass(frozen=True)
class _Toolchain:
    cross_compiler: str
    debian_package: str
    extra_link_options: tuple[str, ...] = ()


_CROSS_TOOLCHAINS: dict[Arch, _Toolchain] = {
    Arch.AARCH64: _Toolchain("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
    # GCC's riscv64 toolchain implements sub-word atomics in libatomic.
    Arch.RISCV64: _Toolchain("riscv64-linux-gnu-g++", "g++-riscv64-linux-gnu", ("-latomic",)),
    Arch.X86_64: _Toolchain("x86_64-linux-gnu-g++", "g++-x86-64-linux-gnu"),
}

#: ISA extensions that decide whether code built for a target can run on this machine. A target that
#: enables one of them which the host CPU lacks is not runnable here (tuning-only LLVM features such as
#: ``fast-*`` are deliberately ignored).
_ISA_FEATURES: dict[Arch, tuple[str, ...]] = {
    Arch.X86_64: (
        "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "bmi", "bmi2", "avx512f", "avx512bw",
        "avx512dq", "avx512vl", "avx512cd", "avx512vnni", "avxvnni", "avx512bf16", "avx512fp16",
        "avx512vbmi", "avx512vbmi2", "avx512ifma", "avx512bitalg", "avx512vpopcntdq", "amx-tile",
        "amx-int8", "amx-bf16", "gfni", "vaes", "vpclmulqdq", "sse4a", "xop", "fma4",
    ),
    Arch.AARCH64: ("neon", "dotprod", "i8mm", "fullfp16", "bf16", "sve", "sve2", "sme"),
    Arch.RISCV64: ("m", "a", "f", "d", "c", "v", "zvfh"),
}  # fmt: skip


def _preset_dicts() -> dict[str, dict[str, Any]]:
    return {
        "host": {"kind": "llvm"},  # mcpu filled in with the real host CPU
        "aarch64": {
            "kind": "llvm",
            "mtriple": "aarch64-linux-gnu",
            "mattr": list(_AARCH64_DEFAULT_MATTR),
        },
        "aarch64-dotprod": {
            "kind": "llvm",
            "mtriple": "aarch64-linux-gnu",
            "mattr": [*_AARCH64_DEFAULT_MATTR, "+dotprod"],
        },
        "riscv64": {
            "kind": "llvm",
            "mtriple": "riscv64-linux-gnu",
            "mcpu": _RISCV64_DEFAULT_MCPU,
            "mattr": list(_RISCV64_DEFAULT_MATTR),
        },
        "riscv64-rvv": {
            "kind": "llvm",
            "mtriple": "riscv64-linux-gnu",
            "mcpu": _RISCV64_DEFAULT_MCPU,
            "mattr": [*_RISCV64_DEFAULT_MATTR, "+v"],
        },
        # Cascade Lake is the oldest Intel core with AVX-512 VNNI.
        "x86-vnni": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"},
    }


#: Preset names accepted by :func:`resolve_target`.
PRESETS: tuple[str, ...] = tuple(_preset_dicts())

_ACCEPTED_FORMS = (
    f"a preset name ({', '.join(PRESETS)}); "
    'a CLI-style string such as "llvm", "llvm -mtriple=aarch64", '
    '"llvm -mtriple=riscv64-linux-gnu -mattr=+m,+a,+f,+d,+c,+v -num-cores=4" '
    '(options "-key=value", "-key value" or a bare "-flag" for booleans; a preset name may replace '
    '"llvm"); a JSON object string; a TVM 0.27 target dict such as '
    '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}; or a tvm.target.Target'
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
        return _clean_export(self.target)

    def __str__(self) -> str:
        return json.dumps(self.to_dict())


# --------------------------------------------------------------------------------------------------
# host helpers


def host_arch() -> Arch:
    """Architecture of the machine this process runs on.

    Raises
    ------
    ValueError
        If the machine is none of x86-64, AArch64, riscv64.
    """
    return arch_from_triple(platform.machine())


def host_cpu() -> str:
    """LLVM name of this machine's CPU (e.g. ``"cascadelake"``), never ``"generic"`` if LLVM knows it."""
    return str(codegen.llvm_get_system_cpu())


# --------------------------------------------------------------------------------------------------
# parsing


def _fail(msg: str) -> ValueError:
    return ValueError(f"{msg}. Accepted target forms: {_ACCEPTED_FORMS}")


def _llvm_options() -> dict[str, str]:
    return {str(k): str(v) for k, v in tvm.target.target.TargetKind.options_from_name("llvm").items()}


def arch_from_triple(triple: str) -> Arch:
    """Architecture named by an LLVM triple (``aarch64-linux-gnu`` -> :attr:`Arch.AARCH64`).

    Raises
    ------
    ValueError
        For any architecture other than x86-64, AArch64 and riscv64.
    """
    head = triple.split("-", 1)[0].lower()
    if head in ("x86_64", "amd64"):
        return Arch.X86_64
    if head in ("aarch64", "arm64"):
        return Arch.AARCH64
    if head == "riscv64":
        return Arch.RISCV64
    raise _fail(f"Unsupported target triple {triple!r}: only x86_64, aarch64 and riscv64 CPUs are supported")


def _normalize_triple(triple: str) -> str:
    triple = triple.strip()
    if not triple:
        raise _fail("Empty -mtriple")
    return _CANONICAL_TRIPLES.get(triple.lower(), triple)


def _convert_value(key: str, raw: str | None, type_name: str) -> Any:
    """Convert the string value of a CLI option to the type TVM's llvm target kind declares."""
    if type_name == "bool":
        if raw is None:
            return True
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise _fail(f"Option -{key} expects a boolean, got {raw!r}")
    if raw is None:
        raise _fail(f"Option -{key} needs a value")
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise _fail(f"Option -{key} expects an integer, got {raw!r}") from None
    if type_name.startswith("Array"):
        return [item for item in (s.strip() for s in raw.split(",")) if item]
    return raw


def _parse_cli(spec: str) -> dict[str, Any]:
    """Parse ``"llvm -key=value ..."`` (or ``"<preset> -key=value ..."``) into a target dict."""
    try:
        tokens = shlex.split(spec)
    except ValueError as err:
        raise _fail(f"Malformed target string {spec!r}: {err}") from None
    if not tokens:
        raise _fail("Empty target string")
    head, rest = tokens[0], tokens[1:]
    presets = _preset_dicts()
    if head in presets:
        config = presets[head]
    elif head == "llvm":
        config = {"kind": "llvm"}
    elif head.startswith("-"):
        raise _fail(f"Target string {spec!r} must start with 'llvm' or a preset name")
    else:
        raise _fail(f"Unknown target preset or kind {head!r} in {spec!r} (presets: {', '.join(PRESETS)})")

    options = _llvm_options()
    i = 0
    while i < len(rest):
        tok = rest[i]
        if not tok.startswith("-") or tok in ("-", "--"):
            raise _fail(f"Unexpected token {tok!r} in target string {spec!r}")
        body = tok.lstrip("-")
        key, sep, value = body.partition("=")
        raw: str | None = value if sep else None
        if key not in options or key in ("kind", "host", "from_device", "target_device_type"):
            known = ", ".join(
                f"-{k}" for k in options if k not in ("kind", "host", "from_device", "target_device_type")
            )
            raise _fail(f"Unknown target option -{key} in {spec!r} (known llvm options: {known})")
        type_name = options[key]
        if raw is None and type_name != "bool":
            # "-key value" form
            if i + 1 >= len(rest) or rest[i + 1].startswith("-") and type_name != "int":
                raise _fail(f"Option -{key} needs a value in {spec!r}")
            raw = rest[i + 1]
            i += 1
        config[key] = _convert_value(key, raw, type_name)
        i += 1
    return config


def _clean_export(target: Target) -> dict[str, Any]:
    """Export a Target to a dict that the Target constructor accepts again."""
    options = _llvm_options()
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


def _as_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    try:
        return [str(v) for v in value]
    except TypeError:
        raise _fail(f"Target field {key!r} must be a list of strings, got {value!r}") from None


def _merge_mattr(defaults: tuple[str, ...], given: list[str]) -> list[str]:
    """Prepend default features unless the user mentions them (``+x`` or ``-x``)."""
    mentioned = {f.lstrip("+-") for f in given}
    return [f for f in defaults if f.lstrip("+-") not in mentioned] + given


def _normalize_config(config: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Validate a target dict and fill in defaults (host CPU, canonical triple, default features)."""
    config = dict(config)
    kind = str(config.get("kind", "llvm"))
    if kind != "llvm":
        raise _fail(f"Unsupported target kind {kind!r} in {source}: only CPU ('llvm') targets are supported")
    config["kind"] = "llvm"
    system_triple = str(codegen.llvm_get_system_triple())
    triple = config.get("mtriple")
    if triple is not None:
        triple = _normalize_triple(str(triple))
        config["mtriple"] = triple
    arch = arch_from_triple(triple) if triple else host_arch()
    host_like = arch == host_arch() and (
        triple is None or triple in (system_triple, _CANONICAL_TRIPLES[arch.value])
    )
    mcpu = config.get("mcpu")
    if mcpu in (None, "", "native") and host_like:
        config["mcpu"] = host_cpu()
        logger.debug("target %s: using host CPU %s", source, config["mcpu"])
    elif mcpu == "native":
        raise _fail(f"-mcpu=native in {source} only makes sense for the host, not for {triple}")

    if "mattr" in config:
        config["mattr"] = _as_list(config["mattr"], "mattr")
    for list_key in ("keys", "libs", "cl-opt"):
        if list_key in config:
            config[list_key] = _as_list(config[list_key], list_key)
    if arch == Arch.AARCH64:
        config["mattr"] = _merge_mattr(_AARCH64_DEFAULT_MATTR, config.get("mattr", []))
    elif arch == Arch.RISCV64:
        config.setdefault("mcpu", _RISCV64_DEFAULT_MCPU)
        config["mattr"] = _merge_mattr(_RISCV64_DEFAULT_MATTR, config.get("mattr", []))

    mcpu = config.get("mcpu")
    if mcpu and mcpu != "generic":
        check_triple = config.get("mtriple") or system_triple
        if not codegen.llvm_is_valid_cpu(str(mcpu), str(check_triple)):
            raise _fail(f"LLVM does not know -mcpu={mcpu} for {check_triple} (in {source})")
    return config


def _to_target(config: dict[str, Any], source: str) -> Target:
    try:
        return Target(config)
    except Exception as err:  # TVM raises ValueError/TVMError with its own message
        raise _fail(f"TVM rejected target {json.dumps(config)} (from {source}): {err}") from None


def _has(feature: str, target: Target) -> bool:
    return bool(codegen.target_has_features(feature, target))


def _runs_here(target: Target, arch: Arch) -> bool:
    """True if code built for ``target`` can run on this machine."""
    try:
        here = host_arch()
    except ValueError:
        return False
    if arch != here:
        return False
    host_target = Target({"kind": "llvm", "mcpu": host_cpu()})
    host_features = set(codegen.llvm_get_cpu_features(host_target))
    target_features = set(codegen.llvm_get_cpu_features(target))
    missing = [f for f in _ISA_FEATURES[arch] if f in target_features and f not in host_features]
    if missing:
        logger.debug("target needs %s which this CPU lacks", missing)
    return not missing


def _build_info(config: dict[str, Any], source: str) -> TargetInfo:
    target = _to_target(config, source)
    triple = str(config.get("mtriple") or codegen.llvm_get_system_triple())
    arch = arch_from_triple(triple)
    if arch == Arch.X86_64:
        features = CpuFeatures(has_vnni=_has("avx512vnni", target))
    elif arch == Arch.AARCH64:
        features = CpuFeatures(has_dotprod=_has("dotprod", target), has_i8mm=_has("i8mm", target))
    else:
        features = CpuFeatures(has_rvv=_has("v", target))
    try:
        same_arch = arch == host_arch()
    except ValueError:
        same_arch = False
    toolchain = None if same_arch else _CROSS_TOOLCHAINS[arch]
    info = TargetInfo(
        target=target,
        arch=arch,
        is_host=_runs_here(target, arch),
        features=features,
        act_dtype="uint8" if arch == Arch.X86_64 else "int8",
        triple=triple,
        cross_compiler=toolchain.cross_compiler if toolchain else None,
        debian_package=toolchain.debian_package if toolchain else None,
        extra_link_options=toolchain.extra_link_options if toolchain else (),
    )
    logger.debug("resolved target %s -> %s", source, info)
    return info


def resolve_target(spec: str | Mapping[str, Any] | Target | TargetInfo) -> TargetInfo:
    """Resolve any accepted target form to a :class:`TargetInfo`.

    Parameters
    ----------
    spec
        One of

        - a preset name: ``host``, ``aarch64``, ``aarch64-dotprod``, ``riscv64``, ``riscv64-rvv``,
          ``x86-vnni``;
        - a CLI-style string as older TVM accepted, e.g. ``"llvm"``, ``"llvm -mtriple=aarch64"``,
          ``"llvm -mtriple=riscv64-linux-gnu -mattr=+m,+a,+f,+d,+c,+v"``, ``"llvm -mcpu=cortex-a76
          -mtriple=aarch64-linux-gnu -num-cores=4"``; a preset name may stand in for ``llvm``
          (``"aarch64 -num-cores=4"``);
        - a JSON object string or a dict in TVM 0.27's target-dict form;
        - a :class:`tvm.target.Target` (kind ``llvm``);
        - a :class:`TargetInfo` (returned as is).

        ``host``, ``"llvm"`` and any target without a foreign ``-mtriple`` mean this machine's real
        CPU (``-mcpu`` is filled in from LLVM's host detection, never left generic). Bare
        architecture triples are normalized (``aarch64`` -> ``aarch64-linux-gnu``, ``riscv64`` ->
        ``riscv64-linux-gnu``). AArch64 gets ``+neon``; riscv64 gets ``-mcpu=generic-rv64`` and
        ``+m,+a,+f,+d,+c`` unless given (``+v`` only when asked for).

    Returns
    -------
    TargetInfo
        The resolved target.

    Raises
    ------
    ValueError
        For an unknown preset, a malformed string, an unknown option, a non-CPU kind or an unknown
        ``-mcpu``; the message lists the accepted forms.
    """
    if isinstance(spec, TargetInfo):
        return spec
    if isinstance(spec, Target):
        config = _clean_export(spec)
        source = f"Target {spec}"
    elif isinstance(spec, Mapping):
        config = {str(k): v for k, v in spec.items()}
        source = f"dict {spec!r}"
    elif isinstance(spec, str):
        text = spec.strip()
        source = repr(spec)
        if text.startswith("{"):
            try:
                config = json.loads(text)
            except json.JSONDecodeError as err:
                raise _fail(f"Malformed JSON target {spec!r}: {err}") from None
            if not isinstance(config, dict):
                raise _fail(f"JSON target {spec!r} is not an object")
        else:
            config = _parse_cli(text)
    else:
        raise _fail(f"Cannot resolve a target from {type(spec).__name__} {spec!r}")
    return _build_info(_normalize_config(config, source=source), source)
