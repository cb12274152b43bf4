"""Concurrency: one compiled model served from many Python threads gives the sequential results, never crashes.

A Relax VM keeps its registers and call frames in the VM object, so two threads calling one VM corrupt each
other (segfaults, ``Check failed: reg < frame->register_file.size()``). ``QuantizedModel.run`` gives every
thread its own VM over the shared executable.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.robustness._models import build, conv_module
from tests.robustness._tally import tried

N_THREADS = 6
CALLS = 12


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 3, 3, 3)).astype("float32")
    calib = [rng.normal(size=(1, 3, 5, 5)).astype("float32") for _ in range(8)]
    return build(conv_module(w, rng.normal(size=8).astype("float32"), act="relu"), calib)


@pytest.mark.parametrize("first_call_in_threads", [True, False])
def test_run_from_many_threads_matches_sequential(model, first_call_in_threads):
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(1, 3, 5, 5)).astype("float32") for _ in range(N_THREADS * CALLS)]
    if not first_call_in_threads:
        model.run(xs[0])
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(N_THREADS)

    def worker(t: int) -> None:
        try:
            barrier.wait()  # start together: the first calls (VM creation) race too
            for i in range(t, len(xs), N_THREADS):
                got[i] = np.array(model.run(xs[i]), copy=True)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert errors == []
    assert sorted(got) == list(range(len(xs)))
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(got[i], model.run(x))
        np.testing.assert_array_equal(got[i], model.reference(x))
        tried()
