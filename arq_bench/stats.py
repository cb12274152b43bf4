"""Confidence intervals for the accuracy benchmark: Wilson intervals for proportions, paired bootstrap
intervals for differences against fp32, and a bootstrap-ready form of COCO average precision.

The bootstrap resamples *images* (the unit that was sampled): for a proportion metric each image
contributes a 0/1 outcome; for detection AP each image contributes its detections, which are matched to
its ground truth once (:func:`match_detections`; greedy matching in score order only looks at the image's
own boxes, so the per-image matches stay valid in any resample) and the AP of a resample is recomputed
from those matches in vectorised numpy (:func:`ap_from_matches`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from arq_bench.detection import Detections, box_iou

__all__ = [
    "IOU_THRESHOLDS",
    "ImageMatches",
    "ap_from_matches",
    "bootstrap_interval",
    "match_detections",
    "paired_bootstrap",
    "wilson_interval",
]

#: COCO's AP50-95 thresholds.
IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))


def wilson_interval(k: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n`` (``(nan, nan)`` for ``n == 0``)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaNs ignored)."""
    s = np.asarray(samples, np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def paired_bootstrap(
    metric: Callable[[np.ndarray], tuple[float, float]], n: int, rounds: int = 1000, seed: int = 0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Bootstrap over ``n`` images of a metric evaluated on two builds of the same images.

    Parameters
    ----------
    metric
        ``metric(indices) -> (value_a, value_b)`` on the resampled image indices.
    n
        Number of images.
    rounds
        Bootstrap replicates.
    seed
        Random seed (the same seed gives the same resamples for every row, so rows stay comparable).

    Returns
    -------
    tuple
        ``((lo, hi) of value_a, (lo, hi) of value_a - value_b)``, 95 % percentile intervals.
    """
    rng = np.random.default_rng(seed)
    va, vd = np.empty(rounds), np.empty(rounds)
    for r in range(rounds):
        idx = rng.integers(0, n, n)
        a, b = metric(idx)
        va[r], vd[r] = a, a - b
    return bootstrap_interval(va), bootstrap_interval(vd)


@dataclass(frozen=True)
class ImageMatches:
    """One image's detections matched to its ground truth at every IoU threshold.

    Attributes
    ----------
    scores, labels
        ``(D,)`` detection scores and classes.
    tp
        ``(T, D)`` bool: detection ``d`` is a true positive at threshold ``t``.
    gt_labels
        ``(G,)`` ground-truth classes (for the per-class recall denominators).
    """

    scores: np.ndarray
    labels: np.ndarray
    tp: np.ndarray
    gt_labels: np.ndarray


def match_detections(
    det: Detections, gt: Detections, thresholds: Sequence[float] = IOU_THRESHOLDS
) -> ImageMatches:
    """Greedy COCO matching of one image (detections in descending score order, stable), per threshold.

    Identical to the matching inside :func:`arq_bench.detection.average_precision`, which visits all
    images' detections of a class in one global score order: a detection only competes with the
    detections of its own image for that image's boxes, so the global order reduces to the per-image one.
    """
    scores = np.asarray(det.scores, np.float64)
    labels = np.asarray(det.labels, np.int64)
    tp = np.zeros((len(thresholds), len(scores)), bool)
    order = np.argsort(-scores, kind="stable")
    for c in np.unique(labels):
        g = gt.boxes[gt.labels == c]
        if len(g) == 0:
            continue
        sel = [int(j) for j in order if labels[j] == c]
        iou_all = box_iou(det.boxes[sel], g)
        for ti, t in enumerate(thresholds):
            matched = np.zeros(len(g), bool)
            for row, j in enumerate(sel):
                iou = iou_all[row].copy()
                iou[matched] = -1.0
                best = int(iou.argmax())
                if iou[best] >= t:
                    matched[best] = True
                    tp[ti, j] = True
    return ImageMatches(scores, labels, tp, np.asarray(gt.labels, np.int64))


def ap_from_matches(matches: Sequence[ImageMatches], indices: Sequence[int] | None = None) -> np.ndarray:
    """COCO AP per IoU threshold (averaged over the classes present) of the images ``indices``.

    Same definition as :func:`arq_bench.detection.average_precision` (101-point interpolated precision
    envelope); ``indices`` may repeat images (a bootstrap resample).

    Returns
    -------
    numpy.ndarray
        ``(T,)`` AP per threshold; ``AP50`` is element 0, ``AP50-95`` the mean.
    """
    idx = range(len(matches)) if indices is None else indices
    ms = [matches[i] for i in idx]
    n_thr = ms[0].tp.shape[0] if ms else len(IOU_THRESHOLDS)
    gt_labels = np.concatenate([m.gt_labels for m in ms]) if ms else np.zeros(0, np.int64)
    classes = np.unique(gt_labels)
    if len(classes) == 0:
        return np.full(n_thr, np.nan)
    scores = np.concatenate([m.scores for m in ms])
    labels = np.concatenate([m.labels for m in ms])
    tp = np.concatenate([m.tp for m in ms], axis=1)
    recall_points = np.linspace(0.0, 1.0, 101)
    out = np.zeros((len(classes), n_thr))
    for ci, c in enumerate(classes):
        n_gt = int((gt_labels == c).sum())
        sel = np.flatnonzero(labels == c)
        if len(sel) == 0:
            continue
        order = sel[np.argsort(-scores[sel], kind="stable")]
        ctp = np.cumsum(tp[:, order], axis=1)
        recall = ctp / n_gt
        precision = ctp / np.arange(1, len(order) + 1)
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        for t in range(n_thr):
            k = np.searchsorted(recall[t], recall_points, side="left")
            ok = k < envelope.shape[1]
            out[ci, t] = np.where(ok, envelope[t, np.minimum(k, envelope.shape[1] - 1)], 0.0).mean()
    return out.mean(axis=0)
