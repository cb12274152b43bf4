"""``RealizeInteger`` as TVMScript ``Before`` / ``Expected`` modules, one per realize pattern.

``Before`` is the annotated (QDQ) form the pass consumes: float ops between ``R.quantize`` /
``R.dequantize`` with constant scales and zero points, weights as ``dequantize(int8 constant)``.
``Expected`` is the integer module: ``R.call_tir`` of the named kernels with their integer constants.

The kernels' TE bodies are not the subject here (the hypothesis bit-exact suites run them), so an
``Expected`` kernel is a stub that carries only what identifies it: its ``arq.op`` / ``arq.params``
attributes. :func:`normalize` strips the pass output down to the same form before
``tvm.ir.assert_structural_equal``; ``main`` -- bindings, operands, integer constants, output types --
is compared as is. Stubs have no parameters, so ``Expected`` is parsed with ``check_well_formed=False``.

Scales are powers of two, so every expected integer below follows exactly from the formula next to it.
"""

from __future__ import annotations

import json

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

# -- adapter: the only lines that touch the project API ---------------------------------------------
from tvm_arq.passes import RealizeInteger


def realize(mod: tvm.IRModule) -> tvm.IRModule:
    """Run the pass under test on a QDQ module."""
    return RealizeInteger()(mod)


# -- helpers (shared with test_layout_structural) ----------------------------------------------------


def arq(op: str, **params) -> dict:
    """The attributes a kernel PrimFunc carries: its name and its constants (sorted JSON)."""
    return {"arq.op": op, "arq.params": json.dumps(params, sort_keys=True)}


def normalize(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` reduced to what the tests compare.

    - every PrimFunc becomes a stub carrying ``arq.op`` / ``arq.params`` only;
    - PrimFuncs are renamed ``arq_<op>``, ``arq_<op>1``, ... in the order ``main`` first calls them, so that
      the names a pass happened to get from the BlockBuilder (``arq_qadd1`` when an ``arq_qadd`` existed
      before) do not matter;
    - trivial var-to-var bindings are folded (``CanonicalizeBindings``), so how the pass names or aliases
      its output does not matter either.
    """
    prims = {gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    order: list[tvm.ir.GlobalVar] = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op.same_as(tvm.ir.Op.get("relax.call_tir")) and v.args[0] not in order:
                order.append(v.args[0])
    order += [gv for gv in prims if gv not in order]
    names, seen = {}, {}
    for gv in order:
        attrs = prims[gv].attrs if prims[gv].attrs is not None else {}
        op = str(attrs["arq.op"]) if "arq.op" in attrs else gv.name_hint
        k = seen[op] = seen.get(op, -1) + 1
        names[gv] = f"arq_{op}{k or ''}"
    bb = relax.BlockBuilder()  # add_func types the GlobalVars, as the Relax normalizer wants them
    rename = {}
    for gv, f in prims.items():
        attrs = f.attrs if f.attrs is not None else {}
        stub = tirx.PrimFunc([], tirx.Evaluate(0)).with_attr("arq.stub", names[gv])  # (keeps stubs apart)
        for key in ("arq.op", "arq.params"):
            if key in attrs:
                stub = stub.with_attr(key, attrs[key])
        rename[gv] = bb.add_func(stub, names[gv])
    out = bb.get()
    for gv, f in mod.functions.items():
        if gv not in prims:
            out[gv] = _RenameCallees(rename).visit_expr(f)
    return relax.transform.CanonicalizeBindings()(out)


@relax.expr_functor.mutator
class _RenameCallees(relax.PyExprMutator):
    def __init__(self, rename: dict):
        super().__init__()
        self.rename = rename

    def visit_global_var_(self, op: tvm.ir.GlobalVar) -> relax.Expr:
        return self.rename.get(op, op)


def assert_lowers_to(after: tvm.IRModule, expected: tvm.IRModule) -> None:
    tvm.ir.assert_structural_equal(normalize(after), normalize(expected))


def q(x, scale: float, zp: int, dtype: str = "int8"):
    """``R.quantize`` with scalar constants (as ``AnnotateQuantization`` writes it)."""
    return R.quantize(x, R.const(scale, "float32"), R.const(zp, dtype), axis=-1, out_dtype=dtype)


def dq(x, scale: float, zp: int, dtype: str = "int8"):
    """``R.dequantize`` with scalar constants."""
    return R.dequantize(x, R.const(scale, "float32"), R.const(zp, dtype), axis=-1, out_dtype="float32")


def dq_weight(qw: np.ndarray, scales: np.ndarray, axis: int):
    """A weight as ``AnnotateQuantization`` writes it: per-channel scales, zero points 0."""
    return R.dequantize(R.const(qw, "int8"), R.const(scales, "float32"),
                        R.const(np.zeros(scales.shape, np.int8), "int8"), axis=axis, out_dtype="float32")


def requant(real) -> tuple[np.ndarray, np.ndarray]:
    """``(M0, rshift)`` of power-of-two multipliers ``2**-k``: ``M0 = 2**30``, ``rshift = 30 + k``."""
    k = -np.log2(np.atleast_1d(np.asarray(real, np.float64)))
    assert np.all(k == np.round(k)), "the tests use power-of-two multipliers only"
    return np.full(k.shape, 2**30, np.int32), (30 + k).astype(np.int32)


def stub_quantize(scale, zp, qlo=-128, qhi=127, out_dtype="int8", op="quantize") -> dict:
    """Attributes of a float -> int kernel (``quantize``; ``quantize_to_nhwc`` after the layout conversion)."""
    return arq(op, scale=scale, zp=zp, qlo=qlo, qhi=qhi, out_dtype=out_dtype)


# -- conv2d + bias + relu ---------------------------------------------------------------------------
# x: s=0.5 z=1; w: per-channel s_w=[0.25, 0.5]; y: s=2 z=-100 (relu -> clamp low = z_y)
CONV_W = np.array([[[[1, 2, 3], [0, -1, 4], [5, 6, -7]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]],
                   [[[0, 0, 0], [0, 2, 0], [0, 0, 0]], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]], np.int8)
CONV_SW = np.array([0.25, 0.5], np.float32)
CONV_B = np.array([1.0, -2.0], np.float32)
# b' = round(b / (s_x * s_w)) - z_x * sum(w) = [1/0.125, -2/0.25] - 1 * [22, 2]
CONV_BFOLD = np.array([8 - 22, -8 - 2], np.int32)
assert np.array_equal(CONV_BFOLD, np.rint(CONV_B / (0.5 * CONV_SW)) - CONV_W.reshape(2, -1).astype(int).sum(1))
# M = s_x * s_w / s_y = [1/16, 1/8]  ->  M0 = 2**30, rshift = [34, 33]
CONV_M0, CONV_RS = requant(0.5 * CONV_SW / 2.0)
assert list(CONV_RS) == [34, 33]


@I.ir_module
class ConvBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 2, 4, 4), "float32"):
        with R.dataflow():
            xq = q(x, 0.5, 1)
            xd = dq(xq, 0.5, 1)
            w = dq_weight(CONV_W, CONV_SW, axis=0)
            y = R.nn.conv2d(xd, w, padding=[1, 1, 1, 1])
            yb = R.add(y, R.const(CONV_B.reshape(1, 2, 1, 1), "float32"))
            yr = R.nn.relu(yb)
            yq = q(yr, 2.0, -100)
            yd = dq(yq, 2.0, -100)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class ConvExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 1))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconv2d():
        T.func_attr(arq("qconv2d", strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1,
                        zp_x=1, zp_y=-100, qlo=-100, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=2.0, zp=-100))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")) -> R.Tensor((1, 2, 4, 4), "float32"):
        cls = ConvExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 4, 4), "int8"))
            y = R.call_tir(cls.arq_qconv2d, (xq, R.const(CONV_W, "int8"), R.const(CONV_BFOLD, "int32"),
                                             R.const(CONV_M0, "int32"), R.const(CONV_RS, "int32")),
                           out_ty=R.Tensor((1, 2, 4, 4), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2, 4, 4), "float32"))
            R.output(yd)
        return yd


def test_conv_bias_relu():
    assert_lowers_to(realize(ConvBefore), ConvExpected)


# -- depthwise conv2d (groups = channels) + relu6 (clip 0..6), no bias -------------------------------
# x: s=0.25 z=0; w: s_w=[0.5, 0.125]; y: s=0.0625 z=-128 -> clip(0, 6) = codes [-128, -128 + 96]
DW_W = np.array([[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]], [[[3, 3, 3], [3, 3, 3], [3, 3, 3]]]], np.int8)
DW_SW = np.array([0.5, 0.125], np.float32)
DW_BFOLD = np.zeros(2, np.int32)                   # no bias, z_x = 0
DW_M0, DW_RS = requant(0.25 * DW_SW / 0.0625)      # [2, 1/2] -> rshift [29, 31]
assert list(DW_RS) == [29, 31]


@I.ir_module
class DepthwiseBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 5, 5), "float32")) -> R.Tensor((1, 2, 3, 3), "float32"):
        with R.dataflow():
            xq = q(x, 0.25, 0)
            xd = dq(xq, 0.25, 0)
            w = dq_weight(DW_W, DW_SW, axis=0)
            y = R.nn.conv2d(xd, w, strides=[2, 2], padding=[1, 1, 1, 1], groups=2)
            yc = R.clip(y, R.prim_value(0.0), R.prim_value(6.0))
            yq = q(yc, 0.0625, -128)
            yd = dq(yq, 0.0625, -128)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class DepthwiseExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.25, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconv2d():
        T.func_attr(arq("qconv2d", strides=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 1], groups=2,
                        zp_x=0, zp_y=-128, qlo=-128, qhi=-128 + 96, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.0625, zp=-128))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 5, 5), "float32")) -> R.Tensor((1, 2, 3, 3), "float32"):
        cls = DepthwiseExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 5, 5), "int8"))
            y = R.call_tir(cls.arq_qconv2d, (xq, R.const(DW_W, "int8"), R.const(DW_BFOLD, "int32"),
                                             R.const(DW_M0, "int32"), R.const(DW_RS, "int32")),
                           out_ty=R.Tensor((1, 2, 3, 3), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2, 3, 3), "float32"))
            R.output(yd)
        return yd


def test_depthwise_conv_relu6():
    assert_lowers_to(realize(DepthwiseBefore), DepthwiseExpected)


# -- dense (matmul with a [K, O] weight) + bias ------------------------------------------------------
# x: s=0.5 z=-2; w: [K=3, O=2], per-output s_w=[0.5, 0.25]; y: s=0.25 z=3
DENSE_W = np.array([[1, -2], [3, 4], [-5, 6]], np.int8)
DENSE_SW = np.array([0.5, 0.25], np.float32)
DENSE_B = np.array([0.75, -1.0], np.float32)
DENSE_WT = np.ascontiguousarray(DENSE_W.T)        # the kernel takes [O, K]
# b' = round(b / (s_x * s_w)) - z_x * sum_k(w) = [3, -8] + 2 * [-1, 8]
DENSE_BFOLD = np.array([3 + 2 * (-1), -8 + 2 * 8], np.int32)
DENSE_M0, DENSE_RS = requant(0.5 * DENSE_SW / 0.25)  # [1, 1/2] -> rshift [30, 31]


@I.ir_module
class DenseBefore:
    @R.function
    def main(x: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 2), "float32"):
        with R.dataflow():
            xq = q(x, 0.5, -2)
            xd = dq(xq, 0.5, -2)
            w = dq_weight(DENSE_W, DENSE_SW, axis=1)
            y = R.matmul(xd, w)
            yb = R.add(y, R.const(DENSE_B, "float32"))
            yq = q(yb, 0.25, 3)
            yd = dq(yq, 0.25, 3)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class DenseExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, -2))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qdense():
        T.func_attr(arq("qdense", zp_y=3, qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.25, zp=3))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 2), "float32"):
        cls = DenseExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 3), "int8"))
            y = R.call_tir(cls.arq_qdense, (xq, R.const(DENSE_WT, "int8"), R.const(DENSE_BFOLD, "int32"),
                                            R.const(DENSE_M0, "int32"), R.const(DENSE_RS, "int32")),
                           out_ty=R.Tensor((1, 2), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2), "float32"))
            R.output(yd)
        return yd


def test_dense_bias():
    assert_lowers_to(realize(DenseBefore), DenseExpected)


# -- add + relu, mul ---------------------------------------------------------------------------------
# a: s=0.5 z=1, b: s=0.25 z=-3 (quantized graph inputs)
# add -> y: s=1 z=-10; common multipliers of [s_a/s_y, s_b/s_y] = [1/2, 1/4] with max < 2**30:
#   shift = 30, mults = [2**29, 2**28]; relu -> clamp low = z_y
# mul -> y: s=0.5 z=0; M = s_a * s_b / s_y = 1/4 -> M0 = 2**30, rshift = 32


@I.ir_module
class AddMulBefore:
    @R.function
    def main(a: R.Tensor((1, 2, 2, 2), "float32"), b: R.Tensor((1, 2, 2, 2), "float32")):
        with R.dataflow():
            aq = q(a, 0.5, 1)
            ad = dq(aq, 0.5, 1)
            bq = q(b, 0.25, -3)
            bd = dq(bq, 0.25, -3)
            s = R.nn.relu(R.add(ad, bd))
            sq = q(s, 1.0, -10)
            sd = dq(sq, 1.0, -10)
            p = R.multiply(ad, bd)
            pq = q(p, 0.5, 0)
            pd = dq(pq, 0.5, 0)
            out = (sd, pd)
            R.output(out)
        return out


@I.ir_module(check_well_formed=False)
class AddMulExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 1))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_quantize1():
        T.func_attr(stub_quantize(0.25, -3))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qadd():
        T.func_attr(arq("qadd", out_shape=[1, 2, 2, 2], zps=[1, -3], mults=[2**29, 2**28], shift=30,
                        zp_y=-10, qlo=-10, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qmul():
        T.func_attr(arq("qmul", out_shape=[1, 2, 2, 2], zps=[1, -3], m0=2**30, rshift=32, zp_y=0,
                        qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1.0, zp=-10))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize1():
        T.func_attr(arq("dequantize", scale=0.5, zp=0))
        T.evaluate(0)

    @R.function
    def main(a: R.Tensor((1, 2, 2, 2), "float32"), b: R.Tensor((1, 2, 2, 2), "float32")):
        cls = AddMulExpected
        with R.dataflow():
            aq = R.call_tir(cls.arq_quantize, (a,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            bq = R.call_tir(cls.arq_quantize1, (b,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            s = R.call_tir(cls.arq_qadd, (aq, bq), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            sd = R.call_tir(cls.arq_dequantize, (s,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            p = R.call_tir(cls.arq_qmul, (aq, bq), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            pd = R.call_tir(cls.arq_dequantize1, (p,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            out = (sd, pd)
            R.output(out)
        return out


def test_add_relu_and_mul():
    assert_lowers_to(realize(AddMulBefore), AddMulExpected)


# -- softmax -----------------------------------------------------------------------------------------
# x: s=0.125 z=0 -> y: s=1/256 z=-128. table[k] = round(exp(-s_x * k) * 2**20) for the 256 distances
# k = max(q) - q; shift = 30 + floor(log2(s_y)) = 22, mult = round(2**shift / s_y) = 2**30
SOFTMAX_TABLE = np.rint(np.exp(-0.125 * np.arange(256)) * 2**20).astype(np.int32)


@I.ir_module
class SoftmaxBefore:
    @R.function
    def main(x: R.Tensor((1, 5), "float32")) -> R.Tensor((1, 5), "float32"):
        with R.dataflow():
            xq = q(x, 0.125, 0)
            xd = dq(xq, 0.125, 0)
            y = R.nn.softmax(xd, axis=-1)
            yq = q(y, 1 / 256, -128)
            yd = dq(yq, 1 / 256, -128)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class SoftmaxExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.125, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qsoftmax():
        T.func_attr(arq("qsoftmax", axis=-1, mult=2**30, shift=22, zp_y=-128, qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1 / 256, zp=-128))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 5), "float32")) -> R.Tensor((1, 5), "float32"):
        cls = SoftmaxExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 5), "int8"))
            y = R.call_tir(cls.arq_qsoftmax, (xq, R.const(SOFTMAX_TABLE, "int32")), out_ty=R.Tensor((1, 5), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 5), "float32"))
            R.output(yd)
        return yd


def test_softmax():
    assert_lowers_to(realize(SoftmaxBefore), SoftmaxExpected)


# -- lookup-table activations: sigmoid, and SiLU = x * sigmoid(x) (a two-op region) --------------------
# x: s=1/16 z=0. table[q + 128] = clip(round(f(s_x * q) / s_y) + z_y), q = -128..127 (one row: axis -1)
LUT_X = np.arange(-128, 128) / 16
SIGMOID = 1.0 / (1.0 + np.exp(-LUT_X))
SIGMOID_TABLE = np.clip(np.rint(SIGMOID * 256) - 128, -128, 127).astype(np.int8).reshape(1, 256)  # s=1/256 z=-128
SILU_TABLE = np.clip(np.rint(LUT_X * SIGMOID * 16) - 100, -128, 127).astype(np.int8).reshape(1, 256)  # s=1/16 z=-100


@I.ir_module
class LutBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")):
        with R.dataflow():
            xq = q(x, 1 / 16, 0)
            xd = dq(xq, 1 / 16, 0)
            s = R.sigmoid(xd)
            sq = q(s, 1 / 256, -128)
            sd = dq(sq, 1 / 256, -128)
            t = R.sigmoid(xd)
            u = R.multiply(xd, t)
            uq = q(u, 1 / 16, -100)
            ud = dq(uq, 1 / 16, -100)
            out = (sd, ud)
            R.output(out)
        return out


@I.ir_module(check_well_formed=False)
class LutExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(1 / 16, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qlut():
        T.func_attr(arq("qlut", axis=-1, qmin=-128, fn="sigmoid"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qlut1():
        T.func_attr(arq("qlut", axis=-1, qmin=-128, fn="silu"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1 / 256, zp=-128))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize1():
        T.func_attr(arq("dequantize", scale=1 / 16, zp=-100))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")):
        cls = LutExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            s = R.call_tir(cls.arq_qlut, (xq, R.const(SIGMOID_TABLE, "int8")), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            sd = R.call_tir(cls.arq_dequantize, (s,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            u = R.call_tir(cls.arq_qlut1, (xq, R.const(SILU_TABLE, "int8")), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            ud = R.call_tir(cls.arq_dequantize1, (u,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            out = (sd, ud)
            R.output(out)
        return out


def test_lut_activations():
    assert_lowers_to(realize(LutBefore), LutExpected)


# -- pooling and global mean: pass-through ops (output keeps the input's scale / zero point) ---------


@I.ir_module
class PoolBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")):
        with R.dataflow():
            xq = q(x, 0.5, 3)
            xd = dq(xq, 0.5, 3)
            mp = R.nn.max_pool2d(xd, pool_size=[2, 2], strides=[2, 2])
            mpd = dq(q(mp, 0.5, 3), 0.5, 3)
            ap = R.nn.avg_pool2d(xd, pool_size=[3, 3], strides=[1, 1], padding=[1, 1, 1, 1], count_include_pad=False)
            apd = dq(q(ap, 0.5, 3), 0.5, 3)
            me = R.mean(xd, axis=[2, 3], keepdims=True)
            med = dq(q(me, 0.5, 3), 0.5, 3)
            out = (mpd, apd, med)
            R.output(out)
        return out


@I.ir_module(check_well_formed=False)
class PoolExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 3))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qmaxpool2d():
        T.func_attr(arq("qmaxpool2d", pool=[2, 2], strides=[2, 2], padding=[0, 0, 0, 0], dilation=[1, 1], qmin=-128))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qavgpool2d():
        T.func_attr(arq("qavgpool2d", pool=[3, 3], strides=[1, 1], padding=[1, 1, 1, 1], count_include_pad=False,
                        zp=3, qlo=-128, qhi=127))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qmean_hw():
        T.func_attr(arq("qmean_hw", zp=3, qlo=-128, qhi=127))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.5, zp=3))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize1():
        T.func_attr(arq("dequantize", scale=0.5, zp=3))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize2():
        T.func_attr(arq("dequantize", scale=0.5, zp=3))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32")):
        cls = PoolExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 4, 4), "int8"))
            mp = R.call_tir(cls.arq_qmaxpool2d, (xq,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            mpd = R.call_tir(cls.arq_dequantize, (mp,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            ap = R.call_tir(cls.arq_qavgpool2d, (xq,), out_ty=R.Tensor((1, 2, 4, 4), "int8"))
            apd = R.call_tir(cls.arq_dequantize1, (ap,), out_ty=R.Tensor((1, 2, 4, 4), "float32"))
            me = R.call_tir(cls.arq_qmean_hw, (xq,), out_ty=R.Tensor((1, 2, 1, 1), "int8"))
            med = R.call_tir(cls.arq_dequantize2, (me,), out_ty=R.Tensor((1, 2, 1, 1), "float32"))
            out = (mpd, apd, med)
            R.output(out)
        return out


def test_pools_and_mean():
    assert_lowers_to(realize(PoolBefore), PoolExpected)


# -- concat ------------------------------------------------------------------------------------------
# a: s=0.5 z=1, b: s=0.25 z=-3 -> y: s=0.5 z=0; common multipliers of [s_a/s_y, s_b/s_y] = [1, 1/2]
# with max < 2**30: shift = 29, mults = [2**29, 2**28]


@I.ir_module
class ConcatBefore:
    @R.function
    def main(a: R.Tensor((1, 1, 2, 2), "float32"), b: R.Tensor((1, 2, 2, 2), "float32")):
        with R.dataflow():
            ad = dq(q(a, 0.5, 1), 0.5, 1)
            bd = dq(q(b, 0.25, -3), 0.25, -3)
            c = R.concat((ad, bd), axis=1)
            cd = dq(q(c, 0.5, 0), 0.5, 0)
            R.output(cd)
        return cd


@I.ir_module(check_well_formed=False)
class ConcatExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 1))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_quantize1():
        T.func_attr(stub_quantize(0.25, -3))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconcat():
        T.func_attr(arq("qconcat", axis=1, zps=[1, -3], mults=[2**29, 2**28], shift=29, zp_y=0, qlo=-128, qhi=127,
                        out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.5, zp=0))
        T.evaluate(0)

    @R.function
    def main(a: R.Tensor((1, 1, 2, 2), "float32"), b: R.Tensor((1, 2, 2, 2), "float32")):
        cls = ConcatExpected
        with R.dataflow():
            aq = R.call_tir(cls.arq_quantize, (a,), out_ty=R.Tensor((1, 1, 2, 2), "int8"))
            bq = R.call_tir(cls.arq_quantize1, (b,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            c = R.call_tir(cls.arq_qconcat, (aq, bq), out_ty=R.Tensor((1, 3, 2, 2), "int8"))
            cd = R.call_tir(cls.arq_dequantize, (c,), out_ty=R.Tensor((1, 3, 2, 2), "float32"))
            R.output(cd)
        return cd


def test_concat():
    assert_lowers_to(realize(ConcatBefore), ConcatExpected)


# -- resize (nearest, bilinear): compile-time index / weight tables ----------------------------------
# nearest, asymmetric, floor, 2 -> 4: source index = out // 2 = [0, 0, 1, 1]
# bilinear, half_pixel, 2 -> 4: source coordinate c = (out + 0.5) / 2 - 0.5 = [-0.25, 0.25, 0.75, 1.25];
#   rows: clip(floor(c)) = [0, 0, 0, 1], clip(floor(c) + 1) = [0, 1, 1, 1], round(frac(c) * 2**12)
NEAREST_IDX = np.array([0, 0, 1, 1], np.int32)
BILINEAR_TABLE = np.array([[0, 0, 0, 1], [0, 1, 1, 1], [3072, 1024, 3072, 1024]], np.int32)


@I.ir_module
class ResizeBefore:
    @R.function
    def main(x: R.Tensor((1, 1, 2, 2), "float32")):
        with R.dataflow():
            xd = dq(q(x, 0.5, 0), 0.5, 0)
            n = R.image.resize2d(xd, size=(4, 4), method="nearest_neighbor",
                                 coordinate_transformation_mode="asymmetric", rounding_method="floor")
            nd = dq(q(n, 0.5, 0), 0.5, 0)
            b = R.image.resize2d(xd, size=(4, 4), method="linear", coordinate_transformation_mode="half_pixel")
            bd = dq(q(b, 0.5, 0), 0.5, 0)
            out = (nd, bd)
            R.output(out)
        return out


@I.ir_module(check_well_formed=False)
class ResizeExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qresize_nearest():
        T.func_attr(arq("qresize_nearest"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qresize_bilinear():
        T.func_attr(arq("qresize_bilinear", bits=12))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.5, zp=0))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 1, 2, 2), "float32")):
        cls = ResizeExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 1, 2, 2), "int8"))
            n = R.call_tir(cls.arq_qresize_nearest, (xq, R.const(NEAREST_IDX, "int32"), R.const(NEAREST_IDX, "int32")),
                           out_ty=R.Tensor((1, 1, 4, 4), "int8"))
            nd = R.call_tir(cls.arq_dequantize, (n,), out_ty=R.Tensor((1, 1, 4, 4), "float32"))
            b = R.call_tir(cls.arq_qresize_bilinear, (xq, R.const(BILINEAR_TABLE, "int32"),
                                                      R.const(BILINEAR_TABLE, "int32")),
                           out_ty=R.Tensor((1, 1, 4, 4), "int8"))
            bd = R.call_tir(cls.arq_dequantize, (b,), out_ty=R.Tensor((1, 1, 4, 4), "float32"))
            out = (nd, bd)
            R.output(out)
        return out


def test_resize():
    assert_lowers_to(realize(ResizeBefore), ResizeExpected)


# -- pad, standalone relu / clip (clamps), data movement (reshape, split) -----------------------------
# x: s=1/16 z=-10. pad value 1.0 -> code z + 1.0 / s = 6; relu -> clamp [z, 127];
# clip(-1, 2) -> clamp [z - 16, z + 32]; reshape -> the same op on the int8 tensor;
# split(2, axis 1)[i] -> strided_slice of the int8 tensor (channels [0, 2) and [2, 4))


@I.ir_module
class MovementBefore:
    @R.function
    def main(x: R.Tensor((1, 4, 2, 2), "float32")):
        with R.dataflow():
            xd = dq(q(x, 1 / 16, -10), 1 / 16, -10)
            p = R.nn.pad(xd, pad_width=[0, 0, 0, 0, 1, 1, 2, 2], pad_value=1.0)
            pd = dq(q(p, 1 / 16, -10), 1 / 16, -10)
            r = R.nn.relu(xd)
            rd = dq(q(r, 1 / 16, -10), 1 / 16, -10)
            c = R.clip(xd, R.prim_value(-1.0), R.prim_value(2.0))
            cd = dq(q(c, 1 / 16, -10), 1 / 16, -10)
            f = R.reshape(xd, R.shape([1, 16]))
            fd = dq(q(f, 1 / 16, -10), 1 / 16, -10)
            parts = R.split(xd, indices_or_sections=2, axis=1)
            s1 = parts[1]
            s1d = dq(q(s1, 1 / 16, -10), 1 / 16, -10)
            out = (pd, rd, cd, fd, s1d)
            R.output(out)
        return out


@I.ir_module(check_well_formed=False)
class MovementExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(1 / 16, -10))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qpad():
        T.func_attr(arq("qpad", pads=[[0, 0], [0, 0], [1, 1], [2, 2]], value=-10 + 16))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qclamp():
        T.func_attr(arq("qclamp", lo=-10, hi=127))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qclamp1():
        T.func_attr(arq("qclamp", lo=-10 - 16, hi=-10 + 32))
        T.evaluate(0)

    # one dequantize kernel per output shape (emit_te shares structurally equal PrimFuncs)
    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1 / 16, zp=-10))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize1():
        T.func_attr(arq("dequantize", scale=1 / 16, zp=-10))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize2():
        T.func_attr(arq("dequantize", scale=1 / 16, zp=-10))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize3():
        T.func_attr(arq("dequantize", scale=1 / 16, zp=-10))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 4, 2, 2), "float32")):
        cls = MovementExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 4, 2, 2), "int8"))
            p = R.call_tir(cls.arq_qpad, (xq,), out_ty=R.Tensor((1, 4, 4, 6), "int8"))
            pd = R.call_tir(cls.arq_dequantize, (p,), out_ty=R.Tensor((1, 4, 4, 6), "float32"))
            r = R.call_tir(cls.arq_qclamp, (xq,), out_ty=R.Tensor((1, 4, 2, 2), "int8"))
            rd = R.call_tir(cls.arq_dequantize1, (r,), out_ty=R.Tensor((1, 4, 2, 2), "float32"))
            c = R.call_tir(cls.arq_qclamp1, (xq,), out_ty=R.Tensor((1, 4, 2, 2), "int8"))
            cd = R.call_tir(cls.arq_dequantize1, (c,), out_ty=R.Tensor((1, 4, 2, 2), "float32"))
            f = R.reshape(xq, R.shape([1, 16]))
            fd = R.call_tir(cls.arq_dequantize2, (f,), out_ty=R.Tensor((1, 16), "float32"))
            s1 = R.strided_slice(xq, axes=[1], begin=[2], end=[4])
            s1d = R.call_tir(cls.arq_dequantize3, (s1,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            out = (pd, rd, cd, fd, s1d)
            R.output(out)
        return out


def test_pad_clamp_and_movement():
    assert_lowers_to(realize(MovementBefore), MovementExpected)


# -- per-channel lookup table: PReLU with one slope per channel (one table row per channel, axis 1) -----
# x: s=1/16 z=0 -> y: s=1/16 z=0; T[c, q + 128] = q if q >= 0 else round(alpha_c * q)
PRELU_ALPHA = np.array([0.25, 0.5], np.float32)
_Q = np.arange(-128, 128)
PRELU_TABLE = np.stack([np.where(_Q >= 0, _Q, np.rint(a * _Q)) for a in (0.25, 0.5)]).astype(np.int8)


@I.ir_module
class PreluBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 2, 2, 2), "float32"):
        with R.dataflow():
            xd = dq(q(x, 1 / 16, 0), 1 / 16, 0)
            y = R.nn.prelu(xd, R.const(PRELU_ALPHA, "float32"), axis=1)
            yd = dq(q(y, 1 / 16, 0), 1 / 16, 0)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class PreluExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(1 / 16, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qlut():
        T.func_attr(arq("qlut", axis=1, qmin=-128, fn="prelu"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1 / 16, zp=0))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 2, 2, 2), "float32"):
        cls = PreluExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            y = R.call_tir(cls.arq_qlut, (xq, R.const(PRELU_TABLE, "int8")), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2, 2, 2), "float32"))
            R.output(yd)
        return yd


def test_lut_per_channel():
    assert_lowers_to(realize(PreluBefore), PreluExpected)
