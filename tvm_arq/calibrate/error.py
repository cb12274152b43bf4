"""Expected squared quantization error of a clipping range over a histogram.

Model
-----
The mass of every histogram bin is taken as **uniformly distributed inside the bin** (the only assumption;
no bin-centre approximation). For a grid ``(k - z) s``, ``k = 0 .. steps`` (see :mod:`.grid`) the
quantize->dequantize error of a real ``x`` is ``e(x) = x - Q(x)`` with ``Q`` = round to nearest grid point
inside the range, clip outside it. The expected squared error of a bin ``[l, r)`` is then

    ``(1 / (r - l)) * integral_l^r e(x)^2 dx = (Phi(r) - Phi(l)) / (r - l)``

with the closed-form antiderivative ``Phi`` (``g0 = -z s``, ``g1 = g0 + steps s``,
``u = clip((x - g0) / s, 0, steps)``, ``v = u + 1/2``, ``m = floor(v)``, ``f = v - m``)::

    Phi(x) = s^3 * (m / 12 + ((f - 1/2)^3 + 1/8) / 3 - 1/24)      # rounding error, exact sawtooth
             + min(x - g0, 0)^3 / 3 + max(x - g1, 0)^3 / 3          # clipping error below / above

(evaluated in units of ``s``, once per distinct edge of the bins with mass).

So the rounding error is computed **exactly on the actual grid** (including the asymmetric zero-point
nudge), not with the ``s^2/12`` approximation; for bins much narrower than ``s`` the two agree, for coarse
bins or ranges that straddle bin edges the exact form is what fake quantization really does to
uniformly-spread data. The searches in :mod:`.search` use the ``s^2/12`` approximation for their fast
coarse stages (O(1) per candidate) and this exact form to polish the final choice.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import RangeKind
from .grid import _grid_arrays, check_n_levels, grid_params

__all__ = ["batch_expected_sq_error", "expected_sq_error"]

_CHUNK_ELEMENTS = 1 << 20


def _check_hist(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hist = np.asarray(hist, dtype=np.float64).ravel()
    edges = np.asarray(edges, dtype=np.float64).ravel()
    if edges.shape[0] != hist.shape[0] + 1:
        raise ValueError(f"edges must have len(hist) + 1 = {hist.shape[0] + 1} entries, got {edges.shape[0]}")
    if not (np.all(np.isfinite(hist)) and np.all(np.isfinite(edges))):
        raise ValueError("hist and edges must be finite")
    if np.any(hist < 0):
        raise ValueError("hist must be non-negative")
    if hist.shape[0] and not np.all(np.diff(edges) > 0):
        raise ValueError("edges must be strictly increasing")
    return hist, edges


def _phi_unit(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, steps: int) -> np.ndarray:
    """``Phi(x) / s^3`` (antiderivative of the squared error, ``Phi(g0) = 0``), broadcasting to ``(K, N)``.

    In units of the step, ``t = (x - g0) / s``: ``Phi / s^3 = S(clip(t, 0, steps)) + (t - clip(t))^3 / 3``
    where ``S`` is the integral of the squared sawtooth; only one of the clipping terms is ever non-zero.
    """
    t = (x + zero * scale) / scale  # (x - g0) / s, g0 = -z s
    u = np.clip(t, 0.0, float(steps))
    t -= u  # excess beyond the grid (negative below, positive above, 0 inside)
    u += 0.5
    m = np.floor(u)
    u -= m
    u -= 0.5  # position inside the rounding cell, in [-1/2, 1/2)
    out = u * u
    out *= u
    out += 0.125
    out /= 3.0
    m /= 12.0
    out += m
    out -= 1.0 / 24.0
    t3 = t * t
    t3 *= t
    t3 /= 3.0
    out += t3
    return out


def _batch_error_raw(
    hist: np.ndarray, edges: np.ndarray, scale: np.ndarray, zero: np.ndarray, steps: int
) -> np.ndarray:
    """Mean squared error per element for arrays of grids; inputs already validated."""
    total = float(hist.sum())
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    zero = np.atleast_1d(np.asarray(zero, dtype=np.float64))
    out = np.zeros(scale.shape[0], dtype=np.float64)
    if total <= 0.0 or hist.shape[0] == 0:
        return out
    # Phi is only needed on the edges of bins with mass; adjacent bins share an edge, so evaluate it once
    # on the compact sorted list of those edges, where every kept bin is a consecutive pair (p, p + 1).
    keep = hist > 0
    need = np.zeros(edges.shape[0], dtype=bool)
    need[:-1] |= keep
    need[1:] |= keep
    x = edges[need]
    lo_pos = (np.cumsum(need) - 1)[:-1][keep]
    weights = np.zeros(max(x.shape[0] - 1, 0))
    weights[lo_pos] = hist[keep] / (edges[1:][keep] - edges[:-1][keep])
    rows = max(1, _CHUNK_ELEMENTS // max(1, x.shape[0]))
    for start in range(0, scale.shape[0], rows):
        s = scale[start : start + rows, None]
        phi = _phi_unit(x[None, :], s, zero[start : start + rows, None], steps)
        out[start : start + rows] = np.diff(phi, axis=1) @ weights
    out *= scale**3
    return np.maximum(out, 0.0) / total


def batch_expected_sq_error(
    hist: np.ndarray,
    edges: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    n_levels: int = 256,
    kind: RangeKind | str = RangeKind.ASYMMETRIC,
) -> np.ndarray:
    """Vectorized :func:`expected_sq_error` over arrays of candidate ranges.

    Parameters
    ----------
    hist, edges
        Histogram counts (``n``) and bin edges (``n + 1``, strictly increasing).
    alpha, beta
        Candidate ranges, broadcastable 1-D arrays with ``alpha <= 0 <= beta`` and non-zero width.
    n_levels
        Number of integer levels.
    kind
        Range kind (defines the grid, see :mod:`.grid`).

    Returns
    -------
    numpy.ndarray
        Mean squared error per element for each candidate.
    """
    kind = RangeKind(kind)
    n_levels = check_n_levels(n_levels)
    hist, edges = _check_hist(hist, edges)
    alpha, beta = np.broadcast_arrays(
        np.atleast_1d(np.asarray(alpha, dtype=np.float64)), np.atleast_1d(np.asarray(beta, dtype=np.float64))
    )
    if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
        raise ValueError("ranges must be finite")
    if np.any(alpha > 0) or np.any(beta < 0):
        raise ValueError("ranges must contain 0")
    scale, zero, steps = _grid_arrays(alpha, beta, n_levels, kind)
    if not np.all(scale > 0):
        raise ValueError(f"ranges must have non-zero width for kind {kind.value}")
    return _batch_error_raw(hist, edges, scale, zero, steps)


def expected_sq_error(
    hist: np.ndarray,
    edges: np.ndarray,
    alpha: float,
    beta: float,
    n_levels: int = 256,
    kind: RangeKind | str = RangeKind.ASYMMETRIC,
) -> float:
    """Expected squared quantize->dequantize error per element of a range over a histogram.

    Bin mass is uniform inside each bin; the error is clipping error outside the grid plus the exact
    rounding error on the grid of ``kind`` (module docstring). The result is what
    ``mean((x - fake_quantize(x, alpha, beta, n_levels, kind)) ** 2)`` converges to for data distributed
    like the histogram.

    Parameters
    ----------
    hist
        Histogram counts (any non-negative weights), shape ``(n,)``.
    edges
        Bin edges, shape ``(n + 1,)``, strictly increasing (need not contain 0 or be uniform).
    alpha, beta
        Clipping range, ``alpha <= 0 <= beta``. ``SYMMETRIC`` uses ``a = max(-alpha, beta)``,
        ``ONE_SIDED`` uses ``[0, beta]``.
    n_levels
        Number of integer levels (256 for 8 bits).
    kind
        Range kind.

    Returns
    -------
    float
        Mean squared error per unit of histogram mass (0.0 for an empty histogram).

    Raises
    ------
    ValueError
        On malformed histograms, ranges not containing 0, or zero-width ranges.
    """
    kind = RangeKind(kind)
    hist, edges = _check_hist(hist, edges)
    scale, zero, steps = grid_params(alpha, beta, n_levels, kind)
    err = float(_batch_error_raw(hist, edges, np.array([scale]), np.array([float(zero)]), steps)[0])
    return err if math.isfinite(err) else math.inf
