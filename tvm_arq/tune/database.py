"""The tuning database: MetaSchedule's JSON database in a work directory, locked, repaired, counted.

- one writer per work directory, across processes and threads (:func:`work_dir_lock`);
- lines a killed run left half-written are dropped when the database is opened (:func:`open_database`);
- records per task are counted (:func:`tuned_record_counts`), so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tvm_ffi
from tvm.ir import IRModule
from tvm.s_tir import meta_schedule as ms

__all__ = ["as_database", "open_database", "tuned_record_counts", "work_dir_lock"]

logger = logging.getLogger(__name__)

_WORKLOAD_FILE = "database_workload.json"
_RECORD_FILE = "database_tuning_record.json"


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


def as_database(database: ms.database.Database | str | os.PathLike[str]) -> ms.database.Database:
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

