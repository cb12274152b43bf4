"""Bounded-memory streaming histogram on a power-of-two lattice.

Layout
------
Bins have width ``w = 2**e`` (integer ``e``) and sit on the global lattice ``[j w, (j + 1) w)``,
``j`` integer; the histogram stores ``bins`` consecutive lattice cells starting at cell ``offset``. The
window always covers ``[min(min_seen, 0), max(max_seen, 0)]``, so **0 is always a bin edge** (the cut point
between negative and non-negative values, which the range searches need because every range contains 0).

Growth (re-binning)
-------------------
When a sample falls outside the window, the smallest ``k >= 0`` is found such that the lattice of width
``w * 2**k`` covers the new extent with ``bins`` cells. Every old cell ``j`` lies entirely inside the new cell
``j >> k`` (floor division by ``2**k``), so old counts are *moved*, never split: the merge is exact and
the total mass is conserved bit-for-bit. ``k = 0`` is a pure translation of the window. Data values are
binned exactly (``x * 2**-e`` is exact in float64), so the histogram of a stream is the same as the
histogram of the concatenated data on the final lattice, except for cells merged by growth, which are
exactly the union of their sub-cells. Memory is ``bins`` float64 counts regardless of the number of samples.

Because the width is the smallest power of two that fits, the data extent always spans more than
``bins / 2`` cells (resolution at least half of the nominal one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LatticeHistogram"]

_CHUNK = 1 << 15  # elements binned per chunk: cache-friendly, bounds temporary memory


def cell_index(value: float, log2_width: int) -> int:
    """Lattice cell containing ``value`` (exact: scaling by a power of two is exact)."""
    return math.floor(math.ldexp(value, -log2_width))


def fits(lo: float, hi: float, log2_width: int, bins: int) -> bool:
    """Whether ``[lo, hi]`` spans at most ``bins`` cells of width ``2**log2_width``."""
    return cell_index(hi, log2_width) - cell_index(lo, log2_width) + 1 <= bins


def smallest_exponent(lo: float, hi: float, bins: int, start: int | None = None) -> int:
    """Smallest exponent ``e`` (``>= start`` if given) whose lattice covers ``[lo, hi]`` in ``bins`` cells."""
    if start is None:
        e = math.frexp((hi - lo) / (bins - 1))[1] if hi > lo else 0
        while fits(lo, hi, e - 1, bins):
            e -= 1
    else:
        e = start
    while not fits(lo, hi, e, bins):
        e += 1
    return e


def place_window(lo: float, hi: float, log2_width: int, bins: int) -> int:
    """First cell of a ``bins``-cell window covering ``[lo, hi]`` (``lo <= 0 <= hi``).

    Non-negative data starts the window at 0, non-positive data ends it at cell 0 (the ``[0, w)`` cell),
    signed data is centred (later growth that still fits is a free translation).
    """
    a, b = cell_index(lo, log2_width), cell_index(hi, log2_width)
    slack = bins - (b - a + 1)
    if lo >= 0.0:
        return 0
    if hi <= 0.0:
        return b - bins + 1
    return a - slack // 2


def remap(counts: np.ndarray, offset: int, k: int, new_offset: int) -> np.ndarray:
    """Move counts from cells ``offset + i`` of width ``w`` to cells ``(offset + i) >> k`` of width ``w 2**k``."""
    nz = np.flatnonzero(counts)
    new = np.zeros_like(counts)
    if nz.size:
        pos = ((nz + offset) >> k) - new_offset
        if pos[0] < 0 or pos[-1] >= counts.shape[0]:  # pragma: no cover - guarded by the caller
            raise AssertionError("re-binned histogram does not fit its window")
        new += np.bincount(pos, weights=counts[nz], minlength=counts.shape[0])
    return new


def accumulate(counts: np.ndarray, x: np.ndarray, log2_width: int, offset: int) -> None:
    """Add the values of a flat array to the histogram (all values must fall inside the window).

    ``floor(x * 2**-e) - offset`` is computed exactly: in float32 for float16/float32 data when ``2**-e`` is
    a normal float32 (scaling by a power of two is exact, and the cell indices are small integers because the
    window contains 0), else in float64. Work is done in cache-sized chunks with one reused buffer.
    """
    n = counts.shape[0]
    small = x.dtype in (np.float16, np.float32) and -126 <= log2_width <= 126
    work = np.dtype(np.float32 if small else np.float64)
    inv = work.type(math.ldexp(1.0, -log2_width))
    off = work.type(offset)
    buf = np.empty(min(_CHUNK, x.shape[0]), dtype=work)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK]
        v = buf[: chunk.shape[0]]
        np.multiply(chunk, inv, out=v, casting="unsafe")
        np.floor(v, out=v)
        v -= off
        counts += np.bincount(v.astype(np.intp), minlength=n)


@dataclass(frozen=True)
class LatticeHistogram:
    """Immutable view of a lattice histogram (what the range searches consume).

    Parameters
    ----------
    counts
        Float64 bin masses; bin ``i`` is ``[(offset + i) w, (offset + i + 1) w)``.
    log2_width
        ``w = 2**log2_width``.
    offset
        Lattice cell of ``counts[0]``; ``offset <= 0 <= offset + len(counts)`` so 0 is an edge.
    """

    counts: np.ndarray
    log2_width: int
    offset: int

    @property
    def width(self) -> float:
        """Bin width ``w``."""
        return math.ldexp(1.0, self.log2_width)

    @property
    def n(self) -> int:
        """Number of bins."""
        return int(self.counts.shape[0])

    @property
    def edges(self) -> np.ndarray:
        """Bin edges (``n + 1`` exact multiples of ``w``)."""
        return (self.offset + np.arange(self.n + 1, dtype=np.float64)) * self.width

    @property
    def zero_edge(self) -> int:
        """Index of the edge at 0."""
        return -self.offset

    @property
    def total(self) -> float:
        """Total mass."""
        return float(self.counts.sum())

    def edge_value(self, index: np.ndarray | int) -> np.ndarray | float:
        """Real value of edge ``index`` (exact)."""
        return (self.offset + np.asarray(index, dtype=np.float64)) * self.width

    def support(self) -> tuple[int, int]:
        """Edge indices ``(first, stop)`` enclosing all non-empty bins, extended to include edge 0."""
        nz = np.flatnonzero(self.counts)
        z = self.zero_edge
        if nz.size == 0:
            return z, z
        return min(int(nz[0]), z), max(int(nz[-1]) + 1, z)

    def positive(self, absorb_negative: bool = False) -> LatticeHistogram:
        """Bins at and above 0 (offset 0); optionally add the negative mass to the first bin (clip at 0)."""
        z = self.zero_edge
        pos = self.counts[z:].copy()
        if pos.size == 0:
            pos = np.zeros(1)
        if absorb_negative:
            pos[0] += self.counts[:z].sum()
        return LatticeHistogram(pos, self.log2_width, 0)

    def negative_mirrored(self) -> LatticeHistogram:
        """Histogram of ``-x`` for the negative bins (offset 0): bin ``i`` holds ``x`` in ``[-(i+1) w, -i w)``."""
        z = self.zero_edge
        neg = self.counts[:z][::-1].copy()
        if neg.size == 0:
            neg = np.zeros(1)
        return LatticeHistogram(neg, self.log2_width, 0)

    def folded(self) -> LatticeHistogram:
        """Histogram of ``|x|`` (offset 0, same width); exact because 0 is a lattice edge."""
        pos = self.positive().counts
        neg = self.negative_mirrored().counts
        mag = np.zeros(max(pos.shape[0], neg.shape[0]))
        mag[: pos.shape[0]] += pos
        mag[: neg.shape[0]] += neg
        return LatticeHistogram(mag, self.log2_width, 0)
