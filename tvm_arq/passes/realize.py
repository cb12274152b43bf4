"""``RealizeInteger``: lower the annotated (QDQ) module to integer kernels.

Every ``quantize`` that ends a pattern of :mod:`tvm_arq.passes.patterns` becomes one ``call_tir`` to a
kernel of :mod:`tvm_arq.kernels` whose integer parameters are computed here at compile time:

- int32 bias ``b_q = round(b / (s_x * s_w))`` with the zero-point correction folded in:
  ``b' = b_q - z_x * sum(q_w)`` per output channel (the kernel pads with ``z_x``);
- fixed-point requantization ``(M0, rshift)`` per output channel for ``s_x * s_w / s_y``;
- the activation folded into the output clamp.

Remaining ``quantize`` / ``dequantize`` of activations become float<->int kernels; float ops stay.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import tvm
from tvm import relax

from ..kernels import KERNELS
from ..qmath import common_multipliers, dtype_range, quantize_multiplier
from . import patterns as P
from .analysis import PASS_THROUGH
from .graph import Rebuilder, bindings_of, const_value, tensor_shape

logger = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def emit_kernel(bb: relax.BlockBuilder, name: str, tensors: list, params: dict, hint: str) -> relax.Var:
    """Emit one integer kernel as ``call_tir`` with its constants recorded on the PrimFunc."""
    fn = KERNELS[name]
    attrs = {"arq.op": name, "arq.params": json.dumps(params, sort_keys=True)}
    return bb.emit_te(fn, *tensors, primfunc_name_hint=f"arq_{name}", primfunc_attrs=attrs, **params)


def _scalar(expr) -> float:
    return float(np.asarray(expr.value.numpy()).reshape(-1)[0])


def _qinfo(q_call: relax.Call) -> tuple[float, int, str]:
    """(scale, zero point, dtype) of a quantize/dequantize call with scalar constants."""
    return _scalar(q_call.args[1]), int(_scalar(q_call.args[2])), str(q_call.args[2].value.dtype)


def _act_clamp(act_call: relax.Call | None, op_name: str | None, s_y: float, z_y: int, dtype: str) -> tuple[int, int]:
    qlo, qhi = dtype_range(dtype)
    if act_call is None:
        return qlo, qhi

    def q(v: float) -> int:
        return int(np.clip(z_y + np.rint(np.float32(v) / np.float32(s_y)), qlo, qhi))

    if op_name == "relax.nn.relu":
        return max(qlo, z_y), qhi
    lo, hi = float(act_call.args[1].value), float(act_call.args[2].value)
    return max(qlo, q(lo)), min(qhi, q(hi))


def _which(m: dict, *pats):
    for p in pats:
        if p in m:
            return m[p]
    return None


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.RealizeInteger")
class RealizeInteger:
    """Lower an annotated module to integer kernels (see module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        var2val = relax.analysis.get_var2val(func)
        self.var2val = var2val
        names = {b.name for b in bindings_of(func)}
        del names

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
                s, z, _ = _qinfo(b.value)
                return emit_kernel(rb.bb, "dequantize", [rb.remap(b.value.args[0])], {"scale": s, "zp": z}, b.name)
            return value

        return Rebuilder(mod).run(lower_dequantize)

    # -- patterns ------------------------------------------------------------------------------
    def _realize_quantize(self, rb: Rebuilder, b) -> relax.Expr | None:
        v2v = self.var2val
        expr = b.value
        s_y, z_y, dtype = _qinfo(expr)
        qlo, qhi = dtype_range(dtype)
        m = P.QLINEAR.extract_matched_expr(expr, v2v)
        if m is not None:
            return self._linear(rb, m, s_y, z_y, dtype)
        m = P.QADD.extract_matched_expr(expr, v2v)
        if m is not None:
            return self._add(rb, m, s_y, z_y, dtype)
        inner = expr.args[0]
        if isinstance(inner, relax.Var) and inner in v2v:
            inner_val = v2v[inner]
            if isinstance(inner_val, relax.Call) and isinstance(inner_val.op, tvm.ir.Op):
                opn = inner_val.op.name
                if opn == "relax.concat":
                    return self._concat(rb, inner_val, s_y, z_y, dtype)
                if opn in PASS_THROUGH:
                    src = inner_val.args[0]
                    srcv = v2v.get(src) if isinstance(src, relax.Var) else None
                    if srcv is not None and P.DQ_ACT.match(srcv):
                        return self._unary(rb, inner_val, srcv, s_y, z_y, dtype)
        # plain float -> int at a quantization point
        return emit_kernel(rb.bb, "quantize", [rb.remap(expr.args[0])],
                           {"scale": s_y, "zp": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}, b.name)

    def _linear(self, rb: Rebuilder, m: dict, s_y: float, z_y: int, dtype: str):
        dq_x = m[P.DQ_X]
        dq_w = m[P.DQ_W]
        s_x, z_x, _ = _qinfo(dq_x)
        qw = dq_w.args[0].value.numpy().astype(np.int8)
        s_w = dq_w.args[1].value.numpy().astype(np.float64).reshape(-1)
        is_conv = P.CONV in m
        anchor = m[P.CONV] if is_conv else m[P.DENSE]
        if not is_conv:
            qw = np.ascontiguousarray(qw.T)  # [K, O] -> [O, K]
        n_out = qw.shape[0]
        if s_w.size == 1:
            s_w = np.full(n_out, s_w[0])
        bias_c = m.get(P.BIAS)
        bias = np.zeros(n_out, np.float64) if bias_c is None else bias_c.value.numpy().astype(np.float64).reshape(-1)
        if bias.size == 1:
            bias = np.full(n_out, bias[0])
        acc_scale = np.float64(s_x) * s_w
        b_q = np.clip(np.rint(bias / acc_scale), INT32_MIN, INT32_MAX).astype(np.int64)
        w_sum = qw.reshape(n_out, -1).astype(np.int64).sum(axis=1)
        b_fold = b_q - np.int64(z_x) * w_sum
        if np.any(b_fold < INT32_MIN) or np.any(b_fold > INT32_MAX):
            raise OverflowError("folded int32 bias overflows; the layer's scales are degenerate")
        m0, rs = quantize_multiplier(acc_scale / s_y)
        act = _which(m, P.RELU, P.CLIP)
        act_name = act.op.name if act is not None else None
        qlo, qhi = _act_clamp(act, act_name, s_y, z_y, dtype)
        tensors = [
            rb.remap(m[P.DQ_X].args[0]),
            relax.const(qw, "int8"),
            relax.const(b_fold.astype(np.int32), "int32"),
            relax.const(m0, "int32"),
            relax.const(rs, "int32"),
        ]
        if is_conv:
            a = anchor.attrs
            params = {
                "strides": [int(v) for v in a.strides],
                "padding": [int(v) for v in a.padding],
                "dilation": [int(v) for v in a.dilation],
                "groups": int(a.groups),
                "zp_x": z_x, "zp_y": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype,
            }
            return emit_kernel(rb.bb, "qconv2d", tensors, params, "qconv2d")
        params = {"zp_y": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}
        # dense has no padding: fold the zero point exactly like conv
        return emit_kernel(rb.bb, "qdense", tensors, params, "qdense")

    def _add(self, rb: Rebuilder, m: dict, s_y: float, z_y: int, dtype: str):
        s_a, z_a, _ = _qinfo(m[P.DQ_X])
        s_b, z_b, _ = _qinfo(m[P.DQ_Y])
        mults, shift = common_multipliers([s_a / s_y, s_b / s_y])
        act = _which(m, P.ADD_RELU, P.ADD_CLIP)
        qlo, qhi = _act_clamp(act, act.op.name if act is not None else None, s_y, z_y, dtype)
        out_shape = list(tensor_shape(m[P.ADD]))
        params = {"out_shape": out_shape, "zps": [z_a, z_b], "mults": mults, "shift": shift,
                  "zp_y": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}
        return emit_kernel(rb.bb, "qadd", [[rb.remap(m[P.DQ_X].args[0]), rb.remap(m[P.DQ_Y].args[0])]], params, "qadd")

    def _concat(self, rb: Rebuilder, cat: relax.Call, s_y: float, z_y: int, dtype: str):
        v2v = self.var2val
        tup = cat.args[0]
        if isinstance(tup, relax.Var):
            tup = v2v[tup]
        srcs, zps, scales = [], [], []
        for f in tup.fields:
            fv = v2v.get(f) if isinstance(f, relax.Var) else None
            if fv is None or not P.DQ_ACT.match(fv):
                return None
            s, z, _ = _qinfo(fv)
            srcs.append(rb.remap(fv.args[0]))
            zps.append(z)
            scales.append(s / s_y)
        mults, shift = common_multipliers(scales)
        qlo, qhi = dtype_range(dtype)
        params = {"axis": int(cat.attrs.axis), "zps": zps, "mults": mults, "shift": shift,
                  "zp_y": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}
        return emit_kernel(rb.bb, "qconcat", [srcs], params, "qconcat")

    def _unary(self, rb: Rebuilder, call: relax.Call, dq_src: relax.Call, s_y: float, z_y: int, dtype: str):
        s_x, z_x, _ = _qinfo(dq_src)
        x = rb.remap(dq_src.args[0])
        if not (np.float32(s_x) == np.float32(s_y) and z_x == z_y):
            return None  # pass-through ops keep the parameters; anything else is a float op
        opn = call.op.name
        qlo, qhi = dtype_range(dtype)
        a = call.attrs
        if opn == "relax.nn.max_pool2d":
            params = {"pool": [int(v) for v in a.pool_size], "strides": [int(v) for v in a.strides],
                      "padding": [int(v) for v in a.padding], "dilation": [int(v) for v in a.dilation],
                      "qmin": qlo}
            return emit_kernel(rb.bb, "qmaxpool2d", [x], params, "qmaxpool2d")
        if opn == "relax.nn.avg_pool2d":
            if any(int(d) != 1 for d in a.dilation):
                return None
            params = {"pool": [int(v) for v in a.pool_size], "strides": [int(v) for v in a.strides],
                      "padding": [int(v) for v in a.padding], "count_include_pad": bool(a.count_include_pad),
                      "zp": z_x, "qlo": qlo, "qhi": qhi}
            return emit_kernel(rb.bb, "qavgpool2d", [x], params, "qavgpool2d")
        if opn in ("relax.nn.adaptive_avg_pool2d", "relax.mean"):
            return emit_kernel(rb.bb, "qmean_hw", [x], {"zp": z_x, "qlo": qlo, "qhi": qhi}, "qmean_hw")
        if opn in ("relax.nn.relu", "relax.clip"):
            lo, hi = _act_clamp(call, opn, s_y, z_y, dtype)
            return emit_kernel(rb.bb, "qclamp", [x], {"lo": lo, "hi": hi}, "qclamp")
        # shape ops: same op on the integer tensor
        return relax.Call(call.op, [x] + [rb.remap(a) for a in call.args[1:]], call.attrs, call.ty_args)


__all__ = ["RealizeInteger", "const_value"]
