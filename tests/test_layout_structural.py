"""The layout conversion (NCHW integer module -> NHWC / packed kernels) as TVMScript ``Before`` / ``Expected``.

``Before`` is an integer module as ``RealizeInteger`` writes it (``R.call_tir`` of NCHW kernels). The
conversion reads only the kernels' ``arq.op`` / ``arq.params`` and their operands, so ``Before``'s
kernels are stubs carrying those attributes (like ``Expected``'s, see
:mod:`tests.test_realize_structural`); a kernel the conversion keeps stays the same stub.

Expected, per target layout plan (x86 VNNI, AArch64 ``sdot``, RISC-V V): the graph input ``quantize``
writes NHWC, the output ``dequantize`` reads NHWC, conv weights are packed at compile time, and
every NHWC kernel carries its parameters (schedule rule included); layout-agnostic kernels keep their
kernel with the axes remapped; what needs NCHW gets a ``permute_dims``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tests.test_realize_structural import arq, normalize, stub_quantize

# -- adapter: the only lines that touch the project API ---------------------------------------------
from tvm_arq.backends import get_backend
from tvm_arq.passes.layout import convert_layout


def to_layout(mod: tvm.IRModule, target_name: str) -> tvm.IRModule:
    """Run the layout conversion for a target preset."""
    return convert_layout(mod, plan_of(target_name))


def plan_of(target_name: str):
    """The target's :class:`~tvm_arq.layoutspec.LayoutPlan` (its kernel configurations)."""
    return get_backend(target_name).layout_plan()


# -- helpers ----------------------------------------------------------------------------------------


def assert_converts_to(after: tvm.IRModule, expected: tvm.IRModule) -> None:
    tvm.ir.assert_structural_equal(normalize(after), normalize(expected))


def pack_by_hand(w: np.ndarray, lanes: int, kgroup: int) -> np.ndarray:
    """OIHW -> ``[ceil(O/lanes), KH, KW, ceil(C/kgroup), lanes, kgroup]``: ``w[o, c]`` lands at
    ``[o // lanes, :, :, c // kgroup, o % lanes, c % kgroup]``, zeros elsewhere."""
    o, c, kh, kw = w.shape
    out = np.zeros((-(-o // lanes), kh, kw, -(-c // kgroup), lanes, kgroup), np.int8)
    for oo in range(o):
        for cc in range(c):
            out[oo // lanes, :, :, cc // kgroup, oo % lanes, cc % kgroup] = w[oo, cc]
    return out


# -- conv2d -> packed NHWC conv, per target -----------------------------------------------------------
W = (np.arange(2 * 3 * 3 * 3).reshape(2, 3, 3, 3) % 7 - 3).astype(np.int8)    # O=2, C=3: both padded
W_SUM = W.reshape(2, -1).astype(np.int64).sum(1)
BIAS = np.array([100, -50], np.int32)
M0 = np.array([2**30, 2**30], np.int32)
RS = np.array([34, 33], np.int32)

#: target -> (activation dtype, z_x, z_y, storage range, rule, lanes, kgroup, domain dtype, input shift)
#: x86 VNNI multiplies uint8 x int8: int8 activations are shifted by +128, the bias absorbs -128 * sum(w);
#: AArch64 sdot multiplies int8 x int8: uint8 activations are shifted by -128; RISC-V V takes them as they are
CONV_CASES = {
    "x86-vnni": ("int8", 1, -100, (-128, 127), "arq_x86_vnni_conv", 16, 4, "uint8", 128),
    "aarch64-dotprod": ("uint8", 129, 28, (0, 255), "arq_arm_sdot_conv", 16, 4, "int8", -128),
    "riscv64-rvv": ("int8", 1, -100, (-128, 127), "arq_rvv_conv", 16, 1, "int8", 0),
}


def conv_before(dt: str, zx: int, zy: int, qlo: int, qhi: int) -> tvm.IRModule:
    @I.ir_module(check_well_formed=False)
    class ConvInt:
        @T.prim_func(private=True)
        def arq_quantize():
            T.func_attr(stub_quantize(0.5, zx, qlo, qhi, dt))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qconv2d():
            T.func_attr(arq("qconv2d", strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1,
                            zp_x=zx, zp_y=zy, qlo=qlo, qhi=qhi, out_dtype=dt))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_dequantize():
            T.func_attr(arq("dequantize", scale=2.0, zp=zy))
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 2, 4, 4), "float32"):
            cls = ConvInt
            with R.dataflow():
                xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 3, 4, 4), dt))
                y = R.call_tir(cls.arq_qconv2d, (xq, R.const(W, "int8"), R.const(BIAS, "int32"),
                                                 R.const(M0, "int32"), R.const(RS, "int32")),
                               out_ty=R.Tensor((1, 2, 4, 4), dt))
                yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2, 4, 4), "float32"))
                R.output(yd)
            return yd

    return ConvInt


def conv_expected(dt, zx, zy, qlo, qhi, rule, lanes, kgroup, domain, shift) -> tvm.IRModule:
    w_packed = pack_by_hand(W, lanes, kgroup)
    bias = (BIAS - shift * W_SUM).astype(np.int32)       # the shifted input's extra term, folded
    qp = np.array([zx + shift, zy, qlo, qhi], np.int32)  # pad value (shifted z_x), z_y, output clamp

    @I.ir_module(check_well_formed=False)
    class ConvNHWC:
        @T.prim_func(private=True)
        def arq_quantize_to_nhwc():
            T.func_attr(stub_quantize(0.5, zx, qlo, qhi, dt, op="quantize_to_nhwc"))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qconv2d_nhwc_packed():
            T.func_attr(arq("qconv2d_nhwc_packed", strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1],
                            out_channels=2, in_offset=shift, domain_dtype=domain, out_dtype=dt, schedule=rule,
                            requant32=True))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_dequantize_to_nchw():
            T.func_attr(arq("dequantize_to_nchw", scale=2.0, zp=zy))
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 2, 4, 4), "float32"):
            cls = ConvNHWC
            with R.dataflow():
                xq = R.call_tir(cls.arq_quantize_to_nhwc, (x,), out_ty=R.Tensor((1, 4, 4, 3), dt))
                y = R.call_tir(cls.arq_qconv2d_nhwc_packed,
                               (xq, R.const(w_packed, "int8"), R.const(bias, "int32"), R.const(M0, "int32"),
                                R.const(RS, "int32"), R.const(qp, "int32")),
                               out_ty=R.Tensor((1, 4, 4, 2), dt))
                yd = R.call_tir(cls.arq_dequantize_to_nchw, (y,), out_ty=R.Tensor((1, 2, 4, 4), "float32"))
                R.output(yd)
            return yd

    return ConvNHWC


@pytest.mark.parametrize("target", list(CONV_CASES))
def test_conv_packed(target):
    dt, zx, zy, (qlo, qhi), rule, lanes, kgroup, domain, shift = CONV_CASES[target]
    conv = plan_of(target).conv   # the table above restates the plan: check it did not drift
    assert (conv.rule, conv.lanes, conv.kgroup, conv.domain_dtype or dt) == (rule, lanes, kgroup, domain)
    after = to_layout(conv_before(dt, zx, zy, qlo, qhi), target)
    assert_converts_to(after, conv_expected(dt, zx, zy, qlo, qhi, rule, lanes, kgroup, domain, shift))


# -- depthwise conv + fused LUT, pool, add, clamp, global mean, reshape --------------------------------
# int8 throughout; x: s=0.5 z=1 -> depthwise y: z=-100 -> sigmoid table (its only consumer: fused into
# the conv's epilogue) -> maxpool 2x2 -> add(m, m) -> clamp -> global mean -> reshape [1, 2] -> dequantize
W_DW = np.array([[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]], [[[3, 3, 3], [3, 3, 3], [3, 3, 3]]]], np.int8)
W_DW_HWC = np.array([[[1, 3], [0, 3], [-1, 3]], [[2, 3], [0, 3], [-2, 3]], [[1, 3], [0, 3], [-1, 3]]], np.int8)
DW_BIAS = np.array([7, -7], np.int32)
DW_M0 = np.array([2**30, 2**30], np.int32)
DW_RS = np.array([31, 32], np.int32)
LUT = np.arange(-128, 128, dtype=np.int64).clip(-100, 100).astype(np.int8).reshape(1, 256)
ADD = arq("qadd", out_shape=[1, 2, 3, 2], zps=[-7, -7], mults=[2**29, 2**29], shift=30, zp_y=-7, qlo=-128,
          qhi=127, out_dtype="int8")
MAXPOOL = {"pool": [2, 2], "strides": [2, 2], "padding": [0, 0, 0, 0], "dilation": [1, 1], "qmin": -128}


@I.ir_module(check_well_formed=False)
class FeatureMapInt:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 1))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconv2d():
        T.func_attr(arq("qconv2d", strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=2,
                        zp_x=1, zp_y=-100, qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qlut():
        T.func_attr(arq("qlut", axis=-1, qmin=-128, fn="sigmoid"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qmaxpool2d():
        T.func_attr(arq("qmaxpool2d", **MAXPOOL))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qadd():
        T.func_attr(ADD)
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qclamp():
        T.func_attr(arq("qclamp", lo=-7, hi=100))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qmean_hw():
        T.func_attr(arq("qmean_hw", zp=-7, qlo=-128, qhi=127))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.25, zp=-7))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 6, 4), "float32")):
        cls = FeatureMapInt
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 6, 4), "int8"))
            d = R.call_tir(cls.arq_qconv2d, (xq, R.const(W_DW, "int8"), R.const(DW_BIAS, "int32"),
                                             R.const(DW_M0, "int32"), R.const(DW_RS, "int32")),
                           out_ty=R.Tensor((1, 2, 6, 4), "int8"))
            s = R.call_tir(cls.arq_qlut, (d, R.const(LUT, "int8")), out_ty=R.Tensor((1, 2, 6, 4), "int8"))
            m = R.call_tir(cls.arq_qmaxpool2d, (s,), out_ty=R.Tensor((1, 2, 3, 2), "int8"))
            a = R.call_tir(cls.arq_qadd, (m, m), out_ty=R.Tensor((1, 2, 3, 2), "int8"))
            c = R.call_tir(cls.arq_qclamp, (a,), out_ty=R.Tensor((1, 2, 3, 2), "int8"))
            g = R.call_tir(cls.arq_qmean_hw, (c,), out_ty=R.Tensor((1, 2, 1, 1), "int8"))
            r = R.reshape(g, R.shape([1, 2]))
            rd = R.call_tir(cls.arq_dequantize, (r,), out_ty=R.Tensor((1, 2), "float32"))
            cd = R.call_tir(cls.arq_dequantize, (c,), out_ty=R.Tensor((1, 2, 3, 2), "float32"))
            out = (rd, cd)
            R.output(out)
        return out


def feature_map_expected(dw_rule: str) -> tvm.IRModule:
    @I.ir_module(check_well_formed=False)
    class FeatureMapNHWC:
        @T.prim_func(private=True)
        def arq_quantize_to_nhwc():
            T.func_attr(stub_quantize(0.5, 1, op="quantize_to_nhwc"))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qdwconv2d_nhwc():
            T.func_attr(arq("qdwconv2d_nhwc", strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1],
                            out_dtype="int8", schedule=dw_rule, lut_axis=-1, lut_qmin=-128, requant32=False))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qmaxpool2d_nhwc():
            T.func_attr(arq("qmaxpool2d_nhwc", **MAXPOOL))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qadd():   # layout agnostic: the same kernel, its output shape in NHWC
            T.func_attr(arq("qadd", out_shape=[1, 3, 2, 2], zps=[-7, -7], mults=[2**29, 2**29], shift=30,
                            zp_y=-7, qlo=-128, qhi=127, out_dtype="int8"))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qclamp():
            T.func_attr(arq("qclamp", lo=-7, hi=100))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qmean_hw_nhwc():
            T.func_attr(arq("qmean_hw_nhwc", zp=-7, qlo=-128, qhi=127))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_dequantize():   # Before's kernel, kept: its 2-D input has no layout
            T.func_attr(arq("dequantize", scale=0.25, zp=-7))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_dequantize_to_nchw():
            T.func_attr(arq("dequantize_to_nchw", scale=0.25, zp=-7))
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 2, 6, 4), "float32")):
            cls = FeatureMapNHWC
            with R.dataflow():
                xq = R.call_tir(cls.arq_quantize_to_nhwc, (x,), out_ty=R.Tensor((1, 6, 4, 2), "int8"))
                # depthwise weights [KH, KW, C]; qp = [z_x, z_y, qlo, qhi]; the LUT table as last operand
                s = R.call_tir(cls.arq_qdwconv2d_nhwc,
                               (xq, R.const(W_DW_HWC, "int8"), R.const(DW_BIAS, "int32"), R.const(DW_M0, "int32"),
                                R.const(DW_RS, "int32"), R.const(np.array([1, -100, -128, 127], np.int32), "int32"),
                                R.const(LUT, "int8")),
                               out_ty=R.Tensor((1, 6, 4, 2), "int8"))
                m = R.call_tir(cls.arq_qmaxpool2d_nhwc, (s,), out_ty=R.Tensor((1, 3, 2, 2), "int8"))
                a = R.call_tir(cls.arq_qadd, (m, m), out_ty=R.Tensor((1, 3, 2, 2), "int8"))
                c = R.call_tir(cls.arq_qclamp, (a,), out_ty=R.Tensor((1, 3, 2, 2), "int8"))
                g = R.call_tir(cls.arq_qmean_hw_nhwc, (c,), out_ty=R.Tensor((1, 1, 1, 2), "int8"))
                r = R.reshape(g, R.shape([1, 2]))   # [1, C, 1, 1] and [1, 1, 1, C] hold the same bytes
                rd = R.call_tir(cls.arq_dequantize, (r,), out_ty=R.Tensor((1, 2), "float32"))
                cd = R.call_tir(cls.arq_dequantize_to_nchw, (c,), out_ty=R.Tensor((1, 2, 3, 2), "float32"))
                out = (rd, cd)
                R.output(out)
            return out

    return FeatureMapNHWC


@pytest.mark.parametrize("target,dw_rule", [("x86-vnni", "arq_x86_dwconv"), ("aarch64-dotprod", "arq_arm_dwconv"),
                                            ("riscv64-rvv", "arq_rvv_dwconv")])
def test_depthwise_lut_pool_add_mean(target, dw_rule):
    assert plan_of(target).depthwise.rule == dw_rule
    assert_converts_to(to_layout(FeatureMapInt, target), feature_map_expected(dw_rule))


# -- dense -> the packed conv as a 1x1 conv on a [1, 1, N, K] view, per target --------------------------
DENSE_W = np.array([[1, -2, 3], [4, 5, -6]], np.int8)      # [O, K] as RealizeInteger writes it
DENSE_BIAS = np.array([-20, 30], np.int32)


def dense_before(dt: str, zy: int, qlo: int, qhi: int) -> tvm.IRModule:
    @I.ir_module(check_well_formed=False)
    class DenseInt:
        @T.prim_func(private=True)
        def arq_quantize():
            T.func_attr(stub_quantize(0.5, 0, qlo, qhi, dt))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qdense():
            T.func_attr(arq("qdense", zp_y=zy, qlo=qlo, qhi=qhi, out_dtype=dt))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_dequantize():
            T.func_attr(arq("dequantize", scale=2.0, zp=zy))
            T.evaluate(0)

        @R.function
        def main(v: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 2), "float32"):
            cls = DenseInt
            with R.dataflow():
                vq = R.call_tir(cls.arq_quantize, (v,), out_ty=R.Tensor((1, 3), dt))
                y = R.call_tir(cls.arq_qdense, (vq, R.const(DENSE_W, "int8"), R.const(DENSE_BIAS, "int32"),
                                                R.const(M0, "int32"), R.const(RS, "int32")),
                               out_ty=R.Tensor((1, 2), dt))
                yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2), "float32"))
                R.output(yd)
            return yd

    return DenseInt


def dense_expected(dt, zy, qlo, qhi, rule, lanes, kgroup, domain, shift) -> tvm.IRModule:
    w_packed = pack_by_hand(DENSE_W.reshape(2, 3, 1, 1), lanes, kgroup)
    bias = (DENSE_BIAS - shift * DENSE_W.astype(np.int64).sum(1)).astype(np.int32)
    qp = np.array([shift, zy, qlo, qhi], np.int32)   # no padding: the pad value is unused

    @I.ir_module(check_well_formed=False)
    class DensePacked:
        @T.prim_func(private=True)
        def arq_quantize():   # 2-D graph input: no layout, Before's kernel kept
            T.func_attr(stub_quantize(0.5, 0, qlo, qhi, dt))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_qconv2d_nhwc_packed():
            T.func_attr(arq("qconv2d_nhwc_packed", strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1],
                            out_channels=2, in_offset=shift, domain_dtype=domain, out_dtype=dt, schedule=rule,
                            requant32=True))
            T.evaluate(0)

        @T.prim_func(private=True)
        def arq_dequantize():
            T.func_attr(arq("dequantize", scale=2.0, zp=zy))
            T.evaluate(0)

        @R.function
        def main(v: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 2), "float32"):
            cls = DensePacked
            with R.dataflow():
                vq = R.call_tir(cls.arq_quantize, (v,), out_ty=R.Tensor((1, 3), dt))
                v4 = R.reshape(vq, R.shape([1, 1, 1, 3]))
                y4 = R.call_tir(cls.arq_qconv2d_nhwc_packed,
                                (v4, R.const(w_packed, "int8"), R.const(bias, "int32"), R.const(M0, "int32"),
                                 R.const(RS, "int32"), R.const(qp, "int32")),
                                out_ty=R.Tensor((1, 1, 1, 2), dt))
                y = R.reshape(y4, R.shape([1, 2]))
                yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2), "float32"))
                R.output(yd)
            return yd

    return DensePacked


@pytest.mark.parametrize("target", list(CONV_CASES))
def test_dense_packed(target):
    dt, _zx, zy, (qlo, qhi), rule, lanes, kgroup, domain, shift = CONV_CASES[target]
    after = to_layout(dense_before(dt, zy, qlo, qhi), target)
    assert_converts_to(after, dense_expected(dt, zy, qlo, qhi, rule, lanes, kgroup, domain, shift))


# -- pad, resize, concat, softmax (axes remapped), and a reshape of a feature map (needs NCHW) ---------
PADS = [[0, 0], [0, 0], [1, 1], [2, 2]]
IDX_H, IDX_W = np.array([0, 0, 1, 1], np.int32), np.array([0, 0, 1, 1, 2, 2], np.int32)
LIN_H = np.array([[0, 0, 0, 1], [0, 1, 1, 1], [3072, 1024, 3072, 1024]], np.int32)
LIN_W = np.array([[0, 0, 0, 1, 1, 2], [0, 1, 1, 2, 2, 2], [2048, 0, 2048, 0, 2048, 0]], np.int32)
EXP_TABLE = np.arange(256, 0, -1, dtype=np.int32) * 4096
CONCAT = {"zps": [0, 0], "mults": [2**29, 2**29], "shift": 29, "zp_y": 0, "qlo": -128, "qhi": 127,
          "out_dtype": "int8"}
SOFTMAX = {"mult": 2**30, "shift": 22, "zp_y": -128, "qlo": -128, "qhi": 127, "out_dtype": "int8"}


@I.ir_module(check_well_formed=False)
class MovementInt:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qpad():
        T.func_attr(arq("qpad", pads=PADS, value=6))
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
    def arq_qconcat():
        T.func_attr(arq("qconcat", axis=1, **CONCAT))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qsoftmax():
        T.func_attr(arq("qsoftmax", axis=1, **SOFTMAX))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.5, zp=0))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 2, 3), "float32")):
        cls = MovementInt
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 2, 3), "int8"))
            p = R.call_tir(cls.arq_qpad, (xq,), out_ty=R.Tensor((1, 2, 4, 7), "int8"))
            n = R.call_tir(cls.arq_qresize_nearest, (xq, R.const(IDX_H, "int32"), R.const(IDX_W, "int32")),
                           out_ty=R.Tensor((1, 2, 4, 6), "int8"))
            b = R.call_tir(cls.arq_qresize_bilinear, (xq, R.const(LIN_H, "int32"), R.const(LIN_W, "int32")),
                           out_ty=R.Tensor((1, 2, 4, 6), "int8"))
            c = R.call_tir(cls.arq_qconcat, (n, b), out_ty=R.Tensor((1, 4, 4, 6), "int8"))
            s = R.call_tir(cls.arq_qsoftmax, (c, R.const(EXP_TABLE, "int32")), out_ty=R.Tensor((1, 4, 4, 6), "int8"))
            f = R.reshape(c, R.shape([1, 96]))
            pd = R.call_tir(cls.arq_dequantize, (p,), out_ty=R.Tensor((1, 2, 4, 7), "float32"))
            sd = R.call_tir(cls.arq_dequantize, (s,), out_ty=R.Tensor((1, 4, 4, 6), "float32"))
            fd = R.call_tir(cls.arq_dequantize, (f,), out_ty=R.Tensor((1, 96), "float32"))
            out = (pd, sd, fd)
            R.output(out)
        return out


@I.ir_module(check_well_formed=False)
class MovementNHWC:
    @T.prim_func(private=True)
    def arq_quantize_to_nhwc():
        T.func_attr(stub_quantize(0.5, 0, op="quantize_to_nhwc"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qpad():   # pads per NHWC axis
        T.func_attr(arq("qpad", pads=[[0, 0], [1, 1], [2, 2], [0, 0]], value=6))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qresize_nearest_nhwc():
        T.func_attr(arq("qresize_nearest_nhwc"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qresize_bilinear_nhwc():
        T.func_attr(arq("qresize_bilinear_nhwc", bits=12))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconcat():   # channels: NCHW axis 1 -> NHWC axis 3
        T.func_attr(arq("qconcat", axis=3, **CONCAT))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qsoftmax():
        T.func_attr(arq("qsoftmax", axis=3, **SOFTMAX))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize_to_nchw():
        T.func_attr(arq("dequantize_to_nchw", scale=0.5, zp=0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize_to_nchw1():   # one kernel per shape
        T.func_attr(arq("dequantize_to_nchw", scale=0.5, zp=0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=0.5, zp=0))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 2, 3), "float32")):
        cls = MovementNHWC
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize_to_nhwc, (x,), out_ty=R.Tensor((1, 2, 3, 2), "int8"))
            p = R.call_tir(cls.arq_qpad, (xq,), out_ty=R.Tensor((1, 4, 7, 2), "int8"))
            n = R.call_tir(cls.arq_qresize_nearest_nhwc, (xq, R.const(IDX_H, "int32"), R.const(IDX_W, "int32")),
                           out_ty=R.Tensor((1, 4, 6, 2), "int8"))
            b = R.call_tir(cls.arq_qresize_bilinear_nhwc, (xq, R.const(LIN_H, "int32"), R.const(LIN_W, "int32")),
                           out_ty=R.Tensor((1, 4, 6, 2), "int8"))
            c = R.call_tir(cls.arq_qconcat, (n, b), out_ty=R.Tensor((1, 4, 6, 4), "int8"))
            s = R.call_tir(cls.arq_qsoftmax, (c, R.const(EXP_TABLE, "int32")), out_ty=R.Tensor((1, 4, 6, 4), "int8"))
            c_nchw = R.permute_dims(c, axes=[0, 3, 1, 2])   # the reshape reads NCHW order
            f = R.reshape(c_nchw, R.shape([1, 96]))
            pd = R.call_tir(cls.arq_dequantize_to_nchw, (p,), out_ty=R.Tensor((1, 2, 4, 7), "float32"))
            sd = R.call_tir(cls.arq_dequantize_to_nchw1, (s,), out_ty=R.Tensor((1, 4, 4, 6), "float32"))
            fd = R.call_tir(cls.arq_dequantize, (f,), out_ty=R.Tensor((1, 96), "float32"))
            out = (pd, sd, fd)
            R.output(out)
        return out


def test_layout_agnostic_ops_and_nchw_fallback():
    assert_converts_to(to_layout(MovementInt, "x86-vnni"), MovementNHWC)


# -- grouped conv (not depthwise) -> qconv2d_nhwc with HWIO weights; strided_slice with its axis remapped ----
W_G = (np.arange(4 * 2 * 1 * 1).reshape(4, 2, 1, 1) - 3).astype(np.int8)     # groups=2: O=4, C/groups=2
W_G_HWIO = np.array([[[[-3, -1, 1, 3], [-2, 0, 2, 4]]]], np.int8)           # [KH, KW, C/groups, O]
G_BIAS = np.array([1, 2, 3, 4], np.int32)
G_M0 = np.full(4, 2**30, np.int32)
G_RS = np.full(4, 31, np.int32)
GROUPED = {"strides": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1]}


@I.ir_module(check_well_formed=False)
class GroupedInt:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconv2d():
        T.func_attr(arq("qconv2d", groups=2, zp_x=0, zp_y=5, qlo=-128, qhi=127, out_dtype="int8", **GROUPED))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1.0, zp=5))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 4, 3, 3), "float32")) -> R.Tensor((1, 2, 3, 3), "float32"):
        cls = GroupedInt
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 4, 3, 3), "int8"))
            y = R.call_tir(cls.arq_qconv2d, (xq, R.const(W_G, "int8"), R.const(G_BIAS, "int32"),
                                             R.const(G_M0, "int32"), R.const(G_RS, "int32")),
                           out_ty=R.Tensor((1, 4, 3, 3), "int8"))
            t = R.strided_slice(y, axes=[1], begin=[1], end=[3])
            td = R.call_tir(cls.arq_dequantize, (t,), out_ty=R.Tensor((1, 2, 3, 3), "float32"))
            R.output(td)
        return td


@I.ir_module(check_well_formed=False)
class GroupedNHWC:
    @T.prim_func(private=True)
    def arq_quantize_to_nhwc():
        T.func_attr(stub_quantize(0.5, 0, op="quantize_to_nhwc"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconv2d_nhwc():
        T.func_attr(arq("qconv2d_nhwc", groups=2, out_dtype="int8", requant32=True, **GROUPED))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize_to_nchw():
        T.func_attr(arq("dequantize_to_nchw", scale=1.0, zp=5))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 4, 3, 3), "float32")) -> R.Tensor((1, 2, 3, 3), "float32"):
        cls = GroupedNHWC
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize_to_nhwc, (x,), out_ty=R.Tensor((1, 3, 3, 4), "int8"))
            y = R.call_tir(cls.arq_qconv2d_nhwc,
                           (xq, R.const(W_G_HWIO, "int8"), R.const(G_BIAS, "int32"), R.const(G_M0, "int32"),
                            R.const(G_RS, "int32"), R.const(np.array([0, 5, -128, 127], np.int32), "int32")),
                           out_ty=R.Tensor((1, 3, 3, 4), "int8"))
            t = R.strided_slice(y, axes=[3], begin=[1], end=[3])   # channels: NCHW axis 1 -> NHWC axis 3
            td = R.call_tir(cls.arq_dequantize_to_nchw, (t,), out_ty=R.Tensor((1, 2, 3, 3), "float32"))
            R.output(td)
        return td


def test_grouped_conv_and_slice():
    assert_converts_to(to_layout(GroupedInt, "x86-vnni"), GroupedNHWC)
