"""Options of a tuning run: budget and search settings (:class:`TuneConfig`), runners, RPC boards."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

from tvm.s_tir import meta_schedule as ms

__all__ = ["RPCSettings", "RunnerKind", "TuneConfig", "TuneError", "physical_cores"]

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
        return self.num_threads or physical_cores()



def physical_cores() -> int:
    """Physical cores of this machine (the default number of tuning threads)."""
    try:
        import psutil

        return max(1, int(psutil.cpu_count(logical=False) or os.cpu_count() or 1))
    except ImportError:  # pragma: no cover - psutil is a dependency
        return max(1, os.cpu_count() or 1)
