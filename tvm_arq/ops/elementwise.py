"""Single-input element-wise subgraphs ("regions") and their float64 evaluation for lookup tables.

A *region* is a connected set of element-wise bindings (sigmoid, multiply, clip, ...) whose only
non-constant input is **one** tensor ``x`` and whose intermediates are used only inside the region:
``silu = x * sigmoid(x)``, ``hardswish = x * clip(x + 3, 0, 6) / 6``, ``hard_sigmoid = clip(a * x + b, 0, 1)``,
GELU, PReLU, LeakyReLU, tanh ... Any such function of an 8-bit input takes at most 256 values per
channel, so the whole region is realized as one integer lookup table (``qlut``) whose entries are
computed here, at compile time, in float64 from the region's own ops and constants (the table is
whatever the float graph computes, whichever way the frontend decomposed the activation).

Constants inside a region must be scalars or vectors along one axis of ``x`` (per-channel slopes,
e.g. PReLU); the table then has one row per channel.

``relax.erf`` on its own is deliberately not in :data:`EVALUATORS` (it stays a float op); GELU is
supported as ``relax.nn.gelu`` / ``relax.nn.gelu_tanh``, which is what the ONNX importer emits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm.ir.prim.expr
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from .irutil import tensor_shape

_IMM = (tvm.ir.prim.expr.FloatImm, tvm.ir.prim.expr.IntImm)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


#: Relax op -> float64 numpy implementation ``f(call, *args)`` (args already evaluated).
EVALUATORS: dict[str, Callable] = {
    "relax.add": lambda c, a, b: a + b,
    "relax.subtract": lambda c, a, b: a - b,
    "relax.multiply": lambda c, a, b: a * b,
    "relax.divide": lambda c, a, b: a / b,
    "relax.maximum": lambda c, a, b: np.maximum(a, b),
    "relax.minimum": lambda c, a, b: np.minimum(a, b),
    "relax.power": lambda c, a, b: np.power(a, b),
    "relax.negative": lambda c, a: -a,
    "relax.abs": lambda c, a: np.abs(a),
    "relax.sigmoid": lambda c, a: _sigmoid(a),
    "relax.tanh": lambda c, a: np.tanh(a),
    "relax.exp": lambda c, a: np.exp(a),
    "relax.log": lambda c, a: np.log(a),
    "relax.sqrt": lambda c, a: np.sqrt(a),
    "relax.rsqrt": lambda c, a: 1.0 / np.sqrt(a),
    "relax.clip": lambda c, a: np.clip(a, float(c.args[1].value), float(c.args[2].value)),
    "relax.nn.relu": lambda c, a: np.maximum(a, 0.0),
    "relax.nn.silu": lambda c, a: a * _sigmoid(a),
    "relax.nn.gelu": lambda c, a: 0.5 * a * (1.0 + _erf(a / math.sqrt(2.0))),
    "relax.nn.gelu_tanh": lambda c, a: _gelu_tanh(a),
    "relax.nn.leakyrelu": lambda c, a: np.where(a >= 0, a, a * float(c.attrs.alpha)),
    "relax.nn.softplus": lambda c, a: np.log1p(np.exp(-np.abs(a))) + np.maximum(a, 0.0),
    "relax.nn.prelu": lambda c, a, alpha: np.where(a >= 0, a, a * alpha),
}

#: element-wise ops that keep scale and zero point (clamps): a region made only of these is a
#: pass-through op, not a lookup table
CLAMPS = ("relax.nn.relu", "relax.clip")


def _tensor_args(call: relax.Call) -> list:
    """Arguments of ``call`` that are tensors (drops clip's PrimValue bounds)."""
    if call.op.name == "relax.clip":
        return [call.args[0]]
    return list(call.args)


def _const(expr, var2val) -> np.ndarray | None:
    if isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, tvm.ir.expr.Constant) and not isinstance(expr, _IMM):
        return expr.value.numpy()
    return None


def const_axis(c: np.ndarray, out_shape: tuple[int, ...], call: relax.Call | None = None) -> int | None:
    """Axis of ``out_shape`` along which the constant varies: ``-1`` for a scalar (broadcast
    everywhere), the axis index for a per-channel vector, ``None`` if it varies along several axes or
    would grow the output shape."""
    if call is not None and call.op.name == "relax.nn.prelu":
        if c.size == 1:
            return -1
        ax = int(call.attrs.axis) % len(out_shape)
        return ax if c.size == out_shape[ax] else None
    if c.size == 1:
        return -1
    if c.ndim > len(out_shape):
        return None
    off = len(out_shape) - c.ndim
    axes = [i + off for i, d in enumerate(c.shape) if d != 1]
    if len(axes) != 1 or c.shape[axes[0] - off] != out_shape[axes[0]]:
        return None
    return axes[0]


def is_elementwise(call, var2val) -> bool:
    """Whether ``call`` is an element-wise op of :data:`EVALUATORS` whose tensor operands are either
    constants (scalar or per-axis) or tensors of the output's shape."""
    if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name in EVALUATORS):
        return False
    out_shape = tensor_shape(call)
    if out_shape is None or str(call.ty.dtype) != "float32":
        return False
    if call.op.name == "relax.clip" and not all(isinstance(a, _IMM) for a in call.args[1:]):
        return False
    for a in _tensor_args(call):
        c = _const(a, var2val)
        if c is not None:
            if const_axis(c, out_shape, call) is None:
                return False
        elif not isinstance(a, relax.Var) or tensor_shape(a) != out_shape:
            return False
    return True


@dataclass
class Region:
    """An element-wise subgraph computed as a function of one tensor.

    Attributes
    ----------
    tail
        The var holding the region's result.
    members
        Vars of the region in binding order (the tail last).
    leaf
        The single non-constant input (a var).
    axis
        Axis of the per-channel constants, ``-1`` if all constants are scalars.
    ops
        Op names of the members, in binding order.
    var2val
        Bindings of the function the region lives in (to evaluate it).
    """

    tail: relax.Var
    members: list[relax.Var]
    leaf: relax.Var
    axis: int
    ops: list[str]
    var2val: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def only_clamps(self) -> bool:
        return all(op in CLAMPS for op in self.ops)

    @property
    def rows(self) -> int:
        """Rows of the lookup table: 1, or the channel count along :attr:`axis`."""
        return 1 if self.axis < 0 else tensor_shape(self.tail)[self.axis]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The region's function in float64 on ``x`` (1-D): shape ``(rows, x.size)``."""
        x = np.asarray(x, np.float64).reshape(-1)
        return evaluate(self, self.var2val, np.broadcast_to(x, (self.rows, x.size)))


def grow_region(tail: relax.Var, var2val: dict, absorbable: Callable[[relax.Var], bool],
                users: dict[str, list[str]] | None = None) -> Region | None:
    """The largest region ending at ``tail`` with exactly one non-constant input.

    Inner vars must be element-wise bindings accepted by ``absorbable`` and, when ``users`` is given,
    used only by vars of the region. Every var reachable backwards from ``tail`` through such bindings
    is tried as the region's input; the valid candidate with the most members wins (so
    ``sigmoid(a * b)`` is a region of input ``a * b`` even though ``a * b`` is element-wise itself).
    Returns ``None`` if no candidate is valid.
    """
    if tail not in var2val or not is_elementwise(var2val[tail], var2val):
        return None

    def inner(a: relax.Var) -> bool:
        val = var2val.get(a)
        return val is not None and is_elementwise(val, var2val) and absorbable(a)

    def inputs(v: relax.Var) -> list[relax.Var]:
        return [a for a in _tensor_args(var2val[v]) if _const(a, var2val) is None]

    # every var reachable backwards through absorbable element-wise bindings, in discovery order
    reach: dict[str, relax.Var] = {}
    stack = [tail]
    while stack:
        v = stack.pop()
        for a in inputs(v):
            if a.name not in reach and a.name != tail.name:
                reach[a.name] = a
                if inner(a):
                    stack.append(a)

    best: dict[str, relax.Var] | None = None
    best_leaf: relax.Var | None = None
    for x in reach.values():
        members = {tail.name: tail}
        ok = True
        todo = [tail]
        while todo and ok:
            v = todo.pop()
            for a in inputs(v):
                if a.name == x.name or a.name in members:
                    continue
                if not inner(a):
                    ok = False
                    break
                members[a.name] = a
                todo.append(a)
        if ok and users is not None:
            ok = all(u in members for m in members if m != tail.name for u in users.get(m, []))
        if ok and (best is None or len(members) > len(best)):
            best, best_leaf = members, x
    if best is None:
        return None
    members, leaf = best, best_leaf
    out_shape = tensor_shape(tail)
    axes = set()
    for v in members.values():
        call = var2val[v]
        for a in _tensor_args(call):
            c = _const(a, var2val)
            if c is not None:
                axes.add(const_axis(c, out_shape, call))
    axes.discard(-1)
    if len(axes) > 1:
        return None
    axis = axes.pop() if axes else -1
    order = _topo_order(tail, members, var2val)
    return Region(tail, order, leaf, axis, [var2val[v].op.name for v in order], var2val)


def _topo_order(tail: relax.Var, members: dict[str, relax.Var], var2val: dict) -> list[relax.Var]:
    out: list[relax.Var] = []
    seen: set[str] = set()

    def visit(v: relax.Var) -> None:
        if v.name in seen:
            return
        seen.add(v.name)
        for a in _tensor_args(var2val[v]):
            if isinstance(a, relax.Var) and a.name in members:
                visit(members[a.name])
        out.append(v)

    visit(tail)
    return out


def evaluate(region: Region, var2val: dict, x: np.ndarray) -> np.ndarray:
    """Evaluate the region in float64 on input values ``x``.

    ``x`` has shape ``(rows, n)``: ``rows`` is 1, or the channel count along ``region.axis`` (one row
    per channel). Returns an array of the same shape.
    """
    x = np.asarray(x, np.float64)
    out_shape = tensor_shape(region.tail)
    env: dict[str, np.ndarray] = {region.leaf.name: x}

    def arg_value(a, call):
        c = _const(a, var2val)
        if c is None:
            return env[a.name]
        c = np.asarray(c, np.float64)
        if c.size == 1:
            return c.reshape(())
        ax = const_axis(c, out_shape, call)
        return c.reshape(-1, 1) if ax == region.axis else c  # per-channel: one row per channel

    for v in region.members:
        call = var2val[v]
        args = [arg_value(a, call) for a in _tensor_args(call)]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = EVALUATORS[call.op.name](call, *args)
        env[v.name] = np.broadcast_to(np.asarray(res, np.float64), x.shape)
    return env[region.tail.name]


def lut_table(region: Region, var2val: dict, s_x: float, z_x: int, in_dtype: str, s_y: float, z_y: int,
              out_dtype: str) -> np.ndarray:
    """The lookup table of a region: ``T[c, q - qmin] = quantize_y(f(s_x * (q - z_x)))``.

    Computed in float64 from the dequantized input codes; rounded half to even and clipped to the
    output's storage range (``+-inf`` saturate). Codes where the function is undefined (NaN, e.g. the
    log of an input code below the zero point, which calibration says does not occur) map to real 0.
    Shape ``(rows, 256)``, dtype ``out_dtype``.
    """
    info_in = np.iinfo(np.dtype(in_dtype))
    codes = np.arange(int(info_in.min), int(info_in.max) + 1, dtype=np.int64)
    xr = (codes - int(z_x)).astype(np.float64) * float(np.float32(s_x))
    y = evaluate(region, var2val, np.broadcast_to(xr, (region.rows, codes.size)))
    info_out = np.iinfo(np.dtype(out_dtype))
    y = np.nan_to_num(y, nan=0.0, posinf=np.inf, neginf=-np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(y / float(np.float32(s_y))) + int(z_y), int(info_out.min), int(info_out.max))
    return q.astype(out_dtype)


def nonneg_on_probe(region: Region, var2val: dict) -> bool:
    """Whether the region's function is >= 0 on a wide probe grid (sigmoid, hard-sigmoid, exp, ...).

    Used only to choose a one-sided range in the hybrid scheme; the calibrated range still decides the
    scale.
    """
    probe = np.concatenate([-np.logspace(-4, 4, 400), [0.0], np.logspace(-4, 4, 400)])
    y = evaluate(region, var2val, np.broadcast_to(probe, (region.rows, probe.size)))
    y = y[np.isfinite(y)]
    return y.size > 0 and bool(np.min(y) >= 0.0)


def saturation_interval(regions: list[Region], lo: float, hi: float, levels: int = 256,
                        points: int = 4097) -> tuple[float, float]:
    """The part of ``[lo, hi]`` where the tables of ``regions`` (all reading the same input) still move.

    Outside the returned ``[x_lo, x_hi]`` every region's function stays within half an output step
    (its range over ``[lo, hi]`` divided by ``levels - 1``) of its value at ``lo`` (resp. ``hi``):
    hard-sigmoid is exactly flat outside ``[-2.5, 2.5]``, hardswish below ``-3``, sigmoid and SiLU
    flatten within half a step a few units out. Clipping the input's quantization range to this
    interval loses nothing the table's output could show, and buys input resolution where the
    function moves. Returns ``(lo, hi)`` when nothing saturates (e.g. LeakyReLU).
    """
    if not hi > lo:
        return lo, hi
    grid = np.linspace(lo, hi, points)
    x_lo, x_hi = hi, lo
    for r in regions:
        with np.errstate(all="ignore"):
            y = r(grid)
        if not np.all(np.isfinite(y)):
            return lo, hi
        for row in y:
            eps = 0.5 * (row.max() - row.min()) / (levels - 1)
            moves_l = np.nonzero(np.abs(row - row[0]) > eps)[0]
            moves_r = np.nonzero(np.abs(row - row[-1]) > eps)[0]
            if moves_l.size == 0:  # constant over the whole range
                continue
            x_lo = min(x_lo, grid[max(moves_l[0] - 1, 0)])
            x_hi = max(x_hi, grid[min(moves_r[-1] + 1, points - 1)])
    if x_lo > x_hi:  # every table constant: keep the range
        return lo, hi
    return float(x_lo), float(x_hi)


# -- named activations -----------------------------------------------------------------------------
# Regions are found structurally (above); these patterns only *name* them (plan, kernel attributes,
# report). ``x`` is the region's input (any expression), so the same patterns name a region in the float
# graph and in the annotated graph.


def _c():
    return is_const()


def _comm(op: str, a, b):
    return is_op(op)(a, b) | is_op(op)(b, a)


def _clip(e):
    return is_op("relax.clip")(e, wildcard(), wildcard())


def activation_patterns(x) -> list[tuple[str, object]]:
    """``(name, pattern)`` of the activations the ONNX importer decomposes, most specific first."""
    sig = is_op("relax.sigmoid")(x)
    relu6_shift = _clip(_comm("relax.add", x, _c()))                       # clip(x + 3, 0, 6)
    hsig_affine = _clip(_comm("relax.add", _comm("relax.multiply", x, _c()), _c()))  # clip(a*x + b, 0, 1)
    hsig_div = is_op("relax.divide")(relu6_shift, _c()) | _comm("relax.multiply", relu6_shift, _c())  # relu6(x+3)/6
    return [
        ("silu", _comm("relax.multiply", x, sig) | is_op("relax.nn.silu")(x)),
        ("hardswish", is_op("relax.divide")(_comm("relax.multiply", x, relu6_shift), _c())),
        ("hardswish", _comm("relax.multiply", x, hsig_div | hsig_affine)),
        ("hardswish", _comm("relax.multiply", _comm("relax.multiply", x, relu6_shift), _c())),
        ("hard_sigmoid", hsig_affine | hsig_div),
        ("sigmoid", sig),
        ("tanh", is_op("relax.tanh")(x)),
        ("leaky_relu", is_op("relax.nn.leakyrelu")(x)),
        ("prelu", is_op("relax.nn.prelu")(x, _c())),
        ("gelu", is_op("relax.nn.gelu")(x) | is_op("relax.nn.gelu_tanh")(x)),
        ("mish", _comm("relax.multiply", x, is_op("relax.tanh")(is_op("relax.nn.softplus")(x)))),
    ]


ACTIVATIONS = activation_patterns(wildcard())


def activation_name(expr, var2val) -> str | None:
    """Name of the activation computed by ``expr`` (the region's output value), if recognized."""
    for name, pat in ACTIVATIONS:
        if pat.match(expr, var2val):
            return name
    return None


def region_name(region: Region, var2val: dict) -> str:
    """Name of the activation a region computes (``silu``, ``hardswish``, ...), else its ops joined by ``+``."""
    return activation_name(var2val[region.tail], var2val) or "+".join(
        o.removeprefix("relax.").removeprefix("nn.") for o in region.ops)
