"""Loading input samples and labels from files: ``.npy``, ``.npz`` or a folder of images.

Used by the command line (``--calibration``, ``--data``, ``--labels``, ``--input``) and usable on its own::

    from tvm_arq.samples import input_shape, load_samples, load_labels

    shape = input_shape(mod)                        # e.g. (1, 3, 224, 224)
    cal = load_samples("calib_images/", shape)      # list of (1, C, H, W) float32 arrays
    y = load_labels("labels.npy")                   # or an .npz with a ``y``/``labels`` array, or a .txt

Errors are :class:`FileNotFoundError` (missing path) or :class:`ValueError` (unreadable or mismatching
data), each with a one-line message naming the file.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "PixelRange", "input_shape", "load_labels", "load_samples", "npz_labels"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_SAMPLE_KEYS = ("x", "data", "inputs", "images", "samples")
_LABEL_KEYS = ("y", "labels", "label", "targets")


class PixelRange(str, enum.Enum):
    """How image pixels (0..255) are mapped to model inputs.

    - ``SIGNED``: ``x / 127.5 - 1`` in [-1, 1] (default).
    - ``UNIT``: ``x / 255`` in [0, 1].
    - ``RAW``: ``x`` unchanged in [0, 255].
    """

    SIGNED = "signed"
    UNIT = "unit"
    RAW = "raw"

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Map ``uint8``-valued pixels to this range (float32)."""
        x = pixels.astype(np.float32)
        if self is PixelRange.SIGNED:
            return x / 127.5 - 1.0
        if self is PixelRange.UNIT:
            return x / 255.0
        return x


def input_shape(mod: object) -> tuple[int, ...]:
    """Static shape of the first input of ``mod["main"]`` (a Relax module).

    Raises
    ------
    ValueError
        If the first input has a dynamic dimension.
    """
    param = mod["main"].params[0]  # type: ignore[index]
    try:
        return tuple(int(d) for d in param.ty.shape.values)
    except TypeError:
        raise ValueError(f"input {param.name!r} has a dynamic shape: pass --shape") from None


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    return p


def _split_batch(arr: np.ndarray, shape: Sequence[int], source: Path) -> list[np.ndarray]:
    """``N x shape[1:]`` (or ``N x shape``) -> N samples of ``shape``."""
    shape = tuple(shape)
    arr = np.asarray(arr)
    if arr.ndim == len(shape) and arr.shape[1:] == shape[1:]:
        samples = [arr[i:i + 1] for i in range(len(arr))]
    elif arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
        samples = [arr[i] for i in range(len(arr))]
    else:
        raise ValueError(f"{source}: samples of shape {arr.shape} do not match the model input {shape} "
                         f"(expected N x {shape[1:]})")
    if not samples:
        raise ValueError(f"{source}: holds no samples")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{source}: samples must be numbers, got dtype {arr.dtype}")
    return [np.ascontiguousarray(s, dtype=np.float32) if np.issubdtype(s.dtype, np.floating) else s
            for s in samples]


def _npz_array(path: Path, keys: Sequence[str], what: str, required: bool = True) -> np.ndarray | None:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    with data:
        for key in keys:
            if key in data.files:
                return data[key]
        if what == "samples" and data.files:
            first = [f for f in data.files if f not in _LABEL_KEYS]
            if first:
                return data[first[0]]
    if required:
        raise ValueError(f"{path}: no {what} array (looked for {', '.join(keys)})")
    return None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from err


def load_samples(
    path: str | Path,
    shape: Sequence[int],
    *,
    pixel_range: PixelRange | str = PixelRange.SIGNED,
    limit: int | None = None,
) -> list[np.ndarray]:
    """Model inputs from a file or a folder.

    Parameters
    ----------
    path
        An ``.npy`` array ``N x C x H x W`` (or ``N x 1 x C x H x W``); an ``.npz`` whose ``x``/``data``/
        ``inputs``/``images`` array (else its first non-label array) is that; or a folder of images
        (``.jpg``, ``.png``, ``.bmp``), resized to the input and converted to RGB or, for one channel,
        to grey, NCHW.
    shape
        The model input shape including the batch dimension (see :func:`input_shape`).
    pixel_range
        Mapping of image pixels (folders only), see :class:`PixelRange`.
    limit
        Keep at most this many samples (the first ones, in file / sorted name order).

    Returns
    -------
    list of numpy.ndarray
        Samples of ``shape``.
    """
    p = _existing(path)
    shape = tuple(int(d) for d in shape)
    if p.is_dir():
        out = _load_images(p, shape, PixelRange(pixel_range), limit)
    elif p.suffix == ".npy":
        out = _split_batch(_load_npy(p), shape, p)
    elif p.suffix == ".npz":
        arr = _npz_array(p, _SAMPLE_KEYS, "samples")
        assert arr is not None
        out = _split_batch(arr, shape, p)
    else:
        raise ValueError(f"{p}: samples must be an .npy, an .npz or a folder of images")
    if limit is not None:
        out = out[:limit]
    logger.info("loaded %d sample(s) of shape %s from %s", len(out), shape, p)
    return out


def _load_images(folder: Path, shape: tuple[int, ...], pixel_range: PixelRange, limit: int | None) -> list[np.ndarray]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise ImportError("loading a folder of images needs pillow: pip install 'tvm_arq[images]' "
                          "(or pass an .npy / .npz)") from e

    if len(shape) != 4 or shape[1] not in (1, 3):
        raise ValueError(f"{folder}: images need a 1- or 3-channel NCHW input, the model takes {shape}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    if limit is not None:
        files = files[:limit]
    mode = "L" if shape[1] == 1 else "RGB"
    out = []
    for f in files:
        try:
            with Image.open(f) as img:
                pixels = np.asarray(img.convert(mode).resize((shape[3], shape[2])))
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"{f}: not a readable image ({err})") from err
        chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        out.append(np.ascontiguousarray(pixel_range.apply(chw)[None]))
    return out


def load_labels(path: str | Path) -> np.ndarray:
    """Integer class labels from an ``.npy``, an ``.npz`` (``y``/``labels`` array) or a text file.

    A text file (``.txt``, ``.csv``) holds one integer per line (or separated by commas/spaces).

    Returns
    -------
    numpy.ndarray
        1-D ``int64`` labels.
    """
    p = _existing(path)
    if p.suffix == ".npy":
        arr = _load_npy(p)
    elif p.suffix == ".npz":
        arr = _npz_array(p, _LABEL_KEYS, "labels")
    else:
        try:
            arr = np.array(p.read_text().replace(",", " ").split(), dtype=np.int64)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{p}: labels must be integers, one per line ({err})") from err
    arr = np.asarray(arr)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        raise ValueError(f"{p}: labels must be a non-empty 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def npz_labels(path: str | Path) -> np.ndarray | None:
    """The labels stored next to the samples in an ``.npz`` (``y``/``labels``), or ``None``."""
    p = Path(path)
    if p.suffix != ".npz" or not p.is_file():
        return None
    arr = _npz_array(p, _LABEL_KEYS, "labels", required=False)
    return None if arr is None else np.asarray(arr).astype(np.int64).reshape(-1)
