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

from tvm_arq.backends import ApplyDefaultSchedules, get_backend
from tvm_arq.ops import REGISTRY, emit_kernel
from tvm_arq.ops.conv_transpose import pack_phase_weight, phase_weight_sums, transpose_out_hw
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
    from tvm_arq.ops.conv_transpose import convt_acc_np, iohw_to_oihw

    acc = convt_acc_np(x, wt, bias, zp_x, strides, pads, out_pad, g)
    b_q = bias.astype(np.int64) + zp_x * phase_weight_sums(iohw_to_oihw(wt, g), strides)
    ry, rx = (np.arange(oh) + pads[0]) % strides[0], (np.arange(ow) + pads[1]) % strides[1]
    b_map = b_q[ry[:, None], rx[None, :], :].transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(acc - b_map, zero_insertion_acc(x, wt, zp_x, strides, pads, out_pad, g))
