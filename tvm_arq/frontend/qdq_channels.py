"""Per-channel activation quantization (NNCF) folded into the neighbouring per-channel weight scales.

NNCF quantizes the input of a depthwise convolution per channel: ``q[c] = sat(rint(t[c] / s[c]) + z)``. The
integer kernels take one scale per activation tensor, but when the tensor ``t`` is written by a conv / gemm
(optionally through ReLU or a Clip at 0) and read only by depthwise convolutions, the per-channel factor
``k[c] = S / s[c]`` (``S = max(s)``) moves into the weights on both sides without changing any integer:

- the producer computes ``t'[c] = k[c] * t[c]``: its per-output-channel weight scales and its bias are
  multiplied by ``k[c]`` (its integer weights stay the model's);
- ``t'`` is quantized per tensor with ``S``: ``rint(t'[c] / S) = rint(t[c] / s[c])``, the same integers;
- each depthwise reader sees ``t[c] = t'[c] / k[c]``: its per-channel weight scales are divided by ``k[c]``.

ReLU commutes with the positive factor; a Clip ``[0, M]`` does only if it never binds before the
quantization saturates (``rint(M / s[c]) + z >= qmax`` for every channel), and is then dropped to a ReLU. The
scales change by a float32 rounding (~1e-7 relative), the same order as every other float-to-integer step.
Anything else (a per-channel tensor read by a non-depthwise op, a non-uniform zero point, ...) is left as it
is and reported by :func:`~tvm_arq.frontend.qdq.strip_qdq` as unsupported.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

__all__ = ["fold_channel_scales"]


class _Ctx:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.new: list[onnx.TensorProto] = []

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def only_reader(self, tensor: str) -> onnx.NodeProto | None:
        readers = self.consumers.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in self.outputs else None

    def replace_input(self, node: onnx.NodeProto, i: int, value: np.ndarray, tag: str) -> None:
        """Give ``node.input[i]`` a new initializer (never edit one that others may share)."""
        name = f"{node.input[i]}_{tag}"
        t = numpy_helper.from_array(value, name)
        self.new.append(t)
        self.inits[name] = t
        node.input[i] = name


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _scaled_weight(ctx: _Ctx, node: onnx.NodeProto, index: int, factor: np.ndarray, tag: str) -> bool:
    """Multiply input ``index`` of ``node`` (a weight or bias) by ``factor`` per output channel: through its
    DequantizeLinear scale (per output channel or per tensor), or its float initializer."""
    name = node.input[index]
    w = ctx.const(name)
    if w is not None:
        if w.dtype != np.float32:
            return False
        shape = [-1] + [1] * (w.ndim - 1)
        ctx.replace_input(node, index, (w * factor.reshape(shape)).astype(np.float32), tag)
        return True
    dq = ctx.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or ctx.const(dq.input[0]) is None:
        return False
    if len(ctx.consumers.get(name, [])) != 1:
        return False
    q = ctx.const(dq.input[0])
    s = ctx.const(dq.input[1]).astype(np.float64).reshape(-1)
    if s.size not in (1, len(factor)) or (s.size > 1 and _axis(dq) % q.ndim != 0):
        return False
    ctx.replace_input(dq, 1, (np.broadcast_to(s, factor.shape) * factor).astype(np.float32), tag)
    if len(dq.input) > 2 and dq.input[2] and s.size == 1:
        z = ctx.const(dq.input[2])
        ctx.replace_input(dq, 2, np.full(factor.shape, z.reshape(-1)[0], z.dtype), tag)
    if s.size == 1:
        dq.attribute.append(helper.make_attribute("axis", 0))
    return True


def _fold_one(ctx: _Ctx, q: onnx.NodeProto) -> str | None:
    """Fold the per-channel QuantizeLinear ``q``; the reason it cannot be folded, or None when done."""
    s = ctx.const(q.input[1])
    z = ctx.const(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    if s is None or s.ndim != 1 or z is None or z.size != s.size or np.unique(z).size != 1:
        return "its zero points are not one constant value"
    dqs = ctx.consumers.get(q.output[0], [])
    if not dqs or any(d.op_type != "DequantizeLinear" or list(d.input[1:]) != list(q.input[1:]) for d in dqs):
        return "it is not read by DequantizeLinear nodes with the same parameters"
    readers = [r for d in dqs for r in ctx.consumers.get(d.output[0], [])]
    if any(d.output[0] in ctx.outputs for d in dqs) or not readers:
        return "its dequantized tensor is a graph output"
    n = s.size
    for r in readers:
        w = ctx.const(r.input[1]) if len(r.input) > 1 else None
        wdq = ctx.producer.get(r.input[1]) if len(r.input) > 1 else None
        shape = w.shape if w is not None else (ctx.const(wdq.input[0]).shape if wdq is not None and
                                                 wdq.op_type == "DequantizeLinear" and
                                                 ctx.const(wdq.input[0]) is not None else None)
        group = next((a.i for a in r.attribute if a.name == "group"), 1)
        if r.op_type != "Conv" or shape is None or group != n or shape[0] != n or shape[1] != 1:
            return f"it is read by {r.op_type} node {r.name!r}, not only by depthwise convolutions"
    # the producer: conv / gemm, optionally through ReLU or Clip(0, M)
    t = q.input[0]
    act = ctx.producer.get(t)
    clip_max = None
    if act is not None and act.op_type in ("Relu", "Clip"):
        if ctx.only_reader(t) is not q:
            return "its tensor has other readers"
        if act.op_type == "Clip":
            lo = ctx.const(act.input[1]) if len(act.input) > 1 and act.input[1] else None
            hi = ctx.const(act.input[2]) if len(act.input) > 2 and act.input[2] else None
            if lo is None or lo.size != 1 or float(lo.reshape(-1)[0]) != 0.0 or (
                    len(act.input) > 2 and act.input[2] and (hi is None or hi.size != 1)):
                return "its Clip is not a constant clip at 0"
            clip_max = None if hi is None else float(hi.reshape(-1)[0])
        y = act.input[0]
    else:
        act, y = None, t
    prod = ctx.producer.get(y)
    if prod is None or prod.op_type not in ("Conv", "Gemm") or (act is not None and ctx.only_reader(y) is not act) \
            or (act is None and ctx.only_reader(y) is not q):
        return "it is not written by a convolution or gemm read by nothing else"
    if prod.op_type == "Gemm" and not next((a.i for a in prod.attribute if a.name == "transB"), 0):
        return "its producer is a Gemm without transB"
    qmax = float(np.iinfo(z.dtype).max)
    zero = float(z.reshape(-1)[0])
    # q(min(t, M)) == q(t) for every t iff M itself quantizes to the top: rint(M / s) + z >= qmax
    if clip_max is not None and np.any(clip_max / s.astype(np.float64) <= qmax - zero - 0.5):
        return "its Clip binds before the quantization saturates in some channel"
    big = float(np.max(s))
    k = (big / s.astype(np.float64))
    if not _scaled_weight(ctx, prod, 1, k, "chan"):
        return f"the weights of its producer {prod.name!r} are not per-channel constants"
    if len(prod.input) > 2 and prod.input[2] and not _scaled_weight(ctx, prod, 2, k, "chan"):
        return f"the bias of its producer {prod.name!r} is not a constant"
    for r in readers:
        if not _scaled_weight(ctx, r, 1, 1.0 / k, "chan"):
            return f"the weights of depthwise conv {r.name!r} are not per-channel constants"
    if act is not None and act.op_type == "Clip" and clip_max is not None:
        act.input[2] = ""  # never binds before saturation (checked above): a ReLU
    scale = np.array(big, np.float32)
    zp = np.array(z.reshape(-1)[0], z.dtype)
    for node in (q, *dqs):
        ctx.replace_input(node, 1, scale, "tensor")
        ctx.replace_input(node, 2, zp, "tensor")
        for a in list(node.attribute):
            if a.name == "axis":
                node.attribute.remove(a)
    return None


def fold_channel_scales(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Fold every foldable per-channel activation QuantizeLinear of ``model`` (a copy is returned).

    Returns the model and, per per-channel QuantizeLinear node left as it was, why it could not be folded
    (folded nodes are logged). Weight tensors whose scales change get new initializers.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    ctx = _Ctx(out.graph)
    left: dict[str, str] = {}
    folded = []
    for i in range(len(out.graph.node)):  # nodes are edited, never added or removed: indices stay valid
        node = out.graph.node[i]
        if node.op_type != "QuantizeLinear" or node.input[0] in ctx.inits:
            continue
        s = ctx.const(node.input[1]) if len(node.input) > 1 else None
        if s is None or s.size <= 1:
            continue
        trial = onnx.ModelProto()
        trial.CopyFrom(out)  # a failed fold must leave nothing half-rewritten
        label = node.name or node.output[0]
        why = _fold_one(ctx, node)
        if why is None:
            folded.append(label)
            out.graph.initializer.extend(ctx.new)
        else:
            left[label] = why
            out.CopyFrom(trial)
        ctx = _Ctx(out.graph)
    if folded:
        logger.info("per-channel activation scales folded into the neighbouring weight scales: %s", folded)
    return out, left
