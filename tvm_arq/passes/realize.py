"""``RealizeInteger``: lower the annotated (QDQ) module to integer kernels.

Every ``quantize`` that ends a pattern of an op family (:mod:`tvm_arq.ops`) becomes one ``call_tir`` to
that family's kernel, whose integer parameters (folded bias, fixed-point multipliers, tables, clamps)
are computed at compile time by the family's realize function. The realize rules of
:data:`tvm_arq.ops.REGISTRY` are tried in :class:`~tvm_arq.ops.registry.Stage` order:

1. ``relax.dpl`` patterns on the ``quantize`` (conv/dense groups, add, mul, softmax);
2. the op producing the quantize's input (concat);
3. pass-through ops on a ``dequantize`` with the same parameters (pooling, clamps, pad, resize, data
   movement);
4. items of a tuple-producing op (split);
5. structural fallbacks (single-input element-wise subgraphs -> lookup tables).

Remaining ``quantize`` / ``dequantize`` of activations become float<->int kernels; float ops stay.
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from ..ops import REGISTRY
from ..ops.common import DQ_ACT, RealizeContext, qinfo
from ..ops.irutil import Rebuilder, const_value
from ..ops.qdq import emit_dequantize, emit_quantize
from ..ops.registry import Quant, Role, Stage
from ..qmath import QuantizationError
from .analysis import QuantPlan

logger = logging.getLogger(__name__)

tvm_ffi.register_error(QuantizationError)  # keep the type when it crosses the pass boundary


def _call_op(expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.RealizeInteger")
class RealizeInteger:
    """Lower an annotated module to integer kernels (see module docstring).

    Parameters
    ----------
    plan
        The plan the module was annotated with. Optional: the lowering is structural, the plan only
        keeps ops it placed in float (e.g. ``skip_ops``) in float even where a pattern would match.
    """

    def __init__(self, plan: QuantPlan | None = None):
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        self.var2val = relax.analysis.get_var2val(func)

        def on_binding(rb: Rebuilder, b, value):
            if b.op == "relax.quantize":
                out = self._realize_quantize(rb, b)
                if out is not None:
                    return out
            return value

        mod = Rebuilder(mod).run(on_binding)

        # second phase: the dequantizes that survived (outputs, inputs of float ops) become kernels;
        # done after dead-code elimination so that no kernel is made for a dead one
        def lower_dequantize(rb: Rebuilder, b, value):
            if b.op == "relax.dequantize" and not isinstance(b.value.args[0], tvm.ir.expr.Constant):
                return emit_dequantize(rb.bb, rb.remap(b.value.args[0]), qinfo(b.value))
            return value

        return Rebuilder(mod).run(lower_dequantize)

    def _realize_quantize(self, rb: Rebuilder, b) -> relax.Expr | None:
        v2v = self.var2val
        expr = b.value
        out = qinfo(expr)
        ctx = RealizeContext(rb.bb, rb.remap, v2v, b.name)
        src = expr.args[0]
        planned = self.plan.ops.get(src.name) if self.plan is not None and isinstance(src, relax.Var) else None
        if planned is not None and planned.role is Role.FLOAT:
            return emit_quantize(rb.bb, rb.remap(src), out)
        for rule in REGISTRY.realize(Stage.PATTERN):
            m = rule.pattern.extract_matched_expr(expr, v2v)
            if m is not None:
                return rule.fn(ctx, m, out)
        inner = expr.args[0]
        if isinstance(inner, relax.Var) and inner in v2v:
            res = self._producer(ctx, v2v[inner], out)
            if res is not None:
                return res
            for rule in REGISTRY.realize(Stage.FALLBACK):
                res = rule.fn(ctx, inner, out)
                if res is not None:
                    return res
        # plain float -> int at a quantization point
        return emit_quantize(rb.bb, rb.remap(expr.args[0]), out)

    def _producer(self, ctx: RealizeContext, inner_val: relax.Expr, out: Quant) -> relax.Expr | None:
        """Rules keyed on the op producing the quantize's input (or the tuple it is an item of)."""
        v2v = self.var2val
        opn = _call_op(inner_val)
        if opn is not None:
            for rule in REGISTRY.realize(Stage.PRODUCER):
                if opn in rule.ops:
                    res = rule.fn(ctx, inner_val, out)
                    if res is not None:
                        return res
            pass_rules = [r for r in REGISTRY.realize(Stage.PASS) if opn in r.ops]
            if pass_rules:
                src = inner_val.args[0]
                srcv = v2v.get(src) if isinstance(src, relax.Var) else None
                if srcv is not None and DQ_ACT.match(srcv):
                    qin = qinfo(srcv)
                    # pass-through ops keep the parameters; anything else is a float op
                    if np.float32(qin.scale) == np.float32(out.scale) and qin.zp == out.zp:
                        x = ctx.remap(srcv.args[0])
                        for rule in pass_rules:
                            res = rule.fn(ctx, inner_val, x, qin, out)
                            if res is not None:
                                return res
        if isinstance(inner_val, relax.TupleGetItem):
            tup = inner_val.tuple_value
            call = v2v.get(tup) if isinstance(tup, relax.Var) else None
            top = _call_op(call)
            for rule in REGISTRY.realize(Stage.ITEM):
                if top in rule.ops:
                    res = rule.fn(ctx, call, int(inner_val.index), out)
                    if res is not None:
                        return res
        return None


__all__ = ["RealizeInteger", "const_value"]
