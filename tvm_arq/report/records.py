"""The report's records (per tensor, per output, float fallbacks) and their JSON round trip."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .render import report_text

__all__ = ["REPORT_VERSION", "FallbackOp", "OutputReport", "QuantReport", "TensorReport"]

REPORT_VERSION = 1


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
    accuracy
        The accuracy budget's measurements and kept layers (``model.accuracy_report.to_dict()``) when the
        model was built with ``accuracy=``, else ``None``.
    """

    scheme: str
    calibrator: str
    target: str
    act_dtype: str
    n_samples: int
    tensors: list[TensorReport]
    outputs: list[OutputReport]
    fallbacks: list[FallbackOp]
    accuracy: dict[str, Any] | None = None

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
            **({} if self.accuracy is None else {"accuracy_drop": self.accuracy["drop"],
                                                 "kept_float": [k["name"] for k in self.accuracy["kept"]]}),
        }

    # -- text --------------------------------------------------------------------------------------------

    def to_text(self) -> str:
        """Aligned, human-readable table with a header, the outputs, fallbacks and a summary."""
        return report_text(self)

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
            fallbacks=[FallbackOp(**f) for f in d["fallbacks"]], accuracy=d.get("accuracy"),
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
