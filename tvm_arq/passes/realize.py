"""``RealizeInteger``: lower the annotated (QDQ) module to integer kernels.

Every ``quantize`` that ends a pattern of :mod:`tvm_arq.passes.patterns` becomes one ``call_tir`` to a
kernel of :mod:`tvm_arq.kernels` whose integer parameters are computed here at compile time:

- int32 bias ``b_q = round(b / (s_x * s_w))`` with the zero-point correction folded in:
  ``b' = b_q - z_x * sum(q_w)`` per output channel (the kernel pads with ``z_x``);
- fixed-point requantization ``(M0, rshift)`` per output channel for ``s_x * s_w / s_y``;
- the activation folded into the output clamp;
- for a single-input element-wise subgraph (SiLU, hardswish, sigmoid, ... see
  :mod:`tvm_arq.passes.elementwise`): a 256-entry table computed in float64 from the subgraph's own ops;
- for the product of two quantized tensors: one fixed-point multiplier ``s_a * s_b / s_y``;
- for resize: compile-time source-index (and, for bilinear, integer weight) tables.

Remaining ``quantize`` / ``dequantize`` of activations become float<->int kernels; float ops stay.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from ..kernels import KERNELS
from ..qmath import QuantizationError, common_multipliers, dtype_range, quantize_multiplier
from . import patterns as P
from .analysis import PASS_THROUGH, QuantPlan, Role
from .elementwise import Region, grow_region, lut_table
from .graph import Rebuilder, bindings_of, const_value, tensor_shape

logger = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: largest ``|acc + bias|`` for which ``acc * M0 + 2**(rshift - 1)`` (``M0 < 2**31``, ``rshift <= 62``) fits int64
ACC64_MAX = 3 * 2**30

tvm_ffi.register_error(QuantizationError)  # keep the type when it crosses the pass boundary
#: fractional bits of the bilinear resize weights (per axis)
RESIZE_BITS = 12


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
        src = expr.args[0]
        planned = self.plan.ops.get(src.name) if self.plan is not None and isinstance(src, relax.Var) else None
        if planned is not None and planned.role is Role.FLOAT:
            return emit_kernel(rb.bb, "quantize", [rb.remap(src)],
                               {"scale": s_y, "zp": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}, b.name)
        m = P.QLINEAR.extract_matched_expr(expr, v2v)
        if m is not None:
            return self._linear(rb, m, s_y, z_y, dtype, layer=b.name.removesuffix("_q"))
        m = P.QADD.extract_matched_expr(expr, v2v)
        if m is not None:
            return self._add(rb, m, s_y, z_y, dtype)
        m = P.QMUL.extract_matched_expr(expr, v2v)
        if m is not None:
            return self._mul(rb, m, s_y, z_y, dtype)
        m = P.QSOFTMAX.extract_matched_expr(expr, v2v)
        if m is not None:
            return self._softmax(rb, m, s_y, z_y, dtype)
        inner = expr.args[0]
        if isinstance(inner, relax.Var) and inner in v2v:
            inner_val = v2v[inner]
            if isinstance(inner_val, relax.Call) and isinstance(inner_val.op, tvm.ir.Op):
                opn = inner_val.op.name
                if opn == "relax.concat":
                    out = self._concat(rb, inner_val, s_y, z_y, dtype)
                    if out is not None:
                        return out
                if opn in PASS_THROUGH:
                    src = inner_val.args[0]
                    srcv = v2v.get(src) if isinstance(src, relax.Var) else None
                    if srcv is not None and P.DQ_ACT.match(srcv):
                        out = self._unary(rb, inner_val, srcv, s_y, z_y, dtype)
                        if out is not None:
                            return out
            if isinstance(inner_val, relax.TupleGetItem):
                out = self._split_item(rb, inner_val, s_y, z_y)
                if out is not None:
                    return out
            region = grow_region(inner, v2v, lambda v: True)
            if region is not None and region.leaf in v2v and P.DQ_ACT.match(v2v[region.leaf]):
                return self._lut(rb, region, v2v[region.leaf], s_y, z_y, dtype)
        # plain float -> int at a quantization point
        return emit_kernel(rb.bb, "quantize", [rb.remap(expr.args[0])],
                           {"scale": s_y, "zp": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}, b.name)

    def _linear(self, rb: Rebuilder, m: dict, s_y: float, z_y: int, dtype: str, layer: str = "?"):
        dq_x = m[P.DQ_X]
        dq_w = m[P.DQ_W]
        s_x, z_x, x_dtype = _qinfo(dq_x)
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
        kind = "conv2d" if is_conv else "dense"
        qw, s_w, b_fold = fit_int32(qw, s_w, bias, s_x, z_x, x_dtype, f"{kind} {layer!r}")
        acc_scale = np.float64(s_x) * s_w
        m0, rs = quantize_multiplier(acc_scale / s_y, saturate=True)
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

    def _mul(self, rb: Rebuilder, m: dict, s_y: float, z_y: int, dtype: str):
        s_a, z_a, _ = _qinfo(m[P.DQ_X])
        s_b, z_b, _ = _qinfo(m[P.DQ_Y])
        m0, rs = quantize_multiplier(np.float64(s_a) * np.float64(s_b) / np.float64(s_y), saturate=True)
        qlo, qhi = dtype_range(dtype)
        params = {"out_shape": list(tensor_shape(m[P.MUL])), "zps": [z_a, z_b], "m0": int(m0[0]),
                  "rshift": int(rs[0]), "zp_y": z_y, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}
        return emit_kernel(rb.bb, "qmul", [rb.remap(m[P.DQ_X].args[0]), rb.remap(m[P.DQ_Y].args[0])], params,
                           "qmul")

    def _softmax(self, rb: Rebuilder, m: dict, s_y: float, z_y: int, dtype: str):
        s_x, _z_x, in_dtype = _qinfo(m[P.DQ_X])
        lo, hi = dtype_range(in_dtype)
        table, shift, mult = softmax_constants(s_x, s_y, hi - lo + 1)
        qlo, qhi = dtype_range(dtype)
        params = {"axis": int(m[P.SOFTMAX].attrs.axis), "mult": mult, "shift": shift, "zp_y": z_y,
                  "qlo": qlo, "qhi": qhi, "out_dtype": dtype}
        return emit_kernel(rb.bb, "qsoftmax", [rb.remap(m[P.DQ_X].args[0]), relax.const(table, "int32")], params,
                           "qsoftmax")

    def _lut(self, rb: Rebuilder, region: Region, dq_src: relax.Call, s_y: float, z_y: int, dtype: str):
        s_x, z_x, in_dtype = _qinfo(dq_src)
        table = lut_table(region, self.var2val, s_x, z_x, in_dtype, s_y, z_y, dtype)
        name = P.activation_name(self.var2val[region.tail], self.var2val) or "+".join(
            o.removeprefix("relax.").removeprefix("nn.") for o in region.ops)
        params = {"axis": region.axis, "qmin": dtype_range(in_dtype)[0], "fn": name}
        return emit_kernel(rb.bb, "qlut", [rb.remap(dq_src.args[0]), relax.const(table, dtype)], params, "qlut")

    def _split_item(self, rb: Rebuilder, item: relax.TupleGetItem, s_y: float, z_y: int):
        """``split(dequantize(x))[i]`` -> ``strided_slice`` of the integer ``x``."""
        v2v = self.var2val
        tup = item.tuple_value
        call = v2v.get(tup) if isinstance(tup, relax.Var) else None
        if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.split"):
            return None
        src = call.args[0]
        srcv = v2v.get(src) if isinstance(src, relax.Var) else None
        if srcv is None or not P.DQ_ACT.match(srcv):
            return None
        s_x, z_x, _ = _qinfo(srcv)
        if not (np.float32(s_x) == np.float32(s_y) and z_x == z_y):
            return None
        shp = tensor_shape(src)
        axis = int(call.attrs.axis) % len(shp)
        ios = call.attrs.indices_or_sections
        if isinstance(ios, tvm.ir.prim.expr.IntImm | int):
            n = int(ios)
            step = shp[axis] // n
            bounds = [i * step for i in range(n)] + [shp[axis]]
        else:
            bounds = [0] + [int(v) for v in ios] + [shp[axis]]
        i = int(item.index)
        return rb.bb.emit(relax.op.strided_slice(rb.remap(srcv.args[0]), axes=[axis], begin=[bounds[i]],
                                                 end=[bounds[i + 1]]))

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
        if opn == "relax.nn.pad":
            pw = [int(v) for v in a.pad_width]
            pads = [[pw[2 * i], pw[2 * i + 1]] for i in range(len(pw) // 2)]
            value = int(np.clip(z_x + np.rint(np.float32(float(a.pad_value)) / np.float32(s_x)), qlo, qhi))
            return emit_kernel(rb.bb, "qpad", [x], {"pads": pads, "value": value}, "qpad")
        if opn == "relax.image.resize2d":
            return self._resize(rb, call, x)
        # shape ops: same op on the integer tensor
        return relax.Call(call.op, [x] + [rb.remap(a) for a in call.args[1:]], call.attrs, call.ty_args)

    def _resize(self, rb: Rebuilder, call: relax.Call, x: relax.Expr):
        a = call.attrs
        _, _, ih, iw = tensor_shape(call.args[0])
        _, _, oh, ow = tensor_shape(call)
        mode, method = str(a.coordinate_transformation_mode), str(a.method)
        rounding = str(a.rounding_method)
        if method == "nearest_neighbor":
            iy = resize_source_index(ih, oh, mode, rounding)
            ix = resize_source_index(iw, ow, mode, rounding)
            return emit_kernel(rb.bb, "qresize_nearest", [x, relax.const(iy, "int32"), relax.const(ix, "int32")],
                               {}, "qresize_nearest")
        ty = resize_linear_table(ih, oh, mode, RESIZE_BITS)
        tx = resize_linear_table(iw, ow, mode, RESIZE_BITS)
        return emit_kernel(rb.bb, "qresize_bilinear", [x, relax.const(ty, "int32"), relax.const(tx, "int32")],
                           {"bits": RESIZE_BITS}, "qresize_bilinear")


def accumulator_bounds(qw: np.ndarray, x_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the extreme partial sums of ``sum_k q_x * q_w`` over any subset of ``k``.

    ``q_x`` ranges over the storage range of ``x_dtype`` (the kernel pads with the zero point, which is in
    range), so these bound the int32 accumulator whatever the input and the summation order.
    """
    lo, hi = dtype_range(x_dtype)
    w = qw.reshape(qw.shape[0], -1).astype(np.int64)
    t_hi, t_lo = np.maximum(w * lo, w * hi), np.minimum(w * lo, w * hi)
    return np.minimum(t_lo, 0).sum(axis=1), np.maximum(t_hi, 0).sum(axis=1)


def fit_int32(qw: np.ndarray, s_w: np.ndarray, bias: np.ndarray, s_x: float, z_x: int, x_dtype: str,
              layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer weights, weight scales and folded int32 bias of a conv/dense whose arithmetic cannot overflow.

    The kernels accumulate ``sum_k q_x * q_w`` in int32, add the folded bias
    ``b' = round(b / (s_x * s_w)) - z_x * sum_k q_w`` and requantize ``(acc * M0) >> rshift`` in int64.
    Per output channel:

    - the accumulator bound (:func:`accumulator_bounds`, ``<= K * |q_x|max * |q_w|max``) must fit int32,
      else ``OverflowError`` naming the layer (it depends on the weights and dtype only: e.g. uint8
      activations with ``K = Cin/groups * KH * KW > 66k`` full-scale weights);
    - ``b'`` must fit int32 and ``|acc + b'| <= ACC64_MAX`` (which keeps ``acc * M0 + 2**(rshift-1)`` inside
      int64). A near-constant input (tiny scale ``s_x``) makes ``b / (s_x * s_w)`` huge; the channel's weight
      scale is then raised until it fits and its weights re-rounded. The added error is below
      ``K * 2**-24 * |b|`` in real units.
    """
    qw = qw.astype(np.int8)
    s_w = s_w.astype(np.float64).copy()
    n_out = qw.shape[0]
    per_channel = (-1,) + (1,) * (qw.ndim - 1)
    acc_lo, acc_hi = accumulator_bounds(qw, x_dtype)
    over = (acc_hi > INT32_MAX) | (acc_lo < INT32_MIN)
    if np.any(over):
        c = int(np.argmax(np.maximum(acc_hi, -acc_lo)))
        k = int(np.prod(qw.shape[1:]))
        raise QuantizationError(
            f"{layer}: the int32 accumulator can overflow: with {x_dtype} activations, reduction size "
            f"K = {k} and these weights, output channel {c} can reach {int(max(acc_hi[c], -acc_lo[c])):.4g} "
            f"> 2**31 - 1. Use int8 activations (QuantConfig(act_dtype='int8')), split the layer along its "
            f"input channels, or keep it in float (QuantConfig(skip_ops=...))"
        )
    changed = np.zeros(n_out, bool)
    for _ in range(64):
        b_q = np.rint(bias / (np.float64(s_x) * s_w))  # float64: may exceed int64 too
        w_sum = qw.reshape(n_out, -1).astype(np.float64).sum(axis=1)
        b_fold = b_q - float(z_x) * w_sum
        acc_lo, acc_hi = accumulator_bounds(qw, x_dtype)
        need = np.maximum(np.abs(b_fold) / INT32_MAX,
                          np.maximum(acc_hi + b_fold, -(acc_lo + b_fold)) / ACC64_MAX)
        bad = need > 1.0
        if not np.any(bad):
            break
        # everything in accumulator units scales with 1 / s_w: coarsen the weights of those channels
        w_real = qw.astype(np.float64) * s_w.reshape(per_channel)
        s_w = np.where(bad, s_w * need * 1.001, s_w)
        requant = np.clip(np.rint(w_real / s_w.reshape(per_channel)), -127, 127)
        qw = np.where(bad.reshape(per_channel), requant, qw).astype(np.int8)
        changed |= bad
    else:  # pragma: no cover - the factor shrinks every round
        raise QuantizationError(f"{layer}: cannot fit the folded bias into int32")
    if np.any(changed):
        logger.warning(
            "%s: the folded bias does not fit the int32 arithmetic at input scale %.3g (a near-constant "
            "input?): coarsened the weight scale of %d of %d output channel(s)", layer, s_x,
            int(changed.sum()), n_out)
    return qw, s_w, b_fold.astype(np.int64)


#: fractional bits of the softmax exp table (``exp(0) = 2**EXP_BITS``)
EXP_BITS = 20


def softmax_constants(s_x: float, s_y: float, levels: int) -> tuple[np.ndarray, int, int]:
    """Integer softmax constants.

    Returns ``(table, shift, mult)``: ``table[k] = round(exp(-s_x * k) * 2**EXP_BITS)`` for the ``levels``
    possible distances ``k = max(q) - q``, and ``mult = round(2**shift / s_y)`` (< 2**31), so that
    ``y = z_y + round(table[k] * mult / (sum(table[k]) * 2**shift))``.
    """
    k = np.arange(levels, dtype=np.float64)
    table = np.rint(np.exp(-float(np.float32(s_x)) * k) * (1 << EXP_BITS)).astype(np.int64)
    s_y = float(np.float32(s_y))
    shift = int(np.clip(30 + np.floor(np.log2(s_y)), 0, 30))
    mult = int(np.rint((1 << shift) / s_y))
    if mult >= 2**31:
        raise OverflowError(f"softmax output scale {s_y:g} too small")
    return table.astype(np.int32), shift, mult


def _resize_coord(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """Source coordinate of every output index, in float32 as the float resize computes it."""
    x = np.arange(out_size, dtype=np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    half = np.float32(0.5)
    if mode == "half_pixel":
        return (x + half) * scale - half
    if mode == "align_corners":
        if out_size == 1:
            return np.zeros(1, np.float32)
        return np.float32(in_size - 1) / np.float32(out_size - 1) * x
    if mode == "asymmetric":
        return scale * x
    if mode == "pytorch_half_pixel":
        return (x + half) * scale - half if out_size > 1 else np.zeros(out_size, np.float32)
    if mode == "tf_half_pixel_for_nn":
        return (x + half) * scale
    raise ValueError(f"unsupported resize coordinate transformation {mode!r}")


def resize_source_index(in_size: int, out_size: int, mode: str, rounding: str) -> np.ndarray:
    """Nearest-neighbour source index per output index (int32), clamped to the input."""
    if rounding == "":
        rounding = "round" if mode == "align_corners" else "floor"
    if mode == "asymmetric" and rounding == "floor" and out_size % in_size == 0:
        idx = np.arange(out_size) // (out_size // in_size)  # exact integer ratio
    else:
        c = _resize_coord(in_size, out_size, mode)
        eps = np.float32(1e-5)
        if rounding == "round":
            idx = np.rint(c)
        elif rounding == "round_prefer_floor":
            idx = np.ceil(c - np.float32(0.5))
        elif rounding == "round_prefer_ceil":
            idx = np.floor(c + np.float32(0.5))
        elif rounding == "floor":
            idx = np.floor(c + eps)
        elif rounding == "ceil":
            idx = np.ceil(c - eps)
        else:
            raise ValueError(f"unsupported nearest rounding {rounding!r}")
    return np.clip(idx, 0, in_size - 1).astype(np.int32)


def resize_linear_table(in_size: int, out_size: int, mode: str, bits: int) -> np.ndarray:
    """``[3, out]`` int32: the two source indices (clamped) and the integer weight of the second one."""
    c = _resize_coord(in_size, out_size, mode)
    i0 = np.floor(c)
    w1 = np.rint((c - i0).astype(np.float64) * (1 << bits)).astype(np.int64)
    i0 = i0.astype(np.int64)
    return np.stack([np.clip(i0, 0, in_size - 1), np.clip(i0 + 1, 0, in_size - 1), w1]).astype(np.int32)


__all__ = ["RealizeInteger", "const_value"]
