"""Plan a pre-quantized (QDQ) model with the model's own parameters instead of calibrated ranges.

:func:`plan_fixed` runs the ordinary planner (:func:`~tvm_arq.passes.analysis.plan_quantization`) on the
float graph that :func:`tvm_arq.frontend.from_onnx` stripped from a QDQ model, then reconciles the plan
with what the model quantized (:class:`~tvm_arq.frontend.ModelQuant`):

- every quantization point takes the model's scale and zero point for that tensor (a uint8 zero point
  moves by 128 when the target stores int8 and back: the same real grid, the same rounding);
- a pass-through op whose output the model re-quantizes with other parameters (onnxruntime gives average
  pooling its own scale) becomes a quantization point of its own, so the requantization happens where the
  model does it;
- a point or a conv / dense layer the model left in float (no parameters for its output, or float
  weights) is kept in float (``QuantConfig.exclude`` of that layer) and the plan is recomputed.

Parameters the model states for tensors inside one of our lookup tables (the ``Sigmoid`` output inside
SiLU = ``x * sigmoid(x)``) are not used: the table maps the input grid to the output grid directly, one
rounding instead of the model's two. That is one of the documented differences from the producer's
runtime (see ``results/qdq.md``).
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax

from ..config import RangeKind
from ..frontend.naming import layer_of
from ..frontend.qdq import ActQuant, ModelQuant
from ..ops.irutil import bindings_of
from ..qmath import QParams, QuantizationError, dtype_range
from .analysis import EXCLUDED, QuantPlan, Role, plan_quantization

logger = logging.getLogger(__name__)

__all__ = ["fixed_qparams", "model_weights", "plan_fixed"]

#: why a layer stays float in a pre-quantized model
NOT_IN_MODEL = "not quantized in the model"
#: replanning rounds (each keeps more layers in float) before giving up
MAX_ROUNDS = 8


def fixed_qparams(act: ActQuant, dtype: str, source: str) -> QParams:
    """:class:`~tvm_arq.qmath.QParams` of a model-stated tensor, stored as ``dtype`` (int8 / uint8)."""
    z = act.zero_point
    moved = ""
    if act.dtype != dtype:
        z += -128 if dtype == "int8" else 128
        moved = f"; zero point {act.zero_point} ({act.dtype}) stored as {z} ({dtype})"
    qmin, qmax = dtype_range(dtype)
    mid = 0 if dtype == "int8" else 128
    kind = RangeKind.ONE_SIDED if z == qmin else RangeKind.SYMMETRIC if z == mid else RangeKind.ASYMMETRIC
    s = float(np.float32(act.scale))
    rule = (f"from model ({source}): scale {s:.6g}, zero point {act.zero_point} ({act.dtype}) of ONNX tensor "
            f"{act.tensor!r} (node {act.node!r}){moved}")
    return QParams(scale=s, zero_point=z, dtype=dtype, kind=kind, alpha=s * (qmin - z), beta=s * (qmax - z),
                   rule=rule)


def _same(a: ActQuant, b: ActQuant) -> bool:
    return np.float32(a.scale) == np.float32(b.scale) and (a.zero_point - (0 if a.dtype == "int8" else 128)) == \
        (b.zero_point - (0 if b.dtype == "int8" else 128))


def _pass_input(b, by_name) -> str | None:
    v = b.value
    if isinstance(v, relax.TupleGetItem) and isinstance(v.tuple_value, relax.Var):
        sp = by_name.get(v.tuple_value.name)
        v = sp.value if sp is not None else None
    if isinstance(v, relax.Call) and v.args and isinstance(v.args[0], relax.Var):
        return v.args[0].name
    return None


def _promote_requantized(mod: tvm.IRModule, plan: QuantPlan, table: ModelQuant) -> list[str]:
    """Make pass-through ops the model re-quantizes with other parameters quantization points."""
    bs = bindings_of(mod["main"])
    by_name = {b.name: b for b in bs}
    acts = table.activations
    promoted = []
    for b in bs:
        op_plan = plan.ops.get(b.name)
        if op_plan is None or op_plan.role is not Role.PASS or b.name not in plan.qsource:
            continue
        src = _pass_input(b, by_name)
        if src is not None and src in plan.qsource and plan.qsource[b.name] != plan.qsource[src]:
            plan.qsource[b.name] = plan.qsource[src]  # its input was promoted above
        own, theirs = acts.get(b.name), acts.get(plan.qsource[b.name])
        if own is not None and theirs is not None and not _same(own, theirs):
            plan.qsource[b.name] = b.name
            plan.points.append(b.name)
            promoted.append(b.name)
    return promoted


def plan_fixed(mod: tvm.IRModule, table: ModelQuant, act_dtype: str, skip_ops: tuple[str, ...] = (),
               exclude: tuple[str, ...] = ()) -> tuple[QuantPlan, dict[str, QParams], dict[str, np.ndarray]]:
    """Plan ``mod`` (the float module of a QDQ model, constants bound) with the model's parameters.

    Returns
    -------
    plan, qparams, weight_scales
        The plan, the parameters of each of its points and the weight scales per anchor layer name.
    """
    params = {p.name for p in mod["main"].params}
    excluded = list(exclude)
    for _ in range(MAX_ROUNDS):
        plan = plan_quantization(mod, skip_ops, tuple(excluded), frozenset(table.activations))
        promoted = _promote_requantized(mod, plan, table)
        users: dict[str, list[str]] = {}
        for b in bindings_of(mod["main"]):
            for a in (b.value.args if isinstance(b.value, relax.Call) else []):
                if isinstance(a, relax.Var):
                    users.setdefault(a.name, []).append(b.name)
        new: set[str] = set()
        for p in plan.points:
            if p in table.activations:
                continue
            if p in params or layer_of(p) in excluded:
                # a model input (or float op output) the model does not quantize: its integer readers stay float
                new.update(layer_of(u) for u in users.get(p, []) if u in plan.ops and plan.ops[u].role is not Role.FLOAT)
            else:
                new.add(layer_of(p))
        for name, op_plan in plan.ops.items():
            if op_plan.role is Role.ANCHOR and layer_of(name) not in table.weights:
                new.add(layer_of(name))
        new -= set(excluded)
        if not new:
            break
        logger.info("kept in float (the model does not quantize them): %s", sorted(new))
        excluded.extend(sorted(new))
    else:
        raise QuantizationError("the model's quantized regions do not match any integer plan "
                                f"(still unresolved after {MAX_ROUNDS} rounds)")
    auto = set(excluded) - set(exclude)
    if auto:
        plan.fallbacks = [(n, op, NOT_IN_MODEL if layer_of(n) in auto and r == EXCLUDED else r)
                          for n, op, r in plan.fallbacks]
        for op_plan in plan.ops.values():
            if op_plan.reason == EXCLUDED and layer_of(op_plan.name) in auto:
                op_plan.reason = NOT_IN_MODEL
    if promoted:
        logger.info("re-quantized where the model does (own scale after a pass-through op): %s", promoted)
    qparams = {p: fixed_qparams(table.activations[p], act_dtype, table.source) for p in plan.points}
    unused = sorted(set(table.activations) - set(plan.points) - {n for n in plan.qsource})
    if unused:
        logger.info("model parameters not used (inside lookup tables or float regions): %s", unused)
    weights = {name: np.asarray(w.scales, np.float32) for name, w in table.weights.items()}
    return plan, qparams, weights


def model_weights(w: np.ndarray, axis: int, scales: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's integer weights ``rint(w / s)`` and per-channel scales along ``axis`` (no re-rounding).

    ``w`` holds the model's ``q * s`` in float32, so the division gives ``q`` back exactly; a weight that is
    not on that grid (changed by a graph rewrite such as a BatchNorm fold) raises
    :class:`~tvm_arq.qmath.QuantizationError` naming the layer.
    """
    w = np.asarray(w, np.float32)
    n = w.shape[axis]
    s = np.asarray(scales, np.float32).reshape(-1)
    if s.size == 1:
        s = np.full(n, s[0], np.float32)
    if s.size != n:
        raise QuantizationError(f"layer {layer!r}: the model gives {s.size} weight scales for {n} output channels")
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.rint(w / s.reshape(shape))
    off = np.abs(q * s.reshape(shape) - w)
    if q.size and (off.max() > 1e-5 * np.abs(w).max() + 1e-30 or np.abs(q).max() > 128):
        raise QuantizationError(f"layer {layer!r}: its weights are not on the model's integer grid (largest "
                                f"deviation {off.max():.3g}); was the graph changed after quantization?")
    return np.clip(q, -128, 127).astype(np.int8), s
