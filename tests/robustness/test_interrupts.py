"""Interrupts: SIGINT (Ctrl-C) or SIGTERM during tuning stop it cleanly and a rerun resumes.

A ``KeyboardInterrupt`` raised while MetaSchedule's C++ scheduler called back into Python used to end in
``std::terminate`` or a segfault. Now the signal only requests a stop, taken between two measurement
rounds: ``tvm-arq tune`` prints "interrupted: N records kept in DIR, rerun the same command to resume"
and exits with 130, the worker processes are gone, the database is consistent, and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import record_lines
from tests.robustness._tally import tried

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "arq_bench" / "models" / "mnist_cnn.onnx"
CRASH = ("terminate", "Segmentation", "core dumped", "Traceback", "Aborted")
MESSAGE = re.compile(r"^interrupted: (\d+) records kept in (.+), rerun the same command to resume$", re.M)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _start(argv: list[str]) -> subprocess.Popen[str]:
    # its own session: the signal goes to the whole process group, as a Ctrl-C in a terminal does
    return subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _interrupt_when_records(proc: subprocess.Popen[str], wd: Path, n: int, sig: signal.Signals) -> tuple[str, str]:
    out: dict[str, str] = {}

    def read(name: str, stream) -> None:  # noqa: ANN001 - a text pipe
        out[name] = stream.read()

    readers = [threading.Thread(target=read, args=(k, s), daemon=True)
               for k, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    try:
        deadline = time.monotonic() + 600
        while len(record_lines(wd)) < n:
            assert proc.poll() is None, "the run ended before the first records appeared"
            assert time.monotonic() < deadline, "no record appeared"
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for t in readers:
        t.join(timeout=30)
    time.sleep(0.5)
    assert not _group_alive(proc.pid), "worker processes survived the interrupted run"
    return out.get("out", ""), out.get("err", "")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arq_bench import zoo

    path = tmp_path_factory.mktemp("interrupt_cal") / "cal.npy"
    np.save(path, zoo.mnist_test()[0][100:108])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_cli_tuning_exits_130_and_a_rerun_resumes(
    tmp_path: Path, calibration: Path, sig: signal.Signals
) -> None:
    wd = tmp_path / "wd"
    argv = [sys.executable, "-m", "tvm_arq.cli", "tune", str(MODEL), "--calibration", str(calibration),
            "--trials", "8", "--threads", "1", "--work-dir", str(wd), "-o", str(tmp_path / "tuned.so")]
    proc = _start(argv)
    out, err = _interrupt_when_records(proc, wd, 1, sig)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert not any(bad in err for bad in CRASH), err[-3000:]
    m = MESSAGE.search(err)
    assert m and Path(m.group(2)) == wd.resolve(), err[-3000:]
    kept = record_lines(wd)
    assert int(m.group(1)) == len(kept) >= 1
    assert f"{sig.name} received: stopping after the current measurement round" in err
    assert not (tmp_path / "tuned.so").exists()
    # the same command resumes: the kept records stay first, only the missing trials run
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    after = record_lines(wd)
    assert after[: len(kept)] == kept and len(after) >= 8
    assert (tmp_path / "tuned.so").exists()
    tried(1)


_TUNE = """
import sys
from pathlib import Path
from tests.helpers import conv_module
from tvm_arq.tune import TuneConfig, TuningInterrupted, tune

cfg = TuneConfig(trials=int(sys.argv[2]), trials_per_iter=2, work_dir=Path(sys.argv[1]), num_threads=1,
                 progress=False)
try:
    db = tune(conv_module(), "host", cfg)
except TuningInterrupted as err:
    print("INTERRUPTED", err.records, err.signum, flush=True)
    print(err, file=sys.stderr)
    sys.exit(130)
print("DONE", len(db), flush=True)
"""


@pytest.mark.slow
def test_interrupt_inside_the_search_from_the_python_api(tmp_path: Path) -> None:
    """The signal lands in MetaSchedule's search loop (the conv has no seed record): TuningInterrupted,
    the batch measured while the signal arrived is not committed, nothing failed is recorded."""
    wd, script = tmp_path / "wd", tmp_path / "tune_child.py"
    script.write_text(_TUNE)
    proc = _start([sys.executable, str(script), str(wd), "12"])
    out, err = _interrupt_when_records(proc, wd, 2, signal.SIGINT)
    assert proc.returncode == 130, (out, err[-3000:])
    assert not any(bad in err for bad in CRASH), err[-3000:]
    kept = record_lines(wd)
    assert f"INTERRUPTED {len(kept)} {int(signal.SIGINT)}" in out and MESSAGE.search(err)
    assert 2 <= len(kept) < 12
    # every committed record is a measured one (no failure caused by the signal)
    assert all(max(float(v) for v in json.loads(ln)[1][1]) < 1e9 for ln in kept)
    done = subprocess.run([sys.executable, str(script), str(wd), "12"], env=_env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-3000:]
    after = record_lines(wd)
    assert after[: len(kept)] == kept and len(after) >= 12
    tried(1)


def test_signals_only_request_a_stop_while_tuning() -> None:
    """Inside ``stop_on_signals`` SIGINT and SIGTERM set the request (no KeyboardInterrupt mid-C++);
    the previous handlers come back afterwards; the workers are told to ignore Ctrl-C."""
    from tvm_arq.tune.interrupts import StopRequest, _StopSearch, stop_on_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in (signal.SIGINT, signal.SIGTERM):
        stop = StopRequest()
        with stop_on_signals(stop):
            stop.check()
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
            assert stop.signum == sig
            with pytest.raises(_StopSearch):
                stop.check()
            os.kill(os.getpid(), signal.SIGINT)  # a second signal keeps the first one's number
            time.sleep(0.05)
            assert stop.signum == sig
        assert {s: signal.getsignal(s) for s in before} == before
        tried(1)
    # outside the main thread nothing is installed (Python cannot), and nothing breaks
    seen: list[object] = []

    def other() -> None:
        with stop_on_signals(StopRequest()):
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [before[signal.SIGINT]]
    tried(1)


def test_worker_processes_ignore_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C reaches the whole process group; the builder's and runner's workers leave it to the tuner."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_arq.target import resolve_target
    from tvm_arq.tune import TuneConfig
    from tvm_arq.tune.builder import make_builder
    from tvm_arq.tune.interrupts import ignore_sigint
    from tvm_arq.tune.runner import make_runner

    seen: dict[str, object] = {}
    monkeypatch.setattr(ms.builder, "LocalBuilder", lambda **kw: seen.setdefault("builder", kw["initializer"]))
    monkeypatch.setattr(ms.runner, "LocalRunner", lambda **kw: seen.setdefault("runner", kw["initializer"]))
    cfg = TuneConfig(trials=2, num_threads=1, progress=False)
    make_builder(cfg, resolve_target("host"))
    make_runner(cfg, resolve_target("host"))
    assert seen == {"builder": ignore_sigint, "runner": ignore_sigint}
    saved = signal.getsignal(signal.SIGINT)
    try:
        ignore_sigint()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, saved)
    tried(1)
