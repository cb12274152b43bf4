"""Small helpers to read and rebuild a Relax ``main`` function binding by binding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax


@dataclass
class Binding:
    """One ``var = value`` of ``main`` (all blocks flattened, in order)."""

    var: relax.Var
    value: relax.Expr

    @property
    def name(self) -> str:
        return self.var.name

    @property
    def op(self) -> str | None:
        v = self.value
        if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op):
            return v.op.name
        return None


def bindings_of(func: relax.Function) -> list[Binding]:
    out = []
    for block in func.body.blocks:
        for b in block.bindings:
            out.append(Binding(b.var, b.value))
    return out


def var_names(func: relax.Function) -> list[str]:
    return [p.name for p in func.params] + [b.name for b in bindings_of(func)]


def uses(func: relax.Function) -> dict[str, list[str]]:
    """Map var name -> names of bindings (or ``"<output>"``) that use it."""
    users: dict[str, list[str]] = {}

    def visit(expr, user):
        if isinstance(expr, relax.Var):
            users.setdefault(expr.name, []).append(user)
        elif isinstance(expr, relax.Tuple):
            for f in expr.fields:
                visit(f, user)
        elif isinstance(expr, relax.TupleGetItem):
            visit(expr.tuple_value, user)
        elif isinstance(expr, relax.Call):
            for a in expr.args:
                visit(a, user)

    for b in bindings_of(func):
        visit(b.value, b.name)
    visit(func.body.body, "<output>")
    return users


def tensor_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = expr.ty if hasattr(expr, "ty") else None
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        try:
            return tuple(int(d) for d in ty.shape.values)
        except (TypeError, AttributeError):
            return None
    return None


def tensor_dtype(expr: relax.Expr) -> str | None:
    ty = expr.ty if hasattr(expr, "ty") else None
    if isinstance(ty, relax.TensorType):
        return str(ty.dtype)
    return None


def const_value(expr: relax.Expr, var2val: dict | None = None) -> np.ndarray | None:
    """The numpy value of a constant (possibly through a var binding), else ``None``."""
    if isinstance(expr, relax.Var) and var2val is not None and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    return None


def check_unique_names(func: relax.Function) -> None:
    names = var_names(func)
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"main has duplicate variable names {sorted(dup)[:5]}; run tvm_arq.passes.UniqueNames")


class Rebuilder:
    """Re-emit ``main`` binding by binding with a callback that may replace each value.

    ``on_binding(rb, binding, value)`` receives the binding and its value with arguments already
    remapped to the new function, and returns the new expression for the var (emitted by the caller),
    or a Var already emitted through ``rb.bb``.
    """

    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.func = mod["main"]
        self.bb = relax.BlockBuilder()
        self.env: dict[str, relax.Expr] = {}

    def remap(self, expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Var):
            return self.env.get(expr.name, expr)
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.remap(f) for f in expr.fields])
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(self.remap(expr.tuple_value), expr.index)
        if isinstance(expr, relax.Call):
            return relax.Call(expr.op, [self.remap(a) for a in expr.args], expr.attrs, expr.ty_args)
        return expr

    def run(self, on_binding: Callable, on_output: Callable | None = None,
            on_start: Callable | None = None) -> tvm.IRModule:
        func = self.func
        params = [relax.Var(p.name, p.ty) for p in func.params]
        for old, new in zip(func.params, params, strict=True):
            self.env[old.name] = new
        attrs = dict(func.attrs) if func.attrs is not None else None
        with self.bb.function("main", params, attrs=attrs):
            with self.bb.dataflow():
                if on_start is not None:
                    on_start(self)
                for b in bindings_of(func):
                    value = self.remap(b.value)
                    new = on_binding(self, b, value)
                    if not isinstance(new, relax.Var):
                        new = self.bb.emit(new, b.name)
                    self.env[b.name] = new
                out = self.remap(func.body.body)
                if on_output is not None:
                    out = on_output(self, out)
                gv = self.bb.emit_output(out)
            self.bb.emit_func_output(gv)
        mod = self.bb.get()
        for gv, f in self.mod.functions.items():
            if gv.name_hint != "main" and gv.name_hint not in [g.name_hint for g in mod.get_global_vars()]:
                mod[gv] = f
        if self.mod.attrs is not None:
            mod = mod.with_attrs(self.mod.attrs)
        return relax.transform.DeadCodeElimination(["main"])(mod)
