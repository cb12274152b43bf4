"""Numpy integer reference interpreter.

Runs the integer Relax module produced by :class:`~tvm_arq.passes.RealizeInteger` without TVM's code
generation: every ``call_tir`` to one of our kernels is replayed by the numpy twin of that kernel (same
name, same constants read from the PrimFunc's ``arq.params``), computed independently with int64
arithmetic and explicit zero points.  The TVM build must match it bit for bit.

Ops left in float (fallbacks) are evaluated by compiling that single Relax op for the host: they are
outside the integer contract and are not part of the bit-exactness check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from .kernels.reference_layouts import register as _register_layout_twins
from .passes.graph import bindings_of
from .qmath import requantize_np

logger = logging.getLogger(__name__)


def _pad(x: np.ndarray, pads: Sequence[tuple[int, int]], value: int) -> np.ndarray:
    return np.pad(x, pads, mode="constant", constant_values=value)


def qconv2d(x, w, bias, m0, rshift, *, strides, padding, dilation, groups, zp_x, zp_y, qlo, qhi, out_dtype):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    xp = _pad(x.astype(np.int64), [(0, 0), (0, 0), (pt, pb), (pl, pr)], zp_x)
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((n, o, oh, ow), np.int64)
    opg = o // groups
    w64 = w.astype(np.int64)
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w64[g * opg:(g + 1) * opg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
                acc[:, g * opg:(g + 1) * opg] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    acc = acc + bias.astype(np.int64).reshape(1, -1, 1, 1)
    y = requantize_np(acc, m0.reshape(1, -1, 1, 1), rshift.reshape(1, -1, 1, 1)) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


def qdense(x, w, bias, m0, rshift, *, zp_y, qlo, qhi, out_dtype):
    acc = x.astype(np.int64) @ w.astype(np.int64).T + bias.astype(np.int64)
    y = requantize_np(acc, m0.reshape(1, -1), rshift.reshape(1, -1)) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


def qadd(inputs, *, out_shape, zps, mults, shift, zp_y, qlo, qhi, out_dtype):
    acc = np.full(tuple(out_shape), 1 << (shift - 1), np.int64)
    for t, z, m in zip(inputs, zps, mults, strict=True):
        acc = acc + (t.astype(np.int64) - z) * np.int64(m)
    y = (acc >> shift) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


def qconcat(inputs, *, axis, zps, mults, shift, zp_y, qlo, qhi, out_dtype):
    parts = []
    for t, z, m in zip(inputs, zps, mults, strict=True):
        v = (((t.astype(np.int64) - z) * np.int64(m) + (1 << (shift - 1))) >> shift) + zp_y
        parts.append(np.clip(v, qlo, qhi))
    return np.concatenate(parts, axis=axis).astype(out_dtype)


def qmaxpool2d(x, *, pool, strides, padding, dilation, qmin):
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    dh, dw = dilation
    xp = _pad(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)], qmin)
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.full((n, c, oh, ow), qmin, x.dtype)
    for i in range(kh):
        for j in range(kw):
            out = np.maximum(out, xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw])
    return out


def _round_div(acc: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    return np.floor_divide(2 * acc + cnt, 2 * cnt)


def qavgpool2d(x, *, pool, strides, padding, count_include_pad, zp, qlo, qhi):
    n, c, h, wd = x.shape
    kh, kw = pool
    sh, sw = strides
    pt, pl, pb, pr = padding
    xc = x.astype(np.int64) - zp
    xp = _pad(xc, [(0, 0), (0, 0), (pt, pb), (pl, pr)], 0)
    valid = _pad(np.ones((h, wd), np.int64), [(pt, pb), (pl, pr)], 0)
    oh = (h + pt + pb - kh) // sh + 1
    ow = (wd + pl + pr - kw) // sw + 1
    acc = np.zeros((n, c, oh, ow), np.int64)
    cnt = np.zeros((oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += xp[:, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
            cnt += valid[i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
    if count_include_pad:
        cnt = np.full_like(cnt, kh * kw)
    y = _round_div(acc, cnt[None, None]) + zp
    return np.clip(y, qlo, qhi).astype(x.dtype)


def qmean_hw(x, *, zp, qlo, qhi):
    acc = (x.astype(np.int64) - zp).sum(axis=(2, 3), keepdims=True)
    cnt = np.int64(x.shape[2] * x.shape[3])
    return np.clip(_round_div(acc, cnt) + zp, qlo, qhi).astype(x.dtype)


def qclamp(x, *, lo, hi):
    return np.clip(x, lo, hi).astype(x.dtype)


def qlut(x, table, *, axis, qmin, fn=""):
    col = x.astype(np.int64) - qmin
    if axis < 0 or table.shape[0] == 1:
        return table[0][col]
    shape = [1] * x.ndim
    shape[axis] = -1
    rows = np.arange(x.shape[axis]).reshape(shape)
    return table[rows, col]


def qmul(a, b, *, out_shape, zps, m0, rshift, zp_y, qlo, qhi, out_dtype):
    prod = (a.astype(np.int64) - zps[0]) * (b.astype(np.int64) - zps[1])
    y = ((prod * np.int64(m0) + (np.int64(1) << (rshift - 1))) >> rshift) + zp_y
    return np.broadcast_to(np.clip(y, qlo, qhi), tuple(out_shape)).astype(out_dtype)


def qresize_nearest(x, iy, ix):
    return x[:, :, iy.astype(np.int64)][:, :, :, ix.astype(np.int64)]


def qresize_bilinear(x, ty, tx, *, bits):
    x64 = x.astype(np.int64)
    ty = ty.astype(np.int64)
    tx = tx.astype(np.int64)
    one = np.int64(1) << bits
    wy = ty[2][:, None]
    wx = tx[2][None, :]

    def at(r: int, c: int) -> np.ndarray:
        return x64[:, :, ty[r]][:, :, :, tx[c]]

    top = (one - wx) * at(0, 0) + wx * at(0, 1)
    bot = (one - wx) * at(1, 0) + wx * at(1, 1)
    v = (one - wy) * top + wy * bot + (np.int64(1) << (2 * bits - 1))
    return (v >> (2 * bits)).astype(x.dtype)


def qpad(x, *, pads, value):
    return _pad(x, [tuple(p) for p in pads], value)


def qsoftmax(x, table, *, axis, mult, shift, zp_y, qlo, qhi, out_dtype):
    x64 = x.astype(np.int64)
    e = table.astype(np.int64)[x64.max(axis=axis, keepdims=True) - x64]
    den = e.sum(axis=axis, keepdims=True) << np.int64(shift)
    y = np.floor_divide(2 * e * np.int64(mult) + den, 2 * den) + zp_y
    return np.clip(y, qlo, qhi).astype(out_dtype)


def quantize(x, *, scale, zp, qlo, qhi, out_dtype):
    v = np.rint(x.astype(np.float32) / np.float32(scale)) + np.float32(zp)
    return np.clip(v, qlo, qhi).astype(out_dtype)


def dequantize(q, *, scale, zp):
    return ((q.astype(np.int32) - np.int32(zp)).astype(np.float32) * np.float32(scale)).astype(np.float32)


KERNELS_NP = {
    "qconv2d": qconv2d,
    "qdense": qdense,
    "qadd": qadd,
    "qconcat": qconcat,
    "qmaxpool2d": qmaxpool2d,
    "qavgpool2d": qavgpool2d,
    "qmean_hw": qmean_hw,
    "qclamp": qclamp,
    "qlut": qlut,
    "qmul": qmul,
    "qresize_nearest": qresize_nearest,
    "qresize_bilinear": qresize_bilinear,
    "qpad": qpad,
    "qsoftmax": qsoftmax,
    "quantize": quantize,
    "dequantize": dequantize,
}
# twins of the target-layout kernels of tvm_arq.passes.layout (NHWC, packed weights)
_register_layout_twins(KERNELS_NP)

#: shape-only Relax ops computed directly on integer tensors
_SHAPE_OPS = {
    "relax.reshape": lambda x, shape, attrs: x.reshape([int(d) for d in shape.values]),
    "relax.flatten": lambda x, attrs: x.reshape(x.shape[0], -1),
    "relax.permute_dims": lambda x, attrs: np.transpose(x, None if attrs.axes is None else [int(a) for a in attrs.axes]),
    "relax.squeeze": lambda x, attrs: np.squeeze(x, None if attrs.axis is None else tuple(int(a) for a in attrs.axis)),
    "relax.expand_dims": lambda x, attrs: np.expand_dims(x, tuple(int(a) for a in attrs.axis)),
}


def _ints(expr) -> list[int]:
    """Integers of a Relax tuple of PrimValues / a ShapeExpr."""
    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values]
    return [int(f.value) for f in expr.fields]


def strided_slice(x: np.ndarray, axes, begin, end, strides) -> np.ndarray:
    """``relax.strided_slice`` on a numpy array (Python slice semantics: out-of-range ends clamp)."""
    sl = [slice(None)] * x.ndim
    strides = strides if strides else [1] * len(axes)
    for a, b, e, st in zip(axes, begin, end, strides, strict=True):
        sl[a % x.ndim] = slice(b, e, st)
    return x[tuple(sl)]


class ReferenceInterpreter:
    """Interpret the integer module's ``main`` with numpy.

    Parameters
    ----------
    mod
        Output of :class:`~tvm_arq.passes.RealizeInteger` (before any TVM lowering).
    """

    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.func = mod["main"]
        self._float_cache: dict = {}
        self.unsupported_calls: list[str] = []

    def _tensor_args(self, args, env):
        out = []
        for a in args:
            if isinstance(a, relax.Tuple):
                out.append([self._eval(f, env) for f in a.fields])
            else:
                out.append(self._eval(a, env))
        return out

    def _eval(self, expr, env):
        if isinstance(expr, relax.Var):
            return env[expr.name]
        if isinstance(expr, tvm.ir.expr.Constant):
            return expr.value.numpy()
        if isinstance(expr, relax.Tuple):
            return tuple(self._eval(f, env) for f in expr.fields)
        if isinstance(expr, relax.TupleGetItem):
            return self._eval(expr.tuple_value, env)[expr.index]
        if isinstance(expr, relax.Call):
            return self._call(expr, env)
        raise NotImplementedError(f"reference: cannot evaluate {type(expr).__name__}")

    def _call(self, call: relax.Call, env):
        opname = call.op.name if isinstance(call.op, tvm.ir.Op) else None
        if opname == "relax.call_tir":
            gvar = call.args[0]
            prim = self.mod[gvar]
            attrs = prim.attrs
            if attrs is None or "arq.op" not in attrs:
                raise NotImplementedError(f"reference: call_tir to {gvar.name_hint} is not a tvm_arq kernel")
            kname = str(attrs["arq.op"])
            params = json.loads(str(attrs["arq.params"]))
            args = [self._eval(a, env) for a in call.args[1].fields]
            # kernels taking a list of tensors (add, concat) received them flattened by emit_te
            if kname in ("qadd", "qconcat"):
                return KERNELS_NP[kname](args, **params)
            return KERNELS_NP[kname](*args, **params)
        if opname == "relax.strided_slice":
            x = self._eval(call.args[0], env)
            strides = _ints(call.args[4]) if len(call.args) > 4 and call.args[4] is not None else None
            return strided_slice(x, _ints(call.args[1]), _ints(call.args[2]), _ints(call.args[3]), strides)
        if opname in _SHAPE_OPS:
            x = self._eval(call.args[0], env)
            if opname == "relax.reshape":
                return _SHAPE_OPS[opname](x, call.args[1], call.attrs)
            return _SHAPE_OPS[opname](x, call.attrs)
        return self._float_op(call, env)

    def _float_op(self, call: relax.Call, env):
        """Evaluate a float fallback op by compiling it alone for the host (outside the int contract)."""
        args = []
        params = []
        new_args = []
        for i, a in enumerate(call.args):
            if isinstance(a, relax.Var | relax.Call | relax.Tuple | relax.TupleGetItem) and hasattr(a, "ty") and \
                    isinstance(a.ty, relax.TensorType):
                v = relax.Var(f"a{i}", a.ty)
                params.append(v)
                new_args.append(v)
                args.append(self._eval(a, env))
            else:
                new_args.append(a)
        key = tvm_ffi.structural_hash(call)
        if key not in self._float_cache:
            bb = relax.BlockBuilder()
            with bb.function("main", params):
                out = bb.emit(relax.Call(call.op, new_args, call.attrs, call.ty_args))
                bb.emit_func_output(out)
            ex = tvm.compile(bb.get(), target="llvm")
            self._float_cache[key] = relax.VirtualMachine(ex, tvm.cpu())
        vm = self._float_cache[key]
        res = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args])
        if hasattr(res, "numpy"):
            return res.numpy()
        return tuple(r.numpy() for r in res)

    def run(self, *inputs: np.ndarray):
        env: dict[str, object] = {}
        for p, x in zip(self.func.params, inputs, strict=True):
            env[p.name] = np.asarray(x)
        for b in bindings_of(self.func):
            env[b.name] = self._eval(b.value, env)
        return self._eval(self.func.body.body, env)
