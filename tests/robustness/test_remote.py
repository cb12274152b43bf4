"""The remote module on emulated boards (slow): many threads on one ``RemoteModel`` give the sequential
results; non-finite inputs give the host's defined results bit for bit; a library for another CPU is refused
before the upload with both architectures named."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tvm_arq
from tests.robustness._models import conv_module
from tests.robustness._tally import tried
from tvm_arq.deploy import DeployError, EmulatedBoard, deploy, deploy_library, save_model

pytestmark = pytest.mark.slow

N_THREADS = 4
CALLS = 3


def _model(target: str):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype("float32")
    calib = [rng.normal(size=(1, 3, 5, 5)).astype("float32") for _ in range(8)]
    return tvm_arq.build(conv_module(w, rng.normal(size=4).astype("float32"), act="relu"), None, target,
                         calibration=calib, progress=False)


@pytest.fixture(scope="module")
def aarch64_board():
    with EmulatedBoard("aarch64") as board:
        yield board


def test_remote_run_from_many_threads_matches_sequential(aarch64_board) -> None:
    model = _model("aarch64")
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(1, 3, 5, 5)).astype("float32") for _ in range(N_THREADS * CALLS)]
    with deploy(model, rpc=aarch64_board.address, timeout=120) as remote:
        sequential = [remote.run(x) for x in xs]
        got: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(N_THREADS)

        def worker(t: int) -> None:
            try:
                barrier.wait()
                for i in range(t, len(xs), N_THREADS):
                    got[i] = remote.run(xs[i])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        for i, want in enumerate(sequential):
            np.testing.assert_array_equal(got[i], want)
            np.testing.assert_array_equal(want, model.run(xs[i]))  # and the host
    tried(len(xs))


@pytest.mark.parametrize("board", ["aarch64", "riscv64-rvv"])
def test_nonfinite_inputs_on_boards_match_host(board) -> None:
    from tvm_arq.deploy import BOARDS

    model = _model(BOARDS[board].target)
    x = np.random.default_rng(2).normal(size=(1, 3, 5, 5)).astype("float32")
    x[0, 0, 0, 0], x[0, 1, 2, 3], x[0, 2, 4, 4] = np.nan, np.inf, -np.inf
    with EmulatedBoard(board) as b, deploy(model, rpc=b.address, timeout=120) as remote:
        got = remote.run(x)
    np.testing.assert_array_equal(got, model.run(x))
    np.testing.assert_array_equal(got, model.reference(x))
    tried()


def test_library_for_another_cpu_is_refused_before_upload(aarch64_board, tmp_path) -> None:
    model = _model("riscv64")
    lib = save_model(model, tmp_path / "m.so")  # writes m.so.json: target riscv64-linux-gnu
    with pytest.raises(DeployError, match=r"built for riscv64 \(riscv64.*\) but the board is aarch64"):
        deploy_library(lib, rpc=aarch64_board.address, timeout=60)
    with pytest.raises(DeployError, match=r"built for riscv64.*but the board is aarch64.*nothing was uploaded"):
        deploy(model, rpc=aarch64_board.address, timeout=60)
    # the board is free again for the right library
    with deploy(_model("aarch64"), rpc=aarch64_board.address, timeout=120) as remote:
        remote.run(np.zeros((1, 3, 5, 5), "float32"))
    tried(2)
