"""The demo: quantize the default model (PP-OCR text direction classifier) with real data and compare.

``python -m arq_bench demo`` (what ``make demo`` runs) builds fp32, symmetric and hybrid versions of
``ch_ppocr_mobile_v2.0_cls`` with :mod:`tvm_arq`, evaluates them on rendered text lines
(:func:`arq_bench.datasets.text_direction_set`) and prints accuracy, agreement with fp32 and latency.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_demo_parser", "cmd_demo"]


def _eval_classifier(
    model: Any, x: np.ndarray, y: np.ndarray, ref_preds: np.ndarray | None = None
) -> tuple[np.ndarray, float, float | None]:
    """Top-1 predictions of ``model`` on ``x``, accuracy against ``y`` and agreement with ``ref_preds``."""
    from tqdm.auto import tqdm

    preds = np.array([int(np.argmax(model.run(x[i:i + 1]))) for i in tqdm(range(len(x)), desc="evaluating",
                                                                        leave=False)])
    acc = float(np.mean(preds == y))
    agree = None if ref_preds is None else float(np.mean(preds == ref_preds))
    return preds, acc, agree


def cmd_demo(args: argparse.Namespace) -> int:
    """Quantize the default model (PP-OCR text direction classifier) with real data and compare.

    Parameters
    ----------
    args
        Parsed ``demo`` arguments (see :func:`add_demo_parser`).

    Returns
    -------
    int
        Exit code (0).
    """
    import tvm_arq

    from . import assets, datasets

    model_path = assets.fetch("ppocr_cls")
    mod, params = tvm_arq.from_onnx(model_path, shape=(1, 3, 48, 192))
    x, y = datasets.text_direction_set(args.calib + args.eval, seed=0)
    cal = [x[i:i + 1] for i in range(args.calib)]
    xe, ye = x[args.calib:], y[args.calib:]
    tuning = None
    if args.tune_trials > 0:
        from tvm_arq.tune import TuneConfig

        tuning = TuneConfig(trials=args.tune_trials, work_dir=Path(args.work_dir))
    rows = []
    ref = None
    for scheme in ("float", "symmetric", "hybrid"):
        t0 = time.perf_counter()
        m = tvm_arq.build(mod, params, args.target, calibration=cal, scheme=scheme,
                          calibrator=args.calibrator if scheme != "float" else "minmax", tuning=tuning)
        build_s = time.perf_counter() - t0
        preds, acc, agree = _eval_classifier(m, xe, ye, ref)
        if ref is None:
            ref = preds
        lat = m.benchmark(xe[:1], number=5, repeat=5)
        rows.append({"scheme": "fp32" if scheme == "float" else scheme,
                     "calibrator": "-" if scheme == "float" else args.calibrator,
                     "accuracy": acc, "agreement_with_fp32": agree if agree is not None else 1.0,
                     "median_ms": lat["median_ms"], "tuned": tuning is not None, "build_s": build_s,
                     "float_fallbacks": len(m.fallbacks)})
    print()
    print(f"PP-OCR text direction classifier (ch_ppocr_mobile_v2.0_cls), {len(ye)} rendered text lines, "
          f"calibration {len(cal)} disjoint lines, target {args.target}")
    hdr = f"{'scheme':<10} {'calibrator':<14} {'top-1':>7} {'agree fp32':>10} {'latency ms':>11} {'float ops':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['scheme']:<10} {r['calibrator']:<14} {r['accuracy']:>7.3f} {r['agreement_with_fp32']:>10.3f} "
              f"{r['median_ms']:>11.2f} {r['float_fallbacks']:>9}")
    if tuning is None:
        print("latency: untuned single-thread TVM code (pass --tune-trials N to autotune; untuned numbers do not"
              " compare int8 against fp32)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def add_demo_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``sub`` (an ``add_subparsers`` result).

    Parameters
    ----------
    sub
        Subparsers action to add to.
    parents
        Parent parsers (common options such as ``--verbose``).

    Returns
    -------
    argparse.ArgumentParser
    """
    d = sub.add_parser("demo", parents=parents,
                       help="quantize the default model with real data; print fp32/symmetric/hybrid")
    d.add_argument("--target", default="host")
    d.add_argument("--calibrator", default="output")
    d.add_argument("--calib", type=int, default=100, help="calibration samples")
    d.add_argument("--eval", type=int, default=200, help="evaluation samples")
    d.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per model (0: untuned)")
    d.add_argument("--work-dir", default=str(Path.home() / ".cache" / "tvm_arq" / "tuning" / "demo"))
    d.add_argument("--json", help="also write the table as JSON")
    d.set_defaults(func=cmd_demo)
    return d
