"""Accuracy budget: what ``build(..., accuracy=AccuracyBudget(...))`` keeps, and what it costs.

Models: ``mnist`` (the committed MNIST CNN; calibration: the first ``--calib`` training digits, evaluation:
the first ``--n`` held-out test digits) and ``ppocr_cls`` (PP-OCR text-direction classifier; calibration and
evaluation: :func:`arq_bench.datasets.text_direction_set` with different seeds). Rows, each one build with ``measure_latency=True`` (untuned kernels, median on
this machine, final model vs the all-int8 one):

- ``top1, max_drop=<--max-drop>``: top-1 accuracy against the labels;
- ``agreement, max_drop=0``: top-1 agreement with fp32 must be 100 % (forces layers into higher precision when
  int8 changes any prediction);
- ``rel_err, max_drop=<--err-drop>`` (``--err-n`` samples): metric ``-100 x`` the mean relative squared output
  error against fp32, a budget all-int8 misses on both models, so that the search has to keep layers.

``--precision int16`` (default) lets the budget try int16 activations for a kept layer before float,
``--precision float`` keeps layers in float only (the behaviour before int16 existed); ``--rows`` picks rows.

Usage::

    python scripts/bench_budget.py --model mnist       # writes results/budget_mnist.{json,md}
    python scripts/bench_budget.py --model ppocr_cls --calib 32 --n 200
    python scripts/bench_budget.py --model mnist --rows rel_err --precision float --out results/budget_mnist_float
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import tvm

import tvm_arq
from arq_bench import zoo
from tvm_arq.frontend import prepare_module
from tvm_arq.quantize import compile_host, normalize_sample

logger = logging.getLogger("bench_budget")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist", choices=["mnist", "ppocr_cls"])
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="default: results/budget_<model>")
    ap.add_argument("--precision", default="int16", choices=["int16", "float"])
    ap.add_argument("--rows", nargs="+", default=["top1", "agreement", "rel_err"],
                    choices=["top1", "agreement", "rel_err"])
    ap.add_argument("--err-n", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8, help="samples of the sensitivity ranking")
    ap.add_argument("--err-drop", type=float, default=None, help="default: 0.05")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.model == "mnist":
        mod, params = tvm_arq.from_onnx(zoo.mnist_cnn())
        x_train, _ = zoo.mnist_train()
        x_test, y_test = zoo.mnist_test()
        cal, data, labels = list(x_train[:args.calib]), list(x_test[:args.n]), y_test[:args.n]
        cal_text, eval_text = f"first {args.calib} training digits", f"first {args.n} held-out test digits"
    else:
        from arq_bench import assets, datasets

        mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
        x_cal, _ = datasets.text_direction_set(args.calib, seed=1)
        x_eval, labels = datasets.text_direction_set(args.n, seed=0)
        cal, data = list(x_cal), list(x_eval)
        cal_text, eval_text = f"{args.calib} text lines (seed 1)", f"{args.n} text lines (seed 0)"
    rows = []
    err_data = data[:args.err_n]
    err_drop = args.err_drop if args.err_drop is not None else 0.05
    budgets = {
        "top1": (f"top1, max_drop={args.max_drop:g}",
                 lambda: tvm_arq.AccuracyBudget(data=data, labels=labels, metric="top1", max_drop=args.max_drop,
                                                measure_latency=True, precision=args.precision,
                                                samples=args.samples)),
        "agreement": ("agreement, max_drop=0",
                      lambda: tvm_arq.AccuracyBudget(data=data, max_drop=0.0, measure_latency=True,
                                                     precision=args.precision, samples=args.samples)),
        "rel_err": (f"rel_err ({len(err_data)} samples), max_drop={err_drop:g}",
                    lambda: tvm_arq.AccuracyBudget(data=err_data, max_drop=err_drop, measure_latency=True,
                                                   metric=rel_err_metric(mod, params, err_data),
                                                   precision=args.precision, samples=args.samples)),
    }
    for key in args.rows:
        name, make = budgets[key]
        budget = make()
        t0 = time.perf_counter()
        m = tvm_arq.build(mod, params, calibration=cal, accuracy=budget, progress=False)
        rep = m.accuracy_report
        rows.append({"row": name, "build_seconds": time.perf_counter() - t0, **rep.to_dict()})
        print(f"== {name}\n{rep.to_text()}\n")
    out = Path(args.out or f"results/budget_{args.model}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "calibration": cal_text, "evaluation": eval_text, "precision": args.precision,
            "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = [f"# Accuracy budget ({args.model})", "",
             f"Calibration: {meta['calibration']}; evaluation: {meta['evaluation']}. Latency: untuned kernels, "
             "median on this machine (shared 2-core host), final model vs all-int8.", "",
             f"Precision of kept layers: `--precision {args.precision}` (int16: int16 activations tried before "
             "float; float: float only).", "",
             "| budget | fp32 | all-int8 | final | drop | kept (precision) | float MACs | final ms | int8 ms | "
             "search s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = ", ".join(f"{k['name']} ({k['precision']})" for k in r["kept"]) or "nothing"
        lat = r["latency"] or {}
        lines.append(f"| {r['row']} | {r['fp32']:.2f} | {r['int8']:.2f} | {r['final']:.2f} | {r['drop']:.2f} | "
                     f"{kept} | {r['macs_kept']:,} / {r['macs_total']:,} | {lat.get('final_ms', float('nan')):.3f} "
                     f"| {lat.get('int8_ms', float('nan')):.3f} | {r['seconds']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def rel_err_metric(mod, params, data):
    """``metric(outputs, data)``: ``-100 x`` the mean relative squared error of the first output against fp32."""
    fmod = prepare_module(mod, params)
    vm = compile_host(fmod)
    ref = []
    for i, x in enumerate(data):
        arrays = normalize_sample(x, [(p.name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype))
                                      for p in fmod["main"].params], i)
        ref.append(np.asarray(vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy(), np.float64))

    def neg_rel_err_pct(outputs, _data) -> float:
        errs = []
        for o, r in zip(outputs, ref, strict=True):
            while isinstance(o, tuple | list):
                o = o[0]
            errs.append(np.sum((np.asarray(o, np.float64) - r) ** 2) / max(float(np.sum(r**2)), 1e-30))
        return -100.0 * float(np.mean(errs))

    return neg_rel_err_pct


if __name__ == "__main__":
    main()
