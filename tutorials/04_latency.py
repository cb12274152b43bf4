"""Tutorial 04 — tuned latency: hybrid vs symmetric vs fp32, on the x86 host and on an emulated aarch64 board.

Run: ``.venv/bin/python tutorials/04_latency.py`` (``TVM_ARQ_QUICK=1`` for a small budget).

Each of the three programs (fp32, symmetric int8, hybrid int8 — same model, same pipeline) is tuned with
MetaSchedule for two targets, then timed:

- **x86 host** (this machine's CPU): tuned with the local runner, timed here. These are real latencies of
  this CPU (on a busy machine they are noisy; compare them, do not quote them).
- **aarch64, emulated**: tuned through the RPC runner on an aarch64 board emulated with qemu-user (see
  ``tvm-arq board``), deployed and timed there with TVM's remote time evaluator.

**Be careful with the emulated numbers.** qemu-user translates every aarch64 instruction into x86 code:
kernels run 8×–500× slower than on a real core, and the slowdown differs per instruction mix (NEON
integer dot products, float FMAs and scalar code are translated very differently). The emulated column
therefore is *not* a board latency, and even the ratios between schemes are only indicative. Use it to
check that the tuned programs run and that the tuning path works; measure real boards with
``tutorials/03_tune_and_deploy.py --rpc ...`` or ``tvm-arq bench``.

The model is the bundled MNIST CNN: it is small, so per-call overheads weigh more than on a large
network. Quick mode (``TVM_ARQ_QUICK=1``) uses a handful of trials: tvm_arq's int8 kernels start from their
default tensorized schedules, but MetaSchedule has no such starting point for the fp32 kernels, so with
a handful of trials most fp32 kernels stay naive and the quick-mode fp32 bars are **not** a fair baseline.
Only the full run (64 trials per program) compares the schemes.

Writes ``04_latency.json`` and the bar chart ``04_latency.png`` to ``$TVM_ARQ_OUT`` (default
``results/tutorials``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import tvm_arq  # noqa: E402
from arq_bench import zoo  # noqa: E402
from tvm_arq.deploy import EmulatedBoard, LocalTracker  # noqa: E402
from tvm_arq.tune import RPCSettings, RunnerKind, TuneConfig  # noqa: E402

QUICK = os.environ.get("TVM_ARQ_QUICK") == "1"
OUT = Path(os.environ.get("TVM_ARQ_OUT", "results/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
TRIALS = 4 if QUICK else 64
NUMBER, REPEAT = (3, 3) if QUICK else (20, 10)
SCHEMES = [("fp32", "float"), ("symmetric", "symmetric"), ("hybrid", "hybrid")]

mod, params = tvm_arq.from_onnx(zoo.mnist_cnn(), shape=(1, 1, 28, 28))
x_train, _ = zoo.mnist_train()
x_test, _ = zoo.mnist_test()
calibration = [x_train[i:i + 1] for i in range(16 if QUICK else 128)]
x = x_test[:1]


def tuning(target_dir: str, scheme: str, **kw) -> TuneConfig:
    return TuneConfig(trials=TRIALS, trials_per_iter=min(TRIALS, 16), work_dir=OUT / "04_tuning" / target_dir / scheme,
                      seed=0, progress=True, **kw)


results: dict[str, dict[str, dict[str, float]]] = {"x86 host": {}, "aarch64 (emulated)": {}}

# 1. The host: local runner, timed here. (Single-threaded, like the emulated board.)
for name, scheme in SCHEMES:
    cal = None if scheme == "float" else calibration
    model = tvm_arq.build(mod, params, "host", calibration=cal, scheme=scheme,
                          tuning=tuning("host", name, num_threads=1))
    results["x86 host"][name] = model.benchmark(x, number=NUMBER, repeat=REPEAT)
    print(f"x86 host            {name:<10} median {results['x86 host'][name]['median_ms']:.3f} ms")

# 2. An emulated aarch64 board behind a local tracker (MetaSchedule's RPC runner finds it by key).
with LocalTracker() as tracker, EmulatedBoard("aarch64", tracker=tracker.address, key="emu-a64"):
    rpc = RPCSettings(key="emu-a64", tracker_host=tracker.host, tracker_port=tracker.port)
    for name, scheme in SCHEMES:
        cal = None if scheme == "float" else calibration
        model = tvm_arq.build(mod, params, "aarch64", calibration=cal, scheme=scheme,
                              tuning=tuning("aarch64", name, runner=RunnerKind.RPC, rpc=rpc, num_threads=1,
                                            number=1, repeat=1, min_repeat_ms=0))
        with tvm_arq.deploy(model, tracker=tracker.address, key="emu-a64", timeout=120) as remote:
            if scheme == "float":  # float code may round differently on another ISA (e.g. fused multiply-add)
                np.testing.assert_allclose(remote.run(x), model.run(x), rtol=1e-3, atol=1e-3)
            else:  # integer programs are bit-exact everywhere
                assert np.array_equal(remote.run(x), model.run(x)), f"{name}: board output differs from the host"
            results["aarch64 (emulated)"][name] = remote.benchmark(x, number=NUMBER, repeat=REPEAT)
        print(f"aarch64 (emulated)  {name:<10} median {results['aarch64 (emulated)'][name]['median_ms']:.3f} ms")

# 3. Table, ratios to fp32, JSON and a bar chart (one panel per target: the scales differ by orders of
#    magnitude, and emulated milliseconds must not be read as board milliseconds).
print()
print(f"{'target':<20}{'scheme':<11}{'median ms':>10}{'p90 ms':>9}{'vs fp32':>9}")
for target, rows in results.items():
    base = rows["fp32"]["median_ms"]
    for name, r in rows.items():
        r["speedup_vs_fp32"] = base / r["median_ms"]
        print(f"{target:<20}{name:<11}{r['median_ms']:>10.3f}{r['p90_ms']:>9.3f}{r['speedup_vs_fp32']:>8.2f}x")
print("aarch64 (emulated): qemu-user timings, NOT board latency; even the ratios are only indicative.")
QUICK_NOTE = (f"QUICK MODE ({TRIALS} trials): most fp32 kernels are untuned, so the fp32 bars and the speed-ups "
              "are not a fair comparison")
if QUICK:
    print(QUICK_NOTE)

(OUT / "04_latency.json").write_text(json.dumps({
    "model": "mnist_cnn (bundled)", "trials_per_program": TRIALS, "threads": 1, "number": NUMBER,
    "repeat": REPEAT, "quick": QUICK, "results": results,
    "caveat": "aarch64 numbers come from qemu-user emulation: not board latency; ratios only indicative"
              + (f"; {QUICK_NOTE}" if QUICK else ""),
}, indent=1))

fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
colors = {"fp32": "#888888", "symmetric": "#4C72B0", "hybrid": "#DD8452"}
for ax, (target, rows) in zip(axes, results.items(), strict=True):
    names = list(rows)
    med = [rows[n]["median_ms"] for n in names]
    bars = ax.bar(names, med, color=[colors[n] for n in names])
    for bar, n in zip(bars, names, strict=True):
        ax.annotate(f"{rows[n]['speedup_vs_fp32']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(target + ("\nqemu timing, not board latency" if "emulated" in target else "\nthis CPU, 1 thread"),
                 fontsize=9)
    ax.set_ylabel("median latency, ms")
title = f"MNIST CNN, tuned ({TRIALS} MetaSchedule trials per program); labels: speed-up vs fp32"
fig.suptitle(title + ("\n" + QUICK_NOTE if QUICK else ""), fontsize=9, color="firebrick" if QUICK else "black")
fig.tight_layout()
fig.savefig(OUT / "04_latency.png", dpi=120)
print("wrote", OUT / "04_latency.json", "and", OUT / "04_latency.png")
