"""Output-aware clipping ranges (the ``output`` calibrator; not the default, see ``results/output_calibrator.md``).

A tensor-local objective (the expected quantize->dequantize error of the tensor itself) is not what the
network sees: the error that matters is the one at the output of the layer(s) that read the tensor. The
``output`` calibrator therefore judges candidate clipping ranges where the error lands, by layer-output
reconstruction on calibration samples (the objective of AdaQuant / SeqMSE, applied to activation ranges):

- candidates: the range of every other calibrator (minmax, moving_minmax, histogram, percentile, entropy,
  mse, redistribution) for the range kind the hybrid selection chose, plus a small grid of shrunk
  min/max ranges (:data:`GRID_FACTORS`); all computed from one streaming histogram
  (:class:`OutputObserver`);
- objective: for every consumer of the tensor, the relative squared error of its output with the
  tensor fake-quantized on the candidate's grid, against its float output on the same inputs:

  * conv2d (NCHW, any stride / padding / dilation / groups) and dense: ``Q(x) * Q(W)`` vs ``x * W`` on
    patches at randomly sampled output positions (the weights quantized per channel as the build does);
  * a lookup-table activation (SiLU, sigmoid, hardswish, ...): ``f(Q(x))`` vs ``f(x)``;
  * LayerNorm (over trailing axes, with its gamma / beta) and softmax (over the last axis): the function of
    ``Q(x)`` vs of ``x`` on randomly sampled rows (these functions rescale each row, so an error that is small
    against the whole tensor can be large against a row with a small spread);
  * anything else (add, concat, pooling, the graph output, ...): the tensor's own error ``Q(x)`` vs ``x``;

  a consumer that reads the tensor through movement ops (reshape, permute_dims, squeeze, expand_dims) is
  found through them and evaluated on the moved view (:attr:`Consumer.view`);

  summed over the consumers; the candidate with the smallest sum is chosen (ties: the earlier candidate
  in :data:`CANDIDATE_ORDER`).

Memory is bounded by **subsampling**: the calibration samples are streamed once; a seeded reservoir keeps
at most :data:`SEARCH_SAMPLES` of them, and of each kept sample only a random subset of each consumer's
input rows (conv patches at :func:`positions_per_sample` output positions, dense rows, or
:data:`ELEMENTS_PER_SAMPLE` elements), about :data:`ROW_BUDGET` floats per consumer. The histogram that
produces the candidates sees every sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import Calibrator, RangeKind
from ..qmath import choose_qparams, quantize_weights_per_channel
from . import observers as _observers
from .grid import finalize_range
from .observers import _HistogramObserverBase, _minmax_range
from .search import (
    KL_SUB_BINS,
    search_entropy,
    search_greedy_l2,
    search_mse,
    search_percentile,
    search_redistribution,
)

#: calibration samples kept (reservoir) for the output-error search
SEARCH_SAMPLES = 16
#: floats kept per consumer over all kept samples (conv patches / dense rows)
ROW_BUDGET = 1 << 19
#: elements kept per sample for lookup-table and tensor-error consumers
ELEMENTS_PER_SAMPLE = 1024
#: shrink factors of the min/max range added to the calibrators' candidates
GRID_FACTORS = (0.8, 0.6, 0.4)
#: candidate names in tie-break order
CANDIDATE_ORDER = ("minmax", "moving_minmax", "histogram", "percentile", "entropy", "mse", "redistribution",
                   *(f"grid{f:g}" for f in GRID_FACTORS))


class OutputObserver(_HistogramObserverBase):
    """``output``: one streaming histogram (and moving min/max) from which every calibrator's range is derived.

    :meth:`candidates` returns them all for a range kind; the choice among them needs the consumers and is made
    by :func:`choose_candidate`. Used alone (:meth:`compute_range`), it falls back to the tensor-local
    ``redistribution`` range.

    Parameters
    ----------
    bins
        Number of histogram bins.
    percentile
        Percentile of the ``percentile`` candidate.
    averaging_constant
        Constant of the ``moving_minmax`` candidate.
    """

    calibrator = Calibrator.OUTPUT

    def __init__(self, bins: int = 2048, percentile: float = 99.99, averaging_constant: float = 0.01) -> None:
        super().__init__(bins)
        self.percentile = float(percentile)
        self._decay = 1.0 - float(averaging_constant)
        self._mv = [0.0, 0.0, 0.0]  # weighted sums of per-sample min, max and the weight sum

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        super()._observe(x, lo, hi)
        d = self._decay
        self._mv = [d * self._mv[0] + lo, d * self._mv[1] + hi, d * self._mv[2] + 1.0]

    def _search(self, lh, kind: RangeKind, n_levels: int, lo: float, hi: float) -> tuple[float, float]:
        return search_redistribution(lh, kind, n_levels, lo, hi)

    def candidates(self, kind: RangeKind | str, n_levels: int = 256) -> dict[str, tuple[float, float]]:
        """Every calibrator's clipping range for ``kind`` plus the shrink grid, by name (finalized ranges)."""
        kind = RangeKind(kind)
        lo, hi = min(self._min, 0.0), max(self._max, 0.0)
        if not math.isfinite(self._min):
            raise RuntimeError("OutputObserver: candidates requested before any data was observed")
        if self._min == 0.0 and self._max == 0.0:
            return {"minmax": finalize_range(0.0, 0.0, kind, n_levels)}
        raw: dict[str, tuple[float, float]] = {"minmax": _minmax_range(lo, hi, kind)}
        if self._mv[2] > 0:
            raw["moving_minmax"] = _minmax_range(self._mv[0] / self._mv[2], self._mv[1] / self._mv[2], kind)
        lh = self.lattice()
        searches: dict[str, Callable] = {
            "histogram": lambda: search_greedy_l2(lh, kind, n_levels, lo, hi),
            "percentile": lambda: search_percentile(lh, kind, n_levels, lo, hi, self.percentile),
            "entropy": lambda: search_entropy(lh, kind, n_levels, lo, hi, KL_SUB_BINS),
            "mse": lambda: search_mse(lh, kind, n_levels, lo, hi),
            "redistribution": lambda: search_redistribution(lh, kind, n_levels, lo, hi),
        }
        for name, fn in searches.items():
            a, b = fn()
            if kind is RangeKind.SYMMETRIC:
                t = min(max(-a, b), max(-lo, hi))
                raw[name] = (-t, t)
            else:
                raw[name] = (max(a, lo), min(b, hi))
        a0, b0 = raw["minmax"]
        for f in GRID_FACTORS:
            raw[f"grid{f:g}"] = (f * a0, f * b0)
        return {k: finalize_range(a, b, kind, n_levels) for k, (a, b) in raw.items()}


_observers._REGISTRY[Calibrator.OUTPUT] = OutputObserver


# --------------------------------------------------------------------------------------------------------
# consumers and their sampled inputs
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consumer:
    """One reader of a quantized tensor, as the output-error search evaluates it.

    Attributes
    ----------
    name
        The consumer's binding name (report).
    kind
        ``"conv"`` (NCHW/OIHW conv2d), ``"dense"`` (``x @ W`` with ``W`` of shape ``(in, out)``), ``"lut"``
        (element-wise function ``fn``) or ``"tensor"`` (the tensor's own error).
    weight
        conv: ``(groups, out / groups, in / groups * kh * kw)``; dense: ``(in, out)``; float32.
    qweight
        ``weight`` quantized per output channel and dequantized (what the integer kernel multiplies with).
    conv
        conv: ``(kh, kw, strides, padding (top, left, bottom, right), dilation)``.
    fn
        lut: the float function (1-D array -> 1-D array); rows: the float function of ``(rows, width)`` arrays
        applied row by row (LayerNorm over trailing axes, softmax over the last axis).
    width
        rows: the number of trailing elements one row holds.
    view
        Movement steps between the tensor and this consumer (the consumer reads a reshaped / transposed
        view): ``("reshape", shape)`` or ``("permute", axes)``, applied in order to each sample.
    """

    name: str
    kind: str
    weight: np.ndarray | None = None
    qweight: np.ndarray | None = None
    conv: tuple | None = None
    fn: Callable[[np.ndarray], np.ndarray] | None = None
    width: int = 0
    view: tuple = ()


def conv_consumer(name: str, w: np.ndarray, strides, padding, dilation, groups: int) -> Consumer:
    """A conv2d consumer from its OIHW weight and attributes."""
    w = np.asarray(w, np.float32)
    qw, scales = quantize_weights_per_channel(w, axis=0)
    deq = qw.astype(np.float32) * scales.reshape(-1, 1, 1, 1)
    o, _, kh, kw = w.shape
    shape = (groups, o // groups, -1)
    pad = tuple(int(p) for p in padding)
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    return Consumer(name, "conv", w.reshape(shape), deq.reshape(shape).astype(np.float32),
                    (kh, kw, tuple(int(s) for s in strides), pad, tuple(int(d) for d in dilation)))


def dense_consumer(name: str, w: np.ndarray) -> Consumer:
    """A dense consumer ``x @ w`` from its ``(in, out)`` weight."""
    w = np.asarray(w, np.float32)
    qw, scales = quantize_weights_per_channel(w, axis=1)
    return Consumer(name, "dense", w, (qw.astype(np.float32) * scales.reshape(1, -1)).astype(np.float32))


def layer_norm_consumer(name: str, gamma: np.ndarray, beta: np.ndarray, eps: float, view: tuple = ()) -> Consumer:
    """A LayerNorm consumer over the trailing ``gamma.size`` elements (gamma / beta flattened)."""
    g = np.asarray(gamma, np.float32).reshape(-1)
    b = np.asarray(beta, np.float32).reshape(-1)

    def fn(x: np.ndarray) -> np.ndarray:
        mu = x.mean(axis=1, keepdims=True)
        var = np.square(x - mu).mean(axis=1, keepdims=True)
        return (x - mu) / np.sqrt(var + np.float32(eps)) * g + b

    return Consumer(name, "rows", fn=fn, width=int(g.size), view=view)


def softmax_consumer(name: str, width: int, view: tuple = ()) -> Consumer:
    """A softmax consumer over the last axis (``width`` elements)."""

    def fn(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return Consumer(name, "rows", fn=fn, width=int(width), view=view)


def positions_per_sample(k: int) -> int:
    """Conv output positions (or dense rows) kept per sample for a consumer with ``k`` inputs per output."""
    return int(min(256, max(16, ROW_BUDGET // (max(k, 1) * SEARCH_SAMPLES))))


def conv_patches(x: np.ndarray, c: Consumer, rng: np.random.Generator) -> np.ndarray:
    """Input patches of a conv consumer at random output positions: ``(positions, groups, k)``."""
    kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw) = c.conv
    n, ch, h, w = x.shape
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    groups = c.weight.shape[0]
    total = n * oh * ow
    m = min(total, positions_per_sample(c.weight.shape[2] * groups))
    flat = np.sort(rng.choice(total, size=m, replace=False)) if m < total else np.arange(total)
    bi, rest = np.divmod(flat, oh * ow)
    yi, xi = np.divmod(rest, ow)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    hh = yi[:, None] * sh + np.arange(kh)[None, :] * dh  # (m, kh)
    ww = xi[:, None] * sw + np.arange(kw)[None, :] * dw  # (m, kw)
    p = xp[bi[:, None, None, None], np.arange(ch)[None, :, None, None], hh[:, None, :, None], ww[:, None, None, :]]
    return np.ascontiguousarray(p.reshape(m, groups, -1), dtype=np.float32)


def apply_view(x: np.ndarray, view: tuple) -> np.ndarray:
    """The tensor as the consumer reads it: the movement steps of :attr:`Consumer.view` applied in order."""
    for step, arg in view:
        x = np.reshape(x, arg) if step == "reshape" else np.transpose(x, arg)
    return x


def consumer_rows(x: np.ndarray, c: Consumer, rng: np.random.Generator) -> np.ndarray:
    """The subsample of one calibration sample of a tensor that consumer ``c`` is evaluated on."""
    x = apply_view(np.asarray(x, np.float32), c.view)
    if c.kind == "conv":
        return conv_patches(x, c, rng)
    if c.kind in ("dense", "rows"):
        rows = x.reshape(-1, c.width if c.kind == "rows" else x.shape[-1])
        m = min(rows.shape[0], positions_per_sample(rows.shape[1]))
        return rows[np.sort(rng.choice(rows.shape[0], size=m, replace=False))] if m < rows.shape[0] else rows
    flat = x.reshape(-1)
    if flat.size > ELEMENTS_PER_SAMPLE:
        flat = flat[rng.choice(flat.size, size=ELEMENTS_PER_SAMPLE, replace=False)]
    return flat.copy()


class OutputSampler:
    """Streams calibration samples and keeps, per quantization point, the consumer inputs of a reservoir.

    Parameters
    ----------
    consumers
        Per quantization point, its :class:`Consumer` list (points without consumers are not sampled).
    n_samples
        Reservoir size (calibration samples kept).
    seed
        Seed of the reservoir and of the position / element subsampling (deterministic builds).
    """

    def __init__(self, consumers: dict[str, list[Consumer]], n_samples: int = SEARCH_SAMPLES, seed: int = 0):
        self.consumers = consumers
        self.n_samples = int(n_samples)
        self._rng = np.random.default_rng(seed)
        self._slot: int | None = None
        self._seen = 0
        self.rows: dict[str, list[list[np.ndarray | None]]] = {
            p: [[None] * self.n_samples for _ in cs] for p, cs in consumers.items()
        }

    def next_sample(self) -> None:
        """Start a new calibration sample: decide its reservoir slot (``None``: not kept)."""
        i = self._seen
        self._seen += 1
        if i < self.n_samples:
            self._slot = i
        else:
            j = int(self._rng.integers(0, i + 1))
            self._slot = j if j < self.n_samples else None

    def update(self, point: str, x: np.ndarray) -> None:
        """Offer the current sample's value of ``point``."""
        if self._slot is None or point not in self.consumers:
            return
        for k, c in enumerate(self.consumers[point]):
            self.rows[point][k][self._slot] = consumer_rows(x, c, self._rng)

    def inputs(self, point: str) -> list[np.ndarray]:
        """Per consumer of ``point``, its kept input rows concatenated over the kept samples."""
        return [np.concatenate([r for r in rs if r is not None], axis=0) for rs in self.rows.get(point, [])
                if any(r is not None for r in rs)]


# --------------------------------------------------------------------------------------------------------
# the choice
# --------------------------------------------------------------------------------------------------------


def _fake_quant(x: np.ndarray, alpha: float, beta: float, kind: RangeKind) -> np.ndarray:
    qp = choose_qparams(alpha, beta, kind, "int8")
    q = np.clip(np.rint(x / np.float32(qp.scale)) + qp.zero_point, -128, 127)
    return ((q - qp.zero_point) * np.float32(qp.scale)).astype(np.float32)


def _linear(p: np.ndarray, w: np.ndarray, c: Consumer) -> np.ndarray:
    if c.kind == "dense":
        return p @ w
    if w.shape[1] == 1:  # depthwise (one output per group)
        return np.einsum("ngk,gk->ng", p, w[:, 0, :])
    if w.shape[0] == 1:
        return p[:, 0, :] @ w[0].T
    return np.einsum("ngk,gok->ngo", p, w)


def consumer_errors(rows: list[np.ndarray], consumers: list[Consumer], ranges: dict[str, tuple[float, float]],
                    kind: RangeKind) -> dict[str, float]:
    """Sum over consumers of the relative squared output error, per candidate range.

    Parameters
    ----------
    rows
        Per consumer, its sampled inputs (:meth:`OutputSampler.inputs`).
    consumers
        The consumers, same order.
    ranges
        Candidate ``name -> (alpha, beta)``.
    kind
        Range kind (the grid the candidates are quantized on).

    Returns
    -------
    dict
        ``name -> sum_c ||y_c(Q(x)) - y_c(x)||^2 / ||y_c(x)||^2`` (``y_c(x) = x`` for tensor consumers; the
        quantized weights in the quantized path).
    """
    def consume(c: Consumer, x: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        if c.kind in ("conv", "dense"):
            return _linear(x, weight, c)
        return c.fn(x) if c.kind in ("lut", "rows") else x

    err = dict.fromkeys(ranges, 0.0)
    for p, c in zip(rows, consumers, strict=True):
        ref = consume(c, p, c.weight)
        energy = float(np.sum(np.square(ref, dtype=np.float64)))
        energy = energy if energy > 0 else 1.0
        for name, (a, b) in ranges.items():
            out = consume(c, _fake_quant(p, a, b, kind), c.qweight)
            err[name] += float(np.sum(np.square(out - ref, dtype=np.float64))) / energy
    return err


def choose_candidate(rows: list[np.ndarray], consumers: list[Consumer], ranges: dict[str, tuple[float, float]],
                     kind: RangeKind) -> tuple[str, dict[str, float]]:
    """The candidate with the smallest output error (:func:`consumer_errors`) and all errors.

    Candidates whose ranges coincide (within 0.1 % of the width) are evaluated once, under the first name.
    """
    uniq: dict[str, tuple[float, float]] = {}
    for name in sorted(ranges, key=lambda n: CANDIDATE_ORDER.index(n) if n in CANDIDATE_ORDER else 99):
        a, b = ranges[name]
        tol = 1e-3 * (b - a)
        if not any(abs(a - a2) <= tol and abs(b - b2) <= tol for a2, b2 in uniq.values()):
            uniq[name] = (a, b)
    err = consumer_errors(rows, consumers, uniq, kind)
    best = min(err, key=lambda n: (err[n], CANDIDATE_ORDER.index(n) if n in CANDIDATE_ORDER else 99))
    return best, err
