"""Bias correction of the weight rounding (``QuantConfig.bias_correction``, ``passes/annotate.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.ops.conv import conv_weight_shift, dense_weight_shift
from tvm_arq.passes.analysis import plan_quantization
from tvm_arq.qmath import quantize_weights_per_channel
from tvm_arq.quantize import ChannelMean, calibrate, compile_host, quantize_module


def _conv_np(x: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    """Valid (unpadded) NCHW conv, float64."""
    n, c, h, wd = x.shape
    o, ig, kh, kw = w.shape
    og = o // groups
    out = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for g in range(groups):
        xs = x[:, g * ig:(g + 1) * ig]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + out.shape[2], j:j + out.shape[3]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    return out


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_weight_shift_is_the_conv_of_the_weight_error_with_the_mean(groups):
    rng = np.random.default_rng(groups)
    w = rng.normal(size=(6, 6 // groups, 3, 3)).astype(np.float32)
    q, s = quantize_weights_per_channel(w, axis=0)
    w_hat = q.astype(np.float32) * s[:, None, None, None]
    mean = rng.uniform(0.5, 3.0, size=6)
    x = np.broadcast_to(mean[None, :, None, None], (1, 6, 5, 5))  # constant input = its own mean
    want = _conv_np(x, w_hat.astype(np.float64) - w, groups)[0, :, 0, 0]
    np.testing.assert_allclose(conv_weight_shift(w_hat.astype(np.float64) - w, mean, groups), want, rtol=1e-9, atol=1e-12)


def test_weight_shift_dense():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 3)).astype(np.float32)  # (in, out)
    w_hat = w + rng.normal(size=w.shape).astype(np.float32) * 0.01
    mean = rng.normal(size=7)
    np.testing.assert_allclose(dense_weight_shift(w_hat.astype(np.float64) - w, mean), mean @ (w_hat.astype(np.float64) - w))


def test_channel_mean_streams():
    rng = np.random.default_rng(1)
    xs = [rng.normal(loc=[[[[1.0]], [[-2.0]], [[5.0]]]], size=(1, 3, 4, 4)) for _ in range(3)]
    m = ChannelMean(axis=1)
    for x in xs:
        m.update(x)
    np.testing.assert_allclose(m.mean, np.concatenate(xs).mean(axis=(0, 2, 3)))
    d = ChannelMean(axis=-1)
    d.update(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(d.mean, [1.5, 2.5, 3.5])


CIN, COUT = 48, 8


def _model(seed: int = 0) -> tvm.IRModule:
    """1x1 conv on a ReLU6-like input with a large mean: weight rounding shifts every output channel."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(COUT, CIN, 1, 1)) * 0.3).astype(np.float32)
    w[:, 0] = 2.5  # a large weight per channel sets a coarse per-channel scale for all the small ones
    b = rng.normal(size=(1, COUT, 1, 1)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, CIN, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(w)))
            y = bb.emit(R.add(y, relax.const(b)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _data(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(4.0, 1.0, size=(1, CIN, 6, 6)), 0, 6).astype(np.float32) for _ in range(n)]


def _mean_error(res, mod, data) -> float:
    """RMS over output channels of the mean (over inputs and pixels) error of the integer build."""
    fvm, ivm = compile_host(mod), compile_host(res.int_mod)
    err = np.zeros(COUT)
    for x in data:
        xt = tvm.runtime.tensor(x)
        err += (ivm["main"](xt).numpy() - fvm["main"](xt).numpy()).mean(axis=(0, 2, 3)) / len(data)
    return float(np.sqrt(np.mean(err**2)))


def test_calibrate_collects_anchor_input_means():
    mod = _model()
    plan = plan_quantization(mod)
    data = _data(3, 0)
    means: dict[str, ChannelMean] = {}
    calibrate(mod, data, plan, QuantConfig(), progress=False, input_means=means)
    assert list(means) == ["x"]
    np.testing.assert_allclose(means["x"].mean, np.concatenate(data).mean(axis=(0, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("scheme", [Scheme.HYBRID, Scheme.SYMMETRIC])
def test_bias_correction_removes_the_mean_output_error(scheme):
    mod = _model()
    cal, test = _data(8, 0), _data(8, 1)
    on = quantize_module(mod, cal, QuantConfig(scheme=scheme, bias_correction=True), "int8", progress=False)
    off = quantize_module(mod, cal, QuantConfig(scheme=scheme, bias_correction=False), "int8", progress=False)
    e_on, e_off = _mean_error(on, mod, test), _mean_error(off, mod, test)
    assert e_off > 0.02, e_off  # the model does exhibit the systematic error
    assert e_on < 0.3 * e_off, (e_on, e_off)
