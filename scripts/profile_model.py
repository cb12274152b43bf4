"""Where the time goes: per-kernel profile of a tvm_arq build on this machine (``model.profile``).

Builds one model of ``scripts/bench_latency.py``'s workloads (same calibration samples), default schedules or
a tuning database (``--work-dir``: the kernels it holds use their tuned schedule, the others the default one),
profiles it with :meth:`tvm_arq.QuantizedModel.profile` and writes ``--out``/``profile_<model>.{json,md}``:
the top kernels, the share of each kernel category (pointwise / depthwise / add / quantize / layout ...),
the end-to-end time and the overhead (end to end minus the sum of kernels).

Usage::

    python scripts/profile_model.py --model efficientnet_lite0                 # default schedules
    python scripts/profile_model.py --model mnist_cnn --work-dir tuning/latency/mnist_cnn/tvm_int8 --trials 64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

logger = logging.getLogger("profile_model")


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def llvm_cpu() -> str:
    import tvm

    return str(tvm.target.codegen.llvm_get_system_cpu())


def build(name: str, scheme: str, n_calib: int, work_dir: str | None, trials: int, threads: int):  # noqa: ANN201
    """The workload and its tvm_arq build (tuned with ``trials`` > 0 into / from ``work_dir``)."""
    from bench_latency import WORKLOADS  # the latency benchmark's models and calibration samples

    import tvm_arq

    w = WORKLOADS[name](n_calib)
    mod, params = tvm_arq.from_onnx(w.onnx_model, shape={w.input_name: w.shape})
    tuning = None
    if work_dir:
        from tvm_arq.tune import TuneConfig

        tuning = TuneConfig(trials=max(1, trials), work_dir=work_dir, num_threads=threads, trials_per_iter=4,
                            progress=False)
    model = tvm_arq.build(mod, params, "host", calibration=w.calibration, scheme=scheme, tuning=tuning,
                          progress=False)
    return w, model


def render(name: str, prof, meta: dict, top: int) -> str:  # noqa: ANN001 - tvm_arq.profiling.Profile
    """The markdown report."""
    lines = [f"# Profile: {name} ({meta['scheme']}), {meta['schedules']}", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; {meta['threads']} TVM threads; load average at start "
             f"{meta['loadavg_start']}, at end {meta['loadavg_end']} (shared machine: absolute times are noisy). "
             f"{prof.method[:1].upper()}{prof.method[1:]}.", "",
             f"End to end **{prof.end_to_end_us / 1e3:.3f} ms**; sum of the {len(prof.kernels)} kernels "
             f"{prof.kernels_us / 1e3:.3f} ms ({prof.macs / 1e6:.1f} MMAC counted, "
             f"{prof.macs / prof.kernels_us / 1e3:.1f} GMAC/s); overhead (end to end - kernels) "
             f"**{prof.overhead_us / 1e3:.3f} ms ({prof.overhead_us / prof.end_to_end_us:.1%})**. From the fastest "
             f"measurement of each (less sensitive to the load): end to end {prof.end_to_end_min_us / 1e3:.3f} ms, "
             f"kernels {prof.kernels_min_us / 1e3:.3f} ms, overhead **{prof.overhead_min_us / 1e3:.3f} ms "
             f"({prof.overhead_min_us / prof.end_to_end_min_us:.1%})**.", "",
             "## By category", "",
             "| category | kernels | calls | ms | share of kernels | MMAC | GMAC/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for cat, r in prof.by_category().items():
        gm = f"{r['gmacs']:.1f}" if r["gmacs"] else "-"
        mm = f"{r['macs'] / 1e6:.1f}" if r["macs"] else "-"
        lines.append(f"| {cat} | {r['kernels']} | {r['calls']} | {r['us'] / 1e3:.3f} | {r['share']:.1%} | {mm} | {gm} |")
    lines += ["", "Categories: pointwise = 1x1 conv (and dense), conv = other dense convs, depthwise, add = residual "
              "adds (with their requantization), quantize = the float<->int8 boundary kernels (input quantize to "
              "NHWC, output dequantize), layout = data movement, activation = lookup tables.", "",
              f"## Top {top} kernels", "",
              "| kernel | op | shape (in -> out) | calls | us (mean) | us (fastest) | share | MMAC | GMAC/s |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in prof.kernels[:top]:
        mm = f"{k.macs / 1e6:.2f}" if k.macs else "-"
        gm = f"{k.gmacs:.1f}" if k.gmacs is not None else "-"
        lines.append(f"| {k.name} | {k.op} | {k.shape_text} | {k.calls} | {k.us:.1f} | {k.us_min:.1f} | {k.share:.1%} | "
                     f"{mm} | {gm} |")
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--scheme", default="hybrid", choices=["hybrid", "symmetric"])
    ap.add_argument("--calib", type=int, default=16, help="calibration samples (default: 16)")
    ap.add_argument("--work-dir", default=None, help="tuning database directory (default: untuned, default schedules)")
    ap.add_argument("--trials", type=int, default=0, help="with --work-dir: trials to tune first (0: use the records)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--stem", default=None, help="output file name without suffix (default: profile_<model>)")
    ap.add_argument("--note", action="append", default=[], help="a line appended to the markdown")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    load0 = " ".join(f"{v:.1f}" for v in os.getloadavg())
    t0 = time.perf_counter()
    w, model = build(args.model, args.scheme, args.calib, args.work_dir, args.trials, args.threads)
    logger.info("built in %.0f s", time.perf_counter() - t0)
    prof = model.profile(w.sample, repeat=args.repeat)
    print(prof.to_text(top=args.top))
    meta = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
            "machine": f"{cpu_name()}, {os.cpu_count()} logical cores, LLVM CPU `{llvm_cpu()}`",
            "threads": args.threads, "scheme": args.scheme, "loadavg_start": load0,
            "loadavg_end": " ".join(f"{v:.1f}" for v in os.getloadavg()),
            "schedules": f"tuning database {args.work_dir}" if args.work_dir else "default schedules (untuned)",
            "notes": args.note}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or f"profile_{args.model}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "profile": prof.to_dict()}, indent=1))
    (out / f"{stem}.md").write_text(render(args.model, prof, meta, args.top))
    print(f"wrote {out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
