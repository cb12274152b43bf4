"""Streaming SQNR accumulators: scalar energy sums only, so memory does not grow with the samples.

``SQNR = 10 log10(sum(x_fp32^2) / sum((x_fp32 - x_quant)^2))`` over all elements of all samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PointStats", "SqnrAccumulator", "sqnr_db"]


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
class PointStats:
    """Accumulators of one quantization point: sim and own SQNR and the count of clipped values."""

    sim: SqnrAccumulator = field(default_factory=SqnrAccumulator)
    own: SqnrAccumulator = field(default_factory=SqnrAccumulator)
    clipped: int = 0
