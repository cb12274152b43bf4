"""Builder of tuning candidates: functions MetaSchedule's popen workers run.

The workers unpickle these functions by module name (``tvm_arq.tune.builder.fast_build``), so they must
be able to import ``tvm_arq`` even when it is not installed: :func:`worker_environment` extends
``PYTHONPATH`` while tuning. Keep the imports of the builder functions light and local: a worker never
imports ``tvm.s_tir.tensor_intrin`` (candidates arrive already tensorized).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm.ir import IRModule
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..target import TargetInfo
from .config import RunnerKind, TuneConfig
from .interrupts import ignore_sigint

__all__ = ["export_tar", "fast_build", "make_builder", "worker_environment"]

#: the directory holding the ``tvm_arq`` package (what the workers need on ``PYTHONPATH``)
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def worker_environment(num_threads: int) -> Iterator[None]:
    """Let MetaSchedule's popen workers import ``tvm_arq`` and use ``num_threads`` threads."""
    package_parent = str(_PACKAGE_PARENT)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TVM_NUM_THREADS")}
    paths = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p]
    if package_parent not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([package_parent, *paths])
    os.environ["TVM_NUM_THREADS"] = str(num_threads)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fast_build(mod: IRModule, target: Target, _params: Mapping[str, Any] | None) -> tvm.runtime.Module:
    """Build one candidate without importing ``tvm.s_tir.tensor_intrin``."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def export_tar(rt_mod: tvm.runtime.Module) -> str:
    """Archive a built candidate (the local runner links it when loading)."""
    from tvm.support.tar import tar

    path = os.path.join(tempfile.mkdtemp(prefix="tvm_arq_ms_"), "candidate.tar")
    rt_mod.export_library(path, fcompile=tar)
    return path


@dataclass(frozen=True)
class _CrossExport:
    """Picklable ``f_export`` that links a candidate with a cross toolchain (for RPC boards)."""

    compiler: str
    options: tuple[str, ...] = ()

    def __call__(self, rt_mod: tvm.runtime.Module) -> str:
        from tvm_arq.backends.export import make_linker

        path = os.path.join(tempfile.mkdtemp(prefix="tvm_arq_ms_"), "candidate.so")
        rt_mod.export_library(path, fcompile=make_linker(self.compiler, self.options))
        return path


def make_builder(config: TuneConfig, info: TargetInfo) -> ms.builder.Builder:
    """Local builder of candidates: :func:`fast_build`, then a tar (local runner) or a cross-linked ``.so``."""
    f_export: Any = export_tar
    if config.runner is RunnerKind.RPC and info.cross_compiler is not None:
        f_export = _CrossExport(info.cross_compiler, tuple(info.extra_link_options))
    return ms.builder.LocalBuilder(
        max_workers=config.threads,
        timeout_sec=config.builder_timeout_sec,
        f_build=fast_build,
        f_export=f_export,
        initializer=ignore_sigint,  # a Ctrl-C reaches the process group: the tuning process handles it
    )

