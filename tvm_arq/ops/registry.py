"""The integer op registry: everything one integer op family contributes, in one place.

An op family (one module of :mod:`tvm_arq.ops`) registers, with the decorators below:

- :func:`register_plan` -- the planner rule: which Relax ops it turns integer, the kind of rule (group head,
  own quantization point, pass-through) and why a binding stays float (``check`` returns the reason, or
  ``""``);
- :func:`register_realize` -- how ``RealizeInteger`` lowers a ``quantize`` ending the family's pattern to
  a kernel (a ``relax.dpl`` pattern, a producer op, a tuple item, or a structural fallback);
- :func:`register_kernel` / :func:`register_reference` -- the TE kernel and its numpy twin under the same
  kernel name (``arq.op``), for NCHW and for the target layouts (NHWC, packed weights);
- :func:`register_layout` / :func:`register_relax_layout` -- what ``ConvertLayout`` does with the kernel
  (an own conversion function, or :class:`Agnostic` with its axis parameters remapped; unregistered
  kernels are NCHW-only and get their inputs transposed back);
- :func:`register_relax_reference` -- numpy evaluation of a plain Relax op the integer module keeps
  (reshape, slicing ...);
- :func:`register_rewrite` -- a float-to-float graph rewrite run before planning that recognizes a block
  spread over several Relax ops (a decomposed LayerNorm) and replaces it by the one op the family plans.

The drivers (:mod:`tvm_arq.passes.analysis`, :mod:`tvm_arq.passes.realize`, :mod:`tvm_arq.passes.layout`,
:mod:`tvm_arq.ops.reference`) iterate :data:`REGISTRY` and know no op by name.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tvm import relax

from ..qmath import dtype_range

#: ``op_pattern`` of an opaque PrimFunc (TVM's ``OpPatternKind::kOpaque``): not fused by FuseOps
OPAQUE = 8


class Role(str, enum.Enum):
    """What the planner made of a binding."""

    ANCHOR = "anchor"        # conv2d / dense, head of a group
    EPILOGUE = "epilogue"    # bias add / activation absorbed into a group
    ADD = "add"
    CONCAT = "concat"
    LUT = "lut"              # member of a single-input element-wise subgraph realized as a table
    MUL = "mul"              # element-wise product of two quantized tensors
    SOFTMAX = "softmax"      # integer softmax (exp table, integer normalization)
    NORM = "norm"            # integer LayerNorm / RMS norm (integer mean, variance and square root)
    REDUCE = "reduce"        # integer sum along axes (new scale)
    MATMUL = "matmul"        # product of two quantized activations (attention QK^T, AV)
    PASS = "pass"
    FLOAT = "float"


class Kind(str, enum.Enum):
    """How the planner treats a Relax op that a family makes integer."""

    GROUP = "group"   # heads a group: absorbs a following bias add (optional) and an epilogue activation
    POINT = "point"   # computes a new quantization point of its own (mul, softmax, concat)
    PASS = "pass"     # keeps its input's scale and zero point (pooling, data movement, clamps, ...)
    FLOAT = "float"   # never integer: shape glue (no warning), or an op whose check names why (a fallback)


@dataclass(frozen=True)
class Quant:
    """Scale, zero point and storage dtype of a quantized tensor (as read from a QDQ call)."""

    scale: float
    zp: int
    dtype: str

    @property
    def range(self) -> tuple[int, int]:
        """Storage range ``(qlo, qhi)`` of :attr:`dtype`."""
        return dtype_range(self.dtype)


@dataclass(frozen=True)
class PlanRule:
    """When a Relax op becomes integer.

    Attributes
    ----------
    ops
        Relax op names (``"relax.nn.conv2d"``) the rule covers.
    kind
        See :class:`Kind`.
    role
        Role of the head binding (GROUP / POINT rules); PASS rules are :attr:`Role.PASS`.
    check
        ``check(binding, var2val) -> reason``: ``""`` if the binding can be integer, else why it stays float.
    inputs
        ``inputs(binding, var2val) -> [tensor, ...]``: the operands needed in the integer domain
        (GROUP / POINT rules; PASS rules read ``args[0]``).
    bias
        GROUP rules: ``bias(head, next_binding, var2val) -> bool``, whether ``next_binding`` is a bias add the
        group absorbs (``None``: no bias).
    epilogue
        PASS rules: a group absorbs the op into its output clamp (ReLU, clip).
    nonneg
        ``nonneg(binding) -> bool``: the op's output is non-negative (ReLU, softmax).
    exact
        PASS rules: ``exact(binding) -> bool``, the op commutes exactly with quantization (data movement,
        max): float glue of this op is moved into the integer domain by quantizing its input.
    tuple_output
        PASS rules: the op produces a tuple (split); its items carry the parameters.
    weight_axis
        ANCHOR rules: the output-channel axis of the constant weight ``args[1]`` (per-channel scales along
        it); ``None``: the op has no weight to quantize.
    input_axis
        ANCHOR rules: the channel axis of the data input ``args[0]`` (its per-channel means feed the bias
        correction).
    weight_shift
        ANCHOR rules: ``weight_shift(d, mean, call) -> shift``, the expected output shift per output channel
        of the weight error ``d = w_hat - w`` (float64) for inputs with per-channel means ``mean`` (bias
        correction).
    when
        ``when(binding) -> bool``: the rule is a *variant* that replaces the op's main rule for the bindings it
        accepts (``relax.matmul`` of two activations vs. by a constant weight); ``None``: the main rule.
    """

    ops: tuple[str, ...]
    kind: Kind
    role: Role = Role.PASS
    check: Callable[[Any, dict], str] = lambda b, v2v: ""
    inputs: Callable[[Any, dict], list] | None = None
    bias: Callable[[Any, Any, dict], bool] | None = None
    epilogue: bool = False
    nonneg: Callable[[Any], bool] | None = None
    exact: Callable[[Any], bool] = lambda b: False
    tuple_output: bool = False
    weight_axis: int | None = None
    input_axis: int | None = None
    weight_shift: Callable[[np.ndarray, np.ndarray, Any], np.ndarray] | None = None
    when: Callable[[Any], bool] | None = None


class Stage(enum.IntEnum):
    """Order in which ``RealizeInteger`` tries the realize rules of a ``quantize``."""

    PATTERN = 0    # ``relax.dpl`` pattern matched on the quantize call: fn(ctx, match, out)
    PRODUCER = 1   # the quantize's input is a call of one of ``ops``: fn(ctx, call, out)
    PASS = 2       # the quantize's input is a pass-through call of one of ``ops`` on a dequantize with the same
                   # parameters: fn(ctx, call, x_int, qin, out)
    ITEM = 3       # the quantize's input is an item of a tuple made by one of ``ops``: fn(ctx, call, index, out)
    FALLBACK = 4   # structural: fn(ctx, input_var, out)


@dataclass(frozen=True)
class RealizeRule:
    """One way to lower a ``quantize`` (and the float ops it ends) to an integer kernel."""

    stage: Stage
    fn: Callable
    pattern: Any = None
    ops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Agnostic:
    """Layout behaviour of a kernel whose semantics do not depend on the layout.

    ``ConvertLayout`` feeds it NHWC operands and remaps its axis parameters with ``remap(params)``.

    Attributes
    ----------
    remap
        ``remap(params) -> params`` for NHWC (e.g. ``axis``, ``out_shape``, ``pads``).
    activations
        How many leading operands are activations to transpose (``None``: all operands).
    all_4d
        Every operand must be 4-D (element-wise with broadcasting, concat).
    """

    remap: Callable[[dict], dict] = lambda p: p
    activations: int | None = None
    all_4d: bool = False


@dataclass(frozen=True)
class TableEpilogue:
    """An element-wise table lookup ``table[row, v - qmin]`` that the kernel producing ``v`` may apply itself.

    Attributes
    ----------
    table
        ``[rows, entries]`` constant table.
    axis
        NCHW axis the rows run along (``-1``: one row for every element).
    qmin
        Integer value of the first entry.
    """

    table: np.ndarray
    axis: int
    qmin: int


@dataclass(frozen=True)
class KernelDef:
    """One integer kernel: TE compute, numpy twin, calling convention and layout behaviour.

    Every kernel takes its tensor operands positionally and its constants as keyword arguments
    (JSON-serializable), stored on the PrimFunc as ``arq.op`` / ``arq.params`` so that the reference
    interpreter can replay it. ``tensor_list`` kernels take their first operand as a list of tensors
    (flattened by ``emit_te``).
    """

    name: str
    compute: Callable | None = None
    reference: Callable | None = None
    tensor_list: bool = False
    layout: Agnostic | Callable | None = None
    epilogue: Callable[[list, dict], TableEpilogue | None] | None = None


@dataclass
class Registry:
    """All registered op families (see the module docstring)."""

    plan_rules: dict[str, PlanRule] = field(default_factory=dict)
    variants: dict[str, list[PlanRule]] = field(default_factory=dict)
    realize_rules: list[RealizeRule] = field(default_factory=list)
    kernels: dict[str, KernelDef] = field(default_factory=dict)
    relax_layout: dict[str, Callable] = field(default_factory=dict)
    relax_reference: dict[str, Callable] = field(default_factory=dict)
    rewrites: list[Callable] = field(default_factory=list)

    def plan_rule(self, op: str | None) -> PlanRule | None:
        """The main rule of ``op`` (for the rule of one binding, see :meth:`rule_for`)."""
        return self.plan_rules.get(op) if op is not None else None

    def rule_for(self, b: Any) -> PlanRule | None:
        """The rule of binding ``b``: the first variant of its op that accepts it, else the main rule."""
        for v in self.variants.get(b.op, ()) if b.op is not None else ():
            if v.when(b):
                return v
        return self.plan_rule(b.op)

    def realize(self, stage: Stage) -> list[RealizeRule]:
        return [r for r in self.realize_rules if r.stage is stage]

    def kernel(self, name: str) -> KernelDef:
        return self.kernels[name]

    def _update_kernel(self, name: str, **kw) -> None:
        self.kernels[name] = replace(self.kernels.get(name, KernelDef(name)), **kw)


#: the process-wide registry, filled by importing :mod:`tvm_arq.ops`
REGISTRY = Registry()


# -- decorators ------------------------------------------------------------------------------------


def register_plan(rule: PlanRule) -> PlanRule:
    """Register a planner rule for each op of ``rule.ops`` (a variant if ``rule.when`` is set)."""
    for op in rule.ops:
        if rule.when is not None:
            REGISTRY.variants.setdefault(op, []).append(rule)
            continue
        if op in REGISTRY.plan_rules:
            raise ValueError(f"planner rule for {op} registered twice")
        REGISTRY.plan_rules[op] = rule
    return rule


def register_realize(stage: Stage, *, pattern=None, ops: tuple[str, ...] = ()) -> Callable:
    """Decorator: register a realize function (see :class:`Stage` for its signature)."""

    def deco(fn: Callable) -> Callable:
        REGISTRY.realize_rules.append(RealizeRule(stage, fn, pattern, tuple(ops)))
        return fn

    return deco


def register_kernel(name: str, *, tensor_list: bool = False) -> Callable:
    """Decorator: register the TE compute of kernel ``name``."""

    def deco(fn: Callable) -> Callable:
        REGISTRY._update_kernel(name, compute=fn, tensor_list=tensor_list)
        return fn

    return deco


def register_reference(name: str) -> Callable:
    """Decorator: register the numpy twin of kernel ``name`` (same operands and keyword constants)."""

    def deco(fn: Callable) -> Callable:
        REGISTRY._update_kernel(name, reference=fn)
        return fn

    return deco


def register_epilogue(name: str) -> Callable:
    """Decorator: kernel ``name`` is a fusable epilogue. ``fn(args, params) -> TableEpilogue | None`` describes
    a call of it on ``args[0]`` (``None``: this call cannot be fused)."""

    def deco(fn: Callable) -> Callable:
        REGISTRY._update_kernel(name, epilogue=fn)
        return fn

    return deco


def register_layout(name: str, behaviour: Agnostic | None = None) -> Callable | None:
    """Layout behaviour of kernel ``name``.

    ``register_layout(name, Agnostic(...))`` marks it layout-agnostic; used as a decorator,
    ``@register_layout(name)`` registers an own conversion ``fn(ctx, name, args, params) -> bool``
    (``False``: not converted, the kernel stays NCHW).
    """
    if behaviour is not None:
        REGISTRY._update_kernel(name, layout=behaviour)
        return None

    def deco(fn: Callable) -> Callable:
        REGISTRY._update_kernel(name, layout=fn)
        return fn

    return deco


def register_relax_layout(*ops: str) -> Callable:
    """Decorator: layout conversion ``fn(ctx, name, call) -> bool`` of plain Relax ops in the integer module."""

    def deco(fn: Callable) -> Callable:
        for op in ops:
            REGISTRY.relax_layout[op] = fn
        return fn

    return deco


def register_relax_reference(*ops: str) -> Callable:
    """Decorator: numpy evaluation ``fn(call, evaluate) -> array`` of plain Relax ops (``evaluate(expr)``
    gives an operand's value)."""

    def deco(fn: Callable) -> Callable:
        for op in ops:
            REGISTRY.relax_reference[op] = fn
        return fn

    return deco


def register_rewrite(fn: Callable) -> Callable:
    """Decorator: a block recognizer ``fn(mod) -> mod`` (float module in, equivalent float module out), run on
    the float module before planning, in registration order."""
    REGISTRY.rewrites.append(fn)
    return fn


# -- emission --------------------------------------------------------------------------------------


def emit_kernel(bb: relax.BlockBuilder, name: str, tensors: list, params: dict, *, opaque: bool = False) -> relax.Var:
    """Emit one integer kernel as ``call_tir`` with its constants recorded on the PrimFunc.

    ``tensors`` are the positional operands (a list of tensors as the first operand of ``tensor_list``
    kernels), ``params`` the keyword constants (``arq.params``); ``opaque`` keeps FuseOps away.
    """
    fn = REGISTRY.kernel(name).compute
    attrs = {"arq.op": name, "arq.params": json.dumps(params, sort_keys=True)}
    if opaque:
        attrs["op_pattern"] = OPAQUE
    return bb.emit_te(fn, *tensors, primfunc_name_hint=f"arq_{name}", primfunc_attrs=attrs, **params)


__all__ = [
    "OPAQUE", "REGISTRY", "Agnostic", "KernelDef", "Kind", "PlanRule", "Quant", "RealizeRule", "Registry", "Role",
    "Stage", "TableEpilogue", "emit_kernel", "register_epilogue", "register_kernel", "register_layout",
    "register_plan", "register_realize", "register_reference", "register_relax_layout", "register_relax_reference",
    "register_rewrite",
]
