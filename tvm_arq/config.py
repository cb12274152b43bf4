"""Typed configuration: schemes, calibrators, range kinds and the quantization config.

Every option of the quantizer is an enum or a dataclass field; there are no string-keyed option bags.
String forms are accepted at the public API boundary and converted with ``Enum(value)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Scheme(str, enum.Enum):
    """How activations are quantized (weights are always per-channel symmetric int8).

    - ``HYBRID``: per tensor, one-sided for non-negative tensors, symmetric for near-symmetric ones,
      redistributed asymmetric for skewed signed ones (method.md step 3).
    - ``SYMMETRIC``: every activation symmetric, zero point 0 (the "traditional" baseline).
    - ``ASYMMETRIC``: plain affine [min, max] mapping everywhere, no hybrid selection.
    - ``FLOAT``: no quantization; the float model through the same build path.
    """

    HYBRID = "hybrid"
    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"
    FLOAT = "float"


class Calibrator(str, enum.Enum):
    """Range-estimation algorithm used on the streamed calibration statistics.

    ``OUTPUT`` chooses, per tensor, among the ranges of all the others (and a shrink grid) the
    one with the smallest error at the output of the tensor's consumer layers on a subsample of the
    calibration set (:mod:`tvm_arq.calibrate.output`); the others are tensor-local.
    """

    OUTPUT = "output"
    MINMAX = "minmax"
    MOVING_MINMAX = "moving_minmax"
    HISTOGRAM = "histogram"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"
    REDISTRIBUTION = "redistribution"


class RangeKind(str, enum.Enum):
    """Shape of the clipping range a calibrator is asked for.

    - ``SYMMETRIC``: ``[-a, a]`` mapped onto ``[-127, 127]`` (zero point 0).
    - ``ONE_SIDED``: ``[0, b]`` mapped onto the full 256 levels (zero point at the bottom).
    - ``ASYMMETRIC``: ``[a, b]`` with ``a < 0 < b`` mapped onto 256 levels (zero point inside).
    """

    SYMMETRIC = "symmetric"
    ONE_SIDED = "one_sided"
    ASYMMETRIC = "asymmetric"


@dataclass(frozen=True)
class QuantConfig:
    """Options of one quantization run.

    Parameters
    ----------
    scheme
        Activation scheme, see :class:`Scheme`.
    calibrator
        Range estimator, see :class:`Calibrator`. The default, ``output``, chooses each tensor's range among
        every calibrator's range and the redistribution grid by the error at its quantized consumers' outputs;
        it is the best or within one evaluation sample of the best on every model measured
        (``results/default_calibrator.md``; 93.5 % vs 85.0 % (minmax) word accuracy on the PP-OCRv4 recognizer,
        fp32 91.0 %), at 1.3-2x the calibration time of ``minmax``.
    act_dtype
        Storage dtype of activations, ``"int8"`` or ``"uint8"``; ``None`` lets the target decide
        (uint8 for x86 VNNI u8 x s8 dot products, int8 for ARM ``sdot`` and RISC-V).
    symmetric_tolerance
        Hybrid rule: a signed tensor with ``min(|alpha|, beta) / max(|alpha|, beta) >= tol`` is treated
        as near-symmetric.
    skip_ops
        Relax op names (e.g. ``"relax.nn.conv2d"``) to keep in float.
    exclude
        Layers to keep in float, by name: an ONNX node name as :func:`tvm_arq.from_onnx` keeps it (the
        name shown by ``tvm-arq report`` and :func:`tvm_arq.sensitivity`), a binding name of ``main``, or a
        regular expression matched (``re.fullmatch``) against the layer names. They are listed in
        ``model.fallbacks`` with the reason ``"excluded by the user"``. An entry that matches nothing is a
        ``ValueError`` naming the closest layer names.
    int16
        Layers whose input and output activations are stored as symmetric int16 (range mapped onto
        ``[-32767, 32767]``, zero point 0; W8A16: weights stay per-channel int8), named like ``exclude`` (``(".*",)``: every
        layer). The scales come from the same calibrated ranges as the 8-bit ones. A tensor between an
        8-bit and an int16 layer is int16; the kernels read and write either dtype, so no requantization
        kernel is inserted (see :func:`tvm_arq.passes.analysis.int16_points`). Tensors read or written by
        kernels with 8-bit arithmetic bounds (LayerNorm, integer sums), or read by a conv / dense whose int32
        accumulator could overflow with int16 values, stay 8-bit. An entry that matches nothing is a
        ``ValueError`` naming the closest layer names.
    bias_correction
        Remove the expected output shift of the weight rounding from every conv2d / dense bias, using the
        per-channel means of its input over the calibration set (all schemes; see
        :mod:`tvm_arq.passes.annotate`).
    calibration_checks
        Sanity rules on the calibration data (see :func:`tvm_arq.quantize.calibrate`): a constant model input
        is an error, and a range whose extreme comes from a few outlier samples is clipped to the other
        samples' range (with a warning). ``False`` builds on such data as it is.
    """

    scheme: Scheme = Scheme.HYBRID
    calibrator: Calibrator = Calibrator.OUTPUT
    act_dtype: str | None = None
    symmetric_tolerance: float = 0.8
    skip_ops: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    int16: tuple[str, ...] = field(default_factory=tuple)
    bias_correction: bool = True
    calibration_checks: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", Scheme(self.scheme))
        object.__setattr__(self, "calibrator", Calibrator(self.calibrator))
        if self.act_dtype not in (None, "int8", "uint8"):
            raise ValueError(f"act_dtype must be 'int8', 'uint8' or None, got {self.act_dtype!r}")
        for opt in ("exclude", "int16"):
            value = getattr(self, opt)
            names = (value,) if isinstance(value, str) else tuple(value)
            for e in names:
                if not isinstance(e, str) or not e:
                    raise ValueError(f"{opt} entries must be non-empty layer names or regexes, got {e!r}")
            object.__setattr__(self, opt, names)
        if not 0.0 < self.symmetric_tolerance <= 1.0:
            raise ValueError("symmetric_tolerance must be in (0, 1]")
