"""Hypothesis strategies of random, non-degenerate float graphs over every op the quantizer supports.

A :class:`GraphSpec` is a small data-flow graph: an input tensor, then :class:`Node` s, each reading one or
two earlier tensors. :func:`graph_specs` draws them so that

- the first node is an anchor (a conv on the input), and the input feeds nothing else, so every op runs on
  quantized tensors;
- a binary op (add, sub, mul, concat) combines two *distinct* live tensors (``mul`` also broadcasts a
  ``(N, C, 1, 1)`` gate, as squeeze-excitation does);
- no op is a no-op (a pad pads, a slice cuts, a resize changes the size, a pool is not 1x1 with stride 1,
  a reshape / transpose changes the layout);
- the output is the last node and every node reaches it (dead nodes are pruned after drawing);
- channel counts are ragged (any number, rarely a multiple of 16), so packed kernels get ragged tiles;
- the evaluation inputs are narrower or wider than the calibration set (``eval_scale``): wider ones
  saturate.

:func:`build_graph` turns a spec into a Relax module (weights from ``spec.seed``); :func:`features` names
what a spec covers (op families and variants), so a test can check the strategy covers every op.
Everything is plain data, so shrinking yields a minimal, printable spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from hypothesis import strategies as st
from tvm import relax
from tvm.relax import op as R

from tests.graphs import hard_sigmoid, hardswish_decomposed
from tvm_arq.config import Scheme

Shape = tuple[int, ...]

#: (scheme, activation dtype) pairs the quantizer supports
SCHEMES = ((Scheme.HYBRID, "int8"), (Scheme.HYBRID, "uint8"), (Scheme.SYMMETRIC, "int8"),
           (Scheme.SYMMETRIC, "uint8"), (Scheme.ASYMMETRIC, "uint8"), (Scheme.ASYMMETRIC, "int8"))
ACTS = ("none", "relu", "relu6", "clip_sym")
LUTS = ("sigmoid", "tanh", "silu", "hardswish", "hard_sigmoid", "gelu", "leaky")
#: every feature :func:`features` can report; the coverage test requires all of them
FEATURES = frozenset({
    "conv", "conv:stride2", "conv:dilation2", "conv:asym_pad", "conv:k1", "gconv", "dwconv", "dense",
    "add", "sub", "mul", "mul:broadcast", "concat", "maxpool", "avgpool", "gpool:mean", "gpool:adaptive",
    "reduce:mean", "reduce:max", "reduce:min", "reduce:sum", "resize:nearest", "resize:linear", "pad",
    "slice", "split", "reshape", "squeeze", "expand_dims", "flatten", "transpose", "act:relu", "act:relu6", "act:clip_sym", "prelu",
    *(f"lut:{n}" for n in LUTS), "softmax", "layer_norm", "rms_norm", "output:spatial", "output:vector",
    "ragged_channels",
})
#: largest tensor a graph holds (keeps a graph's build and run cheap)
MAX_ELEMS = 3000


@dataclass(frozen=True)
class Node:
    """One op: ``op`` reads tensors ``inputs`` (0 is the graph input, ``i + 1`` the output of node ``i``)."""

    op: str
    inputs: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def a(self) -> dict[str, Any]:
        return dict(self.attrs)


@dataclass(frozen=True)
class GraphSpec:
    """A random graph and how to quantize and evaluate it."""

    shape: Shape
    nodes: tuple[Node, ...]
    seed: int
    scheme: Scheme = Scheme.HYBRID
    act_dtype: str = "int8"
    skew: float = 0.0  # mean of the calibration inputs
    eval_scale: float = 1.0  # spread of the evaluation inputs relative to the calibration ones (>1 saturates)


def _node(op: str, inputs: tuple[int, ...], **attrs: Any) -> Node:
    return Node(op, inputs, tuple(sorted(attrs.items())))


def _conv_out(n: int, k: int, s: int, d: int, p0: int, p1: int) -> int:
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def out_shape(node: Node, shapes: list[Shape]) -> Shape:
    """Output shape of ``node`` given the shapes of the tensors so far."""
    a, x = node.a, shapes[node.inputs[0]]
    op = node.op
    if op in ("conv", "gconv", "dwconv"):
        p = a["pad"]
        return (x[0], a["cout"], _conv_out(x[2], a["k"], a["stride"], a["dilation"], p[0], p[2]),
                _conv_out(x[3], a["k"], a["stride"], a["dilation"], p[1], p[3]))
    if op in ("maxpool", "avgpool"):
        p, d = a["pad"], a.get("dilation", 1)
        return (x[0], x[1], _conv_out(x[2], a["k"], a["stride"], d, p[0], p[2]),
                _conv_out(x[3], a["k"], a["stride"], d, p[1], p[3]))
    if op == "gpool":
        return (x[0], x[1], 1, 1)
    if op == "reduce":
        ax = a["axis"] % len(x)
        return tuple(1 if i == ax else v for i, v in enumerate(x)) if a["keepdims"] else \
            tuple(v for i, v in enumerate(x) if i != ax)
    if op == "resize":
        return (x[0], x[1], a["oh"], a["ow"])
    if op == "pad":
        p = a["pad"]
        return (x[0], x[1], x[2] + p[0] + p[2], x[3] + p[1] + p[3])
    if op == "slice":
        b, e, s = a["begin"], a["end"], a["stride"]
        return tuple(len(range(b[i], e[i], s[i])) for i in range(4))
    if op in ("reshape", "flatten", "squeeze", "expand_dims"):
        return a["to"]
    if op == "split":
        return (x[0], x[1] // 2, *x[2:])
    if op == "transpose":
        return tuple(x[i] for i in a["perm"])
    if op == "dense":
        return (x[0], a["cout"])
    if op == "concat":
        y = shapes[node.inputs[1]]
        ax = a["axis"] % len(x)
        return tuple(x[i] + y[i] if i == ax else x[i] for i in range(len(x)))
    if op in ("add", "sub", "mul"):
        return tuple(np.broadcast_shapes(x, shapes[node.inputs[1]]))
    return x  # element-wise: act, prelu, lut, softmax, norms


def _elems(s: Shape) -> int:
    return int(np.prod(s))


# -- drawing ---------------------------------------------------------------------------------------


def _pads(draw, k: int) -> tuple[int, int, int, int]:
    return tuple(draw(st.integers(0, max(0, k - 1))) for _ in range(4))


def _draw_conv(draw, op: str, i: int, x: Shape, max_c: int = 24) -> Node | None:
    c, h, w = x[1], x[2], x[3]
    k = draw(st.sampled_from([1, 3, 2]))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2])) if k > 1 else 1
    pad = _pads(draw, k * dilation - dilation + 1) if k > 1 else (0, 0, 0, 0)
    if op == "conv":
        groups, cout = 1, draw(st.integers(1, max_c))
    elif op == "gconv":
        divs = [g for g in (2, 3, 4) if c % g == 0]
        if not divs:
            return None
        groups = draw(st.sampled_from(divs))
        cout = groups * draw(st.integers(1, 6))
    else:  # depthwise, channel multiplier 1 or 2
        groups, cout = c, c * draw(st.sampled_from([1, 2]))
    if min(_conv_out(h, k, stride, dilation, pad[0], pad[2]), _conv_out(w, k, stride, dilation, pad[1], pad[3])) < 1:
        return None
    return _node(op, (i,), k=k, stride=stride, dilation=dilation, pad=pad, groups=groups, cout=cout,
                 act=draw(st.sampled_from(ACTS)))


def _draw_unary(draw, op: str, i: int, x: Shape, max_c: int = 24) -> Node | None:  # noqa: C901, PLR0911, PLR0912
    four = len(x) == 4
    if op in ("conv", "gconv", "dwconv"):
        return _draw_conv(draw, op, i, x, max_c) if four else None
    if op == "dense":
        if len(x) != 2 or x[1] > 512:
            return None
        return _node("dense", (i,), cout=draw(st.integers(1, max_c)), act=draw(st.sampled_from(ACTS)))
    if op in ("maxpool", "avgpool"):
        if not four:
            return None
        k = draw(st.sampled_from([2, 3]))
        stride = draw(st.sampled_from([1, 2]))
        dilation = draw(st.sampled_from([1, 2])) if op == "maxpool" else 1
        pad = _pads(draw, k)  # below the window, as ONNX requires
        if min(_conv_out(x[2], k, stride, dilation, pad[0], pad[2]),
               _conv_out(x[3], k, stride, dilation, pad[1], pad[3])) < 1:
            return None
        extra = {"count_include_pad": draw(st.booleans())} if op == "avgpool" else {"dilation": dilation}
        return _node(op, (i,), k=k, stride=stride, pad=pad, **extra)
    if op == "gpool":
        return _node(op, (i,), kind=draw(st.sampled_from(["mean", "adaptive"]))) if four and x[2] * x[3] > 1 \
            else None
    if op == "reduce":
        axes = [a for a in range(1, len(x)) if x[a] > 1]
        if not axes:
            return None
        return _node(op, (i,), kind=draw(st.sampled_from(["mean", "max", "min", "sum"])),
                     axis=draw(st.sampled_from(axes)), keepdims=len(x) == 2 or draw(st.booleans()))
    if op == "resize":
        if not four:
            return None
        oh = draw(st.integers(1, 12).filter(lambda v: v != x[2]))
        ow = draw(st.integers(1, 12))
        method = draw(st.sampled_from(["nearest_neighbor", "linear"]))
        mode = draw(st.sampled_from(["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"]))
        rounding = draw(st.sampled_from(["floor", "round_prefer_ceil", "round_prefer_floor", "ceil"])) \
            if method == "nearest_neighbor" else ""
        if mode == "align_corners" and min(oh, ow) == 1:
            return None  # TVM's float resize divides by (out - 1): the float model does not compile
        return _node(op, (i,), oh=oh, ow=ow, method=method, mode=mode, rounding=rounding)
    if op == "pad":
        if not four:
            return None
        pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
        return _node(op, (i,), pad=pad) if any(pad) else None
    if op == "slice":
        if not four:
            return None
        ax = draw(st.sampled_from([1, 2, 3]))
        if x[ax] < 2:
            return None
        b = draw(st.integers(0, x[ax] - 1))
        e = draw(st.integers(b + 1, x[ax]))
        s = draw(st.sampled_from([1, 2]))
        if (b, e, s) == (0, x[ax], 1):
            return None
        begin, end, stride = [0, 0, 0, 0], list(x), [1, 1, 1, 1]
        begin[ax], end[ax], stride[ax] = b, e, s
        return _node(op, (i,), begin=tuple(begin), end=tuple(end), stride=tuple(stride), axis=ax)
    if op == "split":  # in two along the channels; one half goes on (the other is computed and dropped)
        return _node(op, (i,), item=draw(st.sampled_from([0, 1]))) if x[1] >= 2 and x[1] % 2 == 0 else None
    if op == "squeeze":
        ones = [k for k in range(1, len(x)) if x[k] == 1]
        if len(x) < 3 or not ones:
            return None
        ax = draw(st.sampled_from(ones))
        return _node(op, (i,), axis=ax, to=tuple(v for k, v in enumerate(x) if k != ax))
    if op == "expand_dims":
        if len(x) > 3:
            return None
        ax = draw(st.integers(1, len(x)))
        return _node(op, (i,), axis=ax, to=(*x[:ax], 1, *x[ax:]))
    if op == "flatten":
        return _node(op, (i,), to=(x[0], _elems(x[1:]))) if len(x) > 2 and _elems(x[1:]) <= 256 else None
    if op == "reshape":
        if len(x) == 4:
            to = draw(st.sampled_from([(x[0], x[1], x[2] * x[3]), (x[0], x[1] * x[2], x[3], 1)]))
        elif len(x) == 3:
            to = (x[0], x[1], x[2], 1)
        else:
            to = (x[0], x[1], 1, 1)
        return _node(op, (i,), to=to) if to != x else None
    if op == "transpose":
        if len(x) < 3:
            return None
        perms = [(0, 1, 3, 2), (0, 2, 3, 1), (0, 3, 1, 2)] if four else [(0, 2, 1)]
        perm = draw(st.sampled_from(perms))
        moved = [p for p in perm if x[p] > 1]
        return _node(op, (i,), perm=perm) if moved != sorted(moved) else None
    if op == "act":
        return _node(op, (i,), kind=draw(st.sampled_from(ACTS[1:])))
    if op == "prelu":
        return _node(op, (i,)) if four else None
    if op == "lut":
        kind = draw(st.sampled_from(LUTS))
        # hardswish in the three decomposed forms importers produce; gelu exact (0) or its tanh form (1)
        nvar = {"hardswish": 2, "gelu": 1}.get(kind, 0)
        return _node(op, (i,), kind=kind, variant=draw(st.integers(0, nvar)))
    if op == "softmax":
        return _node(op, (i,), axis=draw(st.sampled_from([-1, 1]))) if x[-1] > 1 and x[1] > 1 else None
    if op in ("layer_norm", "rms_norm"):
        n_ax = draw(st.sampled_from([1, 2])) if len(x) >= 3 else 1
        if _elems(x[-n_ax:]) < 2 or _elems(x[-n_ax:]) > 256:
            return None
        return _node(op, (i,), axes=tuple(range(len(x) - n_ax, len(x))))
    raise AssertionError(op)


def _unary_ops(x: Shape) -> list[str]:
    """Unary ops that can apply to a tensor of shape ``x`` (a vector's head is often a dense)."""
    if len(x) == 2:
        return ["dense", "dense", "dense", "act", "lut", "softmax", "layer_norm", "rms_norm", "reshape", "reduce",
                "expand_dims"]
    ops = [op for op in UNARY if op != "dense"] + ["lut", "reduce"]  # many variants: drawn twice as often
    return ops + ["squeeze", "squeeze"] if 1 in x[1:] else ops  # (N, C, 1, 1) after a global pool


UNARY = ("conv", "gconv", "dwconv", "dense", "maxpool", "avgpool", "gpool", "reduce", "resize", "pad", "slice",
         "split", "flatten", "reshape", "squeeze", "expand_dims", "transpose", "act", "prelu", "lut", "softmax", "layer_norm", "rms_norm")
BINARY = ("add", "sub", "mul", "concat")


def _partners(op: str, i: int, shapes: list[Shape], live: list[int]) -> list[int]:
    x = shapes[i]
    out = []
    for j in live:
        y = shapes[j]
        if j == i or len(y) != len(x):
            continue
        gate = len(x) == 4 and (y == (x[0], x[1], 1, 1) or x == (y[0], y[1], 1, 1))  # squeeze-excitation
        if y == x or (op == "mul" and gate) or \
                (op == "concat" and y[:1] + y[2:] == x[:1] + x[2:]):
            out.append(j)
    return out


def _prune(nodes: list[Node]) -> tuple[Node, ...]:
    """Drop the nodes the last one does not depend on and renumber the rest."""
    need = {len(nodes)}
    for k in range(len(nodes), 0, -1):
        if k in need:
            need.update(nodes[k - 1].inputs)
    keep = sorted(k for k in need if k > 0)
    new = {0: 0} | {k: n + 1 for n, k in enumerate(keep)}
    return tuple(Node(nodes[k - 1].op, tuple(new[i] for i in nodes[k - 1].inputs), nodes[k - 1].attrs)
                 for k in keep)


@st.composite
def graph_specs(draw, max_nodes: int = 8, max_channels: int = 24) -> GraphSpec:
    """A random non-degenerate :class:`GraphSpec` of up to ``1 + max_nodes`` nodes (before pruning), convs and
    denses of up to ``max_channels`` output channels."""
    c = draw(st.integers(1, 20))
    shape = (1, c, draw(st.integers(3, 10)), draw(st.integers(3, 10)))
    shapes: list[Shape] = [shape]
    first = None
    while first is None:
        first = _draw_conv(draw, draw(st.sampled_from(["conv", "dwconv", "gconv"])), 0, shape, max_channels)
    nodes = [first]
    shapes.append(out_shape(first, shapes))
    for _ in range(draw(st.integers(3, max_nodes))):
        live = list(range(1, len(shapes)))  # the input feeds the first anchor only
        used = {j for n in nodes for j in n.inputs}
        # mostly the newest tensor (a chain); sometimes an older one (a branch, joined later by a binary op)
        i = live[-1 - min(len(live) - 1, draw(st.sampled_from([0, 0, 0, 1, 2])))]
        ops = [op for op in BINARY if _partners(op, i, shapes, live)] + _unary_ops(shapes[i])
        op = draw(st.sampled_from(ops))
        if op in BINARY:
            cands = _partners(op, i, shapes, live)
            dangling = [j for j in cands if j not in used]
            j = draw(st.sampled_from(dangling or cands))
            node = _node(op, (i, j), axis=1) if op == "concat" else _node(op, (i, j))
        else:
            node = _draw_unary(draw, op, i, shapes[i], max_channels)
        if node is None:
            continue
        s = out_shape(node, shapes)
        if _elems(s) > MAX_ELEMS or min(s) < 1:
            continue
        nodes.append(node)
        shapes.append(s)
    scheme, act_dtype = draw(st.sampled_from(SCHEMES))
    return GraphSpec(shape=shape, nodes=_prune(nodes), seed=draw(st.integers(0, 2**16)), scheme=scheme,
                     act_dtype=act_dtype, skew=draw(st.sampled_from([0.0, 0.7, -0.5])),
                     eval_scale=draw(st.sampled_from([1.0, 0.5, 3.0])))


# -- analysis --------------------------------------------------------------------------------------


def shapes_of(spec: GraphSpec) -> list[Shape]:
    shapes = [spec.shape]
    for n in spec.nodes:
        shapes.append(out_shape(n, shapes))
    return shapes


def features(spec: GraphSpec) -> set[str]:  # noqa: C901
    """The op families and variants ``spec`` exercises (see :data:`FEATURES`)."""
    f: set[str] = set()
    shapes = shapes_of(spec)
    for n in spec.nodes:
        a = n.a
        x = shapes[n.inputs[0]]
        if n.op in ("conv", "gconv", "dwconv"):
            f.add(n.op)
            if n.op == "conv":
                f |= {"conv:stride2"} if a["stride"] == 2 else set()
                f |= {"conv:dilation2"} if a["dilation"] == 2 else set()
                f |= {"conv:k1"} if a["k"] == 1 else set()
                f |= {"conv:asym_pad"} if a["pad"][:2] != a["pad"][2:] else set()
            if a["act"] != "none":
                f.add(f"act:{a['act']}")
            if a["cout"] % 16:
                f.add("ragged_channels")
        elif n.op in ("gpool", "reduce", "lut", "act"):
            f.add(f"{n.op}:{a['kind']}")
        elif n.op == "resize":
            f.add("resize:nearest" if a["method"] == "nearest_neighbor" else "resize:linear")
        elif n.op == "mul" and shapes[n.inputs[1]] != x:  # either operand may be the gate
            f |= {"mul", "mul:broadcast"}
        else:
            f.add(n.op)
    f.add("output:spatial" if len(shapes[-1]) == 4 and shapes[-1][2] * shapes[-1][3] > 1 else "output:vector")
    return f


def degenerate(spec: GraphSpec) -> list[str]:
    """Why ``spec`` is degenerate (empty: it is not)."""
    why = []
    shapes = shapes_of(spec)
    if not spec.nodes or spec.nodes[0].op not in ("conv", "gconv", "dwconv") or spec.nodes[0].inputs != (0,):
        why.append("the first node is not an anchor on the input")
    used = {j for n in spec.nodes for j in n.inputs}
    dead = [k for k in range(1, len(spec.nodes)) if k not in used]
    if dead:
        why.append(f"dead nodes {dead}")
    if any(0 in n.inputs for n in spec.nodes[1:]):
        why.append("the float input feeds a node other than the first anchor")
    for k, n in enumerate(spec.nodes, 1):
        if n.op in BINARY and n.inputs[0] == n.inputs[1]:
            why.append(f"node {k}: {n.op} of a tensor with itself")
        x = shapes[n.inputs[0]]
        if n.op in ("pad", "slice", "resize", "reshape", "flatten", "split", "squeeze", "expand_dims") \
                and shapes[k] == x:
            why.append(f"node {k}: {n.op} keeps the shape")
        if n.op == "transpose" and [p for p in n.a["perm"] if x[p] > 1] == sorted(p for p in n.a["perm"] if x[p] > 1):
            why.append(f"node {k}: transpose moves nothing")
        if n.op in ("maxpool", "avgpool") and n.a["k"] == 1 and n.a["stride"] == 1:
            why.append(f"node {k}: 1x1 pool")
    return why


# -- building --------------------------------------------------------------------------------------


def build_graph(spec: GraphSpec) -> tvm.IRModule:  # noqa: C901, PLR0915
    """The float Relax module of ``spec``."""
    rng = np.random.default_rng(spec.seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.shape, "float32"))

    def const(*shape, scale=0.5):
        return relax.const((rng.normal(size=shape) * scale).astype("float32"))

    def epilogue(y, cout, act, rank=4):
        y = bb.emit(R.add(y, const(*((1, cout, 1, 1) if rank == 4 else (cout,)), scale=0.3)))
        if act == "relu":
            return bb.emit(R.nn.relu(y))
        if act == "relu6":
            return bb.emit(R.clip(y, 0.0, 6.0))
        if act == "clip_sym":
            return bb.emit(R.clip(y, -2.0, 3.0))
        return y

    with bb.function("main", [x]):
        with bb.dataflow():
            ts = [x]
            for n in spec.nodes:
                a, t = n.a, ts[n.inputs[0]]
                xs = tuple(int(d) for d in t.ty.shape.values)
                op = n.op
                if op in ("conv", "gconv", "dwconv"):
                    cin = xs[1] // a["groups"]
                    wt = const(a["cout"], cin, a["k"], a["k"], scale=1.0 / np.sqrt(cin * a["k"] ** 2))
                    y = bb.emit(R.nn.conv2d(t, wt, strides=a["stride"], padding=list(a["pad"]),
                                            dilation=a["dilation"], groups=a["groups"]))
                    y = epilogue(y, a["cout"], a["act"])
                elif op == "dense":
                    y = bb.emit(R.matmul(t, const(xs[1], a["cout"], scale=1.0 / np.sqrt(xs[1]))))
                    y = epilogue(y, a["cout"], a["act"], rank=2)
                elif op == "maxpool":
                    y = bb.emit(R.nn.max_pool2d(t, a["k"], a["stride"], list(a["pad"]), a["dilation"]))
                elif op == "avgpool":
                    y = bb.emit(R.nn.avg_pool2d(t, a["k"], a["stride"], list(a["pad"]),
                                                count_include_pad=a["count_include_pad"]))
                elif op == "gpool":
                    y = bb.emit(R.mean(t, axis=[2, 3], keepdims=True) if a["kind"] == "mean"
                                else R.nn.adaptive_avg_pool2d(t, (1, 1)))
                elif op == "reduce":
                    fn = {"mean": R.mean, "max": R.max, "min": R.min, "sum": R.sum}[a["kind"]]
                    y = bb.emit(fn(t, axis=[a["axis"]], keepdims=a["keepdims"]))
                elif op == "resize":
                    y = bb.emit(R.image.resize2d(t, (a["oh"], a["ow"]), method=a["method"],
                                                 coordinate_transformation_mode=a["mode"],
                                                 rounding_method=a["rounding"]))
                elif op == "pad":
                    p = a["pad"]
                    y = bb.emit(R.nn.pad(t, [0, 0, 0, 0, p[0], p[2], p[1], p[3]]))
                elif op == "slice":
                    y = bb.emit(R.strided_slice(t, axes=[0, 1, 2, 3], begin=list(a["begin"]), end=list(a["end"]),
                                                strides=list(a["stride"])))
                elif op in ("reshape", "flatten"):
                    y = bb.emit(R.reshape(t, a["to"]))
                elif op == "squeeze":
                    y = bb.emit(R.squeeze(t, [a["axis"]]))
                elif op == "expand_dims":
                    y = bb.emit(R.expand_dims(t, a["axis"]))
                elif op == "split":
                    y = bb.emit(relax.TupleGetItem(bb.emit(R.split(t, 2, axis=1)), a["item"]))
                elif op == "transpose":
                    y = bb.emit(R.permute_dims(t, list(a["perm"])))
                elif op == "act":
                    y = bb.emit(R.nn.relu(t) if a["kind"] == "relu" else
                                R.clip(t, 0.0, 6.0) if a["kind"] == "relu6" else R.clip(t, -1.0, 1.5))
                elif op == "prelu":
                    y = bb.emit(R.nn.prelu(t, relax.const(rng.uniform(-0.5, 0.8, size=xs[1]).astype("float32"))))
                elif op == "lut":
                    k = a["kind"]
                    if k == "sigmoid":
                        y = bb.emit(R.sigmoid(t))
                    elif k == "tanh":
                        y = bb.emit(R.tanh(t))
                    elif k == "silu":
                        y = bb.emit(R.multiply(t, bb.emit(R.sigmoid(t))))
                    elif k == "hardswish":
                        y = hardswish_decomposed(bb, t, a["variant"])
                    elif k == "hard_sigmoid":
                        y = hard_sigmoid(bb, t)
                    elif k == "gelu":
                        y = bb.emit(R.nn.gelu(t) if a["variant"] == 0 else R.nn.gelu_tanh(t))
                    else:
                        y = bb.emit(R.nn.leakyrelu(t, 0.1))
                elif op == "softmax":
                    y = bb.emit(R.nn.softmax(t, axis=a["axis"]))
                elif op in ("layer_norm", "rms_norm"):
                    ns = tuple(xs[i] for i in a["axes"])
                    gamma = relax.const((1.0 + 0.3 * rng.normal(size=ns)).astype("float32"))
                    if op == "layer_norm":
                        y = bb.emit(R.nn.layer_norm(t, gamma, const(*ns, scale=0.2), list(a["axes"])))
                    else:
                        y = bb.emit(R.nn.rms_norm(t, gamma, list(a["axes"])))
                elif op == "add":
                    y = bb.emit(R.add(t, ts[n.inputs[1]]))
                elif op == "sub":
                    y = bb.emit(R.subtract(t, ts[n.inputs[1]]))
                elif op == "mul":
                    y = bb.emit(R.multiply(t, ts[n.inputs[1]]))
                elif op == "concat":
                    y = bb.emit(R.concat([t, ts[n.inputs[1]]], axis=a["axis"]))
                else:
                    raise AssertionError(op)
                ts.append(y)
            out = bb.emit_output(ts[-1])
        bb.emit_func_output(out)
    return bb.get()


def inputs_of(spec: GraphSpec, n: int, seed: int, scale: float = 1.0) -> list[np.ndarray]:
    """``n`` inputs of ``spec``: normal, mean ``spec.skew``, standard deviation ``scale``."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=spec.shape) * scale + spec.skew).astype("float32") for _ in range(n)]
