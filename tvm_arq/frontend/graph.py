"""Small ONNX graph utilities shared by the loader, the simplifier and the TVM import."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx
from onnx import helper

__all__ = [
    "DEFAULT_DOMAINS",
    "UniqueNames",
    "default_opset",
    "dim_label",
    "graph_consumers",
    "iter_nodes",
    "node_attr",
    "replace_uses",
    "set_node_attr",
    "subgraphs",
    "value_dims",
]

#: The operator set domains of the standard ONNX ops.
DEFAULT_DOMAINS = ("", "ai.onnx")


class UniqueNames:
    """Generator of tensor names that are unique within a graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used: set[str] = set()
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            self.used.add(vi.name)
        for t in graph.initializer:
            self.used.add(t.name)
        for node in iter_nodes(graph):
            self.used.update(node.output)
            self.used.update(node.input)

    def fresh(self, base: str) -> str:
        """A name starting with ``base`` that is not used yet (and is now taken)."""
        base = base or "t"
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (``If`` branches, ``Loop`` bodies, ...)."""
    out: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes of ``graph`` including those in subgraphs."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from iter_nodes(sub)


def replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every node (also in subgraphs) that reads ``old`` read ``new``."""
    for node in iter_nodes(graph):
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def graph_consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the top-level nodes that read it (also from inside their subgraphs)."""
    cons: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        names = set(node.input)
        for sub in subgraphs(node):
            names |= {n for sn in iter_nodes(sub) for n in sn.input}
        for name in names:
            if name:
                cons.setdefault(name, []).append(node)
    return cons


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Value of attribute ``name`` of ``node``, ``default`` if it is not set."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_node_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Set (or replace) attribute ``name`` of ``node``."""
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset version of the default ONNX domain (1 if it declares none)."""
    for op in model.opset_import:
        if op.domain in DEFAULT_DOMAINS:
            return int(op.version)
    return 1


def value_dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    """Static dims of a tensor value info (None for unknown dims), None for unknown rank."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    out: list[int | None] = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)
    return out


def dim_label(d: onnx.TensorShapeProto.Dimension) -> str:
    """A dim for messages: its value, its symbolic name or ``?``."""
    if d.HasField("dim_value") and d.dim_value > 0:
        return str(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        return d.dim_param
    return "?"
