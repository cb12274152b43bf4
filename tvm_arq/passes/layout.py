"""``ConvertLayout``: rewrite the integer module's kernels for a target (NHWC, packed weights).

Runs after :class:`~tvm_arq.passes.RealizeInteger`, whose kernels are NCHW/OIHW and target
independent. Per target (:func:`layout_plan`):

- conv2d (``groups == 1``, any kernel size, stride, dilation) -> ``qconv2d_nhwc_packed`` with the
  weights packed at compile time ``[O/16, KH, KW, C/kgroup, 16, kgroup]`` (zero beyond ``O``, ``C``)
  and tensorized to the target's dot product (x86 ``vpdpbusd``, AArch64 ``sdot``; RISC-V V:
  vectorized). The activation is shifted into the dot product's operand type inside the kernel when
  its storage differs (int8 on x86 -> ``+128``; uint8 on ARM -> ``-128``), the bias absorbing
  ``-shift * sum(w)``; a shift that could overflow int32 keeps the plain vectorized kernel;
- dense -> the same kernel, as a 1x1 conv on a ``[1, 1, N, K]`` view;
- depthwise conv -> ``qdwconv2d_nhwc`` (channels in vector lanes); other grouped convs ->
  ``qconv2d_nhwc``;
- a lookup-table activation that is the only consumer of a conv is fused into its epilogue;
- pooling, global mean, resize -> NHWC kernels; add, mul, concat, clamp, pad, LUT, softmax and
  slicing/transposes keep their kernel with the axes remapped (they are layout-agnostic);
- the graph input ``quantize`` writes NHWC and the output ``dequantize`` reads NHWC (fused layout
  transforms). Anything else (float fallbacks, reshapes of real feature maps, kernels this pass does
  not know) gets NCHW through a ``permute_dims``, made once per tensor and only where needed.

Every new kernel keeps ``arq.op`` / ``arq.params``, and has a numpy twin
(:mod:`tvm_arq.kernels.reference_layouts`), so the result still runs in the reference interpreter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from ..backends import get_backend
from ..kernels.nhwc import NHWC_KERNELS
from ..layoutspec import OPAQUE, LayoutPlan, PackedConvTarget
from ..qmath import dtype_range
from ..target import TargetInfo, resolve_target
from .graph import bindings_of, tensor_shape, uses
from .realize import INT32_MAX, INT32_MIN, accumulator_bounds, emit_kernel

logger = logging.getLogger(__name__)

#: NCHW -> NHWC and back
TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
#: NCHW axis -> NHWC axis
AXIS_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}

#: generic kernels whose semantics do not depend on the layout (their axis parameters are remapped)
_AGNOSTIC = ("qadd", "qmul", "qconcat", "qlut", "qclamp", "qpad", "qsoftmax")


def layout_plan(target) -> LayoutPlan:
    """The kernels for a target (any form :func:`~tvm_arq.target.resolve_target` accepts) or a plan."""
    return target if isinstance(target, LayoutPlan) else get_backend(target).layout_plan()


def pack_conv_weight(w: np.ndarray, lanes: int, kgroup: int) -> np.ndarray:
    """OIHW int8 -> ``[ceil(O/lanes), KH, KW, ceil(C/kgroup), lanes, kgroup]``, zero padded."""
    o, c, kh, kw = w.shape
    ob, cb = -(-o // lanes), -(-c // kgroup)
    full = np.zeros((ob * lanes, cb * kgroup, kh, kw), np.int8)
    full[:o, :c] = w
    return np.ascontiguousarray(full.reshape(ob, lanes, cb, kgroup, kh, kw).transpose(0, 4, 5, 2, 1, 3))


def _const(expr) -> np.ndarray:
    return expr.value.numpy()


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant)


def _permute_shape(shape, perm) -> list[int]:
    return [int(shape[p]) for p in perm]


def emit_layout_kernel(bb: relax.BlockBuilder, name: str, tensors: list, params: dict, *,
                       opaque: bool = False) -> relax.Var:
    """Emit one NHWC kernel as ``call_tir`` with ``arq.op`` / ``arq.params`` (like ``emit_kernel``)."""
    attrs = {"arq.op": name, "arq.params": json.dumps(params, sort_keys=True)}
    if opaque:
        attrs["op_pattern"] = OPAQUE
    return bb.emit_te(NHWC_KERNELS[name], *tensors, primfunc_name_hint=f"arq_{name}", primfunc_attrs=attrs, **params)


class _Converter:
    """State of one conversion: the new function's values of each old var, per layout."""

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
    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def as_nchw(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` (an old expression) in the original layout, transposing back if needed."""
        if isinstance(expr, relax.Var):
            name = expr.name
            if name in self.nchw:
                return self.nchw[name]
            if name in self.nhwc:
                self._count("permute_to_nchw")
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
            arr = _const(expr)
            return relax.const(np.ascontiguousarray(arr.transpose(TO_NHWC)), str(arr.dtype))
        assert isinstance(expr, relax.Var), expr
        name = expr.name
        if name not in self.nhwc:
            self._count("permute_to_nhwc")
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
                    self._binding(b.name, b.var, b.value)
                out = self.as_nchw(func.body.body)
                gv = self.bb.emit_output(out)
            self.bb.emit_func_output(gv)
        mod = self.bb.get()
        if self.mod.attrs is not None:
            mod = mod.with_attrs(self.mod.attrs)
        mod = relax.transform.DeadCodeElimination(["main"])(mod)
        logger.debug("ConvertLayout: %s", self.stats)
        return mod

    def _binding(self, name: str, var: relax.Var, value: relax.Expr) -> None:
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            op = value.op.name
            if op == "relax.call_tir":
                prim = self.mod[value.args[0]]
                if prim.attrs is not None and "arq.op" in prim.attrs:
                    kname = str(prim.attrs["arq.op"])
                    kparams = json.loads(str(prim.attrs["arq.params"]))
                    handler = self._handlers().get(kname)
                    args = list(value.args[1].fields)
                    if handler is not None and handler(name, args, kparams):
                        return
                    if kname in _AGNOSTIC and self._agnostic(name, kname, args, kparams):
                        return
            elif op == "relax.strided_slice" and self._slice(name, value):
                return
            elif op == "relax.permute_dims" and self._permute(name, value):
                return
            elif op in ("relax.reshape", "relax.flatten", "relax.squeeze") and self._reshape(name, value):
                return
        self.nchw[name] = self.bb.emit(self.as_nchw(value), name)

    def _handlers(self) -> dict[str, Callable]:
        return {
            "qconv2d": self._conv,
            "qdense": self._dense,
            "qmaxpool2d": self._maxpool,
            "qavgpool2d": self._avgpool,
            "qmean_hw": self._mean,
            "qresize_nearest": self._resize_nearest,
            "qresize_bilinear": self._resize_bilinear,
            "quantize": self._quantize,
            "dequantize": self._dequantize,
        }

    # -- conv / dense ---------------------------------------------------------------------------
    def _fusable_lut(self, name: str):
        """The single ``qlut`` consumer of ``name`` (per tensor, or per channel of NCHW axis 1)."""
        users = self.users.get(name, [])
        if len(users) != 1 or users[0] == "<output>":
            return None
        value = self.values.get(users[0])
        if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                and value.op.name == "relax.call_tir"):
            return None
        prim = self.mod[value.args[0]]
        if prim.attrs is None or str(prim.attrs.get("arq.op", "")) != "qlut":
            return None
        args = list(value.args[1].fields)
        if not (isinstance(args[0], relax.Var) and args[0].name == name and _is_const(args[1])):
            return None
        p = json.loads(str(prim.attrs["arq.params"]))
        table = _const(args[1])
        if p["axis"] >= 0 and table.shape[0] > 1 and p["axis"] != 1:
            return None
        return users[0], table, p

    def _lut_operands(self, name: str, tensors: list, params: dict, channel_axis_ok: bool = True) -> str:
        """Fuse the LUT consumer of ``name`` if any; returns the name whose value the kernel defines."""
        lut = self._fusable_lut(name)
        if lut is None or not channel_axis_ok:
            return name
        lut_name, table, p = lut
        tensors.append(relax.const(table, str(table.dtype)))
        params["lut_axis"] = 3 if p["axis"] >= 0 and table.shape[0] > 1 else -1
        params["lut_qmin"] = int(p["qmin"])
        params["out_dtype"] = str(table.dtype)
        self.fused.add(lut_name)
        self._count("fused_lut")
        return lut_name

    def _conv(self, name: str, args: list, p: dict) -> bool:
        x, w, bias, m0, rs = args
        if not all(_is_const(a) for a in (w, bias, m0, rs)) or len(tensor_shape(x) or ()) != 4:
            return False
        qw, b, m0v, rsv = (_const(a) for a in (w, bias, m0, rs))
        o, cg, kh, kw = qw.shape
        c = int(tensor_shape(x)[1])
        groups = int(p["groups"])
        x_dtype = str(x.ty.dtype)
        common = {"strides": p["strides"], "padding": p["padding"], "dilation": p["dilation"]}
        qp = [p["zp_x"], p["zp_y"], p["qlo"], p["qhi"]]
        if groups == 1:
            self._packed(name, self.as_nhwc(x), x_dtype, qw, b, m0v, rsv, qp, common, p["out_dtype"])
            return True
        if groups == c == o and cg == 1:
            tensors = [self.as_nhwc(x), relax.const(np.ascontiguousarray(qw[:, 0].transpose(1, 2, 0)), "int8"),
                       relax.const(b, "int32"), relax.const(m0v, "int32"), relax.const(rsv, "int32"),
                       relax.const(np.array(qp, np.int32), "int32")]
            params = {**common, "out_dtype": p["out_dtype"], "schedule": self.plan.depthwise.rule}
            defined = self._lut_operands(name, tensors, params)
            self.nhwc[defined] = emit_layout_kernel(self.bb, "qdwconv2d_nhwc", tensors, params, opaque=True)
            self._count("qdwconv2d_nhwc")
            return True
        tensors = [self.as_nhwc(x), relax.const(np.ascontiguousarray(qw.transpose(2, 3, 1, 0)), "int8"),
                   relax.const(b, "int32"), relax.const(m0v, "int32"), relax.const(rsv, "int32"),
                   relax.const(np.array(qp, np.int32), "int32")]
        params = {**common, "groups": groups, "out_dtype": p["out_dtype"]}
        defined = self._lut_operands(name, tensors, params)
        self.nhwc[defined] = emit_layout_kernel(self.bb, "qconv2d_nhwc", tensors, params)
        self._count("qconv2d_nhwc")
        return True

    def _choose_conv(self, qw: np.ndarray, bias: np.ndarray, x_dtype: str) -> tuple[PackedConvTarget, int, np.ndarray]:
        """Packed config, input shift and shifted bias (falls back when the shift could overflow)."""
        cfg = self.plan.conv
        dom = cfg.domain_dtype or x_dtype
        if dom == x_dtype:
            return cfg, 0, bias
        shift = dtype_range(dom)[0] - dtype_range(x_dtype)[0]  # +128: int8 -> uint8, -128: uint8 -> int8
        w_sum = qw.reshape(qw.shape[0], -1).astype(np.int64).sum(axis=1)
        new_bias = bias.astype(np.int64) - shift * w_sum
        lo, hi = accumulator_bounds(qw, dom)
        if np.all(new_bias >= INT32_MIN) and np.all(new_bias <= INT32_MAX) and np.all(lo >= INT32_MIN) \
                and np.all(hi <= INT32_MAX):
            return cfg, shift, new_bias.astype(np.int32)
        logger.info("conv: shifting %s activations to %s could overflow int32; using %s", x_dtype, dom,
                    self.plan.conv_fallback.rule)
        return self.plan.conv_fallback, 0, bias

    def _packed(self, name: str, x_nhwc, x_dtype: str, qw, bias, m0v, rsv, qp: list, common: dict,
                out_dtype: str, define_nhwc: bool = True):
        cfg, shift, bias = self._choose_conv(qw, bias, x_dtype)
        dom = cfg.domain_dtype or x_dtype
        qp = [int(qp[0]) + shift, *(int(v) for v in qp[1:])]
        tensors = [x_nhwc, relax.const(pack_conv_weight(qw, cfg.lanes, cfg.kgroup), "int8"),
                   relax.const(np.asarray(bias, np.int32), "int32"), relax.const(m0v, "int32"),
                   relax.const(rsv, "int32"), relax.const(np.array(qp, np.int32), "int32")]
        params = {**common, "out_channels": int(qw.shape[0]), "in_offset": int(shift), "domain_dtype": dom,
                  "out_dtype": out_dtype, "schedule": cfg.rule}
        defined = self._lut_operands(name, tensors, params) if define_nhwc else name
        out = emit_layout_kernel(self.bb, "qconv2d_nhwc_packed", tensors, params, opaque=True)
        self._count("qconv2d_nhwc_packed")
        if define_nhwc:
            self.nhwc[defined] = out
        return out

    def _dense(self, name: str, args: list, p: dict) -> bool:
        x, w, bias, m0, rs = args
        shp = tensor_shape(x)
        if not all(_is_const(a) for a in (w, bias, m0, rs)) or shp is None or len(shp) != 2:
            return False
        n, k = shp
        qw = _const(w)
        x4 = self.bb.emit(relax.op.reshape(self.as_nchw(x), [1, 1, n, k]))
        common = {"strides": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1]}
        # realize folds the zero point into the bias; dense has no padding, the pad value is unused
        qp = [0, p["zp_y"], p["qlo"], p["qhi"]]
        y4 = self._packed(name, x4, str(x.ty.dtype), qw.reshape(*qw.shape, 1, 1), _const(bias), _const(m0),
                          _const(rs), qp, common, p["out_dtype"], define_nhwc=False)
        self.nchw[name] = self.bb.emit(relax.op.reshape(y4, [n, int(qw.shape[0])]), name)
        return True

    # -- pooling, resize ------------------------------------------------------------------------
    def _simple(self, name: str, kernel: str, tensors: list, params: dict) -> bool:
        self.nhwc[name] = emit_layout_kernel(self.bb, kernel, tensors, params)
        self._count(kernel)
        return True

    def _maxpool(self, name: str, args: list, p: dict) -> bool:
        return self._simple(name, "qmaxpool2d_nhwc", [self.as_nhwc(args[0])], p)

    def _avgpool(self, name: str, args: list, p: dict) -> bool:
        return self._simple(name, "qavgpool2d_nhwc", [self.as_nhwc(args[0])], p)

    def _mean(self, name: str, args: list, p: dict) -> bool:
        out = tensor_shape(self._old_var(name))
        if not self.in_nhwc(args[0]) or out is None or len(out) != 4 or out[2:] != (1, 1):
            return False
        return self._simple(name, "qmean_hw_nhwc", [self.as_nhwc(args[0])], p)

    def _resize_nearest(self, name: str, args: list, p: dict) -> bool:
        return self._simple(name, "qresize_nearest_nhwc", [self.as_nhwc(args[0]), args[1], args[2]], p)

    def _resize_bilinear(self, name: str, args: list, p: dict) -> bool:
        return self._simple(name, "qresize_bilinear_nhwc", [self.as_nhwc(args[0]), args[1], args[2]], p)

    # -- float <-> int at the graph edges -------------------------------------------------------
    def _quantize(self, name: str, args: list, p: dict) -> bool:
        shp = tensor_shape(args[0])
        if shp is None or len(shp) != 4:
            return False
        return self._simple(name, "quantize_to_nhwc", [self.as_nchw(args[0])], p)

    def _dequantize(self, name: str, args: list, p: dict) -> bool:
        x = args[0]
        if not self.in_nhwc(x) or (isinstance(x, relax.Var) and x.name in self.nchw):
            return False
        self.nchw[name] = emit_layout_kernel(self.bb, "dequantize_to_nchw", [self.nhwc[x.name]], p)
        self._count("dequantize_to_nchw")
        return True

    # -- layout-agnostic kernels ----------------------------------------------------------------
    def _agnostic(self, name: str, kname: str, args: list, p: dict) -> bool:
        tensors = [a for a in args if not _is_const(a)]
        shapes = [tensor_shape(a) for a in args]
        out_shape = tensor_shape(self._old_var(name))
        if out_shape is None or len(out_shape) != 4 or not any(self.in_nhwc(a) for a in tensors):
            return False
        if kname in ("qadd", "qmul", "qconcat") and any(s is None or len(s) != 4 for s in shapes):
            return False
        p = dict(p)
        if kname in ("qadd", "qmul"):
            p["out_shape"] = _permute_shape(p["out_shape"], TO_NHWC)
        elif kname == "qconcat":
            p["axis"] = AXIS_NHWC[p["axis"] % 4]
        elif kname == "qlut":
            if p["axis"] >= 0:
                p["axis"] = AXIS_NHWC[p["axis"] % 4]
        elif kname == "qpad":
            p["pads"] = [p["pads"][i] for i in TO_NHWC]
        elif kname == "qsoftmax":
            p["axis"] = AXIS_NHWC[p["axis"] % 4]
        if kname == "qlut":
            new_args = [self.as_nhwc(args[0]), *args[1:]]
        elif kname == "qsoftmax":
            new_args = [self.as_nhwc(args[0]), args[1]]
        else:
            new_args = [self.as_nhwc(a) for a in args]
        tensor_arg = [new_args] if kname in ("qadd", "qconcat") else new_args
        self.nhwc[name] = emit_kernel(self.bb, kname, tensor_arg, p, kname)
        self._count(f"{kname}_nhwc")
        return True

    def _old_var(self, name: str) -> relax.Var:
        return self.vars[name]

    # -- Relax data-movement ops ----------------------------------------------------------------
    def _slice(self, name: str, call: relax.Call) -> bool:
        x = call.args[0]
        shp = tensor_shape(x)
        if not self.in_nhwc(x) or shp is None or len(shp) != 4:
            return False
        axes = [AXIS_NHWC[int(a.value) % 4] for a in call.args[1].fields]
        begin = [int(a.value) for a in call.args[2].fields]
        end = [int(a.value) for a in call.args[3].fields]
        strides = [int(a.value) for a in call.args[4].fields] if len(call.args) > 4 else None
        self.nhwc[name] = self.bb.emit(relax.op.strided_slice(self.as_nhwc(x), axes, begin, end, strides,
                                                              assume_inbound=bool(call.attrs.assume_inbound)))
        return True

    def _permute(self, name: str, call: relax.Call) -> bool:
        x = call.args[0]
        shp = tensor_shape(x)
        if not self.in_nhwc(x) or shp is None or len(shp) != 4 or call.attrs.axes is None:
            return False
        axes = [int(a) for a in call.attrs.axes]
        # out_nhwc = in_nchw.transpose(axes).transpose(TO_NHWC) = in_nhwc.transpose(composed)
        composed = [TO_NHWC.index(axes[TO_NHWC[i]]) for i in range(4)]
        if composed == [0, 1, 2, 3]:
            self.nhwc[name] = self.nhwc[x.name]
        else:
            self.nhwc[name] = self.bb.emit(relax.op.permute_dims(self.as_nhwc(x), composed))
        return True

    def _reshape(self, name: str, call: relax.Call) -> bool:
        """A reshape of an ``[N, C, 1, 1]`` tensor reads the same bytes as of its NHWC ``[N, 1, 1, C]``."""
        x = call.args[0]
        shp = tensor_shape(x)
        if not self.in_nhwc(x) or shp is None or len(shp) != 4 or shp[2] != 1 or shp[3] != 1:
            return False
        if isinstance(x, relax.Var) and x.name in self.nchw:
            return False
        out_shape = tensor_shape(self._old_var(name))
        if out_shape is None:
            return False
        self.nchw[name] = self.bb.emit(relax.op.reshape(self.nhwc[x.name], list(out_shape)), name)
        return True


def convert_layout(mod: tvm.IRModule, target) -> tvm.IRModule:
    """Rewrite ``main``'s integer kernels for ``target`` (see module docstring)."""
    plan = layout_plan(target)
    return _Converter(mod, plan).run()


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.ConvertLayout")
class ConvertLayout:
    """Module pass wrapper of :func:`convert_layout`.

    Parameters
    ----------
    target
        :class:`~tvm_arq.target.TargetInfo` or any form :func:`~tvm_arq.target.resolve_target` accepts.
    """

    def __init__(self, target: TargetInfo | str = "host"):
        self.target = resolve_target(target)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return convert_layout(mod, self.target)


__all__ = ["ConvertLayout", "LayoutPlan", "convert_layout", "layout_plan", "pack_conv_weight"]
