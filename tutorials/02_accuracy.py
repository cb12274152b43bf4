"""Tutorial 02 — accuracy: hybrid vs symmetric vs asymmetric, and the calibrators, on a real model.

Run: ``.venv/bin/python tutorials/02_accuracy.py`` (``TVM_ARQ_QUICK=1`` for a small budget).

On the PP-OCR direction classifier we compare the schemes (all with per-channel symmetric int8 weights)
and, for hybrid, every calibrator; then plot per-layer SQNR of hybrid vs symmetric.
The full benchmark over EfficientNet-Lite0, YOLOX-Tiny and an MNIST CNN is ``scripts/bench_accuracy.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import tvm_arq
from arq_bench import assets, datasets
from tvm_arq.report import compare_text, plot_sqnr, report

QUICK = os.environ.get("TVM_ARQ_QUICK") == "1"
OUT = Path(os.environ.get("TVM_ARQ_OUT", "results/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)

mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
n_cal, n_eval = (24, 40) if QUICK else (100, 300)
x_cal, _ = datasets.text_direction_set(n_cal, seed=1)
x_eval, y_eval = datasets.text_direction_set(n_eval, seed=2)
cal = list(x_cal[:, None])


def evaluate(model) -> tuple[float, np.ndarray]:
    logits = np.concatenate([model.run(x_eval[i:i + 1]) for i in range(n_eval)])
    return float(np.mean(logits.argmax(1) == y_eval)), logits


acc32, logits32 = evaluate(tvm_arq.build(mod, params, "host", scheme="float"))
rows = [("fp32", "-", acc32, 1.0)]
models = {}
runs = [("symmetric", "minmax"), ("asymmetric", "minmax")]
calibrators = ["minmax", "redistribution"] if QUICK else [c.value for c in tvm_arq.Calibrator]
runs += [("hybrid", c) for c in calibrators]
for scheme, calibrator in runs:
    m = tvm_arq.build(mod, params, "host", calibration=cal, scheme=scheme, calibrator=calibrator, progress=False)
    acc, logits = evaluate(m)
    rows.append((scheme, calibrator, acc, float(np.mean(logits.argmax(1) == logits32.argmax(1)))))
    if calibrator == "minmax" and scheme in ("hybrid", "symmetric"):
        models[scheme] = m

print(f"{'scheme':<11}{'calibrator':<16}{'top-1':>7}{'agree fp32':>12}")
for s, c, a, g in rows:
    print(f"{s:<11}{c:<16}{a:>7.3f}{g:>12.3f}")
(OUT / "02_accuracy.json").write_text(json.dumps(
    [{"scheme": s, "calibrator": c, "top1": a, "agreement": g, "n": n_eval} for s, c, a, g in rows], indent=1))

reports = {name: report(m, cal[:8], max_samples=8, progress=False) for name, m in models.items()}
print(compare_text(reports))
plot_sqnr(reports, OUT / "02_sqnr_hybrid_vs_symmetric.png")
print("wrote", OUT / "02_sqnr_hybrid_vs_symmetric.png")
