"""int16 activations (W8A16) against 8-bit ones: agreement with fp32, accuracy, output error, latency.

Models: ``mnist`` (the committed MNIST CNN; calibration: the first ``--calib`` training digits, evaluation: the
first ``--n`` held-out test digits, labels known) and ``ppocr_cls`` (PP-OCR text-direction classifier;
calibration and evaluation: :func:`arq_bench.datasets.text_direction_set` with seeds 1 and 0). Rows, each one
``tvm_arq.build`` for this machine (hybrid scheme, minmax calibrator, default schedules = untuned):

- ``fp32``: ``scheme="float"`` through the same build path;
- ``int8``: every activation 8-bit (uint8 storage on x86);
- ``int16``: every activation int16 (``QuantConfig(int16=(".*",))``), weights per-channel int8.

Per row: top-1 agreement with fp32 (%), top-1 accuracy against the labels (%), relative output error
``||y - y_fp32||^2 / ||y_fp32||^2`` averaged over the samples, median latency (``model.benchmark``), and one
bit-exactness check of the compiled model against the reference interpreter (sample 0, every tensor,
:func:`tvm_arq.verify.verify_host`).

Usage::

    python scripts/bench_int16.py                       # both models -> results/int16.{json,md}
    python scripts/bench_int16.py --models mnist --n 200
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

import tvm_arq
from arq_bench import zoo
from tvm_arq.verify import debug_build, verify_host

logger = logging.getLogger("bench_int16")


def load(model: str, calib: int, n: int):
    """``(mod, params, calibration, evaluation, labels, description)``."""
    if model == "mnist":
        mod, params = tvm_arq.from_onnx(zoo.mnist_cnn())
        x_train, _ = zoo.mnist_train()
        x_test, y_test = zoo.mnist_test()
        return (mod, params, list(x_train[:calib]), list(x_test[:n]), np.asarray(y_test[:n]),
                f"calibration: first {calib} training digits; evaluation: first {n} held-out test digits")
    from arq_bench import assets, datasets

    mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
    x_cal, _ = datasets.text_direction_set(calib, seed=1)
    x_eval, labels = datasets.text_direction_set(n, seed=0)
    return (mod, params, list(x_cal), list(x_eval), np.asarray(labels),
            f"calibration: {calib} text lines (seed 1); evaluation: {n} text lines (seed 0)")


def first(out) -> np.ndarray:
    while isinstance(out, tuple | list):
        out = out[0]
    return np.asarray(out, np.float64).reshape(-1)


def run_model(model: str, calib: int, n: int) -> dict:
    mod, params, cal, data, labels, desc = load(model, calib, n)
    data = [np.asarray(x)[None] if np.ndim(x) == 3 else np.asarray(x) for x in data]  # batch of one
    configs = {
        "fp32": tvm_arq.QuantConfig(scheme="float"),
        "int8": tvm_arq.QuantConfig(),
        "int16": tvm_arq.QuantConfig(int16=(".*",)),
    }
    outs: dict[str, list[np.ndarray]] = {}
    rows = []
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        m = tvm_arq.build(mod, params, calibration=None if name == "fp32" else cal, config=cfg, progress=False)
        build_s = time.perf_counter() - t0
        outs[name] = [first(m.run(x)) for x in data]
        lat = m.benchmark(data[0])
        row = {"row": name, "build_seconds": build_s, "latency_ms": lat["median_ms"]}
        if name != "fp32":
            dtypes = sorted({q.dtype for q in m.qparams.values()})
            row["activation_dtypes"] = dtypes
            row["fallbacks"] = len(m.fallbacks)
            rep = verify_host(debug_build(m), data[0], export=False)
            row["bit_exact"] = f"{sum(c.ok for c in rep.checks)}/{len(rep.checks)} tensors"
        rows.append(row)
        logger.warning("%s %s built in %.1f s", model, name, build_s)
    ref = outs["fp32"]
    for row in rows:
        o = outs[row["row"]]
        pred = np.asarray([int(np.argmax(v)) for v in o])
        ref_pred = np.asarray([int(np.argmax(v)) for v in ref])
        row["agreement"] = 100.0 * float(np.mean(pred == ref_pred))
        row["top1"] = 100.0 * float(np.mean(pred == labels))
        row["rel_err"] = float(np.mean([np.sum((a - b) ** 2) / max(np.sum(b ** 2), 1e-30)
                                        for a, b in zip(o, ref, strict=True)]))
    return {"model": model, "n": len(data), "data": desc, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mnist", "ppocr_cls"], choices=["mnist", "ppocr_cls"])
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", default="results/int16")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    res = [run_model(m, args.calib, args.n) for m in args.models]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"models": res}, indent=1) + "\n")
    lines = ["# int16 activations (W8A16) vs 8-bit", "",
             "`python scripts/bench_int16.py` on this machine (x86-64 Zen3 without VNNI, shared 2-core host; "
             "untuned default schedules). Hybrid scheme, minmax calibrator; int16 = every activation int16 "
             "(`QuantConfig(int16=('.*',))`), weights per-channel int8 in both.", ""]
    for r in res:
        lines += [f"## {r['model']} ({r['data']})", "",
                  "| row | agreement with fp32 % | top-1 % | rel. output error | activation dtypes | bit-exact "
                  "(sample 0) | latency ms | build s |", "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['row']} | {row['agreement']:.2f} | {row['top1']:.2f} | {row['rel_err']:.3g} | "
                         f"{', '.join(row.get('activation_dtypes', ['float32']))} | {row.get('bit_exact', '-')} | "
                         f"{row['latency_ms']:.3f} | {row['build_seconds']:.1f} |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
