"""fp32 vs symmetric vs hybrid on one model: accuracy (or agreement with fp32) and latency.

::

    from tvm_arq.compare import compare_schemes

    result = compare_schemes(mod, params, calibration=cal, data=x, labels=y, target="host")
    print(result.to_text())

Latency is measured on this machine (so only for targets that run here). Without a ``tuning`` config the
kernels are untuned and the table says so: untuned latency does not compare int8 against fp32.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .budget import AccuracyBudget
from .build import build
from .config import Scheme
from .target import resolve_target

__all__ = ["Comparison", "SchemeResult", "compare_schemes", "top1"]

logger = logging.getLogger(__name__)


@dataclass
class SchemeResult:
    """One row of a :class:`Comparison`.

    Attributes
    ----------
    scheme
        ``"fp32"``, ``"symmetric"``, ``"hybrid"`` or ``"asymmetric"``.
    calibrator
        Calibrator used (``"-"`` for fp32).
    accuracy
        Top-1 accuracy on the labelled set (``None`` without labels).
    agreement
        Fraction of samples whose top-1 class equals fp32's.
    median_ms, p90_ms
        Latency on this machine (``None`` when the target does not run here).
    tuned
        Whether the kernels were autotuned.
    float_fallbacks
        Ops that stayed in float.
    build_seconds
        Quantization and compilation (and tuning) time.
    kept_float
        Layers an accuracy budget kept in float (the ``+budget`` row).
    """

    scheme: str
    calibrator: str
    accuracy: float | None
    agreement: float
    median_ms: float | None
    p90_ms: float | None
    tuned: bool
    float_fallbacks: int
    build_seconds: float
    kept_float: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """Result of :func:`compare_schemes`."""

    rows: list[SchemeResult]
    target: str
    n_samples: int
    n_calibration: int
    labelled: bool
    tuned: bool
    trials: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = dataclasses.asdict(self)
        d["latency"] = f"tuned ({self.trials} trials per model)" if self.tuned else "untuned"
        return d

    def to_text(self) -> str:
        """The table, with a header line and the caveats."""
        lat = "latency ms" if self.tuned else "untuned ms"
        metric = "top-1" if self.labelled else "top-1 (n/a)"
        hdr = f"{'scheme':<15}{'calibrator':<16}{metric:>11}{'agree fp32':>12}{lat:>12}{'p90 ms':>9}{'float ops':>10}"
        lines = [
            f"target {self.target}; {self.n_samples} evaluation samples "
            f"({'labelled' if self.labelled else 'no labels: agreement with fp32 only'}); "
            f"calibration {self.n_calibration} samples; latency "
            + (f"tuned ({self.trials} MetaSchedule trials per model)" if self.tuned else "UNTUNED"),
            hdr,
            "-" * len(hdr),
        ]

        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        for r in self.rows:
            lines.append(f"{r.scheme:<15}{r.calibrator:<16}{num(r.accuracy, '.3f'):>11}{r.agreement:>12.3f}"
                         f"{num(r.median_ms, '.3f'):>12}{num(r.p90_ms, '.3f'):>9}{r.float_fallbacks:>10}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def top1(model: Any, data: Sequence[np.ndarray], progress: bool = False, desc: str = "evaluating") -> np.ndarray:
    """Top-1 class (argmax of the flattened first output) of ``model.run`` on each sample."""
    from tqdm.auto import tqdm

    preds = []
    for x in tqdm(data, desc=desc, leave=False, disable=not progress):
        out = model.run(x)
        if isinstance(out, tuple):
            out = out[0]
        preds.append(int(np.argmax(np.asarray(out).reshape(-1))))
    return np.asarray(preds, dtype=np.int64)


def _onnxruntime_top1(source: Any, data: Sequence[np.ndarray]) -> np.ndarray | None:
    """Top-1 of onnxruntime running the ONNX model ``source`` (None if onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        logger.warning("onnxruntime is not installed: the source runtime's row is left out")
        return None
    data_ = source.SerializeToString() if hasattr(source, "SerializeToString") else str(source)
    sess = ort.InferenceSession(data_, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.asarray([int(np.argmax(np.asarray(sess.run(None, {name: np.asarray(x, np.float32).reshape(
        [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape])})[0]).reshape(-1))) for x in data])


def compare_schemes(
    mod: Any,
    params: Mapping[str, np.ndarray] | None,
    calibration: Sequence[np.ndarray] | None,
    data: Sequence[np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    *,
    target: Any = "host",
    schemes: Sequence[str] = ("float", "symmetric", "hybrid"),
    calibrator: str = "output",
    tuning: Any = None,
    bench_number: int = 5,
    bench_repeat: int = 5,
    max_drop: float | None = None,
    progress: bool = True,
    source: Any = None,
) -> Comparison:
    """Build ``mod`` once per scheme and compare accuracy and latency.

    Parameters
    ----------
    mod, params
        Float Relax module and weights (:func:`tvm_arq.from_onnx`).
    calibration
        Calibration samples; ``None`` for a pre-quantized (QDQ) model compared only as the model quantized it.
    data
        Evaluation samples (default: the calibration samples).
    labels
        Class labels of ``data``; without them only agreement with fp32 is reported.
    target
        Compilation target; latency is measured only when it runs on this machine.
    schemes
        Schemes to build; ``"float"`` is always built first (it is the agreement reference).
    calibrator
        Calibrator of the quantized schemes.
    tuning
        A :class:`~tvm_arq.tune.TuneConfig`: each scheme is tuned with its budget, in
        ``work_dir/<scheme>`` (resumable). ``None``: untuned (the table says so).
    bench_number, bench_repeat
        Latency measurement: ``bench_repeat`` measurements of ``bench_number`` runs.
    max_drop
        Also build the last quantized scheme with an accuracy budget (row ``<scheme>+budget``): top-1 on
        ``labels`` (else agreement with fp32) on ``data`` may drop by at most this many percentage points
        (:class:`~tvm_arq.budget.AccuracyBudget`).
    progress
        Show progress bars.
    source
        The ONNX model ``mod`` was imported from. For a pre-quantized (QDQ / QOperator) model two rows are added:
        ``model-qdq`` (tvm_arq with the model's own parameters, no calibration) and ``onnxruntime`` (the
        producer's runtime on the same file; needs onnxruntime).

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        If ``labels`` and ``data`` differ in length, or there is no sample.
    """
    from .frontend import model_qparams

    prequantized = model_qparams(mod) is not None
    if calibration is None and not prequantized:
        raise ValueError("calibration samples are required (only a pre-quantized QDQ model compares without them)")
    calibration = list(calibration) if calibration is not None else []
    if not calibration:
        schemes = ()
    data = list(calibration if data is None else data)
    if not data:
        raise ValueError("no evaluation samples")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(data):
            raise ValueError(f"{len(labels)} labels for {len(data)} evaluation samples")
    info = resolve_target(target)
    order = ["float", *(["model-qdq"] if prequantized else []),
             *[Scheme(s).value for s in schemes if Scheme(s) is not Scheme.FLOAT]]
    if max_drop is not None:
        if len(order) < 2:
            raise ValueError("max_drop needs a quantized scheme to compare")
        order.append(f"{order[-1]}+budget")
    rows: list[SchemeResult] = []
    ref: np.ndarray | None = None
    notes: list[str] = []
    if not info.is_host:
        notes.append(f"target {info.triple} does not run here: latency not measured (deploy it and use "
                     "`tvm-arq bench` on the board); accuracy is computed on a host build of the same program")
    elif tuning is None:
        notes.append("latency is of untuned kernels (pass trials > 0 to autotune); it does not compare int8 "
                     "against fp32")
    for scheme in order:
        name = "fp32" if scheme == "float" else scheme
        scheme, _, budgeted = scheme.partition("+")
        budget = None
        if budgeted:
            budget = AccuracyBudget(data=data, max_drop=max_drop, metric="agreement" if labels is None else "top1",
                                    labels=labels)
        cfg = None
        if tuning is not None:
            cfg = dataclasses.replace(tuning, work_dir=tuning.work_dir / name)
        t0 = time.perf_counter()
        logger.info("building %s", name)
        fixed = scheme == "model-qdq"
        model = build(mod, params, info, calibration=None if scheme == "float" or fixed else calibration,
                      scheme="hybrid" if fixed else scheme, calibrator=calibrator, tuning=cfg, accuracy=budget,
                      progress=progress)
        build_s = time.perf_counter() - t0
        preds = top1(model, data, progress=progress, desc=f"evaluating {name}")
        if ref is None:
            ref = preds
        lat: dict[str, float | None] = {"median_ms": None, "p90_ms": None}
        if info.is_host:
            lat.update(model.benchmark(data[0], number=bench_number, repeat=bench_repeat))
        rows.append(SchemeResult(
            scheme=name,
            calibrator="-" if scheme == "float" else "from model" if fixed else str(calibrator),
            accuracy=None if labels is None else float(np.mean(preds == labels)),
            agreement=float(np.mean(preds == ref)),
            median_ms=lat["median_ms"],
            p90_ms=lat["p90_ms"],
            tuned=tuning is not None,
            float_fallbacks=len(model.fallbacks),
            build_seconds=build_s,
            kept_float=[k.name for k in model.accuracy_report.kept] if model.accuracy_report else [],
        ))
        if model.accuracy_report is not None:
            rep = model.accuracy_report
            kept = ", ".join(rows[-1].kept_float) or "nothing"
            notes.append(f"{name}: max drop {max_drop:g} pt ({rep.metric}); kept in float: {kept} "
                         f"({rep.macs_kept:,} of {rep.macs_total:,} MACs)")
    if prequantized and source is not None:
        preds = _onnxruntime_top1(source, data)
        if preds is not None:
            rows.append(SchemeResult(scheme="onnxruntime", calibrator="from model",
                                     accuracy=None if labels is None else float(np.mean(preds == labels)),
                                     agreement=float(np.mean(preds == ref)), median_ms=None, p90_ms=None,
                                     tuned=False, float_fallbacks=0, build_seconds=0.0))
            notes.append("onnxruntime: the source runtime on the same pre-quantized file (its own kernels; latency "
                         "not measured); fp32 is tvm_arq's float build of the model's dequantized weights")
    return Comparison(rows=rows, target=str(info.triple), n_samples=len(data), n_calibration=len(calibration),
                      labelled=labels is not None, tuned=tuning is not None,
                      trials=0 if tuning is None else int(tuning.trials), notes=notes)
