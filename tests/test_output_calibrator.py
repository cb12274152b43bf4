"""The ``output`` calibrator: consumer-output error search over every calibrator's range (tiny graphs, numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_arq.calibrate import OutputObserver, OutputSampler, choose_candidate, conv_consumer, dense_consumer
from tvm_arq.calibrate.output import CANDIDATE_ORDER, Consumer, consumer_errors, conv_patches
from tvm_arq.config import RangeKind


def _conv_ref(x: np.ndarray, w: np.ndarray, stride: int, pad: int, dil: int, groups: int) -> np.ndarray:
    """Direct NCHW/OIHW convolution (loops), the reference for the sampled patches."""
    n, c, h, ww = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    ow = (ww + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                win = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + dil * (kh - 1) + 1:dil,
                         j * stride:j * stride + dil * (kw - 1) + 1:dil]
                y[:, oc, i, j] = (win * w[oc]).sum(axis=(1, 2, 3))
    return y


@pytest.mark.parametrize("stride,pad,dil,groups,cout", [(1, 1, 1, 1, 6), (2, 0, 1, 2, 4), (1, 2, 2, 4, 4)])
def test_sampled_patches_reproduce_the_convolution(stride, pad, dil, groups, cout) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 7, 7)).astype(np.float32)
    w = rng.normal(size=(cout, 4 // groups, 3, 3)).astype(np.float32)
    c = conv_consumer("conv", w, (stride, stride), (pad, pad, pad, pad), (dil, dil), groups)
    p = conv_patches(x, c, rng)  # every position (the map is small)
    y = np.einsum("ngk,gok->ngo", p, c.weight).reshape(p.shape[0], -1)
    ref = _conv_ref(x, w, stride, pad, dil, groups).transpose(0, 2, 3, 1).reshape(-1, cout)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def _outlier_samples(n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Dense-layer inputs: a normal bulk (262k values) and one outlier of 30 (min/max puts the bulk on ~20 levels)."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(256, 64)).astype(np.float32) for _ in range(n)]
    xs[3][17, 5] = 30.0
    return xs


def test_output_choice_beats_minmax_at_the_consumer_output() -> None:
    xs = _outlier_samples()
    rng = np.random.default_rng(1)
    cons = {"x": [dense_consumer("fc", rng.normal(size=(64, 32)).astype(np.float32))]}
    obs, sampler = OutputObserver(), OutputSampler(cons)
    for x in xs:
        obs.update(x)
        sampler.next_sample()
        sampler.update("x", x)
    ranges = obs.candidates(RangeKind.SYMMETRIC)
    assert set(ranges) == set(CANDIDATE_ORDER)
    rows = sampler.inputs("x")
    assert rows[0].shape == (16 * 256, 64) and rows[0].max() == 30.0  # the outlier is in the search's rows
    name, err = choose_candidate(rows, cons["x"], ranges, RangeKind.SYMMETRIC)
    assert name != "minmax"
    assert ranges[name][1] < 20.0
    assert err[name] < 0.7 * err["minmax"]
    # the chosen range is also better at the layer output on other samples with the same outlier rate
    held = np.concatenate(_outlier_samples(seed=5))
    err_h = consumer_errors([held], cons["x"], {k: ranges[k] for k in (name, "minmax")}, RangeKind.SYMMETRIC)
    assert err_h[name] < 0.7 * err_h["minmax"]


def test_lut_consumer_error_sees_saturation() -> None:
    """A tanh consumer: the output error of a range clipped at +-3 is below min/max's (tanh is flat there)."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=4000), [30.0, -30.0]]).astype(np.float32)
    c = [Consumer("t", "lut", fn=np.tanh)]
    err = consumer_errors([x], c, {"minmax": (-30.0, 30.0), "clip": (-3.0, 3.0)}, RangeKind.SYMMETRIC)
    assert err["clip"] < 0.1 * err["minmax"]


def test_dense_consumer_and_reservoir_are_bounded() -> None:
    w = np.random.default_rng(3).normal(size=(64, 10)).astype(np.float32)
    cons = {"f": [dense_consumer("fc", w), Consumer("f", "tensor")]}
    sampler = OutputSampler(cons, n_samples=4)
    rng = np.random.default_rng(4)
    for _ in range(50):
        sampler.next_sample()
        sampler.update("f", rng.normal(size=(3, 64)).astype(np.float32))
    rows = sampler.inputs("f")
    assert rows[0].shape == (12, 64)  # 4 kept samples x 3 rows
    assert rows[1].shape == (4 * 3 * 64,)


def test_output_calibrator_end_to_end_rule() -> None:
    import tvm_arq
    from tests.graphs import Spec, build_graph, calibration_set

    mod = build_graph(Spec(4, 8, ["conv", "silu", "add", "dense_head"], 1, act="none"))
    cal = calibration_set(mod, 6, skew=0.3)
    m = tvm_arq.build(mod, None, "host", calibration=cal, calibrator="output", progress=False)
    rules = [qp.rule for qp in m.qparams.values()]
    assert all("output-aware:" in r for r in rules), rules
    assert any("conv " in r for r in rules) and any("lut " in r for r in rules)


def test_row_consumers_and_views() -> None:
    """LayerNorm / softmax rows and a consumer read through reshape + permute reproduce the float functions,
    and the LayerNorm error sees a row with a small spread that the tensor's own error does not."""
    from tvm_arq.calibrate import layer_norm_consumer, softmax_consumer
    from tvm_arq.calibrate.output import apply_view, consumer_rows

    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 6, 8)).astype(np.float32)
    g, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    ln = layer_norm_consumer("ln", g, b, 1e-5)
    rows = consumer_rows(x, ln, rng)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(ln.fn(rows), ref.reshape(-1, 8), rtol=1e-4, atol=1e-4)
    sm = softmax_consumer("sm", 8, view=(("reshape", (6, 8)),))
    e = np.exp(x[0] - x[0].max(-1, keepdims=True))
    np.testing.assert_allclose(sm.fn(consumer_rows(x, sm, rng)), e / e.sum(-1, keepdims=True), rtol=1e-5)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    view = (("permute", (0, 2, 1)), ("reshape", (8, 6)))
    fc = dense_consumer("fc", w)
    fc = Consumer(fc.name, fc.kind, fc.weight, fc.qweight, view=view)
    np.testing.assert_allclose(consumer_rows(x, fc, rng) @ w, apply_view(x, view) @ w, rtol=1e-5)
    # rows of very different spread: clipping the wide rows hurts the tensor error, not the narrow rows' LayerNorm
    xs = np.concatenate([rng.normal(scale=10.0, size=(32, 8)), rng.normal(scale=0.05, size=(32, 8))]).astype(np.float32)
    ranges = {"minmax": (float(xs.min()), float(xs.max())), "clip": (-3.0, 3.0)}
    e_ln = consumer_errors([xs], [layer_norm_consumer("ln", np.ones(8), np.zeros(8), 1e-5)], ranges,
                           RangeKind.ASYMMETRIC)
    e_t = consumer_errors([xs.reshape(-1)], [Consumer("t", "tensor")], ranges, RangeKind.ASYMMETRIC)
    assert e_t["clip"] > e_t["minmax"] and e_ln["clip"] < e_ln["minmax"]
