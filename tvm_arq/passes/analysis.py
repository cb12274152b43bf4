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
    reshape/flatten/transpose, standalone ReLU/clip).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

import tvm
import tvm.ir.prim.expr
from tvm import relax

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
)
#: ops that are float by nature of the graph (shape glue etc.) and never warrant a warning
SILENT_FLOAT = ("relax.shape_of",)


class Role(str, enum.Enum):
    ANCHOR = "anchor"        # conv2d / dense, head of a group
    EPILOGUE = "epilogue"    # bias add / activation absorbed into a group
    ADD = "add"
    CONCAT = "concat"
    PASS = "pass"
    FLOAT = "float"


@dataclass
class OpPlan:
    name: str
    op: str | None
    role: Role
    group_output: str | None = None  # for ANCHOR/EPILOGUE/ADD: the var whose quantize ends the group
    reason: str = ""


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
    """

    ops: dict[str, OpPlan] = field(default_factory=dict)
    qsource: dict[str, str] = field(default_factory=dict)
    points: list[str] = field(default_factory=list)
    producer_nonneg: set[str] = field(default_factory=set)
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)

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
    return ""


def _tuple_fields(expr, var2val) -> list | None:
    if isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, relax.Tuple):
        return list(expr.fields)
    return None


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

    def need_int(expr) -> bool:
        """Make tensor ``expr`` available in the integer domain; False if impossible."""
        if not isinstance(expr, relax.Var) or not _is_float_tensor(expr):
            return False
        n = expr.name
        if n not in plan.qsource:
            plan.qsource[n] = n
            plan.points.append(n)
        return True

    def start_group(anchor: Binding, allow_bias: bool) -> str:
        tail = anchor
        members = [anchor.name]
        nxt = single_user(tail.name)
        if allow_bias and nxt is not None and nxt.op == "relax.add":
            other = [a for a in nxt.value.args if not (isinstance(a, relax.Var) and a.name == tail.name)]
            cv = const_value(other[0], var2val) if len(other) == 1 else None
            if cv is not None and cv.size == tensor_shape(anchor.value)[1]:
                tail = nxt
                members.append(nxt.name)
                nxt = single_user(tail.name)
        if nxt is not None and nxt.op in ACTIVATIONS and not _pass_ok(nxt):
            tail = nxt
            members.append(nxt.name)
            if _act_nonneg(nxt):
                plan.producer_nonneg.add(tail.name)
        for i, m in enumerate(members):
            plan.ops[m] = OpPlan(m, by_name[m].op, Role.ANCHOR if i == 0 else Role.EPILOGUE, tail.name)
        plan.qsource[tail.name] = tail.name
        plan.points.append(tail.name)
        return tail.name

    for b in bs:
        if b.name in plan.ops:
            continue
        op = b.op
        if op is None:
            plan.ops[b.name] = OpPlan(b.name, None, Role.FLOAT)
            continue
        if op in skip_ops:
            plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason="skipped by configuration")
            plan.fallbacks.append((b.name, op, "skipped by configuration"))
            continue
        if op == "relax.nn.conv2d":
            why = _conv_ok(b)
            if not why and need_int(b.value.args[0]):
                start_group(b, allow_bias=True)
                continue
            reason = why or "input not quantizable"
        elif op == "relax.matmul":
            why = _dense_ok(b)
            if not why and need_int(b.value.args[0]):
                start_group(b, allow_bias=True)
                continue
            reason = why or "input not quantizable"
        elif op == "relax.add" and all(_is_float_tensor(a) and isinstance(a, relax.Var) for a in b.value.args) \
                and _is_float_tensor(b.value) and all(const_value(a, var2val) is None for a in b.value.args):
            if all(need_int(a) for a in b.value.args):
                start_group(b, allow_bias=False)
                plan.ops[b.name].role = Role.ADD
                continue
            reason = "input not quantizable"
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
                continue
        else:
            reason = "no integer implementation"
        plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason=reason)
        if op not in SILENT_FLOAT and op != "relax.call_tir":
            plan.fallbacks.append((b.name, op, reason))
    if plan.fallbacks:
        counts: dict[str, int] = {}
        for _n, op, _r in plan.fallbacks:
            counts[op] = counts.get(op, 0) + 1
        logger.warning(
            "ops without an integer implementation run in float between dequantize/quantize: %s",
            ", ".join(f"{op} x{c}" for op, c in sorted(counts.items())),
        )
    return plan
