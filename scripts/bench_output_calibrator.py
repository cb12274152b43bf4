"""The ``output`` calibrator against the tensor-local ones: accuracy and build time on real models.

Models (from :mod:`arq_bench`): ``ppocr`` (PP-OCR text-direction classifier, accuracy on 200 rendered text lines,
60 calibration lines, as ``tests/test_end_to_end.py``), ``efficientnet`` (EfficientNet-Lite0, top-1 agreement with
the float build on 200 held-out photo crops, 32 calibration crops, as ``scripts/bench_accuracy.py``), ``mnist``
(the committed MNIST CNN, accuracy on the held-out split, 32 calibration digits).

Each calibrator's model is evaluated as its fake-quantized (quantize -> dequantize) module compiled for the host:
the ranking of calibrators needs only the ranges, and the integer LLVM compile of every variant takes minutes on a
shared non-VNNI host. Time is measured for the quantization stage (calibration + range selection, the only part
that depends on the calibrator; the integer compile that follows is the same for every calibrator) as wall time
and as process CPU time (the host is shared; CPU time is the steadier figure), after one warm-up run.

Usage::

    python scripts/bench_output_calibrator.py --models ppocr,mnist --out results
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_output_calibrator")

CALIBRATORS = ("output", "minmax", "histogram", "percentile", "entropy", "mse", "redistribution")


def _ppocr():
    import tvm_arq
    from arq_bench import assets, datasets

    mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
    x, y = datasets.text_direction_set(260, seed=0)
    return mod, params, [x[i:i + 1] for i in range(60)], x[60:], y[60:], "accuracy"


def _efficientnet():
    import tvm_arq
    from arq_bench import datasets, zoo

    mod, params = tvm_arq.from_onnx(zoo.efficientnet_lite0(), (1, 3, 224, 224))
    xe = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(200, 224, seed=1, split="eval")).astype(np.float32)
    cal = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(32, 224, seed=0, split="calib"))
    return mod, params, [c[None] for c in cal], xe, None, "agreement"


def _mnist():
    import tvm_arq
    from arq_bench import zoo

    mod, params = tvm_arq.from_onnx(str(zoo.mnist_cnn()), (1, 1, 28, 28))
    x, y = zoo.mnist_test()
    xtr, _ = zoo.mnist_train()
    order = np.random.default_rng(0).permutation(len(xtr))[:32]
    return mod, params, [xtr[i][None] for i in order], x, y, "accuracy"


MODELS = {"ppocr": _ppocr, "efficientnet": _efficientnet, "mnist": _mnist}


def run(model: str, calibrators: list[str]) -> list[dict]:

    mod, params, cal, xe, ye, metric = MODELS[model]()
    import tvm

    from tvm_arq.build import prepare
    from tvm_arq.config import QuantConfig
    from tvm_arq.quantize import compile_host, quantize_module

    fmod = prepare(mod, params)

    def predict(m: tvm.IRModule) -> np.ndarray:
        vm = compile_host(m)
        return np.array([np.asarray(vm["main"](tvm.runtime.tensor(xe[i:i + 1])).numpy()).argmax()
                         for i in range(len(xe))])

    p32 = predict(fmod)
    ref = ye if ye is not None else p32
    rows = [{"model": model, "calibrator": "fp32", metric: float(np.mean(p32 == ref)), "n": len(xe)}]
    quantize_module(fmod, cal[:2], QuantConfig(calibrator="minmax"), "int8", progress=False)  # warm-up
    for c in calibrators:
        t0, c0 = time.perf_counter(), time.process_time()
        res = quantize_module(fmod, cal, QuantConfig(calibrator=c), "int8", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        p8 = predict(res.qdq_mod)
        chosen: dict[str, int] = {}
        for qp in res.qparams.values():
            if "output-aware: " in qp.rule:
                k = qp.rule.split("output-aware: ")[1].split(" ")[0]
                chosen[k] = chosen.get(k, 0) + 1
        row = {"model": model, "calibrator": c, metric: float(np.mean(p8 == ref)), "n": len(xe),
               "quantize_wall_s": round(wall, 2), "quantize_cpu_s": round(cpu, 2), "chosen": chosen}
        logger.info("%s", row)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="ppocr,mnist,efficientnet")
    ap.add_argument("--calibrators", default=",".join(CALIBRATORS))
    ap.add_argument("--out", type=Path, default=Path("results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("tvm_arq", "arq_bench"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rows = []
    for m in args.models.split(","):
        rows += run(m.strip(), [c.strip() for c in args.calibrators.split(",")])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "output_calibrator.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Output-aware calibrator vs tensor-local calibrators (hybrid scheme, fake-quantized module on the host)", "",
             "| model | calibrator | metric | value | n | quantize wall (s) | quantize CPU (s) | chosen candidates |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        metric = "accuracy" if "accuracy" in r else "agreement"
        lines.append(f"| {r['model']} | {r['calibrator']} | {metric} | {100 * r[metric]:.2f} | {r['n']} | "
                     f"{r.get('quantize_wall_s', '-')} | {r.get('quantize_cpu_s', '-')} | {r.get('chosen', '') or '-'} |")
    (args.out / "output_calibrator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
