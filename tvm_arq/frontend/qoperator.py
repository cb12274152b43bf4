"""onnxruntime's QOperator format rewritten into QDQ form (``DequantizeLinear -> float op -> QuantizeLinear``).

``quantize_static(..., quant_format=QuantFormat.QOperator)`` writes integer ops (``QLinearConv``,
``QLinearMatMul``, ``com.microsoft`` ``QGemm``, ``QLinearAdd``, ``QLinearMul``, ``QLinearConcat``,
``QLinearAveragePool``, ``QLinearGlobalAveragePool``, ``QLinearSigmoid``, ``QLinearLeakyRelu``) and runs
data-movement ops (``Flatten``, ``Reshape``, ``MaxPool``, ...) directly on the integer tensors.
:func:`qoperator_to_qdq` states the same computation in QDQ form, with the same scales, zero points and
integer weights: each integer op becomes dequantize -> its float op -> quantize (an ``int32`` bias gets its
scale ``s_x * s_w``), each other op reading an integer tensor becomes dequantize -> op -> quantize with
the input's parameters (exact for data movement and max pooling). :func:`~tvm_arq.frontend.qdq.strip_qdq`
then handles the result like any QDQ model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .loader import QDQError

__all__ = ["QOPERATOR_OPS", "qoperator_to_qdq"]

#: QOperator op -> (float op, positions of the (x, scale, zero point) input triples, output scale/zp positions)
_SIMPLE = {
    "QLinearAdd": ("Add", (0, 3), (6, 7)),
    "QLinearMul": ("Mul", (0, 3), (6, 7)),
    "QLinearAveragePool": ("AveragePool", (0,), (3, 4)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), (3, 4)),
    "QLinearSigmoid": ("Sigmoid", (0,), (3, 4)),
    "QLinearLeakyRelu": ("LeakyRelu", (0,), (3, 4)),
}
QOPERATOR_OPS = (*_SIMPLE, "QLinearConv", "QLinearMatMul", "QGemm", "QLinearConcat")


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.consts = {t.name: t for t in self.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.qp: dict[str, tuple[str, str]] = {}  # integer tensor -> (scale, zero point) tensor names
        self.used = {o for n in self.graph.node for o in n.output} | set(self.consts) | {
            i.name for i in self.graph.input}

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def const(self, name: str) -> np.ndarray:
        if name not in self.consts:
            raise QDQError(f"QOperator model: {name!r} must be a constant initializer")
        return numpy_helper.to_array(self.consts[name])

    def dq(self, x: str, s: str, z: str, axis: int | None = None) -> str:
        out = self.fresh(f"{x}_dq")
        attrs = {"axis": axis} if axis is not None else {}
        self.nodes.append(helper.make_node("DequantizeLinear", [x, s, z], [out], name=self.fresh(f"{x}_DQ"), **attrs))
        return out

    def q(self, y_float: str, y: str, s: str, z: str) -> None:
        self.nodes.append(helper.make_node("QuantizeLinear", [y_float, s, z], [y], name=self.fresh(f"{y}_Q")))
        self.qp[y] = (s, z)

    def bias(self, b: str, s_x: str, s_w: str) -> str:
        """DequantizeLinear of an int32 bias with scale ``s_x * s_w`` (per output channel)."""
        q = self.const(b)
        s = (self.const(s_x).astype(np.float32) * self.const(s_w).astype(np.float32)).astype(np.float32).reshape(-1)
        s = np.broadcast_to(s, q.shape).copy() if s.size == 1 and q.size > 1 else s
        sn, zn = self.fresh(f"{b}_scale"), self.fresh(f"{b}_zero_point")
        self.inits += [numpy_helper.from_array(s, sn), numpy_helper.from_array(np.zeros(s.shape, np.int32), zn)]
        return self.dq(b, sn, zn, axis=0)

    def weight(self, w: str, s: str, z: str, axis: int) -> str:
        return self.dq(w, s, z, axis=axis if self.const(s).size > 1 else None)

    def float_op(self, node: onnx.NodeProto, op: str, inputs: list[str], y: str, s: str, z: str,
                 drop: tuple[str, ...] = ()) -> None:
        attrs = [a for a in node.attribute if a.name not in drop]
        y_f = self.fresh(f"{y}_float")
        n = helper.make_node(op, inputs, [y_f], name=node.name or self.fresh(op))
        n.attribute.extend(attrs)
        self.nodes.append(n)
        self.q(y_f, y, s, z)

    def run(self) -> onnx.ModelProto:
        for node in self.graph.node:
            self.convert(node)
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        self.graph.initializer.extend(self.inits)
        return self.model

    def convert(self, node: onnx.NodeProto) -> None:  # noqa: C901 - one branch per QOperator op
        op, i = node.op_type, list(node.input)
        who = f"{op} node {node.name or node.output[0]!r}"
        if op == "QuantizeLinear":
            self.nodes.append(node)
            self.qp[node.output[0]] = (i[1], i[2] if len(i) > 2 else "")
        elif op == "DequantizeLinear":
            self.nodes.append(node)
        elif op == "QLinearConv":
            x = self.dq(i[0], i[1], i[2])
            ins = [x, self.weight(i[3], i[4], i[5], 0)] + ([self.bias(i[8], i[1], i[4])] if len(i) > 8 and i[8] else [])
            self.float_op(node, "Conv", ins, node.output[0], i[6], i[7])
        elif op == "QLinearMatMul":
            b_rank = self.const(i[3]).ndim if i[3] in self.consts else 2
            b = self.weight(i[3], i[4], i[5], b_rank - 1) if i[3] in self.consts else self.dq(i[3], i[4], i[5])
            self.float_op(node, "MatMul", [self.dq(i[0], i[1], i[2]), b], node.output[0], i[6], i[7])
        elif op == "QGemm":
            alpha = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "alpha"), 1.0)
            trans_a = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transA"), 0)
            trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
            if alpha != 1.0 or trans_a or len(i) < 9 or not i[7]:
                raise QDQError(f"{who}: only alpha=1, transA=0 with a quantized output is supported")
            ins = [self.dq(i[0], i[1], i[2]), self.weight(i[3], i[4], i[5], 0 if trans_b else 1)]
            if i[6]:
                ins.append(self.bias(i[6], i[1], i[4]))
            self.float_op(node, "Gemm", ins, node.output[0], i[7], i[8], drop=("transA",))
        elif op == "QLinearConcat":
            xs = [self.dq(i[k], i[k + 1], i[k + 2]) for k in range(2, len(i), 3)]
            self.float_op(node, "Concat", xs, node.output[0], i[0], i[1])
        elif op in _SIMPLE:
            fop, triples, (ys, yz) = _SIMPLE[op]
            if any(a.name == "channels_last" and helper.get_attribute_value(a) for a in node.attribute):
                raise QDQError(f"{who}: channels_last=1 is not supported (NCHW only)")
            xs = [self.dq(i[k], i[k + 1], i[k + 2]) for k in triples]
            self.float_op(node, fop, xs, node.output[0], i[ys], i[yz] if len(i) > yz else "",
                          drop=("channels_last",))
        elif op.startswith("QLinear") or node.domain == "com.microsoft" and op.startswith("Q"):
            raise QDQError(f"{who}: QOperator op {op} is not supported (supported: {', '.join(QOPERATOR_OPS)})")
        else:
            self.wrap(node, who)

    def wrap(self, node: onnx.NodeProto, who: str) -> None:
        """An ordinary op: on an integer input 0 it runs as dequantize -> op -> quantize with the same parameters."""
        ints = [k for k, t in enumerate(node.input) if t in self.qp]
        if not ints:
            self.nodes.append(node)
            return
        if ints != [0]:
            raise QDQError(f"{who} reads integer tensor(s) {[node.input[k] for k in ints]} at input(s) {ints}: "
                           "only a single integer data input is supported")
        s, z = self.qp[node.input[0]]
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.input[0] = self.dq(node.input[0], s, z)
        outs = list(node.output)
        del n.output[:]
        n.output.extend(self.fresh(f"{o}_float") for o in outs)
        self.nodes.append(n)
        for f, o in zip(n.output, outs, strict=True):
            self.q(f, o, s, z)


def qoperator_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a QOperator model into QDQ form (in place on the copy given; see the module docstring).

    Raises
    ------
    QDQError
        For a QOperator op that is not supported or a layout it does not implement, naming the node.
    """
    return _Rewriter(model).run()
