"""The tuning database: MetaSchedule's JSON database in a work directory, locked, repaired, counted.

- one writer per work directory, across processes and threads (:func:`work_dir_lock`);
- lines a killed run left half-written are dropped when the database is opened (:func:`open_database`);
- records per task are counted (:func:`tuned_record_counts`), so an interrupted run resumes.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm.ir import IRModule
from tvm.s_tir import meta_schedule as ms

__all__ = ["as_database", "count_records", "open_database", "tuned_record_counts", "work_dir_lock"]

logger = logging.getLogger(__name__)

_WORKLOAD_FILE = "database_workload.json"
_RECORD_FILE = "database_tuning_record.json"
#: attribute of the placeholder kernel that keeps the index of a damaged workload line
_PLACEHOLDER_ATTR = "tvm_arq.damaged_workload"


def _read_lines(path: Path) -> tuple[list[tuple[int, str]], bool]:
    """Non-blank lines of ``path`` with their 1-based line numbers, and whether the file needs a rewrite."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    untidy = bool(text) and (not text.endswith("\n") or len(lines) != text.count("\n"))
    return lines, untidy


def _write_atomically(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(f"{line}\n" for line in lines)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _move_aside(path: Path, bad: Sequence[tuple[int, str, str]]) -> Path:
    """Append the damaged lines (exactly as they were) to ``<name>.damaged-<timestamp>`` beside ``path``."""
    backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    with open(backup, "a", encoding="utf-8") as fh:
        fh.writelines(f"{line}\n" for _, line, _ in bad)
        fh.flush()
        os.fsync(fh.fileno())
    for line_no, _, why in bad:
        logger.warning("%s, line %d: damaged (%s); moved aside to %s", path, line_no, why, backup)
    return backup


def _placeholder_workload(index: int) -> str:
    """A valid workload line no task can match, kept at ``index`` so later workloads keep their numbers."""
    func = tvm.tirx.PrimFunc([], tvm.tirx.Evaluate(tvm.tirx.const(0, "int32")))
    func = func.with_attr(_PLACEHOLDER_ATTR, index).with_attr("global_symbol", "tvm_arq_damaged_workload")
    workload = ms.database.Workload(IRModule({"tvm_arq_damaged_workload": func}))
    return json.dumps([str(v) for v in workload.as_json()])


def _is_placeholder(obj: list[str]) -> bool:
    try:
        return _PLACEHOLDER_ATTR.encode() in base64.b64decode(obj[1])
    except (ValueError, TypeError):
        return False


def _repair_workloads(path: Path) -> tuple[list[Any], set[int]]:
    """Check every workload line; returns the parsed workloads and the indices holding no real workload.

    A damaged line is moved aside; in the middle of the file it is replaced by a placeholder (records
    refer to workloads by line index: removing it would re-link every later record to the wrong
    workload), a damaged last line (a write cut short) is dropped.
    """
    if not path.exists():
        return [], set()
    lines, untidy = _read_lines(path)
    kept: list[str] = []
    workloads: list[Any] = []
    void: set[int] = set()
    bad: list[tuple[int, str, str]] = []
    for pos, (line_no, line) in enumerate(lines):
        try:
            obj = json.loads(line)
            if not (isinstance(obj, list) and len(obj) == 2 and all(isinstance(v, str) for v in obj)):
                raise ValueError("not a [hash, module] pair")
            workload = ms.database.Workload.from_json(obj)
        except Exception as err:  # noqa: BLE001 - JSON errors and TVM's deserialization errors alike
            bad.append((line_no, line, _why(err)))
            if pos == len(lines) - 1:
                break
            kept.append(_placeholder_workload(len(kept)))
            workloads.append(None)
            void.add(len(kept) - 1)
            continue
        if _is_placeholder(obj):
            void.add(len(kept))
        kept.append(line)
        workloads.append(workload)
    if bad:
        _move_aside(path, bad)
    if bad or untidy:
        _write_atomically(path, kept)
    return workloads, void


def _repair_records(path: Path, workloads: Sequence[Any], void: set[int]) -> None:
    """Move aside record lines that do not parse or refer to a missing, damaged or placeholder workload."""
    if not path.exists():
        return
    lines, untidy = _read_lines(path)
    kept: list[str] = []
    bad: list[tuple[int, str, str]] = []
    for line_no, line in lines:
        try:
            obj = json.loads(line)
            if not (isinstance(obj, list) and len(obj) == 2 and type(obj[0]) is int):
                raise ValueError("not a [workload index, record] pair")
            if not 0 <= obj[0] < len(workloads):
                raise ValueError(f"refers to workload {obj[0]}, which is not in the database")
            if obj[0] in void:
                raise ValueError(f"refers to workload {obj[0]}, which was damaged (it is tuned again)")
            ms.database.TuningRecord.from_json(obj[1], workloads[obj[0]])
        except Exception as err:  # noqa: BLE001 - JSON errors and TVM's deserialization errors alike
            bad.append((line_no, line, _why(err)))
            continue
        kept.append(line)
    if bad:
        _move_aside(path, bad)
    if bad or untidy:
        _write_atomically(path, kept)


def _why(err: BaseException) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} (column {err.colno})"
    text = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
    return text if isinstance(err, ValueError) else f"{type(err).__name__}: {text[:200]}"


def count_records(work_dir: str | os.PathLike[str]) -> int:
    """Number of tuning records (lines) in the database of ``work_dir``."""
    path = Path(work_dir) / _RECORD_FILE
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())


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
    """Open (or create) the JSON tuning database in ``work_dir``, repairing damaged lines first.

    MetaSchedule only appends to the two files. A damaged line (a write cut short by a kill, a
    corrupted byte) is moved aside into ``<file>.damaged-<timestamp>`` with a warning naming the file
    and line; a damaged workload in the middle keeps its index through a placeholder, and its records
    are moved aside too (those kernels are tuned again), so no record is ever linked to another
    workload. The files are rewritten atomically (a temporary file, then a rename).
    """
    work = Path(work_dir)
    with work_dir_lock(work):  # never repair (rewrite) the files while another process appends to them
        wl_path, rec_path = work / _WORKLOAD_FILE, work / _RECORD_FILE
        workloads, void = _repair_workloads(wl_path)
        _repair_records(rec_path, workloads, void)
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

