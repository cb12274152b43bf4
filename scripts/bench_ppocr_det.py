"""PP-OCRv4 text detector (DBNet head with two conv2d_transpose upsamplers): fallbacks, bit-exactness, accuracy.

1. Float fallbacks of the hybrid int8 build for ``host``, ``aarch64-dotprod`` and ``riscv64-rvv`` (build only).
2. Bit-exactness of every integer tensor: on the host (the evaluation size) and on the emulated aarch64 (dotprod)
   and riscv64+V boards (``--board-size``, small: qemu is slow), with :mod:`tvm_arq.verify`.
3. Accuracy on ``--eval`` canvases (``--size`` square) with several rendered text lines each (the PP-OCR
   text-line renderer of :mod:`arq_bench.datasets`), calibration on ``--calib`` other canvases (disjoint seeds):
   against the fp32 model's output, per image, the pixel F1 and IoU of the probability map binarized at 0.3 and
   the box F-score (connected components of the binarized maps matched at IoU >= 0.5), for fp32 (self: 1),
   the hybrid build (integer conv2d_transpose) and the same build with conv2d_transpose kept in float
   (``QuantConfig(skip_ops=("relax.nn.conv2d_transpose",))``); means with 95 % bootstrap intervals over images,
   and the paired bootstrap interval of the difference integer - float conv_transpose.

Writes ``results/ppocr_det.json`` and ``.md``. Usage: ``python scripts/bench_ppocr_det.py [--eval 100]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

import tvm_arq
from arq_bench import assets, datasets
from tvm_arq.config import QuantConfig
from tvm_arq.verify import debug_build, verify_host, verify_on_board

logger = logging.getLogger("bench_ppocr_det")
SKIP = ("relax.nn.conv2d_transpose",)
THRESH = 0.3
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# -- data ----------------------------------------------------------------------------------------------


def text_canvas(seed: int, size: int, photos: list) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One ``size`` x ``size`` canvas with 2-5 rendered text lines; returns the detector input ``(1, 3, S, S)``
    (BGR, ImageNet mean/std, as PP-OCR det) and the line boxes ``(x0, y0, x1, y1)``."""
    rng = np.random.default_rng([seed, 7])
    fonts = datasets.dejavu_fonts()
    tone = rng.integers(150, 256) if rng.random() < 0.7 else rng.integers(0, 90)
    canvas = Image.new("RGB", (size, size), tuple(int(tone) for _ in range(3)))
    boxes: list[tuple[int, int, int, int]] = []
    y = int(rng.integers(0, size // 8))
    for _ in range(int(rng.integers(2, 6))):
        line = datasets._render_text_line(rng, fonts, photos, 0.2)
        scale = rng.uniform(0.35, 0.8) * (size / 256)
        w, h = max(8, int(line.width * scale)), max(6, int(line.height * scale))
        if w > size - 4:
            h, w = max(6, h * (size - 4) // w), size - 4
        if y + h > size:
            break
        x = int(rng.integers(0, size - w + 1))
        canvas.paste(line.resize((w, h), Image.BILINEAR), (x, y))
        boxes.append((x, y, x + w, y + h))
        y += h + int(rng.integers(2, max(3, size // 10)))
    rgb = np.asarray(canvas, np.float32) / 255.0
    bgr = rgb[..., ::-1]
    x = ((bgr - MEAN) / STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x, np.float32), boxes


# -- metrics -------------------------------------------------------------------------------------------


def _components(mask: np.ndarray) -> list[np.ndarray]:
    lab, n = ndimage.label(mask)
    return [lab == i for i in range(1, n + 1) if (lab == i).sum() >= 4]


def box_f(ref: np.ndarray, got: np.ndarray) -> float:
    """F-score of connected components of ``got`` matched to those of ``ref`` at IoU >= 0.5 (greedy)."""
    a, b = _components(ref), _components(got)
    if not a and not b:
        return 1.0
    used: set[int] = set()
    tp = 0
    for ca in a:
        best, bi = 0.0, -1
        for j, cb in enumerate(b):
            if j in used:
                continue
            iou = (ca & cb).sum() / max(1, (ca | cb).sum())
            if iou > best:
                best, bi = iou, j
        if best >= 0.5:
            used.add(bi)
            tp += 1
    return 2 * tp / (len(a) + len(b))


def pixel_scores(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Pixel F1 and IoU of binary maps (1.0 when both are empty)."""
    inter, union = float((ref & got).sum()), float((ref | got).sum())
    tot = float(ref.sum() + got.sum())
    return (2 * inter / tot if tot else 1.0), (inter / union if union else 1.0)


def boot(v: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """Mean and 95 % percentile bootstrap interval (over images) of ``v``, in points (x100)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), (n, len(v)))
    means = v[idx].mean(axis=1)
    return [round(100 * float(v.mean()), 2), round(100 * float(np.percentile(means, 2.5)), 2),
            round(100 * float(np.percentile(means, 97.5)), 2)]


def _prob(out) -> np.ndarray:
    a = out[0] if isinstance(out, tuple | list) else out
    return np.asarray(a.numpy() if hasattr(a, "numpy") else a)[0, 0]


# -- main ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--board-size", type=int, default=64)
    ap.add_argument("--no-boards", action="store_true")
    ap.add_argument("--out", default="results/ppocr_det")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t_start = time.perf_counter()
    path = assets.fetch("ppocr_det")
    photos = assets.natural_photos()
    shape = (1, 3, args.size, args.size)
    mod, params = tvm_arq.from_onnx(path, shape=shape)
    cal = [text_canvas(10_000 + i, args.size, photos)[0] for i in range(args.calib)]
    ev = [text_canvas(i, args.size, photos) for i in range(args.eval)]
    result: dict = {"model": "PP-OCRv4 det (rapidocr-onnxruntime 1.4.4, ch_PP-OCRv4_det_infer.onnx)",
                    "input": list(shape), "calibration_images": args.calib, "evaluation_images": args.eval,
                    "threshold": THRESH}

    # 1. fallbacks per target (build only)
    fallbacks = {}
    small = (1, 3, args.board_size, args.board_size)
    smod, sparams = tvm_arq.from_onnx(path, shape=small)
    scal = [text_canvas(20_000 + i, args.board_size, photos)[0] for i in range(4)]
    board_models = {}
    for target in ("host", "aarch64-dotprod", "riscv64-rvv"):
        t0 = time.perf_counter()
        m = tvm_arq.build(smod, sparams, target, calibration=scal, progress=False)
        fallbacks[target] = [list(f) for f in m.fallbacks]
        board_models[target] = m
        logger.info("%s: %d fallbacks (%.0f s)", target, len(m.fallbacks), time.perf_counter() - t0)
    result["fallbacks"] = fallbacks
    result["fallbacks_input"] = list(small)

    # 2. bit-exactness: boards (small input), then the host at the evaluation size
    exact: dict = {}
    if not args.no_boards:
        from tvm_arq.deploy import EmulatedBoard

        for board, target in (("aarch64", "aarch64-dotprod"), ("riscv64-rvv", "riscv64-rvv")):
            t0 = time.perf_counter()
            prog = debug_build(board_models[target])
            with EmulatedBoard(board) as b:
                reps = verify_on_board(prog, scal[:2], rpc=b.address, timeout=600)
            exact[f"{board} board ({target}), {args.board_size}x{args.board_size}"] = {
                "ok": all(r.ok for r in reps), "report": [r.to_text().splitlines()[0] for r in reps],
                "seconds": round(time.perf_counter() - t0, 1)}
            logger.info("%s: %s", board, [r.to_text().splitlines()[0] for r in reps])

    builds = {}
    for label, skip in (("hybrid (integer conv_transpose)", ()), ("hybrid, conv_transpose in float", SKIP)):
        t0 = time.perf_counter()
        builds[label] = tvm_arq.build(mod, params, "host", calibration=cal, config=QuantConfig(skip_ops=skip),
                                      progress=False)
        logger.info("%s: built in %.0f s, fallbacks %s", label, time.perf_counter() - t0, builds[label].fallbacks)
    hyb = builds["hybrid (integer conv_transpose)"]
    prog = debug_build(hyb)
    reps = [verify_host(prog, ev[i][0]) for i in range(2)]
    exact[f"host, {args.size}x{args.size}"] = {"ok": all(r.ok for r in reps),
                                                "report": [r.to_text().splitlines()[0] for r in reps]}
    result["bitexact"] = exact

    # 3. accuracy against fp32
    fp32 = tvm_arq.build(mod, params, "host", scheme="float", progress=False)
    ref = [_prob(fp32.run(x)) > THRESH for x, _ in ev]
    gt_hit = []
    for (_x, boxes), r in zip(ev, ref, strict=True):
        gt_hit += [bool(r[y0:y1, x0:x1].any()) for x0, y0, x1, y1 in boxes]
    per: dict[str, dict[str, np.ndarray]] = {}
    for label, m in [("fp32", fp32), *builds.items()]:
        pf, pi, bf = [], [], []
        for (x, _), r in zip(ev, ref, strict=True):
            got = _prob(m.run(x)) > THRESH
            f1, iou = pixel_scores(r, got)
            pf.append(f1)
            pi.append(iou)
            bf.append(box_f(r, got))
        per[label] = {"pixel_f1": np.array(pf), "pixel_iou": np.array(pi), "box_f": np.array(bf)}
    acc = {label: {k: boot(v) for k, v in d.items()} for label, d in per.items()}
    a, b = per["hybrid (integer conv_transpose)"], per["hybrid, conv_transpose in float"]
    diff = {k: boot(a[k] - b[k], seed=1) for k in a}
    result["accuracy_vs_fp32"] = acc
    result["integer_minus_float_convt"] = diff
    result["fp32_gt_lines_hit"] = round(float(np.mean(gt_hit)), 4)
    result["fp32_gt_lines"] = len(gt_hit)
    result["seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(render(result))
    logger.info("%s", render(result))
    return 0


def render(r: dict) -> str:
    """The markdown report."""
    s = r["input"][2]
    lines = [
        "# PP-OCRv4 text detector: integer conv2d_transpose", "",
        f"{r['model']}; hybrid int8 (default config), input {s}x{s}; {r['calibration_images']} calibration and "
        f"{r['evaluation_images']} evaluation canvases (disjoint seeds), each with 2-5 rendered text lines. "
        f"Produced by `scripts/bench_ppocr_det.py`.", "",
        "## Float fallbacks (hybrid build, input " + "x".join(str(v) for v in r["fallbacks_input"][2:]) + ")", "",
        "| target | fallbacks |", "|---|---|"]
    for t, fb in r["fallbacks"].items():
        lines.append(f"| {t} | {len(fb)}" + (f": {fb}" if fb else "") + " |")
    lines += ["", "## Bit-exactness (every integer tensor vs the numpy reference)", "", "| where | result |",
              "|---|---|"]
    for where, e in r["bitexact"].items():
        lines.append(f"| {where} | {'bit-exact' if e['ok'] else 'MISMATCH'}: {'; '.join(e['report'])} |")
    lines += ["", f"## Agreement with the fp32 model (probability map > {r['threshold']}), mean [95 % CI], points",
              "", "| build | pixel F1 | pixel IoU | box F (IoU >= 0.5) |", "|---|---|---|---|"]

    def fmt(v: list[float]) -> str:
        return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"

    for label, d in r["accuracy_vs_fp32"].items():
        lines.append(f"| {label} | {fmt(d['pixel_f1'])} | {fmt(d['pixel_iou'])} | {fmt(d['box_f'])} |")
    d = r["integer_minus_float_convt"]
    lines.append(f"| integer - float conv_transpose (paired) | {fmt(d['pixel_f1'])} | {fmt(d['pixel_iou'])} | "
                 f"{fmt(d['box_f'])} |")
    ok = abs(d["pixel_f1"][0]) <= 0.5
    lines += ["", f"Done-when (integer build within 0.5 pt of the float-conv_transpose build, pixel F1): "
              f"{'met' if ok else 'NOT met'} ({d['pixel_f1'][0]:+.2f} pt).",
              f"Sanity: the fp32 model's binarized map touches {100 * r['fp32_gt_lines_hit']:.1f} % of the "
              f"{r['fp32_gt_lines']} rendered text lines.", f"Run time {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
