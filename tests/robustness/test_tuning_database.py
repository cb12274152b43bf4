"""The tuning database: a damaged line is moved aside with a warning, and no record is ever mis-linked.

MetaSchedule's JSON database refers to workloads by their line index in ``database_workload.json``.
Dropping a damaged workload line used to shift the indices: records then pointed at the wrong kernels
and every later run failed (``Check failed: old_outputs.size() == new_outputs.size()``). Now a damaged
line is moved into ``<file>.damaged-<timestamp>``, a damaged workload in the middle keeps its index
through a placeholder and its records are moved aside too (the kernel is tuned again), a damaged last
line (a write cut short) is dropped. After each damage the next tuning run works and the compiled
integer programs are bit-exact.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from tests.robustness._tally import tried
from tvm_arq.tune import (
    TuneConfig,
    compile_tuned,
    open_database,
    prepare_for_tuning,
    tune,
    tuned_record_counts,
    tuning_target,
)

WL, REC = "database_workload.json", "database_tuning_record.json"
RNG = np.random.default_rng(17)
X_MM, W_MM = RNG.integers(-128, 128, (4, 32)).astype("int32"), RNG.integers(-128, 128, (32, 16)).astype("int32")
X_CV, W_CV = RNG.integers(-128, 128, (1, 4, 8, 8)).astype("int32"), RNG.integers(-128, 128, (8, 4, 3, 3)).astype("int32")


def _matmul() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x, w = relax.Var("x", relax.TensorType((4, 32), "int32")), relax.Var("w", relax.TensorType((32, 16), "int32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            o = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(o)
    return bb.get()


def _conv() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "int32"))
    w = relax.Var("w", relax.TensorType((8, 4, 3, 3), "int32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            o = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1, out_dtype="int32"))
        bb.emit_func_output(o)
    return bb.get()


def _conv_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((1, w.shape[0], 8, 8), np.int64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 8, j:j + 8], w[:, :, i, j].astype(np.int64))
    return out.astype(np.int32)


MODULES = {"matmul": (_matmul, (X_MM, W_MM), lambda: X_MM @ W_MM), "conv": (_conv, (X_CV, W_CV),
                                                                         lambda: _conv_ref(X_CV, W_CV))}


def _task_mod(mod: tvm.IRModule) -> tvm.IRModule:
    tgt = tuning_target("host", 1)
    (task,) = ms.relax_integration.extract_tasks(prepare_for_tuning(mod, tgt), tgt)
    return task.dispatched[0]


@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Workload 0: the matmul (3 records), workload 1: the conv (3 records), records interleaved."""
    wd = tmp_path_factory.mktemp("db_base")
    db = open_database(wd)
    tgt = tuning_target("host", 1)
    mods = [_task_mod(_matmul()), _task_mod(_conv())]
    workloads = [db.commit_workload(m) for m in mods]
    for k in range(3):
        for m, wl in zip(mods, workloads, strict=True):
            (func,) = (f for f in m.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
            db.commit_tuning_record(ms.database.TuningRecord(
                Schedule(m).trace, wl, [1e-5 * (k + 1)], tgt, ms.arg_info.ArgInfo.from_prim_func(func)))
    return wd


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def _damage(wd: Path, kind: str) -> tuple[str, str, int]:
    """Damage ``wd`` as ``kind``; returns (file name, the damaged line as written, its line number)."""
    if kind == "workload line in the middle":
        lines = _lines(wd / WL)
        bad = lines[0][:40] + "#" + lines[0][41:]  # a flipped byte inside the base64 module
        lines[0] = bad
        (wd / WL).write_text("".join(f"{ln}\n" for ln in lines))
        return WL, bad, 1
    if kind == "workload line cut short":
        lines = _lines(wd / WL)
        bad = lines[-1][: len(lines[-1]) // 2]
        (wd / WL).write_text("".join(f"{ln}\n" for ln in lines[:-1]) + bad)
        return WL, bad, len(lines)
    lines = _lines(wd / REC)
    if kind == "record line in the middle":
        bad = lines[2][:-7] + "}{" + lines[2][-7:]
        lines[2] = bad
        (wd / REC).write_text("".join(f"{ln}\n" for ln in lines))
        return REC, bad, 3
    assert kind == "record line cut short (crash mid-write)"
    bad = lines[-1][: len(lines[-1]) // 3]
    (wd / REC).write_text("".join(f"{ln}\n" for ln in lines[:-1]) + bad)
    return REC, bad, len(lines)


KINDS = ["workload line in the middle", "workload line cut short", "record line in the middle",
         "record line cut short (crash mid-write)"]


def _open_damaged(base: Path, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture):
    wd = tmp_path / "wd"
    shutil.copytree(base, wd)
    before_wl, before_rec = _lines(wd / WL), _lines(wd / REC)
    name, bad, line_no = _damage(wd, kind)
    with caplog.at_level(logging.WARNING, logger="tvm_arq.tune.database"):
        db = open_database(wd)
    msgs = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert any(f"{name}, line {line_no}: damaged" in m and ".damaged-" in m for m in msgs), caplog.text
    backups = list(wd.glob(f"{name}.damaged-*"))
    assert len(backups) == 1 and bad in backups[0].read_text().splitlines()
    return wd, db, before_wl, before_rec


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_line_is_moved_aside_and_nothing_is_mislinked(
    base_db: Path, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    wd, db, before_wl, before_rec = _open_damaged(base_db, tmp_path, kind, caplog)
    wl_now, rec_now = _lines(wd / WL), _lines(wd / REC)
    # every record left points at the workload it was written for (same index, same line as before)
    if kind == "workload line in the middle":
        assert len(wl_now) == 2 and wl_now[1] == before_wl[1] and wl_now[0] != before_wl[0]  # placeholder
        assert rec_now == [ln for ln in before_rec if json.loads(ln)[0] == 1]
        moved = _lines(next(wd.glob(f"{REC}.damaged-*")))
        assert moved == [ln for ln in before_rec if json.loads(ln)[0] == 0]
    elif kind == "workload line cut short":
        assert wl_now == before_wl[:1]
        assert rec_now == [ln for ln in before_rec if json.loads(ln)[0] == 0]
    else:
        assert wl_now == before_wl and len(rec_now) == len(before_rec) - 1
        assert all(ln in before_rec for ln in rec_now)
    counts = tuned_record_counts(db, [_task_mod(_matmul()), _task_mod(_conv())])
    expected = {"workload line in the middle": [0, 3], "workload line cut short": [3, 0]}.get(kind)
    assert counts == (expected or counts) and sum(counts) == len(rec_now)
    # opening again finds nothing more to repair
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tvm_arq.tune.database"):
        open_database(wd)
    assert not caplog.records and _lines(wd / WL) == wl_now and _lines(wd / REC) == rec_now
    tried(1)


def test_blank_lines_and_records_of_unknown_workloads(
    base_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Blank lines are dropped silently; a record of a workload the file does not hold is moved aside."""
    wd = tmp_path / "wd"
    shutil.copytree(base_db, wd)
    wl, rec = _lines(wd / WL), _lines(wd / REC)
    (wd / WL).write_text("\n".join(wl) + "\n\n")
    stray = json.dumps([7, json.loads(rec[0])[1]])
    (wd / REC).write_text("\n\n".join([*rec, stray]) + "\n")
    with caplog.at_level(logging.WARNING, logger="tvm_arq.tune.database"):
        db = open_database(wd)
    assert _lines(wd / WL) == wl and (wd / WL).read_text().count("\n") == len(wl)
    assert _lines(wd / REC) == rec and len(db) == len(rec)
    assert _lines(next(wd.glob(f"{REC}.damaged-*"))) == [stray]
    assert f"{REC}, line {2 * len(rec) + 1}: damaged (refers to workload 7" in caplog.text
    tried(2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_after_a_damage_the_next_tuning_run_works_and_is_bit_exact(
    base_db: Path, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    wd, _, _, _ = _open_damaged(base_db, tmp_path, kind, caplog)
    for name, (make, args, ref) in MODULES.items():
        cfg = TuneConfig(trials=3, trials_per_iter=2, work_dir=wd, num_threads=1, progress=False)
        db = tune(make(), "host", cfg)  # re-tunes what was moved aside (3 trials), nothing else
        assert tuned_record_counts(db, [_task_mod(make())]) >= [3], name
        ex = compile_tuned(make(), "host", wd, num_threads=1)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()
        np.testing.assert_array_equal(out, ref(), err_msg=f"{kind}: {name}")
    tried(2)
