"""Check, before uploading, that a library was built for the board's CPU architecture.

The board's architecture is read from its RPC server's own executable (``/proc/self/exe``, 20 bytes of
its ELF header matter; also right under qemu-user, which maps that path to the emulated program); the
library's from its ELF header and the target recorded beside it (``<library>.json``) or on the model.
Without this check a library for another CPU fails inside ``load_module`` on the board with
``RPCError: Error caught from RPC call:`` and nothing after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends.export import ELF_MACHINE, read_elf_machine

__all__ = ["arch_mismatch", "board_elf_machine", "machine_name"]

logger = logging.getLogger(__name__)

_NAMES = {machine: arch.value for arch, machine in ELF_MACHINE.items()}


def machine_name(machine: int) -> str:
    """``"aarch64"``, ``"riscv64"``, ``"x86_64"`` or ``"ELF machine <n>"``."""
    return _NAMES.get(machine, f"ELF machine {machine}")


def board_elf_machine(session: Any) -> int | None:
    """The ELF ``e_machine`` of the board's RPC server (``None`` if the board does not tell).

    Parameters
    ----------
    session
        A connected ``tvm.rpc.RPCSession``.
    """
    try:
        head = bytes(session.download("/proc/self/exe")[:20])
    except Exception as err:  # noqa: BLE001 - a board without /proc: no check, not an error
        logger.info("the board does not reveal its architecture (%s): not checked before upload", err)
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def arch_mismatch(lib_path: Path, target: Any, board_machine: int | None) -> str | None:
    """Why ``lib_path`` cannot run on a board of ``board_machine`` (``None`` if it can, or if unknown).

    Parameters
    ----------
    lib_path
        The linked shared object about to be uploaded.
    target
        What the library was built for: a :class:`~tvm_arq.target.TargetInfo`, the triple recorded in
        ``<library>.json``, or ``None``.
    board_machine
        :func:`board_elf_machine` of the board.
    """
    if board_machine is None:
        return None
    try:
        lib_machine = read_elf_machine(lib_path)
    except (OSError, ValueError):
        return None
    if lib_machine == board_machine:
        return None
    triple = getattr(target, "triple", target)
    built = machine_name(lib_machine) + (f" ({triple})" if triple else "")
    return (f"{lib_path.name} was built for {built} but the board is {machine_name(board_machine)}: "
            f"build the model for the board's target (e.g. --target {machine_name(board_machine)}); "
            "nothing was uploaded")


def check_before_upload(session: Any, lib_path: Path, target: Any,
                        call: Callable[[Callable[[], Any]], Any]) -> str | None:
    """:func:`arch_mismatch` of ``lib_path`` for the board behind ``session``; ``call`` runs the remote query
    (with the caller's time-out)."""
    return arch_mismatch(lib_path, target, call(lambda: board_elf_machine(session)))
