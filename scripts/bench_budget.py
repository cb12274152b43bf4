"""Accuracy budget: what ``build(..., accuracy=AccuracyBudget(...))`` keeps, and what it costs.

Models: ``mnist`` (the committed MNIST CNN; calibration: the first ``--calib`` training digits, evaluation:
the first ``--n`` held-out test digits) and ``ppocr_cls`` (PP-OCR text-direction classifier; calibration and
evaluation: :func:`arq_bench.datasets.text_direction_set` with different seeds). Rows, each one build with ``measure_latency=True`` (untuned kernels, median on
this machine, final model vs the all-int8 one):

- ``top1, max_drop=<--max-drop>``: top-1 accuracy against the labels;
- ``agreement, max_drop=0``: top-1 agreement with fp32 must be 100 % (forces layers into float when int8
  changes any prediction).

Usage::

    python scripts/bench_budget.py --model mnist       # writes results/budget_mnist.{json,md}
    python scripts/bench_budget.py --model ppocr_cls --calib 32 --n 200
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import tvm_arq
from arq_bench import zoo

logger = logging.getLogger("bench_budget")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist", choices=["mnist", "ppocr_cls"])
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="default: results/budget_<model>")
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
    for name, budget in (
        (f"top1, max_drop={args.max_drop:g}",
         tvm_arq.AccuracyBudget(data=data, labels=labels, metric="top1", max_drop=args.max_drop,
                                measure_latency=True)),
        ("agreement, max_drop=0", tvm_arq.AccuracyBudget(data=data, max_drop=0.0, measure_latency=True)),
    ):
        t0 = time.perf_counter()
        m = tvm_arq.build(mod, params, calibration=cal, accuracy=budget, progress=False)
        rep = m.accuracy_report
        rows.append({"row": name, "build_seconds": time.perf_counter() - t0, **rep.to_dict()})
        print(f"== {name}\n{rep.to_text()}\n")
    out = Path(args.out or f"results/budget_{args.model}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "calibration": cal_text, "evaluation": eval_text, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = [f"# Accuracy budget ({args.model})", "",
             f"Calibration: {meta['calibration']}; evaluation: {meta['evaluation']}. Latency: untuned kernels, "
             "median on this machine (shared 2-core host), final model vs all-int8.", "",
             "| budget | fp32 | all-int8 | final | drop | kept in float | float MACs | final ms | int8 ms | "
             "search s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = ", ".join(k["name"] for k in r["kept"]) or "nothing"
        lat = r["latency"] or {}
        lines.append(f"| {r['row']} | {r['fp32']:.2f} | {r['int8']:.2f} | {r['final']:.2f} | {r['drop']:.2f} | "
                     f"{kept} | {r['macs_kept']:,} / {r['macs_total']:,} | {lat.get('final_ms', float('nan')):.3f} "
                     f"| {lat.get('int8_ms', float('nan')):.3f} | {r['seconds']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
