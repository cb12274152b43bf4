"""Pre-quantized ONNX models (QDQ): strip QuantizeLinear/DequantizeLinear into a float graph + fixed qparams.

A QDQ model (onnxruntime ``quantize_static``, NNCF, PyTorch export) says, for every quantized tensor ``T``,
``QuantizeLinear(T, s, z) -> DequantizeLinear(., s, z)``, and for every weight
``DequantizeLinear(int8 constant, per-channel scales, 0)``. :func:`strip_qdq` turns it into

- the float graph the rest of the frontend imports (every activation ``Q -> DQ`` pair removed, every weight
  ``DQ`` folded to its float value ``(q - z) * s`` computed in float32 exactly as ONNX defines it), and
- a :class:`ModelQuant` table: per activation tensor its scale, zero point and storage dtype, and per
  conv / gemm / matmul node the per-output-channel weight scales.

:mod:`tvm_arq.quantize` then plans the float graph as usual but takes the table's parameters instead of
calibrated ranges, and recovers the model's integer weights as ``rint(w / s)`` (exact: ``w = q * s`` in
float32, ``|q| <= 128``), so the integer arithmetic uses exactly the producer's integers.

onnxruntime's QOperator format (``QLinearConv`` ...) is first rewritten into the same QDQ form by
:mod:`.qoperator`. Everything this module cannot represent exactly raises :class:`QDQError` naming the
node: a scale that is not finite and positive, a zero point outside its dtype, an axis out of range,
a weight ``DequantizeLinear`` on a non-constant tensor, asymmetric (non-zero zero point) weights,
per-axis activations, and int4 / int16 / float8 / blocked quantization (only 8-bit int8 / uint8
activations with per-tensor parameters and int8 weights, per-tensor or per-output-channel, are supported).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .loader import QDQError
from .qoperator import qoperator_to_qdq

logger = logging.getLogger(__name__)

__all__ = ["ActQuant", "ModelQuant", "QDQError", "WeightQuant", "is_quantized", "strip_qdq"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: ops whose input 1 is a weight with output channels along this axis (``transB`` handled for Gemm)
WEIGHT_OPS = {"Conv": 0, "Gemm": 0, "MatMul": -1}
#: storage dtypes of activations and weights that the integer kernels implement
ACT_DTYPES = ("int8", "uint8")
SUPPORTED = ("supported: 8-bit QuantizeLinear/DequantizeLinear with int8 or uint8 activations "
             "(per-tensor scale and zero point) and int8 weights with zero point 0 (per-tensor or per output "
             "channel)")


@dataclass(frozen=True)
class ActQuant:
    """Scale, zero point and storage dtype of one activation tensor, as the model states them."""

    scale: float
    zero_point: int
    dtype: str
    tensor: str  # the ONNX tensor name
    node: str    # the QuantizeLinear node that states them


@dataclass(frozen=True)
class WeightQuant:
    """Weight scales of one conv / gemm / matmul node: one per output channel (or one for the tensor)."""

    scales: tuple[float, ...]
    tensor: str
    node: str


@dataclass
class ModelQuant:
    """The quantization parameters a QDQ model fixes (see the module docstring).

    Keys are ONNX tensor names (activations) and ONNX node names (weights) as :func:`strip_qdq` returns
    them; :func:`tvm_arq.frontend.from_onnx` re-keys them by Relax binding / parameter name.
    """

    activations: dict[str, ActQuant] = field(default_factory=dict)
    weights: dict[str, WeightQuant] = field(default_factory=dict)
    source: str = "QDQ"
    #: valid quantization the integer kernels cannot reproduce (per-axis activations, asymmetric weights): the
    #: float graph is still exact, so the model can be re-quantized with calibration data; building it with
    #: the model's own parameters raises :class:`QDQError` with these messages
    unsupported: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"source": self.source,
                           "activations": {k: vars(v) for k, v in self.activations.items()},
                           "weights": {k: {**vars(v), "scales": list(v.scales)} for k, v in self.weights.items()},
                           "unsupported": self.unsupported})

    @classmethod
    def from_json(cls, text: str) -> ModelQuant:
        d = json.loads(text)
        return cls({k: ActQuant(**v) for k, v in d["activations"].items()},
                   {k: WeightQuant(**{**v, "scales": tuple(v["scales"])}) for k, v in d["weights"].items()},
                   d.get("source", "QDQ"), list(d.get("unsupported", [])))

    def check_supported(self) -> None:
        """Raise :class:`QDQError` if the model's own parameters cannot be used as they are."""
        if self.unsupported:
            more = f" (and {len(self.unsupported) - 1} more)" if len(self.unsupported) > 1 else ""
            raise QDQError(f"{self.unsupported[0]}{more}. Give calibration data to re-quantize the model with "
                           "tvm_arq's own parameters (its float graph is exact)")


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the graph holds QuantizeLinear / DequantizeLinear or QLinear* (QOperator) nodes."""
    return any(n.op_type in QDQ_OPS or n.op_type.startswith("QLinear") or n.op_type == "QGemm"
               for n in model.graph.node)


def _label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _dtype_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


class _Graph:
    """Constants and producers of one ONNX graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.consts: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = n.attribute[0].t
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _qparams(g: _Graph, node: onnx.NodeProto, rank: int | None) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Validated ``(scale, zero_point, storage dtype, axis)`` of a QuantizeLinear / DequantizeLinear node."""
    who = f"{node.op_type} node {_label(node)!r}"
    if _attr(node, "block_size", 0):
        raise QDQError(f"{who}: blocked quantization (block_size={_attr(node, 'block_size')}) is not supported; "
                       + SUPPORTED)
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        raise QDQError(f"{who}: its scale {node.input[1] if len(node.input) > 1 else ''!r} is not a constant; "
                       + SUPPORTED)
    scale = scale.astype(np.float32)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        bad = scale[~(np.isfinite(scale) & (scale > 0))].reshape(-1)[:3].tolist()
        raise QDQError(f"{who}: scale must be finite and > 0, got {bad} (a degenerate calibration range?)")
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    if zp_name:
        zt = g.consts.get(zp_name)
        if zt is None:
            raise QDQError(f"{who}: its zero point {zp_name!r} is not a constant")
        dtype = _dtype_name(zt.data_type)
        zp = numpy_helper.to_array(zt)
        raw = np.asarray(list(zt.int32_data), np.int64) if zt.int32_data else zp.astype(np.int64)
    else:
        out_dt = _attr(node, "output_dtype", 0)
        dtype = _dtype_name(out_dt) if out_dt else "uint8"
        zp = np.zeros(scale.shape, np.int64)
        raw = zp
    if node.op_type == "QuantizeLinear" and _attr(node, "output_dtype", 0):
        dtype = _dtype_name(_attr(node, "output_dtype"))
    if dtype not in ("int8", "uint8", "int32"):
        raise QDQError(f"{who}: {dtype} quantization is not supported; {SUPPORTED}")
    if dtype != "int32":
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        if raw.size and (raw.min() < lo or raw.max() > hi):
            raise QDQError(f"{who}: zero point {raw.reshape(-1)[:3].tolist()} is out of range for {dtype} "
                           f"[{lo}, {hi}]")
    if zp.size != scale.size and zp.size != 1:
        raise QDQError(f"{who}: {scale.size} scale(s) but {zp.size} zero point(s)")
    axis = int(_attr(node, "axis", 1))
    if scale.size > 1 and rank is not None and not -rank <= axis < rank:
        raise QDQError(f"{who}: axis {axis} is out of range for a tensor of rank {rank}")
    if scale.size > 1 and rank is not None:
        axis %= rank
    return scale, zp.astype(np.int64), dtype, axis


def _rank(g: _Graph, shapes: dict[str, int], name: str) -> int | None:
    c = g.const(name)
    return c.ndim if c is not None else shapes.get(name)


def _weight_axis(consumer: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of input 1 (the weight) of a conv / gemm / matmul node."""
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    return WEIGHT_OPS[consumer.op_type] % rank


def _fold_constant_dq(g: _Graph, node: onnx.NodeProto, q: np.ndarray, shapes: dict[str, int],
                      table: ModelQuant) -> np.ndarray:
    """Float value of a DequantizeLinear of constant integers; a weight's scales go into ``table``."""
    scale, zp, dtype, axis = _qparams(g, node, q.ndim)
    who = f"DequantizeLinear node {_label(node)!r}"
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = -1
    s, z = scale.reshape(shape), zp.reshape(shape if zp.size > 1 else [1] * q.ndim)
    value = ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)
    users = [(c, list(c.input).index(node.output[0])) for c in g.consumers.get(node.output[0], [])]
    weight_of = [c for c, i in users if c.op_type in WEIGHT_OPS and i == 1]
    if not weight_of:
        return value  # a bias (int32) or another constant: folded to float
    if dtype != "int8" or np.any(zp != 0):
        table.unsupported.append(
            f"{who}: weights of {', '.join(repr(_label(c)) for c in weight_of)} are {dtype} with zero "
            f"point(s) {np.unique(zp)[:4].tolist()}: asymmetric or unsigned weights are not supported "
            f"(re-quantize with symmetric int8 weights, e.g. weight_type=QInt8); {SUPPORTED}")
        return value
    for c in weight_of:
        if scale.size > 1 and axis != _weight_axis(c, q.ndim):
            raise QDQError(f"{who}: per-axis weight scales along axis {axis}, but the output channels of "
                           f"{c.op_type} node {_label(c)!r} are on axis {_weight_axis(c, q.ndim)}")
        table.weights[_label(c)] = WeightQuant(tuple(float(v) for v in scale.reshape(-1)), node.input[0], _label(node))
    return value


def _quantize_const(g: _Graph, qnode: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    """QuantizeLinear of a constant float tensor (fake-quantized weights), as ONNX defines it."""
    scale, zp, dtype, axis = _qparams(g, qnode, x.ndim)
    shape = [1] * x.ndim
    if scale.size > 1:
        shape[axis] = -1
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    v = np.rint(x.astype(np.float32) / scale.reshape(shape)) + zp.reshape(shape if zp.size > 1 else [1] * x.ndim)
    return np.clip(v, lo, hi).astype(dtype)


def strip_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, ModelQuant]:
    """Remove the QuantizeLinear / DequantizeLinear nodes of a QDQ model (see the module docstring).

    Returns the float model (a copy) and the table of fixed parameters keyed by ONNX tensor names
    (activations) and ONNX node names (weights).

    Raises
    ------
    QDQError
        For inputs the integer kernels cannot reproduce exactly, naming the node.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    source = "QDQ"
    if any(n.op_type.startswith("QLinear") or n.op_type == "QGemm" for n in out.graph.node):
        out = qoperator_to_qdq(out)
        source = "QOperator"
    from .qdq_channels import fold_channel_scales

    out, not_folded = fold_channel_scales(out)
    graph = out.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(out).graph
        shapes = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in
                  list(inferred.value_info) + list(inferred.input) + list(inferred.output)
                  if vi.type.tensor_type.HasField("shape")}
    except Exception:  # noqa: BLE001 - ranks are only needed for the axis check
        shapes = {}
    g = _Graph(graph)
    table = ModelQuant(source=source)
    rename: dict[str, str] = {}   # tensor -> tensor that replaces it
    new_consts: list[onnx.TensorProto] = []
    drop: set[int] = set()
    for idx, node in enumerate(graph.node):
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        src = node.input[0]
        q = g.const(src)
        prod = g.producer.get(src)
        if q is None and prod is not None and prod.op_type == "QuantizeLinear" and g.const(prod.input[0]) is not None:
            q = _quantize_const(g, prod, g.const(prod.input[0]))  # Q(float weight) -> DQ
        if q is not None:
            value = _fold_constant_dq(g, node, q, shapes, table)
            new_consts.append(numpy_helper.from_array(value, node.output[0]))
            drop.add(idx)
            continue
        weight_of = [c for c in g.consumers.get(node.output[0], [])
                     if c.op_type in WEIGHT_OPS and len(c.input) > 1 and c.input[1] == node.output[0]]
        if weight_of:
            raise QDQError(f"DequantizeLinear node {_label(node)!r}: it dequantizes the weight of "
                           f"{weight_of[0].op_type} node {_label(weight_of[0])!r} from the non-constant tensor "
                           f"{src!r}; weights must be constant integers (initializers)")
        if prod is None or prod.op_type != "QuantizeLinear":
            raise QDQError(f"DequantizeLinear node {_label(node)!r}: its input {src!r} is neither a constant nor "
                           "the output of a QuantizeLinear (integer model inputs are not supported)")
        scale, zp, dtype, _ = _qparams(g, node, _rank(g, shapes, src))
        qs, qz, qdt, _ = _qparams(g, prod, _rank(g, shapes, prod.input[0]))
        if scale.size > 1 or qs.size > 1:
            why = not_folded.get(_label(prod), "")
            table.unsupported.append(f"QuantizeLinear node {_label(prod)!r}: per-axis activation quantization is "
                                     "supported only where it folds into per-channel weights (written by a conv "
                                     "/ gemm, read only by depthwise convolutions, one zero point)"
                                     f"{'; here ' + why if why else ''}; {SUPPORTED}")
            rename[node.output[0]] = prod.input[0]
            drop.add(idx)
            continue
        if dtype not in ACT_DTYPES or qdt not in ACT_DTYPES:
            raise QDQError(f"QuantizeLinear node {_label(prod)!r}: {qdt} activations are not supported; {SUPPORTED}")
        if np.float32(scale.item()) != np.float32(qs.item()) or int(zp.item()) != int(qz.item()) or dtype != qdt:
            raise QDQError(f"DequantizeLinear node {_label(node)!r} uses scale {scale.item()}, zero point "
                           f"{zp.item()} but its QuantizeLinear {_label(prod)!r} {qs.item()}, {qz.item()}: "
                           "requantization between them is not supported")
        t = prod.input[0]
        act = ActQuant(float(qs.item()), int(qz.item()), qdt, t, _label(prod))
        old = table.activations.get(t)
        if old is not None and (old.scale, old.zero_point, old.dtype) != (act.scale, act.zero_point, act.dtype):
            logger.warning("tensor %r is quantized twice with different parameters (%s and %s): using the first",
                           t, old.node, act.node)
        else:
            table.activations[t] = act
        rename[node.output[0]] = t
        drop.add(idx)
    stripped = {graph.node[i].output[0] for i in drop}
    for idx, node in enumerate(graph.node):  # the QuantizeLinear nodes now read by nobody
        if node.op_type == "QuantizeLinear" and idx not in drop:
            readers = [c for c in g.consumers.get(node.output[0], []) if c.output[0] not in stripped]
            if readers or any(o.name == node.output[0] for o in graph.output):
                who = readers[0].op_type + f" node {_label(readers[0])!r}" if readers else "a graph output"
                raise QDQError(f"QuantizeLinear node {_label(node)!r}: its integer output is read by {who}; only "
                               "QuantizeLinear -> DequantizeLinear pairs are supported")
            drop.add(idx)
    keep = [n for i, n in enumerate(graph.node) if i not in drop]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    for o in graph.output:
        if o.name in rename:
            o.name = rename[o.name]
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    inits = [t for t in graph.initializer if t.name in used] + [t for t in new_consts if t.name in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    logger.info("stripped %s model: %d activation tensor(s) and %d weight tensor(s) with fixed parameters",
                source, len(table.activations), len(table.weights))
    return out, table
