"""Range searches over a :class:`~.histogram.LatticeHistogram`.

Every search returns a *raw* ``(alpha, beta)``; the observer then clamps it to the observed extent
``[min(min_seen, 0), max(max_seen, 0)]`` and canonicalizes it with :func:`~.grid.finalize_range`.
Each search receives the exact observed extent ``lo <= 0 <= hi`` besides the histogram.

Approximate cost (fast stages)
------------------------------
For cut points on bin edges, with bin mass uniform inside its bin, the clipping error of the mass below
``alpha`` is ``sum_b n_b ((c_b - alpha)^2 + w^2/12)`` (``c_b`` the bin centre) and similarly above ``beta``;
with prefix sums of ``n``, ``n c`` and ``n c^2`` each is O(1). The rounding error inside is approximated by
``s^2/12`` per unit of in-range mass, ``s = (beta - alpha) / steps``. So any candidate ``(alpha, beta)``
costs O(1) and dense or 2-D scans are cheap. (:class:`_Moments`, in units of the bin width.)

Exact cost (polish)
-------------------
:func:`~.error.expected_sq_error`'s exact model (rounding on the real grid, asymmetric zero-point nudge
included) re-ranks a small neighbourhood of the approximate optimum; the better of the neighbourhood under
the exact model is returned.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import RangeKind
from .error import _batch_error_raw
from .grid import _grid_arrays, n_steps
from .histogram import LatticeHistogram

__all__ = [
    "search_entropy",
    "search_greedy_l2",
    "search_mse",
    "search_percentile",
    "search_redistribution",
]


class _Moments:
    """Prefix sums for O(1) approximate squared error of cut points on bin edges.

    Positions are in bin widths relative to the first edge (edge ``i`` is at ``i``); costs are total
    squared error (not normalized) in units of ``w^2``.
    """

    def __init__(self, counts: np.ndarray) -> None:
        n = np.asarray(counts, dtype=np.float64)
        centre = np.arange(n.shape[0], dtype=np.float64) + 0.5
        self.c0 = np.concatenate([[0.0], np.cumsum(n)])
        self.c1 = np.concatenate([[0.0], np.cumsum(n * centre)])
        self.c2 = np.concatenate([[0.0], np.cumsum(n * centre * centre)])

    def cost(self, i: np.ndarray | int, j: np.ndarray | int, steps: float) -> np.ndarray:
        """Approximate error of range ``[edge i, edge j]`` (``i < j``) quantized with ``steps`` steps."""
        i = np.asarray(i, dtype=np.intp)
        j = np.asarray(j, dtype=np.intp)
        fi, fj = i.astype(np.float64), j.astype(np.float64)
        n_lo, m1_lo, m2_lo = self.c0[i], self.c1[i], self.c2[i]
        low = m2_lo - 2.0 * fi * m1_lo + fi * fi * n_lo + n_lo / 12.0
        n_hi = self.c0[-1] - self.c0[j]
        m1_hi = self.c1[-1] - self.c1[j]
        m2_hi = self.c2[-1] - self.c2[j]
        high = m2_hi - 2.0 * fj * m1_hi + fj * fj * n_hi + n_hi / 12.0
        s = (fj - fi) / steps
        inside = self.c0[j] - self.c0[i]
        return np.maximum(low, 0.0) + np.maximum(high, 0.0) + s * s / 12.0 * inside


def _symmetric_q(n_levels: int) -> int:
    return n_steps(RangeKind.SYMMETRIC, n_levels) // 2


def _best_1d(side: LatticeHistogram, steps: float) -> int:
    """Edge index ``j >= 1`` minimizing the approximate error of ``[0, edge j]`` on an offset-0 histogram."""
    stop = side.support()[1]
    if stop < 1:
        return 0
    j = np.arange(1, stop + 1)
    return int(j[np.argmin(_Moments(side.counts).cost(0, j, steps))])


def _exact_argmin(
    lh: LatticeHistogram, alpha: np.ndarray, beta: np.ndarray, kind: RangeKind, n_levels: int
) -> tuple[float, float]:
    """The candidate with the smallest exact expected error (ties -> first)."""
    scale, zero, steps = _grid_arrays(alpha, beta, n_levels, kind)
    ok = scale > 0
    if not np.any(ok):
        return float(alpha[0]), float(beta[0])
    err = np.full(alpha.shape[0], np.inf)
    err[ok] = _batch_error_raw(lh.counts, lh.edges, scale[ok], zero[ok], steps)
    k = int(np.argmin(err))
    return float(alpha[k]), float(beta[k])


# --------------------------------------------------------------------------------------------------------
# histogram (greedy L2 path)
# --------------------------------------------------------------------------------------------------------


def _greedy_path(counts: np.ndarray, i_lo: int, zero: int, j_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut-point path from the full extent inwards, trimming the lighter tail bin first.

    At each step the lower cut moves up one bin or the upper cut moves down one bin, whichever removes less
    mass (ties: the side farther from 0), never crossing 0 and keeping the range non-empty.
    """
    mass = counts.tolist()
    i, j = i_lo, j_hi
    path_i, path_j = [i], [j]
    while True:
        can_i = i < zero and i + 1 < j
        can_j = j > zero and j - 1 > i
        if not (can_i or can_j):
            break
        if can_i and can_j:
            mi, mj = mass[i], mass[j - 1]
            move_i = mi < mj or (mi == mj and zero - i >= j - zero)
        else:
            move_i = can_i
        if move_i:
            i += 1
        else:
            j -= 1
        path_i.append(i)
        path_j.append(j)
    return np.asarray(path_i), np.asarray(path_j)


def search_greedy_l2(
    lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
) -> tuple[float, float]:
    """``histogram`` calibrator: L2-optimal range along a greedy (start_bin, end_bin) shrinking path.

    Starting from the full extent, the path trims one bin at a time from the tail with less mass in its
    outermost bin (the long, sparse tail goes first); every point of the path is scored with the approximate
    squared error (clipping + ``s^2/12`` rounding, module docstring) and the global minimum along the whole
    path is returned (no early stop at the first increase, which is fragile on multi-modal histograms).
    ``SYMMETRIC`` runs on the histogram of ``|x|`` and ``ONE_SIDED`` on ``[0, max]``; both then have a
    single cut point and the path is a dense scan.
    """
    steps = n_steps(kind, n_levels)
    if kind is RangeKind.SYMMETRIC:
        side = lh.folded()
        return _one_dim_result(side, _best_1d(side, steps // 2), kind)
    if kind is RangeKind.ONE_SIDED:
        side = lh.positive()
        return _one_dim_result(side, _best_1d(side, steps), kind)
    i_lo, j_hi = lh.support()
    z = lh.zero_edge
    if i_lo == j_hi:
        return 0.0, 0.0
    pi, pj = _greedy_path(lh.counts, i_lo, z, j_hi)
    k = int(np.argmin(_Moments(lh.counts).cost(pi, pj, steps)))
    return float(lh.edge_value(pi[k])), float(lh.edge_value(pj[k]))


def _one_dim_result(side: LatticeHistogram, j: int, kind: RangeKind) -> tuple[float, float]:
    t = float(side.edge_value(j))
    return (-t, t) if kind is RangeKind.SYMMETRIC else (0.0, t)


# --------------------------------------------------------------------------------------------------------
# percentile
# --------------------------------------------------------------------------------------------------------


def _quantile(lh: LatticeHistogram, q: float) -> float:
    """Quantile of the histogram distribution, linear inside the bin (uniform bin mass)."""
    c = np.cumsum(lh.counts)
    total = float(c[-1]) if c.size else 0.0
    if total <= 0.0:
        return 0.0
    target = min(max(q, 0.0), 1.0) * total
    b = min(int(np.searchsorted(c, target, side="left")), lh.n - 1)
    prev = float(c[b - 1]) if b > 0 else 0.0
    mass = float(lh.counts[b])
    frac = (target - prev) / mass if mass > 0 else 1.0
    return float(lh.edge_value(b)) + min(max(frac, 0.0), 1.0) * lh.width


def search_percentile(
    lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float, percentile: float = 99.99
) -> tuple[float, float]:
    """``percentile`` calibrator.

    ``SYMMETRIC``: ``+-`` the ``percentile`` of ``|x|``; ``ONE_SIDED``: ``[0, P(x)]``; ``ASYMMETRIC``:
    ``[P_{100 - p}(x), P_p(x)]`` (each tail trimmed by ``100 - p`` percent), widened to contain 0.
    """
    p = percentile / 100.0
    if kind is RangeKind.SYMMETRIC:
        t = _quantile(lh.folded(), p)
        return -t, t
    if kind is RangeKind.ONE_SIDED:
        return 0.0, _quantile(lh, p)
    return _quantile(lh, 1.0 - p), _quantile(lh, p)


# --------------------------------------------------------------------------------------------------------
# entropy (KL divergence)
# --------------------------------------------------------------------------------------------------------


def _xlogx(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    out = np.zeros_like(v)
    pos = v > 0
    out[pos] = v[pos] * np.log(v[pos])
    return out


def _kl_best_stop(counts: np.ndarray, n_q: int) -> int:
    """Edge index ``i`` of a magnitude histogram (offset 0) minimizing the KL divergence of clipping at ``i``.

    The first bin ``[0, w)`` (which holds the exact zeros of ReLU-like tensors and the values clipped to 0)
    is mapped to the zero level, which every grid represents exactly, and is left out of the comparison:
    otherwise its spike dominates the divergence (spreading it over a quantization group costs
    ``P_0 log(group size)``) and drives the threshold down for any tensor with many zeros. The remaining
    bins are matched against ``n_q - 1`` quantized bins with :func:`_kl_core`.
    """
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return 0
    m = int(nz[-1]) + 1
    if n_q < 3 or m <= n_q:
        return m
    return 1 + _kl_core(np.asarray(counts[1:m], dtype=np.float64), n_q - 1)


def _kl_core(counts: np.ndarray, n_q: int, block: int = 256) -> int:
    """Edge index ``i`` of a histogram minimizing ``KL(P_i || Q_i)`` (TensorRT-style, own formulation).

    For a candidate threshold at edge ``i``: ``P_i`` is the histogram truncated to ``i`` bins with all mass
    beyond folded into bin ``i - 1`` (what clipping does); ``Q_i`` quantizes the *unclipped* first ``i`` bins
    into ``n_q`` groups of (near-)equal bin counts and spreads every group's mass uniformly over the bins of
    the group where ``P_i`` is non-zero. Because ``Q_i`` is constant on a group's non-zero bins,
    ``sum_b P log Q`` reduces to a sum over groups, and with prefix sums every candidate costs O(n_q); all
    candidates ``n_q <= i <= m`` are evaluated in vectorized blocks. Clipping that leaves a group with no
    ``Q`` mass but some ``P`` mass gets ``Q = 1e-12`` (a heavy penalty).
    """
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return 0
    m = int(nz[-1]) + 1
    if n_q < 2 or m <= n_q:
        return m
    h = np.asarray(counts[:m], dtype=np.float64)
    total = float(h.sum())
    c = np.concatenate([[0.0], np.cumsum(h)])
    nzc = np.concatenate([[0.0], np.cumsum(h > 0)])
    hl = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    groups = np.arange(n_q + 1, dtype=np.int64)
    best_kl, best_i = math.inf, m
    log_total = math.log(total)
    for start in range(n_q, m + 1, block):
        cand = np.arange(start, min(start + block, m + 1), dtype=np.int64)
        bounds = (groups[None, :] * cand[:, None]) // n_q
        g_lo, g_hi = bounds[:, :-1], bounds[:, 1:]
        g_mass = c[g_hi] - c[g_lo]
        g_nz = nzc[g_hi] - nzc[g_lo]
        kept = c[cand]
        outliers = total - kept
        h_last = h[cand - 1]
        g_nz[:, -1] += (h_last == 0) & (outliers > 0)
        p_mass = g_mass.copy()
        p_mass[:, -1] += outliers
        valid = (g_nz > 0) & (g_mass > 0) & (kept[:, None] > 0)
        q = np.full_like(g_mass, 1e-12)
        np.divide(g_mass, g_nz * kept[:, None], out=q, where=valid)
        q = np.maximum(q, 1e-12)
        cross = np.where(p_mass > 0, p_mass * np.log(q), 0.0).sum(axis=1) / total
        plogp = (hl[cand - 1] - log_total * c[cand - 1]) / total + _xlogx((h_last + outliers) / total)
        kl = plogp - cross
        k = int(np.argmin(kl))
        if kl[k] < best_kl:
            best_kl, best_i = float(kl[k]), int(cand[k])
    return best_i


def search_entropy(
    lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float
) -> tuple[float, float]:
    """``entropy`` calibrator: TensorRT-style KL-divergence threshold (see :func:`_kl_best_stop`; the
    ``[0, w)`` bin is matched to the exactly representable zero level and left out of the divergence).

    - ``SYMMETRIC``: on the histogram of ``|x|`` with ``q + 1`` quantized bins (128 for int8: the levels
      0..127 of one sign), threshold ``t`` gives ``(-t, t)``.
    - ``ONE_SIDED``: on ``[0, max]`` (negative mass folded into the first bin, as clipping at 0 does) with
      ``n_levels`` quantized bins.
    - ``ASYMMETRIC`` (this project's generalization): the negative and positive sides are two independent
      one-sided KL problems (on ``-x`` for ``x < 0`` and on ``x >= 0``), each normalized by its own mass. A
      side gets the levels the asymmetric grid gives it, ``round(steps * extent_side / (extent_neg +
      extent_pos)) + 1``; the split is computed from the observed extent, then recomputed once from the
      chosen thresholds (two passes).
    """
    steps = n_steps(kind, n_levels)
    w = lh.width
    if kind is RangeKind.SYMMETRIC:
        t = _kl_best_stop(lh.folded().counts, steps // 2 + 1) * w
        return -t, t
    if kind is RangeKind.ONE_SIDED:
        return 0.0, _kl_best_stop(lh.positive(absorb_negative=True).counts, steps + 1) * w
    neg = lh.negative_mirrored().counts
    pos = lh.positive().counts
    ext_neg, ext_pos = -lo, hi
    t_neg, t_pos = ext_neg, ext_pos
    for _ in range(2):
        span = ext_neg + ext_pos
        if span <= 0:
            break
        n_neg = int(round(steps * ext_neg / span)) + 1
        n_pos = int(round(steps * ext_pos / span)) + 1
        t_neg = _kl_best_stop(neg, n_neg) * w if ext_neg > 0 else 0.0
        t_pos = _kl_best_stop(pos, n_pos) * w if ext_pos > 0 else 0.0
        ext_neg, ext_pos = min(t_neg, -lo), min(t_pos, hi)
    return -t_neg, t_pos


# --------------------------------------------------------------------------------------------------------
# mse (shape-preserving scale search)
# --------------------------------------------------------------------------------------------------------


def search_mse(
    lh: LatticeHistogram, kind: RangeKind, n_levels: int, lo: float, hi: float, n_grid: int = 100
) -> tuple[float, float]:
    """``mse`` calibrator: grid search of one clip factor ``f in (0, 1]`` under the exact error model.

    The range shape is fixed by ``kind``: ``SYMMETRIC`` ``+-f max|x|``, ``ONE_SIDED`` ``[0, f max]``,
    ``ASYMMETRIC`` ``[f min, f max]``. ``n_grid`` factors ``k / n_grid`` are scored with the exact expected
    error (:mod:`.error`), then ``n_grid`` more in ``+-1/n_grid`` around the best.
    """
    if kind is RangeKind.SYMMETRIC:
        a = max(-lo, hi)
        a0, b0 = -a, a
    elif kind is RangeKind.ONE_SIDED:
        a0, b0 = 0.0, hi
    else:
        a0, b0 = lo, hi
    if not b0 - a0 > 0:
        return a0, b0

    def best(factors: np.ndarray) -> float:
        alpha, beta = factors * a0, factors * b0
        scale, zero, steps = _grid_arrays(alpha, beta, n_levels, kind)
        err = _batch_error_raw(lh.counts, lh.edges, scale, zero, steps)
        return float(factors[int(np.argmin(err))])

    f = best(np.arange(1, n_grid + 1) / n_grid)
    f = best(np.linspace(max(f - 1.0 / n_grid, 0.5 / n_grid), min(f + 1.0 / n_grid, 1.0), n_grid))
    return f * a0, f * b0


# --------------------------------------------------------------------------------------------------------
# redistribution (method.md step 5)
# --------------------------------------------------------------------------------------------------------


def _grid_points(lo: int, hi: int, points: int) -> np.ndarray:
    """Up to ``points`` integers spread evenly over ``[lo, hi]`` (both included)."""
    if hi - lo + 1 <= points:
        return np.arange(lo, hi + 1)
    return np.unique(np.rint(np.linspace(lo, hi, points)).astype(np.int64))


def _spacing(p: np.ndarray) -> int:
    return int(np.max(np.diff(p))) if p.shape[0] > 1 else 1


def _coarse_to_fine_2d(
    mom: _Moments, i_rng: tuple[int, int], j_rng: tuple[int, int], steps: int, points: int, seeds: int
) -> tuple[int, int]:
    """Minimize ``mom.cost(i, j)`` over ``i_rng x j_rng`` (inclusive, ``i < j``) coarse-to-fine.

    A ``points x points`` grid over the whole domain, then for each of the ``seeds`` best coarse cells a
    window of +-one grid spacing re-sampled with ``points`` per axis, repeated until the spacing is one bin
    (exhaustive locally). Several seeds guard against a second basin (e.g. "clip the outlier cluster" vs
    "keep it") that the coarse grid under-samples.
    """

    def evaluate(ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        cost = mom.cost(ii[:, None], jj[None, :], steps)
        return np.where(ii[:, None] < jj[None, :], cost, np.inf)

    ii, jj = _grid_points(*i_rng, points), _grid_points(*j_rng, points)
    cost = evaluate(ii, jj)
    order = np.argsort(cost, axis=None)[:seeds]
    best = (math.inf, i_rng[0], j_rng[1])
    for flat in order:
        a, b = np.unravel_index(int(flat), cost.shape)
        if not np.isfinite(cost[a, b]):
            continue
        ci, cj = int(ii[a]), int(jj[b])
        ri, rj = _spacing(ii), _spacing(jj)
        c_best = float(cost[a, b])
        while ri > 1 or rj > 1:
            wi = _grid_points(max(i_rng[0], ci - ri), min(i_rng[1], ci + ri), points)
            wj = _grid_points(max(j_rng[0], cj - rj), min(j_rng[1], cj + rj), points)
            local = evaluate(wi, wj)
            a2, b2 = np.unravel_index(int(np.argmin(local)), local.shape)
            ci, cj, c_best = int(wi[a2]), int(wj[b2]), float(local[a2, b2])
            ri, rj = _spacing(wi), _spacing(wj)
        if c_best < best[0]:
            best = (c_best, ci, cj)
    return best[1], best[2]


def search_redistribution(
    lh: LatticeHistogram,
    kind: RangeKind,
    n_levels: int,
    lo: float,
    hi: float,
    coarse_points: int = 64,
    seeds: int = 4,
    polish_radius: int = 4,
) -> tuple[float, float]:
    """``redistribution`` calibrator (method.md step 5): minimum expected squared error range.

    ``ASYMMETRIC``: a 2-D search over the lower cut ``alpha`` (any edge between the data minimum and 0) and
    the upper cut ``beta`` (any edge between 0 and the data maximum), shrinking both ends independently.
    Stage 1 minimizes the approximate error (clipping + ``s^2/12`` rounding, O(1) per candidate via prefix
    sums) with :func:`_coarse_to_fine_2d`; stage 2 re-scores the ``(2 r + 1)^2`` edge pairs within
    ``polish_radius`` bins of the stage-1 optimum with the exact model of :mod:`.error` (rounding on the
    actual grid including the zero-point nudge) and returns the best. ``SYMMETRIC`` (``+-t``, on ``|x|``) and
    ``ONE_SIDED`` (``[0, t]``) run the same two stages with a single cut point; stage 1 is then a dense scan.
    Candidates are clamped to the observed extent ``[lo, hi]`` before exact scoring.
    """
    steps = n_steps(kind, n_levels)
    r = max(0, int(polish_radius))
    if kind in (RangeKind.SYMMETRIC, RangeKind.ONE_SIDED):
        if kind is RangeKind.SYMMETRIC:
            side, side_steps, top = lh.folded(), steps // 2, max(-lo, hi)
        else:
            side, side_steps, top = lh.positive(), steps, hi
        stop = side.support()[1]
        if stop < 1 or top <= 0:
            return 0.0, 0.0
        j = _best_1d(side, side_steps)
        cand = np.arange(max(1, j - r), min(stop, j + r) + 1)
        t = np.unique(np.minimum(side.edge_value(cand), top))
        alpha = -t if kind is RangeKind.SYMMETRIC else np.zeros_like(t)
        return _exact_argmin(lh, alpha, t, kind, n_levels)
    i_lo, j_hi = lh.support()
    z = lh.zero_edge
    if i_lo == j_hi:
        return 0.0, 0.0
    bi, bj = _coarse_to_fine_2d(_Moments(lh.counts), (i_lo, z), (z, j_hi), steps, coarse_points, seeds)
    ci = np.arange(max(i_lo, bi - r), min(z, bi + r) + 1)
    cj = np.arange(max(z, bj - r), min(j_hi, bj + r) + 1)
    gi, gj = np.meshgrid(ci, cj, indexing="ij")
    keep = gi < gj
    alpha = np.maximum(lh.edge_value(gi[keep]), lo)
    beta = np.minimum(lh.edge_value(gj[keep]), hi)
    return _exact_argmin(lh, alpha, beta, kind, n_levels)
