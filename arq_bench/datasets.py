"""Deterministic data sets as numpy arrays, with each model's own preprocessing.

- :func:`text_direction_set`: text lines rendered at 0 deg or 180 deg for the PP-OCR direction classifier
  (labelled by construction).
- :func:`imagenet_samples` / :func:`imagenet_preprocess`: the 20 labelled ImageNet photos shipped in foolbox.
- :func:`photo_crops`: seeded random crops of natural photos (no labels: use agreement with fp32),
  split by *source photo* into disjoint calibration and evaluation sets.

Every generator is a pure function of its arguments: sample ``i`` of a set depends only on ``(seed, i)``,
so ``f(n=100)`` is the first 100 samples of ``f(n=200)``. Images come from pinned wheels through
:mod:`arq_bench.assets`; fonts are the DejaVu faces (Debian ``fonts-dejavu-core``, else matplotlib's copies,
else the ``dejavu_fonts`` asset).
"""

from __future__ import annotations

import enum
import importlib.util
import logging
import math
import re
import string
from collections.abc import Collection, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from . import assets

__all__ = [
    "EVAL_PHOTOS",
    "ImageNorm",
    "dejavu_fonts",
    "imagenet_preprocess",
    "imagenet_samples",
    "photo_crops",
    "ppocr_cls_preprocess",
    "text_direction_set",
    "text_recognition_set",
]

logger = logging.getLogger(__name__)

#: Debian ``fonts-dejavu-core`` location (installed by ``make apt``).
SYSTEM_DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")

#: Photo stems held out of calibration: :func:`photo_crops` with ``split="eval"`` uses only these,
#: ``split="calib"`` only the others. The second line are photos of the extended pool
#: (``assets.natural_photos(extended=True)``, Debian ``opencv-doc``); about half of it is held out.
EVAL_PHOTOS: frozenset[str] = frozenset({
    "chelsea", "coffee", "rocket", "flower", "grace_hopper", "moon",
    "HappyFish", "aero1", "apple", "baboon", "building", "butterfly", "fruits", "home", "messi5", "orange",
    "squirrel_cls",
})  # fmt: skip

_PPOCR_LABEL_ROTATION = (0, 180)  # class index -> degrees, PP-OCR's cls label_list ['0', '180']


# --------------------------------------------------------------------------------------------- fonts
@lru_cache(maxsize=1)
def dejavu_fonts() -> tuple[Path, ...]:
    """Return the DejaVu font files used for text rendering.

    The faces are :data:`arq_bench.assets.DEJAVU_FACES` (shipped by both Debian and matplotlib), looked up
    in Debian's ``fonts-dejavu-core`` folder, then in the installed matplotlib's ``mpl-data/fonts/ttf``,
    then in the ``dejavu_fonts`` asset (fetched from the matplotlib wheel).

    Returns
    -------
    tuple of pathlib.Path
        One path per face, in :data:`~arq_bench.assets.DEJAVU_FACES` order.
    """
    candidates = [SYSTEM_DEJAVU_DIR]
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    for folder in candidates:
        if all((folder / f).is_file() for f in assets.DEJAVU_FACES):
            return tuple(folder / f for f in assets.DEJAVU_FACES)
    folder = assets.fetch("dejavu_fonts")
    return tuple(folder / f for f in assets.DEJAVU_FACES)


@lru_cache(maxsize=256)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size=size)


@lru_cache(maxsize=64)
def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# ------------------------------------------------------------------------------- PP-OCR direction set
def ppocr_cls_preprocess(img: Image.Image, height: int = 48, width: int = 192) -> np.ndarray:
    """PP-OCR direction-classifier preprocessing of one text-line crop.

    Keeps the aspect ratio: the crop is resized to ``height`` rows and ``min(width, ceil(height * w / h))``
    columns (bilinear), converted to BGR (PaddleOCR reads images with OpenCV), scaled to [-1, 1] by
    ``(x / 255 - 0.5) / 0.5`` and zero-padded on the right up to ``width`` columns.

    Parameters
    ----------
    img
        RGB text-line crop.
    height, width
        Model input size.

    Returns
    -------
    numpy.ndarray
        ``(3, height, width)`` float32.
    """
    w, h = img.size
    resized_w = min(width, max(1, math.ceil(height * w / h)))
    arr = np.asarray(img.convert("RGB").resize((resized_w, height), Image.BILINEAR), dtype=np.float32)
    arr = arr[:, :, ::-1].transpose(2, 0, 1) / 255.0  # HWC RGB -> CHW BGR
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (arr - 0.5) / 0.5
    return out


_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiouy"


def _word(rng: np.random.Generator) -> str:
    kind = rng.choice(6, p=[0.5, 0.12, 0.12, 0.1, 0.08, 0.08])
    if kind == 0:  # pronounceable pseudo-word
        syl = [rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS)) for _ in range(rng.integers(1, 5))]
        w = "".join(syl)
        if rng.random() < 0.4:
            w += rng.choice(list(_CONSONANTS))
        case = rng.random()
        return w.capitalize() if case < 0.35 else w.upper() if case < 0.5 else w
    if kind == 1:  # integer
        return str(rng.integers(0, 10 ** rng.integers(2, 7)))
    if kind == 2:  # decimal / price
        return f"{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}" + ("" if rng.random() < 0.6 else "%")
    if kind == 3:  # date
        return f"{rng.integers(1990, 2031)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    if kind == 4:  # code like AB-1234
        letters = "".join(rng.choice(list(string.ascii_uppercase), size=rng.integers(2, 4)))
        return f"{letters}-{rng.integers(10, 10000)}"
    chars = string.ascii_letters + string.digits
    return "".join(rng.choice(list(chars), size=rng.integers(3, 9)))


def _text_line(rng: np.random.Generator) -> str:
    while True:
        words = [_word(rng) for _ in range(rng.integers(1, 5))]
        sep = " " if rng.random() < 0.85 else rng.choice([", ", " / ", ": ", " - "])
        text = sep.join(words)
        if rng.random() < 0.15:
            text += rng.choice([".", "!", "?", ":", ")"])
        if 4 <= len(text.replace(" ", "")) and len(text) <= 24:
            return text


def _luma(rgb: Sequence[float]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _random_color(rng: np.random.Generator, luma_range: tuple[float, float]) -> tuple[int, int, int]:
    for _ in range(100):
        r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
        if luma_range[0] <= _luma((r, g, b)) <= luma_range[1]:
            return (r, g, b)
    v = int(sum(luma_range) / 2)
    return (v, v, v)


def _background(
    rng: np.random.Generator, size: tuple[int, int], photos: Sequence[Path], photo_fraction: float
) -> tuple[Image.Image, float]:
    """Return a background of ``size`` (w, h) and its mean luma."""
    w, h = size
    r = rng.random()
    if photos and r < photo_fraction:
        photo = _load_rgb(photos[int(rng.integers(len(photos)))])
        pw, ph = photo.size
        ch = max(4, min(ph, round(rng.uniform(0.08, 0.5) * ph), round(pw * h / w)))
        cw = max(1, min(pw, round(ch * w / h)))
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        bg = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
        if rng.random() < 0.5:  # soften the photo so the text stays legible
            bg = bg.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
        # wash the photo towards a light or dark tone, as under printed or overlaid text
        tone = (235.0 if rng.random() < 0.6 else 20.0) if rng.random() < 0.8 else None
        if tone is not None:
            a = rng.uniform(0.3, 0.7)
            arr = np.asarray(bg, dtype=np.float32) * (1 - a) + tone * a
            bg = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    else:
        r = rng.random()
        bright = rng.random() < 0.7
        lo, hi = (150, 255) if bright else (0, 100)
        c0 = np.array(_random_color(rng, (lo, hi)), dtype=np.float32)
        if r < 0.55:  # solid
            arr = np.broadcast_to(c0, (h, w, 3)).copy()
        elif r < 0.8:  # linear gradient
            c1 = np.array(_random_color(rng, (lo, hi)), dtype=np.float32)
            t = np.linspace(0.0, 1.0, w if rng.random() < 0.7 else h, dtype=np.float32)
            t = t[None, :, None] if t.size == w else t[:, None, None]
            arr = np.broadcast_to(c0 + (c1 - c0) * t, (h, w, 3)).copy()
        else:  # paper-like noise
            arr = c0 + rng.normal(0.0, rng.uniform(4, 14), size=(h, w, 1)).astype(np.float32)
        bg = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return bg, float(np.asarray(bg.convert("L"), dtype=np.float32).mean())


def _render_text_line(
    rng: np.random.Generator, fonts: Sequence[Path], photos: Sequence[Path], photo_fraction: float
) -> Image.Image:
    """Render one upright text-line crop (RGB) the way a text detector would cut it out."""
    text = _text_line(rng)
    font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(22, 57)))
    stroke = int(rng.integers(1, 3)) if rng.random() < 0.15 else 0
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    tw, th = x1 - x0, y1 - y0
    size = font.size
    ml, mr = (int(v) for v in rng.integers(1, max(2, int(0.5 * size)), size=2))
    mt, mb = (int(v) for v in rng.integers(1, max(2, int(0.3 * size)), size=2))
    w, h = tw + ml + mr, th + mt + mb

    bg, bg_luma = _background(rng, (w, h), photos, photo_fraction)
    # text colour contrasting with the background
    fg = _random_color(rng, (0, 80)) if bg_luma >= 128 else _random_color(rng, (185, 255))
    stroke_fill = _random_color(rng, (185, 255)) if bg_luma >= 128 else _random_color(rng, (0, 80))
    draw = ImageDraw.Draw(bg)
    draw.text((ml - x0, mt - y0), text, font=font, fill=fg, stroke_width=stroke, stroke_fill=stroke_fill)

    if rng.random() < 0.3:  # slight skew of the detector box
        bg = bg.rotate(
            float(rng.uniform(-2.5, 2.5)),
            resample=Image.BILINEAR,
            expand=False,
            fillcolor=bg.getpixel((0, 0)),
        )
    if rng.random() < 0.25:
        bg = bg.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.3:
        arr = np.asarray(bg, dtype=np.float32) + rng.normal(0.0, rng.uniform(2, 8), size=(h, w, 3))
        bg = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return bg


def _rendered_lines(
    n: int, seed: int, photo_fraction: float, photos: Sequence[Path] | None
) -> Iterator[tuple[str, Image.Image]]:
    """The ``n`` upright text lines of ``seed`` and their text (line ``i`` depends only on ``(seed, i)``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fonts = dejavu_fonts()
    if photos is None:
        photos = assets.natural_photos() if photo_fraction > 0 else []
    photos = list(photos)
    for i in range(n):
        # the renderer draws the text first from the sample's generator: a fresh one gives the same text
        text = _text_line(np.random.default_rng([seed, i]))
        yield text, _render_text_line(np.random.default_rng([seed, i]), fonts, photos, photo_fraction)


def text_direction_set(
    n: int,
    seed: int = 0,
    height: int = 48,
    width: int = 192,
    photo_fraction: float = 0.25,
    photos: Sequence[Path] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Text lines rendered upright (label 0) or rotated 180 deg (label 1), preprocessed for PP-OCR cls.

    Lines are random pseudo-words, numbers, prices, dates and codes in the twelve DejaVu faces
    (sans / mono / serif x regular / bold / oblique), 22-56 px, with contrasting colours on solid,
    gradient, noisy or natural-photo backgrounds, cropped with detector-like margins and sometimes
    slightly skewed, blurred or noisy. Labels follow the model's classes (``label_list = ['0', '180']``).

    Parameters
    ----------
    n
        Number of samples; labels alternate 0, 1, 0, ... so the set is balanced (to within one).
    seed
        Sample ``i`` depends only on ``(seed, i)``.
    height, width
        Model input size (PP-OCR cls: 48 x 192).
    photo_fraction
        Probability that a line is drawn on a crop of a natural photo. Needs the photo assets
        (:func:`arq_bench.assets.natural_photos`) unless ``photos`` is given or this is 0.
    photos
        Background photos to use instead of :func:`arq_bench.assets.natural_photos`.

    Returns
    -------
    x : numpy.ndarray
        ``(n, 3, height, width)`` float32 in [-1, 1], BGR, zero-padded on the right.
    y : numpy.ndarray
        ``(n,)`` int64, 0 = upright, 1 = rotated 180 deg.
    """
    x = np.zeros((max(n, 0), 3, height, width), dtype=np.float32)
    y = (np.arange(max(n, 0)) % 2).astype(np.int64)
    for i, (_, img) in enumerate(_rendered_lines(n, seed, photo_fraction, photos)):
        if y[i] == 1:
            img = img.transpose(Image.Transpose.ROTATE_180)
        x[i] = ppocr_cls_preprocess(img, height, width)
    return x, y


def text_recognition_set(
    n: int, seed: int = 0, height: int = 48, width: int = 320, photo_fraction: float = 0.0,
    photos: Sequence[Path] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Upright text lines and their text, preprocessed for the PP-OCR recognizer (``ppocr_rec``).

    The lines of :func:`text_direction_set` (same renderer, fonts and backgrounds; sample ``i`` depends only
    on ``(seed, i)``), never rotated, resized to ``height`` rows keeping the aspect ratio (at most ``width``
    columns), scaled to [-1, 1] and zero-padded on the right -- PP-OCR's recognizer preprocessing, which is
    the classifier's with a wider canvas.

    Returns
    -------
    x : numpy.ndarray
        ``(n, 3, height, width)`` float32.
    labels : list of str
        The rendered text of each line.
    """
    x = np.zeros((max(n, 0), 3, height, width), dtype=np.float32)
    labels = []
    for i, (text, img) in enumerate(_rendered_lines(n, seed, photo_fraction, photos)):
        labels.append(text)
        x[i] = ppocr_cls_preprocess(img, height, width)
    return x, labels


# ------------------------------------------------------------------------------------------ ImageNet
class ImageNorm(str, enum.Enum):
    """Pixel normalisation after resizing, on RGB values in 0..255.

    - ``LITE``: ``(x - 127) / 128`` (EfficientNet-Lite, MobileNet TFLite style).
    - ``IMAGENET``: ``(x - 255 * mean) / (255 * std)`` with the usual ImageNet mean / std.
    - ``UNIT``: ``x / 255``.
    - ``RAW``: ``x`` unchanged (0..255 float).
    """

    LITE = "lite"
    IMAGENET = "imagenet"
    UNIT = "unit"
    RAW = "raw"


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGENET_NAME = re.compile(r"imagenet_(\d+)_(\d+)\.jpg$")


def imagenet_samples() -> list[tuple[Path, int]]:
    """Return the 20 labelled ImageNet photos of the ``imagenet_samples`` asset (foolbox 3.3.4).

    Returns
    -------
    list of (pathlib.Path, int)
        ``(file, ImageNet-1k class index)`` ordered by the file's sample number; the label is parsed from
        the name ``imagenet_XX_<label>.jpg``.
    """
    folder = assets.fetch("imagenet_samples")
    out = []
    for p in folder.iterdir():
        m = _IMAGENET_NAME.search(p.name)
        if m:
            out.append((int(m.group(1)), p, int(m.group(2))))
    return [(p, label) for _, p, label in sorted(out)]


def imagenet_preprocess(
    img: Image.Image | Path | str | np.ndarray,
    size: int = 224,
    norm: ImageNorm | str = ImageNorm.LITE,
    crop_fraction: float = 0.875,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Classification preprocessing: resize the short side, centre-crop, normalise, CHW.

    The short side is resized (bicubic) to ``round(size / crop_fraction)``, the centre ``size x size``
    is cropped and normalised.

    Parameters
    ----------
    img
        RGB image: a PIL image, a file path, or an ``(H, W, 3)`` uint8 array.
    size
        Output side.
    norm
        See :class:`ImageNorm`; ignored when ``mean`` and ``std`` are given.
    crop_fraction
        Centre-crop fraction (0.875 is the usual 224 / 256); 1.0 resizes the short side to ``size``.
    mean, std
        Explicit per-channel values in 0..255 units: ``(x - mean) / std``.

    Returns
    -------
    numpy.ndarray
        ``(3, size, size)`` float32, RGB.
    """
    if isinstance(img, (str, Path)):
        img = _load_rgb(Path(img))
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    img = img.convert("RGB")
    w, h = img.size
    short = max(size, round(size / crop_fraction))
    nw, nh = (
        (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
    )
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else (0.0, 0.0, 0.0), dtype=np.float32)
        s = np.asarray(std if std is not None else (1.0, 1.0, 1.0), dtype=np.float32)
        arr = (arr - m) / s
    else:
        norm = ImageNorm(norm)
        if norm is ImageNorm.LITE:
            arr = (arr - 127.0) / 128.0
        elif norm is ImageNorm.IMAGENET:
            arr = (arr - 255.0 * np.asarray(_IMAGENET_MEAN, np.float32)) / (
                255.0 * np.asarray(_IMAGENET_STD, np.float32)
            )
        elif norm is ImageNorm.UNIT:
            arr = arr / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


# -------------------------------------------------------------------------------------- photo crops
def photo_crops(
    n: int,
    size: int | tuple[int, int] = 224,
    seed: int = 0,
    split: str = "all",
    exclude: Collection[str] = (),
    photos: Sequence[Path] | None = None,
    min_scale: float = 0.2,
) -> np.ndarray:
    """Deterministic random crops of natural photos, resized, as uint8 RGB (no labels).

    Calibration and evaluation sets are made disjoint **by source photo**: ``split="eval"`` draws only from
    the photos whose stem is in :data:`EVAL_PHOTOS`, ``split="calib"`` only from the others, so no pixel
    of an evaluation crop was seen during calibration. (Different seeds over the same photos would overlap
    in content, so they are not used for the split.) Photos are visited round-robin in a seeded order,
    so every source photo contributes about ``n / len(photos)`` crops.

    Parameters
    ----------
    n
        Number of crops; crop ``i`` depends only on ``(seed, i)`` and the photo list.
    size
        Output side, or ``(height, width)``.
    seed
        Random seed.
    split
        ``"all"``, ``"calib"`` or ``"eval"`` (see above).
    exclude
        Further photo stems (e.g. ``"astronaut"``) to leave out.
    photos
        Photo files to draw from instead of :func:`arq_bench.assets.natural_photos`.
    min_scale
        Smallest crop side as a fraction of the photo's shorter side (the largest is 1).

    Returns
    -------
    numpy.ndarray
        ``(n, height, width, 3)`` uint8 RGB; apply the model's own preprocessing afterwards.
    """
    if split not in ("all", "calib", "eval"):
        raise ValueError(f"split must be 'all', 'calib' or 'eval', got {split!r}")
    oh, ow = (size, size) if isinstance(size, int) else size
    pool = sorted(assets.natural_photos() if photos is None else photos, key=lambda p: (p.stem, str(p)))
    if split == "eval":
        pool = [p for p in pool if p.stem in EVAL_PHOTOS]
    elif split == "calib":
        pool = [p for p in pool if p.stem not in EVAL_PHOTOS]
    pool = [p for p in pool if p.stem not in set(exclude)]
    if not pool:
        raise RuntimeError(f"no natural photos left for split={split!r}, exclude={sorted(exclude)!r}")
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(len(pool))
    out = np.empty((n, oh, ow, 3), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        photo = _load_rgb(pool[int(order[i % len(pool)])])
        pw, ph = photo.size
        aspect = (ow / oh) * math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        side = rng.uniform(min_scale, 1.0) * min(pw, ph)
        cw, ch = (
            min(pw, max(8, round(side * math.sqrt(aspect)))),
            min(ph, max(8, round(side / math.sqrt(aspect)))),
        )
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        crop = photo.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(crop.resize((ow, oh), Image.BICUBIC), dtype=np.uint8)
    return out
