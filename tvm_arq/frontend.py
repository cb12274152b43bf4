"""ONNX frontend: load, simplify and import float CNNs into Relax (TVM 0.27).

The pipeline is

1. :func:`load_onnx` reads a path, bytes or ``onnx.ModelProto`` and checks that it
   is a structurally sound ONNX model (truncated or foreign files raise
   :class:`FrontendError`).
2. :func:`simplify_onnx` fixes the input shapes and simplifies the ONNX graph with
   the project's own passes (no onnxruntime): shape inference, constant folding
   (including ``Shape``/``Size`` of statically shaped tensors) to a fixed point,
   ``Conv``+``BatchNormalization`` folding, standalone ``BatchNormalization`` to
   ``Mul``+``Add``, zero ``Pad`` folded into the following ``Conv``, and removal of
   ``Identity``/``Dropout``.
3. :func:`from_onnx` imports the simplified model with
   ``tvm.relax.frontend.onnx.from_onnx(..., keep_params_in_input=True)``, detaches
   the weights and canonicalizes ``Clip`` (which TVM 0.27 imports as ``call_tir``
   of TOPI ``maximum``/``minimum`` kernels) into ``R.clip``/``R.nn.relu``.

The returned module's ``main`` takes the data inputs first and then one parameter per
weight; :func:`bind_params` binds the weights back as constants.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import tvm
from onnx import helper, numpy_helper, shape_inference
from tvm import relax

logger = logging.getLogger(__name__)

__all__ = [
    "FrontendError",
    "MAX_FOLD_BYTES",
    "bind_params",
    "canonicalize_clip",
    "from_onnx",
    "load_onnx",
    "simplify_onnx",
]

ModelLike = str | os.PathLike | bytes | onnx.ModelProto
ShapeLike = Sequence[int] | Mapping[str, Sequence[int]] | None

#: Constant folding is skipped for a node if one of its outputs would exceed this size.
MAX_FOLD_BYTES = 64 * 1024 * 1024

_MAX_SIMPLIFY_ITERATIONS = 32

# Ops that must never be constant folded (non-deterministic or with side effects).
_NO_FOLD_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "If",
        "Loop",
        "Scan",
        "SequenceConstruct",
        "SequenceEmpty",
        "SplitToSequence",
        "Optional",
    }
)

_DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_TYPES = (np.float16, np.float32, np.float64)


class FrontendError(ValueError):
    """The model cannot be loaded, simplified or imported into TVM."""


# --------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------


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
    opsets = [int(op.version) for op in model.opset_import if op.domain in _DEFAULT_DOMAINS]
    newest = onnx.defs.onnx_opset_version()
    if not opsets and any(n.domain in _DEFAULT_DOMAINS for n in model.graph.node):
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
    for node in graph.node:
        for name in node.input:
            if name not in known:
                return f"node {node.name or node.op_type!r} ({node.op_type}) reads undefined tensor {name!r}"
        known.update(node.output)
    for out in graph.output:
        if out.name not in known:
            return f"graph output {out.name!r} is never produced"
    return None


# --------------------------------------------------------------------------------------
# small graph utilities
# --------------------------------------------------------------------------------------


class _Names:
    """Generator of tensor names that are unique within a graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used: set[str] = set()
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            self.used.add(vi.name)
        for t in graph.initializer:
            self.used.add(t.name)
        for node in _iter_nodes(graph):
            self.used.update(node.output)
            self.used.update(node.input)

    def fresh(self, base: str) -> str:
        base = base or "t"
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes of ``graph`` including those in subgraphs."""
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _iter_nodes(sub)


def _replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every node (also in subgraphs) that reads ``old`` read ``new``."""
    for node in _iter_nodes(graph):
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    cons: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        names = set(node.input)
        for sub in _subgraphs(node):
            names |= {n for sn in _iter_nodes(sub) for n in sn.input}
        for name in names:
            if name:
                cons.setdefault(name, []).append(node)
    return cons


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in _DEFAULT_DOMAINS:
            return int(op.version)
    return 1


def _dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    """Static dims of a tensor value info (None for unknown dims), None for unknown rank."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    out: list[int | None] = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)
    return out


def _dim_label(d: onnx.TensorShapeProto.Dimension) -> str:
    if d.HasField("dim_value") and d.dim_value > 0:
        return str(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        return d.dim_param
    return "?"


# --------------------------------------------------------------------------------------
# input shapes
# --------------------------------------------------------------------------------------


def _fix_input_shapes(model: onnx.ModelProto, shape: ShapeLike, name: str) -> dict[str, tuple[int, ...]]:
    """Replace dynamic input dims by static ones; return the data input shapes."""
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    # Initializers listed as graph inputs (old exporters) are constants for inference.
    if any(vi.name in init_names for vi in graph.input):
        data_inputs = [vi for vi in graph.input if vi.name not in init_names]
        del graph.input[:]
        graph.input.extend(data_inputs)
    data_inputs = list(graph.input)  # references into the graph (extend() copies)
    input_names = [vi.name for vi in data_inputs]
    if not input_names:
        raise FrontendError(f"{name} has no data inputs")

    if shape is None:
        given: dict[str, tuple[int, ...]] = {}
    elif isinstance(shape, Mapping):
        unknown = sorted(set(shape) - set(input_names))
        if unknown:
            raise FrontendError(
                f"shape= names unknown input(s) {unknown} of {name}; its inputs are {input_names}"
            )
        given = {k: tuple(int(d) for d in v) for k, v in shape.items()}
    else:
        if len(input_names) != 1:
            raise FrontendError(
                f"{name} has {len(input_names)} inputs {input_names}: pass shape= as a dict "
                "mapping input name to shape"
            )
        given = {input_names[0]: tuple(int(d) for d in shape)}

    result: dict[str, tuple[int, ...]] = {}
    for vi in data_inputs:
        tt = vi.type.tensor_type
        declared = _dims(vi)
        if vi.name in given:
            new = given[vi.name]
            if any(d <= 0 for d in new):
                raise FrontendError(f"shape {new} for input {vi.name!r} of {name} has non-positive dims")
            if declared is not None and len(declared) != len(new):
                raise FrontendError(
                    f"input {vi.name!r} of {name} has rank {len(declared)} "
                    f"({[_dim_label(d) for d in tt.shape.dim]}), but shape= gives {new}"
                )
            if declared is not None:
                for i, (a, b) in enumerate(zip(declared, new, strict=True)):
                    if a is not None and a != b:
                        logger.warning(
                            "input %r of %s: overriding static dim %d (%d) with %d", vi.name, name, i, a, b
                        )
        else:
            if declared is None:
                raise FrontendError(
                    f"input {vi.name!r} of {name} has an unknown shape; pass shape= "
                    f"(e.g. shape={{'{vi.name}': (1, 3, 224, 224)}})"
                )
            dynamic = [i for i, d in enumerate(declared) if d is None]
            if dynamic and dynamic != [0]:
                labels = [_dim_label(d) for d in tt.shape.dim]
                raise FrontendError(
                    f"input {vi.name!r} of {name} has dynamic dims {labels}; pass shape= with a static "
                    f"shape for it (e.g. shape={{'{vi.name}': {tuple(d or 1 for d in declared)}}})"
                )
            if dynamic == [0]:
                logger.warning(
                    "input %r of %s has a dynamic batch dim %r; using batch size 1 (pass shape= to change)",
                    vi.name,
                    name,
                    _dim_label(tt.shape.dim[0]),
                )
            new = tuple(d if d is not None else 1 for d in declared)
        tt.ClearField("shape")
        tt.shape.SetInParent()
        for d in new:
            tt.shape.dim.add().dim_value = d
        result[vi.name] = new
    return result


# --------------------------------------------------------------------------------------
# simplification passes
# --------------------------------------------------------------------------------------


class _Simplifier:
    """Iterative ONNX graph simplification (constants are kept in ``self.consts``)."""

    def __init__(self, model: onnx.ModelProto, name: str, max_fold_bytes: int) -> None:
        self.model = model
        self.name = name
        self.max_fold_bytes = max_fold_bytes
        self.opsets = {op.domain or "": int(op.version) for op in model.opset_import}
        self.opset = _default_opset(model)
        self.consts: dict[str, np.ndarray] = {}
        for t in model.graph.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        del model.graph.initializer[:]
        self.shapes: dict[str, list[int | None] | None] = {}
        self.elem_types: dict[str, int] = {}
        self.stats: dict[str, int] = {}
        self._output_types = {
            o.name: onnx.TypeProto.FromString(o.type.SerializeToString()) for o in model.graph.output
        }
        self._inferred_outputs: dict[str, onnx.ValueInfoProto] = {}

    # -- bookkeeping ---------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _write_initializers(self) -> None:
        """Store the constants as initializers, in order of first use."""
        graph = self.model.graph
        order: dict[str, None] = {}
        for node in _iter_nodes(graph):
            for i in node.input:
                if i in self.consts:
                    order.setdefault(i)
        for out in graph.output:
            if out.name in self.consts:
                order.setdefault(out.name)
        for k in self.consts:
            order.setdefault(k)
        del graph.initializer[:]
        graph.initializer.extend(numpy_helper.from_array(self.consts[k], k) for k in order)

    def _infer(self) -> None:
        """Run ONNX shape inference and record shapes and element types."""
        graph = self.model.graph
        del graph.value_info[:]
        # Output shapes declared by the exporter can be stale or contain -1; re-infer them.
        for out in graph.output:
            if out.type.HasField("tensor_type"):
                out.type.tensor_type.ClearField("shape")
        self._write_initializers()
        try:
            inferred = shape_inference.infer_shapes(
                self.model, check_type=False, strict_mode=False, data_prop=True
            )
        except Exception as err:  # inference is an optimization aid, never fatal
            logger.debug("shape inference failed on %s: %s", self.name, err)
            inferred = self.model
        del graph.initializer[:]
        self.shapes = {}
        self.elem_types = {}
        ig = inferred.graph
        for vi in list(ig.input) + list(ig.value_info) + list(ig.output):
            if vi.type.HasField("tensor_type"):
                self.shapes[vi.name] = _dims(vi)
                if vi.type.tensor_type.elem_type:
                    self.elem_types[vi.name] = vi.type.tensor_type.elem_type
        self._inferred_outputs = {o.name: o for o in ig.output}

    # -- passes ----------------------------------------------------------------------
    def remove_identities(self) -> bool:
        graph = self.model.graph
        out_names = {o.name for o in graph.output}
        input_names = {i.name for i in graph.input}
        keep: list[onnx.NodeProto] = []
        changed = False
        for node in list(graph.node):
            if node.op_type == "Dropout" and node.domain in _DEFAULT_DOMAINS:
                cons = _consumers(graph)
                mask_used = (
                    len(node.output) > 1
                    and node.output[1]
                    and (node.output[1] in cons or node.output[1] in out_names)
                )
                training = (
                    len(node.input) > 2
                    and node.input[2]
                    and not (
                        node.input[2] in self.consts
                        and not bool(np.asarray(self.consts[node.input[2]]).any())
                    )
                )
                if mask_used or training:
                    keep.append(node)
                    continue
            elif not (node.op_type == "Identity" and node.domain in _DEFAULT_DOMAINS):
                keep.append(node)
                continue
            src, dst = node.input[0], node.output[0]
            if dst not in out_names:
                _replace_uses(graph, dst, src)
            elif src not in out_names and src not in input_names and src not in self.consts:
                # dst is a graph output: rename src (a node output) to dst instead.
                for other in graph.node:
                    for i, o in enumerate(other.output):
                        if o == src:
                            other.output[i] = dst
                _replace_uses(graph, src, dst)
            else:
                keep.append(node)
                continue
            changed = True
            self._count(f"removed {node.op_type}")
        if changed:
            del graph.node[:]
            graph.node.extend(keep)
        return changed

    def _static_shape(self, name: str) -> list[int] | None:
        if name in self.consts:
            return list(self.consts[name].shape)
        dims = self.shapes.get(name)
        if dims is None or any(d is None for d in dims):
            return None
        return [int(d) for d in dims]  # type: ignore[arg-type]

    def _fold_node(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        """Evaluate ``node`` if it is foldable; return its outputs or None."""
        if node.domain not in _DEFAULT_DOMAINS or node.op_type in _NO_FOLD_OPS or _subgraphs(node):
            return None
        if any(not o for o in node.output):
            return None
        inputs = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size") and inputs and inputs[0] not in self.consts:
            dims = self._static_shape(inputs[0])
            if dims is None:
                return None
            if node.op_type == "Size":
                return [np.array(math.prod(dims), dtype=np.int64)]
            rank = len(dims)
            start = int(_attr(node, "start", 0))
            end = int(_attr(node, "end", rank))
            return [np.array(dims[start:end], dtype=np.int64)]
        if not inputs and node.op_type != "Constant":
            return None
        if any(i not in self.consts for i in inputs):
            return None
        # Skip nodes whose inferred outputs are known to be huge.
        for out in node.output:
            dims = self.shapes.get(out)
            etype = self.elem_types.get(out)
            if dims is not None and all(d is not None for d in dims) and etype:
                nbytes = math.prod(dims) * np.dtype(helper.tensor_dtype_to_np_dtype(etype)).itemsize
                if nbytes > self.max_fold_bytes:
                    return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from onnx.reference import ReferenceEvaluator

                ev = ReferenceEvaluator(node, opsets=dict(self.opsets) or {"": self.opset})
                feeds = {i: self.consts[i] for i in inputs}
                results = ev.run(None, feeds)
        except Exception as err:
            logger.debug("cannot fold %s node %r: %s", node.op_type, node.name, err)
            return None
        outs: list[np.ndarray] = []
        for out, val in zip(node.output, results, strict=False):
            if not isinstance(val, np.ndarray | np.generic):
                return None
            arr = np.asarray(val)
            if arr.dtype == object or arr.nbytes > self.max_fold_bytes:
                return None
            etype = self.elem_types.get(out)
            if etype:
                try:
                    want = np.dtype(helper.tensor_dtype_to_np_dtype(etype))
                except Exception:
                    want = arr.dtype
                if want != arr.dtype and want.kind in "biuf":
                    arr = arr.astype(want)
            outs.append(arr)
        if len(outs) != len(node.output):
            return None
        return outs

    def fold_constants(self) -> bool:
        graph = self.model.graph
        keep: list[onnx.NodeProto] = []
        folded = 0
        for node in graph.node:
            outs = self._fold_node(node)
            if outs is None:
                keep.append(node)
                continue
            for name, arr in zip(node.output, outs, strict=True):
                self.consts[name] = arr
            folded += 1
            self._count(f"folded {node.op_type}")
        if folded:
            del graph.node[:]
            graph.node.extend(keep)
        return folded > 0

    def _bn_params(self, bn: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-channel (scale, shift) of an inference BatchNormalization, or None."""
        if bn.domain not in _DEFAULT_DOMAINS or len(bn.input) < 5:
            return None
        if int(_attr(bn, "training_mode", 0)) != 0:
            return None
        if any(i not in self.consts for i in bn.input[1:5]):
            return None
        gamma, beta, mean, var = (self.consts[i].astype(np.float64) for i in bn.input[1:5])
        if not (gamma.ndim == beta.ndim == mean.ndim == var.ndim == 1):
            return None
        eps = float(_attr(bn, "epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        return scale, shift

    def fold_batchnorm(self) -> bool:
        graph = self.model.graph
        out_names = {o.name for o in graph.output}
        producers = {o: n for n in graph.node for o in n.output}
        cons = _consumers(graph)
        names = _Names(graph)
        names.used.update(self.consts)
        remove: set[int] = set()
        replace: dict[int, list[onnx.NodeProto]] = {}
        for bn in graph.node:
            if bn.op_type != "BatchNormalization":
                continue
            extra = [o for o in bn.output[1:] if o]
            if any(o in cons or o in out_names for o in extra):
                continue
            params = self._bn_params(bn)
            if params is None:
                continue
            scale, shift = params
            x = bn.input[0]
            conv = producers.get(x)
            if (
                conv is not None
                and conv.op_type == "Conv"
                and conv.domain in _DEFAULT_DOMAINS
                and x not in out_names
                and len(cons.get(x, [])) == 1
                and len(conv.input) >= 2
                and conv.input[1] in self.consts
                and (len(conv.input) < 3 or not conv.input[2] or conv.input[2] in self.consts)
                and self.consts[conv.input[1]].shape[0] == scale.shape[0]
            ):
                w = self.consts[conv.input[1]]
                has_b = len(conv.input) >= 3 and bool(conv.input[2])
                b = self.consts[conv.input[2]].astype(np.float64) if has_b else np.zeros(w.shape[0])
                new_w = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
                new_b = (b * scale + shift).astype(w.dtype)
                wname = names.fresh(f"{bn.output[0]}.weight")
                bname = names.fresh(f"{bn.output[0]}.bias")
                self.consts[wname] = new_w
                self.consts[bname] = new_b
                conv.input[1] = wname
                if len(conv.input) >= 3:
                    conv.input[2] = bname
                else:
                    conv.input.append(bname)
                conv.output[0] = bn.output[0]
                remove.add(id(bn))
                self._count("folded BatchNormalization into Conv")
                continue
            # Standalone BatchNormalization -> Mul + Add with per-channel constants.
            dims = self.shapes.get(x)
            if dims is None or len(dims) < 2 or dims[1] != scale.shape[0]:
                continue
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_types.get(x, onnx.TensorProto.FLOAT)))
            bshape = (-1,) + (1,) * (len(dims) - 2)
            sname = names.fresh(f"{bn.output[0]}.scale")
            tname = names.fresh(f"{bn.output[0]}.shift")
            mid = names.fresh(f"{bn.output[0]}.scaled")
            self.consts[sname] = scale.reshape(bshape).astype(dtype)
            self.consts[tname] = shift.reshape(bshape).astype(dtype)
            replace[id(bn)] = [
                helper.make_node("Mul", [x, sname], [mid], name=f"{bn.name}.mul" if bn.name else ""),
                helper.make_node(
                    "Add", [mid, tname], [bn.output[0]], name=f"{bn.name}.add" if bn.name else ""
                ),
            ]
            self._count("BatchNormalization to Mul+Add")
        if not remove and not replace:
            return False
        new_nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if id(node) in remove:
                continue
            new_nodes.extend(replace.get(id(node), [node]))
        del graph.node[:]
        graph.node.extend(new_nodes)
        return True

    def fold_add_into_conv_bias(self) -> bool:
        """Fold ``Add(Conv(x, W[, b]), c)`` with a per-channel or scalar constant ``c`` into the bias."""
        graph = self.model.graph
        out_names = {o.name for o in graph.output}
        producers = {o: n for n in graph.node for o in n.output}
        cons = _consumers(graph)
        names = _Names(graph)
        names.used.update(self.consts)
        remove: set[int] = set()
        for add in graph.node:
            if add.op_type != "Add" or add.domain not in _DEFAULT_DOMAINS or len(add.input) != 2:
                continue
            a, b = add.input
            if b in self.consts and a not in self.consts:
                x, c = a, self.consts[b]
            elif a in self.consts and b not in self.consts:
                x, c = b, self.consts[a]
            else:
                continue
            conv = producers.get(x)
            if (
                conv is None
                or conv.op_type != "Conv"
                or conv.domain not in _DEFAULT_DOMAINS
                or x in out_names
                or len(cons.get(x, [])) != 1
                or len(conv.input) < 2
                or conv.input[1] not in self.consts
                or (len(conv.input) >= 3 and conv.input[2] and conv.input[2] not in self.consts)
            ):
                continue
            w = self.consts[conv.input[1]]
            if c.dtype != w.dtype or c.ndim > w.ndim:
                continue
            out_ch = w.shape[0]
            full = (1,) * (w.ndim - c.ndim) + tuple(c.shape)
            if c.size == 1:
                delta = np.full(out_ch, c.reshape(-1)[0], dtype=np.float64)
            elif full[1] == out_ch and all(d == 1 for i, d in enumerate(full) if i != 1):
                delta = c.reshape(-1).astype(np.float64)
            else:
                continue
            has_b = len(conv.input) >= 3 and bool(conv.input[2])
            old_b = self.consts[conv.input[2]].astype(np.float64) if has_b else np.zeros(out_ch)
            bname = names.fresh(f"{add.output[0]}.bias")
            self.consts[bname] = (old_b + delta).astype(w.dtype)
            if has_b:
                conv.input[2] = bname
            else:
                conv.input.append(bname)
            conv.output[0] = add.output[0]
            remove.add(id(add))
            self._count("folded Add into Conv bias")
        if not remove:
            return False
        kept = [n for n in graph.node if id(n) not in remove]
        del graph.node[:]
        graph.node.extend(kept)
        return True

    def fold_pad_into_conv(self) -> bool:
        """Fold a zero constant-mode ``Pad`` of the spatial dims into the following ``Conv``."""
        graph = self.model.graph
        out_names = {o.name for o in graph.output}
        cons = _consumers(graph)
        remove: set[int] = set()
        for pad in graph.node:
            if pad.op_type != "Pad" or pad.domain not in _DEFAULT_DOMAINS:
                continue
            mode = _attr(pad, "mode", b"constant")
            if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
                continue
            if self.opset < 11:
                pads = _attr(pad, "pads")
                value = float(_attr(pad, "value", 0.0))
            else:
                if len(pad.input) < 2 or pad.input[1] not in self.consts:
                    continue
                if len(pad.input) > 3 and pad.input[3]:
                    continue  # axes input: leave it alone
                pads = self.consts[pad.input[1]].tolist()
                value = 0.0
                if len(pad.input) > 2 and pad.input[2]:
                    if pad.input[2] not in self.consts:
                        continue
                    value = float(np.asarray(self.consts[pad.input[2]]).reshape(-1)[0])
            if pads is None or value != 0.0:
                continue
            pads = [int(p) for p in pads]
            rank = len(pads) // 2
            if rank < 3 or any(p < 0 for p in pads) or any(pads[i] or pads[i + rank] for i in (0, 1)):
                continue
            y = pad.output[0]
            users = cons.get(y, [])
            if y in out_names or len(users) != 1:
                continue
            conv = users[0]
            if conv.op_type != "Conv" or conv.input[0] != y or y in conv.input[1:]:
                continue
            auto_pad = _attr(conv, "auto_pad", b"NOTSET")
            if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
                continue
            nsp = rank - 2
            old = list(_attr(conv, "pads", [0] * (2 * nsp)))
            if len(old) != 2 * nsp:
                continue
            new = [old[i] + pads[2 + i] for i in range(nsp)] + [
                old[nsp + i] + pads[rank + 2 + i] for i in range(nsp)
            ]
            _set_attr(conv, "pads", new)
            conv.input[0] = pad.input[0]
            remove.add(id(pad))
            self._count("folded Pad into Conv")
        if not remove:
            return False
        kept = [n for n in graph.node if id(n) not in remove]
        del graph.node[:]
        graph.node.extend(kept)
        return True

    def eliminate_dead(self) -> None:
        graph = self.model.graph
        needed = {o.name for o in graph.output}
        kept: list[onnx.NodeProto] = []
        for node in reversed(graph.node):
            if any(o in needed for o in node.output if o):
                kept.append(node)
                needed.update(i for i in node.input if i)
                for sub in _subgraphs(node):
                    needed.update(i for sn in _iter_nodes(sub) for i in sn.input if i)
            else:
                self._count("removed dead node")
        kept.reverse()
        if len(kept) != len(graph.node):
            del graph.node[:]
            graph.node.extend(kept)
        for k in [k for k in self.consts if k not in needed]:
            del self.consts[k]

    # -- driver ----------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        for _ in range(_MAX_SIMPLIFY_ITERATIONS):
            self._infer()
            changed = self.remove_identities()
            changed |= self.fold_constants()
            changed |= self.fold_batchnorm()
            changed |= self.fold_add_into_conv_bias()
            changed |= self.fold_pad_into_conv()
            self.eliminate_dead()
            if not changed:
                break
        else:
            logger.warning(
                "simplification of %s did not converge after %d iterations",
                self.name,
                _MAX_SIMPLIFY_ITERATIONS,
            )
        self._infer()
        graph = self.model.graph
        self._write_initializers()
        # Declare the inferred output shapes.
        for out in graph.output:
            inferred = self._inferred_outputs.get(out.name)
            if (
                inferred is not None
                and inferred.type.HasField("tensor_type")
                and inferred.type.tensor_type.HasField("shape")
            ):
                out.type.CopyFrom(inferred.type)
            elif out.name in self._output_types:
                out.type.CopyFrom(self._output_types[out.name])
        # Keep inferred intermediate shapes: they help downstream tools and TVM.
        del graph.value_info[:]
        return self.model


def simplify_onnx(
    model: ModelLike,
    shape: ShapeLike = None,
    *,
    max_fold_bytes: int = MAX_FOLD_BYTES,
) -> onnx.ModelProto:
    """Fix the input shapes of an ONNX model and simplify its graph.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The model (not modified).
    shape : tuple of int or dict of str to tuple of int, optional
        Static input shape(s): a tuple for a single-input model or a dict mapping
        input names to shapes. Inputs without a given shape keep their declared
        shape; a dynamic batch dim alone becomes 1 (with a warning), any other
        dynamic dim raises :class:`FrontendError`.
    max_fold_bytes : int
        A node is not constant folded if one of its outputs would be larger.

    Returns
    -------
    onnx.ModelProto
        A new model with static input shapes in which constant sub-graphs (including
        ``Shape``/``Size`` of statically shaped tensors) are folded to initializers,
        ``BatchNormalization`` is folded into the preceding ``Conv`` (or turned into
        ``Mul``+``Add``), zero ``Pad`` is folded into the following ``Conv``, and
        ``Identity``/``Dropout`` are removed. It runs in onnxruntime like the original.

    Raises
    ------
    FrontendError
        If the model is malformed or its input shapes cannot be fixed.
    """
    proto, name = load_onnx(model)
    return _simplify(proto, name, shape, max_fold_bytes)[0]


def _simplify(
    proto: onnx.ModelProto, name: str, shape: ShapeLike, max_fold_bytes: int
) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    shapes = _fix_input_shapes(proto, shape, name)
    n_before = len(proto.graph.node)
    simp = _Simplifier(proto, name, max_fold_bytes)
    model = simp.run()
    logger.info(
        "simplified %s: %d -> %d nodes (%s)",
        name,
        n_before,
        len(model.graph.node),
        ", ".join(f"{k}: {v}" for k, v in sorted(simp.stats.items())) or "no changes",
    )
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        logger.warning("simplified %s does not pass onnx.checker: %s", name, err)
    return model, shapes


# --------------------------------------------------------------------------------------
# TVM import
# --------------------------------------------------------------------------------------


def _prepare_for_tvm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy in which only real weights are initializers.

    Non-float and single-element initializers (shapes, axes, scalars such as Clip
    bounds or the 6 of hardswish) become ``Constant`` nodes so that TVM embeds them
    as ``relax.const`` instead of turning them into function parameters. Remaining
    initializers are renamed so that TVM's ``onnx::`` prefix stripping cannot create
    duplicate parameter names.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = _Names(graph)
    const_nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    taken = {vi.name for vi in graph.input}
    for t in graph.initializer:
        arr = numpy_helper.to_array(t)
        if arr.dtype.type not in _FLOAT_TYPES or arr.size <= 1:
            const_nodes.append(helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}"))
            continue
        stripped = t.name.removeprefix("onnx::")
        if stripped != t.name or stripped in taken:
            new = stripped
            k = 0
            while new in taken or (new != t.name and new in names.used):
                k += 1
                new = f"{stripped}_{k}"
            if new != t.name:
                names.used.add(new)
                _replace_uses(graph, t.name, new)
                for o in graph.output:
                    if o.name == t.name:
                        o.name = new
                t.name = new
        taken.add(t.name)
        weights.append(t)
    del graph.initializer[:]
    graph.initializer.extend(weights)
    nodes = const_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _unsupported_ops(model: onnx.ModelProto) -> list[str]:
    try:
        from tvm.relax.frontend.onnx import onnx_frontend

        convert_map = onnx_frontend._get_convert_map()
    except Exception:  # private API: skip the pre-check if it moved
        return []
    bad = set()
    for node in _iter_nodes(model.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            bad.add(f"{node.domain}.{node.op_type}")
        elif node.op_type not in convert_map and node.op_type not in ("Constant", "If"):
            bad.add(node.op_type)
    return sorted(bad)


def _failing_node(err: BaseException) -> onnx.NodeProto | None:
    """Find the ONNX node TVM's importer was converting when ``err`` was raised."""
    tb = err.__traceback__
    node = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_construct_nodes":
            cand = frame.f_locals.get("node")
            if isinstance(cand, onnx.NodeProto):
                node = cand
        tb = tb.tb_next
    return node


def _tensor_elem_dtype(vi: onnx.ValueInfoProto) -> str:
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)))


def from_onnx(
    model: ModelLike,
    shape: ShapeLike = None,
    *,
    canonicalize: bool = True,
    max_fold_bytes: int = MAX_FOLD_BYTES,
) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Import an ONNX float model into a Relax module with detached weights.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The model (not modified).
    shape : tuple of int or dict of str to tuple of int, optional
        Static input shape(s), see :func:`simplify_onnx`.
    canonicalize : bool
        Rewrite the ``call_tir`` kernels that TVM emits for ``Clip`` into ``R.clip``
        (or ``R.nn.relu`` for ``Clip(min=0)``), see :func:`canonicalize_clip`.
    max_fold_bytes : int
        Constant-folding size limit, see :func:`simplify_onnx`.

    Returns
    -------
    mod : tvm.IRModule
        ``main`` takes the data inputs first (attribute ``num_input`` gives their
        count, their names are the ONNX input names sanitized by TVM: ``.`` becomes
        ``_``), then one tensor parameter per weight.
    params : dict of str to numpy.ndarray
        Weight values keyed by the Relax parameter names of ``main``; pass them to
        :func:`bind_params`.

    Raises
    ------
    FrontendError
        If the model is malformed, its input shapes cannot be fixed, or TVM cannot
        import it (the message names the unsupported ops when they are known).
    """
    proto, name = load_onnx(model)
    simplified, shapes = _simplify(proto, name, shape, max_fold_bytes)
    prepared = _prepare_for_tvm(simplified)

    bad = _unsupported_ops(prepared)
    if bad:
        raise FrontendError(
            f"{name} uses ONNX op(s) that TVM 0.27's Relax ONNX frontend does not support: "
            f"{', '.join(bad)} (remaining after simplification). Replace them in the exporter."
        )
    dtypes = {vi.name: _tensor_elem_dtype(vi) for vi in prepared.graph.input}
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = tvm_from_onnx(
                prepared,
                shape_dict={k: list(v) for k, v in shapes.items()},
                dtype_dict=dtypes,
                keep_params_in_input=True,
            )
    except Exception as err:
        node = _failing_node(err)
        where = f" while converting {node.op_type} node {node.name!r}" if node is not None else ""
        raise FrontendError(
            f"TVM's ONNX frontend failed to import {name}{where}: {type(err).__name__}: {err}"
        ) from err
    for w in caught:
        logger.debug("TVM ONNX frontend: %s", w.message)

    mod, detached = detach_params(mod)
    func = mod["main"]
    num_input = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(shapes)
    weight_vars = list(func.params)[num_input:]
    values = detached.get("main", [])
    if len(values) != len(weight_vars):
        raise FrontendError(
            f"internal error importing {name}: {len(weight_vars)} weight parameters but {len(values)} values"
        )
    params: dict[str, np.ndarray] = {}
    for var, val in zip(weight_vars, values, strict=True):
        if var.name in params:
            raise FrontendError(f"internal error importing {name}: duplicate parameter name {var.name!r}")
        params[var.name] = val.numpy()
    if canonicalize:
        mod = canonicalize_clip(mod)
    mod, params = _drop_unused_weights(mod, num_input, params)
    logger.info(
        "imported %s: %d data input(s), %d weight tensors (%.2f MB)",
        name,
        num_input,
        len(params),
        sum(v.nbytes for v in params.values()) / 1e6,
    )
    return mod, params


def _drop_unused_weights(
    mod: tvm.IRModule, num_input: int, params: dict[str, np.ndarray]
) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Remove weight parameters of ``main`` that its body never reads.

    TVM's converters inline some parameters as constants (e.g. ``Resize`` scales via
    ``get_constant``) but leave the parameter in the signature.
    """
    func = mod["main"]
    used: set[str] = set()

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Var):
            used.add(expr.name)

    relax.analysis.post_order_visit(func.body, visit)
    all_params = list(func.params)
    weights = all_params[num_input:]
    unused = [v.name for v in weights if v.name not in used]
    if not unused:
        return mod, params
    logger.debug("dropping %d unused weight parameter(s): %s", len(unused), unused)
    keep = all_params[:num_input] + [v for v in weights if v.name in used]
    new_func = relax.Function(keep, func.body, func.ret_ty, func.is_pure, func.attrs, func.span)
    new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new_mod[mod.get_global_var("main")] = new_func
    return new_mod, {k: v for k, v in params.items() if k not in unused}


def bind_params(
    mod: tvm.IRModule,
    params: Mapping[str, np.ndarray | tvm.runtime.Tensor],
    func_name: str = "main",
) -> tvm.IRModule:
    """Bind weight values to the parameters of ``func_name`` as constants.

    Parameters
    ----------
    mod : tvm.IRModule
        A module such as the one returned by :func:`from_onnx`.
    params : dict of str to numpy.ndarray or tvm.runtime.Tensor
        Values keyed by parameter name. Every key must name a parameter of the
        function whose shape and dtype match.
    func_name : str
        The function whose parameters are bound.

    Returns
    -------
    tvm.IRModule
        The module whose ``func_name`` takes only the remaining (data) parameters.

    Raises
    ------
    KeyError
        If a key names no parameter.
    ValueError
        If a value's shape or dtype does not match the parameter.
    """
    func = mod[func_name]
    by_name = {p.name: p for p in func.params}
    binding: dict[relax.Var, tvm.runtime.Tensor] = {}
    for key, value in params.items():
        var = by_name.get(key)
        if var is None:
            raise KeyError(f"{func_name} has no parameter named {key!r}")
        tensor = (
            value
            if isinstance(value, tvm.runtime.Tensor)
            else tvm.runtime.tensor(np.ascontiguousarray(value))
        )
        ty = var.ty
        want_shape = [int(d) for d in ty.shape] if getattr(ty, "shape", None) is not None else None
        if want_shape is not None and list(tensor.shape) != want_shape:
            raise ValueError(
                f"parameter {key!r} expects shape {tuple(want_shape)}, got {tuple(tensor.shape)}"
            )
        if str(tensor.dtype) != str(ty.dtype):
            raise ValueError(f"parameter {key!r} expects dtype {ty.dtype}, got {tensor.dtype}")
        binding[var] = tensor
    return relax.transform.BindParams(func_name, binding)(mod)


# --------------------------------------------------------------------------------------
# Relax canonicalization
# --------------------------------------------------------------------------------------

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_CLIP_KERNEL = re.compile(r"^(maximum|minimum)(_?\d+)?$")


@relax.expr_functor.mutator
class _ClipCanonicalizer(relax.PyExprMutator):
    """Rewrite ``call_tir(maximum|minimum, (x, scalar const))`` into ``R.clip``."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.rewritten = 0

    def _resolve(self, expr: Any, depth: int = 0) -> np.ndarray | None:
        """Numpy value of an expression built only from constants, isnan and where."""
        if depth > 8:
            return None
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            return None if bound is None else self._resolve(bound, depth + 1)
        if isinstance(expr, tvm.ir.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            args = [self._resolve(a, depth + 1) for a in expr.args]
            if any(a is None for a in args):
                return None
            if expr.op.name == "relax.isnan":
                return np.isnan(args[0])
            if expr.op.name == "relax.where":
                return np.where(args[0], args[1], args[2])
        return None

    def _as_clip(self, expr: Any) -> tuple[Any, float, float] | None:
        """(x, lo, hi) if ``expr`` (or the value bound to it) is ``R.clip``/``R.nn.relu``."""
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            if bound is None:
                return None
            expr = bound
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return None
        if expr.op.name == "relax.clip":
            lo, hi = expr.args[1], expr.args[2]
            lo_v, hi_v = _prim_float(lo), _prim_float(hi)
            if lo_v is None or hi_v is None:
                return None
            return expr.args[0], lo_v, hi_v
        if expr.op.name == "relax.nn.relu":
            return expr.args[0], 0.0, math.inf
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D401
        call = self.visit_expr_post_order(call)
        if call.op != _CALL_TIR or len(call.args) < 2 or not isinstance(call.args[0], tvm.ir.GlobalVar):
            return call
        match = _CLIP_KERNEL.match(call.args[0].name_hint)
        args = call.args[1]
        if match is None or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
            return call
        x, bound = args.fields
        xty, oty = getattr(x, "ty", None), getattr(call, "ty", None)
        if not isinstance(xty, relax.TensorType) or not isinstance(oty, relax.TensorType):
            return call
        if str(xty.dtype) != str(oty.dtype) or str(xty.dtype) not in ("float16", "float32", "float64"):
            return call
        if xty.shape is None or oty.shape is None or list(xty.shape) != list(oty.shape):
            return call
        val = self._resolve(bound)
        if val is None or val.size != 1 or np.isnan(val).any():
            return call
        v = float(val.reshape(-1)[0])
        is_max = match.group(1) == "maximum"
        lo, hi = (v, math.inf) if is_max else (-math.inf, v)
        inner = self._as_clip(x)
        if inner is not None:
            # clip(clip(y, a, b), lo, hi) == clip(y, max(a, lo), min(b, hi)) while the range is non-empty
            y, a, b = inner
            new_lo, new_hi = max(a, lo), min(b, hi)
            if new_lo <= new_hi:
                x, lo, hi = y, new_lo, new_hi
        self.rewritten += 1
        if lo == 0.0 and hi == math.inf:
            return relax.op.nn.relu(x)
        return relax.op.clip(x, lo, hi)


def _prim_float(value: Any) -> float | None:
    """Python float of a ``relax.PrimValue`` / ``IntImm`` / ``FloatImm``, or None."""
    for _ in range(3):
        if isinstance(value, int | float):
            return float(value)
        value = getattr(value, "value", None)
        if value is None:
            return None
    return None


def canonicalize_clip(mod: tvm.IRModule) -> tvm.IRModule:
    """Turn TVM 0.27's import of ONNX ``Clip`` into ``R.clip`` / ``R.nn.relu``.

    TVM 0.27 imports ``Clip`` (opset >= 11) as ``isnan``/``where`` on the bounds followed
    by ``call_tir`` of TOPI ``maximum`` and ``minimum`` kernels, which pattern-based
    passes cannot see through. With constant scalar bounds this rewrites the pair into
    one ``R.clip(x, lo, hi)`` (``R.nn.relu(x)`` for ``Clip(x, 0)``) and removes the
    now-unused bindings and kernels.

    Parameters
    ----------
    mod : tvm.IRModule
        The module to rewrite.

    Returns
    -------
    tvm.IRModule
        The rewritten module (``mod`` itself when nothing matched).
    """
    mutator = _ClipCanonicalizer(mod)
    changed = False
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            new_func = mutator.visit_expr(func)
            if mutator.rewritten:
                mod = _with_function(mod, gv, new_func)
                changed = True
    if not changed:
        return mod
    mod = relax.transform.DeadCodeElimination()(mod)
    logger.debug("canonicalized %d Clip kernels", mutator.rewritten)
    return mod


def _with_function(mod: tvm.IRModule, gv: tvm.ir.GlobalVar, func: relax.Function) -> tvm.IRModule:
    new = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new[gv] = func
    return new
