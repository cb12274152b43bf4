"""``tvm-arq`` command line (built on the Python API; no logic of its own)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger("tvm_arq")


def _calibration(args: argparse.Namespace, mod) -> list[np.ndarray] | None:
    """The calibration samples; ``None`` for a pre-quantized (QDQ) model given none (its own parameters)."""
    from .frontend import model_qparams
    from .samples import input_shape, load_samples

    if not args.calibration and model_qparams(mod) is not None:
        logger.info("pre-quantized model and no --calibration: compiling with the model's own scales and zero points")
        return None
    if not args.calibration:
        raise ValueError("--calibration DIR|X.npy|X.npz is required for a quantized scheme")
    return load_samples(args.calibration, input_shape(mod), pixel_range=args.pixel_range, limit=args.calib_limit)


def _import(args: argparse.Namespace):
    import tvm_arq

    path = Path(args.model).expanduser()
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory, not an ONNX file (give the .onnx file in it)")
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    return tvm_arq.from_onnx(path, shape=_parse_shape(args.shape))


def _tune_config(args: argparse.Namespace, work_dir: str | None = None):
    """A TuneConfig from --trials/--work-dir/--threads/--rpc/--tracker/--key (None when trials == 0)."""
    from .tune import RPCSettings, RunnerKind, TuneConfig

    if args.trials <= 0:
        return None
    rpc = None
    if getattr(args, "rpc", None):
        rpc = RPCSettings.server(args.rpc)
    elif getattr(args, "tracker", None):
        host, port = _host_port(args.tracker, "--tracker")
        rpc = RPCSettings(key=args.key, tracker_host=host, tracker_port=port)
    return TuneConfig(trials=args.trials, work_dir=Path(work_dir or args.work_dir).expanduser(),
                      runner=RunnerKind.RPC if rpc else RunnerKind.LOCAL, rpc=rpc, num_threads=args.threads,
                      trials_per_iter=min(args.trials, 32))


def _host_port(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{flag} must be HOST:PORT, got {text!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{flag} {text!r}: invalid port {int(port)} (1-65535)")
    return host, int(port)


def _check_writable(output: str) -> None:
    """Fail now, before calibration and compilation, if ``output`` cannot be written (with the OS's reason)."""
    import tempfile

    path = Path(output).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory (give a file name, e.g. {path}/model.so)")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the directory {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".tvm_arq_write_test_"):
            pass
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err} ({parent})") from err


def _check_connection(args: argparse.Namespace) -> None:
    if args.tracker and not args.key:
        raise ValueError("--tracker needs --key (the key the boards registered with)")
    if args.key and not args.tracker:
        raise ValueError("--key is only used with --tracker")
    for flag in ("rpc", "tracker"):
        if getattr(args, flag, None):
            _host_port(getattr(args, flag), f"--{flag}")


def cmd_build(args: argparse.Namespace) -> int:
    """``tvm-arq build``: ONNX -> quantized library (+ ``<library>.json`` metadata for ``deploy``)."""
    import tvm_arq
    from tvm_arq.deploy.export import meta_path, save_model

    _check_writable(args.output)
    if args.qparams:
        _check_writable(args.qparams)
    if args.max_drop is not None and args.scheme == "float":
        raise ValueError("--max-drop needs a quantized scheme, not --scheme float")
    if (args.data or args.labels) and args.max_drop is None:
        raise ValueError("--data/--labels are the evaluation set of --max-drop: give --max-drop too")
    mod, params = _import(args)
    cal = _calibration(args, mod) if args.scheme != "float" else None
    config = tvm_arq.QuantConfig(scheme=args.scheme, calibrator=args.calibrator, exclude=tuple(args.exclude),
                                 int16=tuple(args.int16))
    budget = None
    if args.max_drop is not None:
        data, labels = _evaluation(args, mod, cal)
        budget = tvm_arq.AccuracyBudget(data=data, max_drop=args.max_drop, metric="top1" if labels is not None
                                        else "agreement", labels=labels)
    m = tvm_arq.build(mod, params, args.target, calibration=cal, config=config, accuracy=budget)
    out = save_model(m, args.output, extra={"model": str(args.model)})
    print(m.summary())
    if args.qparams:
        m.save_qparams(args.qparams)
        print(f"wrote {args.qparams}")
    print(f"wrote {out} (untuned; `tvm-arq tune` autotunes) and {meta_path(out).name}")
    return 0


def _evaluation(args: argparse.Namespace, mod, cal: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Evaluation samples (``--data``, else the calibration samples) and their labels (``--labels`` or the npz's)."""
    from .samples import input_shape, load_labels, load_samples, npz_labels

    if args.labels and not args.data:
        raise ValueError("--labels needs --data (the labelled evaluation samples)")
    limit = getattr(args, "limit", None)
    if args.data:
        data = load_samples(args.data, input_shape(mod), pixel_range=args.pixel_range, limit=limit)
    else:
        data = cal[:limit] if limit else cal
        if args.max_drop is not None:
            logger.warning("--max-drop without --data: the budget is measured on the calibration samples "
                           "(optimistic; give held-out samples with --data)")
    labels = None
    if args.labels:
        labels = load_labels(args.labels)
    elif args.data:
        labels = npz_labels(args.data)
    if labels is not None:
        if limit:
            labels = labels[:limit]
        if len(labels) != len(data):
            raise ValueError(f"{len(labels)} labels for {len(data)} evaluation samples")
    return data, labels


def cmd_compare(args: argparse.Namespace) -> int:
    """``tvm-arq compare``: fp32 / symmetric / hybrid accuracy and latency, one table."""
    from .compare import compare_schemes

    if args.labels and not args.data:
        raise ValueError("--labels needs --data (the labelled evaluation samples)")
    mod, params = _import(args)
    cal = _calibration(args, mod)
    if cal is None and not args.data:
        raise ValueError("a pre-quantized model without --calibration: give the evaluation samples with --data")
    data, labels = _evaluation(args, mod, cal)
    on_calibration = not args.data
    if on_calibration:
        print(f"no --data: scoring top-1 agreement with fp32 on the {len(data)} CALIBRATION samples (the data "
              "the int8 ranges were fitted to, so an optimistic figure); pass --data for held-out samples")
    result = compare_schemes(mod, params, cal, data, labels, target=args.target, calibrator=args.calibrator,
                             tuning=_tune_config(args), schemes=("float", "symmetric", "hybrid"),
                             max_drop=args.max_drop, source=Path(args.model).expanduser())
    if on_calibration:
        result.notes.append(f"agreement measured on the {len(data)} calibration samples (no --data given): "
                            "not held-out data")
    print(f"{Path(args.model).name}:")
    print(result.to_text())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``tvm-arq tune``: quantize, autotune (resumable database in --work-dir), write the tuned library."""
    import tvm_arq
    from tvm_arq.deploy.export import save_model

    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    _check_connection(args)
    from .target import resolve_target

    info = resolve_target(args.target)
    if not info.is_host and not (args.rpc or args.tracker):
        raise ValueError(f"code for {info.triple} does not run here: measure it on a board with --rpc HOST:PORT "
                         "or --tracker HOST:PORT --key KEY (`tvm-arq board start` starts an emulated one)")
    mod, params = _import(args)
    cal = _calibration(args, mod) if args.scheme != "float" else None
    cfg = _tune_config(args)
    m = tvm_arq.build(mod, params, args.target, calibration=cal, scheme=args.scheme, calibrator=args.calibrator,
                      tuning=cfg)
    print(m.summary())
    print(f"tuning database: {cfg.work_dir} (re-run with the same --work-dir to resume or add trials)")
    if args.output:
        out = save_model(m, args.output, tuned=True, extra={"model": str(args.model), "trials": args.trials})
        print(f"wrote {out}")
    return 0


def _deployable(args: argparse.Namespace):
    """(remote model, host model or None) for ``deploy``/``bench``: a .so as is, an .onnx built here."""
    import tvm_arq
    from tvm_arq.deploy import deploy, deploy_library

    _check_connection(args)
    if not args.rpc and not args.tracker:
        raise ValueError("give the board: --rpc HOST:PORT or --tracker HOST:PORT --key KEY")
    path = Path(args.model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    # --timeout bounds every wait: the connection too (its default, 20 s, would outlast a shorter --timeout)
    conn = {"rpc": args.rpc, "tracker": args.tracker, "key": args.key, "timeout": args.timeout,
            "connect_timeout": min(20.0, args.timeout)}
    if path.suffix == ".onnx":
        if not args.target:
            raise ValueError("deploying an ONNX model needs --target (the board's CPU, e.g. aarch64)")
        mod, params = _import(args)
        cal = _calibration(args, mod) if args.scheme != "float" else None
        model = tvm_arq.build(mod, params, args.target, calibration=cal, scheme=args.scheme,
                              calibrator=args.calibrator)
        return deploy(model, **conn), model
    return deploy_library(path, **conn), None


def _inputs(args: argparse.Namespace, remote) -> list[np.ndarray]:
    from .samples import load_samples

    if args.input:
        if len(remote.input_specs) > 1:
            raise ValueError("--input gives one input; this model has several")
        if remote.input_specs:
            shape = remote.input_specs[0][1]
        else:
            arr = np.load(args.input) if args.input.endswith(".npy") else None
            if arr is None:
                raise ValueError("the library has no metadata (<library>.json): --input must be an .npy "
                                 "holding exactly one input")
            return [arr]
        return [load_samples(args.input, shape, pixel_range=args.pixel_range, limit=1)[0]]
    if not remote.input_specs:
        raise ValueError("the library has no metadata (<library>.json, written by `tvm-arq build/tune`): "
                         "pass --input X.npy")
    return remote.random_inputs(seed=0)


def _summary(name: str, arr: np.ndarray) -> str:
    a = np.asarray(arr)
    text = f"{name}: shape {tuple(a.shape)} {a.dtype}"
    if a.size:
        text += f", min {a.min():.6g} max {a.max():.6g} mean {a.astype(np.float64).mean():.6g}"
        if a.size > 1:
            top = np.argsort(-a.reshape(-1), kind="stable")[:5]
            text += f", top-{len(top)} {top.tolist()}"
    return text


def cmd_deploy(args: argparse.Namespace) -> int:
    """``tvm-arq deploy``: upload a library (or build an ONNX model), run it once on the board."""
    remote, host_model = _deployable(args)
    with remote:
        xs = _inputs(args, remote)
        out = remote.run(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        print(f"ran {remote.library_name} on {remote.board}" + (f" (tracker {remote.tracker}, key {remote.key})"
                                                                  if remote.tracker else ""))
        for i, o in enumerate(outs):
            print(_summary(f"output {i}", o))
        if host_model is not None:
            ref = host_model.run(*xs)
            refs = ref if isinstance(ref, tuple) else (ref,)
            same = all(np.array_equal(a, b) for a, b in zip(outs, refs, strict=True))
            print(f"bit-exact with the host build: {'yes' if same else 'NO'}")
            if not same:
                return 1
        if args.output:
            np.save(args.output, outs[0])
            print(f"wrote {args.output}")
    return 0


def _spec_inputs(args: argparse.Namespace, specs: list) -> list[np.ndarray]:
    """:func:`_inputs` for a model on this machine with inputs ``specs`` (name, shape, dtype)."""
    import types

    from tvm_arq.deploy import RemoteModel

    holder = types.SimpleNamespace(input_specs=specs)
    holder.random_inputs = lambda seed=0: RemoteModel.random_inputs(holder, seed)
    return _inputs(args, holder)


def _host_profile(args: argparse.Namespace):
    """``bench --profile`` without a board: profile on this machine (an .onnx built here, or a host .so)."""
    import tvm

    import tvm_arq
    from tvm_arq.deploy import load_model_meta
    from tvm_arq.profiling import profile_executable

    path = Path(args.model).expanduser()
    if path.suffix == ".onnx":
        mod, params = _import(args)
        cal = _calibration(args, mod) if args.scheme != "float" else None
        model = tvm_arq.build(mod, params, args.target or "host", calibration=cal, scheme=args.scheme,
                              calibrator=args.calibrator)
        specs = [(p.name, tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype)) for p in model.ir["main"].params]
        return model.profile(*_spec_inputs(args, specs), repeat=args.repeat)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    meta = load_model_meta(path)
    specs = [] if meta is None else meta.input_specs
    return profile_executable(tvm.runtime.load_module(str(path)), _spec_inputs(args, specs), repeat=args.repeat,
                              target=meta.target if meta else "host")


def cmd_bench(args: argparse.Namespace) -> int:
    """``tvm-arq bench``: latency on the board, median and p90; ``--profile``: per-kernel times."""
    if args.profile:
        if args.rpc or args.tracker:
            remote, _ = _deployable(args)
            with remote:
                prof = remote.profile(*_inputs(args, remote), repeat=args.repeat)
        else:
            prof = _host_profile(args)
        print(prof.to_text(top=args.top))
        if prof.device.startswith("board"):
            print("note: on an emulated board (qemu-user) these are emulation timings, not the board's latency")
        if args.json:
            Path(args.json).write_text(prof.to_json())
            print(f"wrote {args.json}")
        return 0
    remote, _ = _deployable(args)
    with remote:
        xs = _inputs(args, remote)
        from tqdm.auto import tqdm

        stats_all = []
        for _ in tqdm(range(args.repeat), desc=f"timing on {remote.board}", unit="measurement", leave=False):
            stats_all.append(remote.benchmark(*xs, number=args.number, repeat=1)["median_ms"])
        ms = np.asarray(stats_all)
        stats = {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
                 "min_ms": float(ms.min()), "repeat": args.repeat, "number": args.number, "board": remote.board}
    print(f"{remote.library_name} on {remote.board}: median {stats['median_ms']:.3f} ms, "
          f"p90 {stats['p90_ms']:.3f} ms, min {stats['min_ms']:.3f} ms "
          f"({args.repeat} measurements of {args.number} run(s))")
    print("note: on an emulated board (qemu-user) these are emulation timings, not the board's latency")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``tvm-arq report``: build the model per scheme, measure, print and write the report."""
    import tvm_arq

    from .report import QuantReport, compare_text, plot_sqnr, report

    mod, params = tvm_arq.from_onnx(args.model, shape=_parse_shape(args.shape))
    cal = _load_calibration(args.calibration, mod)
    data = _load_calibration(args.data, mod) if args.data else cal
    schemes = [args.scheme] + [s for s in args.compare if s != args.scheme]
    reports: dict[str, QuantReport] = {}
    for scheme in dict.fromkeys(schemes):
        config = tvm_arq.QuantConfig(scheme=scheme, calibrator=args.calibrator, exclude=tuple(args.exclude),
                                     int16=tuple(args.int16))
        m = tvm_arq.build(mod, params, args.target, calibration=cal, config=config)
        reports[scheme] = report(m, data, max_samples=args.max_samples)
    print(reports[args.scheme].to_text())
    if len(reports) > 1:
        print()
        print(compare_text(reports))
    if args.json:
        Path(args.json).write_text(json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=1,
                                              allow_nan=False))
        print(f"wrote {args.json}")
    if args.png:
        plot_sqnr(reports, args.png)
        print(f"wrote {args.png}")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """``tvm-arq sensitivity``: rank the layers by their contribution to the output error."""
    import tvm_arq

    for out in (args.json, args.png):
        if out:
            _check_writable(out)
    mod, params = _import(args)
    cal = _calibration(args, mod)
    config = tvm_arq.QuantConfig(scheme=args.scheme, calibrator=args.calibrator, exclude=tuple(args.exclude),
                                 int16=tuple(args.int16))
    res = tvm_arq.sensitivity(mod, params, cal, config=config, samples=args.samples)
    print(res.table(top=args.top))
    top = res.layers[0]
    print("exclude the top layer: " + " ".join(f"--exclude {n!r}" for n in top.exclude))
    if args.json:
        res.save_json(args.json)
        print(f"wrote {args.json}")
    if args.png:
        try:
            res.plot(args.png, top=args.top)
            print(f"wrote {args.png}")
        except ImportError as e:
            logger.warning("no PNG written: %s", e)
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    from .deploy.boards import main as boards_main

    return int(boards_main(args.board_args) or 0)


def _parse_shape(text: str | None):
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"--shape must be integers like 1,3,224,224, got {text!r}") from None


def _load_calibration(path: str, mod) -> list[np.ndarray]:
    """Samples from an .npy/.npz or a folder of images (see :func:`tvm_arq.samples.load_samples`)."""
    from .samples import input_shape, load_samples

    return load_samples(path, input_shape(mod))


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _drop(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of percentage points, got {text!r}") from None
    if not np.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be finite and >= 0 (percentage points), got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .config import Calibrator
    from .samples import PixelRange

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging and full tracebacks")

    def model_args(p: argparse.ArgumentParser, calibration_required: bool = False, scheme: bool = True) -> None:
        p.add_argument("--shape", help="input shape, e.g. 1,3,224,224 (default: from the model)")
        p.add_argument("--calibration", required=calibration_required, metavar="DIR|X.npy|X.npz",
                       help="calibration samples: a folder of images, an .npy (N x C x H x W) or an .npz")
        p.add_argument("--calib-limit", type=_positive, default=256, metavar="N",
                       help="use at most N calibration samples (default: 256)")
        p.add_argument("--pixel-range", default=PixelRange.SIGNED.value, choices=[r.value for r in PixelRange],
                       help="image folders: pixels map to [-1, 1] (signed, default), [0, 1] (unit) or [0, 255] (raw)")
        if scheme:
            p.add_argument("--scheme", default="hybrid", choices=["hybrid", "symmetric", "asymmetric", "float"])
        p.add_argument("--calibrator", default="output", choices=[c.value for c in Calibrator])

    def exclude_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                       help="keep this layer in float: an ONNX node name as `tvm-arq report`/`sensitivity` show "
                            "it, or a regex (repeatable)")
        p.add_argument("--int16", action="append", default=[], metavar="LAYER",
                       help="int16 activations (W8A16) for this layer, named like --exclude ('.*': every layer; "
                            "repeatable)")

    def max_drop_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-drop", type=_drop, default=None, metavar="PT",
                       help="accuracy budget: keep the fewest, cheapest layers in float until top-1 (with labels) "
                            "or top-1 agreement with fp32 on --data drops by at most PT percentage points "
                            "(e.g. 0.5)")

    def tuning_args(p: argparse.ArgumentParser, default_trials: int) -> None:
        p.add_argument("--trials", type=_nonneg if default_trials == 0 else _positive, default=default_trials,
                       help=f"MetaSchedule trials per model (default: {default_trials}"
                            + ("; 0: untuned" if default_trials == 0 else "") + ")")
        p.add_argument("--work-dir", default="tvm_arq_tuning",
                       help="tuning database directory; re-using it resumes (default: ./tvm_arq_tuning)")
        p.add_argument("--threads", type=_positive, default=None,
                       help="cores the tuned kernels use (default: physical cores of this machine)")

    def connection_args(p: argparse.ArgumentParser, required: bool) -> None:
        g = p.add_mutually_exclusive_group(required=required)
        g.add_argument("--rpc", metavar="HOST:PORT", help="the board's TVM RPC server")
        g.add_argument("--tracker", metavar="HOST:PORT", help="a TVM RPC tracker (with --key)")
        p.add_argument("--key", help="tracker key the boards registered with")

    ap = argparse.ArgumentParser(
        prog="tvm-arq", parents=[common],
        description="tvm_arq: quantize ONNX CNNs to integer-only int8 (hybrid asymmetric or symmetric), tune them "
                    "with MetaSchedule and deploy them to ARM / RISC-V boards over TVM RPC. "
                    "Run `tvm-arq COMMAND --help` for the options of a command.",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", parents=[common], help="ONNX -> quantized library for a target (untuned)",
                       description="Quantize an ONNX model and compile it for a target; writes the library "
                                   "and <library>.json (inputs, target) for `tvm-arq deploy`.")
    b.add_argument("model", help="ONNX file")
    b.add_argument("-o", "--output", required=True, help="output .so (or .tar)")
    b.add_argument("--target", default="host", help="host, aarch64, aarch64-dotprod, riscv64, riscv64-rvv, "
                                                      "x86-vnni or 'llvm -mtriple=...' (default: host)")
    model_args(b)
    b.add_argument("--qparams", help="write per-tensor quantization parameters (JSON)")
    exclude_arg(b)
    max_drop_arg(b)
    b.add_argument("--data", metavar="DIR|X.npy|X.npz",
                   help="evaluation samples of --max-drop (default: the calibration samples); an .npz may hold "
                        "labels (y)")
    b.add_argument("--labels", metavar="Y.npy|Y.npz|Y.txt", help="class labels of --data")
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("compare", parents=[common], help="fp32 vs symmetric vs hybrid: accuracy and latency",
                       description="Build fp32, symmetric and hybrid versions of a model and print accuracy "
                                   "on a labelled set (or top-1 agreement with fp32 without labels) and "
                                   "latency on this machine (tuned with --trials N, else labelled untuned).")
    c.add_argument("model", help="ONNX file")
    c.add_argument("--target", default="host", help="compilation target (latency only for targets that run "
                                                      "here; default: host)")
    model_args(c, scheme=False)
    c.add_argument("--data", metavar="DIR|X.npy|X.npz",
                   help="evaluation samples; an .npz may hold labels (y). Without it, top-1 agreement with "
                        "fp32 is measured on the calibration samples (said in the output)")
    c.add_argument("--labels", metavar="Y.npy|Y.npz|Y.txt", help="class labels of --data")
    c.add_argument("--limit", type=_positive, default=None, metavar="N", help="evaluate at most N samples")
    tuning_args(c, default_trials=0)
    max_drop_arg(c)
    c.add_argument("--json", metavar="OUT.json", help="also write the table as JSON")
    c.set_defaults(func=cmd_compare)

    t = sub.add_parser("tune", parents=[common], help="autotune a quantized model with MetaSchedule",
                       description="Quantize and autotune a model (the database in --work-dir persists, so a "
                                   "run resumes), then write the tuned library. Cross targets are measured "
                                   "on a board: --rpc HOST:PORT or --tracker HOST:PORT --key KEY.")
    t.add_argument("model", help="ONNX file")
    t.add_argument("--target", default="host", help="default: host")
    t.add_argument("-o", "--output", help="write the tuned library (.so) and its metadata")
    model_args(t)
    tuning_args(t, default_trials=64)
    connection_args(t, required=False)
    t.set_defaults(func=cmd_tune)

    for name, func, helptext in (
        ("deploy", cmd_deploy, "upload a library (or ONNX model) to a board over TVM RPC and run it once"),
        ("bench", cmd_bench, "latency of a library (or ONNX model) on a board: median and p90; --profile: "
                             "per-kernel times on the board or on this machine"),
    ):
        p = sub.add_parser(name, parents=[common], help=helptext,
                           description=helptext + ". A .so written by `tvm-arq build/tune` is uploaded as is; "
                                                  "an .onnx is built here for --target first.")
        p.add_argument("model", metavar="LIB_OR_MODEL", help="library (.so) or ONNX model")
        connection_args(p, required=name == "deploy")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per remote step (default: 60)")
        p.add_argument("--input", metavar="X.npy|X.npz|DIR",
                       help="input sample (the first one of the file); default: random inputs of the right shape")
        p.add_argument("--target", help="board CPU for an ONNX model (e.g. aarch64, riscv64-rvv)")
        model_args(p)
        if name == "deploy":
            p.add_argument("-o", "--output", metavar="OUT.npy", help="save the (first) output")
        else:
            p.add_argument("--repeat", type=_positive, default=10, metavar="N",
                           help="measurements (default: 10)")
            p.add_argument("--number", type=_positive, default=1, help="runs averaged per measurement (default: 1)")
            p.add_argument("--json", metavar="OUT.json", help="also write the statistics (the profile) as JSON")
            p.add_argument("--profile", action="store_true",
                           help="per-kernel times, shares, MACs and GMAC/s, end to end and overhead; on the board "
                                "(an .onnx built here) or, without --rpc/--tracker, on this machine")
            p.add_argument("--top", type=_positive, default=20, metavar="N", help="--profile: kernels shown (20)")
        p.set_defaults(func=func)

    r = sub.add_parser("report", help="per-layer report: ranges, scales, zero points, SQNR vs fp32")
    r.add_argument("model", help="ONNX file")
    r.add_argument("--shape", help="input shape, e.g. 1,3,224,224")
    r.add_argument("--calibration", required=True, help=".npy/.npz or a folder of images")
    r.add_argument("--data", help="samples to measure SQNR on (default: the calibration samples)")
    r.add_argument("--max-samples", type=int, default=32, help="measure on at most this many samples")
    r.add_argument("--target", default="host")
    r.add_argument("--scheme", default="hybrid", choices=["hybrid", "symmetric", "asymmetric"])
    r.add_argument("--calibrator", default="output", choices=[c.value for c in Calibrator])
    r.add_argument("--compare", action="append", default=[], choices=["hybrid", "symmetric", "asymmetric"],
                   help="also report this scheme (repeatable) and print a side-by-side table")
    r.add_argument("--json", help="write {label: report} as JSON")
    r.add_argument("--png", help="write a PNG of SQNR by layer")
    exclude_arg(r)
    r.set_defaults(func=cmd_report)

    se = sub.add_parser("sensitivity", parents=[common], help="rank layers by their contribution to output error",
                        description="For every quantizable layer: the output error with only that layer quantized "
                                    "and with only that layer left in float (one calibration pass, variants run "
                                    "on the numpy integer reference). Most sensitive first.")
    se.add_argument("model", help="ONNX file")
    model_args(se, calibration_required=True, scheme=False)
    se.add_argument("--scheme", default="hybrid", choices=["hybrid", "symmetric", "asymmetric"])
    se.add_argument("--samples", type=_positive, default=8, metavar="N",
                    help="evaluate every variant on the first N calibration samples (default: 8)")
    se.add_argument("--top", type=_positive, default=None, metavar="N", help="show (and plot) the top N layers")
    exclude_arg(se)
    se.add_argument("--json", metavar="OUT.json", help="also write the ranking as JSON")
    se.add_argument("--png", metavar="OUT.png", help="also write a bar chart (needs matplotlib)")
    se.set_defaults(func=cmd_sensitivity)

    bd = sub.add_parser("board", help="emulated dev boards (qemu-user + TVM runtime + RPC server) on loopback",
                        add_help=False)
    bd.add_argument("board_args", nargs=argparse.REMAINDER,
                    help="setup | start --arch aarch64|riscv64|riscv64-rvv [--port N] [--tracker H:P --key K] | "
                         "stop [--name N|--all] | list")
    bd.set_defaults(func=cmd_board)
    return ap


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    if text.endswith(":") and len(lines) > 1 and not lines[1].startswith("Command line"):
        # "Linking X failed:" -- the cause (the linker's first message) is on the next line
        text = f"{text} {lines[1]}"
        lines = lines[1:]
    if len(lines) > 1:
        text += " [...] (--verbose for details)"
    if not isinstance(err, OSError | ValueError | RuntimeError):
        text = f"{type(err).__name__}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["board"]:  # its own argument parser (python -m tvm_arq.deploy.boards)
        from .deploy.boards import main as boards_main

        try:
            return int(boards_main(argv[1:]) or 0)
        except SystemExit as exit_:
            return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and usage errors (2): a code, also when called in-process
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # tune: "interrupted: N records kept in DIR, rerun the same command to resume"
        print(str(e) or "interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI reports errors without tracebacks unless --verbose
        if verbose:
            raise
        print(f"tvm-arq {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
