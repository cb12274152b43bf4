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
    is realized as one 256-entry table (see :mod:`tvm_arq.ops.elementwise`).
mul
    Element-wise product of two quantized tensors (squeeze-excitation), integer requantization.
softmax
    Integer softmax: ``exp`` of ``q - max(q)`` from a compile-time table, integer normalization.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..frontend.naming import layer_of
from ..ops import REGISTRY
from ..ops.conv import INT32_MAX, INT32_MIN, accumulator_bounds
from ..ops.elementwise import EVALUATORS, Region, grow_region, nonneg_on_probe, region_name
from ..ops.irutil import (
    Binding,
    bindings_of,
    check_unique_names,
    const_value,
    tensor_dtype,
    tensor_shape,
    uses,
)
from ..ops.registry import Kind, PlanRule, Role
from ..qmath import quantize_weights_per_channel

logger = logging.getLogger(__name__)


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
    int16_points: set[str] = field(default_factory=set)

    def is_int(self, name: str) -> bool:
        return name in self.qsource


def _is_float_tensor(expr) -> bool:
    return tensor_dtype(expr) == "float32" and tensor_shape(expr) is not None


def _rule(b: Binding) -> PlanRule | None:
    return REGISTRY.rule_for(b)


def recognize_blocks(mod: tvm.IRModule) -> tvm.IRModule:
    """Apply the block recognizers of :data:`tvm_arq.ops.REGISTRY` (float -> equivalent float module, e.g. a
    decomposed LayerNorm -> ``R.nn.layer_norm``); run before :func:`plan_quantization`."""
    for fn in REGISTRY.rewrites:
        mod = fn(mod)
    return mod


EXCLUDED = "excluded by the user"


def excluded_bindings(bs: list[Binding], exclude: tuple[str, ...], option: str = "exclude") -> set[str]:
    """Names of the bindings that ``QuantConfig.exclude`` keeps in float (or that another per-layer option of
    :class:`~tvm_arq.config.QuantConfig`, named ``option`` in the error, selects).

    An entry matches a binding whose name or layer name (:func:`~tvm_arq.frontend.naming.layer_of`) equals
    it, or whose layer name it fully matches as a regular expression. An entry that matches nothing raises
    ``ValueError`` naming the closest layer names (``difflib``).
    """
    out: set[str] = set()
    layers = {b.name: layer_of(b.name) for b in bs}
    for entry in exclude:
        hit = {n for n, lay in layers.items() if entry in (n, lay)}
        if not hit:
            try:
                rx = re.compile(entry)
            except re.error:
                rx = None
            if rx is not None:
                hit = {n for n, lay in layers.items() if rx.fullmatch(lay)}
        if not hit:
            names = sorted(set(layers.values()))
            close = difflib.get_close_matches(entry, names, n=5, cutoff=0.5)
            hint = f"; closest layer names: {', '.join(repr(c) for c in close)}" if close else ""
            shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"QuantConfig({option}=...): no layer is named or matches {entry!r}{hint} "
                             f"(the model's {len(names)} layers: {shown})")
        out |= hit
    return out


#: roles whose kernels read and write int16 activations as well as 8-bit ones (the others -- norm, sum --
#: have 8-bit arithmetic bounds and keep 8-bit tensors)
INT16_ROLES = frozenset({Role.ANCHOR, Role.EPILOGUE, Role.ADD, Role.CONCAT, Role.LUT, Role.MUL, Role.SOFTMAX, Role.MATMUL,
                         Role.PASS, Role.FLOAT})


def int16_points(plan: QuantPlan, bs: list[Binding], selected: set[str], users: dict) -> set[str]:
    """The quantization points stored as int16 for the layers ``selected`` (binding names).

    A selected integer layer makes its output point and the points of its integer inputs int16. A point
    stays 8-bit if its producer or any integer reader has a role outside :data:`INT16_ROLES` (a kernel with
    8-bit arithmetic bounds). No requantization kernel is inserted between an 8-bit and an int16 tensor:
    every kernel of those roles takes its input's dtype and writes its output's dtype (e.g. an int16 conv
    reading the uint8 output of an 8-bit layer, or an 8-bit conv reading an int16 tensor), which is exact
    by construction (the zero points and scales fold into the same integer arithmetic). A point read by a
    conv / dense whose int32 accumulator could overflow with int16 values (a large reduction of large weights)
    stays 8-bit too, with a warning.
    """
    by_name = {b.name: b for b in bs}
    want: set[str] = set()
    for name in selected:
        op_plan = plan.ops.get(name)
        if op_plan is None or op_plan.role is Role.FLOAT or name not in plan.qsource and op_plan.role not in (
                Role.ANCHOR, Role.EPILOGUE, Role.LUT):
            continue
        out = op_plan.group_output or name
        if out in plan.qsource:
            want.add(plan.qsource[out])
        for a in by_name[name].value.args if isinstance(by_name[name].value, relax.Call) else ():
            if isinstance(a, relax.Var) and a.name in plan.qsource:
                want.add(plan.qsource[a.name])
    readers: dict[str, set[Role]] = {}
    overflow: dict[str, str] = {}  # point -> an anchor whose int32 accumulator could overflow on int16 input
    for name, op_plan in plan.ops.items():
        b = by_name.get(name)
        if b is None or not isinstance(b.value, relax.Call):
            continue
        for a in b.value.args:
            if isinstance(a, relax.Var) and a.name in plan.qsource:
                readers.setdefault(plan.qsource[a.name], set()).add(op_plan.role)
        x = b.value.args[0] if b.value.args else None
        if op_plan.role is Role.ANCHOR and isinstance(x, relax.Var) and x.name in plan.qsource \
                and plan.qsource[x.name] in want and _int16_overflows(b):
            overflow[plan.qsource[x.name]] = name
    out: set[str] = set()
    for p in want:
        producer = plan.ops.get(p)
        roles = readers.get(p, set()) | ({producer.role} if producer is not None else set())
        if not roles <= INT16_ROLES:
            logger.info("tensor %r stays 8-bit: read or written by %s", p,
                        ", ".join(sorted(r.value for r in roles - INT16_ROLES)))
        elif p in overflow:
            logger.warning("tensor %r stays 8-bit: with int16 values, the int32 accumulator of %r could overflow",
                           p, overflow[p])
        else:
            out.add(p)
    return out


def _int16_overflows(b: Binding) -> bool:
    """The int32 accumulator of anchor ``b`` (per-channel int8 weights) can overflow on an int16 input
    (:func:`~tvm_arq.ops.conv.accumulator_bounds`; the realize step would raise ``QuantizationError``)."""
    w = const_value(b.value.args[1])
    axis = REGISTRY.plan_rule(b.op).weight_axis
    if w is None or axis is None:
        return False
    qw, _ = quantize_weights_per_channel(np.asarray(w), axis=axis)
    qw = np.moveaxis(qw, axis, 0)
    lo, hi = accumulator_bounds(qw, "int16")
    return bool(np.any(hi > INT32_MAX) or np.any(lo < INT32_MIN))


def plan_quantization(mod: tvm.IRModule, skip_ops: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                      split_at: frozenset[str] = frozenset(), int16: tuple[str, ...] = ()) -> QuantPlan:
    """Compute the :class:`QuantPlan` of ``mod["main"]`` (a float module with constants bound).

    The per-op decisions come from the planner rules of :data:`tvm_arq.ops.REGISTRY`. Ops in ``skip_ops``
    and the layers named by ``exclude`` (:func:`excluded_bindings`) stay in float; the layers named by
    ``int16`` get int16 inputs and outputs (:func:`int16_points`). Bindings in ``split_at``
    are never inner members of a lookup table (a pre-quantized model quantizes them: the ``Sigmoid`` of a SiLU
    is then its own table and the product an integer ``mul``, as in the model).
    """
    func = mod["main"]
    check_unique_names(func)
    bs = bindings_of(func)
    excluded = excluded_bindings(bs, exclude) if exclude else set()
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

    def tuple_pass(name: str) -> bool:
        """``name`` is a pass-through op that produces a tuple (split)."""
        r = _rule(by_name[name]) if name in by_name else None
        return r is not None and r.tuple_output

    def glue_source(n: str) -> relax.Var | None:
        """Input of float glue ``n`` if quantizing it there is exact (pure data movement or max)."""
        if n not in glue:
            return None
        b = by_name[n]
        if isinstance(b.value, relax.TupleGetItem):
            sp = by_name.get(b.value.tuple_value.name) if isinstance(b.value.tuple_value, relax.Var) else None
            return sp.value.args[0] if sp is not None and sp.name in glue else None
        r = _rule(b)
        if r is not None and r.kind is Kind.PASS and r.exact(b):
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
                plan.ops[sp] = OpPlan(sp, by_name[sp].op, Role.PASS)
            return True
        plan.qsource[n] = n
        plan.points.append(n)
        return True

    def group_members(head: Binding, rule: PlanRule) -> list[Binding]:
        """The group head and the bias add / activation it absorbs (no side effects)."""
        tail = head
        members = [head]
        nxt = single_user(tail.name)
        if nxt is not None and nxt.name in excluded:
            return members
        if rule.bias is not None and nxt is not None and rule.bias(head, nxt, var2val):
            tail = nxt
            members.append(nxt)
            nxt = single_user(tail.name)
            if nxt is not None and nxt.name in excluded:
                return members
        act = _rule(nxt) if nxt is not None else None
        if act is not None and act.epilogue and not act.check(nxt, var2val):
            members.append(nxt)
        return members

    def new_point(name: str) -> None:
        plan.qsource[name] = name
        plan.points.append(name)

    def start_group(head: Binding, rule: PlanRule) -> str:
        members = group_members(head, rule)
        tail = members[-1]
        tail_rule = _rule(tail)
        if len(members) > 1 and tail_rule is not None and tail_rule.epilogue and tail_rule.nonneg(tail):
            plan.producer_nonneg.add(tail.name)
        for i, m in enumerate(members):
            plan.ops[m.name] = OpPlan(m.name, m.op, rule.role if i == 0 else Role.EPILOGUE, tail.name)
        new_point(tail.name)
        return tail.name

    # -- pre-pass 1: what groups will absorb (those bindings never join a LUT) ------------------------
    claimed: set[str] = set()
    for b in bs:
        r = _rule(b)
        if r is not None and r.kind is Kind.GROUP and b.op not in skip_ops and b.name not in excluded \
                and not r.check(b, var2val):
            claimed.update(m.name for m in group_members(b, r))

    # -- pre-pass 2: single-input element-wise subgraphs, matched whole from their output backwards --
    lut_of: dict[str, str] = {}  # member name -> region output name

    def absorbable(v: relax.Var) -> bool:
        return v.name in by_name and v.name not in claimed and v.name not in lut_of and \
            by_name[v.name].op not in skip_ops and v.name not in excluded

    for b in reversed(bs):
        if b.op not in EVALUATORS or not absorbable(b.var):
            continue
        region = grow_region(b.var, var2val, lambda v: absorbable(v) and v.name not in split_at, users)
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
            name = region_name(region, var2val)
            for m in region.members:
                plan.ops[m.name] = OpPlan(m.name, by_name[m.name].op, Role.LUT, tail, reason=f"lookup table: {name}")
            new_point(tail)
            if nonneg_on_probe(region, var2val):
                plan.producer_nonneg.add(tail)
            continue
        if op is None:
            tv = b.value
            if isinstance(tv, relax.TupleGetItem) and isinstance(tv.tuple_value, relax.Var):
                sp = plan.ops.get(tv.tuple_value.name)
                if sp is not None and tuple_pass(sp.name) and sp.role is Role.PASS:
                    src = by_name[sp.name].value.args[0]
                    plan.ops[b.name] = OpPlan(b.name, None, Role.PASS)
                    plan.qsource[b.name] = plan.qsource[src.name]
                    continue
                if sp is not None and tuple_pass(sp.name):
                    glue.add(b.name)
            plan.ops[b.name] = OpPlan(b.name, None, Role.FLOAT)
            continue
        if b.name in excluded:
            plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason=EXCLUDED)
            if b.name == layer_of(b.name):  # one entry per layer: its output binding
                plan.fallbacks.append((b.name, op, EXCLUDED))
            continue
        if op in skip_ops:
            plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason="skipped by configuration")
            plan.fallbacks.append((b.name, op, "skipped by configuration"))
            continue
        rule = _rule(b)
        warn = True
        if rule is None:
            reason = "no integer implementation"
        elif rule.kind is Kind.FLOAT:  # float by design; a rule's own reason makes it a reported fallback
            why = rule.check(b, var2val)
            reason, warn = why or "no integer implementation", bool(why)
        elif rule.kind is Kind.PASS:
            src = b.value.args[0]
            why = rule.check(b, var2val)
            if not why and isinstance(src, relax.Var) and plan.is_int(src.name):
                plan.ops[b.name] = OpPlan(b.name, op, Role.PASS)
                if not rule.tuple_output:
                    plan.qsource[b.name] = plan.qsource[src.name]
                continue
            reason = why or "input is float"
            if not why or rule.tuple_output:
                # pass-through op on a float tensor: float glue, not a fallback of the quantizer
                plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason="input is float")
                if isinstance(src, relax.Var) and _is_float_tensor(src):
                    glue.add(b.name)
                continue
        else:  # GROUP / POINT
            why = rule.check(b, var2val)
            if not why and all(need_int(a) for a in rule.inputs(b, var2val)):
                if rule.kind is Kind.GROUP:
                    start_group(b, rule)
                    continue
                plan.ops[b.name] = OpPlan(b.name, op, rule.role, b.name)
                new_point(b.name)
                if rule.nonneg is not None and rule.nonneg(b):
                    plan.producer_nonneg.add(b.name)
                continue
            reason = why or "input not quantizable"
        plan.ops[b.name] = OpPlan(b.name, op, Role.FLOAT, reason=reason)
        if warn:
            plan.fallbacks.append((b.name, op, reason))
    for tail, region in plan.luts.items():
        leaf = region.leaf.name
        if plan.qsource.get(leaf) == leaf:
            plan.lut_inputs.setdefault(leaf, []).append(tail)
    for leaf, tails in list(plan.lut_inputs.items()):
        inside = {m.name for t in tails for m in plan.luts[t].members}
        if not users.get(leaf) or not all(u in inside for u in users[leaf]):
            del plan.lut_inputs[leaf]
    if int16:
        plan.int16_points = int16_points(plan, bs, excluded_bindings(bs, int16, "int16"), users)
    if any(r != EXCLUDED for _n, _op, r in plan.fallbacks):
        counts: dict[str, int] = {}
        for _n, op, r in plan.fallbacks:
            if r != EXCLUDED:
                counts[op] = counts.get(op, 0) + 1
        logger.warning(
            "ops without an integer implementation run in float between dequantize/quantize: %s",
            ", ".join(f"{op} x{c}" for op, c in sorted(counts.items())),
        )
    return plan
