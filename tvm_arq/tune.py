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
  loads only the CPU intrinsic modules (:func:`load_cpu_tensor_intrinsics`).
- The shipped x86 VNNI intrinsic ``dot_16x4_vnni`` fails LLVM 22 verification; see
  :func:`register_vnni_intrinsic`.
- Worker processes unpickle our builder function by module name, so they must be able to import
  ``tvm_arq`` even when it is not installed; ``PYTHONPATH`` is extended while tuning.
- MetaSchedule always runs the full trial budget, even when ``work_dir`` already holds records; we
  count the records per task and only run what is missing, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import functools
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tqdm.auto import tqdm
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.relax import pipeline as relax_pipeline
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from .kernels.schedules import ApplyDefaultSchedules
from .target import TargetInfo, resolve_target

__all__ = [
    "RPCSettings",
    "RunnerKind",
    "TuneConfig",
    "TuneError",
    "compile_tuned",
    "direct_session",
    "load_cpu_tensor_intrinsics",
    "open_database",
    "prepare_for_tuning",
    "register_kernel_rules",
    "register_vnni_intrinsic",
    "tune",
    "tuned_record_counts",
    "tuning_target",
    "work_dir_lock",
]

logger = logging.getLogger(__name__)

VNNI_INTRIN_NAME = "dot_16x4_vnni"
_WORKLOAD_FILE = "database_workload.json"
_RECORD_FILE = "database_tuning_record.json"


class TuneError(RuntimeError):
    """Tuning could not be set up or produced nothing usable."""


class RunnerKind(str, enum.Enum):
    """Where candidates are measured.

    - ``LOCAL``: on this machine (the target must be runnable here, see ``TargetInfo.is_host``).
    - ``RPC``: on a board registered with a TVM RPC tracker (needs :class:`RPCSettings`).
    """

    LOCAL = "local"
    RPC = "rpc"


@dataclass(frozen=True)
class RPCSettings:
    """How to reach boards through a TVM RPC tracker.

    Parameters
    ----------
    key
        Device key the boards registered with (``--key``).
    tracker_host, tracker_port
        Address of the tracker.
    session_timeout_sec
        Timeout of one measurement session.
    session_priority
        Priority of our requests at the tracker.
    max_workers
        Parallel sessions (boards) to use.
    wait_for_board_sec
        How long to wait for a board with ``key`` to register before giving up.
    direct
        ``tracker_host:tracker_port`` is the address of one board's RPC server, used without a
        tracker (``key`` is ignored); see :meth:`server`. A board serves one session at a time, so
        candidates are measured one after the other.
    """

    key: str
    tracker_host: str = "127.0.0.1"
    tracker_port: int = 9190
    session_timeout_sec: int = 120
    session_priority: int = 1
    max_workers: int = 1
    wait_for_board_sec: float = 10.0
    direct: bool = False

    @classmethod
    def server(cls, address: str, *, session_timeout_sec: int = 120) -> RPCSettings:
        """Measure on the board whose RPC server listens at ``address`` (``"host:port"``), no tracker.

        Raises
        ------
        ValueError
            If ``address`` is not ``host:port``.
        """
        host, sep, port = str(address).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"rpc must be 'host:port', got {address!r}")
        return cls(key="direct", tracker_host=host, tracker_port=int(port), session_timeout_sec=session_timeout_sec,
                   direct=True)

    @property
    def address(self) -> str:
        """``host:port`` of the tracker (or of the board, when :attr:`direct`)."""
        return f"{self.tracker_host}:{self.tracker_port}"


@dataclass
class TuneConfig:
    """Options of one tuning run.

    Parameters
    ----------
    trials
        Global trial budget over all tasks, *including* records already in ``work_dir``.
    work_dir
        Directory of the JSON database (``database_workload.json``, ``database_tuning_record.json``)
        and MetaSchedule's logs. Re-using it resumes a run.
    trials_per_task
        Cap per task (default: ``trials``).
    trials_per_iter
        Candidates measured per search iteration; records are persisted after each iteration, so a
        smaller value loses less work when a run is killed.
    runner
        :class:`RunnerKind` or a ready ``meta_schedule.runner.Runner`` object.
    rpc
        Tracker settings for ``RunnerKind.RPC``.
    num_threads
        Cores the tuned kernels may use (the target's ``num-cores``), also the number of search
        threads and build workers. ``None``: physical cores of this machine.
    builder_timeout_sec
        Per-batch build timeout (>= 120 s recommended on 2 cores).
    runner_timeout_sec
        Per-candidate measurement timeout.
    population_size
        Evolutionary search population; ``None`` picks ``clamp(8 * trials_per_iter, 64, 512)``,
        which keeps small budgets fast.
    number, repeat, min_repeat_ms
        Measurement settings of each candidate (see ``meta_schedule.runner.EvaluatorConfig``).
    cost_model
        MetaSchedule cost model name (``"xgb"`` uses xgboost).
    op_names
        Only tune tasks whose name contains one of these substrings (all tasks if empty).
    seed
        Random seed of the search.
    progress
        Show a tqdm progress bar.
    verbose
        Let MetaSchedule print its per-batch tables and cost-model lines on the console (they are
        always written to ``work_dir/logs``).
    """

    trials: int = 64
    work_dir: Path = field(default_factory=lambda: Path("tvm_arq_tuning"))
    trials_per_task: int | None = None
    trials_per_iter: int = 32
    runner: RunnerKind | ms.runner.Runner = RunnerKind.LOCAL
    rpc: RPCSettings | None = None
    num_threads: int | None = None
    builder_timeout_sec: float = 120.0
    runner_timeout_sec: float = 60.0
    population_size: int | None = None
    number: int = 3
    repeat: int = 1
    min_repeat_ms: int = 50
    cost_model: str = "xgb"
    op_names: tuple[str, ...] = ()
    seed: int | None = None
    progress: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        if not isinstance(self.runner, ms.runner.Runner):
            self.runner = RunnerKind(self.runner)
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if self.trials_per_task is not None and self.trials_per_task < 1:
            raise ValueError(f"trials_per_task must be >= 1, got {self.trials_per_task}")
        if self.trials_per_iter < 1:
            raise ValueError(f"trials_per_iter must be >= 1, got {self.trials_per_iter}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.runner is RunnerKind.RPC and self.rpc is None:
            raise ValueError("RunnerKind.RPC needs rpc=RPCSettings(key=...)")
        self.op_names = tuple(self.op_names)

    @property
    def threads(self) -> int:
        """Resolved :attr:`num_threads`."""
        return self.num_threads or _physical_cores()


# --------------------------------------------------------------------------------------------------
# environment helpers


def _physical_cores() -> int:
    try:
        import psutil

        return max(1, int(psutil.cpu_count(logical=False) or os.cpu_count() or 1))
    except ImportError:  # pragma: no cover - psutil is a dependency
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _worker_environment(num_threads: int) -> Iterator[None]:
    """Let MetaSchedule's popen workers import ``tvm_arq`` and use ``num_threads`` threads."""
    package_parent = str(Path(__file__).resolve().parent.parent)
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


_MS_LOGGER = "tvm.s_tir.meta_schedule"


@contextlib.contextmanager
def _meta_schedule_logging(verbose: bool) -> Iterator[None]:
    """Work around MetaSchedule's logger set-up and keep its console output quiet.

    ``get_loggers_from_work_dir`` (called for every ``TuneContext``) re-runs ``dictConfig`` listing
    every handler on the ``tvm.s_tir.meta_schedule`` logger by name; a handler somebody else attached
    (pytest's log capture, an application's own handler) has no name and makes it crash with
    ``'NoneType' object has no attribute 'format'``. Such handlers are detached while the loggers are
    created and re-attached afterwards. Unless ``verbose``, MetaSchedule's console handler is limited
    to warnings: its per-batch tables and xgboost lines still go to ``work_dir/logs``.
    """
    ms_logger = logging.getLogger(_MS_LOGGER)
    foreign = [h for h in ms_logger.handlers if not (h.get_name() or "").startswith(_MS_LOGGER)]
    for handler in foreign:
        ms_logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in foreign:
            if handler not in ms_logger.handlers:
                ms_logger.addHandler(handler)
        for handler in ms_logger.handlers:
            if handler.get_name() == f"{_MS_LOGGER}.console":
                handler.setLevel(logging.DEBUG if verbose else logging.WARNING)


# --------------------------------------------------------------------------------------------------
# tensor intrinsics

_intrin_lock = threading.Lock()
_vnni_registered = False


def load_cpu_tensor_intrinsics() -> None:
    """Register TVM's CPU tensor intrinsics (x86, Arm, RISC-V) without the 20 s CUDA ones.

    ``import tvm.s_tir.tensor_intrin`` (done by every MetaSchedule ``TuneContext``) parses all
    intrinsics, ~22 s of it for CUDA. If that package is not imported yet, a package object without
    its ``__init__`` is put in ``sys.modules`` and only the CPU submodules are imported; later imports
    of the package are then no-ops, and ``tvm.s_tir.tensor_intrin.<sub>`` imports still work.
    Idempotent. Also (re-)registers our VNNI intrinsic.
    """
    with _intrin_lock:
        name = "tvm.s_tir.tensor_intrin"
        if name not in sys.modules:
            import tvm.s_tir

            pkg_dir = Path(tvm.s_tir.__file__).resolve().parent / "tensor_intrin"
            pkg = types.ModuleType(name, "CPU tensor intrinsics only (loaded by tvm_arq.tune)")
            pkg.__path__ = [str(pkg_dir)]
            pkg.__package__ = name
            pkg.__file__ = str(pkg_dir / "__init__.py")
            sys.modules[name] = pkg
            tvm.s_tir.tensor_intrin = pkg  # type: ignore[attr-defined]
            started = time.perf_counter()
            for sub in ("dot_product_common", "x86", "arm_cpu", "riscv_cpu"):
                try:
                    module = importlib.import_module(f"{name}.{sub}")
                    setattr(pkg, sub, module)
                except Exception:  # noqa: BLE001 - a missing optional module must not stop tuning
                    logger.warning("could not import %s.%s", name, sub, exc_info=True)
            logger.debug("CPU tensor intrinsics loaded in %.1f s", time.perf_counter() - started)
    register_vnni_intrinsic()


def _vnni_desc_and_impl() -> tuple[tvm.tirx.PrimFunc, tvm.tirx.PrimFunc]:
    """Our u8 x s8 -> s32 16x4 dot product for AVX-512 VNNI (``vpdpbusd zmm``).

    Semantics: ``acc[lane] += sum_k int32(act[k]) * int32(wgt[lane, k])`` for 16 lanes and k < 4,
    with the 4 activation bytes shared by every lane. LLVM 22 declares
    ``llvm.x86.avx512.vpdpbusd.512`` as ``(<16 x i32>, <64 x i8>, <64 x i8>) -> <16 x i32>``, so both
    byte operands are passed as ``int8x64`` (the shipped intrinsic passes ``int32x16`` and fails LLVM
    verification).
    """
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def vnni_desc(
        act: T.Buffer((4,), "uint8", offset_factor=1),
        wgt: T.Buffer((16, 4), "int8", offset_factor=1),
        acc: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(acc[0:16], act[0:4], wgt[0:16, 0:4])
            T.writes(acc[0:16])
            for lane, kk in T.grid(16, 4):
                with T.sblock("update"):
                    v_lane, v_k = T.axis.remap("SR", [lane, kk])
                    acc[v_lane] = acc[v_lane] + T.Cast("int32", act[v_k]) * T.Cast("int32", wgt[v_lane, v_k])

    @T.prim_func(s_tir=True)
    def vnni_impl(
        act: T.Buffer((4,), "uint8", offset_factor=1),
        wgt: T.Buffer((16, 4), "int8", offset_factor=1),
        acc: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(acc[0:16], act[0:4], wgt[0:16, 0:4])
            T.writes(acc[0:16])
            # the 4 activation bytes as one i32, splat to 16 lanes, viewed as 64 bytes
            act_splat = T.reinterpret(
                T.broadcast(T.reinterpret(act.vload([0], "uint8x4"), dtype="int32"), 16), dtype="int8x64"
            )
            acc[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                acc.vload([0], "int32x16"),
                act_splat,
                wgt.vload([0, 0], "int8x64"),
                dtype="int32x16",
            )

    return vnni_desc, vnni_impl


def register_vnni_intrinsic() -> str:
    """(Re-)register ``dot_16x4_vnni`` with LLVM-22-correct ``int8x64`` operands.

    MetaSchedule's x86 VNNI schedule rule and the traces in a tuning database refer to the intrinsic
    by this name, so it must be registered in the tuning process *and* in the process that applies
    the database (:func:`compile_tuned` does it). Build workers do not need it: candidates reach
    them already tensorized. Idempotent; returns the intrinsic name.
    """
    global _vnni_registered
    if _vnni_registered:
        return VNNI_INTRIN_NAME
    from tvm.s_tir import TensorIntrin

    desc, impl = _vnni_desc_and_impl()
    TensorIntrin.register(VNNI_INTRIN_NAME, desc, impl, override=True)
    _vnni_registered = True
    logger.debug("registered %s (vpdpbusd.512 with int8x64 operands)", VNNI_INTRIN_NAME)
    return VNNI_INTRIN_NAME


# --------------------------------------------------------------------------------------------------
# builder functions (run in MetaSchedule's popen workers: keep imports light and local)


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
        from tvm_arq.deploy.export import make_linker

        path = os.path.join(tempfile.mkdtemp(prefix="tvm_arq_ms_"), "candidate.so")
        rt_mod.export_library(path, fcompile=make_linker(self.compiler, self.options))
        return path


# --------------------------------------------------------------------------------------------------
# targets, modules, databases


def tuning_target(target: Any, num_threads: int | None = None) -> Target:
    """The target used for tuning and for applying the database: ``target`` with ``num-cores``.

    Parameters
    ----------
    target
        Anything :func:`~tvm_arq.target.resolve_target` accepts.
    num_threads
        ``num-cores`` to set when the target has none (default: physical cores here).
    """
    info = resolve_target(target)
    config = info.to_dict()
    if "num-cores" not in config:
        config["num-cores"] = int(num_threads or _physical_cores())
    return Target(config)


def prepare_for_tuning(mod: IRModule, target: Any, params: Mapping[str, Any] | None = None) -> IRModule:
    """Bind parameters, legalize and fuse a Relax module (what MetaSchedule extracts tasks from).

    The pass sequence is the one ``meta_schedule.relax_integration.compile_relax`` runs before it
    applies a database (library dispatch, ``LegalizeOps``, ``AnnotateTIROpPattern``,
    ``FoldConstant``, ``FuseOps``, ``FuseTIR``), so the tuned workloads are found again at compile
    time. It is *not* idempotent (a second run adds an ``op_pattern`` attribute to the fused
    kernels, which changes their workload key): give :func:`tune` and :func:`compile_tuned` the
    same module and let each prepare it.
    """
    tgt = target if isinstance(target, Target) else resolve_target(target).target
    if params:
        mod = relax.transform.BindParams("main", _to_tensors(params))(mod)
    try:
        dispatch = list(relax_pipeline.library_dispatch_passes(tgt))
    except (ValueError, AttributeError):
        dispatch = []
    seq = tvm.transform.Sequential(
        [
            *dispatch,
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )
    with tgt, tvm.transform.PassContext(opt_level=3):
        return seq(mod)


def _to_tensors(params: Mapping[str, Any]) -> dict[str, tvm.runtime.Tensor]:
    out: dict[str, tvm.runtime.Tensor] = {}
    for name, value in params.items():
        out[name] = value if isinstance(value, tvm.runtime.Tensor) else tvm.runtime.tensor(np.asarray(value))
    return out


def _repair_json_lines(path: Path, n_workloads: int | None = None) -> int:
    """Drop lines that a killed process left half-written; returns the number of dropped lines."""
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    kept: list[str] = []
    dropped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if n_workloads is not None:
                ok = isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int)
                if not ok or not 0 <= obj[0] < n_workloads:
                    raise ValueError("record refers to an unknown workload")
        except (json.JSONDecodeError, ValueError):
            dropped += 1
            continue
        kept.append(line)
    if dropped or (text and not text.endswith("\n")):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    if dropped:
        logger.warning("%s: dropped %d damaged line(s) left by an interrupted run", path, dropped)
    return dropped


_LOCK_FILE = ".tvm_arq_tune.lock"
_held_locks: dict[Path, list[Any]] = {}  # work dir -> [RLock, open lock file or None, depth]
_held_locks_guard = threading.Lock()


@contextlib.contextmanager
def work_dir_lock(work_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``work_dir`` exclusively: one tuning database writer at a time, across processes and threads.

    MetaSchedule's ``JSONDatabase`` numbers workloads in memory and appends records that refer to those
    numbers, so two processes appending to one database attach records to each other's workloads. The
    lock (``fcntl.flock`` on ``work_dir/.tvm_arq_tune.lock``; the kernel drops it when a holder dies, even
    by SIGKILL) is re-entrant within a thread; a second process waits for the first to finish, then sees
    its records.
    """
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    with _held_locks_guard:
        entry = _held_locks.setdefault(work, [threading.RLock(), None, 0])
    with entry[0]:
        if entry[2] == 0:
            fh = open(work / _LOCK_FILE, "a+b")  # noqa: SIM115 - closed when the outermost holder exits
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("tuning database %s is in use by another process: waiting for it", work)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            entry[1] = fh
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0:
                fh, entry[1] = entry[1], None
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                fh.close()


def open_database(work_dir: str | os.PathLike[str]) -> ms.database.JSONDatabase:
    """Open (or create) the JSON tuning database in ``work_dir``, repairing a killed run's tail."""
    work = Path(work_dir)
    with work_dir_lock(work):  # never repair (rewrite) the files while another process appends to them
        wl_path, rec_path = work / _WORKLOAD_FILE, work / _RECORD_FILE
        _repair_json_lines(wl_path)
        n_workloads = (
            sum(1 for line in wl_path.read_text().splitlines() if line.strip()) if wl_path.exists() else 0
        )
        _repair_json_lines(rec_path, n_workloads)
        return ms.database.JSONDatabase(
            path_workload=str(wl_path), path_tuning_record=str(rec_path), allow_missing=True
        )


def _as_database(database: ms.database.Database | str | os.PathLike[str]) -> ms.database.Database:
    if isinstance(database, ms.database.Database):
        return database
    return open_database(database)


def tuned_record_counts(database: ms.database.Database, task_mods: Sequence[IRModule]) -> list[int]:
    """Number of tuning records (measured candidates, failed ones included) per task module."""
    if not task_mods:
        return []
    records = database.get_all_tuning_records()
    counts = [0] * len(task_mods)
    workloads = [database.commit_workload(m) if database.has_workload(m) else None for m in task_mods]
    for rec in records:
        for i, wl in enumerate(workloads):
            if wl is not None and (
                rec.workload.same_as(wl) or tvm_ffi.structural_equal(rec.workload.mod, wl.mod)
            ):
                counts[i] += 1
                break
    return counts


# --------------------------------------------------------------------------------------------------
# progress


@derived_object
class _ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Advance a tqdm bar after each measured batch and keep failure statistics."""

    def __init__(self, bar: Any, task_names: Sequence[str]) -> None:
        self.bar = bar
        self.task_names = list(task_names)
        self.measured = 0
        self.build_failures = 0
        self.run_failures = 0
        self.best: dict[str, float] = {}
        self.first_error: str | None = None

    def apply(
        self,
        task_scheduler: Any,
        task_id: int,
        measure_candidates: Sequence[Any],
        builder_results: Sequence[Any],
        runner_results: Sequence[Any],
    ) -> None:
        name = self.task_names[task_id] if 0 <= task_id < len(self.task_names) else str(task_id)
        for build, run in zip(builder_results, runner_results, strict=False):
            if build.error_msg is not None:
                self.build_failures += 1
                self.first_error = self.first_error or str(build.error_msg)
            elif run.error_msg is not None:
                self.run_failures += 1
                self.first_error = self.first_error or str(run.error_msg)
            elif run.run_secs:
                secs = float(np.mean([float(s) for s in run.run_secs]))
                self.best[name] = min(self.best.get(name, float("inf")), secs)
        self.measured += len(measure_candidates)
        # MetaSchedule may overshoot the budget with its last batch: the bar stops at its total
        # (``measured`` keeps the true count)
        total = self.bar.total
        self.bar.update(len(measure_candidates) if total is None else max(0, min(len(measure_candidates),
                                                                               total - self.bar.n)))
        postfix = {"task": name[:24], "failed": self.build_failures + self.run_failures}
        if name in self.best:
            postfix["best_us"] = round(self.best[name] * 1e6, 1)
        self.bar.set_postfix(postfix, refresh=False)


# --------------------------------------------------------------------------------------------------
# tuning


@dataclass
class _PlannedTask:
    context: ms.TuneContext
    weight: float
    name: str
    done: int
    remaining: int


def _check_runner(config: TuneConfig, info: TargetInfo) -> None:
    """Fail early when the local runner is asked to measure code this machine cannot run."""
    if config.runner is RunnerKind.LOCAL and not info.is_host:
        raise TuneError(
            f"Target {info} cannot run on this machine, so it cannot be measured with the local "
            "runner; use RunnerKind.RPC with a board (or an emulated one) registered at a tracker"
        )
    if config.runner is RunnerKind.RPC and info.cross_compiler and not shutil.which(info.cross_compiler):
        raise TuneError(
            f"Candidates for {info.arch.value} boards are linked with {info.cross_compiler!r}, which is "
            f"not on PATH; install it with `apt-get install {info.debian_package}`"
        )


def _rpc_preflight(rpc: RPCSettings) -> None:
    """Check that the tracker answers and serves ``rpc.key``.

    MetaSchedule's RPC runner asks the tracker for a session with ``request()``, which blocks forever
    when no board serves the key; fail with a clear message instead.
    """
    from tvm import rpc as tvm_rpc

    if rpc.direct:
        from .deploy.rpc import _probe

        try:
            _probe(rpc.tracker_host, rpc.tracker_port, max(1.0, rpc.wait_for_board_sec))
        except OSError as err:
            raise TuneError(f"The board's RPC server at {rpc.address} does not answer: {err}") from err
        return
    deadline = time.monotonic() + rpc.wait_for_board_sec
    try:
        tracker = tvm_rpc.connect_tracker(rpc.tracker_host, rpc.tracker_port)
    except Exception as err:  # noqa: BLE001 - TVM raises RuntimeError/OSError variants
        raise TuneError(
            f"Cannot reach the RPC tracker at {rpc.tracker_host}:{rpc.tracker_port}: {err}"
        ) from err
    while True:
        summary = tracker.summary()
        keys = {str(item.get("key", "")).split(":", 1)[-1] for item in summary.get("server_info", [])}
        keys |= {str(k) for k in summary.get("queue_info", {})}
        if rpc.key in keys:
            return
        if time.monotonic() >= deadline:
            raise TuneError(
                f"No board serves key {rpc.key!r} at the tracker {rpc.tracker_host}:{rpc.tracker_port} "
                f"(keys there: {sorted(k for k in keys if k) or 'none'})"
            )
        time.sleep(0.5)


def _make_runner(config: TuneConfig, info: TargetInfo) -> ms.runner.Runner:
    if isinstance(config.runner, ms.runner.Runner):
        return config.runner
    _check_runner(config, info)
    evaluator = ms.runner.EvaluatorConfig(
        number=config.number,
        repeat=config.repeat,
        min_repeat_ms=config.min_repeat_ms,
        enable_cpu_cache_flush=False,
    )
    if config.runner is RunnerKind.LOCAL:
        return ms.runner.LocalRunner(timeout_sec=config.runner_timeout_sec, evaluator_config=evaluator)
    assert config.rpc is not None
    _rpc_preflight(config.rpc)
    rpc_config = ms.runner.RPCConfig(
        tracker_host=config.rpc.tracker_host,
        tracker_port=config.rpc.tracker_port,
        tracker_key=config.rpc.key,
        session_priority=config.rpc.session_priority,
        session_timeout_sec=config.rpc.session_timeout_sec,
    )
    if config.rpc.direct:
        return ms.runner.RPCRunner(
            rpc_config=rpc_config, evaluator_config=evaluator, max_workers=1, f_create_session=direct_session
        )
    return ms.runner.RPCRunner(
        rpc_config=rpc_config, evaluator_config=evaluator, max_workers=config.rpc.max_workers
    )


def direct_session(rpc_config: ms.runner.RPCConfig) -> Any:
    """``f_create_session`` of the RPC runner for :attr:`RPCSettings.direct`: connect to the board itself.

    Runs in the runner's worker processes (``tracker_host``/``tracker_port`` hold the board's address).
    """
    from tvm import rpc as tvm_rpc

    return tvm_rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                           session_timeout=rpc_config.session_timeout_sec)


def _make_builder(config: TuneConfig, info: TargetInfo) -> ms.builder.Builder:
    f_export: Any = export_tar
    if config.runner is RunnerKind.RPC and info.cross_compiler is not None:
        f_export = _CrossExport(info.cross_compiler, tuple(info.extra_link_options))
    return ms.builder.LocalBuilder(
        max_workers=config.threads,
        timeout_sec=config.builder_timeout_sec,
        f_build=fast_build,
        f_export=f_export,
    )


def _plan_tasks(
    prepared: IRModule, target: Target, config: TuneConfig, database: ms.database.Database
) -> list[_PlannedTask]:
    extracted = ms.relax_integration.extract_tasks(prepared, target)
    if config.op_names:
        extracted = [t for t in extracted if any(op in t.task_name for op in config.op_names)]
    extracted = [t for t in extracted if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
    if not extracted:
        return []
    # kernels with a tvm_arq template (tensorized conv, depthwise) are searched in the template's space
    # only; MetaSchedule's generic rules would re-tile, re-inline or move the stages of the template
    templated = {id(t) for t in extracted if _is_templated(t.dispatched[0])}
    contexts, weights = [], []
    with _meta_schedule_logging(config.verbose):
        for group, space in (
            ([t for t in extracted if id(t) not in templated], "post-order-apply"),
            ([t for t in extracted if id(t) in templated], None),
        ):
            if not group:
                continue
            ctxs, ws = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=group,
                work_dir=str(config.work_dir),
                space=space if space is not None else _template_space(),
                strategy=_make_strategy(config),
                num_threads=config.threads,
                seed=config.seed,
            )
            contexts += ctxs
            weights += ws
    per_task_cap = config.trials_per_task or config.trials
    counts = tuned_record_counts(database, [ctx.mod for ctx in contexts])
    planned = []
    for ctx, weight, done in zip(contexts, weights, counts, strict=True):
        planned.append(
            _PlannedTask(
                context=ctx,
                weight=float(weight),
                name=str(ctx.task_name),
                done=done,
                remaining=max(0, per_task_cap - done),
            )
        )
    return planned


def register_kernel_rules() -> None:
    """Register the schedule templates of :mod:`tvm_arq.kernels` as MetaSchedule custom rules.

    Their kernels carry a ``schedule_rule`` block annotation naming a global function
    ``s_tir.meta_schedule.cpu.<rule>``, which must exist in the tuning process (and the tensor
    intrinsics they use in every process that applies a database). Idempotent.
    """
    from .kernels import arm, riscv, x86

    x86.register()
    arm.register()
    riscv.register()


def _is_templated(mod: IRModule) -> bool:
    from .kernels.schedules import rule_of

    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    return any(rule_of(f) is not None for f in funcs)


def _template_space() -> ms.space_generator.PostOrderApply:
    """Design space of a templated kernel: the template's custom rule alone, tile sizes mutated."""
    return ms.space_generator.PostOrderApply(
        sch_rules=[ms.schedule_rule.ApplyCustomRule()],
        postprocs=[ms.postproc.DisallowDynamicLoop()],
        mutator_probs={ms.mutator.MutateTileSize(): 1.0},
    )


def _make_strategy(config: TuneConfig) -> ms.search_strategy.EvolutionarySearch:
    per_iter = min(config.trials_per_iter, config.trials)
    population = config.population_size or int(np.clip(8 * per_iter, 64, 512))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population,
        init_min_unmeasured=min(50, max(1, population // 2)),
    )


def _random_args(func: tvm.tirx.PrimFunc, dev: Any) -> list[Any]:
    rng = np.random.default_rng(0)
    args = []
    for info in ms.arg_info.ArgInfo.from_prim_func(func):
        shape = [int(d) for d in info.shape]
        dtype = str(info.dtype)
        if dtype.startswith(("int", "uint")):
            arr = rng.integers(0, 100, shape).astype(dtype)
        else:
            arr = rng.normal(size=shape).astype(dtype)
        args.append(tvm.runtime.tensor(arr, dev))
    return args


def _seed_default_schedules(
    planned: Sequence[_PlannedTask], database: ms.database.Database, target: Target, config: TuneConfig
) -> None:
    """Record the default schedule of every templated task that has no record yet (one trial each).

    :mod:`tvm_arq.kernels` templates come with heuristic tile sizes; measured here and committed as
    the task's first record, they are a floor for the search: with a small budget per task, the
    best record is never worse than the untuned default.
    """
    from .kernels.schedules import default_schedule

    dev = tvm.cpu()
    for p in planned:
        if p.done or p.remaining <= 0:
            continue
        task_mod = p.context.mod
        funcs = [f for f in task_mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        if len(funcs) != 1:
            continue
        sch = default_schedule(funcs[0])
        if sch is None:
            continue
        try:
            rt_mod = fast_build(sch.mod, target, None)
            args = _random_args(funcs[0], dev)
            timer = rt_mod.time_evaluator(rt_mod.entry_name, dev, number=config.number, repeat=config.repeat,
                                          min_repeat_ms=config.min_repeat_ms)
            secs = [float(v) for v in timer(*args).results]
        except Exception as err:  # noqa: BLE001 - a seed is an optimization, never a reason to fail
            logger.warning("task %s: could not measure the default schedule: %s", p.name, err)
            continue
        database.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, database.commit_workload(task_mod), secs, target,
                                     ms.arg_info.ArgInfo.from_prim_func(funcs[0]))
        )
        p.done += 1
        p.remaining -= 1
        logger.info("task %s: default schedule %.1f us (seed record)", p.name, 1e6 * float(np.mean(secs)))


def _one_writer_per_work_dir(fn: Any) -> Any:
    """Run ``tune`` holding :func:`work_dir_lock` of ``config.work_dir``."""

    @functools.wraps(fn)
    def locked(mod: IRModule, target: Any, config: TuneConfig, params: Mapping[str, Any] | None = None) -> Any:
        with work_dir_lock(config.work_dir):
            return fn(mod, target, config, params)

    return locked


@_one_writer_per_work_dir
def tune(
    mod: IRModule,
    target: Any,
    config: TuneConfig,
    params: Mapping[str, Any] | None = None,
) -> ms.database.Database:
    """Tune every fused kernel of a Relax module with MetaSchedule.

    Parameters
    ----------
    mod
        Relax module; it is legalized and fused here if it is not already
        (see :func:`prepare_for_tuning`).
    target
        :class:`~tvm_arq.target.TargetInfo`, ``tvm.target.Target`` or any form
        :func:`~tvm_arq.target.resolve_target` accepts. ``num-cores`` is added from
        ``config.num_threads`` when missing.
    config
        Budget, work directory, runner, see :class:`TuneConfig`.
    params
        Optional weights to bind to ``main``'s parameters before tuning (pass the same ones to
        :func:`compile_tuned`).

    Returns
    -------
    meta_schedule.database.Database
        The JSON database in ``config.work_dir``. Records already there count towards the budget:
        a second call with the same ``work_dir`` only runs the missing trials (none if the budget is
        used up), which also resumes a run that was killed.

    Raises
    ------
    TuneError
        If the module has nothing to tune, or the target cannot be measured with the chosen runner.
    """
    info = resolve_target(target)
    tgt = tuning_target(info, config.threads)
    work_dir = config.work_dir.resolve()
    config = dataclasses.replace(config, work_dir=work_dir)
    database = open_database(work_dir)

    _check_runner(config, info)
    load_cpu_tensor_intrinsics()
    register_kernel_rules()
    prepared = prepare_for_tuning(mod, tgt, params)
    planned = _plan_tasks(prepared, tgt, config, database)
    if not planned:
        raise TuneError("No tasks to tune: the module has no TIR kernels after legalization and fusion")
    if config.runner is RunnerKind.LOCAL:
        _seed_default_schedules(planned, database, tgt, config)

    already = sum(p.done for p in planned)
    global_left = config.trials - already
    todo = [p for p in planned if p.remaining > 0]
    for p in planned:
        logger.info("task %-40s %4d record(s) in %s, %d to go", p.name, p.done, work_dir, p.remaining)
    if global_left <= 0 or not todo:
        logger.info(
            "all %d trial(s) of the budget are already recorded in %s; nothing to tune",
            min(already, config.trials),
            work_dir,
        )
        return database
    budget = min(global_left, sum(p.remaining for p in todo))
    per_task = max(p.remaining for p in todo)

    started = time.perf_counter()
    with _worker_environment(config.threads):  # the runner's and builder's workers inherit it
        runner = _make_runner(config, info)
        builder = _make_builder(config, info)
        cost_model = ms.cost_model.CostModel.create(
            config.cost_model, num_tuning_cores=config.threads, tree_method="auto"
        )
        bar = tqdm(
            total=budget,
            desc=f"tuning {len(todo)} task(s)",
            unit="trial",
            disable=not config.progress,
            dynamic_ncols=True,
        )
        progress = _ProgressCallback(bar, [p.name for p in todo])
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"), progress]
        try:
            ms.tune_tasks(
                tasks=[p.context for p in todo],
                task_weights=[p.weight for p in todo],
                work_dir=str(work_dir),
                max_trials_global=budget,
                max_trials_per_task=per_task,
                num_trials_per_iter=min(config.trials_per_iter, budget),
                builder=builder,
                runner=runner,
                database=database,
                cost_model=cost_model,
                measure_callbacks=callbacks,
            )
        finally:
            bar.close()
    elapsed = time.perf_counter() - started
    failed = progress.build_failures + progress.run_failures
    logger.info(
        "tuned %d candidate(s) in %.1f s (%.2f s/trial), %d failed; database: %s",
        progress.measured,
        elapsed,
        elapsed / max(1, progress.measured),
        failed,
        work_dir,
    )
    if progress.measured and failed == progress.measured:
        raise TuneError(
            f"Every one of {failed} candidate(s) failed to build or run; first error:\n{progress.first_error}"
        )
    if failed:
        logger.warning(
            "%d of %d candidate(s) failed; first error: %s",
            failed,
            progress.measured,
            next(iter((progress.first_error or "").strip().splitlines()[-1:]), "?"),
        )
    return database


def compile_tuned(
    mod: IRModule,
    target: Any,
    database: ms.database.Database | str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    *,
    num_threads: int | None = None,
) -> relax.VMExecutable:
    """Compile a Relax module with the best schedules from a tuning database.

    Parameters
    ----------
    mod
        The same Relax module that was given to :func:`tune`.
    target
        The tuning target (any form :func:`~tvm_arq.target.resolve_target` accepts).
    database
        The database returned by :func:`tune`, or its ``work_dir``.
    params
        The same weights that were passed to :func:`tune`, if any.
    num_threads
        ``num-cores`` to add when the target has none (use the tuning ``num_threads``).

    Returns
    -------
    relax.VMExecutable
        Kernels found in the database use their tuned schedule; the others are compiled untuned.
    """
    info = resolve_target(target)
    tgt = tuning_target(info, num_threads)
    db = _as_database(database)
    load_cpu_tensor_intrinsics()  # database traces may tensorize with dot_16x4_vnni etc.
    register_kernel_rules()
    # Same preparation as tune(): re-running AnnotateTIROpPattern on fused kernels adds an
    # "op_pattern" attribute that changes the workload key, so the database must be applied to
    # exactly this module (not handed to compile_relax, which would prepare it a second time).
    prepared = prepare_for_tuning(mod, tgt, params)
    stats: dict[str, int] = {}

    @tvm.transform.module_pass(opt_level=3, name="tvm_arq.ApplyTunedAndLower")
    def _apply_and_lower(module: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        module = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(module)
        # templated kernels the database does not cover get their default (tensorized) schedule
        module = ApplyDefaultSchedules()(module)
        kernels = [f for f in module.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        stats["kernels"] = len(kernels)
        stats["tuned"] = sum(
            1 for f in kernels if f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False))
        )
        # (relax.pipeline.dataflow_lower_passes fails for llvm in 0.27: the cpu_generic package does
        # not re-export them, so take them from its pipeline module)
        passes = [*cpu_pipeline.dataflow_lower_passes(tgt), *cpu_pipeline.finalize_passes(tgt)]
        return tvm.transform.Sequential(passes)(module)

    with tgt, db, tvm.transform.PassContext(opt_level=3):
        executable = relax.build(prepared, target=tgt, relax_pipeline=_apply_and_lower)
    logger.info(
        "compiled with tuned schedules for %d of %d kernel(s)", stats.get("tuned", 0), stats.get("kernels", 0)
    )
    if stats.get("kernels") and not stats.get("tuned"):
        logger.warning("no kernel of the module was found in the tuning database; the result is untuned")
    return executable
