"""Decide, per binding of the float ``main``, what becomes integer and where quantization points are.

The plan is computed from the float module alone and is deterministic, so ``InsertCalibration`` and
``AnnotateQuantization`` (which run on the same float module) agree on every tensor name.

Vocabulary
----------
quantization point
    A float tensor that gets its own scale / zero point from calibration: the graph inputs feeding
    integer ops, the outputs of conv/dense groups, of add and concat, and float (fallback) tensors
    that feed integer ops.
group
    An anchor op (conv2d, dense) with the bias add and the activation (ReLU, ReLU6, clip) that follow
    it when they are its only consumer; realized as one integer kernel.
pass-through
    Ops computed in the integer domain that keep their input's scale and zero point (pooling,
    reshape/flatten/transpose, slice/split, pad, nearest/bilinear resize, standalone ReLU/clip).
lookup table (LUT)
    A single-input element-wise subgraph (sigmoid, SiLU as ``x * sigmoid(x)``, hardswish in any of
    its decomposed forms, hard-sigmoid, tanh, LeakyReLU, PReLU, GELU, ...): matched as a whole in the
    float graph, its intermediates are never quantized, its output is one quantization point, and it
    is realized as one 256-entry table (see :mod:`tvm_arq.passes.elementwise`).
mul
    Element-wise product of two quantized tensors (squeeze-excitation), integer requantization.
softmax
    Integer softmax: ``exp`` of ``q - max(q)`` from a compile-time table, integer normalization.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

import tvm
import tvm.ir.prim.expr
from tvm import relax

from . import patterns as P
from .elementwise import EVALUATORS, Region, grow_region, nonneg_on_probe
from .graph import Binding, bindings_of, check_unique_names, const_value, tensor_dtype, tensor_shape, uses

logger = logging.getLogger(__name__)

_IMM = (tvm.ir.prim.expr.FloatImm, tvm.ir.prim.expr.IntImm)

ACTIVATIONS = ("relax.nn.relu", "relax.clip")  # ReLU6 is clip(0, 6) in Relax
PASS_THROUGH = (
    "relax.nn.max_pool2d",
    "relax.nn.avg_pool2d",
    "relax.nn.adaptive_avg_pool2d",
    "relax.mean",
    "relax.reshape",
    "relax.flatten",
    "relax.permute_dims",
    "relax.squeeze",
    "relax.expand_dims",
    "relax.nn.relu",
    "relax.clip",
    "relax.strided_slice",
    "relax.image.resize2d",
    "relax.nn.pad",
)
#: pass-through ops that commute exactly with quantization (data movement, max): a float tensor feeding
#: them is quantized before them rather than after
EXACT_PASS = (
    "relax.reshape",
    "relax.flatten",
    "relax.permute_dims",
    "relax.squeeze",
    "relax.expand_dims",
    "relax.strided_slice",
    "relax.nn.max_pool2d",
)
#: ops that are float by nature of the graph (shape glue etc.) and never warrant a warning
SILENT_FLOAT = ("relax.shape_of",)


class Role(str, enum.Enum):
    ANCHOR = "anchor"        # conv2d / dense, head of a group
    EPILOGUE = "epilogue"    # bias add / activation absorbed into a group
    ADD = "add"
    CONCAT = "concat"
    LUT = "lut"              # member of a single-input element-wise subgraph realized as a table
    MUL = "mul"              # element-wise product of two quantized tensors
    SOFTMAX = "softmax"      # integer softmax (exp table, integer normalization)
    PASS = "pass"
    FLOAT = "float"


@dataclass
class OpPlan:
    name: str
    op: str | None
    role: Role
    group_output: str | None = None  # for ANCHOR/EPILOGUE/ADD/LUT: the var whose quantize ends the group
    reason: str = ""                 # why it stayed float, or what a LUT computes


@dataclass
class QuantPlan:
    """The quantization decision for every var of ``main``.

    Attributes
    ----------
    ops
        Per binding name, its role.
    qsource
        For every tensor computed in the integer domain (or quantized at its producer): the name of the
        quantization point whose scale / zero point it carries.
    points
        Names of the quantization points in a deterministic order (calibration observes these).
    producer_nonneg
        Quantization points whose producer guarantees non-negative values (ReLU, ReLU6, clip(>=0)).
    fallbacks
        ``(var name, op name, reason)`` of ops kept in float that sit inside the quantized graph.
    luts
        Lookup-table regions by output var name.
    lut_inputs
        Quantization points read only by lookup tables: point -> output names of those tables (the
        hybrid scheme clips such a point's range where the tables saturate).
    """

    ops: dict[str, OpPlan] = field(default_factory=dict)
    qsource: dict[str, str] = field(default_factory=dict)
    points: list[str] = field(default_factory=list)
    producer_nonneg: set[str] = field(default_factory=set)
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)
    luts: dict[str, Region] = field(default_factory=dict)
    lut_inputs: dict[str, list[str]] = field(default_factory=dict)

    def is_int(self, name: str) -> bool:
        return name in self.qsource


def _act_nonneg(b: Binding) -> bool:
    if b.op == "relax.nn.relu":
        return True
    if b.op == "relax.clip":
        lo = b.value.args[1]
        return float(lo.value) >= 0.0
    return False


def _is_float_tensor(expr) -> bool:
    return tensor_dtype(expr) == "float32" and tensor_shape(expr) is not None


def _conv_ok(b: Binding) -> str:
    a = b.value.attrs
    if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
        return f"layout {a.data_layout}/{a.kernel_layout} (only NCHW/OIHW)"
    if const_value(b.value.args[1]) is None:
        return "weight is not a constant"
    if not _is_float_tensor(b.value.args[0]):
        return "input is not a static float32 tensor"
    return ""


def _dense_ok(b: Binding) -> str:
    x, w = b.value.args
    wv = const_value(w)
    if wv is None or wv.ndim != 2:
        return "rhs is not a constant 2-D weight"
    xs = tensor_shape(x)
    if xs is None or len(xs) != 2:
        return "lhs is not a static 2-D tensor"
    return ""


def _pass_ok(b: Binding) -> str:
    v = b.value
    op = b.op
    shp = tensor_shape(v.args[0]) if v.args else None
    if shp is None:
        return "dynamic shape"
    if op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        if str(v.attrs.layout) != "NCHW" or bool(v.attrs.ceil_mode):
            return "layout other than NCHW or ceil_mode"
    if op == "relax.nn.adaptive_avg_pool2d":
        if str(v.attrs.layout) != "NCHW" or tensor_shape(v)[2:] != (1, 1):
            return "only global (1x1) adaptive average pooling"
    if op == "relax.mean":
        axes = sorted(int(a) % len(shp) for a in v.attrs.axis) if v.attrs.axis is not None else None
        if len(shp) != 4 or axes != [2, 3] or not bool(v.attrs.keepdims):
            return "only mean over H, W with keepdims"
    if op == "relax.clip":
        lo, hi = v.args[1], v.args[2]
        if not (isinstance(lo, _IMM) and isinstance(hi, _IMM)):
            return "non-constant clip bounds"
    if op == "relax.image.resize2d":
        a = v.attrs
        if tensor_shape(v) is None or len(shp) != 4 or str(a.layout) != "NCHW":
            return "only static NCHW resize"
        if str(a.method) not in ("nearest_neighbor", "linear"):
            return f"resize method {a.method} (only nearest and bilinear)"
        if str(a.coordinate_transformation_mode) == "tf_crop_and_resize":
            return "tf_crop_and_resize"
        if a.out_dtype is not None and str(a.out_dtype) not in ("", "float32"):
            return f"resize out_dtype {a.out_dtype}"
    if op == "relax.nn.pad" and str(v.attrs.pad_mode) != "constant":
        return f"pad mode {v.attrs.pad_mode} (only constant)"
    if op == "relax.strided_slice" and tensor_shape(v) is None:
        return "dynamic slice"
    return ""


def _tuple_fields(expr, var2val) -> list | None:
    if isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, relax.Tuple):
        return list(expr.fields)
    return None


def _is_tensor_var(expr) -> bool:
    return isinstance(expr, relax.Var) and _is_float_tensor(expr)


def _anchor_ok(b: Binding, skip_ops: tuple[str, ...]) -> str:
    """Why conv2d / matmul ``b`` cannot head an integer group ("" if it can)."""
    if b.op in skip_ops:
        return "skipped by configuration"
    why = _conv_ok(b) if b.op == "relax.nn.conv2d" else _dense_ok(b)
    if not why and not _is_tensor_var(b.value.args[0]):
        why = "input not quantizable"
    return why


def _binary_tensors(b: Binding, var2val) -> bool:
    """``b`` combines two non-constant static float tensors into a static float tensor."""
    args = b.value.args
    return len(args) == 2 and all(_is_tensor_var(a) and const_value(a, var2val) is None for a in args) \
        and _is_float_tensor(b.value)


def plan_quantization(mod: tvm.IRModule, skip_ops: tuple[str, ...] = ()) -> QuantPlan:
    """Compute the :class:`QuantPlan` of ``mod["main"]`` (a float module with constants bound)."""
    func = mod["main"]
    check_unique_names(func)
    bs = bindings_of(func)
    by_name = {b.name: b for b in bs}
    users = uses(func)
    var2val = relax.analysis.get_var2val(func)
    plan = QuantPlan()

    def single_user(name: str) -> Binding | None:
        u = users.get(name, [])
        if len(u) == 1 and u[0] in by_name:
            return by_name[u[0]]
        return None

    glue: set[str] = set()  # pass-through ops left in float because their input was float (so far)

    def glue_source(n: str) -> relax.Var | None:
        """Input of float glue ``n`` if quantizing it there is exact (pure data movement or max)."""
        if n not in glue:
            return None
        b = by_name[n]
        if isinstance(b.value, relax.TupleGetItem):
            sp = by_name.get(b.value.tuple_value.name) if isinstance(b.value.tuple_value, relax.Var) else None
            return sp.value.args[0] if sp is not None and sp.name in glue else None
        if b.op in EXACT_PASS or (b.op == "relax.image.resize2d" and str(b.value.attrs.method) == "nearest_neighbor"):
            return b.value.args[0]
        return None

    def need_int(expr) -> bool:
        """Make tensor ``expr`` available in the integer domain; False if impossible.

        Float glue in front of it (reshape, slice, split, max pooling, ... of a float tensor) is moved
        into the integer domain by quantizing the glue's input instead: quantization commutes with
        these ops, and one quantize of the input replaces one per consumer (e.g. YOLOX's input slicing).
        """
        if not isinstance(expr, relax.Var) or not _is_float_tensor(expr):
            return False
        n = expr.name
        if n in plan.qsource:
            return True
        src = glue_source(n)
        if isinstance(src, relax.Var) and need_int(src):
            b = by_name[n]
            glue.discard(n)
            plan.ops[n] = OpPlan(n, b.op, Role.PASS)
            plan.qsource[n] = plan.qsource[src.name]
            if isinstance(b.value, relax.TupleGetItem):
                sp = b.value.tuple_value.name
                plan.ops[sp] = OpPlan(sp, "relax.split", Role.PASS)
            return True
        plan.qsource[n] = n
        plan.points.append(n)
        return True

    def group_members(anchor: Binding, allow_bias: bool) -> list[Binding]:
        """The anchor and the bias add / activation it absorbs (no side effects)."""
        tail = anchor
        members = [anchor]
        nxt = single_user(tail.name)
        if allow_bias and nxt is not None and nxt.op == "relax.add":
            other = [a for a in nxt.value.args if not (isinstance(a, relax.Var) and a.name == tail.name)]
            cv = const_value(other[0], var2val) if len(other) == 1 else None
            if cv is not None and cv.size == tensor_shape(anchor.value)[1]:
                tail = nxt
                members.append(nxt)
                nxt = single_user(tail.name)
        if nxt is not None and nxt.op in ACTIVATIONS and not _pass_ok(nxt):
            members.append(nxt)
        return members

    def start_group(anchor: Binding, allow_bias: bool) -> str:
        members = group_members(anchor, allow_bias)
        tail = members[-1]
        if tail.op in ACTIVATIONS and _act_nonneg(tail):
            plan.producer_nonneg.add(tail.name)
        for i, m in enumerate(members):
            plan.ops[m.name] = OpPlan(m.name, m.op, Role.ANCHOR if i == 0 else Role.EPILOGUE, tail.name)
        plan.qsource[tail.name] = tail.name
        plan.points.append(tail.name)
        return tail.name

    def is_add_group(b: Binding) -> bool:
        return b.op == "relax.add" and b.op not in skip_ops and _binary_tensors(b, var2val)

    # -- pre-pass 1: what conv/dense/add groups will absorb (those bindings never join a LUT) -------
    claimed: set[str] = set()
    for b in bs:
        if b.op in ("relax.nn.conv2d", "relax.matmul") and not _anchor_ok(b, skip_ops):
            claimed.update(m.name for m in group_members(b, allow_bias=True))
        elif is_add_group(b):
            claimed.update(m.name for m in group_members(b, allow_bias=False))

    # -- pre-pass 2: single-input element-wise subgraphs, matched whole from their output backwards --
    lut_of: dict[str, str] = {}  # member name -> region output name

    def absorbable(v: relax.Var) -> bool:
        return v.name in by_name and v.name not in claimed and v.name not in lut_of and \
            by_name[v.name].op not in skip_ops

    for b in reversed(bs):
        if b.op not in EVALUATORS or not absorbable(b.var):
            continue
        region = grow_region(b.var, var2val, absorbable, users)
        if region is None or region.only_clamps or not _is_float_tensor(region.leaf):
            continue
        plan.luts[b.name] = region
        for m in region.members:
            lut_of[m.name] = b.name

    # -- main pass, in binding order ------------------------------------------------------------------
    for b in bs:
        if b.name in plan.ops:
            continue
        op = b.op
        if b.name in lut_of:
            tail = lut_of[b.name]
            if b.name != tail:
                continue  # planned with its region's output
            region = plan.luts[tail]
            need_int(region.leaf)
            name = P.activation_name(var2val[region.tail], var2val) or "+".join(
                o.removeprefix("relax.").removeprefix("nn.") for o in region.ops)
            for m in region.members:
                plan.ops[m.name] = OpPlan(m.name, by_name[m.name].op, Role.LUT, tail, reason=f"lookup table: {name}")
            plan.qsource[tail] = tail
            plan.points.append(tail)
            if nonneg_on_probe(region, var2val):
                plan.producer_nonneg.add(tail)
            continue
        if op is None:
            tv = b.value
            if isinstance(tv, relax.TupleGetItem) and isinstance(tv.tuple_value, relax.Var):
                sp = plan.ops.get(tv.tuple_value.name)
                if sp is not None and sp.op == "relax.split" and sp.role is Role.PASS:
                    src = by_name[sp.name].value.args[0]
                    plan.ops[b.name] = OpPlan(b.name, None, Role.PASS)
                    plan.qsource[b.name] = plan.qsource[src.name]
                    continue
                if sp is not None and sp.op == "relax.split":
                    glue.add(b.name)
            plan.ops[b.name] = OpPlan(b.name, None, Role.FLOAT)
            continue
        if op in skip_ops:
            plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason="skipped by configuration")
            plan.fallbacks.append((b.name, op, "skipped by configuration"))
            continue
        if op in ("relax.nn.conv2d", "relax.matmul"):
            why = _anchor_ok(b, skip_ops)
            if not why and need_int(b.value.args[0]):
                start_group(b, allow_bias=True)
                continue
            reason = why or "input not quantizable"
        elif is_add_group(b):
            if all(need_int(a) for a in b.value.args):
                start_group(b, allow_bias=False)
                plan.ops[b.name].role = Role.ADD
                continue
            reason = "input not quantizable"
        elif op == "relax.multiply" and _binary_tensors(b, var2val):
            for a in b.value.args:
                need_int(a)
            plan.ops[b.name] = OpPlan(b.name, op, Role.MUL, b.name)
            plan.qsource[b.name] = b.name
            plan.points.append(b.name)
            continue
        elif op == "relax.nn.softmax" and _is_tensor_var(b.value.args[0]) and _is_float_tensor(b.value):
            need_int(b.value.args[0])
            plan.ops[b.name] = OpPlan(b.name, op, Role.SOFTMAX, b.name)
            plan.qsource[b.name] = b.name
            plan.points.append(b.name)
            plan.producer_nonneg.add(b.name)
            continue
        elif op == "relax.concat":
            fields = _tuple_fields(b.value.args[0], var2val)
            if fields and all(isinstance(f, relax.Var) and _is_float_tensor(f) for f in fields):
                for f in fields:
                    need_int(f)
                plan.ops[b.name] = OpPlan(b.name, op, Role.CONCAT, b.name)
                plan.qsource[b.name] = b.name
                plan.points.append(b.name)
                continue
            reason = "inputs are not static float tensors"
        elif op == "relax.split":
            src = b.value.args[0]
            if isinstance(src, relax.Var) and plan.is_int(src.name) and tensor_shape(src) is not None:
                # the tuple itself stays unquantized; its items (TupleGetItem) carry the parameters
                plan.ops[b.name] = OpPlan(b.name, op, Role.PASS)
                continue
            plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason="input is float")
            if isinstance(src, relax.Var) and _is_float_tensor(src):
                glue.add(b.name)
            continue
        elif op in PASS_THROUGH:
            src = b.value.args[0]
            why = _pass_ok(b)
            if not why and isinstance(src, relax.Var) and plan.is_int(src.name):
                plan.ops[b.name] = OpPlan(b.name, op, Role.PASS)
                plan.qsource[b.name] = plan.qsource[src.name]
                continue
            reason = why or "input is float"
            if not why:
                # pass-through op on a float tensor: float glue, not a fallback of the quantizer
                plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason=reason)
                if isinstance(src, relax.Var) and _is_float_tensor(src):
                    glue.add(b.name)
                continue
        else:
            reason = "no integer implementation"
        plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason=reason)
        if op not in SILENT_FLOAT and op != "relax.call_tir":
            plan.fallbacks.append((b.name, op, reason))
    for tail, region in plan.luts.items():
        leaf = region.leaf.name
        if plan.qsource.get(leaf) == leaf:
            plan.lut_inputs.setdefault(leaf, []).append(tail)
    for leaf, tails in list(plan.lut_inputs.items()):
        inside = {m.name for t in tails for m in plan.luts[t].members}
        if not users.get(leaf) or not all(u in inside for u in users[leaf]):
            del plan.lut_inputs[leaf]
    if plan.fallbacks:
        counts: dict[str, int] = {}
        for _n, op, _r in plan.fallbacks:
            counts[op] = counts.get(op, 0) + 1
        logger.warning(
            "ops without an integer implementation run in float between dequantize/quantize: %s",
            ", ".join(f"{op} x{c}" for op, c in sorted(counts.items())),
        )
    return plan
