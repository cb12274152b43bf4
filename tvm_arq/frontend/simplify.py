"""The project's own ONNX graph simplifier (no onnxruntime).

Shape inference, constant folding (including ``Shape``/``Size`` of statically shaped tensors) to a fixed
point, ``Conv``+``BatchNormalization`` folding, standalone ``BatchNormalization`` to ``Mul``+``Add``, a
constant ``Add`` folded into the preceding ``Conv`` bias, zero ``Pad`` folded into the following ``Conv``,
and removal of ``Identity``/``Dropout`` and dead nodes.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from .graph import (
    DEFAULT_DOMAINS,
    UniqueNames,
    default_opset,
    graph_consumers,
    iter_nodes,
    node_attr,
    replace_uses,
    set_node_attr,
    subgraphs,
    value_dims,
)
from .loader import ModelLike, load_onnx
from .shapes import ShapeLike, fix_input_shapes

logger = logging.getLogger(__name__)

__all__ = ["MAX_FOLD_BYTES", "simplify_onnx", "simplify_proto"]

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


class _Simplifier:
    """Iterative ONNX graph simplification (constants are kept in ``self.consts``)."""

    def __init__(self, model: onnx.ModelProto, name: str, max_fold_bytes: int) -> None:
        self.model = model
        self.name = name
        self.max_fold_bytes = max_fold_bytes
        self.opsets = {op.domain or "": int(op.version) for op in model.opset_import}
        self.opset = default_opset(model)
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
        for node in iter_nodes(graph):
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
                self.shapes[vi.name] = value_dims(vi)
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
            if node.op_type == "Dropout" and node.domain in DEFAULT_DOMAINS:
                cons = graph_consumers(graph)
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
            elif not (node.op_type == "Identity" and node.domain in DEFAULT_DOMAINS):
                keep.append(node)
                continue
            src, dst = node.input[0], node.output[0]
            if dst not in out_names:
                replace_uses(graph, dst, src)
            elif src not in out_names and src not in input_names and src not in self.consts:
                # dst is a graph output: rename src (a node output) to dst instead.
                for other in graph.node:
                    for i, o in enumerate(other.output):
                        if o == src:
                            other.output[i] = dst
                replace_uses(graph, src, dst)
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
        if node.domain not in DEFAULT_DOMAINS or node.op_type in _NO_FOLD_OPS or subgraphs(node):
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
            start = int(node_attr(node, "start", 0))
            end = int(node_attr(node, "end", rank))
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
        if bn.domain not in DEFAULT_DOMAINS or len(bn.input) < 5:
            return None
        if int(node_attr(bn, "training_mode", 0)) != 0:
            return None
        if any(i not in self.consts for i in bn.input[1:5]):
            return None
        gamma, beta, mean, var = (self.consts[i].astype(np.float64) for i in bn.input[1:5])
        if not (gamma.ndim == beta.ndim == mean.ndim == var.ndim == 1):
            return None
        eps = float(node_attr(bn, "epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        return scale, shift

    def _conv_fold_index(
        self,
    ) -> tuple[set[str], dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]], UniqueNames]:
        """Graph output names, producer and consumers of every tensor, and a fresh-name generator."""
        graph = self.model.graph
        out_names = {o.name for o in graph.output}
        producers = {o: n for n in graph.node for o in n.output}
        cons = graph_consumers(graph)
        names = UniqueNames(graph)
        names.used.update(self.consts)
        return out_names, producers, cons, names

    def _const_conv(
        self,
        x: str,
        producers: dict[str, onnx.NodeProto],
        cons: dict[str, list[onnx.NodeProto]],
        out_names: set[str],
    ) -> onnx.NodeProto | None:
        """The ``Conv`` producing ``x`` if its weight (and bias, if any) are constants and only one node
        reads ``x`` (not a graph output), so that a following op can be folded into it; else None."""
        conv = producers.get(x)
        if (
            conv is None
            or conv.op_type != "Conv"
            or conv.domain not in DEFAULT_DOMAINS
            or x in out_names
            or len(cons.get(x, [])) != 1
            or len(conv.input) < 2
            or conv.input[1] not in self.consts
            or (len(conv.input) >= 3 and conv.input[2] and conv.input[2] not in self.consts)
        ):
            return None
        return conv

    def _bias64(self, conv: onnx.NodeProto, out_ch: int) -> np.ndarray:
        """The constant bias of ``conv`` in float64 (zeros if it has none)."""
        has_b = len(conv.input) >= 3 and bool(conv.input[2])
        return self.consts[conv.input[2]].astype(np.float64) if has_b else np.zeros(out_ch)

    def _remove_nodes(self, remove: set[int]) -> bool:
        """Drop the top-level nodes whose ``id`` is in ``remove``; True if there were any."""
        if not remove:
            return False
        graph = self.model.graph
        kept = [n for n in graph.node if id(n) not in remove]
        del graph.node[:]
        graph.node.extend(kept)
        return True

    def fold_batchnorm(self) -> bool:
        graph = self.model.graph
        out_names, producers, cons, names = self._conv_fold_index()
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
            conv = self._const_conv(x, producers, cons, out_names)
            if conv is not None and self.consts[conv.input[1]].shape[0] == scale.shape[0]:
                w = self.consts[conv.input[1]]
                b = self._bias64(conv, w.shape[0])
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
        out_names, producers, cons, names = self._conv_fold_index()
        remove: set[int] = set()
        for add in graph.node:
            if add.op_type != "Add" or add.domain not in DEFAULT_DOMAINS or len(add.input) != 2:
                continue
            a, b = add.input
            if b in self.consts and a not in self.consts:
                x, c = a, self.consts[b]
            elif a in self.consts and b not in self.consts:
                x, c = b, self.consts[a]
            else:
                continue
            conv = self._const_conv(x, producers, cons, out_names)
            if conv is None:
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
            old_b = self._bias64(conv, out_ch)
            bname = names.fresh(f"{add.output[0]}.bias")
            self.consts[bname] = (old_b + delta).astype(w.dtype)
            if has_b:
                conv.input[2] = bname
            else:
                conv.input.append(bname)
            conv.output[0] = add.output[0]
            remove.add(id(add))
            self._count("folded Add into Conv bias")
        return self._remove_nodes(remove)

    def fold_pad_into_conv(self) -> bool:
        """Fold a zero constant-mode ``Pad`` of the spatial dims into the following ``Conv``."""
        graph = self.model.graph
        out_names = {o.name for o in graph.output}
        cons = graph_consumers(graph)
        remove: set[int] = set()
        for pad in graph.node:
            if pad.op_type != "Pad" or pad.domain not in DEFAULT_DOMAINS:
                continue
            mode = node_attr(pad, "mode", b"constant")
            if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
                continue
            if self.opset < 11:
                pads = node_attr(pad, "pads")
                value = float(node_attr(pad, "value", 0.0))
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
            auto_pad = node_attr(conv, "auto_pad", b"NOTSET")
            if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET":
                continue
            nsp = rank - 2
            old = list(node_attr(conv, "pads", [0] * (2 * nsp)))
            if len(old) != 2 * nsp:
                continue
            new = [old[i] + pads[2 + i] for i in range(nsp)] + [
                old[nsp + i] + pads[rank + 2 + i] for i in range(nsp)
            ]
            set_node_attr(conv, "pads", new)
            conv.input[0] = pad.input[0]
            remove.add(id(pad))
            self._count("folded Pad into Conv")
        return self._remove_nodes(remove)

    def eliminate_dead(self) -> None:
        graph = self.model.graph
        needed = {o.name for o in graph.output}
        kept: list[onnx.NodeProto] = []
        for node in reversed(graph.node):
            if any(o in needed for o in node.output if o):
                kept.append(node)
                needed.update(i for i in node.input if i)
                for sub in subgraphs(node):
                    needed.update(i for sn in iter_nodes(sub) for i in sn.input if i)
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
    return simplify_proto(proto, name, shape, max_fold_bytes)[0]


def simplify_proto(
    proto: onnx.ModelProto, name: str, shape: ShapeLike, max_fold_bytes: int
) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """Fix the input shapes of a loaded model in place and simplify it; also return the input shapes."""
    shapes = fix_input_shapes(proto, shape, name)
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
