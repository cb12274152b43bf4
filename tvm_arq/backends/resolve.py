"""Compilation targets: presets, familiar CLI strings and TVM 0.27 target dicts.

TVM 0.27 only accepts targets as JSON-like dicts (``{"kind": "llvm", "mtriple": ...}``); the CLI string
form (``"llvm -mtriple=aarch64-linux-gnu"``) that older TVM and most tutorials use raises. This module
accepts every form a user is likely to type and returns a :class:`TargetInfo` that also tells the rest of
the project what it needs to know about the target: architecture, int8 dot-product features, the
activation storage dtype that suits the hardware, and the toolchain needed to link a shared object.
Every per-architecture fact (triples, presets, default ``-mcpu``/``-mattr``, ISA features, toolchain,
activation dtype) comes from the architecture's :class:`~tvm_arq.backends.base.TargetBackend`.

Two traps of TVM 0.27 are handled here:

- ``"mcpu": "native"`` and a plain ``"llvm"`` both give a *generic* CPU (no AVX at all on x86); the host
  CPU is always resolved with :func:`tvm.target.codegen.llvm_get_system_cpu` instead.
- an unknown ``mcpu`` only logs an error and silently falls back to ``generic``; it is rejected here.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
from collections.abc import Mapping
from typing import Any

from tvm.target import Target, codegen

from .base import Arch, TargetBackend, TargetInfo, clean_export, llvm_options
from .registry import all_backends, backend_for_arch, backend_for_triple

__all__ = [
    "PRESETS",
    "arch_from_triple",
    "get_backend",
    "host_arch",
    "host_cpu",
    "resolve_target",
]

logger = logging.getLogger(__name__)


def _canonical_triples() -> dict[str, str]:
    """Canonical Linux triples used when the user gives only an architecture name."""
    return {name: b.canonical_triple for b in all_backends() for name in b.triple_names}


def _preset_dicts() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {"host": {"kind": "llvm"}}  # mcpu filled in with the real host CPU
    for backend in all_backends():
        presets.update(backend.presets)
    return presets


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


def arch_from_triple(triple: str) -> Arch:
    """Architecture named by an LLVM triple (``aarch64-linux-gnu`` -> :attr:`Arch.AARCH64`).

    Raises
    ------
    ValueError
        For any architecture other than x86-64, AArch64 and riscv64.
    """
    backend = backend_for_triple(triple)
    if backend is not None:
        return backend.arch
    known = ", ".join(b.arch.value for b in all_backends())
    raise _fail(f"Unsupported target triple {triple!r}: only {known} CPUs are supported")


def _normalize_triple(triple: str) -> str:
    triple = triple.strip()
    if not triple:
        raise _fail("Empty -mtriple")
    return _canonical_triples().get(triple.lower(), triple)


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

    options = llvm_options()
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
    backend = backend_for_arch(arch)
    host_like = arch == host_arch() and (
        triple is None or triple in (system_triple, backend.canonical_triple)
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
    if backend.default_mcpu is not None:
        config.setdefault("mcpu", backend.default_mcpu)
    if backend.default_mattr is not None:
        config["mattr"] = _merge_mattr(backend.default_mattr, config.get("mattr", []))

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
    missing = [f for f in backend_for_arch(arch).isa_features if f in target_features and f not in host_features]
    if missing:
        logger.debug("target needs %s which this CPU lacks", missing)
    return not missing


def _build_info(config: dict[str, Any], source: str) -> TargetInfo:
    target = _to_target(config, source)
    triple = str(config.get("mtriple") or codegen.llvm_get_system_triple())
    arch = arch_from_triple(triple)
    backend = backend_for_arch(arch)
    features = backend.detect_features(target)
    try:
        same_arch = arch == host_arch()
    except ValueError:
        same_arch = False
    toolchain = None if same_arch else backend.toolchain
    info = TargetInfo(
        target=target,
        arch=arch,
        is_host=_runs_here(target, arch),
        features=features,
        act_dtype=backend.act_dtype,
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
        config = clean_export(spec)
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


def get_backend(target: str | Mapping[str, Any] | Target | TargetInfo) -> TargetBackend:
    """The backend of a target, bound to it (so that :meth:`~TargetBackend.layout_plan` can use its features).

    Parameters
    ----------
    target
        Anything :func:`resolve_target` accepts, or a :class:`TargetInfo`.
    """
    info = resolve_target(target)
    return type(backend_for_arch(info.arch))(info)
