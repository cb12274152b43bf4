"""Importing a simplified ONNX model into Relax with TVM's ONNX frontend, weights detached."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import onnx
import tvm
from onnx import helper, numpy_helper
from tvm import relax

from .canonicalize import canonicalize_clip
from .graph import DEFAULT_DOMAINS, UniqueNames, iter_nodes, replace_uses
from .loader import FrontendError, ModelLike, load_onnx
from .naming import LAYER_SEP, _node_label, import_named
from .qdq import ModelQuant, is_quantized, strip_qdq
from .shapes import ShapeLike
from .simplify import MAX_FOLD_BYTES, simplify_proto

logger = logging.getLogger(__name__)

__all__ = ["MODEL_QPARAMS_ATTR", "from_onnx", "model_qparams"]

#: IRModule attribute holding the fixed parameters of a pre-quantized (QDQ) model, as JSON
MODEL_QPARAMS_ATTR = "arq.model_qparams"

_FLOAT_TYPES = (np.float16, np.float32, np.float64)


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
    names = UniqueNames(graph)
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
                replace_uses(graph, t.name, new)
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
    for node in iter_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
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
        ``_``), then one tensor parameter per weight. Its bindings carry the ONNX node names
        (:mod:`tvm_arq.frontend.naming`): the output of node ``N`` is bound to a variable named
        ``N``, the node's inner bindings to ``N::<op>``.
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
    table = None
    if is_quantized(proto):
        proto, table = strip_qdq(proto)
        if table.unsupported:
            logger.warning("%s: the model's own quantization parameters cannot be used as they are (%s); "
                           "build it with calibration data to re-quantize it", name, table.unsupported[0])
    simplified, shapes = simplify_proto(proto, name, shape, max_fold_bytes)
    prepared = _prepare_for_tvm(simplified)

    bad = _unsupported_ops(prepared)
    if bad:
        raise FrontendError(
            f"{name} uses ONNX op(s) that TVM 0.27's Relax ONNX frontend does not support: "
            f"{', '.join(bad)} (remaining after simplification). Replace them in the exporter."
        )
    dtypes = {vi.name: _tensor_elem_dtype(vi) for vi in prepared.graph.input}
    from tvm.relax.frontend import detach_params

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = import_named(prepared, {k: list(v) for k, v in shapes.items()}, dtypes)
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
    if table is not None:
        keyed = _rekey(table, simplified, [p.name for p in list(mod["main"].params)[:num_input]])
        mod = mod.with_attr(MODEL_QPARAMS_ATTR, keyed.to_json())
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


def _rekey(table: ModelQuant, model: onnx.ModelProto, input_vars: list[str]) -> ModelQuant:
    """Re-key a :class:`~tvm_arq.frontend.qdq.ModelQuant` by Relax names (binding of each tensor's producer,
    parameter of each graph input); tensors the simplification removed are dropped."""
    where: dict[str, str] = {}
    inits = {t.name for t in model.graph.initializer}
    data_inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    where.update(zip(data_inputs, input_vars, strict=False))
    for node in model.graph.node:
        label = _node_label(node)
        for i, o in enumerate(node.output):
            if o:
                where[o] = label if i == 0 else f"{label}{LAYER_SEP}out{i}"
    out = ModelQuant(source=table.source, unsupported=list(table.unsupported))
    lost = []
    for t, act in table.activations.items():
        if t in where:
            out.activations[where[t]] = act
        else:
            lost.append(t)
    if lost:
        logger.debug("model quantization parameters of %d tensor(s) removed by simplification: %s", len(lost), lost)
    labels = {_node_label(n) for n in model.graph.node}
    out.weights = {k.replace(LAYER_SEP, ":"): v for k, v in table.weights.items() if k.replace(LAYER_SEP, ":") in labels}
    return out


def model_qparams(mod: tvm.IRModule) -> ModelQuant | None:
    """The fixed parameters of a pre-quantized model imported by :func:`from_onnx`, or None (a float model)."""
    if mod.attrs is None or MODEL_QPARAMS_ATTR not in mod.attrs:
        return None
    return ModelQuant.from_json(str(mod.attrs[MODEL_QPARAMS_ATTR]))
