"""Deploying over TVM RPC to emulated aarch64 / riscv64 / riscv64+V boards (qemu-user, loopback only).

The board runtimes are fetched/built once and cached (``make boards``; the riscv64 cross-build takes
a few minutes the first time). Emulated timings are qemu timings: the tests only check they exist.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tvm

import tvm_arq
from tests.graphs import Spec, build_graph, calibration_set
from tests.helpers import assert_not_hung
from tvm_arq.deploy import (
    DeployError,
    EmulatedBoard,
    LocalTracker,
    deploy,
    ensure_runtime,
    pipe_session,
    runtime_build,
    tracker_summary,
)
from tvm_arq.deploy import boards as boards_mod
from tvm_arq.deploy.export import ELF_MACHINE, read_elf_machine
from tvm_arq.deploy.rpc import wait_for
from tvm_arq.target import Arch
from tvm_arq.verify import debug_build, verify_on_board, verify_remote

_TOOLS = ("qemu-aarch64", "qemu-riscv64", "aarch64-linux-gnu-g++", "riscv64-linux-gnu-g++")
_missing = [t for t in _TOOLS if shutil.which(t) is None]
if _missing and os.environ.get("CI") != "true":
    pytest.skip(f"emulated boards need {_missing} (run `make apt`)", allow_module_level=True)

SPEC = Spec(channels=4, size=8, ops=["conv", "dwconv", "add", "maxpool", "conv", "avgpool", "concat", "resize"],
            seed=11)


# --------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def mod_and_data():
    mod = build_graph(SPEC)
    cal = calibration_set(mod, 4, seed=3, skew=0.4)
    return mod, cal


_models: dict[str, tvm_arq.QuantizedModel] = {}


@pytest.fixture(scope="module")
def quantized(mod_and_data):
    """Quantized models of the test graph per target preset (built lazily, once)."""
    mod, cal = mod_and_data

    def get(preset: str) -> tvm_arq.QuantizedModel:
        if preset not in _models:
            _models[preset] = tvm_arq.build(mod, None, preset, calibration=cal, progress=False)
        return _models[preset]

    return get


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# runtimes


def _host_selftest(tmp_path: Path) -> Path:
    """Build tvm_arq/_native/tests/support_selftest.cc (our support headers) with the host compiler."""
    import tvm_ffi

    from tvm_arq.deploy.runtime_build import native_dir

    native = native_dir()
    ffi = Path(tvm_ffi.__file__).resolve().parent
    exe = tmp_path / "support_selftest"
    cmd = [
        shutil.which("g++") or "g++", "-std=c++17", "-O1", "-Wall",
        f"-I{native / 'runtime_support' / 'include'}", f"-I{native / 'runtime_support' / 'src'}",
        f"-I{native / 'runtime_support' / '3rdparty' / 'compiler-rt'}",
        f"-I{ffi / 'include'}", f"-I{ffi / '3rdparty' / 'dlpack' / 'include'}",
        str(native / "tests" / "support_selftest.cc"), "-o", str(exe),
        f"-L{ffi / 'lib'}", "-ltvm_ffi", f"-Wl,-rpath,{ffi / 'lib'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exe


def test_our_support_headers_selftest(tmp_path: Path) -> None:
    """Serializer layout, ring buffer, base64, arena (the headers the riscv64 runtime is built with)."""
    exe = _host_selftest(tmp_path)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr

    # IEEE half conversions (builtin_fp16.h) against numpy, bit for bit
    rng = np.random.default_rng(0)
    halfs = np.arange(65536, dtype=np.uint16).view(np.float16)
    with np.errstate(all="ignore"):
        finite = halfs[np.isfinite(halfs)].astype(np.float32)
        f32 = np.concatenate([
            rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            finite, np.nextafter(finite, np.float32(np.inf)), np.nextafter(finite, np.float32(-np.inf)),
            (finite[:-1] / 2 + finite[1:] / 2),  # ties
            np.array([0.0, -0.0, 65504, 65519.996, 65520, 5.96e-8, 2.98e-8, np.inf, -np.inf], np.float32),
        ]).astype(np.float32)
        f64 = np.concatenate([f32.astype(np.float64)[: len(f32) // 2],
                              rng.uniform(-7e4, 7e4, len(f32) - len(f32) // 2)])
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    inp.write_bytes(np.uint32(len(f32)).tobytes() + f32.tobytes() + f64.tobytes())
    subprocess.run([str(exe), "fp16", str(inp), str(out)], check=True)
    data = out.read_bytes()
    n = len(f32)
    f2h = np.frombuffer(data[: 2 * n], np.uint16)
    h2f = np.frombuffer(data[2 * n: 2 * n + 4 * 65536], np.float32)
    d2h = np.frombuffer(data[2 * n + 4 * 65536:], np.uint16)
    with np.errstate(all="ignore"):
        ok = ~np.isnan(f32)
        np.testing.assert_array_equal(f2h[ok], f32[ok].astype(np.float16).view(np.uint16))
        assert np.all(np.isnan(f2h[~ok].view(np.float16)))
        ref = halfs.astype(np.float32)
        ok = ~np.isnan(ref)
        np.testing.assert_array_equal(h2f[ok].view(np.uint32), ref[ok].view(np.uint32))
        assert np.all(np.isnan(h2f[~ok]))
        ok = ~np.isnan(f64)
        np.testing.assert_array_equal(d2h[ok], f64[ok].astype(np.float16).view(np.uint16))


@pytest.mark.parametrize(("arch", "machine"), [("aarch64", Arch.AARCH64), ("riscv64", Arch.RISCV64)])
def test_runtime_bundle_is_cached_and_for_the_board(arch: str, machine: Arch,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = ensure_runtime(arch)  # built or fetched by `make boards` (or now, once)

    def no_build(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a cached runtime must be reused, not fetched or built again")

    monkeypatch.setattr(runtime_build, "_make_runtime", no_build)
    again = ensure_runtime(arch)
    assert again.directory == bundle.directory
    assert str(Path.home()) in str(bundle.directory) or os.environ.get("TVM_ARQ_CACHE")
    for path in [bundle.server, *bundle.libraries]:
        assert read_elf_machine(path) == ELF_MACHINE[machine], path
    assert bundle.info["tvm"] == tvm_arq_version("apache-tvm")


def tvm_arq_version(dist: str) -> str:
    from importlib import metadata

    return metadata.version(dist)


def test_pipe_session_runs_a_function_without_ports(quantized) -> None:
    """rpc.CreatePipeClient + our server's --pipe mode: a session with no socket at all."""
    sess = pipe_session("aarch64")
    dev = sess.cpu()
    x = np.arange(12, dtype="float32").reshape(3, 4)
    t = tvm.runtime.tensor(x, dev)
    np.testing.assert_array_equal(t.numpy(), x)
    fill = sess.get_function("tvm.contrib.random.random_fill_for_measure")
    y = tvm.runtime.empty((64,), "int8", dev)
    fill(y)
    assert np.any(y.numpy() != 0)


# --------------------------------------------------------------------------------------------------
# bit-exact on every emulated board


@pytest.mark.slow
@pytest.mark.parametrize("board", ["aarch64", "riscv64", "riscv64-rvv"])
def test_quantized_model_is_bitexact_on_emulated_board(board: str, quantized, mod_and_data) -> None:
    """Every integer tensor of the shipped program on the board equals the reference interpreter's.

    The debug build is the program ``tvm_arq.build`` ships (layouts converted for the board: NHWC, packed
    weights, the sdot / vwmacc kernels, default schedules), exported with ``export_library``, uploaded and run
    on the board; its tensors are compared one by one (tvm_arq.verify).
    """
    _, cal = mod_and_data
    model = quantized(boards_mod.BOARDS[board].target)
    program = debug_build(model)
    with EmulatedBoard(board) as b:
        reports = verify_on_board(program, cal[:2], rpc=b.address, timeout=120)
        for report in reports:
            report.assert_ok()
            assert report.where.endswith(f":{b.port}") and report.target == str(model.target.triple)
            assert sum(c.dtype in ("int8", "uint8") for c in report.checks) >= 8
            assert any("nhwc" in c.tensor.op for c in report.checks)  # the converted kernels ran
        # the unmodified model deploys too, and its output equals QuantizedModel.run on the host
        remote = deploy(model, rpc=b.address, timeout=120)
        for x in cal[:2]:
            np.testing.assert_array_equal(remote.run(x), model.run(x))
        stats = remote.benchmark(cal[0], number=1, repeat=3)
        assert stats["median_ms"] > 0 and stats["p90_ms"] >= stats["median_ms"]
        remote.close()


@pytest.mark.slow
def test_rvv_model_on_board_without_vector_unit_fails_clearly(quantized, mod_and_data) -> None:
    """Code for +v on a plain rv64gc board dies with SIGILL: a DeployError, and the board survives."""
    _, cal = mod_and_data
    model = quantized("riscv64-rvv")
    with EmulatedBoard("riscv64") as b:
        t0 = time.monotonic()
        with pytest.raises(DeployError) as err:
            remote = deploy(model, rpc=b.address, timeout=60)
            remote.run(cal[0])
        assert_not_hung(t0, 60, "a SIGILL session")
        assert b.address in str(err.value)
        assert b.is_running(), "a crashing session must not take the board down"
        assert wait_for(lambda: "illegal instruction" in b.log_tail(50), timeout=10), b.log_tail(50)
        # and the same board still serves a model it can run
        ok = deploy(quantized("riscv64"), rpc=b.address, timeout=120)
        np.testing.assert_array_equal(ok.run(cal[0]), quantized("riscv64").run(cal[0]))


# --------------------------------------------------------------------------------------------------
# tracker


@pytest.fixture(scope="module")
def tracker():
    with LocalTracker() as t:
        yield t


@pytest.mark.slow
def test_deploy_through_tracker_with_two_boards(tracker, quantized, mod_and_data) -> None:
    _, cal = mod_and_data
    with (
        EmulatedBoard("aarch64", tracker=tracker.address, key="emu-a64") as a64,
        EmulatedBoard("riscv64-rvv", tracker=tracker.address, key="emu-rvv") as rvv,
    ):
        summary = tracker_summary(tracker.host, tracker.port)
        keys = {s["key"] for s in summary["server_info"]}
        assert {"server:emu-a64", "server:emu-rvv"} <= keys
        for key, board, preset in [("emu-a64", a64, "aarch64"), ("emu-rvv", rvv, "riscv64-rvv")]:
            model = quantized(preset)
            program = debug_build(model)
            remote = deploy(program, tracker=tracker.address, key=key, timeout=120)
            assert remote.board.endswith(f":{board.port}")
            verify_remote(program, remote, [cal[1]])[0].assert_ok()
            assert remote.benchmark(cal[1], number=1, repeat=2)["median_ms"] > 0
            remote.close()
            del remote
        # after the sessions the boards offer themselves again
        def both_free() -> bool:
            q = tracker_summary(tracker.host, tracker.port)["queue_info"]
            return all(q.get(k, {}).get("free", 0) >= 1 for k in ("emu-a64", "emu-rvv"))

        assert wait_for(both_free, timeout=30), tracker_summary(tracker.host, tracker.port)


def test_unknown_tracker_key_fails_fast(tracker, quantized) -> None:
    t0 = time.monotonic()
    with pytest.raises(DeployError) as err:
        deploy(quantized("aarch64"), tracker=tracker.address, key="no-such-board", timeout=30)
    assert_not_hung(t0, 30, "a request for an unknown key")
    msg = str(err.value)
    assert tracker.address in msg and "no-such-board" in msg and "no board is registered" in msg
    assert err.value.key == "no-such-board" and err.value.host == tracker.address


def test_unreachable_tracker_and_board_fail_fast(quantized) -> None:
    port = _free_port()
    with pytest.raises(DeployError, match="cannot reach the RPC tracker") as err:
        deploy(quantized("aarch64"), tracker=f"127.0.0.1:{port}", key="k", timeout=10)
    assert f"127.0.0.1:{port}" in str(err.value)
    with pytest.raises(DeployError, match="connection refused"):
        deploy(quantized("aarch64"), rpc=f"127.0.0.1:{port}", timeout=10, connect_timeout=5)


@pytest.mark.slow
def test_busy_board_times_out_instead_of_blocking(tracker, quantized) -> None:
    with EmulatedBoard("aarch64", tracker=tracker.address, key="emu-busy"):
        first = deploy(quantized("aarch64"), tracker=tracker.address, key="emu-busy", timeout=120)
        t0 = time.monotonic()
        with pytest.raises(DeployError, match="busy") as err:
            deploy(quantized("aarch64"), tracker=tracker.address, key="emu-busy", timeout=5)
        assert_not_hung(t0, 5, "a request for a busy board")
        assert "emu-busy" in str(err.value)
        first.close()


@pytest.mark.slow
def test_killed_board_gives_clear_error_within_timeout(tracker, quantized, mod_and_data) -> None:
    _, cal = mod_and_data
    model = quantized("aarch64")
    board = EmulatedBoard("aarch64", tracker=tracker.address, key="emu-doomed").start()
    try:
        remote = deploy(model, tracker=tracker.address, key="emu-doomed", timeout=20)
        np.testing.assert_array_equal(remote.run(cal[0]), model.run(cal[0]))
        board.kill()  # the board dies during the session
        t0 = time.monotonic()
        with pytest.raises(DeployError) as err:
            remote.run(cal[0])
        assert_not_hung(t0, 20, "a run on a killed board")
        assert "emu-doomed" in str(err.value) and tracker.address in str(err.value)
        # a new deployment to the dead board's key fails clearly too, within the time-out
        t0 = time.monotonic()
        with pytest.raises(DeployError) as err:
            deploy(model, tracker=tracker.address, key="emu-doomed", timeout=10, connect_timeout=5)
        assert_not_hung(t0, 10, "a deployment to a dead board")
        assert "emu-doomed" in str(err.value)
    finally:
        board.stop()


@pytest.mark.slow
def test_hung_board_times_out(quantized, mod_and_data) -> None:
    import signal

    _, cal = mod_and_data
    model = quantized("aarch64")
    with EmulatedBoard("aarch64") as b:
        remote = deploy(model, rpc=b.address, timeout=8)
        os.killpg(b.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(DeployError, match="time-out") as err:
                remote.run(cal[0])
            assert_not_hung(t0, 8, "a run on a stopped board")
            assert b.address in str(err.value)
        finally:
            os.killpg(b.pid, signal.SIGCONT)


# --------------------------------------------------------------------------------------------------
# command-line functions


def test_start_list_stop_board_functions(tracker) -> None:
    port = _free_port()
    assert boards_mod.main(["start", "--arch", "aarch64", "--port", str(port), "--tracker", tracker.address,
                            "--key", "emu-cli", "--name", "cli-test"]) == 0
    try:
        running = {b.name: b for b in boards_mod.list_boards()}
        assert "cli-test" in running and running["cli-test"].port == port
        sess = tvm.rpc.connect_tracker(tracker.host, tracker.port).request("emu-cli", session_timeout=30)
        assert tvm.runtime.tensor(np.ones(3, "float32"), sess.cpu()).numpy().sum() == 3
        del sess
    finally:
        assert boards_mod.main(["stop", "--name", "cli-test"]) == 0
    assert "cli-test" not in {b.name for b in boards_mod.list_boards()}


# --------------------------------------------------------------------------------------------------
# MetaSchedule through the RPC runner


@pytest.mark.slow
def test_metaschedule_rpc_runner_on_emulated_aarch64(tracker, mod_and_data, tmp_path) -> None:
    import tvm_arq.tune
    from tvm_arq.tune import RPCSettings, RunnerKind, TuneConfig

    mod, cal = mod_and_data
    small = build_graph(Spec(channels=4, size=6, ops=["conv"], seed=5))
    small_cal = calibration_set(small, 2, seed=1)
    with EmulatedBoard("aarch64", tracker=tracker.address, key="emu-tune"):
        cfg = TuneConfig(
            trials=4,
            trials_per_iter=4,
            work_dir=tmp_path / "tune",
            runner=RunnerKind.RPC,
            rpc=RPCSettings(key="emu-tune", tracker_host=tracker.host, tracker_port=tracker.port,
                            session_timeout_sec=120),
            num_threads=1,
            number=1,
            repeat=1,
            min_repeat_ms=0,
            progress=False,
            seed=0,
        )
        tuned = tvm_arq.build(small, None, "aarch64", calibration=small_cal, tuning=cfg, progress=False)
        db = tvm_arq.tune.open_database(tmp_path / "tune")
        records = db.get_all_tuning_records()
        assert records, "no tuning record was written"
        # measured on the board: finite run times (failed candidates get 1e10 s)
        secs = [float(s) for r in records if r.run_secs for s in r.run_secs]
        assert secs and min(secs) < 1e9, secs
        remote = deploy(tuned, tracker=tracker.address, key="emu-tune", timeout=120)
        np.testing.assert_array_equal(remote.run(small_cal[0]), tuned.run(small_cal[0]))
