"""Export compiled models for a target board: the library and what is needed to run it later.

Linking (host compiler or the target backend's cross toolchain) is :mod:`tvm_arq.backends.export`;
this module adds the model metadata written next to a library (:func:`save_model`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.export import ELF_MACHINE, ExportError, export_library, make_linker, read_elf_machine
from ..target import resolve_target

__all__ = [
    "ELF_MACHINE",
    "ExportError",
    "ModelMeta",
    "export_library",
    "load_model_meta",
    "make_linker",
    "meta_path",
    "read_elf_machine",
    "save_model",
]


# --------------------------------------------------------------------------------------------------
# a library plus what is needed to run it later (shapes, target)


@dataclass
class ModelMeta:
    """What :func:`save_model` records next to a library (``<library>.json``).

    Attributes
    ----------
    target
        The target triple the library was compiled for.
    input_specs
        ``(name, shape, dtype)`` of each input of ``main``.
    scheme
        Quantization scheme (``"hybrid"``, ``"symmetric"``, ``"asymmetric"``, ``"float"``).
    tuned
        Whether the kernels were autotuned.
    extra
        Anything else (e.g. the source model, the trial budget).
    """

    target: str
    input_specs: list[tuple[str, tuple[int, ...], str]]
    scheme: str = ""
    tuned: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def meta_path(library: str | os.PathLike[str]) -> Path:
    """``<library>.json``: where :func:`save_model` writes a library's :class:`ModelMeta`."""
    return Path(str(Path(library).expanduser())  + ".json")


def save_model(model: Any, path: str | os.PathLike[str], *, tuned: bool = False,
               extra: dict[str, Any] | None = None) -> Path:
    """Export a :class:`~tvm_arq.QuantizedModel`'s library and write its :class:`ModelMeta` next to it.

    Parameters
    ----------
    model
        A compiled model (``executable``, ``target``, ``ir``, ``scheme``).
    path
        Output library (``.so``, cross-linked for the target; or ``.tar``).
    tuned
        Recorded in the metadata.
    extra
        Recorded in the metadata.

    Returns
    -------
    pathlib.Path
        The library; the metadata is :func:`meta_path` of it.
    """
    out = model.export_library(path) if hasattr(model, "export_library") else export_library(
        model.executable, path, model.target)
    specs = []
    for p in model.ir["main"].params:
        specs.append((str(p.name), tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype)))
    scheme = getattr(model, "scheme", "")
    meta = ModelMeta(target=str(resolve_target(model.target).triple), input_specs=specs,
                     scheme=str(getattr(scheme, "value", scheme)), tuned=tuned, extra=dict(extra or {}))
    meta_path(out).write_text(json.dumps(asdict(meta), indent=1))
    return out


def load_model_meta(library: str | os.PathLike[str]) -> ModelMeta | None:
    """The :class:`ModelMeta` written by :func:`save_model` for ``library`` (``None`` if there is none).

    Raises
    ------
    ValueError
        If the metadata file exists but cannot be read.
    """
    path = meta_path(library)
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        specs = [(str(n), tuple(int(v) for v in shape), str(dt)) for n, shape, dt in d["input_specs"]]
        return ModelMeta(target=str(d["target"]), input_specs=specs, scheme=str(d.get("scheme", "")),
                         tuned=bool(d.get("tuned", False)), extra=dict(d.get("extra", {})))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unreadable model metadata ({err})") from err
