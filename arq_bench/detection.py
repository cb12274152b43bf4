"""YOLOX-Tiny (ddddocr's character detector): letterbox, output decoding, NMS, COCO-style AP, data.

:func:`yolox_detection_set` is a deterministic labelled-by-construction detection set (glyphs pasted on
natural photos); :func:`yolox_decode` decodes the raw output (grid strides 8/16/32, NMS);
:func:`average_precision`, :func:`ap50` and :func:`ap50_95` score detections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import assets

__all__ = [
    "DETECTION_GLYPHS",
    "Detections",
    "box_iou",
    "ap50",
    "ap50_95",
    "average_precision",
    "letterbox",
    "nms",
    "yolox_decode",
    "yolox_detect",
    "yolox_detection_set",
]


# ==================================================================================================
# YOLOX-Tiny (ddddocr's character detector): decoding, NMS and COCO-style AP
# ==================================================================================================
#: YOLOX-Tiny input side and the output strides of its three heads (52^2 + 26^2 + 13^2 = 3549 anchors).
YOLOX_SIZE = 416
YOLOX_STRIDES: tuple[int, ...] = (8, 16, 32)
#: Letterbox padding value of YOLOX preprocessing.
YOLOX_PAD_VALUE = 114.0


@dataclass
class Detections:
    """Boxes of one image.

    Attributes
    ----------
    boxes
        ``(K, 4)`` float32 ``x1, y1, x2, y2`` in input pixels.
    scores
        ``(K,)`` float32 confidence (ground truth: ones).
    labels
        ``(K,)`` int64 class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> Detections:
        """No boxes."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` ``x1, y1, x2, y2`` boxes (continuous areas, as COCO).

    Returns
    -------
    numpy.ndarray
        ``(N, M)`` float64.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Parameters
    ----------
    boxes
        ``(K, 4)`` ``x1, y1, x2, y2``.
    scores
        ``(K,)``.
    iou_threshold
        A box is dropped when its IoU with a kept, higher-scoring box exceeds this.

    Returns
    -------
    numpy.ndarray
        Indices of the kept boxes, by decreasing score.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        iou = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


@lru_cache(maxsize=4)
def _yolox_grid(size: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    grids, scale = [], []
    for s in strides:
        n = size // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xv.ravel(), yv.ravel()], 1))
        scale.append(np.full((n * n, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(scale).astype(np.float32)


def yolox_decode(
    output: np.ndarray,
    size: int = YOLOX_SIZE,
    score_threshold: float = 0.1,
    nms_threshold: float = 0.45,
    max_detections: int = 100,
    strides: Sequence[int] = YOLOX_STRIDES,
) -> Detections:
    """Decode one raw YOLOX head output into boxes (class-agnostic NMS, as ddddocr does).

    Each row of the output is ``(x, y, w, h, objectness, class scores...)`` with ``x, y`` offsets in
    grid cells and ``w, h`` log sizes; objectness and class scores are already sigmoid-activated. Box
    centre ``= (xy + grid) * stride``, size ``= exp(wh) * stride``; score ``= objectness * class score``.

    Parameters
    ----------
    output
        ``(1, A, 5 + C)`` or ``(A, 5 + C)``; ``A = sum((size // s) ** 2 for s in strides)``.
    size
        Square network input side.
    score_threshold, nms_threshold
        Keep boxes scoring above ``score_threshold``; NMS at ``nms_threshold`` IoU.
    max_detections
        Keep at most this many boxes (highest scores), as COCO evaluation does.
    strides
        Head strides.

    Returns
    -------
    Detections
        Boxes in network-input (letterboxed) pixels.
    """
    pred = np.asarray(output, dtype=np.float32)
    if pred.ndim == 3:
        if pred.shape[0] != 1:
            raise ValueError(f"decode one image at a time, got batch {pred.shape[0]}")
        pred = pred[0]
    grid, stride = _yolox_grid(int(size), tuple(int(s) for s in strides))
    if pred.shape[0] != grid.shape[0]:
        raise ValueError(f"output has {pred.shape[0]} rows, {grid.shape[0]} expected for size {size}")
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(np.clip(pred[:, 2:4], -20.0, 20.0)) * stride
    cls_scores = pred[:, 4:5] * pred[:, 5:]
    labels = cls_scores.argmax(1)
    scores = cls_scores[np.arange(len(labels)), labels]
    mask = scores > score_threshold
    if not mask.any():
        return Detections.empty()
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[mask]
    scores, labels = scores[mask], labels[mask]
    keep = nms(boxes, scores, nms_threshold)[:max_detections]
    return Detections(
        boxes[keep].astype(np.float32), scores[keep].astype(np.float32), labels[keep].astype(np.int64)
    )


def average_precision(
    detections: Sequence[Detections], targets: Sequence[Detections], iou_threshold: float = 0.5
) -> float:
    """COCO-style average precision at one IoU threshold, averaged over the classes present.

    Per class, detections of all images are sorted by score (stable); each is matched to the
    not-yet-matched ground-truth box of its image with the highest IoU, if that IoU is ``>= iou_threshold``
    (true positive), else it is a false positive. AP is the area under the precision envelope (precision
    made non-increasing in recall) sampled at the 101 recall points 0, 0.01, ..., 1, as COCO does.

    Parameters
    ----------
    detections, targets
        One :class:`Detections` per image (targets' scores are ignored).
    iou_threshold
        Matching threshold.

    Returns
    -------
    float
        AP in [0, 1]; ``nan`` when there is no ground truth at all.
    """
    if len(detections) != len(targets):
        raise ValueError(f"{len(detections)} detection sets for {len(targets)} images")
    classes = sorted({int(c) for t in targets for c in t.labels})
    if not classes:
        return float("nan")
    recall_points = np.linspace(0.0, 1.0, 101)
    aps = []
    for c in classes:
        n_gt = 0
        records: list[tuple[float, int, int]] = []  # (score, image, detection index)
        gts = []
        for i, (d, t) in enumerate(zip(detections, targets, strict=True)):
            g = t.boxes[t.labels == c]
            gts.append(g)
            n_gt += len(g)
            sel = np.flatnonzero(d.labels == c)
            records.extend((float(d.scores[j]), i, int(j)) for j in sel)
        order = sorted(range(len(records)), key=lambda k: -records[k][0])
        matched = [np.zeros(len(g), bool) for g in gts]
        tp = np.zeros(len(records))
        for rank, k in enumerate(order):
            _, i, j = records[k]
            g = gts[i]
            if len(g) == 0:
                continue
            iou = box_iou(detections[i].boxes[j : j + 1], g)[0]
            iou[matched[i]] = -1.0
            best = int(iou.argmax())
            if iou[best] >= iou_threshold:
                matched[i][best] = True
                tp[rank] = 1.0
        ctp = np.cumsum(tp)
        recall = ctp / max(n_gt, 1)
        precision = ctp / np.arange(1, len(tp) + 1) if len(tp) else np.zeros(0)
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        idx = np.searchsorted(recall, recall_points, side="left")
        sampled = np.array([envelope[k] if k < len(envelope) else 0.0 for k in idx])
        aps.append(float(sampled.mean()))
    return float(np.mean(aps))


def ap50(detections: Sequence[Detections], targets: Sequence[Detections]) -> float:
    """COCO AP at IoU 0.5 (see :func:`average_precision`)."""
    return average_precision(detections, targets, 0.5)


def ap50_95(detections: Sequence[Detections], targets: Sequence[Detections]) -> float:
    """COCO AP averaged over IoU thresholds 0.50, 0.55, ..., 0.95 (see :func:`average_precision`)."""
    return float(np.mean([average_precision(detections, targets, t) for t in np.linspace(0.5, 0.95, 10)]))


# ------------------------------------------------------------------------------ YOLOX detection set
#: Glyphs pasted by :func:`yolox_detection_set`: dense, square-ish characters that the captcha-character
#: detector finds reliably (present in every bold DejaVu face).
DETECTION_GLYPHS = "ЖБЯДФ#&"
#: Canvas aspect ratios (width / height) before letterboxing.
_DETECTION_ASPECTS = (1.0, 4 / 3, 3 / 2, 2.0, 3 / 4)


def letterbox(
    image: np.ndarray, size: int = YOLOX_SIZE, pad_value: float = YOLOX_PAD_VALUE
) -> tuple[np.ndarray, float]:
    """YOLOX letterbox: scale the longer side to ``size`` (bilinear), pad bottom / right with ``pad_value``.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8 image (channel order is kept).
    size
        Square output side.
    pad_value
        Fill value of the padding.

    Returns
    -------
    image : numpy.ndarray
        ``(3, size, size)`` float32 (CHW), values 0..255.
    ratio : float
        Scale applied to the image (divide boxes by it to map back).
    """
    from PIL import Image

    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.BILINEAR))
    out = np.full((size, size, 3), pad_value, np.float32)
    out[:nh, :nw] = resized
    return np.ascontiguousarray(out.transpose(2, 0, 1)), r


def _detection_sample(
    rng: np.random.Generator, photos: Sequence[Path], fonts: Sequence[Path], size: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """One letterboxed BGR image (3, size, size) and its glyph boxes (K, 4) in input pixels."""
    from PIL import Image, ImageDraw

    from .datasets import _font, _load_rgb

    aspect = float(_DETECTION_ASPECTS[int(rng.integers(len(_DETECTION_ASPECTS)))])
    w, h = (size, round(size / aspect)) if aspect >= 1 else (round(size * aspect), size)
    photo = _load_rgb(photos[int(rng.integers(len(photos)))])
    pw, ph = photo.size
    side = rng.uniform(0.3, 1.0)
    cw = max(8, min(pw, round(min(pw, ph * aspect) * side)))
    ch = max(8, min(ph, round(cw / aspect)))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    canvas = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    boxes: list[np.ndarray] = []
    gap = 8
    for _ in range(int(rng.integers(2, max_objects + 1))):
        for _attempt in range(40):
            glyph = DETECTION_GLYPHS[int(rng.integers(len(DETECTION_GLYPHS)))]
            font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(36, 64)))
            stroke = int(rng.integers(0, 3))
            angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(15.0, 45.0))
            left, top, right, bottom = font.getbbox(glyph, stroke_width=stroke)
            mask = Image.new("L", (right - left + 8, bottom - top + 8), 0)
            ImageDraw.Draw(mask).text((4 - left, 4 - top), glyph, font=font, fill=255, stroke_width=stroke)
            mask = mask.rotate(angle, resample=Image.BILINEAR, expand=True)
            bbox = mask.getbbox()
            if bbox is None:
                continue
            mask = mask.crop(bbox)
            gw, gh = mask.size
            if gw + 2 >= w or gh + 2 >= h:
                continue
            px, py = int(rng.integers(1, w - gw)), int(rng.integers(1, h - gh))
            box = np.array([px, py, px + gw, py + gh], np.float64)
            if any(
                box[0] < o[2] + gap and box[2] > o[0] - gap and box[1] < o[3] + gap and box[3] > o[1] - gap
                for o in boxes
            ):
                continue
            region = np.asarray(canvas.crop((px, py, px + gw, py + gh)).convert("L"), np.float32).mean()
            lo, hi = (0, 80) if region > 128 else (180, 256)
            color = tuple(int(v) for v in rng.integers(lo, hi, size=3))
            canvas.paste(Image.new("RGB", mask.size, color), (px, py), mask)
            boxes.append(box)
            break
    img = np.asarray(canvas, np.float32)[:, :, ::-1]  # RGB -> BGR, as the detector reads with OpenCV
    out = np.full((size, size, 3), YOLOX_PAD_VALUE, np.float32)
    out[:h, :w] = img
    # the tight glyph box, widened by one pixel on every side (a detector's boxes enclose the strokes)
    arr = np.asarray(boxes, np.float32).reshape(-1, 4) + np.array([-1, -1, 1, 1], np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1)), arr


def yolox_detection_set(
    n: int,
    seed: int = 0,
    size: int = YOLOX_SIZE,
    max_objects: int = 6,
    photos: Sequence[Path] | None = None,
    split: str = "all",
) -> tuple[np.ndarray, list[Detections]]:
    """Deterministic detection set for ddddocr's YOLOX-Tiny character detector, labelled by construction.

    ddddocr's ``common_det.onnx`` finds the characters of click captchas (one class). Each sample is a crop
    of a natural photo (random aspect ratio, letterboxed as YOLOX does: the canvas sits top-left in a
    ``size x size`` field padded with 114) on which 2..``max_objects`` glyphs (:data:`DETECTION_GLYPHS`,
    bold DejaVu faces, 36-63 px, rotated 15-45 degrees either way, some with thicker strokes, dark on
    light regions and light on dark ones) are pasted at non-overlapping positions. The boxes are the
    glyphs' exact pixel extents plus one pixel on each side.

    Parameters
    ----------
    n
        Number of images; sample ``i`` depends only on ``(seed, i)`` (and the photo list).
    seed
        Random seed.
    size
        Network input side.
    max_objects
        Most glyphs per image.
    photos
        Background photos (default :func:`arq_bench.assets.natural_photos`).
    split
        ``"all"``, or ``"calib"`` / ``"eval"`` to draw backgrounds only from photos outside / inside
        :data:`arq_bench.datasets.EVAL_PHOTOS` (disjoint calibration and evaluation backgrounds).

    Returns
    -------
    images : numpy.ndarray
        ``(n, 3, size, size)`` float32, BGR, 0..255 (the detector's input).
    targets : list of Detections
        Per image: boxes ``(K, 4)`` in input pixels, scores 1, labels 0.
    """
    from .datasets import EVAL_PHOTOS, dejavu_fonts

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in ("all", "calib", "eval"):
        raise ValueError(f"split must be 'all', 'calib' or 'eval', got {split!r}")
    pool = sorted(assets.natural_photos() if photos is None else photos, key=lambda p: (p.stem, str(p)))
    if split == "eval":
        pool = [p for p in pool if p.stem in EVAL_PHOTOS]
    elif split == "calib":
        pool = [p for p in pool if p.stem not in EVAL_PHOTOS]
    if not pool:
        raise RuntimeError(f"no background photos for split={split!r}")
    fonts = [f for f in dejavu_fonts() if "Bold" in f.stem]
    images = np.empty((n, 3, size, size), np.float32)
    targets = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 7919])
        images[i], boxes = _detection_sample(rng, pool, fonts, size, max_objects)
        k = len(boxes)
        targets.append(Detections(boxes, np.ones(k, np.float32), np.zeros(k, np.int64)))
    return images, targets


def yolox_detect(
    run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, progress: bool = False, **decode_kw: Any
) -> list[Detections]:
    """Run a detector callable image by image and decode each output with :func:`yolox_decode`.

    Parameters
    ----------
    run
        Maps a ``(1, 3, S, S)`` float32 batch to the raw ``(1, A, 6)`` output.
    images
        ``(N, 3, S, S)``.
    progress
        Show a tqdm bar.
    **decode_kw
        Passed to :func:`yolox_decode` (defaults: score threshold 0.01 for AP, NMS 0.45).

    Returns
    -------
    list of Detections
    """
    from tqdm import tqdm

    decode_kw.setdefault("score_threshold", 0.01)
    decode_kw.setdefault("size", images.shape[-1])
    out = []
    for i in tqdm(range(len(images)), desc="detect", unit="img", disable=not progress, leave=False):
        out.append(yolox_decode(run(images[i : i + 1]), **decode_kw))
    return out
