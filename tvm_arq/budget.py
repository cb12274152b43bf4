"""Accuracy budget: keep the fewest, cheapest layers in higher precision until the accuracy drop fits.

``build(..., accuracy=AccuracyBudget(data=..., max_drop=0.5))`` runs :func:`meet_budget` before quantizing:

1. fp32 outputs on ``budget.data`` (the float module compiled for the host) and the fp32 score;
2. one calibration pass and the all-int8 score; if the drop is within ``max_drop``, nothing is kept (and
   nothing is ranked);
3. otherwise the layers are ranked once by :func:`tvm_arq.sensitivity` (output error gain of leaving each one
   in float; near-equal gains, within ``GAIN_TIE`` of the all-int8 error, are ordered cheaper first), and a
   second calibration pass observes the quantization points the candidates add (the calibration runs the float
   model, so a point's statistics do not depend on which layers are kept in float: the chosen candidate gets
   exactly the parameters the final build computes);
4. the smallest prefix of the ranking that meets the budget is found by doubling then bisecting the prefix
   length; then each kept layer (most expensive first) is returned to int8 if the budget still holds without
   it.

Every candidate is evaluated on the numpy integer reference interpreter (bit-exact with the compiled model by
the project's contract, and no TVM compilation per candidate; distinct float ops are compiled once and shared).
The caller compiles the final choice once.

Cost of a kept layer: its multiply-accumulates (conv2d / matmul) plus one per output element of its other ops,
from the tensor shapes ("float MACs"). The MetaSchedule database holds int8 kernel timings per tuning task but no
float timing of the same layer, so per-layer latency is not used for the ordering; with
``measure_latency=True`` :func:`tvm_arq.build` measures the final model against the all-int8 one instead.

Precision. A kept layer is a :class:`Precision` choice per layer: ``INT16`` (its activations int16, W8A16,
through ``QuantConfig.int16``; still integer-only) or ``FLOAT`` (through ``QuantConfig.exclude``). With
``AccuracyBudget(precision="int16")`` (the default) the search of step 4 is first run with every candidate
layer in int16; only if no prefix of the ranking meets the budget in int16 is it run again in float, and then
each layer kept in float (most expensive first) is tried in int16 instead and stays there if the budget still
holds. A candidate whose int16 arithmetic cannot be represented (:class:`~tvm_arq.qmath.QuantizationError`, e.g.
an int32 accumulator bound) counts as not meeting the budget. ``precision="float"`` keeps layers in float only.
"""

from __future__ import annotations

import enum
import logging
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tvm

from .config import QuantConfig
from .frontend.naming import layer_of
from .ops.irutil import bindings_of, tensor_shape
from .ops.reference import ReferenceInterpreter
from .passes import AnnotateQuantization, RealizeInteger
from .passes.analysis import QuantPlan, plan_quantization
from .qmath import QuantizationError
from .quantize import (
    ChannelMean,
    OutlierClip,
    QuantizationResult,
    anchor_inputs,
    calibrate,
    compile_host,
    input_specs,
    normalize_sample,
    output_sampler,
    select_qparams,
)
from .report.render import accuracy_text
from .sensitivity import _quiet, layer_units, sensitivity

logger = logging.getLogger(__name__)

__all__ = ["AccuracyBudget", "AccuracyReport", "KeptLayer", "Precision", "meet_budget", "top1_accuracy"]

#: metrics known by name: top-1 agreement with fp32 / top-1 accuracy against ``labels`` (both in percent)
METRICS = ("agreement", "top1")
#: gains closer than this share of the all-int8 output error count as equal: the cheaper layer ranks first
GAIN_TIE = 0.02


class Precision(str, enum.Enum):
    """What a kept layer runs in: int16 activations (W8A16, integer) or float."""

    INT16 = "int16"
    FLOAT = "float"


def _first_output(out: Any) -> np.ndarray:
    while isinstance(out, tuple | list):
        out = out[0]
    return np.asarray(out)


def _argmax(outputs: Sequence[Any]) -> np.ndarray:
    return np.asarray([int(np.argmax(_first_output(o).reshape(-1))) for o in outputs], np.int64)


def top1_accuracy(labels: Sequence[int] | np.ndarray) -> Callable[[Sequence[Any], Sequence[Any]], float]:
    """A metric: top-1 accuracy in percent (argmax of the flattened first output against ``labels``)."""
    y = np.asarray(labels).astype(np.int64).reshape(-1)

    def metric(outputs: Sequence[Any], data: Sequence[Any]) -> float:
        if len(outputs) != len(y):
            raise ValueError(f"{len(y)} labels for {len(outputs)} evaluation samples")
        return 100.0 * float(np.mean(_argmax(outputs) == y))

    metric.__name__ = "top1"
    return metric


@dataclass(frozen=True)
class AccuracyBudget:
    """How much accuracy quantization may cost, for ``tvm_arq.build(..., accuracy=...)``.

    Parameters
    ----------
    data
        Evaluation samples (arrays, tuples or dicts, as for calibration; a dict's extra keys such as labels are
        ignored by the model and passed to the metric with ``data``). Use samples disjoint from calibration.
    max_drop
        Largest allowed ``metric(fp32) - metric(quantized)``, in the metric's units (the named metrics are in
        percent: ``0.5`` is half a point). ``0`` asks for no drop at all.
    metric
        ``"agreement"`` (default): top-1 agreement with fp32 in percent (argmax of the flattened first output);
        ``"top1"``: top-1 accuracy against ``labels`` in percent; or a callable ``metric(outputs, data) ->
        float``, higher is better, where ``outputs`` is one model output per sample (an array, or a tuple for
        several outputs) and ``data`` is this budget's ``data``.
    labels
        Class labels of ``data`` for ``metric="top1"``.
    samples
        Samples (from the calibration set) the sensitivity ranking is computed on.
    precision
        :attr:`Precision.INT16` (default): try int16 activations for the kept layers before float;
        :attr:`Precision.FLOAT`: keep layers in float only (see the module docstring).
    measure_latency
        After the search, also compile the all-int8 model and measure both on this machine (untuned kernels;
        host targets only) to report the latency cost of the kept layers.
    """

    data: Sequence[Any]
    max_drop: float = 0.5
    metric: Callable[[Sequence[Any], Sequence[Any]], float] | str = "agreement"
    labels: Sequence[int] | np.ndarray | None = field(default=None, repr=False)
    samples: int = 8
    precision: Precision = Precision.INT16
    measure_latency: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.data, str | bytes) or not hasattr(self.data, "__len__") or not hasattr(self.data,
                                                                                                  "__getitem__"):
            raise TypeError(f"AccuracyBudget.data must be a sequence of samples (list or array), "
                            f"not {type(self.data).__name__}")
        if len(self.data) == 0:
            raise ValueError("AccuracyBudget.data is empty: pass the evaluation samples")
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, numbers.Real):
            raise TypeError(f"AccuracyBudget.max_drop must be a number, not {type(self.max_drop).__name__}")
        if not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise ValueError(f"AccuracyBudget.max_drop must be finite and >= 0 (in the metric's units; the named "
                             f"metrics are in percent), got {self.max_drop}")
        if isinstance(self.metric, str):
            if self.metric not in METRICS:
                raise ValueError(f"AccuracyBudget.metric must be one of {list(METRICS)} or a callable "
                                 f"metric(outputs, data) -> float, got {self.metric!r}")
            if self.metric == "top1" and self.labels is None:
                raise ValueError("AccuracyBudget(metric='top1') needs labels (one class per sample of data)")
        elif not callable(self.metric):
            raise TypeError(f"AccuracyBudget.metric must be a name {list(METRICS)} or a callable, "
                            f"not {type(self.metric).__name__}")
        if self.labels is not None and len(np.asarray(self.labels).reshape(-1)) != len(self.data):
            raise ValueError(f"AccuracyBudget: {len(np.asarray(self.labels).reshape(-1))} labels for "
                             f"{len(self.data)} samples")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"AccuracyBudget.samples must be an integer >= 1, got {self.samples!r}")
        object.__setattr__(self, "precision", Precision(self.precision))

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "metric")

    def score(self, outputs: Sequence[Any], reference: Sequence[Any]) -> float:
        """The metric of ``outputs`` (``reference``: the fp32 outputs, for agreement)."""
        if self.metric == "agreement":
            return 100.0 * float(np.mean(_argmax(outputs) == _argmax(reference)))
        fn = top1_accuracy(self.labels) if self.metric == "top1" else self.metric
        value = fn(outputs, self.data)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError(f"the accuracy metric returned {value!r}; it must return a finite number")
        return float(value)


@dataclass(frozen=True)
class KeptLayer:
    """A layer the budget kept in higher precision.

    Attributes
    ----------
    name, layers, op
        As in :class:`~tvm_arq.sensitivity.LayerSensitivity` (``layers`` go to ``QuantConfig.exclude``).
    precision
        What it runs in.
    rank
        Its position in the sensitivity ranking (1: most sensitive).
    gain
        Output error gain of leaving it alone in float (sensitivity).
    macs
        Its float multiply-accumulates per inference (plus one per output element of its other ops).
    """

    name: str
    layers: tuple[str, ...]
    op: str
    precision: Precision
    rank: int
    gain: float
    macs: int


@dataclass
class AccuracyReport:
    """What :func:`meet_budget` measured and chose (``model.accuracy_report``).

    Attributes
    ----------
    metric, max_drop, n_samples
        The budget.
    fp32, int8, final
        Metric of the float model, of the all-int8 model and of the final choice.
    kept
        Layers kept in higher precision (empty: all-int8 met the budget).
    macs_total, macs_kept
        MACs of all quantizable layers and of the layers kept in float (the compute that stays in float; int16
        layers are integer and not counted).
    evaluations, seconds
        Candidates evaluated (reference interpreter) and the time of ranking + search.
    latency
        ``{"final_ms", "int8_ms", "note"}`` when measured (``measure_latency=True``), else ``None``.
    """

    metric: str
    max_drop: float
    n_samples: int
    fp32: float
    int8: float
    final: float
    kept: list[KeptLayer]
    macs_total: int
    macs_kept: int
    evaluations: int
    seconds: float
    latency: dict[str, Any] | None = None

    @property
    def drop(self) -> float:
        return self.fp32 - self.final

    @property
    def met(self) -> bool:
        return self.drop <= self.max_drop + 1e-9

    @property
    def exclude(self) -> tuple[str, ...]:
        return tuple(lay for k in self.kept if k.precision is Precision.FLOAT for lay in k.layers)

    @property
    def int16(self) -> tuple[str, ...]:
        return tuple(lay for k in self.kept if k.precision is Precision.INT16 for lay in k.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "max_drop": self.max_drop, "n_samples": self.n_samples, "fp32": self.fp32,
            "int8": self.int8, "final": self.final, "drop": self.drop, "int8_drop": self.fp32 - self.int8,
            "met": self.met, "macs_total": self.macs_total, "macs_kept": self.macs_kept,
            "kept": [{"name": k.name, "layers": list(k.layers), "op": k.op, "precision": k.precision.value,
                      "rank": k.rank, "gain": k.gain, "macs": k.macs} for k in self.kept],
            "evaluations": self.evaluations, "seconds": self.seconds, "latency": self.latency,
        }

    def to_text(self) -> str:
        return accuracy_text(self.to_dict())


#: above this estimated time per candidate on the reference interpreter, candidates are compiled instead
INTERPRETER_SECONDS = 60.0


def _unit_macs(fmod: tvm.IRModule, layers: Sequence[str]) -> int:
    """Float MACs of the bindings of ``layers`` (conv2d / matmul; other ops: one per output element)."""
    wanted = set(layers)
    total = 0
    for b in bindings_of(fmod["main"]):
        if layer_of(b.name) not in wanted:
            continue
        out = tensor_shape(b.var)
        if out is None:
            continue
        n_out = int(np.prod(out)) if out else 1
        op = b.op
        if op == "relax.nn.conv2d":
            w = tensor_shape(b.value.args[1]) or (0, 1, 1, 1)
            total += n_out * int(np.prod(w[1:]))
        elif op in ("relax.matmul", "relax.nn.dense", "relax.linear"):
            x = tensor_shape(b.value.args[0]) or (1,)
            total += n_out * int(x[-1])
        else:
            total += n_out
    return total


def _layers(kept: Sequence[KeptLayer], precision: Precision) -> tuple[str, ...]:
    return tuple(lay for k in kept if k.precision is precision for lay in k.layers)


def _apply(config: QuantConfig, kept: Sequence[KeptLayer]) -> QuantConfig:
    """``config`` with the kept layers in their precision."""
    return replace(config, exclude=config.exclude + _layers(kept, Precision.FLOAT),
                   int16=config.int16 + _layers(kept, Precision.INT16))


def _key(kept: Sequence[KeptLayer]) -> tuple[frozenset[str], frozenset[str]]:
    """Candidate key: (layers in float, layers in int16)."""
    return frozenset(_layers(kept, Precision.FLOAT)), frozenset(_layers(kept, Precision.INT16))


class _Evaluator:
    """Scores candidate sets of kept layers on the reference interpreter (cached by set)."""

    def __init__(self, fmod: tvm.IRModule, calibration: list, config: QuantConfig, act_dtype: str,
                 budget: AccuracyBudget, plans: dict[frozenset[str], QuantPlan], progress: bool):
        self.fmod, self.config, self.act_dtype, self.budget, self.plans = fmod, config, act_dtype, budget, plans
        specs = input_specs(fmod)
        self.inputs = [normalize_sample(s, specs, i) for i, s in enumerate(budget.data)]
        vm = compile_host(fmod)
        self.reference = [_numpy(vm["main"](*[tvm.runtime.tensor(a) for a in x])) for x in self.inputs]
        self.fp32 = budget.score(self.reference, self.reference)
        self.calibration = calibration
        self.observers: dict[str, Any] = {}
        self.means: dict[str, ChannelMean] | None = {} if config.bias_correction else None
        self.outliers: dict[str, OutlierClip] = {}
        self.progress = progress
        self.calibrations = 0
        # the output calibrator judges each point at its consumers in the all-int8 plan (every candidate)
        self.sampler = output_sampler(fmod, plans[frozenset(), frozenset()], config)
        self.float_cache: dict = {}
        self.compiled = False
        self.cache: dict[tuple[frozenset[str], frozenset[str]], float] = {}
        self.results: dict[tuple[frozenset[str], frozenset[str]], QuantizationResult] = {}

    def _outputs(self, int_mod: tvm.IRModule) -> list[Any]:
        """The candidate's outputs on the budget data: on the numpy reference interpreter, or compiled for
        this machine (the same integers, bit-exact) once the first candidate's first sample shows that the
        interpreter would take more than ``INTERPRETER_SECONDS`` for the whole data."""
        if not self.compiled:
            interp = ReferenceInterpreter(int_mod, float_cache=self.float_cache)
            t0 = time.perf_counter()
            first = interp.run(*self.inputs[0])
            if (time.perf_counter() - t0) * len(self.inputs) <= INTERPRETER_SECONDS:
                return [first] + [interp.run(*x) for x in self.inputs[1:]]
            logger.info("accuracy budget: evaluating candidates compiled for this machine (the reference "
                        "interpreter would take ~%.0f s per candidate)", (time.perf_counter() - t0) * len(self.inputs))
            self.compiled = True
        vm = compile_host(int_mod)
        return [_numpy(vm["main"](*[tvm.runtime.tensor(a) for a in x])) for x in self.inputs]

    def observe(self, plans: Sequence[QuantPlan]) -> None:
        """Calibrate the points of ``plans`` not observed yet (one float pass over the calibration set).

        Observers are per point and the calibration runs the float model, so points observed by different
        passes are the same as if observed together.
        """
        missing = list(dict.fromkeys(p for plan in plans for p in plan.points if p not in self.observers))
        if not missing:
            return
        means: dict[str, ChannelMean] | None = {} if self.means is not None else None
        outliers: dict[str, OutlierClip] = {}
        # the data warnings (outliers, ...) are given once: by the first pass, the others repeat them
        with _quiet("tvm_arq.quantize") if self.calibrations else _quiet(""):
            self.observers.update(calibrate(self.fmod, self.calibration, replace(plans[0], points=missing),
                                            self.config, progress=self.progress, input_means=means,
                                            outliers=outliers, sampler=None if self.calibrations else self.sampler))
        self.calibrations += 1
        if self.means is not None and means is not None:
            self.means.update({k: v for k, v in means.items() if k not in self.means})
        self.outliers.update(outliers)

    def plan(self, key: frozenset[str], int16: frozenset[str] = frozenset()) -> QuantPlan:
        """Plan with the layers ``key`` in float and ``int16`` in int16 (int16 adds no quantization point)."""
        if (key, int16) not in self.plans:
            with _quiet("tvm_arq.passes.analysis"):
                self.plans[key, int16] = plan_quantization(self.fmod, self.config.skip_ops, self.config.exclude
                                                           + tuple(sorted(key)), int16=self.config.int16
                                                           + tuple(sorted(int16)))
        return self.plans[key, int16]

    def __call__(self, kept: Sequence[KeptLayer]) -> float | None:
        """Metric with ``kept`` in their precision (``None`` if a point of the candidate was not calibrated;
        ``-inf`` if its integer arithmetic cannot be represented)."""
        key = _key(kept)
        if key in self.cache:
            return self.cache[key]
        plan = self.plan(*key)
        if not plan.points:
            score = self.fp32
        else:
            if any(p not in self.observers for p in plan.points) or (
                    self.means is not None and any(n not in self.means for n in anchor_inputs(self.fmod, plan))):
                return None
            qparams = select_qparams(plan, self.observers, self.config, self.act_dtype, self.outliers, self.sampler)
            means = {k: m.mean for k, m in (self.means or {}).items()}
            qdq = AnnotateQuantization(plan, qparams, means)(self.fmod)
            try:
                with _quiet("tvm_arq.ops"):
                    int_mod = RealizeInteger(plan)(qdq)
            except QuantizationError as e:
                logger.info("budget candidate %s: not representable (%s)", key, e)
                self.cache[key] = -math.inf
                return -math.inf
            self.results[key] = QuantizationResult(self.fmod, plan, qparams, qdq, int_mod)
            score = self.budget.score(self._outputs(int_mod), self.reference)
        self.cache[key] = score
        logger.debug("budget candidate %s: %s %.4f", sorted(key), self.budget.metric_name, score)
        return score


def _numpy(res: Any) -> Any:
    if hasattr(res, "numpy"):
        return res.numpy()
    return tuple(_numpy(r) for r in res)


def meet_budget(fmod: tvm.IRModule, calibration: Sequence[Any], config: QuantConfig, act_dtype: str,
                budget: AccuracyBudget,
                progress: bool = False) -> tuple[QuantConfig, AccuracyReport, QuantizationResult | None]:
    """Choose the layers to keep in higher precision so that the metric drop fits ``budget.max_drop``.

    Parameters
    ----------
    fmod
        Prepared float module (weights bound, :func:`~tvm_arq.frontend.prepare_module`).
    calibration
        Calibration samples (materialized).
    config, act_dtype
        The quantization options of the build.
    budget
        See :class:`AccuracyBudget`.
    progress
        Progress bars while calibrating.

    Returns
    -------
    (QuantConfig, AccuracyReport, QuantizationResult or None)
        ``config`` with the kept layers applied, what was measured and chosen, and the chosen candidate's
        integer module (the one measured; ``None`` if every layer is kept in float) for the caller to compile.
    """
    t0 = time.perf_counter()
    calibration = list(calibration)
    with _quiet("tvm_arq.passes.analysis"):
        base = plan_quantization(fmod, config.skip_ops, config.exclude, int16=config.int16)
    ev = _Evaluator(fmod, calibration, config, act_dtype, budget, {(frozenset(), frozenset()): base}, progress)
    ev.observe([base])

    def fits(kept: Sequence[KeptLayer]) -> bool | None:
        score = ev(kept)
        return None if score is None else ev.fp32 - score <= budget.max_drop + 1e-9

    int8 = ev([])
    kept: list[KeptLayer] = []
    macs_total = 0
    if fits([]):
        macs_total = sum(_unit_macs(fmod, lays) for _, lays, _ in layer_units(base))
    else:
        ranking = sensitivity(fmod, None, calibration, config=config, act_dtype=act_dtype, samples=budget.samples)
        tol = GAIN_TIE * ranking.full_error if ranking.full_error > 0 else 0.0
        units = [KeptLayer(e.name, e.exclude, e.op, Precision.FLOAT, rank, e.gain, _unit_macs(fmod, e.exclude))
                 for rank, e in enumerate(ranking.layers, start=1)]
        if tol > 0:
            units.sort(key=lambda u: (-math.floor(u.gain / tol), u.macs, u.rank))
        macs_total = sum(u.macs for u in units)
        ev.observe([ev.plan(frozenset(lay for u in units[:k] for lay in u.layers)) for k in range(1, len(units))])
        kept = []
        if budget.precision is Precision.INT16:
            kept = _search([replace(u, precision=Precision.INT16) for u in units], fits)
        if not kept:
            kept = _search(units, fits) or list(units)
            if budget.precision is Precision.INT16:
                for u in sorted(kept, key=lambda u: -u.macs):  # float -> int16 where the budget still holds
                    trial = [replace(k, precision=Precision.INT16) if k is u else k for k in kept]
                    if fits(trial):
                        kept = trial
    kept.sort(key=lambda u: u.rank)
    final = ev(kept)
    report = AccuracyReport(budget.metric_name, float(budget.max_drop), len(ev.inputs), ev.fp32, float(int8),
                            float(final if final is not None else ev.fp32), kept, macs_total,
                            sum(k.macs for k in kept if k.precision is Precision.FLOAT), len(ev.cache),
                            time.perf_counter() - t0)
    logger.info("accuracy budget: %s", report.to_text())
    return _apply(config, kept), report, ev.results.get(_key(kept))


def _search(units: list[KeptLayer], fits: Callable[[Sequence[KeptLayer]], bool | None]) -> list[KeptLayer]:
    """The smallest prefix of ``units`` that fits (doubling, then bisection), each of its layers returned to
    int8 (most expensive first) where the rest still fits; ``[]`` if not even all of ``units`` fit."""
    n = len(units)
    if n == 0 or not fits(units):
        return []
    lo, hi = 0, 1  # fits(units[:lo]) is False; find the smallest hi with fits(units[:hi])
    while hi < n and not fits(units[:hi]):
        lo, hi = hi, min(2 * hi, n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(units[:mid]):
            hi = mid
        else:
            lo = mid
    kept = list(units[:hi])
    for u in sorted(kept, key=lambda u: -u.macs):  # return layers to int8, most expensive first
        if len(kept) > 1 and fits([k for k in kept if k is not u]):
            kept.remove(u)
    return kept
