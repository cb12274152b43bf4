"""Streaming calibration observers and the :func:`make_observer` factory.

An observer sees one activation tensor over the calibration set (``update`` once per sample) and keeps
O(1) state (O(bins) for histogram observers): activations are never stored. ``compute_range`` turns the
state into a clipping range for a :class:`~tvm_arq.config.RangeKind`; it is pure (may be called several times,
with different kinds, e.g. by the hybrid selection).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import numpy as np

from ..config import Calibrator, RangeKind
from . import histogram as _h
from .grid import check_n_levels, finalize_range
from .histogram import LatticeHistogram
from .search import (
    KL_SUB_BINS,
    search_entropy,
    search_greedy_l2,
    search_mse,
    search_percentile,
    search_redistribution,
)

__all__ = [
    "EntropyObserver",
    "HistogramObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "RedistributionObserver",
    "make_observer",
]


class Observer(abc.ABC):
    """Base class of all calibration observers.

    Attributes
    ----------
    calibrator : Calibrator
        The calibrator this class implements.
    """

    calibrator: ClassVar[Calibrator]

    def __init__(self) -> None:
        self._count = 0
        self._min = math.inf
        self._max = -math.inf

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of ``update`` calls so far."""
        return self._count

    @property
    def min(self) -> float:
        """Smallest value seen (``inf`` before any data)."""
        return self._min

    @property
    def max(self) -> float:
        """Largest value seen (``-inf`` before any data)."""
        return self._max

    def update(self, x: np.ndarray) -> None:
        """Observe one calibration sample of the tensor.

        Parameters
        ----------
        x
            Array of any shape (float32 expected; any real dtype is accepted). Empty arrays only count.

        Raises
        ------
        ValueError
            If ``x`` contains NaN or Inf; the observer state is left unchanged.
        TypeError
            If ``x`` is not a real numeric array.
        """
        a = np.asarray(x)
        if a.dtype == np.bool_ or not (
            np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        ):
            raise TypeError(f"calibration data must be a real numeric array, got dtype {a.dtype}")
        if a.size == 0:
            self._count += 1
            return
        lo, hi = float(a.min()), float(a.max())  # NaN propagates through min/max, Inf shows up as a bound
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("calibration data contains NaN or Inf")
        self._observe(a.reshape(-1), lo, hi)
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)
        self._count += 1

    def compute_range(self, kind: RangeKind | str, n_levels: int = 256) -> tuple[float, float]:
        """Clipping range to quantize onto.

        Parameters
        ----------
        kind
            ``SYMMETRIC`` -> ``(-a, a)`` (mapped onto ``[-q, q]``, ``q = (n_levels - 1) // 2``);
            ``ONE_SIDED`` -> ``(0, b)`` (``n_levels`` levels); ``ASYMMETRIC`` -> ``(a, b)``, ``a <= 0 <= b``
            (``n_levels`` levels, the caller nudges the zero point).
        n_levels
            Number of integer levels of the storage type (256 for 8 bits).

        Returns
        -------
        tuple of float
            ``(alpha, beta)``, finite, ``alpha <= 0 <= beta``, ``alpha < beta``. Degenerate tensors
            (all zero) get the minimum width ``n_steps * MIN_SCALE`` (see :mod:`.grid`).

        Raises
        ------
        RuntimeError
            If no non-empty sample was observed.
        """
        kind = RangeKind(kind)
        n_levels = check_n_levels(n_levels)
        if not math.isfinite(self._min):
            raise RuntimeError(f"{type(self).__name__}: compute_range called before any data was observed")
        if self._min == 0.0 and self._max == 0.0:
            return finalize_range(0.0, 0.0, kind, n_levels)
        alpha, beta = self._range(kind, n_levels)
        return finalize_range(alpha, beta, kind, n_levels)

    # -- subclass hooks -----------------------------------------------------------------------------------

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:  # noqa: B027 - optional hook
        """Update calibrator-specific state with a flat, finite sample (``lo``/``hi`` are its min/max)."""

    @abc.abstractmethod
    def _range(self, kind: RangeKind, n_levels: int) -> tuple[float, float]:
        """Raw range estimate (canonicalized by :func:`~.grid.finalize_range`); data is not all zero."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(count={self._count}, min={self._min:.6g}, max={self._max:.6g})"


def _minmax_range(lo: float, hi: float, kind: RangeKind) -> tuple[float, float]:
    if kind is RangeKind.SYMMETRIC:
        a = max(-lo, hi, 0.0)
        return -a, a
    if kind is RangeKind.ONE_SIDED:
        return 0.0, max(hi, 0.0)
    return min(lo, 0.0), max(hi, 0.0)


class MinMaxObserver(Observer):
    """``minmax``: the global min/max over all samples (``SYMMETRIC``: ``+-max|x|``)."""

    calibrator = Calibrator.MINMAX

    def _range(self, kind: RangeKind, n_levels: int) -> tuple[float, float]:
        return _minmax_range(self._min, self._max, kind)


class MovingMinMaxObserver(Observer):
    """``moving_minmax``: exponential moving average of the per-sample min and max, bias-corrected.

    ``m_t = sum_k c (1 - c)^(t - k) x_k / (1 - (1 - c)^t)``: the average of the per-sample extremes ``x_k``
    with weights ``(1 - c)^(t - k)``, normalized by their sum (as Adam corrects its moment estimates).
    The usual form (``m <- m + c (x - m)`` initialized with the first sample) gives the first sample the
    weight ``(1 - c)^(t - 1)``: with the default ``c = 0.01``, 73 % after 32 calibration samples, so the
    range was essentially the first image's and depended on the order of the calibration set. Here every
    one of the first ``~1/c`` samples weighs about the same and the estimate converges to the usual EMA
    after many samples. O(1) state: two weighted sums and the weight sum.

    Parameters
    ----------
    averaging_constant
        ``c`` in ``(0, 1]``; ``c = 1`` uses the last sample only.
    """

    calibrator = Calibrator.MOVING_MINMAX

    def __init__(self, averaging_constant: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)
        self._sum_min = 0.0
        self._sum_max = 0.0
        self._weight = 0.0
        self._avg_min = math.nan
        self._avg_max = math.nan

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        decay = 1.0 - self.averaging_constant
        self._sum_min = decay * self._sum_min + lo
        self._sum_max = decay * self._sum_max + hi
        self._weight = decay * self._weight + 1.0
        self._avg_min = self._sum_min / self._weight
        self._avg_max = self._sum_max / self._weight

    @property
    def moving_min(self) -> float:
        """Averaged per-sample minimum (NaN before data)."""
        return self._avg_min

    @property
    def moving_max(self) -> float:
        """Averaged per-sample maximum (NaN before data)."""
        return self._avg_max

    def _range(self, kind: RangeKind, n_levels: int) -> tuple[float, float]:
        return _minmax_range(self._avg_min, self._avg_max, kind)


class _HistogramObserverBase(Observer):
    """Observers whose range comes from a bounded streaming histogram (:mod:`.histogram`).

    Parameters
    ----------
    bins
        Number of histogram bins (memory: ``bins`` float64, allocated up front).
    """

    def __init__(self, bins: int = 2048) -> None:
        super().__init__()
        bins = int(bins)
        if bins < 16:
            raise ValueError(f"bins must be >= 16, got {bins}")
        self.bins = bins
        self._counts = np.zeros(bins, dtype=np.float64)
        self._log2_width: int | None = None  # None until the first non-zero sample
        self._offset = 0
        self._zero_mass = 0.0  # elements seen while every sample so far was all zero

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        lo_all = min(self._min, lo, 0.0)
        hi_all = max(self._max, hi, 0.0)
        if self._log2_width is None:
            if lo == 0.0 and hi == 0.0:
                self._zero_mass += x.shape[0]
                return
            e = _h.smallest_exponent(lo_all, hi_all, self.bins)
            self._log2_width = e
            self._offset = _h.place_window(lo_all, hi_all, e, self.bins)
            self._counts[-self._offset] += self._zero_mass  # earlier all-zero samples: the [0, w) cell
            self._zero_mass = 0.0
        else:
            e = self._log2_width
            first = _h.cell_index(lo_all, e)
            last = _h.cell_index(hi_all, e)
            if first < self._offset or last >= self._offset + self.bins:
                new_e = _h.smallest_exponent(lo_all, hi_all, self.bins, start=e)
                new_offset = _h.place_window(lo_all, hi_all, new_e, self.bins)
                self._counts = _h.remap(self._counts, self._offset, new_e - e, new_offset)
                self._log2_width, self._offset = new_e, new_offset
        _h.accumulate(self._counts, x, self._log2_width, self._offset)

    def lattice(self) -> LatticeHistogram:
        """Snapshot of the histogram as a :class:`~.histogram.LatticeHistogram` (copy).

        Before any non-zero sample the histogram is all zero: it is reported with an arbitrary width
        ``2**-20`` and its mass in the ``[0, w)`` bin.
        """
        if self._log2_width is None:
            counts = np.zeros(self.bins)
            counts[self.bins // 2] = self._zero_mass
            return LatticeHistogram(counts, -20, -(self.bins // 2))
        return LatticeHistogram(self._counts.copy(), self._log2_width, self._offset)

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Current histogram.

        Returns
        -------
        hist : numpy.ndarray
            ``bins`` float64 masses (total = number of elements seen).
        edges : numpy.ndarray
            ``bins + 1`` edges, uniform, power-of-two width, 0 among them.
        """
        lh = self.lattice()
        return lh.counts, lh.edges

    def _range(self, kind: RangeKind, n_levels: int) -> tuple[float, float]:
        lo, hi = min(self._min, 0.0), max(self._max, 0.0)
        alpha, beta = self._search(self.lattice(), kind, n_levels, lo, hi)
        if kind is RangeKind.SYMMETRIC:
            a = min(max(-alpha, beta), max(-lo, hi))
            return -a, a
        return max(alpha, lo), min(beta, hi)

    @abc.abstractmethod
    def _search(
        self, lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
    ) -> tuple[float, float]:
        """Raw range from the histogram and the observed extent ``lo <= 0 <= hi``."""


class HistogramObserver(_HistogramObserverBase):
    """``histogram``: L2-optimal range along a greedy bin-trimming path (see :func:`~.search.search_greedy_l2`).

    Parameters
    ----------
    bins
        Number of histogram bins.
    """

    calibrator = Calibrator.HISTOGRAM

    def _search(
        self, lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
    ) -> tuple[float, float]:
        return search_greedy_l2(lh, kind, n_levels, lo, hi)


class PercentileObserver(_HistogramObserverBase):
    """``percentile``: percentile of the histogram distribution (see :func:`~.search.search_percentile`).

    Parameters
    ----------
    bins
        Number of histogram bins.
    percentile
        Percentile in ``(0, 100]`` (``SYMMETRIC``: of ``|x|``).
    """

    calibrator = Calibrator.PERCENTILE

    def __init__(self, bins: int = 2048, percentile: float = 99.99) -> None:
        super().__init__(bins)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)

    def _search(
        self, lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
    ) -> tuple[float, float]:
        return search_percentile(lh, kind, n_levels, lo, hi, self.percentile)


class EntropyObserver(_HistogramObserverBase):
    """``entropy``: KL-divergence threshold search (see :func:`~.search.search_entropy`).

    Parameters
    ----------
    bins
        Number of histogram bins.
    sub_bins
        Resolution of the KL comparison: sub-bins per quantization level, the same for every candidate
        range (see :class:`~.search._KLCost`).
    """

    calibrator = Calibrator.ENTROPY

    def __init__(self, bins: int = 2048, sub_bins: int = KL_SUB_BINS) -> None:
        super().__init__(bins)
        if sub_bins < 2:
            raise ValueError(f"sub_bins must be >= 2, got {sub_bins}")
        self.sub_bins = int(sub_bins)

    def _search(
        self, lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
    ) -> tuple[float, float]:
        return search_entropy(lh, kind, n_levels, lo, hi, self.sub_bins)


class MSEObserver(_HistogramObserverBase):
    """``mse``: shape-preserving clip-factor grid search under the exact error (:func:`~.search.search_mse`).

    Parameters
    ----------
    bins
        Number of histogram bins.
    n_grid
        Number of factors per search stage (two stages).
    """

    calibrator = Calibrator.MSE

    def __init__(self, bins: int = 2048, n_grid: int = 100) -> None:
        super().__init__(bins)
        if n_grid < 2:
            raise ValueError(f"n_grid must be >= 2, got {n_grid}")
        self.n_grid = int(n_grid)

    def _search(
        self, lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
    ) -> tuple[float, float]:
        return search_mse(lh, kind, n_levels, lo, hi, self.n_grid)


class RedistributionObserver(_HistogramObserverBase):
    """``redistribution``: the project's range search (method.md step 5, :func:`~.search.search_redistribution`).

    Parameters
    ----------
    bins
        Number of histogram bins.
    coarse_points
        Candidates per axis and refinement level of the coarse-to-fine 2-D search (>= 4).
    seeds
        Number of coarse minima refined.
    polish_radius
        Half-width in bins of the neighbourhood re-scored with the exact error model.
    """

    calibrator = Calibrator.REDISTRIBUTION

    def __init__(
        self, bins: int = 2048, coarse_points: int = 64, seeds: int = 4, polish_radius: int = 4
    ) -> None:
        super().__init__(bins)
        if coarse_points < 4 or seeds < 1 or polish_radius < 0:
            raise ValueError("need coarse_points >= 4, seeds >= 1, polish_radius >= 0")
        self.coarse_points = int(coarse_points)
        self.seeds = int(seeds)
        self.polish_radius = int(polish_radius)

    def _search(
        self, lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
    ) -> tuple[float, float]:
        return search_redistribution(
            lh, kind, n_levels, lo, hi, self.coarse_points, self.seeds, self.polish_radius
        )


_REGISTRY: dict[Calibrator, type[Observer]] = {
    cls.calibrator: cls
    for cls in (
        MinMaxObserver,
        MovingMinMaxObserver,
        HistogramObserver,
        PercentileObserver,
        EntropyObserver,
        MSEObserver,
        RedistributionObserver,
    )
}


def make_observer(calibrator: Calibrator | str, **kwargs: Any) -> Observer:
    """Create the observer of a calibrator.

    Parameters
    ----------
    calibrator
        A :class:`~tvm_arq.config.Calibrator` or its string value (``"minmax"``, ...).
    **kwargs
        Calibrator options: ``averaging_constant`` (moving_minmax); ``bins`` (all histogram calibrators);
        ``percentile`` (percentile); ``sub_bins`` (entropy); ``n_grid`` (mse); ``coarse_points``, ``seeds``, ``polish_radius``
        (redistribution).

    Returns
    -------
    Observer
        A fresh observer.

    Raises
    ------
    ValueError
        Unknown calibrator name or invalid option value.
    TypeError
        Option not accepted by that calibrator.
    """
    return _REGISTRY[Calibrator(calibrator)](**kwargs)
