"""Restricted, torch-free reader of PyTorch checkpoints (plain tensors -> numpy arrays).

:func:`load_torch_checkpoint` reads the legacy pickle format of ``torch.save(...,
_use_new_zipfile_serialization=False)`` and the zip format. Only a small allow-list of globals is
accepted, so a checkpoint cannot run code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "load_torch_checkpoint",
]


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
