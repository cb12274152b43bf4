"""Calibration and the float -> annotated -> integer pipeline (target independent).

``quantize_module`` is the algorithm of ``../shared/notes/method.md`` in code:

1. :func:`~tvm_arq.passes.analysis.plan_quantization` decides what becomes integer.
2. :class:`~tvm_arq.passes.InsertCalibration` exposes the quantization points; :func:`calibrate` runs the
   float module over the calibration set and streams every point into an observer.
3. :func:`select_qparams` applies the scheme (hybrid selection with an explanation per tensor).
4. :class:`~tvm_arq.passes.AnnotateQuantization` then :class:`~tvm_arq.passes.RealizeInteger`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tqdm.auto import tqdm
from tvm import relax

from .config import Calibrator, QuantConfig, RangeKind, Scheme
from .ops.elementwise import saturation_interval
from .ops.irutil import bindings_of, const_value, tensor_shape, uses
from .ops.registry import REGISTRY
from .passes import AnnotateQuantization, InsertCalibration, RealizeInteger
from .passes.analysis import QuantPlan, Role, plan_quantization, recognize_blocks
from .qmath import QParams, choose_qparams

logger = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """Calibration data that cannot be used (shape, dtype, NaN/Inf, empty, constant)."""


#: outlier rule: at least this many samples are needed to tell an outlier sample from the data
OUTLIER_MIN_SAMPLES = 8
#: ... at most this share of the samples (and at least one) may be outliers ...
OUTLIER_MAX_SHARE = 0.02
#: ... and their extreme must exceed the largest magnitude of all other samples by this factor (the other
#: samples would then use at most 1/16 of the grid: 16 of 256 levels)
OUTLIER_FACTOR = 16.0


@dataclass(frozen=True)
class OutlierClip:
    """A quantization point whose range is dominated by a few outlier samples (see :func:`find_outliers`).

    Attributes
    ----------
    lo, hi
        Range of the other samples (always holding 0), to which the chosen range is clipped.
    samples
        Indices of the outlier samples.
    extreme
        The outliers' extreme value.
    bulk
        Largest magnitude over the other samples.
    """

    lo: float
    hi: float
    samples: tuple[int, ...]
    extreme: float
    bulk: float

    def describe(self, n: int) -> str:
        ratio = abs(self.extreme) / self.bulk if self.bulk > 0 else math.inf
        return (f"calibration sample(s) {list(self.samples)} reach {self.extreme:.4g}, {ratio:.3g}x the largest "
                f"|value| {self.bulk:.4g} of the other {n - len(self.samples)} samples: range clipped to "
                f"[{self.lo:.4g}, {self.hi:.4g}]")


def find_outliers(smin: np.ndarray, smax: np.ndarray) -> OutlierClip | None:
    """The outlier rule on one tensor's per-sample extremes (bounded memory: two floats per sample).

    A range is *outlier-dominated* when its extreme (either side) comes from at most
    ``max(1, OUTLIER_MAX_SHARE * n)`` of ``n >= OUTLIER_MIN_SAMPLES`` samples and exceeds
    ``OUTLIER_FACTOR`` times the largest (non-zero) magnitude of all other samples: quantizing on it would leave the
    real data on a handful of levels (one pixel of 1e4 among images in [-3, 3] puts every real value on
    the zero point). The range is then clipped to the other samples' range.
    """
    n = len(smax)
    if n < OUTLIER_MIN_SAMPLES:
        return None
    k_max = max(1, int(OUTLIER_MAX_SHARE * n))
    mag = np.maximum(np.abs(smin), np.abs(smax))
    order = np.argsort(-mag, kind="stable")
    for k in range(1, k_max + 1):
        rest = order[k:]
        bulk = float(mag[rest].max())
        if bulk > 0.0 and float(mag[order[k - 1]]) > OUTLIER_FACTOR * bulk:
            out = order[:k]
            lo, hi = min(float(smin[rest].min()), 0.0), max(float(smax[rest].max()), 0.0)
            extreme = float(smax[out].max()) if float(np.abs(smax[out]).max()) >= float(np.abs(smin[out]).max()) \
                else float(smin[out].min())
            return OutlierClip(lo, hi, tuple(sorted(int(i) for i in out)), extreme, bulk)
    return None


def input_specs(mod: tvm.IRModule) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype)`` of ``main``'s inputs."""
    out = []
    for p in mod["main"].params:
        shp = tensor_shape(p)
        if shp is None:
            raise CalibrationError(f"input {p.name!r} has a dynamic shape; fix it with from_onnx(..., shape=...)")
        out.append((p.name, shp, str(p.ty.dtype)))
    return out


def normalize_sample(sample, specs, index: int) -> list[np.ndarray]:
    """Turn one calibration sample (array, tuple of arrays or dict name -> array) into input arrays."""
    if isinstance(sample, Mapping):
        missing = [n for n, _, _ in specs if n not in sample]
        if missing:
            raise CalibrationError(f"calibration sample {index}: missing input(s) {missing}; got keys {list(sample)}")
        arrays = [sample[n] for n, _, _ in specs]
        extra = [k for k in sample if k not in {n for n, _, _ in specs}]
        if extra and index == 0:  # documented: extra keys (labels, file names, ...) are ignored
            logger.warning("calibration samples carry key(s) %s that are not model inputs: ignored", extra)
    elif isinstance(sample, list | tuple):
        arrays = list(sample)
    else:
        arrays = [sample]
    if len(arrays) != len(specs):
        raise CalibrationError(
            f"calibration sample {index}: model has {len(specs)} input(s) {[n for n, _, _ in specs]}, "
            f"sample has {len(arrays)}"
        )
    out = []
    for (name, shape, dtype), a in zip(specs, arrays, strict=True):
        a = np.asarray(a)
        if a.shape != shape and a.shape == shape[1:] and shape[0] == 1:
            a = a[None]
        if a.shape != shape:
            hint = " (layout must be the model's, e.g. NCHW)"
            if len(shape) == 4 and a.shape[-3:] == (shape[2], shape[3], shape[1]) and shape[1] != shape[3]:
                hint = " (this looks like NHWC: the model takes NCHW, use x.transpose(0, 3, 1, 2))"
            raise CalibrationError(
                f"calibration sample {index}, input {name!r}: shape {a.shape} does not match the model's {shape}"
                + hint
            )
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise CalibrationError(f"calibration sample {index}, input {name!r}: non-real dtype {a.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are reported just below
            a = a.astype(dtype, copy=False)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise CalibrationError(f"calibration sample {index}, input {name!r}: {bad} NaN/Inf value(s)")
        out.append(np.ascontiguousarray(a))
    return out


def _samples(calibration: Iterable) -> Iterator:
    """Iterate the user's calibration data; a failure of the iterable itself names the sample it was on."""
    if isinstance(calibration, str | bytes | Mapping) or (isinstance(calibration, np.ndarray) and calibration.ndim == 0):
        raise CalibrationError(
            f"calibration must be an iterable of samples (arrays, tuples or dicts), not one {type(calibration).__name__}"
        )
    try:
        source = iter(calibration)
    except TypeError:
        raise CalibrationError(
            f"calibration must be an iterable of samples (arrays, tuples or dicts), not {type(calibration).__name__}"
        ) from None
    i = 0
    while True:
        try:
            sample = next(source)
        except StopIteration:
            return
        except Exception as e:
            raise CalibrationError(
                f"the calibration data raised {type(e).__name__} while producing sample {i} "
                f"(after {i} good sample(s)): {e}"
            ) from e
        yield sample
        i += 1


def compile_host(mod: tvm.IRModule) -> relax.VirtualMachine:
    """Compile a module for this machine (untuned) and return a VM."""
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())


class ChannelMean:
    """Streaming per-channel mean of a tensor (channel axis 1 for NCHW conv inputs, -1 for dense inputs)."""

    def __init__(self, axis: int):
        self.axis = axis
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.moveaxis(np.asarray(x, np.float64), self.axis, -1)
        s = x.reshape(-1, x.shape[-1]).sum(axis=0)
        self.total = s if self.total is None else self.total + s
        self.count += x.size // x.shape[-1]

    @property
    def mean(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("ChannelMean: no data")
        return self.total / self.count


def anchor_inputs(mod: tvm.IRModule, plan: QuantPlan) -> dict[str, int]:
    """Data inputs of the conv2d / dense anchors of ``plan``: ``{tensor name: channel axis}``."""
    out = {}
    for b in bindings_of(mod["main"]):
        op_plan = plan.ops.get(b.name)
        if op_plan is not None and op_plan.role is Role.ANCHOR and isinstance(b.value.args[0], relax.Var):
            out[b.value.args[0].name] = REGISTRY.plan_rule(b.op).input_axis
    return out


#: movement ops the ``output`` calibrator looks through to find a tensor's real consumers
MOVEMENT_OPS = ("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims")


def _movement_step(b) -> tuple | None:
    """A movement binding as a :attr:`~tvm_arq.calibrate.Consumer.view` step (``None``: shape unknown)."""
    if b.op == "relax.permute_dims":
        axes = b.value.attrs.axes
        ndim = len(tensor_shape(b.value.args[0]) or ())
        return ("permute", tuple(int(a) for a in axes) if axes is not None else tuple(range(ndim))[::-1])
    shape = tensor_shape(b.var)
    return None if shape is None else ("reshape", shape)


def _readers(name: str, users: dict, by_name: dict, view: tuple = ()) -> list[tuple[str, str, tuple]]:
    """``(reader, tensor it reads, view)`` of ``name``, looking through movement ops (at most 4 deep)."""
    out = []
    for u in dict.fromkeys(users.get(name, [])):
        b = by_name.get(u)
        step = _movement_step(b) if b is not None and b.op in MOVEMENT_OPS and len(view) < 4 else None
        if step is not None:
            out += _readers(u, users, by_name, (*view, step))
        else:
            out.append((u, name, view))
    return out


def _row_consumer(b, op_plan, read: str, view: tuple):
    """A LayerNorm / softmax consumer of ``read`` over its trailing axes, else ``None``."""
    from .calibrate import layer_norm_consumer, softmax_consumer

    if op_plan is None or b.op not in ("relax.nn.layer_norm", "relax.nn.softmax") \
            or not isinstance(b.value.args[0], relax.Var) or b.value.args[0].name != read:
        return None
    shape = tensor_shape(b.value.args[0])
    if shape is None:
        return None
    ndim = len(shape)
    if b.op == "relax.nn.layer_norm" and op_plan.role is Role.NORM:
        axes = sorted(int(a) % ndim for a in b.value.attrs.axes)
        g, bt = const_value(b.value.args[1]), const_value(b.value.args[2])
        if axes == list(range(ndim - len(axes), ndim)) and g is not None and bt is not None:
            return layer_norm_consumer(b.name, g, bt, float(b.value.attrs.epsilon), view)
    if b.op == "relax.nn.softmax" and op_plan.role is Role.SOFTMAX and int(b.value.attrs.axis) % ndim == ndim - 1:
        return softmax_consumer(b.name, shape[-1], view)
    return None


def output_sampler(mod: tvm.IRModule, plan: QuantPlan, config: QuantConfig):
    """The :class:`~tvm_arq.calibrate.OutputSampler` of ``plan`` for the ``output`` calibrator, else None:
    pass it to :func:`calibrate` and :func:`select_qparams`."""
    if config.calibrator is not Calibrator.OUTPUT:
        return None
    from .calibrate import OutputSampler

    return OutputSampler(find_consumers(mod, plan))


def find_consumers(mod: tvm.IRModule, plan: QuantPlan) -> dict:
    """The readers of every quantization point, as the ``output`` calibrator evaluates them.

    Returns ``{point: [Consumer, ...]}`` (:class:`~tvm_arq.calibrate.Consumer`): conv2d / dense anchors reading
    the point, single-row lookup tables whose input it is, LayerNorm (trailing axes) and softmax (last axis)
    reading it, each also through a chain of movement ops (:data:`MOVEMENT_OPS`, the consumer then reads the
    moved view), and one ``"tensor"`` consumer for any other reader (add, concat, pooling, an
    activation x activation matmul, a float op, the graph output).
    """
    from .calibrate import Consumer, conv_consumer, dense_consumer

    by_name = {b.name: b for b in bindings_of(mod["main"])}
    users = uses(mod["main"])
    lut_of = {v.name: out for out, region in plan.luts.items() for v in region.members}
    result: dict[str, list] = {}
    for p in plan.points:
        cs: list = []
        luts: set[str] = set()
        other = False
        for u, read, view in dict.fromkeys(_readers(p, users, by_name)):
            b, op_plan = by_name.get(u), plan.ops.get(u)
            if op_plan is not None and op_plan.role is Role.ANCHOR \
                    and isinstance(b.value.args[0], relax.Var) and b.value.args[0].name == read:
                w = const_value(b.value.args[1])
                if b.op == "relax.nn.conv2d" and w is not None:
                    a = b.value.attrs
                    cs.append(conv_consumer(u, w, a.strides, a.padding, a.dilation, int(a.groups)))
                elif b.op == "relax.matmul" and w is not None:
                    cs.append(dense_consumer(u, w))
                else:  # e.g. conv2d_transpose: judged on the tensor's own error
                    other = True
                if view and cs and cs[-1].name == u:
                    cs[-1] = dataclasses.replace(cs[-1], view=view)
            elif b is not None and (row := _row_consumer(b, op_plan, read, view)) is not None:
                cs.append(row)
            elif not view and u in lut_of and plan.luts[lut_of[u]].leaf.name == p and plan.luts[lut_of[u]].rows == 1:
                if lut_of[u] not in luts:
                    luts.add(lut_of[u])
                    region = plan.luts[lut_of[u]]
                    cs.append(Consumer(lut_of[u], "lut", fn=lambda x, r=region: r(x)[0]))
            else:
                other = True
        if other or not cs:
            cs.append(Consumer(p, "tensor"))
        result[p] = cs
    return result


def calibrate(mod: tvm.IRModule, calibration: Iterable, plan: QuantPlan, config: QuantConfig,
              progress: bool = True, input_means: dict[str, ChannelMean] | None = None,
              outliers: dict[str, OutlierClip] | None = None,
              on_output: Callable[[int, Any], None] | None = None, sampler=None) -> dict:
    """Run the float module over ``calibration`` and stream every quantization point into an observer.

    Returns ``{point name: observer}``. Memory stays bounded: one sample's activations at a time.
    If ``input_means`` (a dict) is given, it is filled with the per-channel mean of every conv2d / dense
    data input (:func:`anchor_inputs`, for bias correction).

    With ``config.calibration_checks`` (the default) the data is checked:

    - a float model input that is constant over all samples (all zero, say) is a :class:`CalibrationError`
      naming the input: every range would collapse and the model would ignore its input;
    - if ``outliers`` (a dict) is given, it receives the points whose range is dominated by a few outlier
      samples (:func:`find_outliers`), with a warning naming the tensor and the samples.

    ``on_output(i, output)``, if given, receives the float model's output on sample ``i`` (a VM result:
    a tensor or a tuple), computed by the same run.
    A ``sampler`` (:class:`~tvm_arq.calibrate.OutputSampler`, ``output`` calibrator) is offered every point of
    every sample (it keeps a bounded subsample).
    """
    specs = input_specs(mod)
    from .calibrate import make_observer

    mean_axes = anchor_inputs(mod, plan) if input_means is not None else {}
    extra = [n for n in mean_axes if n not in plan.points]
    exposed = list(plan.points) + extra
    cal_mod = InsertCalibration(exposed)(mod)
    vm = compile_host(cal_mod)
    observers = {p: make_observer(config.calibrator) for p in plan.points}
    if input_means is not None:
        input_means.update({n: ChannelMean(a) for n, a in mean_axes.items()})
    index = {n: j for j, n in enumerate(exposed)}
    in_lo = np.full(len(specs), np.inf)
    in_hi = np.full(len(specs), -np.inf)
    smin: dict[str, list[float]] = {p: [] for p in plan.points}
    smax: dict[str, list[float]] = {p: [] for p in plan.points}
    n = 0
    total = len(calibration) if hasattr(calibration, "__len__") and not isinstance(calibration, str | bytes) else None
    it = tqdm(_samples(calibration), total=total, desc="calibrating", unit="sample", disable=not progress,
              leave=False)
    for i, sample in enumerate(it):
        arrays = normalize_sample(sample, specs, i)
        for k, a in enumerate(arrays):
            if a.size:
                in_lo[k], in_hi[k] = min(in_lo[k], float(a.min())), max(in_hi[k], float(a.max()))
        res = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
        if on_output is not None:
            on_output(i, res[0])
        if sampler is not None:
            sampler.next_sample()
        for j, p in enumerate(plan.points):
            arr = res[j + 1].numpy()
            if sampler is not None:
                sampler.update(p, arr)
            try:
                observers[p].update(arr)
            except ValueError as e:
                raise CalibrationError(f"tensor {p!r} on calibration sample {i}: {e}") from e
            if arr.size:
                smin[p].append(float(arr.min()))
                smax[p].append(float(arr.max()))
        for name in mean_axes:
            input_means[name].update(res[index[name] + 1].numpy())
        n += 1
    if n == 0:
        raise CalibrationError("calibration data is empty: pass at least one sample (a few hundred is typical)")
    if n == 1:
        logger.warning("calibrating on a single sample: ranges may not generalize")
    if config.calibration_checks:
        for (name, _, dtype), lo, hi in zip(specs, in_lo, in_hi, strict=True):
            if np.issubdtype(np.dtype(dtype), np.floating) and lo == hi:
                raise CalibrationError(
                    f"calibration input {name!r} is constant over all {n} sample(s) (every value is {lo:g}): a "
                    "model calibrated on it would ignore its input. Pass real samples (or "
                    "QuantConfig(calibration_checks=False) to build on it anyway)"
                )
        if outliers is not None:
            for p in plan.points:
                if len(smax[p]) != n:
                    continue
                clip = find_outliers(np.asarray(smin[p]), np.asarray(smax[p]))
                if clip is not None:
                    outliers[p] = clip
                    logger.warning("tensor %r: %s", p, clip.describe(n))
    return observers


#: clip a lookup-table input to its saturation interval only if that narrows the range by >= 10 %
SATURATION_GAIN = 0.9


def _clip_to(alpha: float, beta: float, kind: RangeKind, lo: float, hi: float) -> tuple[float, float]:
    """Clip a calibrated range to ``[lo, hi]``; a symmetric range stays symmetric (clipped to ``max(-lo, hi)``)."""
    if kind is RangeKind.SYMMETRIC:
        a = min(max(-alpha, beta), max(-lo, hi))
        return -a, a
    return max(alpha, lo), min(beta, hi)


def select_qparams(plan: QuantPlan, observers: dict, config: QuantConfig, act_dtype: str,
                   outliers: dict[str, OutlierClip] | None = None, sampler=None) -> dict[str, QParams]:
    """Choose the range kind per quantization point (the hybrid rule) and its parameters.

    In the hybrid scheme a tensor read only by lookup-table activations is first limited to the part
    of its observed range where those tables still move
    (:func:`~tvm_arq.ops.elementwise.saturation_interval`: a hard-sigmoid input is flat beyond
    +-2.5, a SiLU input below about -7); the kind is chosen on that interval and the calibrated range
    is clipped to it.

    A point in ``outliers`` (:func:`find_outliers`) is treated as if its range were the other samples'
    range: the kind is chosen on it and the calibrated range is clipped to it.

    With the ``output`` calibrator and a ``sampler`` (:class:`~tvm_arq.calibrate.OutputSampler`), every
    candidate range of the observer is clipped likewise and the one with the smallest consumer-output error is
    chosen (:func:`~tvm_arq.calibrate.choose_candidate`); the rule then lists the candidates' errors.
    """
    out = {}
    outliers = outliers or {}
    for p in plan.points:
        obs = observers[p]
        lo, hi = float(obs.min), float(obs.max)
        clip = outliers.get(p)
        if clip is not None:
            lo, hi = max(lo, clip.lo), min(hi, clip.hi)
        sat = None
        if config.scheme is Scheme.SYMMETRIC:
            kind, rule = RangeKind.SYMMETRIC, "symmetric scheme"
        elif config.scheme is Scheme.ASYMMETRIC:
            kind, rule = RangeKind.ASYMMETRIC, "asymmetric scheme"
        else:
            if p in plan.lut_inputs:
                x_lo, x_hi = saturation_interval([plan.luts[t] for t in plan.lut_inputs[p]], lo, hi)
                if x_hi - x_lo < SATURATION_GAIN * (hi - lo):
                    sat = (min(x_lo, 0.0), max(x_hi, 0.0))  # the grid always holds real 0
                    lo, hi = max(lo, sat[0]), min(hi, sat[1])
            amax = max(abs(lo), abs(hi))
            ratio = min(abs(lo), abs(hi)) / amax if amax > 0 else 1.0
            if p in plan.producer_nonneg:
                op_plan = plan.ops.get(p)
                what = op_plan.reason if op_plan is not None and op_plan.role is Role.LUT else "ReLU/ReLU6/clip>=0"
                kind, rule = RangeKind.ONE_SIDED, f"non-negative producer ({what}): one-sided"
            elif lo >= 0.0:
                kind, rule = RangeKind.ONE_SIDED, f"observed min {lo:.4g} >= 0: one-sided"
            elif ratio >= config.symmetric_tolerance:
                kind, rule = RangeKind.SYMMETRIC, (
                    f"near-symmetric: min {lo:.4g}, max {hi:.4g}, ratio {ratio:.2f} >= {config.symmetric_tolerance}"
                )
            else:
                kind, rule = RangeKind.ASYMMETRIC, (
                    f"skewed signed: min {lo:.4g}, max {hi:.4g}, ratio {ratio:.2f} < {config.symmetric_tolerance}:"
                    " redistributed asymmetric"
                )
        output_aware = sampler is not None and hasattr(obs, "candidates") and p in sampler.consumers
        ranges = obs.candidates(kind) if output_aware else {"": obs.compute_range(kind)}
        if sat is not None:
            ranges = {k: _clip_to(*r, kind, *sat) for k, r in ranges.items()}
            fns = sorted({plan.ops[t].reason.removeprefix("lookup table: ") for t in plan.lut_inputs[p]})
            rule += (f"; read only by lookup table(s) {', '.join(fns)}, which saturate outside "
                     f"[{sat[0]:.4g}, {sat[1]:.4g}] (observed [{obs.min:.4g}, {obs.max:.4g}]): range clipped there")
        if clip is not None:
            ranges = {k: _clip_to(*r, kind, clip.lo, clip.hi) for k, r in ranges.items()}
            rule += "; outliers: " + clip.describe(obs.count)
        alpha, beta = next(iter(ranges.values()))
        if output_aware:
            rows = sampler.inputs(p)
            if rows:
                alpha, beta, why = _output_choice(rows, sampler.consumers[p], ranges, kind)
                rule += why
        if p in plan.int16_points:
            rule += "; int16 (W8A16): symmetric over max(|alpha|, beta)"
        out[p] = choose_qparams(alpha, beta, kind, "int16" if p in plan.int16_points else act_dtype, rule=rule)
    return out


def _output_choice(rows: list, consumers: list, ranges: dict, kind: RangeKind) -> tuple[float, float, str]:
    """Run the output-error choice of one point; ``(alpha, beta, explanation for the rule)``."""
    from .calibrate import choose_candidate

    name, err = choose_candidate(rows, consumers, ranges, kind)
    kinds = ", ".join(f"{c.kind} {c.name}" for c in consumers)
    others = ", ".join(f"{n} {e:.3g}" for n, e in sorted(err.items(), key=lambda t: t[1]) if n != name)
    a, b = ranges[name]
    why = (f"; output-aware: {name} [{a:.4g}, {b:.4g}], relative consumer-output error {err[name]:.3g} "
           f"(others: {others}; consumers: {kinds}; bounded memory by subsampling: {rows[0].shape[0]} rows "
           "from a reservoir of calibration samples)")
    return a, b, why


@dataclass
class QuantizationResult:
    """Everything the quantizer produced for one module."""

    float_mod: tvm.IRModule
    plan: QuantPlan
    qparams: dict[str, QParams]
    qdq_mod: tvm.IRModule
    int_mod: tvm.IRModule


def quantize_module(mod: tvm.IRModule, calibration: Iterable, config: QuantConfig, act_dtype: str,
                    progress: bool = True) -> QuantizationResult:
    """Quantize a float module (constants bound) to an integer module."""
    input_specs(mod)  # a dynamic input shape is the reason, not "nothing to quantize"
    mod = recognize_blocks(mod)
    plan = plan_quantization(mod, config.skip_ops, config.exclude, int16=config.int16)
    if not plan.points:
        raise ValueError("nothing to quantize: the model has no supported op (conv2d, dense, add, concat); "
                         "build it with scheme='float' to compile it unquantized")
    means: dict[str, ChannelMean] | None = {} if config.bias_correction else None
    outliers: dict[str, OutlierClip] = {}
    sampler = output_sampler(mod, plan, config)
    observers = calibrate(mod, calibration, plan, config, progress=progress, input_means=means, outliers=outliers,
                          sampler=sampler)
    qparams = select_qparams(plan, observers, config, act_dtype, outliers, sampler)
    qdq = AnnotateQuantization(plan, qparams, {k: m.mean for k, m in (means or {}).items()})(mod)
    int_mod = RealizeInteger(plan)(qdq)
    return QuantizationResult(mod, plan, qparams, qdq, int_mod)


def quantize_fixed(mod: tvm.IRModule, table, config: QuantConfig, act_dtype: str) -> QuantizationResult:
    """Compile a pre-quantized (QDQ) model's float module with the model's own parameters (no calibration).

    ``table`` is the :class:`~tvm_arq.frontend.ModelQuant` of :func:`~tvm_arq.frontend.model_qparams`; see
    :func:`~tvm_arq.passes.fixed.plan_fixed`. Every ``qparams[...].rule`` says the parameters came from the model.
    """
    from .passes.fixed import plan_fixed

    input_specs(mod)
    mod = recognize_blocks(mod)
    plan, qparams, weights = plan_fixed(mod, table, act_dtype, config.skip_ops, config.exclude)
    if not plan.points:
        kept = [f"{name} ({op}): {reason}" for name, op, reason in plan.fallbacks[:4]]
        raise ValueError(
            "nothing to quantize: the model quantizes no op that tvm_arq implements in integer; an integer op "
            "needs the model to state its inputs', weights' and output's parameters (QuantizeLinear on its "
            "output), and a model that quantizes only op inputs (NNCF's ONNX format) leaves every output in "
            f"float. Kept in float: {'; '.join(kept) or 'every op'}"
            f"{' ...' if len(plan.fallbacks) > 4 else ''}. Give calibration data (and a scheme) to re-quantize "
            "the model with tvm_arq's own parameters")
    qdq = AnnotateQuantization(plan, qparams, None, weights)(mod)
    int_mod = RealizeInteger(plan)(qdq)
    return QuantizationResult(mod, plan, qparams, qdq, int_mod)
