"""Faults: processes killed mid-way and processes running side by side lose nothing and corrupt nothing.

- the tuning database: one writer per work dir (a lock the kernel releases when its holder dies), a killed
  tuning run resumes with every record kept, two tuning processes on one database stay consistent;
- the asset cache: two processes fetching the same asset download it once; a fetch killed while
  downloading or extracting leaves no partial file and the next fetch succeeds;
- a board killed mid-run: a clear error within the time-out, and the next session works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_not_hung, record_lines
from tests.robustness._tally import tried

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _spawn(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), *args], env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,  # kill the child with everything it started
    )


class Lines:
    """Collect a child's output lines in a thread; wait for one that starts with a prefix."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.05)
        return None

    def text(self) -> str:
        return "\n".join(self.lines[-40:])


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------ tuning database lock

_HOLD = """
import sys, time
from tvm_arq.tune import work_dir_lock
with work_dir_lock(sys.argv[1]):
    print("LOCKED", flush=True)
    time.sleep(300)
"""

_OPEN = """
import sys, time
from tvm_arq.tune import open_database
print("START", flush=True)
t0 = time.monotonic()
db = open_database(sys.argv[1])
print("OPENED", len(db), round(time.monotonic() - t0, 2), flush=True)
"""


def test_tuning_database_has_one_writer_and_a_killed_holder_releases_it(tmp_path: Path) -> None:
    """While one process holds a work dir, another waits to open its database (it does not read or
    rewrite the files under the writer); SIGKILL of the holder releases the lock at once."""
    wd = tmp_path / "wd"
    (tmp_path / "hold.py").write_text(_HOLD)
    (tmp_path / "open.py").write_text(_OPEN)
    holder = _spawn(tmp_path / "hold.py", str(wd))
    opener = None
    try:
        h = Lines(holder)
        assert h.wait_for("LOCKED", 60), h.text()
        opener = _spawn(tmp_path / "open.py", str(wd))
        o = Lines(opener)
        assert o.wait_for("START", 60), o.text()
        time.sleep(3)
        assert o.wait_for("OPENED", 0.1) is None, "opened the database while another process held it"
        assert opener.poll() is None
        _kill(holder)  # the holder dies without releasing anything itself
        line = o.wait_for("OPENED", 30)
        assert line is not None, o.text()
        assert opener.wait(timeout=30) == 0
    finally:
        _kill(holder)
        if opener is not None:
            _kill(opener)
    tried(2)


def test_work_dir_lock_is_reentrant_within_a_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    from tvm_arq.tune import open_database, work_dir_lock

    with work_dir_lock(tmp_path):
        open_database(tmp_path)  # tune() holds the lock and opens the database: no self-deadlock
        got: list[float] = []
        t = threading.Thread(target=lambda: (open_database(tmp_path), got.append(time.monotonic())))
        t.start()
        time.sleep(0.5)
        released = time.monotonic()
        assert not got, "another thread opened the database while this one held the lock"
    t.join(timeout=30)
    assert got and got[0] >= released
    tried(2)


# (damaged database lines: tests/robustness/test_tuning_database.py)


_TUNE = """
import sys
from tvm import relax
from tvm.relax import op as R
from tvm_arq.tune import TuneConfig, tune

kind, wd, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])

def module(kind):
    bb = relax.BlockBuilder()
    if kind == "conv":
        x = relax.Var("x", relax.TensorType((1, 8, 8, 8), "float32"))
        w = relax.Var("w", relax.TensorType((8, 8, 3, 3), "float32"))
        with bb.function("main", [x, w]):
            with bb.dataflow():
                o = bb.emit_output(R.nn.relu(bb.emit(R.nn.conv2d(x, w, padding=1))))
            bb.emit_func_output(o)
    else:
        x = relax.Var("x", relax.TensorType((4, 32), "float32"))
        w = relax.Var("w", relax.TensorType((32, 16), "float32"))
        with bb.function("main", [x, w]):
            with bb.dataflow():
                o = bb.emit_output(R.matmul(x, w))
            bb.emit_func_output(o)
    return bb.get()

if __name__ == "__main__":
    print("TUNING", kind, flush=True)
    db = tune(module(kind), "host", TuneConfig(trials=trials, trials_per_iter=2, work_dir=wd, num_threads=1,
                                               progress=False))
    print("DONE", kind, len(db), flush=True)
"""


def _workload_of_records(wd: Path) -> dict[int, set[str]]:
    """Workload index -> first block name each of its records' traces refers to."""
    out: dict[int, set[str]] = {}
    for line in record_lines(wd):
        idx, trace = json.loads(line)
        if not trace[0][0]:  # the seed record of a generic kernel: its unscheduled form (no instructions)
            continue
        first = json.dumps(trace)[:400]
        out.setdefault(idx, set()).add("matmul" if "matmul" in first else "conv" if "pad" in first else "?")
    return out


@pytest.mark.slow
def test_two_tuning_processes_share_a_database_without_corrupting_it(tmp_path: Path) -> None:
    """A conv and a matmul tuned at the same time into one work dir. Without the lock both processes
    numbered their workload 0 and the conv's records were filed under the matmul's workload."""
    wd = tmp_path / "wd"
    script = tmp_path / "tune_child.py"
    script.write_text(_TUNE)
    procs = [_spawn(script, kind, str(wd), "4") for kind in ("conv", "dense")]
    outs = [Lines(p) for p in procs]
    try:
        for p, o in zip(procs, outs, strict=True):
            assert p.wait(timeout=900) == 0, o.text()
    finally:
        for p in procs:
            _kill(p)
    workloads = [ln for ln in (wd / "database_workload.json").read_text().splitlines() if ln.strip()]
    assert len(workloads) == 2
    assert len(record_lines(wd)) == 8
    by_wl = _workload_of_records(wd)
    assert sorted(by_wl) == [0, 1] and all(len(v) == 1 for v in by_wl.values()), by_wl
    assert {next(iter(v)) for v in by_wl.values()} == {"conv", "matmul"}
    # re-running either tuning finds its 4 records and runs nothing more
    for kind in ("conv", "dense"):
        proc = _spawn(script, kind, str(wd), "4")
        o = Lines(proc)
        assert proc.wait(timeout=600) == 0, o.text()
    assert len(record_lines(wd)) == 8
    tried(2)


@pytest.mark.slow
def test_killed_tuning_run_resumes_without_losing_records(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    script = tmp_path / "tune_child.py"
    script.write_text(_TUNE)
    proc = _spawn(script, "conv", str(wd), "8")
    try:
        deadline = time.monotonic() + 600
        while len(record_lines(wd)) < 2:
            assert proc.poll() is None, Lines(proc).text()
            assert time.monotonic() < deadline, "no record appeared"
            time.sleep(0.2)
    finally:
        _kill(proc)  # SIGKILL mid-run, possibly mid-write
    assert proc.returncode == -signal.SIGKILL
    survived = record_lines(wd)
    assert 2 <= len(survived) < 8
    proc = _spawn(script, "conv", str(wd), "8")  # the lock died with the killed process: no waiting
    o = Lines(proc)
    assert proc.wait(timeout=900) == 0, o.text()
    after = record_lines(wd)
    assert after[: len(survived)] == survived and len(after) == 8


# ------------------------------------------------------------------------------------------ asset cache

_FETCH = """
import hashlib, os, sys, time, zipfile
from pathlib import Path
import arq_bench.assets as A

counter, delay, where = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB

def fake_download(asset, dest):
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\\n")
    print("DOWNLOADING", flush=True)
    if where == "download":
        time.sleep(delay)
    wheel = dest / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/data/model.bin", PAYLOAD)
        zf.writestr("fakepkg/__init__.py", "")
    return wheel

real_copy = A._copy_member

def slow_copy(zf, info, target):
    real_copy(zf, info, target)
    print("EXTRACTING", flush=True)
    time.sleep(delay)

A._download_wheel = fake_download
if where == "extract":
    A._copy_member = slow_copy
digest = hashlib.sha256(f"model.bin {hashlib.sha256(PAYLOAD).hexdigest()}\\n".encode()).hexdigest()
A.ASSETS["fake_model"] = A.Asset("fake_model", "fakepkg", "1.0", ("fakepkg/data/model.bin",), digest=digest)
path = A.fetch("fake_model")
print("PATH", path, hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(PAYLOAD).hexdigest(), flush=True)
"""


def _downloads(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_two_processes_fetching_one_asset_download_it_once(tmp_path: Path) -> None:
    script = tmp_path / "fetch.py"
    script.write_text(_FETCH)
    counter = tmp_path / "downloads.txt"
    env = _env(TVM_ARQ_CACHE=str(tmp_path / "cache"))
    procs = [_spawn(script, str(counter), "2", "download", env=env) for _ in range(2)]
    outs = [Lines(p) for p in procs]
    try:
        paths = []
        for p, o in zip(procs, outs, strict=True):
            assert p.wait(timeout=120) == 0, o.text()
            line = o.wait_for("PATH", 5)
            assert line is not None and line.endswith("True"), o.text()
            paths.append(line.split()[1])
    finally:
        for p in procs:
            _kill(p)
    assert paths[0] == paths[1]
    assert _downloads(counter) == 1  # the second process waited on the lock and found the asset
    assert not list((tmp_path / "cache").rglob(".tmp-*"))
    tried(2)


@pytest.mark.parametrize("where", ["download", "extract"])
def test_fetch_killed_midway_leaves_nothing_half_done(tmp_path: Path, where: str) -> None:
    script = tmp_path / "fetch.py"
    script.write_text(_FETCH)
    counter = tmp_path / "downloads.txt"
    cache = tmp_path / "cache"
    env = _env(TVM_ARQ_CACHE=str(cache))
    victim = _spawn(script, str(counter), "60", where, env=env)
    try:
        v = Lines(victim)
        assert v.wait_for("EXTRACTING" if where == "extract" else "DOWNLOADING", 60), v.text()
    finally:
        _kill(victim)
    final = cache / "fake_model" / "fakepkg-1.0"
    assert not final.exists()  # nothing at the final path, at most a .tmp-* folder
    survivor = _spawn(script, str(counter), "0", "none", env=env)
    s = Lines(survivor)
    assert survivor.wait(timeout=120) == 0, s.text()
    line = s.wait_for("PATH", 5)
    assert line is not None and line.endswith("True"), s.text()
    assert (final / "model.bin").stat().st_size == 256 * 4096
    assert not list(cache.rglob(".tmp-*"))  # the stale leftover was cleaned under the lock
    assert _downloads(counter) == 2


# ------------------------------------------------------------------------------------------ boards


def _board_ready() -> str | None:
    missing = [t for t in ("qemu-aarch64", "aarch64-linux-gnu-g++") if shutil.which(t) is None]
    if missing:
        return f"needs {missing}"
    try:
        from tvm_arq.deploy import ensure_runtime

        ensure_runtime("aarch64")
    except Exception as e:  # noqa: BLE001 - any set-up problem means: no board here
        return f"aarch64 board runtime unavailable: {e}"
    return None


@pytest.mark.slow
def test_board_killed_mid_run_fails_clearly_and_the_next_session_works() -> None:
    why = _board_ready()
    if why:
        pytest.skip(why)
    import tvm_arq
    from tests.graphs import Spec, build_graph, calibration_set
    from tvm_arq.deploy import DeployError, EmulatedBoard, deploy

    mod = build_graph(Spec(channels=4, size=8, ops=["conv", "dwconv", "add", "conv"], seed=2))
    cal = calibration_set(mod, 3)
    model = tvm_arq.build(mod, None, "aarch64", calibration=cal, progress=False)
    board = EmulatedBoard("aarch64").start()
    try:
        remote = deploy(model, rpc=board.address, timeout=30)
        np.testing.assert_array_equal(remote.run(cal[0]), model.run(cal[0]))
        killer = threading.Timer(1.0, board.kill)  # dies in the middle of a long benchmark
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(DeployError):
            remote.benchmark(cal[0], number=1000, repeat=1000)
        assert_not_hung(t0, 30, "a benchmark on a board that died")
        killer.join()
    finally:
        board.stop()
    with EmulatedBoard("aarch64") as fresh:  # the next session works
        remote = deploy(model, rpc=fresh.address, timeout=30)
        np.testing.assert_array_equal(remote.run(cal[1]), model.run(cal[1]))
        remote.close()
    tried(2)


def test_fake_asset_digest_matches_the_cache_rule(tmp_path: Path) -> None:
    """Self-check of the fake asset used above: its digest follows assets._tree_digest."""
    from arq_bench.assets import _tree_digest

    payload = bytes(range(256)) * 4096
    (tmp_path / "model.bin").write_bytes(payload)
    want = hashlib.sha256(f"model.bin {hashlib.sha256(payload).hexdigest()}\n".encode()).hexdigest()
    assert _tree_digest(tmp_path) == want
