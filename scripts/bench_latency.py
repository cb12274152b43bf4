"""Latency benchmark on this machine: tuned fp32 / symmetric int8 / hybrid int8 (TVM) vs onnxruntime.

For every model, in **one process and one run**:

- ``tvm_fp32``: the float model, tuned with MetaSchedule;
- ``tvm_int8_symmetric`` / ``tvm_int8_hybrid``: ``tvm_arq`` integer builds (symmetric activations vs the
  hybrid asymmetric scheme), converted to the target's kernels (:mod:`tvm_arq.passes.layout`: NHWC,
  packed weights, ``vpdpbusd``) and tuned with the same trial budget as fp32. Their conv and
  depthwise kernels are structurally identical (zero points and clamps are kernel operands), so by
  default the two share one tuning database: the symmetric run tunes ``--trials`` trials, the hybrid
  run re-uses those records for the shared kernels and spends the rest of its own ``--trials`` budget
  on the kernels that differ (element-wise ones with baked constants). The hybrid/symmetric ratio then
  measures the zero-point cost, not tuning luck; ``--separate-int8-db`` tunes them independently;
- ``ort_fp32`` / ``ort_int8``: onnxruntime on the same ONNX model, and on its ``quantize_static`` QDQ
  version (per-channel int8 weights, uint8 activations, MinMax) calibrated on the **same** samples.

Every variant runs with the same number of threads (``--threads``, default 2: TVM's thread pool via
``TVM_NUM_THREADS``, onnxruntime's ``intra_op_num_threads``). Latency is measured per inference with
``time.perf_counter`` around the Python call (the same harness for both engines), in interleaved rounds
(each round runs every variant once) so that load changes on a shared machine hit all variants alike;
the tables report the median and the 90th percentile. Within a round each variant runs ``--block``
times back to back after a short pause (the worker threads of the previous variant stop spinning).

Tuning databases persist in ``--work-dir`` (default ``tuning/latency``): re-running resumes an
interrupted run and re-uses finished tuning. Results are written after every model to
``--out``/``latency.json`` (records ``{model, target, variant, median_ms, p90_ms, trials, ...}``) and
``latency.md``. ``--run NAME`` stores a run as its own section (``runs[NAME]`` in the JSON: another host,
another model set) and keeps the main run's rows; a main run keeps the named runs.

Models: EfficientNet-Lite0 (224x224), YOLOX-Tiny (416x416), the MNIST CNN, PP-OCR cls (1x3x48x192) by default;
PP-OCRv4 rec (``ppocr_rec``: attention + LayerNorm, 1x3x48x320 text lines) and PP-OCRv4 det (``ppocr_det``:
DBNet head with conv2d_transpose, a fixed 1x3x256x256 canvas; onnxruntime runs the same ONNX file with its
dynamic input fed at that size) on request.

Usage::

    python scripts/bench_latency.py --trials 300                       # all models
    python scripts/bench_latency.py --models mnist_cnn --trials 64     # one model
    python scripts/bench_latency.py --quick                            # smoke run: MNIST, 16 trials
    python scripts/bench_latency.py --run epyc-zen3 --models ppocr_cls ppocr_rec ppocr_det \
        --variants tvm_int8_hybrid ort_int8 ort_fp32 --trials 64 --check  # a separate section
    nohup python scripts/bench_latency.py --trials 300 > results/latency.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench_latency")

REPO = Path(__file__).resolve().parent.parent
TVM_VARIANTS = ("tvm_fp32", "tvm_int8_symmetric", "tvm_int8_hybrid")
ORT_VARIANTS = ("ort_fp32", "ort_int8")
VARIANTS = TVM_VARIANTS + ORT_VARIANTS


# ------------------------------------------------------------------------------------------ models
@dataclass
class Workload:
    """An ONNX model, its input and calibration samples (batch 1 each)."""

    name: str
    onnx_model: Any  # path or onnx.ModelProto
    input_name: str
    shape: tuple[int, ...]
    calibration: list[np.ndarray]
    sample: np.ndarray
    notes: dict[str, Any] = field(default_factory=dict)


def _efficientnet(n_calib: int) -> Workload:
    from arq_bench import datasets, zoo

    crops = datasets.photo_crops(n_calib + 1, 224, seed=0, split="calib")
    x = zoo.efficientnet_lite0_preprocess(crops).astype(np.float32)
    return Workload("efficientnet_lite0", zoo.efficientnet_lite0(), "input", (1, 3, 224, 224),
                    [c[None] for c in x[:n_calib]], x[n_calib:][:1])


def _yolox(n_calib: int) -> Workload:
    from arq_bench import assets, zoo

    x, _ = zoo.yolox_detection_set(n_calib + 1, seed=1, split="calib")
    x = x.astype(np.float32)
    return Workload("yolox_tiny", str(assets.fetch("yolox_tiny")), "images", (1, 3, 416, 416),
                    [c[None] for c in x[:n_calib]], x[n_calib:][:1])


def _mnist(n_calib: int) -> Workload:
    from arq_bench import zoo

    xtr, _ = zoo.mnist_train()
    order = np.random.default_rng(0).permutation(len(xtr))[: n_calib + 1]
    x = xtr[order].astype(np.float32).reshape(-1, 1, 28, 28)
    return Workload("mnist_cnn", str(zoo.mnist_cnn()), "input", (1, 1, 28, 28), [c[None] for c in x[:n_calib]],
                    x[n_calib:][:1])


def _ppocr_cls(n_calib: int) -> Workload:
    from arq_bench import assets, datasets

    x, _ = datasets.text_direction_set(n_calib + 1, seed=1)
    x = x.astype(np.float32)
    return Workload("ppocr_cls", str(assets.fetch("ppocr_cls")), "x", (1, 3, 48, 192), [c[None] for c in x[:n_calib]],
                    x[n_calib:][:1])


def _ppocr_rec(n_calib: int) -> Workload:
    """PP-OCRv4 recognizer (attention + LayerNorm), 1x3x48x320, rendered text lines (seed 0 as its accuracy run)."""
    from arq_bench import assets, datasets

    x, _ = datasets.text_recognition_set(n_calib + 1, seed=0, width=PPOCR_REC_SHAPE[3])
    x = x.astype(np.float32)
    return Workload("ppocr_rec", str(assets.fetch("ppocr_rec")), "x", PPOCR_REC_SHAPE,
                    [c[None] for c in x[:n_calib]], x[n_calib:][:1])


def _ppocr_det(n_calib: int) -> Workload:
    """PP-OCRv4 detector (DBNet head, two conv2d_transpose), fixed 1x3x256x256 canvases of rendered text lines.

    The canvases are those of ``scripts/bench_ppocr_det.py`` (calibration seeds 10000+, the timed sample seed 0).
    """
    import importlib.util

    from arq_bench import assets

    spec = importlib.util.spec_from_file_location("bench_ppocr_det", REPO / "scripts" / "bench_ppocr_det.py")
    det = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(det)
    photos = assets.natural_photos()
    size = PPOCR_DET_SHAPE[2]
    cal = [det.text_canvas(10_000 + i, size, photos)[0].astype(np.float32) for i in range(n_calib)]
    sample = det.text_canvas(0, size, photos)[0].astype(np.float32)
    return Workload("ppocr_det", str(assets.fetch("ppocr_det")), "x", PPOCR_DET_SHAPE, cal, sample)


PPOCR_REC_SHAPE = (1, 3, 48, 320)
PPOCR_DET_SHAPE = (1, 3, 256, 256)
WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "efficientnet_lite0": _efficientnet,
    "yolox_tiny": _yolox,
    "mnist_cnn": _mnist,
    "ppocr_cls": _ppocr_cls,
    "ppocr_rec": _ppocr_rec,
    "ppocr_det": _ppocr_det,
}
DEFAULT_MODELS = ("efficientnet_lite0", "yolox_tiny", "mnist_cnn", "ppocr_cls")


def _onnx_input_name(model: Any) -> str:
    import onnx

    m = model if hasattr(model, "graph") else onnx.load(str(model))
    inits = {i.name for i in m.graph.initializer}
    return next(i.name for i in m.graph.input if i.name not in inits)


# ------------------------------------------------------------------------------------------ onnxruntime
def ort_session(model: Any, threads: int):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An onnxruntime CPU session with ``threads`` intra-op threads and full graph optimization."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else Path(model).read_bytes()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def ort_quantize(w: Workload, dst: Path) -> Path:
    """``quantize_static`` QDQ (per-channel int8 weights, uint8 activations, MinMax) on ``w.calibration``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from arq_bench.onnxrt import calibration_reader, qdq_ready_model

    model = qdq_ready_model(w.onnx_model)
    src = dst.with_name(dst.stem + "_float.onnx")
    onnx.save(model, str(src))
    quantize_static(str(src), str(dst), calibration_reader(w.input_name, w.calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return dst


# ------------------------------------------------------------------------------------------ TVM builds
def count_tasks(mod: Any, info: Any, threads: int) -> int:
    """Number of MetaSchedule tasks of a module (to size ``trials_per_iter``)."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_arq.backends import register_kernel_rules
    from tvm_arq.tune import prepare_for_tuning, tuning_target

    register_kernel_rules()
    tgt = tuning_target(info, threads)
    tasks = ms.relax_integration.extract_tasks(prepare_for_tuning(mod, tgt), tgt)
    return sum(1 for t in tasks if not (t.mod.attrs and t.mod.attrs.get("tirx.is_scheduled", False)))


@dataclass
class Built:
    """A compiled TVM variant and how it was made."""

    executable: Any
    trials_budget: int
    trials_measured: int
    tasks: int
    tune_seconds: float
    compile_seconds: float


def build_tvm(mod: Any, info: Any, trials: int, work_dir: Path, threads: int, progress: bool) -> Built:
    """Tune (``trials > 0``) and compile one module; an integer module is first lowered for the target."""
    import tvm

    from tvm_arq.backends import ApplyDefaultSchedules
    from tvm_arq.build import lower_for_target
    from tvm_arq.tune import TuneConfig, compile_tuned, open_database, tune

    lowered = lower_for_target(mod, info)
    n_tasks = count_tasks(lowered, info, threads)
    if trials <= 0:
        t0 = time.perf_counter()
        ex = tvm.compile(ApplyDefaultSchedules()(lowered), target=info.target)
        return Built(ex, 0, 0, n_tasks, 0.0, time.perf_counter() - t0)
    # every task gets at least one search iteration, so no kernel of any variant stays unscheduled
    per_iter = int(np.clip(trials // max(1, n_tasks), 2, 32))
    cfg = TuneConfig(trials=trials, trials_per_iter=per_iter, work_dir=work_dir, num_threads=threads,
                     progress=progress)
    t0 = time.perf_counter()
    db = tune(lowered, info, cfg)
    tune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex = compile_tuned(lowered, info, db, num_threads=threads)
    compile_s = time.perf_counter() - t0
    measured = len(open_database(work_dir).get_all_tuning_records())
    return Built(ex, trials, measured, n_tasks, tune_s, compile_s)


# ------------------------------------------------------------------------------------------ timing
def measure(runners: dict[str, Callable[[], Any]], rounds: int, block: int, warmup: int, max_seconds: float,
            pause: float = 0.05) -> dict[str, list[float]]:
    """Interleaved timing in rounds; in each round every variant runs ``block`` times back to back.

    Worker threads of both engines spin for a while after a call (onnxruntime's intra-op pool, TVM's
    pool): a pause before each block lets the previous variant's threads go idle, so no variant is
    measured against another one's spinning threads. Stops after ``rounds`` or ``max_seconds``.
    """
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    t_end = time.perf_counter() + max_seconds
    for r in range(rounds):
        for name, fn in runners.items():
            time.sleep(pause)
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
        if r >= 3 and time.perf_counter() > t_end:
            break
    return times


# ------------------------------------------------------------------------------------------ reporting
def load_results(out_dir: Path) -> dict[str, Any]:
    """The content of ``latency.json`` (``{}`` when absent): ``meta``/``records`` of the main run, ``runs``."""
    path = out_dir / "latency.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(records: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any], run: str | None = None) -> None:
    """``latency.json`` and ``latency.md`` (tables and ratios, per thread count).

    Without ``run`` the records and metadata are the main run's (top-level ``meta``/``records`` of the JSON);
    with ``run`` they are stored as ``runs[run]`` (another host, another model set) and the main run is kept.
    The markdown has one section per run, the main run first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_results(out_dir)
    if run is None:
        data["meta"], data["records"] = meta, records
    else:
        data.setdefault("runs", {})[run] = {"meta": meta, "records": records}
    data = {k: data[k] for k in ("meta", "records", "runs") if k in data}
    (out_dir / "latency.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# Latency (batch 1)", ""]
    if "meta" in data:
        lines += render_run(data["records"], data["meta"], "Main run")
    for name, r in data.get("runs", {}).items():
        lines += ["", *render_run(r["records"], r["meta"], f"Run `{name}`")]
    (out_dir / "latency.md").write_text("\n".join(lines) + "\n")


def render_run(records: list[dict[str, Any]], meta: dict[str, Any], title: str) -> list[str]:
    """The markdown section of one run: command, machine, latency table, ratios, tuning time, notes."""
    by_command: dict[str, list[str]] = {}
    for model, command in meta.get("commands", {}).items():
        by_command.setdefault(command, []).append(model)
    if len(by_command) > 1:
        head = ["Commands (one per group of models, same host and work directory):", "",
                *(f"- `{c}`: {', '.join(m)}" for c, m in by_command.items())]
    else:
        head = [f"Command: `{meta['command']}`"]
    lines = [
        f"## {title}: {meta['machine']}",
        "",
        *head,
        "",
        f"Machine: {meta['machine']}; target `{meta['target']}`. Every variant is timed with the same thread "
        f"count: **{meta['threads']} threads** (TVM thread pool, onnxruntime `intra_op_num_threads`; the tuning "
        f"target has `num-cores` {meta['threads']}), and again with {', '.join(map(str, meta.get('also_threads', [])))}"
        " thread(s). Tuning: MetaSchedule, xgb cost model, "
        f"{meta['trials']} trials per TVM variant and model (fp32, symmetric and hybrid alike; {meta['int8_db']}). "
        "Timing: per inference, `time.perf_counter` around the Python call for both engines, interleaved rounds "
        f"(blocks of runs per variant); load average at start {meta['loadavg_start']}, at end "
        f"{meta.get('loadavg_end', '?')} on {meta.get('logical_cores', '?')} logical cores: the machine is shared, "
        "absolute numbers are noisy; ratios within a model and thread count are measured side by side.",
        "",
        "| model | threads | variant | median ms | p90 ms | trials (records) | tasks | tuning s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        threads = int(r.get("threads", meta["threads"]))
        groups.setdefault((r["model"], threads), {})[r["variant"]] = r
        tvm_row = r["variant"].startswith("tvm")
        trials = f"{r['trials']} ({r.get('trials_measured', '-')})" if tvm_row else "-"
        tasks = r.get("tasks", "-") if tvm_row else "-"
        tune_s = f"{r['tune_seconds']:.0f}" if r.get("tune_seconds") else "-"
        lines.append(f"| {r['model']} | {threads} | {r['variant']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | "
                     f"{trials} | {tasks} | {tune_s} |")
    lines += [
        "",
        "Tuning s: wall time spent tuning the variant, summed over resumed runs. With the shared int8 database "
        "the symmetric run tunes the shared kernels, the hybrid run only the kernels that differ.",
        "",
        "Ratios of medians (`a / b` < 1 means `a` is faster). **The int8 speed-up is quoted against onnxruntime "
        "fp32** (`ort_fp32 / hybrid`), not against TVM fp32: MetaSchedule's float kernels are far from converged "
        "at these budgets (the `tvm_fp32 / ort_fp32` column), so `tvm_fp32 / hybrid` would flatter int8.",
        "",
        "| model | threads | hybrid / symmetric | int8 speed-up (ort_fp32 / hybrid) | hybrid / ort_int8 | "
        "tvm_fp32 / ort_fp32 | tvm_fp32 / hybrid (flattering) | ort_fp32 / ort_int8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(v: dict[str, dict[str, Any]], a: str, b: str) -> str:
        if a in v and b in v:
            return f"{v[a]['median_ms'] / v[b]['median_ms']:.2f}"
        return "-"

    slow: list[float] = []
    for (model, threads), v in groups.items():
        lines.append(
            f"| {model} | {threads} | {ratio(v, 'tvm_int8_hybrid', 'tvm_int8_symmetric')} | "
            f"{ratio(v, 'ort_fp32', 'tvm_int8_hybrid')} | {ratio(v, 'tvm_int8_hybrid', 'ort_int8')} | "
            f"{ratio(v, 'tvm_fp32', 'ort_fp32')} | {ratio(v, 'tvm_fp32', 'tvm_int8_hybrid')} | "
            f"{ratio(v, 'ort_fp32', 'ort_int8')} |"
        )
        if "tvm_fp32" in v and "ort_fp32" in v:
            slow.append(v["tvm_fp32"]["median_ms"] / v["ort_fp32"]["median_ms"])
    if slow:
        lines += ["", f"TVM fp32 is tuned with {meta['trials']} trials and is {min(slow):.1f}-{max(slow):.1f}x slower "
                  "than onnxruntime fp32 here; int8 speed-ups are quoted against onnxruntime fp32."]
    wall: dict[str, float] = {}
    for r in records:
        if r.get("tune_seconds") and int(r.get("threads", meta["threads"])) == meta["threads"]:
            wall[r["model"]] = wall.get(r["model"], 0.0) + r["tune_seconds"]
    if wall:
        lines += ["", "Tuning wall time per model (all TVM variants): "
                  + ", ".join(f"{m} {s / 60:.1f} min" for m, s in wall.items()) + "."]
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    return lines


# ------------------------------------------------------------------------------------------ main
def bench_model(name: str, args: argparse.Namespace, info: Any) -> list[dict[str, Any]]:
    """Build, tune and time every variant of one model."""
    import tvm
    from tvm import relax

    import tvm_arq
    from tvm_arq.build import prepare
    from tvm_arq.config import QuantConfig, Scheme
    from tvm_arq.quantize import quantize_module

    w = WORKLOADS[name](args.calib)
    w.input_name = _onnx_input_name(w.onnx_model)
    logger.info("[%s] importing", name)
    mod, params = tvm_arq.from_onnx(w.onnx_model, shape={w.input_name: w.shape})
    fmod = prepare(mod, params)
    mods: dict[str, Any] = {"tvm_fp32": fmod}
    for scheme in (Scheme.SYMMETRIC, Scheme.HYBRID):
        key = f"tvm_int8_{scheme.value}"
        if key not in args.variants:
            continue
        logger.info("[%s] quantizing (%s, %d calibration samples)", name, scheme.value, len(w.calibration))
        res = quantize_module(fmod, w.calibration, QuantConfig(scheme=scheme), info.act_dtype, progress=False)
        if res.plan.fallbacks:
            logger.warning("[%s] %s float fallbacks: %s", name, scheme.value, res.plan.fallbacks)
        mods[key] = res.int_mod
    dev = tvm.cpu()
    runners: dict[str, Callable[[], Any]] = {}
    built: dict[str, Built] = {}
    x_tvm = tvm.runtime.tensor(np.ascontiguousarray(w.sample))
    outputs: dict[str, np.ndarray] = {}
    for key in TVM_VARIANTS:
        if key not in args.variants or key not in mods:
            continue
        logger.info("[%s] %s: tuning %d trials", name, key, args.trials)
        db_dir = args.work_dir / name / (key if args.separate_int8_db or key == "tvm_fp32" else "tvm_int8")
        b = build_tvm(mods[key], info, args.trials, db_dir, args.threads, args.progress)
        b.tune_seconds = _total_tuning_seconds(args.work_dir / name, key, b.tune_seconds)
        built[key] = b
        logger.info("[%s] %s: %d tasks, %d records, tuned in %.0f s, compiled in %.0f s", name, key, b.tasks,
                    b.trials_measured, b.tune_seconds, b.compile_seconds)
        f = relax.VirtualMachine(b.executable, dev)["main"]
        outputs[key] = _first(f(x_tvm))
        runners[key] = (lambda f=f: f(x_tvm))
    if args.check and "tvm_int8_hybrid" in mods:
        from tvm_arq.ops.reference import ReferenceInterpreter

        want = _first_np(ReferenceInterpreter(mods["tvm_int8_hybrid"]).run(w.sample))
        exact = bool(np.array_equal(outputs["tvm_int8_hybrid"], want))
        logger.info("[%s] hybrid build bit-exact against the reference interpreter: %s", name, exact)
        if not exact:
            raise SystemExit(f"{name}: the tuned hybrid build differs from the reference interpreter")
    feeds = {w.input_name: np.ascontiguousarray(w.sample)}
    qpath = ort_quantize(w, args.work_dir / name / "ort_qdq.onnx") if "ort_int8" in args.variants else None
    records = []
    for threads in args.thread_counts:
        set_tvm_threads(threads)
        ort_runners: dict[str, Callable[[], Any]] = {}
        if "ort_fp32" in args.variants:
            s32 = ort_session(w.onnx_model, threads)
            ort_runners["ort_fp32"] = (lambda s=s32: s.run(None, feeds))
        if qpath is not None:
            s8 = ort_session(qpath, threads)
            ort_runners["ort_int8"] = (lambda s=s8: s.run(None, feeds))
        all_runners = {**runners, **ort_runners}
        logger.info("[%s] timing with %d thread(s): %s", name, threads, ", ".join(all_runners))
        times = measure(all_runners, args.rounds, args.block, args.warmup, args.max_seconds)
        for key, ts in times.items():
            rec: dict[str, Any] = {
                "model": name, "target": str(info), "variant": key,
                "median_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90)), "runs": len(ts),
                "threads": threads, "trials": args.trials if key.startswith("tvm") else 0,
            }
            if key in built:
                b = built[key]
                rec.update(trials_measured=b.trials_measured, tasks=b.tasks,
                           tune_seconds=round(b.tune_seconds, 1), compile_seconds=round(b.compile_seconds, 1))
            records.append(rec)
            logger.info("[%s] %d thread(s) %-20s median %.3f ms  p90 %.3f ms", name, threads, key,
                        rec["median_ms"], rec["p90_ms"])
    set_tvm_threads(args.threads)
    return records


def set_tvm_threads(n: int) -> None:
    """Resize TVM's runtime thread pool (``runtime.config_threadpool``: big cores, ``n`` threads)."""
    import tvm_ffi

    tvm_ffi.get_global_func("runtime.config_threadpool")(1, n)


def _total_tuning_seconds(model_dir: Path, key: str, seconds: float) -> float:
    """Accumulate the tuning wall time of a variant over resumed runs (``tuning_seconds.json``)."""
    path = model_dir / "tuning_seconds.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = float(data.get(key, 0.0)) + float(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data[key]


def _first(res: Any) -> np.ndarray:
    if hasattr(res, "numpy"):
        return res.numpy()
    return res[0].numpy()


def _first_np(res: Any) -> np.ndarray:
    return res if isinstance(res, np.ndarray) else np.asarray(res[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, choices=sorted(WORKLOADS),
                   help=f"models (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--trials", type=int, default=None, help="MetaSchedule trials per TVM variant and model "
                   "(default 300; --quick 16; 0 = untuned default schedules)")
    p.add_argument("--threads", type=int, default=2, help="threads of every variant (default 2; also the "
                   "tuning target's num-cores)")
    p.add_argument("--also-threads", type=int, nargs="*", default=[1],
                   help="further thread counts to time every variant with (default: 1, robust on a loaded machine)")
    p.add_argument("--calib", type=int, default=16, help="calibration samples (TVM and onnxruntime alike)")
    p.add_argument("--rounds", type=int, default=30, help="max timing rounds")
    p.add_argument("--block", type=int, default=10, help="runs of each variant per round (back to back)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="timing budget per model")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--work-dir", type=Path, default=REPO / "tuning" / "latency",
                   help="tuning databases (re-used: a re-run resumes)")
    p.add_argument("--out", type=Path, default=REPO / "results")
    p.add_argument("--run", default=None, metavar="NAME",
                   help="store the results as the separate run NAME of latency.json/.md (its own section, e.g. "
                        "another host), keeping the main run's rows; default: the main run")
    p.add_argument("--notes", nargs="*", default=[], help="lines appended to the run's markdown section")
    p.add_argument("--machine", default=None, help="machine description for the report (default: from platform)")
    p.add_argument("--target", default="host", help="tvm_arq target (must run here)")
    p.add_argument("--check", action="store_true", help="check the hybrid build against the reference interpreter")
    p.add_argument("--separate-int8-db", action="store_true",
                   help="tune symmetric and hybrid in separate databases (default: one database; their conv "
                        "kernels are the same workloads, zero points being operands)")
    p.add_argument("--quick", action="store_true", help="smoke run: MNIST only, 16 trials, few rounds")
    p.add_argument("--progress", action="store_true", help="tqdm bars while tuning")
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or ["mnist_cnn"]
        args.trials = 16 if args.trials is None else args.trials
        args.rounds = min(args.rounds, 10)
        args.max_seconds = min(args.max_seconds, 10.0)
    args.models = args.models or list(DEFAULT_MODELS)
    args.thread_counts = [args.threads, *(t for t in args.also_threads if t != args.threads)]
    args.trials = 300 if args.trials is None else args.trials
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # before TVM creates its thread pool
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("tvm_arq").setLevel(logging.WARNING)
    logging.getLogger("tvm_arq.tune").setLevel(logging.INFO)
    from tvm_arq.target import resolve_target

    info = resolve_target(args.target)
    if not info.is_host:
        raise SystemExit(f"target {info} does not run on this machine")
    argv_s = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    meta: dict[str, Any] = {
        "command": f"python scripts/bench_latency.py {argv_s}".strip(),
        "machine": (f"{args.machine}, " if args.machine else "") + f"{platform.machine()}, {os.cpu_count()} "
                   f"logical cores, LLVM CPU {info.to_dict().get('mcpu', '?')}",
        "target": str(info), "threads": args.threads, "trials": args.trials,
        "also_threads": [t for t in args.thread_counts if t != args.threads], "logical_cores": os.cpu_count(),
        "int8_db": ("separate databases" if args.separate_int8_db else
                    "symmetric and hybrid share one database: their conv/depthwise kernels are identical workloads"),
        "loadavg_start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.notes:
        meta["notes"] = list(args.notes)
    keep_others = args.run is not None or args.models != list(DEFAULT_MODELS)
    mine: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for name in args.models:
        t0 = time.perf_counter()
        mine += bench_model(name, args, info)
        # the other models' rows of an earlier run (of the same section), read when writing
        data = load_results(args.out)
        previous = data if args.run is None else data.get("runs", {}).get(args.run, {})
        done = {r["model"] for r in mine}
        others = [r for r in previous.get("records", []) if r["model"] not in done] if keep_others else []
        records = others + mine
        old_meta = previous.get("meta", {})
        commands = old_meta.get("commands") or {r["model"]: old_meta.get("command", "?") for r in others}
        meta["commands"] = {**{r["model"]: commands.get(r["model"], "?") for r in others},
                            **{m: meta["command"] for m in done}}
        meta["loadavg_end"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
        meta.setdefault("wall_minutes", {})[name] = round((time.perf_counter() - t0) / 60, 1)
        write_results(records, args.out, meta, args.run)
        logger.info("[%s] done in %.1f min; results in %s", name, (time.perf_counter() - t0) / 60, args.out)
    logger.info("all done in %.1f min", (time.perf_counter() - t_all) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
