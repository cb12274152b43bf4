"""The ``output`` calibrator against the tensor-local ones: accuracy (with 95 % intervals) and build time.

Models (from :mod:`arq_bench`):

- ``ppocr_rec``: PP-OCRv4 text recognizer (attention + LayerNorm), word accuracy on 200 rendered lines (seed 1000),
  64 calibration lines (seed 0), CTC greedy decoding as ``scripts/bench_ppocr_rec.py``;
- ``ppocr``: PP-OCR text-direction classifier, accuracy on 200 rendered lines, 60 calibration lines;
- ``mnist``: the committed MNIST CNN, accuracy on the held-out split, 32 calibration digits;
- ``efficientnet``: EfficientNet-Lite0, top-1 agreement with the float build on 1,000 held-out photo crops (the
  extended photo set of ``scripts/bench_accuracy.py``), 32 calibration crops.

Each calibrator's model is evaluated as its fake-quantized (quantize -> dequantize) module compiled for the host:
the ranking of calibrators needs only the ranges, and the integer LLVM compile of every variant takes minutes on a
shared non-VNNI host. Time is measured for the quantization stage (calibration + range selection, the only part
that depends on the calibrator; the integer compile that follows is the same for every calibrator) as wall time
and as process CPU time (the host is shared; CPU time is the steadier figure), after one warm-up run.

Intervals: 95 % Wilson per row; per pair (``output`` minus each other calibrator) a paired bootstrap interval of
the difference over the evaluation samples (1,000 resamples, seed 0).

Usage::

    python scripts/bench_output_calibrator.py --models ppocr_rec,ppocr,mnist,efficientnet --out results
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_output_calibrator")

CALIBRATORS = ("output", "minmax", "histogram", "percentile", "entropy", "mse", "redistribution")


def _ppocr_rec():
    import tvm_arq
    from arq_bench import assets
    from arq_bench.datasets import text_recognition_set

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_ppocr_rec import SHAPE, characters, ctc_greedy

    path = assets.fetch("ppocr_rec")
    chars = characters(path)
    mod, params = tvm_arq.from_onnx(str(path), shape=SHAPE)
    xc, _ = text_recognition_set(64, seed=0, width=SHAPE[3])
    xe, labels = text_recognition_set(200, seed=1000, width=SHAPE[3])
    target = [s.replace(" ", "") for s in labels]

    def decode(out: np.ndarray) -> str:
        return ctc_greedy(np.asarray(out)[0], chars).replace(" ", "")

    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    fp32 = [decode(sess.run(None, {name: x[None]})[0]) for x in xe]  # the untuned TVM float build is slow
    return mod, params, [x[None] for x in xc], xe, target, "word accuracy", decode, fp32


def _ppocr():
    import tvm_arq
    from arq_bench import assets, datasets

    mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
    x, y = datasets.text_direction_set(260, seed=0)
    return mod, params, [x[i:i + 1] for i in range(60)], x[60:], list(y[60:]), "accuracy", None, None


def _efficientnet():
    import tvm_arq
    from arq_bench import assets, datasets, zoo

    photos = assets.natural_photos(extended=True)
    mod, params = tvm_arq.from_onnx(zoo.efficientnet_lite0(), (1, 3, 224, 224))
    xe = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(1000, 224, seed=1, split="eval", photos=photos))
    cal = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(32, 224, seed=0, split="calib", photos=photos))
    return mod, params, [c[None] for c in cal], xe.astype(np.float32), None, "agreement", None, None


def _mnist():
    import tvm_arq
    from arq_bench import zoo

    mod, params = tvm_arq.from_onnx(str(zoo.mnist_cnn()), (1, 1, 28, 28))
    x, y = zoo.mnist_test()
    xtr, _ = zoo.mnist_train()
    order = np.random.default_rng(0).permutation(len(xtr))[:32]
    return mod, params, [xtr[i][None] for i in order], x, list(y), "accuracy", None, None


MODELS: dict[str, Callable] = {"ppocr_rec": _ppocr_rec, "ppocr": _ppocr, "efficientnet": _efficientnet,
                               "mnist": _mnist}


def run(model: str, calibrators: list[str], on_row: Callable[[list[dict]], None]) -> list[dict]:
    """fp32 and one row per calibrator of ``model``; rows carry per-sample correctness under ``"_hits"``.

    ``on_row(rows)`` is called after every row (partial results are written as they come)."""
    mod, params, cal, xe, ref, metric, decode, fp32 = MODELS[model]()
    import tvm

    from arq_bench.stats import wilson_interval
    from tvm_arq.build import prepare
    from tvm_arq.config import QuantConfig
    from tvm_arq.quantize import compile_host, quantize_module

    fmod = prepare(mod, params)

    def predict(m: tvm.IRModule) -> list:
        vm = compile_host(m)
        out = []
        for i in range(len(xe)):
            r = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(xe[i:i + 1])))
            r = np.asarray((r if hasattr(r, "numpy") else r[0]).numpy())
            out.append(decode(r) if decode is not None else int(r.argmax()))
        return out

    def row(name: str, preds: list, **extra) -> dict:
        hits = np.array([a == b for a, b in zip(preds, ref, strict=True)], bool)
        k, n = int(hits.sum()), len(hits)
        r = {"model": model, "calibrator": name, "metric": metric, "value": k / n,
             "ci95": list(wilson_interval(k, n)), "n": n, **extra, "_hits": hits}
        logger.info("%s", {a: b for a, b in r.items() if a != "_hits"})
        return r

    t0 = time.perf_counter()
    p32 = fp32 if fp32 is not None else predict(fmod)
    logger.info("%s fp32 evaluated in %.0f s", model, time.perf_counter() - t0)
    if ref is None:
        ref = p32
    rows = [row("fp32 (onnxruntime)" if fp32 is not None else "fp32", p32)]
    on_row(rows)
    quantize_module(fmod, cal[:2], QuantConfig(calibrator="minmax"), "int8", progress=False)  # warm-up
    for c in calibrators:
        t0, c0 = time.perf_counter(), time.process_time()
        res = quantize_module(fmod, cal, QuantConfig(calibrator=c), "int8", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        chosen: dict[str, int] = {}
        for qp in res.qparams.values():
            if "output-aware: " in qp.rule:
                k = qp.rule.split("output-aware: ")[1].split(" ")[0]
                chosen[k] = chosen.get(k, 0) + 1
        rows.append(row(c, predict(res.qdq_mod), quantize_wall_s=round(wall, 2), quantize_cpu_s=round(cpu, 2),
                        chosen=chosen))
        on_row(rows)
    return rows


def paired(rows: list[dict], base: str = "output") -> None:
    """Add to every row of a model the difference ``base - row`` in points with a paired bootstrap interval."""
    from arq_bench.stats import paired_bootstrap

    by = {r["calibrator"]: r for r in rows}
    if base not in by:
        return
    a = by[base]["_hits"].astype(np.float64)
    for r in rows:
        if r["calibrator"] == base:
            continue
        b = r["_hits"].astype(np.float64)
        _, (lo, hi) = paired_bootstrap(lambda idx, b=b: (a[idx].mean(), b[idx].mean()), len(a))
        r[f"{base}_minus_pt"] = round(100 * (a.mean() - b.mean()), 2)
        r[f"{base}_minus_ci95_pt"] = [round(100 * lo, 2), round(100 * hi, 2)]


def markdown(rows: list[dict], command: str) -> str:
    """The results table."""
    lines = ["# Output-aware calibrator vs tensor-local calibrators (hybrid scheme, fake-quantized module on the host)",
             "", f"Command: `{command}`", "",
             "| model | calibrator | metric | value [95 % CI] | n | output − this, pt [95 % paired CI] "
             "| quantize wall (s) | quantize CPU (s) | chosen candidates |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        d = (f"{r['output_minus_pt']:+.2f} [{r['output_minus_ci95_pt'][0]:+.2f}, {r['output_minus_ci95_pt'][1]:+.2f}]"
             if "output_minus_pt" in r else "-")
        lines.append(f"| {r['model']} | {r['calibrator']} | {r['metric']} | {100 * r['value']:.2f} "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {r['n']} | {d} | {r.get('quantize_wall_s', '-')} | "
                     f"{r.get('quantize_cpu_s', '-')} | {r.get('chosen', '') or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="ppocr_rec,ppocr,mnist,efficientnet")
    ap.add_argument("--calibrators", default=",".join(CALIBRATORS))
    ap.add_argument("--out", type=Path, default=Path("results"))
    ap.add_argument("--name", default="output_calibrator", help="stem of the JSON / markdown written under --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("tvm_arq", "arq_bench"):
        logging.getLogger(name).setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_output_calibrator.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[dict] = []

    def write(model_rows: list[dict]) -> None:
        paired(model_rows)
        clean = [{k: v for k, v in r.items() if k != "_hits"} for r in rows + model_rows]
        (args.out / f"{args.name}.json").write_text(json.dumps({"command": command, "rows": clean}, indent=1))
        (args.out / f"{args.name}.md").write_text(markdown(clean, command))

    for m in args.models.split(","):
        rows += run(m.strip(), [c.strip() for c in args.calibrators.split(",")], write)
    print(markdown([{k: v for k, v in r.items() if k != "_hits"} for r in rows], command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
