"""The search driver: extract the tasks of a Relax module, tune them with MetaSchedule, apply the records.

:func:`tune` plans the tasks (templated kernels searched in their template's space only), seeds each
templated task with its default schedule, runs the missing trials; :func:`compile_tuned` compiles the
module with the best records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tqdm.auto import tqdm
from tvm import relax, s_tir
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.relax import pipeline as relax_pipeline
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..backends import (
    ApplyDefaultSchedules,
    default_schedule,
    load_cpu_tensor_intrinsics,
    register_kernel_rules,
    rule_of,
)
from ..target import resolve_target
from .builder import fast_build, worker_environment
from .builder import make_builder as _make_builder
from .config import RunnerKind, TuneConfig, TuneError, physical_cores
from .database import as_database, count_records, open_database, tuned_record_counts, work_dir_lock
from .interrupts import StopCheck, StopRequest, TuningInterrupted, _StopSearch, stop_on_signals
from .runner import check_runner
from .runner import make_runner as _make_runner

__all__ = ["compile_tuned", "prepare_for_tuning", "tune", "tuning_target"]

logger = logging.getLogger(__name__)

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
# targets and modules


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
        config["num-cores"] = int(num_threads or physical_cores())
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


def _plan_tasks(
    prepared: IRModule, target: Target, config: TuneConfig, database: ms.database.Database
) -> list[_PlannedTask]:
    extracted = ms.relax_integration.extract_tasks(prepared, target)
    if config.op_names:
        extracted = [t for t in extracted if any(op in t.task_name for op in config.op_names)]
    extracted = [t for t in extracted if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
    # a qmatmul kernel keeps its default schedule (applied at compile time): MetaSchedule's generic rules
    # fail on it (reverse_compute_at of the epilogue, which also reads the root-level row/column sums)
    extracted = [t for t in extracted if not _is_untunable(t.dispatched[0])]
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



#: kernels (``arq.op``) MetaSchedule's generic CPU rules cannot schedule; compiled with their default schedule
UNTUNABLE_OPS = ("qmatmul",)


def _is_untunable(mod: IRModule) -> bool:
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    return any(f.attrs is not None and str(f.attrs.get("arq.op", "")) in UNTUNABLE_OPS for f in funcs)


def _is_templated(mod: IRModule) -> bool:
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
    planned: Sequence[_PlannedTask],
    database: ms.database.Database,
    target: Target,
    config: TuneConfig,
    stop: StopRequest,
) -> None:
    """Record the default schedule of every task that has no record yet (one trial each).

    :mod:`tvm_arq.backends` templates come with heuristic tile sizes; a generic kernel (add, pooling,
    quantize ...) without a template is seeded with its unscheduled form, which is what an untuned build
    runs. Measured here and committed as the task's first record, they are a floor for the search: with a
    small budget per task, the best record is never worse than the untuned default (one trial of the
    generic rules once left a residual add 4x slower than untuned).
    """
    dev = tvm.cpu()
    for p in planned:
        stop.check()
        if p.done or p.remaining <= 0:
            continue
        task_mod = p.context.mod
        funcs = [f for f in task_mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        if len(funcs) != 1:
            continue
        sch = default_schedule(funcs[0])
        if sch is None:
            sch = s_tir.Schedule(funcs[0])  # the unscheduled kernel (empty trace)
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
    """Run ``tune`` holding :func:`work_dir_lock` of ``config.work_dir``, stopping cleanly on SIGINT/SIGTERM.

    A signal only requests a stop (:mod:`tvm_arq.tune.interrupts`); the search leaves at the next
    check (between two measurement rounds) and :class:`TuningInterrupted` is raised with the number of
    records the database keeps.
    """

    @functools.wraps(fn)
    def locked(mod: IRModule, target: Any, config: TuneConfig, params: Mapping[str, Any] | None = None) -> Any:
        stop = StopRequest()
        with work_dir_lock(config.work_dir), stop_on_signals(stop):
            try:
                database = fn(mod, target, config, params, _stop=stop)
                stop.check()  # a signal that arrived after the last check still stops the caller
                return database
            except Exception as err:
                if stop.signum is None:
                    raise
                if not isinstance(err, _StopSearch):
                    logger.debug("tuning stopped by a signal with %s: %s", type(err).__name__, err)
                work_dir = config.work_dir.resolve()
                n = count_records(work_dir)
                raise TuningInterrupted(
                    f"interrupted: {n} records kept in {work_dir}, rerun the same command to resume",
                    records=n, work_dir=str(work_dir), signum=stop.signum,
                ) from None

    return locked


@_one_writer_per_work_dir
def tune(
    mod: IRModule,
    target: Any,
    config: TuneConfig,
    params: Mapping[str, Any] | None = None,
    *,
    _stop: StopRequest | None = None,
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
    TuningInterrupted
        On SIGINT or SIGTERM (a ``KeyboardInterrupt``): the search stops after the current
        measurement round, worker processes are shut down, the records measured so far stay in the
        database and a second call with the same ``work_dir`` resumes.
    """
    stop = _stop or StopRequest()
    info = resolve_target(target)
    tgt = tuning_target(info, config.threads)
    work_dir = config.work_dir.resolve()
    config = dataclasses.replace(config, work_dir=work_dir)
    database = open_database(work_dir)

    check_runner(config, info)
    load_cpu_tensor_intrinsics()
    register_kernel_rules()
    prepared = prepare_for_tuning(mod, tgt, params)
    planned = _plan_tasks(prepared, tgt, config, database)
    if not planned:
        raise TuneError("No tasks to tune: the module has no TIR kernels after legalization and fusion")
    if config.runner is RunnerKind.LOCAL:
        _seed_default_schedules(planned, database, tgt, config, stop)
    stop.check()

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
    with worker_environment(config.threads):  # the runner's and builder's workers inherit it
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
        # the stop check runs first: a batch measured while a signal arrived is not committed
        callbacks = [StopCheck(stop), *ms.measure_callback.MeasureCallback.create("default"), progress]
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
            pool = getattr(runner, "pool", None)  # our LocalRunner's persistent worker processes
            if pool is not None and not isinstance(config.runner, ms.runner.Runner):
                pool.shutdown(wait=False)
    stop.check()
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
    db = as_database(database)
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
