"""Relax canonicalization after import: TVM 0.27's ``Clip`` kernels back to ``R.clip`` / ``R.nn.relu``."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import numpy as np
import tvm
from tvm import relax

logger = logging.getLogger(__name__)

__all__ = ["canonicalize_clip"]

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_CLIP_KERNEL = re.compile(r"^(maximum|minimum)(_?\d+)?$")


@relax.expr_functor.mutator
class _ClipCanonicalizer(relax.PyExprMutator):
    """Rewrite ``call_tir(maximum|minimum, (x, scalar const))`` into ``R.clip``."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.rewritten = 0

    def _resolve(self, expr: Any, depth: int = 0) -> np.ndarray | None:
        """Numpy value of an expression built only from constants, isnan and where."""
        if depth > 8:
            return None
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            return None if bound is None else self._resolve(bound, depth + 1)
        if isinstance(expr, tvm.ir.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            args = [self._resolve(a, depth + 1) for a in expr.args]
            if any(a is None for a in args):
                return None
            if expr.op.name == "relax.isnan":
                return np.isnan(args[0])
            if expr.op.name == "relax.where":
                return np.where(args[0], args[1], args[2])
        return None

    def _as_clip(self, expr: Any) -> tuple[Any, float, float] | None:
        """(x, lo, hi) if ``expr`` (or the value bound to it) is ``R.clip``/``R.nn.relu``."""
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            if bound is None:
                return None
            expr = bound
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return None
        if expr.op.name == "relax.clip":
            lo, hi = expr.args[1], expr.args[2]
            lo_v, hi_v = _prim_float(lo), _prim_float(hi)
            if lo_v is None or hi_v is None:
                return None
            return expr.args[0], lo_v, hi_v
        if expr.op.name == "relax.nn.relu":
            return expr.args[0], 0.0, math.inf
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D401
        call = self.visit_expr_post_order(call)
        if call.op != _CALL_TIR or len(call.args) < 2 or not isinstance(call.args[0], tvm.ir.GlobalVar):
            return call
        match = _CLIP_KERNEL.match(call.args[0].name_hint)
        args = call.args[1]
        if match is None or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
            return call
        x, bound = args.fields
        xty, oty = getattr(x, "ty", None), getattr(call, "ty", None)
        if not isinstance(xty, relax.TensorType) or not isinstance(oty, relax.TensorType):
            return call
        if str(xty.dtype) != str(oty.dtype) or str(xty.dtype) not in ("float16", "float32", "float64"):
            return call
        if xty.shape is None or oty.shape is None or list(xty.shape) != list(oty.shape):
            return call
        val = self._resolve(bound)
        if val is None or val.size != 1 or np.isnan(val).any():
            return call
        v = float(val.reshape(-1)[0])
        is_max = match.group(1) == "maximum"
        lo, hi = (v, math.inf) if is_max else (-math.inf, v)
        inner = self._as_clip(x)
        if inner is not None:
            # clip(clip(y, a, b), lo, hi) == clip(y, max(a, lo), min(b, hi)) while the range is non-empty
            y, a, b = inner
            new_lo, new_hi = max(a, lo), min(b, hi)
            if new_lo <= new_hi:
                x, lo, hi = y, new_lo, new_hi
        self.rewritten += 1
        if lo == 0.0 and hi == math.inf:
            return relax.op.nn.relu(x)
        return relax.op.clip(x, lo, hi)


def _prim_float(value: Any) -> float | None:
    """Python float of a ``relax.PrimValue`` / ``IntImm`` / ``FloatImm``, or None."""
    for _ in range(3):
        if isinstance(value, int | float):
            return float(value)
        value = getattr(value, "value", None)
        if value is None:
            return None
    return None


def canonicalize_clip(mod: tvm.IRModule) -> tvm.IRModule:
    """Turn TVM 0.27's import of ONNX ``Clip`` into ``R.clip`` / ``R.nn.relu``.

    TVM 0.27 imports ``Clip`` (opset >= 11) as ``isnan``/``where`` on the bounds followed
    by ``call_tir`` of TOPI ``maximum`` and ``minimum`` kernels, which pattern-based
    passes cannot see through. With constant scalar bounds this rewrites the pair into
    one ``R.clip(x, lo, hi)`` (``R.nn.relu(x)`` for ``Clip(x, 0)``) and removes the
    now-unused bindings and kernels.

    Parameters
    ----------
    mod : tvm.IRModule
        The module to rewrite.

    Returns
    -------
    tvm.IRModule
        The rewritten module (``mod`` itself when nothing matched).
    """
    mutator = _ClipCanonicalizer(mod)
    changed = False
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            new_func = mutator.visit_expr(func)
            if mutator.rewritten:
                mod = _with_function(mod, gv, new_func)
                changed = True
    if not changed:
        return mod
    mod = relax.transform.DeadCodeElimination()(mod)
    logger.debug("canonicalized %d Clip kernels", mutator.rewritten)
    return mod


def _with_function(mod: tvm.IRModule, gv: tvm.ir.GlobalVar, func: relax.Function) -> tvm.IRModule:
    new = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new[gv] = func
    return new
