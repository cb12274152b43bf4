"""ONNX node names on the Relax bindings they import to (the names users see, report and exclude).

TVM 0.27's ONNX importer names every binding ``lv``, ``lv1``, ... so nothing a user knows about the
model (its node names in Netron, in the exporter) survives the import. :func:`import_named` runs the
importer node by node, remembers the Relax variable holding each node's output, and then renames the
bindings:

- the binding holding the (first) output of ONNX node ``N`` is named ``N`` exactly (for a node without a
  name: its first output tensor's name; a ``::`` inside the name becomes ``:``); output ``i >= 1`` of a multi-output node is ``N::out<i>``;
- every other binding the importer emitted for ``N`` (the ``conv2d`` before the bias ``add`` of a ``Conv``
  with bias, the ``clip`` and ``divide`` inside a ``HardSwish``) is ``N::<op>`` (``N::conv2d``,
  ``N::clip``, with ``_2``, ``_3`` ... when one op occurs twice in a node).

:func:`layer_of` maps a binding name back to its node name: that is the *layer* name used by
``QuantConfig(exclude=...)``, :func:`tvm_arq.sensitivity` and the report. Modules built directly in
Relax (no ONNX) keep their own binding names; each binding is then its own layer.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx
import tvm
from tvm import relax

logger = logging.getLogger(__name__)

__all__ = ["LAYER_SEP", "import_named", "layer_of", "rename_bindings"]

#: separator between a node name and the part naming one of the node's inner bindings
LAYER_SEP = "::"


def layer_of(name: str) -> str:
    """The layer (ONNX node) name of a binding name: the part before :data:`LAYER_SEP`."""
    return name.split(LAYER_SEP, 1)[0]


def _node_label(node: onnx.NodeProto) -> str:
    """The node's name (else its first output's name), with :data:`LAYER_SEP` replaced by ``:``."""
    label = node.name or next((o for o in node.output if o), node.op_type)
    return label.replace(LAYER_SEP, ":")


def import_named(model: onnx.ModelProto, shape_dict: dict[str, list], dtype_dict: dict[str, str]) -> tvm.IRModule:
    """``tvm.relax.frontend.onnx.from_onnx(model, ..., keep_params_in_input=True)`` with named bindings.

    Uses TVM's importer class (``ONNXGraphImporter``), one node at a time; if that private API is not
    there, the public importer is used and the bindings keep TVM's names (with a warning).
    """
    from tvm.relax.frontend.onnx import onnx_frontend as tof

    base = getattr(tof, "ONNXGraphImporter", None)
    if base is None or not hasattr(base, "_construct_nodes"):  # pragma: no cover - TVM API change
        logger.warning("TVM's ONNX importer has no ONNXGraphImporter._construct_nodes: binding names are TVM's "
                       "(lv, lv1, ...), not the ONNX node names")
        return tof.from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=True)

    labels: list[tuple[Any, str]] = []  # (relax var, name), first label of a var wins

    class _OneNode:
        def __init__(self, node: onnx.NodeProto) -> None:
            self.node = [node]

    class _NamingImporter(base):  # type: ignore[misc, valid-type]
        top: Any = None

        def _construct_nodes(self, graph):  # noqa: ANN001 - TVM's signature
            if graph is not self.top:  # an If branch: plain import
                return super()._construct_nodes(graph)
            for node in graph.node:
                super()._construct_nodes(_OneNode(node))
                if node.op_type == "Constant":
                    continue
                label = _node_label(node)
                for i, out in enumerate(node.output):
                    expr = self._nodes.get(out) if out else None
                    if isinstance(expr, relax.Call) and out not in graph_outputs:
                        # bind it here: otherwise each consumer binds (and computes) its own copy
                        expr = self.bb.emit(expr)
                        self._nodes[out] = expr
                    if isinstance(expr, relax.Var | relax.Call):  # a graph output's Call: bound by emit_output
                        labels.append((expr, label if i == 0 else f"{label}{LAYER_SEP}out{i}"))
            return None

    opset = 1
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            opset = int(op.version)
            break
    graph_outputs = {o.name for o in model.graph.output}
    importer = _NamingImporter(shape_dict, dtype_dict, keep_params_in_input=True, sanitize=True)
    importer.top = model.graph
    mod = importer.from_onnx(model.graph, opset)
    return rename_bindings(mod, labels)


def _short_op(value: relax.Expr) -> str:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name.rsplit(".", 1)[-1]
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
        return value.op.name_hint
    if isinstance(value, relax.TupleGetItem):
        return f"item{value.index}"
    return type(value).__name__.lower()


def _vars_in(expr: relax.Expr) -> list[relax.Var]:
    found: list[relax.Var] = []

    def visit(e: Any) -> None:
        if isinstance(e, relax.Var):
            found.append(e)

    relax.analysis.post_order_visit(expr, visit)
    return found


def rename_bindings(mod: tvm.IRModule, labels: list[tuple[Any, str]]) -> tvm.IRModule:
    """Rename ``main``'s bindings after the ONNX nodes that produced them (see the module docstring).

    ``labels`` gives the output variable of each node; a binding without a label belongs to the labelled
    binding that (transitively) reads it first.
    """
    func = mod["main"]
    bindings = [b for block in func.body.blocks for b in block.bindings]
    label_of: dict[Any, str] = {}
    calls = [(e, name) for e, name in labels if isinstance(e, relax.Call)]
    for var, name in labels:
        if isinstance(var, relax.Var):
            label_of.setdefault(var, name)
    for b in bindings:  # graph outputs: the Call the importer returned, bound by emit_output
        hit = next((name for e, name in calls if b.value.same_as(e)), None)
        if hit is not None:
            label_of.setdefault(b.var, hit)
    # owner of an unlabelled binding: the layer of its first (labelled or owned) reader, walking backwards
    owner: dict[Any, str] = {}
    first_reader: dict[Any, Any] = {}
    for b in bindings:
        for v in _vars_in(b.value):
            first_reader.setdefault(v, b.var)
    for b in reversed(bindings):
        if b.var in label_of:
            owner[b.var] = layer_of(label_of[b.var])
        elif first_reader.get(b.var) in owner:
            owner[b.var] = owner[first_reader[b.var]]
    used = {p.name for p in func.params}
    new_names: dict[Any, str] = {}
    for b in bindings:
        if b.var in label_of:
            want = label_of[b.var]
        elif b.var in owner:
            want = f"{owner[b.var]}{LAYER_SEP}{_short_op(b.value)}"
        else:
            continue
        name, k = want, 1
        while name in used:
            k += 1
            name = f"{want}_{k}"
        used.add(name)
        new_names[b.var] = name
    if not new_names:
        return mod
    renamer = _Renamer(mod, {var: name for var, name in new_names.items()})
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out[mod.get_global_var("main")] = renamer.visit_expr(func)
    return out


@relax.expr_functor.mutator
class _Renamer(relax.PyExprMutator):
    """Give binding variables new names (same type); uses follow through the mutator's var remap."""

    def __init__(self, mod: tvm.IRModule, names: dict[Any, str]) -> None:
        super().__init__(mod)
        self.names = names

    def visit_var_def_(self, var: relax.Var) -> relax.Var:  # noqa: D401
        name = self.names.get(var)
        return var if name is None else relax.Var(name, var.ty)

    def visit_dataflow_var_def_(self, var: relax.DataflowVar) -> relax.Var:  # noqa: D401
        name = self.names.get(var)
        return var if name is None else relax.DataflowVar(name, var.ty)
