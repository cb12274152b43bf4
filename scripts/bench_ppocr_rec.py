"""PP-OCRv4 text recognizer (attention + LayerNorm): float fallbacks per target, bit-exactness on the host and
on emulated boards, and text-recognition accuracy of the integer matmul blocks (issue 13).

- fallbacks: the ``ppocr_rec`` asset (1x3x48x320) built with the hybrid scheme for ``host``,
  ``aarch64-dotprod`` and ``riscv64-rvv`` (build only): ``model.fallbacks``;
- bit-exact: every integer tensor of the shipped program (``tvm_arq.verify``) on the host and on the emulated
  aarch64 and riscv64+V boards, against the numpy reference interpreter;
- accuracy: CTC greedy decoding (argmax per time step, repeats collapsed, blank dropped) with the model's own
  character list (the ``character`` metadata of the ONNX file: ``ppocr_keys_v1.txt``, blank first, space
  last) on rendered text lines (``arq_bench.datasets.text_recognition_set``; calibration and evaluation lines
  from different seeds), for fp32 (onnxruntime on the same ONNX file: the untuned TVM float build is too slow
  for 200 lines on the shared machine), the hybrid build with the integer matmul blocks, and the same build with
  ``relax.matmul`` kept in float (``skip_ops``; the state before ``tvm_arq.ops.matmul``). Word accuracy = share
  of lines decoded exactly (spaces ignored, as PaddleOCR's ``RecMetric``); character accuracy
  = 1 - total edit distance / total label characters (spaces ignored). 95 % Wilson intervals.

Writes ``results/ppocr_rec.json`` and ``.md``.

The parts (``--parts accuracy targets``) can run as separate processes; each merges its keys into the JSON.

Usage: ``python scripts/bench_ppocr_rec.py [--calib 64] [--eval 200] [--boards aarch64 riscv64-rvv] [--parts ...]``
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import onnx
import tvm

import tvm_arq
from arq_bench import assets
from arq_bench.datasets import text_recognition_set
from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.deploy import EmulatedBoard
from tvm_arq.verify import debug_build, verify_host, verify_on_board

logger = logging.getLogger("bench_ppocr_rec")
SHAPE = (1, 3, 48, 320)
TARGETS = ("host", "aarch64-dotprod", "riscv64-rvv")
#: emulated board -> the target preset whose build runs on it
BOARD_TARGET = {"aarch64": "aarch64-dotprod", "riscv64-rvv": "riscv64-rvv"}


def characters(path: Path) -> list[str]:
    """The recognizer's output classes: blank, the ``character`` list of the ONNX metadata, space."""
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return ["<blank>", *meta["character"].splitlines(), " "]


def ctc_greedy(probs: np.ndarray, chars: list[str]) -> str:
    """Greedy CTC decoding of one ``(T, classes)`` output."""
    best = probs.argmax(-1)
    keep = np.ones(best.shape, bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(chars[i] for i in best[keep] if i != 0)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def wilson(k: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def score(preds: list[str], labels: list[str]) -> dict:
    """Word (line) and character accuracy with Wilson intervals; spaces ignored."""
    p = [s.replace(" ", "") for s in preds]
    t = [s.replace(" ", "") for s in labels]
    words = sum(a == b for a, b in zip(p, t, strict=True))
    chars = sum(len(b) for b in t)
    errs = sum(min(edit_distance(a, b), len(b)) for a, b in zip(p, t, strict=True))
    return {"word_acc": words / len(t), "word_ci95": wilson(words, len(t)), "n_lines": len(t),
            "char_acc": 1 - errs / chars, "char_ci95": wilson(chars - errs, chars), "n_chars": chars}


def _first(out) -> np.ndarray:
    return np.asarray(out[0] if isinstance(out, tuple | list) else out)


def kernels(model) -> dict[str, int]:
    return dict(collections.Counter(str(f.attrs["arq.op"]) for f in model.ir.functions.values()
                                    if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                                    and "arq.op" in f.attrs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--boards", nargs="*", default=list(BOARD_TARGET))
    ap.add_argument("--verify-samples", type=int, default=2)
    ap.add_argument("--out", default="results/ppocr_rec")
    ap.add_argument("--parts", nargs="*", default=["accuracy", "targets"])
    ap.add_argument("--target-calib", type=int, default=8,
                    help="calibration lines of the aarch64 / riscv64 builds (fallbacks and bit-exactness only)")
    args = ap.parse_args()
    if not args.parts:  # only re-render the markdown of the JSON
        out = Path(args.out)
        out.with_suffix(".md").write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("tvm_arq").setLevel(logging.ERROR)
    path = assets.fetch("ppocr_rec")
    chars = characters(path)
    mod, params = tvm_arq.from_onnx(str(path), shape=SHAPE)
    xc, _ = text_recognition_set(args.calib, seed=0, width=SHAPE[3])
    xe, labels = text_recognition_set(args.eval, seed=1000, width=SHAPE[3])
    cal = [x[None] for x in xc]
    ev = [x[None] for x in xe]
    res: dict = {"verify_samples": args.verify_samples, "shape": list(SHAPE), "calibration_lines": args.calib, "eval_lines": args.eval,
                 "calibration_seed": 0, "eval_seed": 1000, "builds": {}, "targets": {}, "bitexact": {}}

    def record(label: str, run, model, seconds: float) -> list[str]:
        t0 = time.perf_counter()
        preds = []
        for i, x in enumerate(ev):
            preds.append(ctc_greedy(_first(run(x))[0], chars))
            if i % 50 == 49:
                logger.info("%s: %d / %d lines", label, i + 1, len(ev))
        s = score(preds, labels)
        s.update({"build_s": round(seconds, 1), "eval_s": round(time.perf_counter() - t0, 1),
                  "fallbacks": None if model is None else len(model.fallbacks),
                  "fallback_ops": {} if model is None else dict(collections.Counter(
                      f"{op}: {why}" for _, op, why in model.fallbacks)),
                  "kernels": {} if model is None else kernels(model), "examples": preds[:5]})
        res["builds"][label] = s
        logger.info("%s: word %.4f char %.4f fallbacks %s", label, s["word_acc"], s["char_acc"], s["fallbacks"])
        return preds

    host = None
    if "accuracy" in args.parts:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        p_float = record("fp32 (onnxruntime)", lambda x: sess.run(None, {name: x})[0], None, 0.0)
        builds, preds = {}, {}
        for label, skip in (("hybrid, integer matmul blocks", ()),
                            ("hybrid, relax.matmul in float", ("relax.matmul",))):
            t0 = time.perf_counter()
            cfg = QuantConfig(scheme=Scheme.HYBRID, skip_ops=skip)
            builds[label] = tvm_arq.build(mod, params, "host", calibration=cal, config=cfg, progress=False)
            preds[label] = record(label, builds[label].run, builds[label], time.perf_counter() - t0)
        host = next(iter(builds.values()))
        pa, pb = preds.values()
        res["paired"] = {
            "lines_decoded_differently_int_vs_float_blocks": sum(x != y for x, y in zip(pa, pb, strict=True)),
            "lines_decoded_differently_int_vs_fp32": sum(x != y for x, y in zip(pa, p_float, strict=True))}
        ia, ib = (res["builds"][k]["word_acc"] for k in builds)
        res["word_acc_delta_pt"] = round((ia - ib) * 100, 2)
        # issue 13: "within 0.5 pt of the same build with those blocks in float" (a drop of at most 0.5 pt)
        res["done_when_drop_at_most_0.5pt"] = (ib - ia) * 100 <= 0.5
        samples = ev[:args.verify_samples]
        t0 = time.perf_counter()
        reps = [verify_host(debug_build(host), x) for x in samples]
        res["bitexact"]["host"] = {"target": "host", "ok": all(r.ok for r in reps), "tensors": len(reps[0].checks),
                                   "summary": reps[0].to_text(), "seconds": round(time.perf_counter() - t0, 1)}
        logger.info("host: %s", reps[0].to_text())
        res["targets"]["host"] = {"fallbacks": len(host.fallbacks), "fallback_list": [list(f) for f in host.fallbacks],
                                  "qmatmul_kernels": kernels(host).get("qmatmul", 0)}

    if "targets" in args.parts:
        # fallbacks per target (build only) and bit-exactness on the emulated boards
        tcal = cal[:args.target_calib]
        res["target_calibration_lines"] = len(tcal)
        for tgt in TARGETS:
            if tgt == "host" and host is not None:
                continue
            t0 = time.perf_counter()
            m = tvm_arq.build(mod, params, tgt, calibration=tcal, progress=False)
            logger.info("%s built in %.0f s: %d fallbacks", tgt, time.perf_counter() - t0, len(m.fallbacks))
            res["targets"][tgt] = {"fallbacks": len(m.fallbacks), "fallback_list": [list(f) for f in m.fallbacks],
                                   "qmatmul_kernels": kernels(m).get("qmatmul", 0)}
            boards = [b for b, t in BOARD_TARGET.items() if t == tgt and b in args.boards]
            for board in boards:
                t0 = time.perf_counter()
                try:
                    prog = debug_build(m)
                    with EmulatedBoard(board) as bd:
                        reps = verify_on_board(prog, ev[:args.verify_samples], rpc=bd.address, timeout=1800)
                    res["bitexact"][board] = {"target": tgt, "ok": all(r.ok for r in reps),
                                              "tensors": len(reps[0].checks), "summary": reps[0].to_text(),
                                              "seconds": round(time.perf_counter() - t0, 1)}
                except Exception as e:  # noqa: BLE001 - report, keep the other measurements
                    res["bitexact"][board] = {"target": tgt, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                                              "seconds": round(time.perf_counter() - t0, 1)}
                logger.info("%s: %s", board, res["bitexact"][board].get("summary", res["bitexact"][board].get("error")))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.with_suffix(".json").exists():  # merge with the parts another run measured
        old = json.loads(out.with_suffix(".json").read_text())
        for key in ("builds", "targets", "bitexact"):
            res[key] = {**old.get(key, {}), **res[key]}
        res = {**old, **res}
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    out.with_suffix(".md").write_text(markdown(res))
    return 0


def markdown(res: dict) -> str:
    lines = ["# PP-OCRv4 recognizer: integer attention matmuls (issue 13)", "",
             f"Input 1x3x48x320; {res['calibration_lines']} calibration lines (seed {res['calibration_seed']}), "
             f"{res['eval_lines']} evaluation lines (seed {res['eval_seed']}), rendered by "
             "`arq_bench.datasets.text_recognition_set`. CTC greedy decoding with the model's character list; "
             "spaces ignored. Word accuracy = exact line match; character accuracy = 1 - edit distance / label "
             "characters. Intervals: 95 % Wilson.", "",
             "## Accuracy (host)", "",
             "| build | float fallbacks | word accuracy [95 % CI] | char accuracy [95 % CI] |", "|---|---|---|---|"]
    for label, s in res["builds"].items():
        fb = "-" if s["fallbacks"] is None else str(s["fallbacks"])
        lines.append(f"| {label} | {fb} | {s['word_acc']:.4f} [{s['word_ci95'][0]:.3f}, {s['word_ci95'][1]:.3f}] | "
                     f"{s['char_acc']:.4f} [{s['char_ci95'][0]:.3f}, {s['char_ci95'][1]:.3f}] |")
    if "paired" in res:
        lines += ["", f"Integer matmul blocks vs the same build with them in float: {res['word_acc_delta_pt']:+.2f} pt word "
              f"accuracy (issue 13 done-when, a drop of at most 0.5 pt: **{res['done_when_drop_at_most_0.5pt']}**); "
              "lines whose raw decoded string (spaces included) differs: "
              f"{res['paired']['lines_decoded_differently_int_vs_float_blocks']} of {res['eval_lines']} "
              f"(vs fp32: {res['paired']['lines_decoded_differently_int_vs_fp32']})."]
    lines += ["", "## Float fallbacks per target (hybrid build)", "",
              f"The aarch64 / riscv64 builds are calibrated on {res.get('target_calibration_lines', '-')} lines "
              "(fallbacks and bit-exactness do not depend on it).", "", "| target | fallbacks | qmatmul kernels |",
              "|---|---|---|"]
    for tgt, t in res["targets"].items():
        lines.append(f"| {tgt} | {t['fallbacks']} | {t['qmatmul_kernels']} |")
    lines += ["", "## Bit-exact against the reference interpreter (every integer tensor)", "",
              f"Debug build of the shipped program (`tvm_arq.verify`), {res.get('verify_samples', 2)} evaluation lines "
              "each; the boards are qemu-user emulations.", "",
              "| where | target | result |", "|---|---|---|"]
    for where, r in res["bitexact"].items():
        lines.append(f"| {where} | {r.get('target', 'host')} | {r.get('summary', r.get('error', ''))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
