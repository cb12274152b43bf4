"""Tutorial 03 — tune a quantized model for an aarch64 board over RPC, deploy it, check it bit for bit.

Run: ``.venv/bin/python tutorials/03_tune_and_deploy.py`` (``TVM_ARQ_QUICK=1`` for a small budget).

Without arguments, an *emulated* aarch64 board (our RPC server and the board's TVM runtime under
qemu-user, see ``tvm-arq board``) is started and registered with a local RPC tracker, exactly as a real
board would be. To use a real board instead:

    python tutorials/03_tune_and_deploy.py --tracker tracker-host:9190 --key rk3588 --threads 4
    python tutorials/03_tune_and_deploy.py --rpc 192.168.1.20:9090 --threads 4

(or the environment variables ``TVM_ARQ_RPC``, ``TVM_ARQ_TRACKER``, ``TVM_ARQ_KEY``). ``--target`` picks the
board's CPU (default ``aarch64``; e.g. ``aarch64-dotprod`` for Cortex-A55/A76 and later).

What happens:

1. the bundled MNIST CNN is quantized with the hybrid scheme (calibration: training digits);
2. MetaSchedule tunes its kernels: every candidate is cross-compiled here and timed **on the board**
   through TVM's RPC runner; the records go to a JSON database in ``$TVM_ARQ_OUT/03_tuning`` (re-running
   resumes instead of starting over);
3. the tuned program is uploaded and run on the board; its outputs must equal, bit for bit, both the host
   build of the same integer program and the numpy reference interpreter;
4. the board's latency is measured. On an emulated board that number is a qemu timing, not a board
   latency (see tutorial 04).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import tvm_arq
from arq_bench import zoo
from tvm_arq.deploy import EmulatedBoard, LocalTracker
from tvm_arq.tune import RPCSettings, RunnerKind, TuneConfig

QUICK = os.environ.get("TVM_ARQ_QUICK") == "1"
OUT = Path(os.environ.get("TVM_ARQ_OUT", "results/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--rpc", default=os.environ.get("TVM_ARQ_RPC"), help="HOST:PORT of a board's RPC server")
ap.add_argument("--tracker", default=os.environ.get("TVM_ARQ_TRACKER"), help="HOST:PORT of an RPC tracker")
ap.add_argument("--key", default=os.environ.get("TVM_ARQ_KEY"), help="tracker key of the boards")
ap.add_argument("--target", default="aarch64", help="the board's CPU (default: aarch64)")
ap.add_argument("--threads", type=int, default=1, help="cores of the board the kernels may use (default: 1)")
ap.add_argument("--trials", type=int, default=8 if QUICK else 64, help="MetaSchedule trials")
args = ap.parse_args()
if args.tracker and not args.key:
    ap.error("--tracker needs --key")


@contextlib.contextmanager
def board_connection() -> Iterator[tuple[RPCSettings, dict[str, str]]]:
    """(how MetaSchedule reaches the board, how deploy() reaches it): a real board or an emulated one."""
    if args.rpc:
        yield RPCSettings.server(args.rpc), {"rpc": args.rpc}
    elif args.tracker:
        host, port = args.tracker.rsplit(":", 1)
        yield RPCSettings(key=args.key, tracker_host=host, tracker_port=int(port)), {"tracker": args.tracker,
                                                                                       "key": args.key}
    else:
        print("no board given: starting an emulated aarch64 board (qemu-user) behind a local RPC tracker")
        with LocalTracker() as tracker, EmulatedBoard("aarch64", tracker=tracker.address, key="emu-a64"):
            yield (RPCSettings(key="emu-a64", tracker_host=tracker.host, tracker_port=tracker.port),
                   {"tracker": tracker.address, "key": "emu-a64"})


# 1. Model and data: calibration on training digits, checks on held-out test digits.
mod, params = tvm_arq.from_onnx(zoo.mnist_cnn(), shape=(1, 1, 28, 28))
x_train, _ = zoo.mnist_train()
x_test, y_test = zoo.mnist_test()
n_cal, n_check = (16, 4) if QUICK else (128, 16)
calibration = [x_train[i:i + 1] for i in range(n_cal)]

with board_connection() as (rpc_settings, where):
    # 2. Tune on the board. Candidates are linked with the target's cross toolchain and timed remotely.
    tuning = TuneConfig(trials=args.trials, trials_per_iter=min(args.trials, 16), work_dir=OUT / "03_tuning",
                        runner=RunnerKind.RPC, rpc=rpc_settings, num_threads=args.threads,
                        number=1, repeat=3 if not QUICK else 1, min_repeat_ms=0 if QUICK else 20, seed=0)
    model = tvm_arq.build(mod, params, args.target, calibration=calibration, scheme="hybrid", tuning=tuning)
    print(model.summary())
    model.export_library(OUT / "03_mnist_hybrid_tuned.so")

    # 3. Deploy and check bit-exactness against the host build and the numpy integer reference.
    with tvm_arq.deploy(model, timeout=120, **where) as remote:
        print(f"deployed to board {remote.board}")
        correct = 0
        mismatches: list[str] = []
        for i in range(n_check):
            x = x_test[i:i + 1]
            on_board = remote.run(x)
            on_host = model.run(x)
            if not np.array_equal(on_board, on_host):
                mismatches.append(f"sample {i}: board output differs from the host build")
            if not np.array_equal(on_host, model.reference(x)):
                mismatches.append(f"sample {i}: host build differs from the reference")
            correct += int(on_board.argmax() == y_test[i])
        bitexact_samples = n_check - len({m.split(":")[0] for m in mismatches})
        print(f"{n_check} test digits: {bitexact_samples}/{n_check} bit-exact on the board, on the host build and "
              f"in the reference; {correct}/{n_check} classified correctly")

        # 4. Latency on the board.
        stats = remote.benchmark(x_test[:1], number=5 if not QUICK else 2, repeat=5 if not QUICK else 3)
emulated = not (args.rpc or args.tracker)
print(f"board latency: median {stats['median_ms']:.3f} ms, p90 {stats['p90_ms']:.3f} ms"
      + (" (EMULATED board: a qemu-user timing, not the latency of any real board)" if emulated else ""))
(OUT / "03_tune_and_deploy.json").write_text(json.dumps({
    "target": str(model.target.triple), "trials": args.trials, "emulated": emulated, "checked_samples": n_check,
    "bitexact": not mismatches, "bitexact_samples": bitexact_samples, "mismatches": mismatches,
    "correct": correct, "latency": stats, "board": where,
}, indent=1))
print("wrote", OUT / "03_tune_and_deploy.json", "and", OUT / "03_mnist_hybrid_tuned.so")
if mismatches:
    raise SystemExit("NOT bit-exact:\n" + "\n".join(mismatches))
