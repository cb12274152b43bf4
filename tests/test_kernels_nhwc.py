"""Kernel-level tests of the NHWC pool, mean and resize kernels.

Each example builds one module holding the max pool, average pool, global mean, nearest and bilinear resize
kernels on the same random NHWC tensor, compiles it with the default schedules (one compile per example) and
compares every output, bit for bit, with the kernel's numpy twin and with the generic NCHW twin.
``TVM_ARQ_HYPOTHESIS=thorough`` raises the budget (``TVM_ARQ_KERNEL_EXAMPLES``, default 200); shrinking is on,
so a failure comes out minimal.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_arq.backends import ApplyDefaultSchedules, get_backend
from tvm_arq.ops import REGISTRY, emit_kernel
from tvm_arq.ops.common import out_hw
from tvm_arq.ops.resize import RESIZE_BITS, resize_linear_table, resize_source_index
from tvm_arq.target import resolve_target

THOROUGH = os.environ.get("TVM_ARQ_HYPOTHESIS") == "thorough"
EXAMPLES = int(os.environ.get("TVM_ARQ_KERNEL_EXAMPLES", "200")) if THOROUGH else 4
HOST = resolve_target("host")

cases = st.fixed_dictionaries({
    "c": st.integers(1, 40),  # ragged against the 32-lane vector schedule
    "h": st.integers(1, 9), "w": st.integers(1, 9),
    "pool": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "stride": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "pads": st.lists(st.integers(0, 1), min_size=4, max_size=4),
    "count_include_pad": st.booleans(),
    "dtype": st.sampled_from(["uint8", "int8", "int16"]),
    "out_hw": st.tuples(st.integers(1, 12), st.integers(1, 12)),
    "mode": st.sampled_from(["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"]),
    "rounding": st.sampled_from(["", "round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
    "narrow": st.booleans(),  # a clip range narrower than the dtype: saturating outputs
    "seed": st.integers(0, 2**16),
})  # fmt: skip


def twin(name: str):
    """The numpy twin of kernel ``name``."""
    return REGISTRY.kernel(name).reference


def _nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=not THOROUGH)
@given(case=cases)
def test_nhwc_pool_mean_resize_kernels_match_twins(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    info = np.iinfo(case["dtype"])
    lo, hi = int(info.min), int(info.max)
    kh, kw = case["pool"]
    dh, dw = case["dilation"]
    pads = case["pads"]
    h = max(case["h"], dh * (kh - 1) + 1 - pads[0] - pads[2])  # at least one output row / column
    w = max(case["w"], dw * (kw - 1) + 1 - pads[1] - pads[3])
    x = rng.integers(lo, hi + 1, (1, h, w, case["c"])).astype(case["dtype"])
    zp = int(rng.integers(lo, hi + 1))
    qlo, qhi = (lo + 20, hi - 20) if case["narrow"] else (lo, hi)
    maxp = {"pool": [kh, kw], "strides": list(case["stride"]), "padding": pads, "dilation": [dh, dw], "qmin": lo}
    # the average pool has no dilation; its padding stays below the window (as ONNX requires)
    apads = [min(p, k - 1) for p, k in zip(pads, (kh, kw, kh, kw), strict=True)]
    avgp = {"pool": [kh, kw], "strides": list(case["stride"]), "padding": apads,
            "count_include_pad": case["count_include_pad"], "zp": zp, "qlo": qlo, "qhi": qhi}
    meanp = {"zp": zp, "qlo": qlo, "qhi": qhi}
    oh, ow = case["out_hw"]
    iy = resize_source_index(h, oh, case["mode"], case["rounding"])
    ix = resize_source_index(w, ow, case["mode"], case["rounding"])
    ty = resize_linear_table(h, oh, case["mode"], RESIZE_BITS)
    tx = resize_linear_table(w, ow, case["mode"], RESIZE_BITS)

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, case["dtype"]))
    with bb.function("main", [xv]):
        with bb.dataflow():
            outs = [
                emit_kernel(bb, "qmaxpool2d_nhwc", [xv], maxp, opaque=True),
                emit_kernel(bb, "qavgpool2d_nhwc", [xv], avgp, opaque=True),
                emit_kernel(bb, "qmean_hw_nhwc", [xv], meanp, opaque=True),
                emit_kernel(bb, "qresize_nearest_nhwc", [xv, relax.const(iy), relax.const(ix)], {}, opaque=True),
                emit_kernel(bb, "qresize_bilinear_nhwc", [xv, relax.const(ty), relax.const(tx)],
                            {"bits": RESIZE_BITS}, opaque=True),
            ]
            res = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(res)
    get_backend(HOST).register()
    vm = relax.VirtualMachine(tvm.compile(ApplyDefaultSchedules()(bb.get()), target=HOST.target), tvm.cpu())
    got = [o.numpy() for o in vm["main"](tvm.runtime.tensor(x))]

    want = [
        twin("qmaxpool2d_nhwc")(x, **maxp),
        twin("qavgpool2d_nhwc")(x, **avgp),
        twin("qmean_hw_nhwc")(x, **meanp),
        twin("qresize_nearest_nhwc")(x, iy, ix),
        twin("qresize_bilinear_nhwc")(x, ty, tx, bits=RESIZE_BITS),
    ]
    generic = [
        _nhwc(twin("qmaxpool2d")(_nchw(x), **maxp)),
        _nhwc(twin("qavgpool2d")(_nchw(x), **avgp)),
        _nhwc(twin("qmean_hw")(_nchw(x), **meanp)),
        _nhwc(twin("qresize_nearest")(_nchw(x), iy, ix)),
        _nhwc(twin("qresize_bilinear")(_nchw(x), ty, tx, bits=RESIZE_BITS)),
    ]
    names = ["maxpool", "avgpool", "mean", "resize_nearest", "resize_bilinear"]
    assert want[0].shape[1:3] == out_hw(h, w, (kh, kw), case["stride"], pads, (dh, dw))
    for name, g, t, gen in zip(names, got, want, generic, strict=True):
        assert g.dtype == t.dtype == x.dtype, name
        np.testing.assert_array_equal(g, t, err_msg=f"{name}: compiled NHWC kernel vs its twin")
        np.testing.assert_array_equal(t, gen, err_msg=f"{name}: NHWC twin vs the generic NCHW twin")
    if case["narrow"]:
        for g in got[1:3]:
            assert g.min() >= qlo and g.max() <= qhi


@pytest.mark.parametrize("kernel", ["qmaxpool2d_nhwc", "qavgpool2d_nhwc", "qmean_hw_nhwc", "qresize_nearest_nhwc",
                                    "qresize_bilinear_nhwc"])
def test_every_nhwc_kernel_here_has_a_twin(kernel: str) -> None:
    kd = REGISTRY.kernel(kernel)
    assert kd.compute is not None and kd.reference is not None
