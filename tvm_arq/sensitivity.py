"""Per-layer sensitivity: which quantized layers contribute most to the output error.

:func:`sensitivity` measures, for every quantizable layer ``L`` of a float model,

- *alone*: the output error when only ``L`` is quantized (every other layer left in float), and
- *left out*: the output error when ``L`` is left in float and every other layer is quantized; its *gain* is
  the error of the fully quantized model minus this one (how much keeping ``L`` in float would help).

Layers are ranked by gain (then by the alone error). A *layer* is one integer unit of the quantization plan
(a conv/dense group with its bias and activation, a lookup table, an add, a mul, ...), named by the ONNX
node(s) it came from (:mod:`tvm_arq.frontend.naming`): pass ``entry.exclude`` to
``QuantConfig(exclude=...)`` to keep it in float.

Cost. One calibration pass serves every variant: calibration runs the *float* model, so a tensor's observed
statistics (and with them the range every per-tensor calibrator chooses, the outlier clip and the bias
correction means) do not depend on which other layers are quantized. The calibration exposes the union of
the quantization points of all variants; each variant then only chooses its parameters
(:func:`~tvm_arq.quantize.select_qparams`), annotates, realizes, and runs on the numpy integer reference
interpreter (no TVM compilation of the variant; each distinct float op is compiled once and shared). The
float outputs come from the same calibration run. Work: ``2 * layers + 1`` variants times ``samples``
reference runs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .config import QuantConfig, Scheme
from .frontend.naming import layer_of
from .frontend.params import prepare_module
from .ops.irutil import bindings_of
from .ops.reference import ReferenceInterpreter
from .passes import AnnotateQuantization, RealizeInteger
from .passes.analysis import QuantPlan, Role, plan_quantization, recognize_blocks
from .passes.annotate import Switches
from .quantize import (
    ChannelMean,
    OutlierClip,
    calibrate,
    compile_host,
    input_specs,
    normalize_sample,
    output_sampler,
    select_qparams,
)

logger = logging.getLogger(__name__)

__all__ = ["Evaluator", "LayerSensitivity", "SensitivityResult", "layer_units", "sensitivity"]

_UNIT_ROLES = (Role.ANCHOR, Role.ADD, Role.CONCAT, Role.LUT, Role.MUL, Role.MATMUL, Role.SOFTMAX)


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantizable layer's contribution to the output error.

    Attributes
    ----------
    name
        Layer name (the first ONNX node of the unit).
    exclude
        Every layer name of the unit: ``QuantConfig(exclude=entry.exclude)`` keeps it in float.
    op
        What the unit computes, e.g. ``"conv2d+add"`` or ``"lookup table: silu"``.
    alone_error, left_out_error
        Relative output error ``sum((y_q - y_f)^2) / sum(y_f^2)`` over the evaluated samples (all outputs)
        with only this layer quantized, and with this layer in float and all others quantized.
    gain
        Error of the fully quantized model minus ``left_out_error``.
    """

    name: str
    exclude: tuple[str, ...]
    op: str
    alone_error: float
    left_out_error: float
    gain: float

    @property
    def alone_sqnr_db(self) -> float:
        return _db(self.alone_error)

    @property
    def left_out_sqnr_db(self) -> float:
        return _db(self.left_out_error)


def _db(err: float) -> float:
    return math.inf if err <= 0.0 else -10.0 * math.log10(err)


@dataclass(frozen=True)
class SensitivityResult:
    """Ranked layers (most sensitive first) and the error of the fully quantized model."""

    layers: tuple[LayerSensitivity, ...]
    full_error: float
    samples: int
    config: dict[str, Any]

    @property
    def full_sqnr_db(self) -> float:
        return _db(self.full_error)

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isinf(x) or math.isnan(x) else x

        return {
            "samples": self.samples,
            "config": self.config,
            "full_error": self.full_error,
            "full_sqnr_db": num(self.full_sqnr_db),
            "metric": "relative squared output error sum((y_q-y_f)^2)/sum(y_f^2); sqnr_db = -10 log10(error)",
            "layers": [
                {"rank": i + 1, "name": e.name, "exclude": list(e.exclude), "op": e.op,
                 "alone_error": e.alone_error, "alone_sqnr_db": num(e.alone_sqnr_db),
                 "left_out_error": e.left_out_error, "left_out_sqnr_db": num(e.left_out_sqnr_db), "gain": e.gain}
                for i, e in enumerate(self.layers)
            ],
        }

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def table(self, top: int | None = None) -> str:
        """Plain-text table, most sensitive first."""
        rows = self.layers if top is None else self.layers[:top]
        w = max([len("layer")] + [len(e.name) for e in rows])
        lines = [
            f"fully quantized: output SQNR {self.full_sqnr_db:.2f} dB over {self.samples} sample(s)",
            f"{'rank':>4}  {'layer':<{w}}  {'alone dB':>9}  {'left-out dB':>11}  {'gain':>10}  op",
        ]
        for i, e in enumerate(rows):
            extra = f" (+ {', '.join(e.exclude[1:])})" if len(e.exclude) > 1 else ""
            lines.append(f"{i + 1:>4}  {e.name:<{w}}  {e.alone_sqnr_db:>9.2f}  {e.left_out_sqnr_db:>11.2f}  "
                         f"{e.gain:>10.3g}  {e.op}{extra}")
        lines.append("alone: only this layer quantized; left-out: this layer in float, all others quantized; "
                     "gain: full error - left-out error (exclude the top layers to gain the most)")
        return "\n".join(lines)

    def plot(self, path_png: str | Path, top: int | None = 30) -> Path:
        """Bar chart (PNG) of alone / left-out SQNR per layer; needs matplotlib (``tvm_arq[plot]``).

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("plotting needs matplotlib: pip install 'tvm_arq[plot]'") from e
        rows = self.layers if top is None else self.layers[:top]
        cap = 120.0
        alone = [min(e.alone_sqnr_db, cap) for e in rows]
        left = [min(e.left_out_sqnr_db, cap) for e in rows]
        fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.5))
        ax = fig.add_subplot(1, 1, 1)
        x = np.arange(len(rows))
        ax.bar(x - 0.2, alone, 0.4, label="only this layer quantized")
        ax.bar(x + 0.2, left, 0.4, label="this layer in float, others quantized")
        if math.isfinite(self.full_sqnr_db):
            ax.axhline(self.full_sqnr_db, color="k", ls="--", lw=1, label="fully quantized")
        ax.set_xticks(x, [e.name for e in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("output SQNR vs fp32 (dB)")
        ax.set_title("per-layer sensitivity (most sensitive first)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(path_png)
        fig.savefig(path, dpi=110)
        return path


@dataclass(frozen=True)
class _Unit:
    name: str
    layers: tuple[str, ...]
    op: str


def layer_units(plan: QuantPlan) -> list[tuple[str, tuple[str, ...], str]]:
    """The quantizable layers of ``plan``: ``(name, layer names to exclude, description)`` in graph order.

    One entry per integer unit (the ops sharing a quantization point: a conv group, a lookup table, ...);
    units whose ONNX nodes overlap are merged, so that excluding one unit's layers never half-excludes
    another.
    """
    members: dict[str, list[str]] = {}
    heads: dict[str, str] = {}
    for name, op_plan in plan.ops.items():
        if op_plan.group_output is None or op_plan.role in (Role.PASS, Role.FLOAT):
            continue
        members.setdefault(op_plan.group_output, []).append(name)
        if op_plan.role in _UNIT_ROLES and op_plan.group_output not in heads:
            heads[op_plan.group_output] = (op_plan.reason if op_plan.role is Role.LUT
                                           else (op_plan.op or "").removeprefix("relax.").removeprefix("nn."))
    units: list[list[Any]] = []  # [layers (ordered), description]
    for out, names in members.items():
        lays = list(dict.fromkeys(layer_of(n) for n in names))
        desc = heads.get(out, "")
        merged = [u for u in units if set(u[0]) & set(lays)]
        for u in merged:
            units.remove(u)
            lays = list(dict.fromkeys(u[0] + lays))
            desc = f"{u[1]}; {desc}"
        units.append([lays, desc])
    return [(lays[0], tuple(lays), desc) for lays, desc in units]


@contextmanager
def _quiet(name: str):
    """Only errors from logger ``name`` meanwhile (``""``: change nothing)."""
    if not name:
        yield
        return
    lg = logging.getLogger(name)
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def _flatten(res: Any) -> list[np.ndarray]:
    if hasattr(res, "numpy"):
        return [np.asarray(res.numpy(), np.float64)]
    if isinstance(res, np.ndarray | np.generic):
        return [np.asarray(res, np.float64)]
    out: list[np.ndarray] = []
    for r in res:
        out.extend(_flatten(r))
    return out


def _rel_error(outs: Sequence[list[np.ndarray]], refs: Sequence[list[np.ndarray]]) -> float:
    num = den = 0.0
    for o, r in zip(outs, refs, strict=True):
        for a, b in zip(o, r, strict=True):
            num += float(np.sum((a - b) ** 2))
            den += float(np.sum(b ** 2))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


class Evaluator(str, enum.Enum):
    """How :func:`sensitivity` scores its variants.

    - ``INTEGER``: each variant's integer program on the numpy reference interpreter: the exact errors of
      what ``build`` would produce (slow on large models: ``2 * layers + 1`` programs).
    - ``FAKE``: one fake-quantized float module with run-time switches per quantization point and per
      layer's weights (:class:`~tvm_arq.passes.annotate.Switches`), compiled once for the host; a variant is
      a switch vector. The errors are those of fake quantization (no integer arithmetic, each point with
      the fully quantized plan's parameters): a ranking, not the built program's exact error.
    - ``AUTO``: ``INTEGER`` when its estimated time (the full variant timed on one sample, times the
      number of runs) stays under ``max_integer_seconds``, else ``FAKE``.
    """

    AUTO = "auto"
    INTEGER = "integer"
    FAKE = "fake"


def sensitivity(mod: tvm.IRModule, params: Mapping[str, np.ndarray] | None, calibration: Iterable, *,
                config: QuantConfig | None = None, act_dtype: str = "int8", samples: int = 8,
                progress: bool = False, evaluator: Evaluator | str = Evaluator.AUTO,
                max_integer_seconds: float = 120.0) -> SensitivityResult:
    """Rank the quantizable layers of a float model by their contribution to the output error.

    Parameters
    ----------
    mod, params
        Float Relax module and its weights, e.g. from :func:`tvm_arq.from_onnx`.
    calibration
        Calibration samples (as for :func:`tvm_arq.build`); materialized once. The first ``samples`` of them
        are also the evaluation set.
    config
        Quantization options (scheme, calibrator, ``skip_ops``, ``exclude``: layers already excluded are not
        ranked). The float scheme is refused.
    act_dtype
        Activation storage dtype of the variants (the error does not depend on it: uint8 and int8 grids
        differ by a shift of the zero point).
    samples
        Number of samples the variants are evaluated on.
    progress
        Show a progress bar while calibrating.
    evaluator, max_integer_seconds
        See :class:`Evaluator`; the one used is ``result.config["evaluator"]``.

    Returns
    -------
    SensitivityResult
        ``.table()``, ``.to_dict()`` / ``.save_json()``, ``.plot()``.
    """
    config = config or QuantConfig()
    evaluator = Evaluator(evaluator)
    if config.scheme is Scheme.FLOAT:
        raise ValueError("sensitivity needs a quantized scheme, not 'float'")
    if samples < 1:
        raise ValueError("samples must be >= 1")
    fmod = recognize_blocks(prepare_module(mod, params))
    specs = input_specs(fmod)
    data = list(calibration)
    base = plan_quantization(fmod, config.skip_ops, config.exclude, int16=config.int16)
    units = layer_units(base)
    if not units:
        raise ValueError("nothing to quantize: the model has no quantizable layer")
    all_layers = [lay for _, lays, _ in units for lay in lays]
    variants: dict[str, QuantPlan] = {"full": base}
    if evaluator is not Evaluator.FAKE:
        with _quiet("tvm_arq.passes.analysis"):
            for name, lays, _ in units:
                others = tuple(lay for lay in all_layers if lay not in lays)
                variants[f"alone:{name}"] = plan_quantization(fmod, config.skip_ops, config.exclude + others,
                                                              int16=config.int16)
                variants[f"out:{name}"] = plan_quantization(fmod, config.skip_ops, config.exclude + lays,
                                                            int16=config.int16)
    union = list(dict.fromkeys(p for plan in variants.values() for p in plan.points))
    cal_plan = dataclasses.replace(base, points=union)
    means: dict[str, ChannelMean] | None = {} if config.bias_correction else None
    outliers: dict[str, OutlierClip] = {}
    refs: list[list[np.ndarray]] = []

    def keep_output(i: int, res: Any) -> None:
        if i < samples:
            refs.append(_flatten(res))

    # the output calibrator judges each point at its consumers in the fully quantized plan (every variant)
    sampler = output_sampler(fmod, base, config)
    observers = calibrate(fmod, data, cal_plan, config, progress=progress, input_means=means, outliers=outliers,
                          on_output=keep_output, sampler=sampler)
    inputs = [normalize_sample(s, specs, i) for i, s in enumerate(data[:samples])]
    mean_values = {k: m.mean for k, m in (means or {}).items()}
    runs = 2 * len(units) + 1
    if evaluator is Evaluator.FAKE:
        errors = _fake_errors(fmod, base, units, observers, config, act_dtype, outliers, mean_values, inputs, sampler)
    else:
        errors = _integer_errors(fmod, variants, observers, config, act_dtype, outliers, mean_values, inputs, refs,
                                 None if evaluator is Evaluator.INTEGER else max_integer_seconds / runs, sampler)
        if errors is None:
            logger.info("sensitivity: %d integer programs would take longer than %.0f s on the reference "
                        "interpreter; ranking with one switchable fake-quantized module instead", runs,
                        max_integer_seconds)
            evaluator = Evaluator.FAKE
            errors = _fake_errors(fmod, base, units, observers, config, act_dtype, outliers, mean_values, inputs,
                                  sampler)
        else:
            evaluator = Evaluator.INTEGER
    full = errors["full"]
    entries = [LayerSensitivity(name, lays, desc, errors[f"alone:{name}"], errors[f"out:{name}"],
                                full - errors[f"out:{name}"]) for name, lays, desc in units]
    entries.sort(key=lambda e: (-e.gain, -e.alone_error))
    cfg = {"scheme": config.scheme.value, "calibrator": config.calibrator.value, "act_dtype": act_dtype,
           "exclude": list(config.exclude), "skip_ops": list(config.skip_ops), "evaluator": evaluator.value}
    return SensitivityResult(tuple(entries), full, len(inputs), cfg)


def _integer_errors(fmod: tvm.IRModule, variants: Mapping[str, QuantPlan], observers, config: QuantConfig,
                    act_dtype: str, outliers, mean_values, inputs, refs, max_seconds_per_variant: float | None,
                    sampler=None) -> dict[str, float] | None:
    """Errors of every variant's integer program on the reference interpreter; ``None`` if the full variant's
    first sample shows that one variant would take longer than ``max_seconds_per_variant``."""
    float_cache: dict = {}
    errors: dict[str, float] = {}
    for key, plan in variants.items():
        if not plan.points:
            errors[key] = 0.0
            continue
        qparams = select_qparams(plan, observers, config, act_dtype, outliers, sampler)
        qdq = AnnotateQuantization(plan, qparams, mean_values)(fmod)
        # the realize warnings of a layer (e.g. a coarsened weight scale) are given once, by the full variant
        with _quiet("tvm_arq.ops") if key != "full" else _quiet(""):
            int_mod = RealizeInteger(plan)(qdq)
        interp = ReferenceInterpreter(int_mod, float_cache=float_cache)
        outs = []
        for i, x in enumerate(inputs):
            t0 = time.perf_counter()
            outs.append(_flatten(interp.run(*x)))
            if key == "full" and i == 0 and max_seconds_per_variant is not None and \
                    (time.perf_counter() - t0) * len(inputs) > max_seconds_per_variant:
                return None
        errors[key] = _rel_error(outs, refs)
        logger.debug("sensitivity variant %s: relative error %.4g", key, errors[key])
    return errors


def _fake_errors(fmod: tvm.IRModule, base: QuantPlan, units, observers, config: QuantConfig, act_dtype: str,
                 outliers, mean_values, inputs, sampler=None) -> dict[str, float]:
    """Errors of every variant on one compiled fake-quantized module with run-time switches."""
    unit_of = {lay: i for i, (_, lays, _) in enumerate(units) for lay in lays}
    points = {p: len(units) + i for i, p in enumerate(base.points)}
    switches = Switches(points=points, weights={lay: i for lay, i in unit_of.items()})
    # which units touch each point (its producer's and its readers' layers)
    adjacent: dict[str, set[int]] = {p: set() for p in base.points}
    for b in bindings_of(fmod["main"]):
        u = unit_of.get(layer_of(b.name))
        if u is None:
            continue
        for v in (b.name, *(a.name for a in _var_args(b.value))):
            p = base.qsource.get(v)
            if p in adjacent:
                adjacent[p].add(u)
    qparams = select_qparams(base, observers, config, act_dtype, outliers, sampler)
    with _quiet("tvm_arq.passes"):
        qdq = AnnotateQuantization(base, qparams, mean_values, switches=switches)(fmod)
    vm = compile_host(qdq)

    def run(on: set[int], alone: bool) -> list[list[np.ndarray]]:
        v = np.zeros(switches.size, np.float32)
        for u in on:
            v[u] = 1.0
        for p, i in points.items():
            v[i] = 1.0 if (adjacent[p] & on or (not adjacent[p] and not alone)) else 0.0
        flags = tvm.runtime.tensor(v)
        return [_flatten(vm["main"](*[tvm.runtime.tensor(a) for a in x], flags)) for x in inputs]

    every = set(range(len(units)))
    refs = run(set(), True)
    errors = {"full": _rel_error(run(every, False), refs)}
    for i, (name, _, _) in enumerate(units):
        errors[f"alone:{name}"] = _rel_error(run({i}, True), refs)
        errors[f"out:{name}"] = _rel_error(run(every - {i}, False), refs)
    return errors


def _var_args(value: Any) -> list[relax.Var]:
    args = getattr(value, "args", None) or getattr(value, "fields", None) or []
    out = []
    for a in args:
        if isinstance(a, relax.Var):
            out.append(a)
        elif isinstance(a, relax.Tuple):
            out.extend(f for f in a.fields if isinstance(f, relax.Var))
    if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
        out.append(value.tuple_value)
    return out
