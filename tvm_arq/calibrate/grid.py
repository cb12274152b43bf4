"""Quantization grids shared by all calibrators.

A clipping range ``(alpha, beta)`` plus a :class:`~tvm_arq.config.RangeKind` and a level count define the
grid of representable reals ``(k - z) * s`` for integer ``k = 0 .. steps``:

============== =================================== ========================== ==============================
kind           levels used (``n_levels = 256``)    scale ``s``                zero point ``z``
============== =================================== ========================== ==============================
``SYMMETRIC``  ``[-127, 127]``: 255 levels         ``a / 127``, ``a = beta``  ``127`` (i.e. real 0 is level 0
                                                                              of the signed grid)
``ONE_SIDED``  ``[0, 255]``: 256 levels             ``beta / 255``             ``0``
``ASYMMETRIC`` ``[0, 255]``: 256 levels             ``(beta - alpha) / 255``   ``round(-alpha / s)`` clipped to
                                                                              ``[0, 255]`` (the *nudge*)
============== =================================== ========================== ==============================

For ``ASYMMETRIC`` the nudged grid keeps the scale and rounds the zero point, so real 0 is exactly
representable and the effective range is ``[-z s, (255 - z) s]``, which differs from ``[alpha, beta]`` by less
than ``s / 2`` at each end. :func:`fake_quantize` and :func:`~tvm_arq.calibrate.error.expected_sq_error` use
this exact grid.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from ..config import RangeKind

__all__ = [
    "MIN_SCALE",
    "check_n_levels",
    "fake_quantize",
    "finalize_range",
    "grid_params",
    "n_steps",
]

#: Smallest scale a calibrated range may produce: float32 machine epsilon. Degenerate tensors (all zero,
#: or a range narrower than ``n_steps * MIN_SCALE``) are widened to that width so that scales are never
#: zero, denormal or NaN.
MIN_SCALE: float = float(np.finfo(np.float32).eps)


def check_n_levels(n_levels: int) -> int:
    """Validate a level count.

    Parameters
    ----------
    n_levels
        Number of integer levels of the storage type (256 for 8 bits).

    Returns
    -------
    int
        ``n_levels`` as a Python int.

    Raises
    ------
    ValueError
        If ``n_levels < 4``.
    """
    n = operator.index(n_levels)
    if n < 4:
        raise ValueError(f"n_levels must be >= 4, got {n}")
    return n


def n_steps(kind: RangeKind | str, n_levels: int) -> int:
    """Number of quantization steps (levels - 1) of a range kind.

    ``SYMMETRIC`` uses ``[-q, q]`` with ``q = (n_levels - 1) // 2`` (zero exactly representable, one level
    of an even ``n_levels`` unused), i.e. ``2 q`` steps; the other kinds use all ``n_levels - 1`` steps.

    Parameters
    ----------
    kind
        Range kind.
    n_levels
        Number of integer levels.

    Returns
    -------
    int
        Number of steps between the lowest and highest grid point.
    """
    kind = RangeKind(kind)
    n = check_n_levels(n_levels)
    if kind is RangeKind.SYMMETRIC:
        return 2 * ((n - 1) // 2)
    return n - 1


def _grid_arrays(
    alpha: np.ndarray, beta: np.ndarray, n_levels: int, kind: RangeKind
) -> tuple[np.ndarray, np.ndarray, int]:
    """Vectorized :func:`grid_params`: scales and zero points for arrays of ranges (no validation)."""
    steps = n_steps(kind, n_levels)
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if kind is RangeKind.SYMMETRIC:
        a = np.maximum(-alpha, beta)
        scale = 2.0 * a / steps
        zero = np.full_like(scale, steps // 2)
    elif kind is RangeKind.ONE_SIDED:
        scale = beta / steps
        zero = np.zeros_like(scale)
    else:
        scale = (beta - alpha) / steps
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.clip(np.rint(-alpha / scale), 0, steps)
    return scale, zero, steps


def grid_params(
    alpha: float, beta: float, n_levels: int = 256, kind: RangeKind | str = RangeKind.ASYMMETRIC
) -> tuple[float, int, int]:
    """Scale, zero point and step count of the grid a range is quantized onto.

    The representable reals are ``(k - zero) * scale`` for ``k = 0 .. steps``.

    Parameters
    ----------
    alpha, beta
        Clipping range with ``alpha <= 0 <= beta``. ``SYMMETRIC`` uses ``a = max(-alpha, beta)``;
        ``ONE_SIDED`` uses ``[0, beta]``.
    n_levels
        Number of integer levels (256 for 8 bits).
    kind
        Range kind.

    Returns
    -------
    scale : float
        Step size ``s > 0``.
    zero : int
        Zero point in ``[0, steps]`` (level of real 0).
    steps : int
        Number of steps.

    Raises
    ------
    ValueError
        If the range does not contain 0, is not finite or has zero width for this kind.
    """
    kind = RangeKind(kind)
    alpha, beta = float(alpha), float(beta)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"range must be finite, got ({alpha}, {beta})")
    if not alpha <= 0.0 <= beta:
        raise ValueError(f"range must contain 0, got ({alpha}, {beta})")
    scale, zero, steps = _grid_arrays(np.array(alpha), np.array(beta), n_levels, kind)
    s = float(scale)
    if not s > 0.0:
        raise ValueError(f"range ({alpha}, {beta}) has zero width for kind {kind.value}")
    return s, int(zero), steps


def fake_quantize(
    x: np.ndarray,
    alpha: float,
    beta: float,
    n_levels: int = 256,
    kind: RangeKind | str = RangeKind.ASYMMETRIC,
) -> np.ndarray:
    """Quantize then dequantize an array on the grid of a range (reference implementation).

    Parameters
    ----------
    x
        Real values, any shape.
    alpha, beta
        Clipping range (see :func:`grid_params`).
    n_levels
        Number of integer levels.
    kind
        Range kind.

    Returns
    -------
    numpy.ndarray
        ``(clip(round(x / s) + z, 0, steps) - z) * s`` with the dtype of ``x`` if it is floating point,
        else float64. Rounding is half-to-even.
    """
    scale, zero, steps = grid_params(alpha, beta, n_levels, kind)
    x = np.asarray(x)
    q = np.clip(np.rint(x.astype(np.float64) / scale) + zero, 0, steps)
    out = (q - zero) * scale
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)


def finalize_range(
    alpha: float, beta: float, kind: RangeKind | str, n_levels: int = 256
) -> tuple[float, float]:
    """Put a raw range estimate into the canonical shape of its kind.

    Enforces ``alpha <= 0 <= beta``, ``alpha = -beta`` for ``SYMMETRIC`` and ``alpha = 0`` for
    ``ONE_SIDED``, and a minimum width of ``n_steps * MIN_SCALE``: narrower ranges are scaled up about 0
    (keeping their shape), an all-zero range becomes ``(-w/2, w/2)`` (``(0, w)`` for ``ONE_SIDED``).

    Parameters
    ----------
    alpha, beta
        Raw estimate (finite).
    kind
        Range kind.
    n_levels
        Number of integer levels.

    Returns
    -------
    tuple of float
        ``(alpha, beta)`` with ``alpha < 0 < beta`` or, for ``ONE_SIDED``, ``alpha == 0 < beta``.

    Raises
    ------
    ValueError
        If the estimate is not finite.
    """
    kind = RangeKind(kind)
    alpha, beta = float(alpha), float(beta)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"range estimate is not finite: ({alpha}, {beta})")
    alpha, beta = min(alpha, 0.0), max(beta, 0.0)
    if kind is RangeKind.SYMMETRIC:
        a = max(-alpha, beta)
        alpha, beta = -a, a
    elif kind is RangeKind.ONE_SIDED:
        alpha = 0.0
    min_width = n_steps(kind, n_levels) * MIN_SCALE
    width = beta - alpha
    if width < min_width:
        if width > 0.0:
            neg_fraction = min(max(-alpha / width, 0.0), 1.0)  # in [0, 1]: no overflow for tiny widths
            alpha = -neg_fraction * min_width
            beta = (1.0 - neg_fraction) * min_width
        elif kind is RangeKind.ONE_SIDED:
            alpha, beta = 0.0, min_width
        else:
            alpha, beta = -0.5 * min_width, 0.5 * min_width
    return float(alpha), float(beta)
