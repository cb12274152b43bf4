"""MetaSchedule autotuning of Relax modules, resumable, with a fast builder and a progress bar.

Typical use::

    from tvm_arq.tune import TuneConfig, tune, compile_tuned

    cfg = TuneConfig(trials=64, work_dir=Path("tuning/resnet"))
    db = tune(mod, "host", cfg)               # persists records in cfg.work_dir
    ex = compile_tuned(mod, "host", db)       # a relax VMExecutable

Traps of TVM 0.27's MetaSchedule worked around here (see ``/work/shared/notes/tvm-0.27-facts.md``):

- Tuning needs a legalized and fused module (``LegalizeOps`` + ``FuseOps`` + ``FuseTIR``), otherwise
  "No tasks to tune"; :func:`prepare_for_tuning` does exactly what ``compile_relax`` does before
  applying the database, so workload keys match.
- An ``llvm`` target without ``num-cores`` is rejected by MetaSchedule; :func:`tuning_target` adds it.
- Importing ``tvm.s_tir.tensor_intrin`` takes ~25 s (almost all of it CUDA intrinsics), and the default
  ``LocalBuilder`` does that in *every* fresh worker of *every* batch, so candidates time out. Our
  builder function never imports it (candidates arrive already tensorized), and the tuning process
  loads only the CPU intrinsic modules (:func:`tvm_arq.backends.load_cpu_tensor_intrinsics`).
- The shipped x86 VNNI intrinsic ``dot_16x4_vnni`` fails LLVM 22 verification; see
  :func:`tvm_arq.backends.register_vnni_intrinsic`.
- Worker processes unpickle our builder function by module name (``tvm_arq.tune.builder.fast_build``),
  so they must be able to import ``tvm_arq`` even when it is not installed; ``PYTHONPATH`` is extended
  while tuning (:func:`tvm_arq.tune.builder.worker_environment`).
- A ``KeyboardInterrupt`` raised while MetaSchedule's C++ scheduler calls back into Python aborts the
  process (``std::terminate``); SIGINT/SIGTERM only request a stop, taken between two measurement
  rounds (:mod:`~tvm_arq.tune.interrupts`), and :func:`tune` raises :class:`TuningInterrupted`.
- MetaSchedule always runs the full trial budget, even when ``work_dir`` already holds records; we
  count the records per task and only run what is missing, so an interrupted run resumes.

Modules: :mod:`~tvm_arq.tune.config` (options), :mod:`~tvm_arq.tune.database` (JSON database, locking,
repair), :mod:`~tvm_arq.tune.interrupts` (clean stops), :mod:`~tvm_arq.tune.builder` (worker builder), :mod:`~tvm_arq.tune.runner` (local / RPC
runners), :mod:`~tvm_arq.tune.search` (the search driver).
"""

from __future__ import annotations

from .builder import export_tar, fast_build
from .config import RPCSettings, RunnerKind, TuneConfig, TuneError
from .database import count_records, open_database, tuned_record_counts, work_dir_lock
from .interrupts import TuningInterrupted
from .runner import direct_session
from .search import compile_tuned, prepare_for_tuning, tune, tuning_target

__all__ = [
    "RPCSettings",
    "RunnerKind",
    "TuneConfig",
    "TuneError",
    "TuningInterrupted",
    "compile_tuned",
    "count_records",
    "direct_session",
    "export_tar",
    "fast_build",
    "open_database",
    "prepare_for_tuning",
    "tune",
    "tuned_record_counts",
    "tuning_target",
    "work_dir_lock",
]
