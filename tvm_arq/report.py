"""Per-layer quantization report: what every quantization point got, and what it cost in SQNR.

For every quantization point of a :class:`~tvm_arq.model.QuantizedModel` the report lists the range
kind the scheme chose (with the hybrid rule that fired), the clipping range ``[alpha, beta]``, scale,
zero point and storage dtype, and the signal-to-quantization-noise ratio against fp32 measured on
calibration data:

``sim SQNR``
    fp32 tensor (the float module with the points exposed, :class:`~tvm_arq.passes.InsertCalibration`)
    against the same tensor in the fake-quantized QDQ module, i.e. its ``<name>_dq`` binding. This is the
    value the integer model carries for that tensor (dequantized), so the error accumulated upstream is
    included.
``own SQNR``
    fp32 tensor against ``dequantize(quantize(fp32 tensor))`` with the tensor's own parameters: the error of
    this tensor's clipping range and rounding alone. A low sim SQNR with a high own SQNR points upstream.

The end-to-end output SQNR of the real integer build (:meth:`QuantizedModel.run`) and of the QDQ
simulation are reported too, as are the ops that ran in float (fallbacks) and why.

All statistics are streamed: per tensor only scalar energy sums are kept, one sample's activations at a
time, so memory does not grow with the number of samples.

``SQNR = 10 log10(sum(x_fp32^2) / sum((x_fp32 - x_quant)^2))`` over all elements of all samples.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
from collections.abc import Iterable, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tqdm.auto import tqdm

from .config import Calibrator
from .passes import InsertCalibration
from .passes.analysis import Role
from .passes.graph import bindings_of, tensor_shape
from .quantize import compile_host, input_specs, normalize_sample

if TYPE_CHECKING:
    from .model import QuantizedModel

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
#: the dequantized binding that follows a quantized tensor ``name`` in the QDQ module
DQ_SUFFIX = "_dq"


# ----------------------------------------------------------------------------------------------------------
# streaming accumulators
# ----------------------------------------------------------------------------------------------------------


def sqnr_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``; ``inf`` for zero noise, ``-inf`` for zero signal with noise."""
    if math.isnan(signal) or math.isnan(noise):
        return math.nan
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class SqnrAccumulator:
    """Streaming SQNR of an approximation against a reference: scalar energy sums only.

    Attributes
    ----------
    signal
        Sum of squared reference values.
    noise
        Sum of squared differences.
    max_abs_error
        Largest absolute difference seen.
    count
        Number of elements accumulated.
    """

    signal: float = 0.0
    noise: float = 0.0
    max_abs_error: float = 0.0
    count: int = 0

    def update(self, reference: np.ndarray, approx: np.ndarray) -> None:
        """Add one sample (any shape; both arrays must have the same shape)."""
        r = np.asarray(reference, dtype=np.float64).ravel()
        a = np.asarray(approx, dtype=np.float64).ravel()
        if r.shape != a.shape:
            raise ValueError(f"reference has {r.size} elements, approximation {a.size}")
        if r.size == 0:
            return
        d = r - a
        self.signal += float(r @ r)
        self.noise += float(d @ d)
        self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(d))))
        self.count += int(r.size)

    @property
    def sqnr_db(self) -> float | None:
        """SQNR in dB, ``None`` before the first update."""
        return sqnr_db(self.signal, self.noise) if self.count else None


@dataclass
class _PointStats:
    sim: SqnrAccumulator = field(default_factory=SqnrAccumulator)
    own: SqnrAccumulator = field(default_factory=SqnrAccumulator)
    clipped: int = 0


# ----------------------------------------------------------------------------------------------------------
# report records
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TensorReport:
    """One quantization point.

    Attributes
    ----------
    name
        Tensor (Relax var) name in the float module.
    producer
        What computes it: ``"input"``, or the fused group, e.g. ``"conv2d+add+relu"``, ``"dwconv2d+add"``.
    domain
        ``"int"`` (computed by an integer kernel), ``"float"`` (its producer fell back to float, the tensor
        is quantized after it) or ``"input"`` (a graph input).
    shape
        Tensor shape.
    kind, rule
        Range kind (``symmetric``, ``one_sided``, ``asymmetric``) and the hybrid rule text that chose it.
    alpha, beta, scale, zero_point, dtype
        Clipping range and the 8-bit grid, ``r ~= scale * (q - zero_point)`` stored as ``dtype``.
    sqnr_db
        fp32 against the QDQ simulation's dequantized tensor (upstream error included); ``None`` if the QDQ
        module had no ``<name>_dq`` binding.
    own_sqnr_db
        fp32 against the fp32 tensor quantized with this tensor's own parameters.
    clipped_fraction
        Fraction of fp32 values outside the representable range (more than half a step beyond it).
    max_abs_error
        Largest absolute difference between fp32 and the QDQ simulation.
    """

    name: str
    producer: str
    domain: str
    shape: tuple[int, ...]
    kind: str
    rule: str
    alpha: float
    beta: float
    scale: float
    zero_point: int
    dtype: str
    sqnr_db: float | None
    own_sqnr_db: float | None
    clipped_fraction: float
    max_abs_error: float | None


@dataclass
class OutputReport:
    """End-to-end SQNR of one model output against fp32.

    Attributes
    ----------
    index, shape
        Output position (flattened tuple outputs) and shape.
    sqnr_int_db
        The real integer build (:meth:`QuantizedModel.run`) against fp32.
    sqnr_qdq_db
        The fake-quantized QDQ simulation against fp32.
    max_abs_error_int
        Largest absolute difference of the integer build.
    """

    index: int
    shape: tuple[int, ...]
    sqnr_int_db: float | None
    sqnr_qdq_db: float | None
    max_abs_error_int: float | None


@dataclass
class FallbackOp:
    """An op that ran in float inside the quantized graph (between dequantize and quantize)."""

    var: str
    op: str
    reason: str


@dataclass
class QuantReport:
    """Per-layer quantization report of one model, see :func:`report`.

    Attributes
    ----------
    scheme, calibrator, target, act_dtype
        How the model was quantized.
    n_samples
        Number of samples the SQNR was measured on.
    tensors
        One record per quantization point, in graph order.
    outputs
        End-to-end SQNR per model output.
    fallbacks
        Ops that ran in float and why.
    """

    scheme: str
    calibrator: str
    target: str
    act_dtype: str
    n_samples: int
    tensors: list[TensorReport]
    outputs: list[OutputReport]
    fallbacks: list[FallbackOp]

    # -- derived ---------------------------------------------------------------------------------------

    def tensor(self, name: str) -> TensorReport:
        """The record of tensor ``name``."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"no quantization point {name!r}; have {[t.name for t in self.tensors][:10]}")

    def summary(self, worst: int = 5) -> dict[str, Any]:
        """Counts of range kinds, min / median SQNR and the ``worst`` tensors by SQNR."""
        kinds: dict[str, int] = {}
        for t in self.tensors:
            kinds[t.kind] = kinds.get(t.kind, 0) + 1
        measured = [t for t in self.tensors if t.sqnr_db is not None and not math.isnan(t.sqnr_db)]
        vals = [t.sqnr_db for t in measured]
        ranked = sorted(measured, key=lambda t: t.sqnr_db)[:worst]
        return {
            "n_tensors": len(self.tensors),
            "kinds": dict(sorted(kinds.items())),
            "n_float_fallbacks": len(self.fallbacks),
            "min_sqnr_db": float(min(vals)) if vals else None,
            "median_sqnr_db": float(np.median(vals)) if vals else None,
            "worst": [{"name": t.name, "producer": t.producer, "kind": t.kind, "sqnr_db": t.sqnr_db,
                       "own_sqnr_db": t.own_sqnr_db} for t in ranked],
            "output_sqnr_int_db": [o.sqnr_int_db for o in self.outputs],
        }

    # -- text --------------------------------------------------------------------------------------------

    def to_text(self) -> str:
        """Aligned, human-readable table with a header, the outputs, fallbacks and a summary."""
        lines = [
            f"per-layer quantization report: scheme={self.scheme} calibrator={self.calibrator} "
            f"target={self.target} act_dtype={self.act_dtype} samples={self.n_samples}",
            "SQNR vs fp32 in dB. sim: integer model's tensor (fake-quant simulation, upstream error included);"
            " own: this tensor's own range/rounding only.",
            "",
        ]
        header = ["#", "tensor", "producer", "domain", "kind", "dtype", "alpha", "beta", "scale", "zp",
                  "sim dB", "own dB", "clip%", "rule"]
        right = {"#", "alpha", "beta", "scale", "zp", "sim dB", "own dB", "clip%"}
        rows = [[str(i), t.name, t.producer, t.domain, t.kind, t.dtype, f"{t.alpha:.4g}", f"{t.beta:.4g}",
                 f"{t.scale:.4g}", str(t.zero_point), _fmt_db(t.sqnr_db), _fmt_db(t.own_sqnr_db),
                 f"{100.0 * t.clipped_fraction:.2f}", t.rule] for i, t in enumerate(self.tensors)]
        lines += _table(header, rows, right)
        lines.append("")
        for o in self.outputs:
            lines.append(f"output[{o.index}] {tuple(o.shape)}: integer build {_fmt_db(o.sqnr_int_db)} dB, "
                         f"QDQ simulation {_fmt_db(o.sqnr_qdq_db)} dB, max |error| (integer) "
                         f"{_fmt_num(o.max_abs_error_int)}")
        if self.fallbacks:
            lines.append(f"float fallbacks ({len(self.fallbacks)}): ops that ran in float between dequantize and"
                         " quantize")
            lines += ["  " + r for r in _table(["var", "op", "reason"],
                                                [[f.var, f.op, f.reason] for f in self.fallbacks], set())]
        else:
            lines.append("float fallbacks: none (fully integer between input quantize and output dequantize)")
        s = self.summary()
        kinds = ", ".join(f"{k}={v}" for k, v in s["kinds"].items())
        lines.append(f"summary: {s['n_tensors']} tensors ({kinds}); sim SQNR min {_fmt_db(s['min_sqnr_db'])} dB,"
                     f" median {_fmt_db(s['median_sqnr_db'])} dB")
        if s["worst"]:
            lines.append("worst: " + ", ".join(f"{w['name']} ({w['producer']}, {w['kind']}) {_fmt_db(w['sqnr_db'])}"
                                               f" dB [own {_fmt_db(w['own_sqnr_db'])}]" for w in s["worst"]))
        return "\n".join(lines)

    # -- JSON --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``) incl. the summary."""
        d = asdict(self)
        d["version"] = REPORT_VERSION
        d["summary"] = self.summary()
        return _encode(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantReport:
        """Inverse of :meth:`to_dict` (the derived ``summary`` is recomputed, not read)."""
        d = _decode(d)
        version = d.get("version", REPORT_VERSION)
        if version != REPORT_VERSION:
            raise ValueError(f"report version {version} is not supported (expected {REPORT_VERSION})")
        return cls(
            scheme=d["scheme"], calibrator=d["calibrator"], target=d["target"], act_dtype=d["act_dtype"],
            n_samples=int(d["n_samples"]),
            tensors=[TensorReport(**{**t, "shape": tuple(t["shape"])}) for t in d["tensors"]],
            outputs=[OutputReport(**{**o, "shape": tuple(o["shape"])}) for o in d["outputs"]],
            fallbacks=[FallbackOp(**f) for f in d["fallbacks"]],
        )

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON text (no ``Infinity``/``NaN`` literals)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> QuantReport:
        return cls.from_dict(json.loads(text))

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``; returns the path."""
        p = Path(path)
        p.write_text(self.to_json())
        return p

    @classmethod
    def load_json(cls, path: str | Path) -> QuantReport:
        return cls.from_json(Path(path).read_text())


def _fmt_db(v: float | None) -> str:
    if v is None:
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.2f}"


def _fmt_num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _table(header: list[str], rows: list[list[str]], right: set[str]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        out = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header, strict=True)]
        return "  ".join(out).rstrip()

    return [fmt(header), "-" * len(fmt(["-" * w for w in widths]))] + [fmt(r) for r in rows]


def _encode(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: Any) -> Any:
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def compare_text(reports: dict[str, QuantReport]) -> str:
    """Side-by-side SQNR table of several reports of the same model (e.g. hybrid vs symmetric)."""
    labels = list(reports)
    names = _union_names(reports)
    header = ["tensor", "producer"]
    for lb in labels:
        header += [f"{lb} kind", f"{lb} dB"]
    right = {f"{lb} dB" for lb in labels}
    rows = []
    for n in names:
        first = next(r for r in reports.values() if _has(r, n)).tensor(n)
        row = [n, first.producer]
        for lb in labels:
            t = reports[lb].tensor(n) if _has(reports[lb], n) else None
            row += [t.kind if t else "-", _fmt_db(t.sqnr_db) if t else "-"]
        rows.append(row)
    lines = _table(header, rows, right)
    for lb, r in reports.items():
        outs = ", ".join(f"output[{o.index}] {_fmt_db(o.sqnr_int_db)} dB" for o in r.outputs)
        s = r.summary()
        lines.append(f"{lb}: integer build {outs}; sim SQNR min {_fmt_db(s['min_sqnr_db'])} dB, median "
                     f"{_fmt_db(s['median_sqnr_db'])} dB; float fallbacks {len(r.fallbacks)}")
    return "\n".join(lines)


def _has(r: QuantReport, name: str) -> bool:
    return any(t.name == name for t in r.tensors)


def _union_names(reports: dict[str, QuantReport]) -> list[str]:
    names: list[str] = []
    for r in reports.values():
        for t in r.tensors:
            if t.name not in names:
                names.append(t.name)
    return names


# ----------------------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------------------


def _short(op: str | None) -> str:
    if op is None:
        return "?"
    return op.removeprefix("relax.").removeprefix("nn.")


def _producers(model: QuantizedModel) -> dict[str, tuple[str, str]]:
    """Point name -> (producer description, domain)."""
    plan = model.plan
    by_name = {b.name: b for b in bindings_of(model.float_ir["main"])}
    params = {p.name for p in model.float_ir["main"].params}

    def describe(name: str) -> str:
        b = by_name.get(name)
        op = _short(b.op if b is not None else None)
        if b is not None and b.op == "relax.nn.conv2d":
            groups = int(b.value.attrs.groups)
            cin = (tensor_shape(b.value.args[0]) or (0, 0))[1]
            if groups > 1:
                op = "dwconv2d" if groups == cin else f"conv2d/g{groups}"
        return op

    out: dict[str, tuple[str, str]] = {}
    for p in plan.points:
        if p in params:
            out[p] = ("input", "input")
            continue
        op_plan = plan.ops.get(p)
        if op_plan is None:
            out[p] = (describe(p), "float")
            continue
        if op_plan.role is Role.FLOAT:
            out[p] = (describe(p), "float")
        elif op_plan.role in (Role.ANCHOR, Role.EPILOGUE, Role.ADD):
            members = [n for n, o in plan.ops.items() if o.group_output == p
                       and o.role in (Role.ANCHOR, Role.EPILOGUE, Role.ADD)]
            out[p] = ("+".join(describe(n) for n in members) or describe(p), "int")
        else:
            out[p] = (describe(p), "int")
    return out


def _flatten(res: Any) -> list[np.ndarray]:
    """VM / ``model.run`` result (tensor, numpy array or nested tuple) -> list of numpy arrays."""
    if isinstance(res, np.ndarray):
        return [res]
    if isinstance(res, tvm.runtime.Tensor):
        return [res.numpy()]
    if hasattr(res, "numpy") and not hasattr(res, "__len__"):
        return [np.asarray(res.numpy())]
    if isinstance(res, list | tuple) or hasattr(res, "__len__"):
        out: list[np.ndarray] = []
        for r in res:
            out += _flatten(r)
        return out
    return [np.asarray(res)]


_END = object()


def _grid_limits(scale: float, zero_point: int, dtype: str) -> tuple[float, float]:
    info = np.iinfo(np.dtype(dtype))
    return scale * (int(info.min) - zero_point), scale * (int(info.max) - zero_point)


def report(model: QuantizedModel, calibration_samples: Iterable, max_samples: int | None = 32, *,
           progress: bool = True) -> QuantReport:
    """Measure a quantized model layer by layer against fp32.

    Parameters
    ----------
    model
        A quantized :class:`~tvm_arq.model.QuantizedModel` (not ``scheme="float"``).
    calibration_samples
        Samples in any form :func:`tvm_arq.build` accepts (arrays, tuples, dicts); may be a generator.
    max_samples
        Use at most this many samples (``None``: all).
    progress
        Show a progress bar.

    Returns
    -------
    QuantReport

    Notes
    -----
    Three programs run per sample: the float module with the quantization points exposed, the QDQ module
    with every point's ``<name>_dq`` binding exposed, and the integer build. Only scalar sums are kept.
    """
    if model.qdq is None or model.plan is None or not model.qparams:
        raise ValueError(f"report needs a quantized model; this one has scheme={model.scheme.value!r}")
    if model.float_ir is None:
        raise ValueError("report needs the model's float module (model.float_ir); build it with tvm_arq.build")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    plan = model.plan
    points = list(plan.points)
    qdq_names = {b.name for b in bindings_of(model.qdq["main"])} | {p.name for p in model.qdq["main"].params}
    sim_points = [p for p in points if p + DQ_SUFFIX in qdq_names]
    missing = [p for p in points if p not in sim_points]
    if missing:
        logger.warning("QDQ module has no %s binding for %s: their sim SQNR is not measured", DQ_SUFFIX,
                       missing[:10])

    specs = input_specs(model.float_ir)
    # check the first sample before compiling anything: bad data fails fast
    samples = itertools.islice(calibration_samples, max_samples)
    first = next(samples, _END)
    if first is _END:
        raise ValueError("no samples to measure the report on: pass at least one calibration sample")
    normalize_sample(first, specs, 0)
    samples = itertools.chain([first], samples)

    float_vm = compile_host(InsertCalibration(points)(model.float_ir))
    qdq_vm = compile_host(InsertCalibration([p + DQ_SUFFIX for p in sim_points])(model.qdq))
    stats = {p: _PointStats() for p in points}
    out_int: list[SqnrAccumulator] = []
    out_qdq: list[SqnrAccumulator] = []
    out_shapes: list[tuple[int, ...]] = []
    limits = {p: _grid_limits(q.scale, q.zero_point, q.dtype) for p, q in model.qparams.items()}

    sim_index = {p: j for j, p in enumerate(sim_points)}
    shapes: dict[str, tuple[int, ...]] = {}
    total = len(calibration_samples) if isinstance(calibration_samples, Sized) else None
    if max_samples is not None:
        total = max_samples if total is None else min(total, max_samples)
    n = 0
    for i, sample in enumerate(tqdm(samples, desc="measuring SQNR", unit="sample", total=total,
                                    disable=not progress, leave=False)):
        arrays = normalize_sample(sample, specs, i)
        args = [tvm.runtime.tensor(a) for a in arrays]
        fres = float_vm["main"](*args)
        qres = qdq_vm["main"](*args)
        f_out = _flatten(fres[0])
        q_out = _flatten(qres[0])
        i_out = _flatten(model.run(*arrays))
        if not out_int:
            out_shapes = [tuple(a.shape) for a in f_out]
            out_int = [SqnrAccumulator() for _ in f_out]
            out_qdq = [SqnrAccumulator() for _ in f_out]
        for k, ref in enumerate(f_out):
            out_int[k].update(ref, i_out[k])
            out_qdq[k].update(ref, q_out[k])
        for j, p in enumerate(points):
            ref = fres[j + 1].numpy()
            shapes.setdefault(p, tuple(ref.shape))
            st = stats[p]
            qp = model.qparams[p]
            st.own.update(ref, qp.dequantize(qp.quantize(ref)))
            lo, hi = limits[p]
            half = 0.5 * qp.scale
            st.clipped += int(np.count_nonzero((ref < lo - half) | (ref > hi + half)))
            if p in sim_index:
                st.sim.update(ref, qres[sim_index[p] + 1].numpy())
        n += 1

    producers = _producers(model)
    tensors = []
    for p in points:
        qp = model.qparams[p]
        st = stats[p]
        desc, domain = producers[p]
        tensors.append(TensorReport(
            name=p, producer=desc, domain=domain, shape=shapes[p], kind=qp.kind.value, rule=qp.rule,
            alpha=float(qp.alpha), beta=float(qp.beta), scale=float(qp.scale), zero_point=int(qp.zero_point),
            dtype=qp.dtype, sqnr_db=st.sim.sqnr_db, own_sqnr_db=st.own.sqnr_db,
            clipped_fraction=st.clipped / st.own.count if st.own.count else 0.0,
            max_abs_error=st.sim.max_abs_error if st.sim.count else None,
        ))
    outputs = [OutputReport(index=k, shape=out_shapes[k], sqnr_int_db=out_int[k].sqnr_db,
                            sqnr_qdq_db=out_qdq[k].sqnr_db, max_abs_error_int=out_int[k].max_abs_error)
               for k in range(len(out_int))]
    act_dtype = next(iter(model.qparams.values())).dtype
    return QuantReport(
        scheme=model.scheme.value, calibrator=model.config.calibrator.value, target=model.target.triple,
        act_dtype=act_dtype, n_samples=n, tensors=tensors, outputs=outputs,
        fallbacks=[FallbackOp(v, op, why) for v, op, why in plan.fallbacks],
    )


# ----------------------------------------------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------------------------------------------

_KIND_MARKERS = {"one_sided": "o", "symmetric": "s", "asymmetric": "^"}


def plot_sqnr(reports: dict[str, QuantReport], path_png: str | Path, title: str | None = None) -> Path:
    """PNG of sim SQNR by layer, one line per report (e.g. ``{"hybrid": r1, "symmetric": r2}``).

    Marker shape shows each tensor's range kind; a cross marks tensors produced by a float fallback;
    dashed horizontal lines show each report's end-to-end integer output SQNR. Infinite SQNR is drawn at the
    top edge.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    if not reports:
        raise ValueError("plot_sqnr needs at least one report")
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'tvm_arq[plot]'") from e

    names = _union_names(reports)
    x_of = {n: i for i, n in enumerate(names)}
    finite = [t.sqnr_db for r in reports.values() for t in r.tensors
              if t.sqnr_db is not None and math.isfinite(t.sqnr_db)]
    finite += [o.sqnr_int_db for r in reports.values() for o in r.outputs
               if o.sqnr_int_db is not None and math.isfinite(o.sqnr_int_db)]
    top = (max(finite) if finite else 60.0) + 5.0
    bottom = min(0.0, min(finite) - 5.0) if finite else 0.0

    width = float(np.clip(2.5 + 0.28 * len(names), 7.0, 30.0))
    fig = Figure(figsize=(width, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    handles = []
    for c_i, (label, r) in enumerate(reports.items()):
        color = colors[c_i % len(colors)]
        pts = [(x_of[t.name], t) for t in r.tensors if t.sqnr_db is not None and not math.isnan(t.sqnr_db)]
        xs = [x for x, _ in pts]
        ys = [min(t.sqnr_db, top) if t.sqnr_db > -math.inf else bottom for _, t in pts]
        ax.plot(xs, ys, "-", color=color, lw=1.3, alpha=0.8)
        for kind, marker in _KIND_MARKERS.items():
            sel = [(x, y) for (x, t), y in zip(pts, ys, strict=True) if t.kind == kind]
            if sel:
                ax.scatter([s[0] for s in sel], [s[1] for s in sel], marker=marker, color=color, s=28, zorder=3)
        fb = [(x, y) for (x, t), y in zip(pts, ys, strict=True) if t.domain == "float"]
        if fb:
            ax.scatter([s[0] for s in fb], [s[1] for s in fb], marker="x", color="black", s=50, zorder=4)
        out = ", ".join(_fmt_db(o.sqnr_int_db) for o in r.outputs)
        for o in r.outputs:
            if o.sqnr_int_db is not None and math.isfinite(o.sqnr_int_db):
                ax.axhline(o.sqnr_int_db, color=color, ls="--", lw=1.0, alpha=0.7)
        handles.append(Line2D([], [], color=color, lw=1.5,
                              label=f"{label} (min {_fmt_db(r.summary()['min_sqnr_db'])} dB; output {out} dB)"))
    kinds_seen = {t.kind for r in reports.values() for t in r.tensors}
    for kind, marker in _KIND_MARKERS.items():
        if kind in kinds_seen:
            handles.append(Line2D([], [], ls="", marker=marker, color="gray", label=kind.replace("_", "-")))
    if any(t.domain == "float" for r in reports.values() for t in r.tensors):
        handles.append(Line2D([], [], ls="", marker="x", color="black", label="float-fallback producer"))
    handles.append(Line2D([], [], ls="--", color="gray", label="end-to-end output (integer build)"))

    step = max(1, math.ceil(len(names) / 80))
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=90, fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(bottom, top + 2.0)
    ax.set_xlabel("quantization point (graph order)")
    ax.set_ylabel("SQNR vs fp32 (dB)")
    n_samples = sorted({r.n_samples for r in reports.values()})
    ax.set_title(title or f"Per-layer SQNR on calibration data ({'/'.join(map(str, n_samples))} samples)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="best")
    p = Path(path_png)
    fig.savefig(p)
    return p


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def add_report_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tvm-arq report`` on the CLI's subparsers."""
    r = subparsers.add_parser("report", help="per-layer report: ranges, scales, zero points, SQNR vs fp32")
    r.add_argument("model", help="ONNX file")
    r.add_argument("--shape", help="input shape, e.g. 1,3,224,224")
    r.add_argument("--calibration", required=True, help=".npy/.npz or a folder of images")
    r.add_argument("--data", help="samples to measure SQNR on (default: the calibration samples)")
    r.add_argument("--max-samples", type=int, default=32, help="measure on at most this many samples")
    r.add_argument("--target", default="host")
    r.add_argument("--scheme", default="hybrid", choices=["hybrid", "symmetric", "asymmetric"])
    r.add_argument("--calibrator", default="minmax", choices=[c.value for c in Calibrator])
    r.add_argument("--compare", action="append", default=[], choices=["hybrid", "symmetric", "asymmetric"],
                   help="also report this scheme (repeatable) and print a side-by-side table")
    r.add_argument("--json", help="write {label: report} as JSON")
    r.add_argument("--png", help="write a PNG of SQNR by layer")
    r.set_defaults(func=cmd_report)
    return r


def cmd_report(args: argparse.Namespace) -> int:
    """``tvm-arq report``: build the model per scheme, measure, print and write the report."""
    import tvm_arq
    from tvm_arq.cli import _load_calibration, _parse_shape

    mod, params = tvm_arq.from_onnx(args.model, shape=_parse_shape(args.shape))
    cal = _load_calibration(args.calibration, mod)
    data = _load_calibration(args.data, mod) if args.data else cal
    schemes = [args.scheme] + [s for s in args.compare if s != args.scheme]
    reports: dict[str, QuantReport] = {}
    for scheme in dict.fromkeys(schemes):
        m = tvm_arq.build(mod, params, args.target, calibration=cal, scheme=scheme, calibrator=args.calibrator)
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
