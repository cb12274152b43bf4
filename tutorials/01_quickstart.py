"""Tutorial 01 — quickstart: ONNX -> hybrid int8 -> run -> per-layer report.

Run: ``.venv/bin/python tutorials/01_quickstart.py`` (``TVM_ARQ_QUICK=1`` for a small budget).

We quantize the PP-OCR text direction classifier (a MobileNetV3-small that tells 0° from 180° text lines,
shipped in the ``rapidocr-onnxruntime`` wheel) with 64 calibration lines, run the integer program, check it
bit for bit against the numpy reference interpreter, and print the per-layer report.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import tvm_arq
from arq_bench import assets, datasets

QUICK = os.environ.get("TVM_ARQ_QUICK") == "1"
OUT = Path(os.environ.get("TVM_ARQ_OUT", "results/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)

# 1. Import: fix the input shape; shape subgraphs and BatchNorm are folded by tvm_arq's frontend.
mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))

# 2. Data: calibration and evaluation sets are disjoint (different seeds).
n_cal, n_eval = (24, 40) if QUICK else (64, 200)
x_cal, _ = datasets.text_direction_set(n_cal, seed=1)
x_eval, y_eval = datasets.text_direction_set(n_eval, seed=2)

# 3. Quantize and compile for this machine. Use target="llvm -mtriple=aarch64" (or a preset such as
#    "aarch64-dotprod", "riscv64-rvv") to cross-compile for a board.
model = tvm_arq.build(mod, params, "host", calibration=list(x_cal[:, None]), scheme="hybrid",
                      calibrator="redistribution")
print(model.summary())

# 4. Run: integer inference, bit-exact with the reference interpreter.
y = model.run(x_eval[:1])
assert np.array_equal(y, model.reference(x_eval[:1])), "integer build differs from the reference"
pred = np.array([model.run(x_eval[i:i + 1]).argmax() for i in range(n_eval)])
print(f"int8 hybrid accuracy on {n_eval} held-out lines: {np.mean(pred == y_eval):.3f}")

# 5. Report: per tensor, which rule chose its range, the numbers, and the SQNR against fp32.
rep = tvm_arq.report(model, list(x_cal[:8, None]), max_samples=8)
print(rep.to_text())
rep.save_json(OUT / "01_report.json")
model.export_library(OUT / "01_ppocr_cls_int8.so")
print("wrote", OUT / "01_report.json", "and", OUT / "01_ppocr_cls_int8.so")
