"""``tvm-arq`` command line (built on the Python API; no logic of its own)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("tvm_arq")


def _eval_classifier(model, x: np.ndarray, y: np.ndarray, ref_preds: np.ndarray | None = None):
    from tqdm.auto import tqdm

    preds = np.array([int(np.argmax(model.run(x[i:i + 1]))) for i in tqdm(range(len(x)), desc="evaluating",
                                                                        leave=False)])
    acc = float(np.mean(preds == y))
    agree = None if ref_preds is None else float(np.mean(preds == ref_preds))
    return preds, acc, agree


def cmd_demo(args: argparse.Namespace) -> int:
    """Quantize the default model (PP-OCR text direction classifier) with real data and compare."""
    import tvm_arq
    from tvm_arq import assets, datasets

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


def cmd_build(args: argparse.Namespace) -> int:
    import tvm_arq

    mod, params = tvm_arq.from_onnx(args.model, shape=_parse_shape(args.shape))
    cal = _load_calibration(args.calibration, mod) if args.scheme != "float" else None
    m = tvm_arq.build(mod, params, args.target, calibration=cal, scheme=args.scheme, calibrator=args.calibrator)
    out = m.export_library(args.output)
    print(m.summary())
    if args.qparams:
        m.save_qparams(args.qparams)
    print(f"wrote {out}")
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    from .deploy.boards import main as boards_main

    return int(boards_main(args.board_args) or 0)


def _parse_shape(text: str | None):
    if not text:
        return None
    return tuple(int(v) for v in text.replace("x", ",").split(","))


def _load_calibration(path: str, mod):
    """Calibration from an .npy/.npz (N x C x H x W) or a folder of images (resized to the input)."""
    from PIL import Image

    p = Path(path)
    shape = tuple(int(d) for d in mod["main"].params[0].ty.shape.values)
    if p.suffix == ".npy":
        arr = np.load(p)
        return [arr[i:i + 1] if arr.ndim == len(shape) else arr[i] for i in range(len(arr))]
    if p.suffix == ".npz":
        data = np.load(p)
        arr = data[data.files[0]]
        return [arr[i:i + 1] for i in range(len(arr))]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        if not files:
            raise FileNotFoundError(f"no images (.jpg/.png/.bmp) in {p}")
        out = []
        for f in files:
            img = Image.open(f).convert("RGB").resize((shape[3], shape[2]))
            a = np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
            out.append(a)
        return out
    raise FileNotFoundError(f"calibration must be a .npy, .npz or a folder of images: {p}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tvm-arq", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="quantize the default model with real data; print fp32/symmetric/hybrid")
    d.add_argument("--target", default="host")
    d.add_argument("--calibrator", default="minmax")
    d.add_argument("--calib", type=int, default=100, help="calibration samples")
    d.add_argument("--eval", type=int, default=200, help="evaluation samples")
    d.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per model (0: untuned)")
    d.add_argument("--work-dir", default=str(Path.home() / ".cache" / "tvm_arq" / "tuning" / "demo"))
    d.add_argument("--json", help="also write the table as JSON")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("build", help="ONNX -> quantized library for a target")
    b.add_argument("model", help="ONNX file")
    b.add_argument("-o", "--output", required=True, help="output .so (or .tar)")
    b.add_argument("--target", default="host")
    b.add_argument("--shape", help="input shape, e.g. 1,3,224,224")
    b.add_argument("--calibration", help=".npy/.npz or a folder of images")
    b.add_argument("--scheme", default="hybrid", choices=["hybrid", "symmetric", "asymmetric", "float"])
    b.add_argument("--calibrator", default="minmax")
    b.add_argument("--qparams", help="write per-tensor quantization parameters (JSON)")
    b.set_defaults(func=cmd_build)

    from .report import add_report_subparser

    add_report_subparser(sub)

    bd = sub.add_parser("board", help="emulated dev boards (qemu-user + TVM runtime + RPC server) on loopback",
                        add_help=False)
    bd.add_argument("board_args", nargs=argparse.REMAINDER,
                    help="setup | start --arch aarch64|riscv64|riscv64-rvv [--port N] [--tracker H:P --key K] | "
                         "stop [--name N|--all] | list")
    bd.set_defaults(func=cmd_board)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["board"]:  # its own argument parser (python -m tvm_arq.deploy.boards)
        from .deploy.boards import main as boards_main

        return int(boards_main(argv[1:]) or 0)
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI reports errors without tracebacks unless --verbose
        if args.verbose:
            raise
        print(f"tvm-arq {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
