"""Clean interrupts of a tuning run: SIGINT/SIGTERM stop the search between two measurement rounds.

A ``KeyboardInterrupt`` raised while MetaSchedule's C++ task scheduler is calling back into Python
(builder, runner, cost model, or TVM's own signal checks inside its thread pool) ends in a C++
``std::terminate`` or a half-handled ``RuntimeError``. So while :func:`~tvm_arq.tune.tune` runs, SIGINT
and SIGTERM only *request* a stop (:func:`stop_on_signals`); the search checks the request at the start
of every batch's measure callbacks (before the batch is committed, so a batch whose workers saw the
signal is never recorded) and leaves by raising :class:`_StopSearch` through the scheduler, which
unwinds cleanly. :func:`~tvm_arq.tune.tune` then raises :class:`TuningInterrupted`.

The builder's and runner's worker processes ignore SIGINT (:func:`ignore_sigint`): a Ctrl-C in a
terminal reaches the whole process group, and a worker killed by it would turn a good candidate into a
failed record.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

__all__ = ["StopRequest", "TuningInterrupted", "ignore_sigint", "stop_on_signals"]

logger = logging.getLogger(__name__)


class TuningInterrupted(KeyboardInterrupt):
    """A tuning run stopped by SIGINT or SIGTERM; the database keeps every committed record.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it. ``str()`` is the user message.
    """

    def __init__(self, message: str, records: int, work_dir: str, signum: int) -> None:
        super().__init__(message)
        self.records = records
        self.work_dir = work_dir
        self.signum = signum

    def __str__(self) -> str:
        return str(self.args[0])


class _StopSearch(RuntimeError):
    """Raised from a measure callback to leave MetaSchedule's search loop."""


class StopRequest:
    """A stop requested by a signal (``signum``), checked by the search between measurement rounds."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`_StopSearch` when a stop was requested."""
        if self.signum is not None:
            raise _StopSearch(f"stop requested by {signal.Signals(self.signum).name}")


@contextlib.contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``request`` instead of raising (main thread only).

    Outside the main thread (where Python cannot install handlers) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, _frame: Any) -> None:
        if request.signum is None:
            logger.warning("%s received: stopping after the current measurement round (records are kept)",
                           signal.Signals(signum).name)
        request.signum = request.signum or signum

    saved = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def ignore_sigint() -> None:
    """Initializer of the builder's and runner's worker processes: leave Ctrl-C to the tuning process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@derived_object
class StopCheck(ms.measure_callback.PyMeasureCallback):
    """First measure callback of a batch: leave the search if a stop was requested (batch not committed)."""

    def __init__(self, request: StopRequest) -> None:
        self.request = request

    def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
              runner_results: Any) -> None:
        self.request.check()
