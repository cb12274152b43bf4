"""Exporting models for boards, deploying them over TVM RPC, and emulated boards for tests.

- :func:`deploy` (also ``tvm_arq.deploy``: the top-level package binds that name to this function)
  -> :class:`RemoteModel` (``run``, ``benchmark``) over ``rpc="host:port"`` or
  ``tracker="host:port", key=...``; failures raise :class:`DeployError`.
- :class:`EmulatedBoard`: the board's TVM runtime and our RPC server under qemu-user on loopback
  (``aarch64``, ``riscv64``, ``riscv64-rvv``); :func:`start_board` / :func:`stop_board` for the CLI
  (``python -m tvm_arq.deploy.boards``).
- :func:`export_library`: cross-link a compiled executable for its target.

Names are imported lazily, so ``python -m tvm_arq.deploy.boards`` does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BOARDS": "boards",
    "BoardError": "boards",
    "EmulatedBoard": "boards",
    "LocalTracker": "boards",
    "list_boards": "boards",
    "pipe_session": "boards",
    "setup_boards": "boards",
    "start_board": "boards",
    "stop_board": "boards",
    "ExportError": "export",
    "export_library": "export",
    "ModelMeta": "export",
    "load_model_meta": "export",
    "save_model": "export",
    "DeployError": "rpc",
    "RemoteModel": "rpc",
    "deploy": "rpc",
    "deploy_library": "rpc",
    "tracker_summary": "rpc",
    "RuntimeBundle": "runtime_build",
    "SetupError": "runtime_build",
    "ensure_runtime": "runtime_build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
