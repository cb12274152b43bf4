"""Loading an ONNX model (path, bytes or ``ModelProto``) and checking that it is structurally sound."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import onnx
from onnx import numpy_helper

from .graph import DEFAULT_DOMAINS

__all__ = ["FrontendError", "ModelLike", "QDQError", "load_onnx"]

ModelLike = str | os.PathLike | bytes | onnx.ModelProto


class FrontendError(ValueError):
    """The model cannot be loaded, simplified or imported into TVM."""


class QDQError(FrontendError):
    """A pre-quantized model that cannot be compiled exactly (the message names the node)."""


def _describe(model: ModelLike) -> str:
    if isinstance(model, str | os.PathLike):
        return f"'{os.fspath(model)}'"
    if isinstance(model, bytes | bytearray):
        return f"<{len(model)} bytes>"
    return "<onnx.ModelProto>"


def load_onnx(model: ModelLike) -> tuple[onnx.ModelProto, str]:
    """Load an ONNX model and check that it is structurally valid.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        A path to a ``.onnx`` file, its serialized bytes, or a loaded model. A
        ``ModelProto`` is copied, never modified.

    Returns
    -------
    model : onnx.ModelProto
        A private copy of the model.
    name : str
        A human readable name of the source, for messages.

    Raises
    ------
    FileNotFoundError
        If ``model`` is a path that does not exist.
    FrontendError
        If the data is not a (complete) ONNX model.
    """
    name = _describe(model)
    hint = "re-export or re-download the model (the file may be truncated or not an ONNX model)"
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    elif isinstance(model, bytes | bytearray):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as err:  # protobuf DecodeError and friends
            raise FrontendError(f"cannot parse {name} as an ONNX model ({err}); {hint}") from err
    elif isinstance(model, str | os.PathLike):
        path = pathlib.Path(model)
        if path.is_dir():
            raise FileNotFoundError(f"{name} is a directory, not an ONNX file (give the .onnx file in it)")
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model file {name} does not exist")
        if path.stat().st_size == 0:
            raise FrontendError(f"ONNX model file {name} is empty; {hint}")
        try:
            proto = onnx.load(os.fspath(path))
        except Exception as err:
            raise FrontendError(f"cannot parse {name} as an ONNX model ({err}); {hint}") from err
    else:
        raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    problem = _structural_problem(proto)
    if problem is not None:
        raise FrontendError(f"{name} is not a valid ONNX model: {problem}; {hint}")
    return proto, name


def _structural_problem(model: onnx.ModelProto) -> str | None:
    """Return a description of what is structurally wrong with ``model``, or None."""
    if model.ir_version < 3:
        return f"missing or unsupported IR version ({model.ir_version})"
    if model.ir_version > onnx.IR_VERSION:
        return (f"IR version {model.ir_version} is newer than the installed onnx {onnx.__version__} "
                f"understands ({onnx.IR_VERSION})")
    opsets = [int(op.version) for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    newest = onnx.defs.onnx_opset_version()
    if not opsets and any(n.domain in DEFAULT_DOMAINS for n in model.graph.node):
        return "it declares no ONNX opset (opset_import has no entry for the default domain)"
    if opsets and not 1 <= max(opsets) <= newest:
        # ops of a future opset may have semantics no importer here knows: never import them silently
        return f"ONNX opset {max(opsets)} is not supported (the installed onnx {onnx.__version__} knows 1..{newest})"
    if not model.HasField("graph"):
        return "it has no graph"
    graph = model.graph
    if len(graph.node) == 0:
        return "its graph has no nodes"
    if len(graph.output) == 0:
        return "its graph has no outputs"
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    known |= {t.name for t in graph.sparse_initializer}
    known.add("")
    for t in graph.initializer:
        bad = _initializer_problem(t)
        if bad is not None:
            return f"initializer {t.name!r}: {bad}"
    for node in graph.node:
        for name in node.input:
            if name not in known:
                return f"node {node.name or node.op_type!r} ({node.op_type}) reads undefined tensor {name!r}"
        known.update(node.output)
    for out in graph.output:
        if out.name not in known:
            return f"graph output {out.name!r} is never produced"
    return None


def _initializer_problem(t: onnx.TensorProto) -> str | None:
    """Why the data of initializer ``t`` does not match its dims and type, or None."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None  # checked when the external data is read
    try:
        arr = numpy_helper.to_array(t)
    except Exception as err:  # noqa: BLE001 - numpy/onnx say what is wrong, we add the tensor's name
        return f"its data does not match its shape {list(t.dims)} ({err})"
    if list(arr.shape) != list(t.dims):
        return f"holds {arr.size} value(s), its shape {list(t.dims)} needs {int(np.prod(t.dims))}"
    return None
