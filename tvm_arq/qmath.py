"""Quantization arithmetic shared by the passes, the kernels and the reference interpreter.

Conventions (see ``docs`` in the README): a real value ``r`` is represented by an integer ``q`` with
``r ~= s * (q - z)``.  Activations are 8-bit per tensor (int8 or uint8 storage), weights are int8,
per output channel, symmetric (``z_w = 0``, range ``[-127, 127]``).  Accumulators are int32.

Requantization is integer-only: a real multiplier ``m`` is represented as ``M0 * 2**-rshift`` with
``M0`` an int32 in ``[2**30, 2**31)`` and ``rshift`` in ``[1, 62]``; it is applied as::

    y = (int64(acc) * M0 + (1 << (rshift - 1))) >> rshift      # round half up, arithmetic shift

which is exact in int64 for int32 accumulators.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .config import RangeKind

#: smallest scale we ever emit: keeps ``x / s`` finite for any float32 input
MIN_SCALE = 1e-8
#: largest scale we ever emit: every grid point ``s * (q - z)`` (``|q - z| <= 255``) stays finite in float32
MAX_SCALE = 1.3e36
MAX_RSHIFT = 62
#: largest int16 activation code (symmetric grid ``[-32767, 32767]``)
INT16_QMAX = 32767
MIN_RSHIFT = 1


class QuantizationError(ValueError):
    """The integer program cannot represent the model exactly (accumulator overflow, degenerate scales).

    Raised at compile time, naming the layer; never a silently wrong model.
    """


def dtype_range(dtype: str) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` of an integer storage dtype."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one activation tensor.

    Attributes
    ----------
    scale, zero_point, dtype
        ``r ~= scale * (q - zero_point)``, ``q`` stored as ``dtype`` (``"int8"`` or ``"uint8"``).
    kind
        Range shape that was used (symmetric, one-sided or asymmetric).
    alpha, beta
        Clipping range chosen by the calibrator.
    rule
        Human-readable explanation of why this kind was chosen (hybrid selection).
    """

    scale: float
    zero_point: int
    dtype: str
    kind: RangeKind
    alpha: float
    beta: float
    rule: str = ""

    @property
    def qmin(self) -> int:
        return dtype_range(self.dtype)[0]

    @property
    def qmax(self) -> int:
        return dtype_range(self.dtype)[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float -> integer, exactly as the ``quantize`` kernel does (float32, round half to even)."""
        return quantize_np(x, self.scale, self.zero_point, self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return dequantize_np(q, self.scale, self.zero_point)


def choose_qparams(alpha: float, beta: float, kind: RangeKind, dtype: str, rule: str = "") -> QParams:
    """Map a clipping range onto the 8-bit grid (or the symmetric int16 grid).

    - ``SYMMETRIC``: ``s = max(|alpha|, beta) / 127``, zero point 0 (128 in uint8 storage).
    - ``ONE_SIDED``: ``s = beta / 255``, zero point at the bottom of the range (-128 / 0).
    - ``ASYMMETRIC`` (redistribution): ``s = (beta - alpha) / 255``; the tensor is shifted by its centre
      ``c = (alpha + beta) / 2`` onto the symmetric grid, i.e. ``z = -round(c / s)`` in int8 storage
      (``+128`` in uint8). The zero point is absorbed at compile time (bias fold, requant offset).

    ``dtype="int16"`` (W8A16) is always symmetric whatever ``kind``: ``s = max(|alpha|, beta) / 32767``,
    zero point 0: the calibrated range maps onto ``[-32767, 32767]``; as for the int8 symmetric grid
    (``/127``), the storage clamp is the dtype's full range, so a value below the range saturates at
    -32768. A one-sided tensor loses one of its 16 bits to the unused negative half; zero point 0 keeps the
    folded bias and the accumulator bounds small.
    """
    kind = RangeKind(kind)
    alpha = float(min(alpha, 0.0))
    beta = float(max(beta, 0.0))
    if not (np.isfinite(alpha) and np.isfinite(beta)):
        raise ValueError(f"non-finite range [{alpha}, {beta}]")
    offset = 128 if dtype == "uint8" else 0
    if dtype not in ("int8", "uint8", "int16"):
        raise ValueError(f"activation dtype must be int8, uint8 or int16, got {dtype}")
    if dtype == "int16":
        s = float(np.float32(min(max(max(-alpha, beta) / INT16_QMAX, MIN_SCALE), MAX_SCALE)))
        return QParams(scale=s, zero_point=0, dtype=dtype, kind=RangeKind.SYMMETRIC, alpha=alpha, beta=beta,
                       rule=rule)
    if kind is RangeKind.SYMMETRIC:
        a = max(-alpha, beta)
        s = max(a / 127.0, MIN_SCALE)
        z = 0
    elif kind is RangeKind.ONE_SIDED:
        s = max(beta / 255.0, MIN_SCALE)
        z = -128
    else:
        s = max((beta - alpha) / 255.0, MIN_SCALE)
        c = (alpha + beta) / 2.0
        z = int(-np.round(c / s))
        z = int(np.clip(z, -128, 127))
    s = float(np.float32(min(s, MAX_SCALE)))
    return QParams(scale=s, zero_point=z + offset, dtype=dtype, kind=kind, alpha=alpha, beta=beta, rule=rule)


def quantize_np(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    lo, hi = dtype_range(dtype)
    v = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    v = np.clip(v + np.float32(zero_point), lo, hi)
    return v.astype(dtype)


def dequantize_np(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)).astype(np.float32)


def quantize_weights_per_channel(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights in ``[-127, 127]``.

    Returns
    -------
    q_w : int8 array, same shape as ``w``
    scales : float32 array, one per channel along ``axis``
    """
    w = np.asarray(w, dtype=np.float32)
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=red) if red else np.abs(w)
    scales = np.maximum(amax / 127.0, MIN_SCALE).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_multiplier(real: np.ndarray | float, saturate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Represent positive real multipliers as ``M0 * 2**-rshift`` (integer-only requantization).

    Returns int32 arrays ``(M0, rshift)`` with ``M0`` in ``[2**30, 2**31)`` and ``rshift`` in ``[1, 62]``.
    Multipliers below ``2**-32`` keep ``rshift = 62`` with a smaller ``M0 = round(real * 2**62)`` (absolute
    error ``<= 2**-63``), down to ``M0 = 0`` below ``2**-63``, where ``|acc * real| < 1/2`` for any
    accumulator below ``2**62`` and the output is the zero point, exactly as the real product rounds.

    Multipliers ``>= 2**30`` (an output scale absurdly finer than the accumulator's, e.g. a calibrated
    output range that is all zero) are rejected, unless ``saturate``: then they become the largest
    representable one, ``(2**31 - 1) * 2**-1``. That is exact whenever the value multiplied is an integer
    and the output range is narrower than ``2**29`` (8/16-bit outputs): a zero stays zero and any
    non-zero integer lands beyond the clamp on the same side either way.
    """
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if np.any(~np.isfinite(real)) or np.any(real < 0):
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real}")
    m, e = np.frexp(real)  # real = m * 2**e, m in [0.5, 1)
    m0 = np.rint(m * (1 << 31)).astype(np.int64)
    carry = m0 == (1 << 31)
    m0 = np.where(carry, m0 // 2, m0)
    e = np.where(carry, e + 1, e)
    rshift = 31 - e
    huge = (rshift < MIN_RSHIFT) & (real > 0)
    if np.any(huge) and not saturate:
        raise OverflowError(f"requantization multiplier {real.max():.3g} is too large (>= 2**30)")
    m0 = np.where(huge, (1 << 31) - 1, m0)
    rshift = np.where(huge, MIN_RSHIFT, rshift)
    tiny = (rshift > MAX_RSHIFT) | (real == 0)
    m0 = np.where(tiny, np.rint(np.ldexp(np.minimum(real, 1.0), MAX_RSHIFT)).astype(np.int64), m0)
    rshift = np.where(tiny, MAX_RSHIFT, rshift)
    return m0.astype(np.int32), rshift.astype(np.int32)


def requantize_np(acc: np.ndarray, m0: np.ndarray, rshift: np.ndarray) -> np.ndarray:
    """Apply ``quantize_multiplier`` output to int32/int64 accumulators (numpy reference)."""
    acc = acc.astype(np.int64)
    m0 = m0.astype(np.int64)
    rshift = rshift.astype(np.int64)
    return (acc * m0 + (np.int64(1) << (rshift - 1))) >> rshift


#: largest rescale multiplier of :func:`common_multipliers`: ``sum_i |q_i - z_i| * M_i`` stays in int64 for
#: up to 64 inputs of up to 16 bits
MAX_RESCALE_MULT = 2**40


def common_multipliers(reals: list[float], bits: int = 30) -> tuple[list[int], int]:
    """Multipliers sharing one right shift: ``real_i ~= M_i * 2**-shift`` with ``max M_i < 2**bits``.

    Used by add/concat, whose inputs are rescaled to the output scale and summed in int64 before a
    single rounding. Factors ``>= 2**(bits - 1)`` (an output scale far finer than an input's, e.g. a sum
    that cancels on the calibration data) keep their precision with larger multipliers, up to
    :data:`MAX_RESCALE_MULT`; beyond that :class:`QuantizationError`.
    """
    reals = [float(r) for r in reals]
    if any(not np.isfinite(r) or r < 0 for r in reals):
        raise ValueError(f"rescale factors must be finite and >= 0: {reals}")
    rmax = max(reals)
    if rmax == 0:
        return [0] * len(reals), 1
    e = int(np.frexp(rmax)[1])  # rmax < 2**e
    shift = bits - e
    if shift < 1:
        shift = MAX_RESCALE_MULT.bit_length() - 1 - e
    shift = int(np.clip(shift, 1, 40))
    ms = [int(np.rint(r * 2.0**shift)) for r in reals]
    if max(ms) >= MAX_RESCALE_MULT:
        raise QuantizationError(
            f"rescale factor {rmax:.3g} is too large for int64 arithmetic: the output scale is degenerate "
            "compared with an input's (calibrate with more representative data or a clipping calibrator)"
        )
    return ms, shift
