"""Integer transposed conv2d (:mod:`tvm_arq.ops.conv_transpose`).

- hypothesis: the NCHW gather kernel and the NHWC phase-packed kernel, compiled for the host with the default
  schedules in one module, equal their numpy twins (a scatter formulation) bit for bit; the twin's integers
  equal a third formulation (zero-point-filled zero insertion + conv with the flipped kernel); random shapes,
  strides 1/2/4 (ragged kernels), groups, padding, output padding, zero points, multipliers, int8 / uint8;
- ``RealizeInteger`` on a QDQ conv2d_transpose + bias + ReLU (Before / Expected, TVMScript);
- the PP-OCRv4 detector (slow): no float fallback, every tensor bit-exact on the host.

``TVM_ARQ_HYPOTHESIS=thorough`` raises the example budget (``TVM_ARQ_KERNEL_EXAMPLES``, default 200).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tests.test_realize_structural import arq, assert_lowers_to, realize
from tvm_arq.backends import ApplyDefaultSchedules, get_backend
from tvm_arq.ops import REGISTRY, emit_kernel
from tvm_arq.ops.conv_transpose import (
    convt_acc_np,
    iohw_to_oihw,
    pack_phase_weight,
    phase_weight_sums,
    transpose_out_hw,
)
from tvm_arq.qmath import quantize_multiplier
from tvm_arq.target import resolve_target

THOROUGH = os.environ.get("TVM_ARQ_HYPOTHESIS") == "thorough"
EXAMPLES = int(os.environ.get("TVM_ARQ_KERNEL_EXAMPLES", "200")) if THOROUGH else 5
HOST = resolve_target("host")

cases = st.fixed_dictionaries({
    "groups": st.sampled_from([1, 1, 2, 3]),
    "cpg": st.integers(1, 5), "opg": st.integers(1, 5),
    "h": st.integers(1, 6), "w": st.integers(1, 6),
    "stride": st.tuples(st.sampled_from([1, 2, 2, 4]), st.sampled_from([1, 2, 2, 4])),
    "kernel": st.tuples(st.integers(1, 5), st.integers(1, 5)),
    "pads": st.lists(st.integers(0, 2), min_size=4, max_size=4),
    "out_pad": st.tuples(st.integers(0, 3), st.integers(0, 3)),
    "dtype": st.sampled_from(["uint8", "int8"]),
    "narrow": st.booleans(),
    "seed": st.integers(0, 2**16),
})  # fmt: skip


def twin(name: str):
    return REGISTRY.kernel(name).reference


def zero_insertion_acc(x, w, zp_x, strides, padding, output_padding, groups):
    """int64 ``sum (q_x - zp_x) * q_w`` by the textbook route: insert ``s - 1`` zeros (real 0) between input
    pixels, pad by ``K - 1 - p``, conv (stride 1) with the spatially flipped, in/out swapped kernel."""
    n, c, h, wd = x.shape
    cin, opg, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = padding
    cg = cin // groups
    oh, ow = transpose_out_hw(h, wd, (kh, kw), strides, padding, output_padding)
    up = np.zeros((n, c, (h - 1) * sh + 1, (wd - 1) * sw + 1), np.int64)
    up[:, :, ::sh, ::sw] = x.astype(np.int64) - zp_x
    big = np.zeros((n, c, up.shape[2] + 2 * kh + oh, up.shape[3] + 2 * kw + ow), np.int64)
    big[:, :, kh - 1:kh - 1 + up.shape[2], kw - 1:kw - 1 + up.shape[3]] = up
    big = big[:, :, pt:, pl:]
    wf = w[:, :, ::-1, ::-1].astype(np.int64)
    acc = np.zeros((n, opg * groups, oh, ow), np.int64)
    for g in range(groups):
        for ky in range(kh):
            for kx in range(kw):
                patch = big[:, g * cg:(g + 1) * cg, ky:ky + oh, kx:kx + ow]
                acc[:, g * opg:(g + 1) * opg] += np.einsum("nchw,co->nohw", patch, wf[g * cg:(g + 1) * cg, :, ky, kx])
    return acc


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=not THOROUGH)
@given(case=cases)
def test_conv_transpose_kernels_match_twins(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    g, strides, (kh, kw) = case["groups"], case["stride"], case["kernel"]
    cin, o = g * case["cpg"], g * case["opg"]
    pads = case["pads"]
    out_pad = tuple(min(p, s - 1) for p, s in zip(case["out_pad"], strides, strict=True))  # output_padding < stride
    h = max(case["h"], 1 + (pads[0] + pads[2] - kh - out_pad[0]) // strides[0] + 1)  # at least one output row
    w_ = max(case["w"], 1 + (pads[1] + pads[3] - kw - out_pad[1]) // strides[1] + 1)
    oh, ow = transpose_out_hw(h, w_, (kh, kw), strides, pads, out_pad)
    assert oh >= 1 and ow >= 1
    info = np.iinfo(case["dtype"])
    lo, hi = int(info.min), int(info.max)
    x = rng.integers(lo, hi + 1, (1, cin, h, w_)).astype(case["dtype"])
    wt = rng.integers(-127, 128, (cin, case["opg"], kh, kw)).astype(np.int8)
    zp_x, zp_y = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    bias = rng.integers(-5000, 5000, (strides[0], strides[1], o)).astype(np.int32)
    m0, rs = quantize_multiplier(rng.uniform(1e-4, 3e-2, o), saturate=True)
    qlo, qhi = (lo + 20, hi - 20) if case["narrow"] else (lo, hi)
    p = {"strides": list(strides), "padding": pads, "output_padding": list(out_pad), "groups": g,
         "zp_x": zp_x, "zp_y": zp_y, "qlo": qlo, "qhi": qhi, "out_dtype": case["dtype"]}
    pn = {"strides": list(strides), "padding": pads, "out_hw": [oh, ow], "kernel": [kh, kw], "groups": g,
          "out_dtype": case["dtype"]}
    qp = np.array([zp_x, zp_y, qlo, qhi], np.int32)
    wp = pack_phase_weight(wt, strides, g)

    consts = [relax.const(bias, "int32"), relax.const(m0, "int32"), relax.const(rs, "int32")]
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, case["dtype"]))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y1 = emit_kernel(bb, "qconv2d_transpose", [xv, relax.const(wt, "int8"), *consts], p)
            xt = bb.emit(relax.op.permute_dims(xv, [0, 2, 3, 1]))
            y2 = emit_kernel(bb, "qconv2d_transpose_nhwc", [xt, relax.const(wp, "int8"), *consts,
                                                            relax.const(qp, "int32")], pn)
            res = bb.emit_output(relax.Tuple([y1, y2]))
        bb.emit_func_output(res)
    get_backend(HOST).register()
    vm = relax.VirtualMachine(tvm.compile(ApplyDefaultSchedules()(bb.get()), target=HOST.target), tvm.cpu())
    got_nchw, got_nhwc = (t.numpy() for t in vm["main"](tvm.runtime.tensor(x)))

    want = twin("qconv2d_transpose")(x, wt, bias, m0, rs, **p)
    want_nhwc = twin("qconv2d_transpose_nhwc")(x.transpose(0, 2, 3, 1), wp, bias, m0, rs, qp, **pn)
    np.testing.assert_array_equal(got_nchw, want, err_msg="NCHW kernel vs twin")
    np.testing.assert_array_equal(got_nhwc, want_nhwc, err_msg="NHWC kernel vs twin")
    np.testing.assert_array_equal(want_nhwc.transpose(0, 3, 1, 2), want, err_msg="NHWC twin vs NCHW twin")
    # the twin's integers equal the zero-insertion formulation (+ the phase bias with its zero-point part)
    acc = convt_acc_np(x, wt, bias, zp_x, strides, pads, out_pad, g)
    b_q = bias.astype(np.int64) + zp_x * phase_weight_sums(iohw_to_oihw(wt, g), strides)
    ry, rx = (np.arange(oh) + pads[0]) % strides[0], (np.arange(ow) + pads[1]) % strides[1]
    b_map = b_q[ry[:, None], rx[None, :], :].transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(acc - b_map, zero_insertion_acc(x, wt, zp_x, strides, pads, out_pad, g))


# -- RealizeInteger: conv2d_transpose + bias + relu (Before / Expected) -------------------------------
# x: s=0.5 z=1; w IOHW [Cin=2, O=2, 3, 3], per-output s_w=[0.25, 0.5] (axis 1); stride 2, pad 1, output_padding 1
# -> 2x2 in, 4x4 out; y: s=2 z=-100 (relu -> clamp low = z_y)
CT_W = np.arange(-17, 19, dtype=np.int8).reshape(2, 2, 3, 3)
CT_SW = np.array([0.25, 0.5], np.float32)
CT_B = np.array([1.0, -2.0], np.float32)
# b'[ry, rx, o] = round(b / (s_x * s_w)) - z_x * (sum of w[:, o] over the taps ky = ry, kx = rx mod 2)
CT_BQ = [8, -8]  # [1 / 0.125, -2 / 0.25]
CT_BPH = np.array([[[CT_BQ[o] - 1 * int(CT_W[:, o, ry::2, rx::2].astype(int).sum()) for o in range(2)]
                    for rx in range(2)] for ry in range(2)], np.int32)
assert CT_BPH[0, 0, 0] == 8 - (-17 - 15 - 11 - 9 + 1 + 3 + 7 + 9) and CT_BPH[1, 1, 1] == -8 - (-4 + 14)
CT_M0 = np.full(2, 2**30, np.int32)
CT_RS = np.array([34, 33], np.int32)  # M = s_x * s_w / s_y = [1/16, 1/8]


@I.ir_module
class ConvTransposeBefore:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 2, 4, 4), "float32"):
        with R.dataflow():
            xq = R.quantize(x, R.const(0.5, "float32"), R.const(1, "int8"), axis=-1, out_dtype="int8")
            xd = R.dequantize(xq, R.const(0.5, "float32"), R.const(1, "int8"), axis=-1, out_dtype="float32")
            w = R.dequantize(R.const(CT_W, "int8"), R.const(CT_SW, "float32"), R.const(np.zeros(2, np.int8), "int8"),
                             axis=1, out_dtype="float32")
            y = R.nn.conv2d_transpose(xd, w, strides=[2, 2], padding=[1, 1, 1, 1], output_padding=[1, 1])
            yb = R.add(y, R.const(CT_B.reshape(1, 2, 1, 1), "float32"))
            yr = R.nn.relu(yb)
            yq = R.quantize(yr, R.const(2.0, "float32"), R.const(-100, "int8"), axis=-1, out_dtype="int8")
            yd = R.dequantize(yq, R.const(2.0, "float32"), R.const(-100, "int8"), axis=-1, out_dtype="float32")
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class ConvTransposeExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(arq("quantize", scale=0.5, zp=1, qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qconv2d_transpose():
        T.func_attr(arq("qconv2d_transpose", strides=[2, 2], padding=[1, 1, 1, 1], output_padding=[1, 1],
                           groups=1, zp_x=1, zp_y=-100, qlo=-100, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=2.0, zp=-100))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 2, 2, 2), "float32")) -> R.Tensor((1, 2, 4, 4), "float32"):
        cls = ConvTransposeExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((1, 2, 2, 2), "int8"))
            y = R.call_tir(cls.arq_qconv2d_transpose, (xq, R.const(CT_W, "int8"), R.const(CT_BPH, "int32"),
                                                       R.const(CT_M0, "int32"), R.const(CT_RS, "int32")),
                           out_ty=R.Tensor((1, 2, 4, 4), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((1, 2, 4, 4), "float32"))
            R.output(yd)
        return yd


def test_realize_conv_transpose_bias_relu():
    assert_lowers_to(realize(ConvTransposeBefore), ConvTransposeExpected)


# -- the real model (slow: runs in CI) ------------------------------------------------------------------


@pytest.mark.slow
def test_ppocr_det_is_integer_and_bitexact_on_host():
    """PP-OCRv4 text detector (DBNet head, two stride-2 conv2d_transpose upsamplers) at 1x3x32x32: no float
    fallback, both upsamplers integer, every tensor of the host program bit-exact against the reference.
    (The debug program compiles the same kernels the shipped build does; the shipped compile is skipped.)"""
    import tvm_arq
    from arq_bench import assets
    from tvm_arq.build import prepare
    from tvm_arq.config import QuantConfig
    from tvm_arq.quantize import quantize_module
    from tvm_arq.verify import debug_build, verify_host

    mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_det"), shape=(1, 3, 32, 32))
    rng = np.random.default_rng(0)
    cal = [rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    res = quantize_module(prepare(mod, params), cal, QuantConfig(), HOST.act_dtype, progress=False)
    assert res.plan.fallbacks == []
    ops = [str(f.attrs["arq.op"]) for f in res.int_mod.functions.values()
           if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs]
    assert ops.count("qconv2d_transpose") == 2
    report = verify_host(debug_build(res.int_mod, "host"), cal[1], export=False)
    report.assert_ok()


# -- unsupported forms stay float with a reason ---------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"dilation": [2, 2]}, "dilation [2, 2] (only 1)"),
    ({"strides": [2, 2]}, ""),
])  # fmt: skip
def test_plan_conv_transpose_reasons(kwargs: dict, reason: str) -> None:
    from tvm_arq.passes.analysis import plan_quantization

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(np.ones((2, 3, 3, 3), np.float32))
            y = bb.emit(relax.op.nn.conv2d_transpose(x, w, **kwargs), "convt")
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    fallbacks = plan_quantization(bb.get()).fallbacks
    assert [(op, why) for _, op, why in fallbacks] == ([("relax.nn.conv2d_transpose", reason)] if reason else [])
