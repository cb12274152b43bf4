"""Export compiled Relax executables as shared objects (or tar archives) for a target.

A compiled executable (the result of ``tvm.compile`` / ``relax.build``) holds LLVM object code for the
target; turning it into a loadable ``.so`` needs a linker for the *target's* architecture. This module
picks the right one from a :class:`~tvm_arq.target.TargetInfo`:

- host targets use the host's C++ compiler (TVM's default),
- other architectures use their backend's Debian cross toolchain (:attr:`TargetBackend.toolchain
  <tvm_arq.backends.base.TargetBackend.toolchain>`, e.g. ``riscv64-linux-gnu-g++`` with ``-latomic``),
- a ``.tar`` path needs no linker at all (the objects are archived; a TVM RPC server links them).

The link command puts the extra libraries *after* the objects, so ``-latomic`` also works with linkers
that default to ``--as-needed``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tvm.support import cc as tvm_cc

from .base import Arch, TargetInfo
from .registry import all_backends
from .resolve import arch_from_triple, resolve_target

__all__ = [
    "ELF_MACHINE",
    "ExportError",
    "export_library",
    "make_linker",
    "read_elf_machine",
]

logger = logging.getLogger(__name__)

#: ELF ``e_machine`` value of each architecture.
ELF_MACHINE: dict[Arch, int] = {b.arch: b.elf_machine for b in all_backends()}


class ExportError(RuntimeError):
    """Exporting a library failed (missing toolchain, link error, target mismatch)."""


class _Exportable(Protocol):
    def export_library(self, file_name: str, **kwargs: Any) -> Any: ...


def _missing_compiler_error(compiler: str, package: str | None) -> ExportError:
    hint = (
        f"install it with `apt-get install {package}` (Debian/Ubuntu; `make apt` does it)"
        if package
        else "install a C++ compiler (e.g. `apt-get install g++`)"
    )
    return ExportError(f"Linker {compiler!r} was not found on PATH; {hint}.")


def make_linker(
    compiler: str, options: Sequence[str] = (), debian_package: str | None = None
) -> Callable[..., None]:
    """Build an ``fcompile`` function for ``export_library`` that links with ``compiler``.

    Parameters
    ----------
    compiler
        C/C++ driver to link with, e.g. ``"riscv64-linux-gnu-g++"``.
    options
        Extra options appended after the object files (e.g. ``("-latomic",)``).
    debian_package
        Package named in the error message if ``compiler`` disappears from ``PATH``.

    Returns
    -------
    Callable
        ``f(output, objects, options=None)`` with the ``output_format`` and ``get_target_triple``
        attributes that TVM's ``export_library`` looks for.
    """
    extra = list(options)

    def link(output: str, objects: Sequence[str] | str, options: Sequence[str] | None = None) -> None:
        exe = shutil.which(compiler)
        if exe is None:
            raise _missing_compiler_error(compiler, debian_package)
        objs = [objects] if isinstance(objects, str) else list(objects)
        cmd = [exe, "-shared", "-fPIC", "-o", str(output), *objs, *(options or ()), *extra]
        logger.debug("linking: %s", " ".join(cmd))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            out = proc.stdout.decode("utf-8", errors="replace")
            raise ExportError(f"Linking {output} failed:\n{out}\nCommand line: {' '.join(cmd)}")

    def get_target_triple() -> str | None:
        exe = shutil.which(compiler)
        if exe is None:
            return None
        proc = subprocess.run([exe, "-dumpmachine"], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None
        return proc.stdout.strip() or None

    link.output_format = "so"  # type: ignore[attr-defined]
    link.get_target_triple = get_target_triple  # type: ignore[attr-defined]
    return link


def read_elf_machine(path: str | os.PathLike[str]) -> int:
    """Return the ``e_machine`` field of an ELF file (see :data:`ELF_MACHINE`).

    Raises
    ------
    ValueError
        If the file is not an ELF file.
    """
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    endian = "<" if header[5] == 1 else ">"
    return int(struct.unpack_from(endian + "H", header, 18)[0])


def _module_triples(executable: Any) -> list[str]:
    """Best effort: the LLVM triples of the object code inside an executable."""
    mod = getattr(executable, "mod", executable)
    triples: list[str] = []
    try:
        for sub in mod._collect_dso_modules():
            if sub.kind != "llvm":
                continue
            target_json = str(sub.get_function("_get_target_string")())
            triples.append(target_json)
    except Exception:  # noqa: BLE001 - purely diagnostic
        logger.debug("could not inspect the executable's modules", exc_info=True)
    return triples


def _check_arch(executable: Any, info: TargetInfo) -> None:
    """Raise if the executable was compiled for a different architecture than ``info``."""
    for target_str in _module_triples(executable):
        try:
            triple = json.loads(target_str).get("mtriple") if target_str.startswith("{") else None
        except json.JSONDecodeError:
            triple = None
        if not triple:
            continue
        try:
            arch = arch_from_triple(str(triple))
        except ValueError:
            continue
        if arch != info.arch:
            raise ExportError(
                f"The executable was compiled for {triple} ({arch.value}) but export was asked for "
                f"{info.arch.value}; compile with the same target you export for"
            )


def export_library(
    executable: _Exportable,
    path: str | os.PathLike[str],
    info: TargetInfo | Any,
    *,
    workspace_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Export a compiled Relax executable for ``info``'s target.

    Parameters
    ----------
    executable
        Result of ``tvm.compile`` / ``relax.build`` / ``compile_tuned`` (anything with
        ``export_library``).
    path
        Output file. A ``.tar`` suffix archives the object files without linking; anything else is
        linked into a shared object.
    info
        Target the executable was compiled for (a :class:`TargetInfo` or any form
        :func:`~tvm_arq.target.resolve_target` accepts).
    workspace_dir
        Directory for intermediate object files (a temporary one by default).

    Returns
    -------
    pathlib.Path
        The absolute path of the written file.

    Raises
    ------
    ExportError
        If the required (cross) linker is not on ``PATH`` (the message names the executable and the
        Debian package to install), if linking fails, or if the executable was compiled for another
        architecture.
    """
    info = resolve_target(info)
    out = Path(path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_arch(executable, info)
    kwargs: dict[str, Any] = {}
    if workspace_dir is not None:
        kwargs["workspace_dir"] = str(workspace_dir)

    if out.suffix == ".tar":
        logger.info("archiving %s objects into %s (no linker)", info.arch.value, out)
        executable.export_library(str(out), **kwargs)
    elif info.cross_compiler is not None:
        if shutil.which(info.cross_compiler) is None:
            raise _missing_compiler_error(info.cross_compiler, info.debian_package)
        fcompile = make_linker(info.cross_compiler, info.extra_link_options, info.debian_package)
        logger.info("linking %s with %s", out, info.cross_compiler)
        executable.export_library(str(out), fcompile=fcompile, **kwargs)
    else:
        host_cc = tvm_cc.get_cc()
        if host_cc is None or shutil.which(host_cc) is None:
            raise _missing_compiler_error(host_cc or "g++", "g++")
        if info.extra_link_options:
            fcompile = make_linker(host_cc, info.extra_link_options, "g++")
            executable.export_library(str(out), fcompile=fcompile, **kwargs)
        else:
            try:
                executable.export_library(str(out), **kwargs)
            except RuntimeError as err:
                if isinstance(err, ExportError):
                    raise
                raise ExportError(f"Linking {out} with {host_cc} failed: {err}") from err
        logger.info("linked %s with the host compiler %s", out, host_cc)

    if not out.exists():
        raise ExportError(f"export_library reported success but {out} was not written")
    return out
