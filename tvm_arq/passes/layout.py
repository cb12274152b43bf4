"""``convert_layout``: rewrite the integer module's kernels for a target (NHWC, packed weights).

Runs after :class:`~tvm_arq.passes.RealizeInteger`, whose kernels are NCHW/OIHW and target independent.
The :class:`~tvm_arq.layoutspec.LayoutPlan` (chosen by the target backend) names the conv / depthwise
kernel configurations. Per kernel, the layout behaviour registered by its op family
(:data:`tvm_arq.ops.REGISTRY`) decides:

- an own conversion (conv / dense -> packed, depthwise or grouped NHWC kernels with fused lookup-table
  epilogues, pooling, global mean, resize -> NHWC kernels, the graph input ``quantize`` writes NHWC and
  the output ``dequantize`` reads NHWC: fused layout transforms);
- layout-agnostic kernels (add, mul, concat, clamp, pad, LUT, softmax) keep their kernel with the axes
  remapped;
- plain Relax data movement (slicing, transposes, reshapes of ``[N, C, 1, 1]``) has registered
  conversions too.

Anything else (float fallbacks, reshapes of real feature maps, NCHW-only kernels) gets NCHW through a
``permute_dims``, made once per tensor and only where needed.

Every new kernel keeps ``arq.op`` / ``arq.params`` and has a numpy twin, so the result still runs in the
reference interpreter.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import tvm
from tvm import relax

from ..layoutspec import LayoutPlan
from ..ops import REGISTRY
from ..ops.common import TO_NCHW, TO_NHWC
from ..ops.irutil import bindings_of, tensor_shape, uses
from ..ops.registry import Agnostic, emit_kernel

logger = logging.getLogger(__name__)


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant)


class LayoutContext:
    """State of one conversion: the new function's values of each old var, per layout.

    The layout conversions of the op families read and write it: :attr:`nchw` / :attr:`nhwc` map an old
    var name to its new value in that layout; :meth:`as_nchw` / :meth:`as_nhwc` give an old expression in
    a layout (transposing once per tensor where needed); :meth:`emit` emits a kernel; :attr:`fused`
    collects bindings a conversion absorbed (skipped by the driver); :attr:`plan` is the target's
    :class:`~tvm_arq.layoutspec.LayoutPlan`.
    """

    def __init__(self, mod: tvm.IRModule, plan: LayoutPlan):
        self.mod = mod
        self.plan = plan
        self.func = mod["main"]
        others = {gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}
        self.bb = relax.BlockBuilder(tvm.IRModule(others))
        self.nchw: dict[str, relax.Expr] = {}
        self.nhwc: dict[str, relax.Expr] = {}
        self.users = uses(self.func)
        self.values = {b.name: b.value for b in bindings_of(self.func)}
        self.vars = {b.name: b.var for b in bindings_of(self.func)}
        self.fused: set[str] = set()
        self.stats: dict[str, int] = {}

    # -- layouts of values ----------------------------------------------------------------------
    def count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def emit(self, kernel: str, tensors: list, params: dict, *, opaque: bool = False) -> relax.Var:
        """Emit a (target-layout) kernel and count it."""
        out = emit_kernel(self.bb, kernel, tensors, params, opaque=opaque)
        self.count(kernel)
        return out

    def as_nchw(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` (an old expression) in the original layout, transposing back if needed."""
        if isinstance(expr, relax.Var):
            name = expr.name
            if name in self.nchw:
                return self.nchw[name]
            if name in self.nhwc:
                self.count("permute_to_nchw")
                self.nchw[name] = self.bb.emit(relax.op.permute_dims(self.nhwc[name], list(TO_NCHW)))
                return self.nchw[name]
            return expr
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.as_nchw(f) for f in expr.fields])
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(self.as_nchw(expr.tuple_value), expr.index)
        if isinstance(expr, relax.Call):
            return relax.Call(expr.op, [self.as_nchw(a) for a in expr.args], expr.attrs, expr.ty_args)
        return expr

    def as_nhwc(self, expr: relax.Expr) -> relax.Expr:
        """A 4-D old expression in NHWC (constants are transposed at compile time)."""
        if _is_const(expr):
            arr = expr.value.numpy()
            return relax.const(np.ascontiguousarray(arr.transpose(TO_NHWC)), str(arr.dtype))
        assert isinstance(expr, relax.Var), expr
        name = expr.name
        if name not in self.nhwc:
            self.count("permute_to_nhwc")
            self.nhwc[name] = self.bb.emit(relax.op.permute_dims(self.as_nchw(expr), list(TO_NHWC)))
        return self.nhwc[name]

    def in_nhwc(self, expr: relax.Expr) -> bool:
        return isinstance(expr, relax.Var) and expr.name in self.nhwc

    # -- driver ---------------------------------------------------------------------------------
    def run(self) -> tvm.IRModule:
        func = self.func
        params = [relax.Var(p.name, p.ty) for p in func.params]
        for old, new in zip(func.params, params, strict=True):
            self.nchw[old.name] = new
        attrs = dict(func.attrs) if func.attrs is not None else None
        with self.bb.function("main", params, attrs=attrs):
            with self.bb.dataflow():
                for b in bindings_of(func):
                    if b.name in self.fused:
                        continue
                    self._binding(b.name, b.value)
                out = self.as_nchw(func.body.body)
                gv = self.bb.emit_output(out)
            self.bb.emit_func_output(gv)
        mod = self.bb.get()
        if self.mod.attrs is not None:
            mod = mod.with_attrs(self.mod.attrs)
        mod = relax.transform.DeadCodeElimination(["main"])(mod)
        logger.debug("ConvertLayout: %s", self.stats)
        return mod

    def _binding(self, name: str, value: relax.Expr) -> None:
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            op = value.op.name
            if op == "relax.call_tir":
                prim = self.mod[value.args[0]]
                if prim.attrs is not None and "arq.op" in prim.attrs:
                    kernel = REGISTRY.kernels.get(str(prim.attrs["arq.op"]))
                    kparams = json.loads(str(prim.attrs["arq.params"]))
                    args = list(value.args[1].fields)
                    if kernel is not None and isinstance(kernel.layout, Agnostic):
                        if self._agnostic(name, kernel.name, kernel.layout, kernel.tensor_list, args, kparams):
                            return
                    elif kernel is not None and kernel.layout is not None and kernel.layout(self, name, args, kparams):
                        return
            else:
                convert = REGISTRY.relax_layout.get(op)
                if convert is not None and convert(self, name, value):
                    return
        self.nchw[name] = self.bb.emit(self.as_nchw(value), name)

    def _agnostic(self, name: str, kname: str, spec: Agnostic, tensor_list: bool, args: list, p: dict) -> bool:
        """A layout-agnostic kernel on NHWC operands, its axis parameters remapped."""
        tensors = [a for a in args if not _is_const(a)]
        shapes = [tensor_shape(a) for a in args]
        out_shape = tensor_shape(self.vars[name])
        if out_shape is None or len(out_shape) != 4 or not any(self.in_nhwc(a) for a in tensors):
            return False
        if spec.all_4d and any(s is None or len(s) != 4 for s in shapes):
            return False
        p = spec.remap(dict(p))
        n = len(args) if spec.activations is None else spec.activations
        new_args = [self.as_nhwc(a) for a in args[:n]] + list(args[n:])
        tensor_arg = [new_args] if tensor_list else new_args
        self.nhwc[name] = emit_kernel(self.bb, kname, tensor_arg, p)
        self.count(f"{kname}_nhwc")
        return True


def convert_layout(mod: tvm.IRModule, plan: LayoutPlan) -> tvm.IRModule:
    """Rewrite ``main``'s integer kernels with the kernels of ``plan`` (see module docstring)."""
    return LayoutContext(mod, plan).run()


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.ConvertLayout")
class ConvertLayout:
    """Module pass wrapper of :func:`convert_layout`.

    Parameters
    ----------
    plan
        The target's kernels (``tvm_arq.backends.get_backend(target).layout_plan()``).
    """

    def __init__(self, plan: LayoutPlan):
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return convert_layout(mod, self.plan)


__all__ = ["ConvertLayout", "LayoutContext", "LayoutPlan", "convert_layout"]
