"""Numerical limits: int32 accumulator overflow is impossible or detected, requantization multipliers
outside the fixed-point range and tiny/denormal scales are handled, and property tests check the
integer arithmetic against exact rational arithmetic (Python ints and fractions)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tvm import te

import tvm_arq
from tests.graphs import OPS, Spec, build_graph, calibration_set
from tests.robustness._models import assert_bitexact, build, cancelling_add_module, conv_module, dense_module
from tests.robustness._tally import tried
from tvm_arq.config import QuantConfig, RangeKind
from tvm_arq.ops import REGISTRY
from tvm_arq.ops.conv import ACC64_MAX, INT32_MAX, accumulator_bounds, fit_int32
from tvm_arq.qmath import (
    MAX_RESCALE_MULT,
    MAX_SCALE,
    QuantizationError,
    choose_qparams,
    common_multipliers,
    dtype_range,
    quantize_multiplier,
    requantize_np,
)

PROPS = settings(max_examples=300, deadline=None, derandomize=True)


def round_half_up(x: Fraction) -> int:
    return (x + Fraction(1, 2)).__floor__()


# ------------------------------------------------------------------------------------------ accumulator bound


@PROPS
@given(st.data(), st.sampled_from(["int8", "uint8"]))
def test_accumulator_bounds_are_the_exact_extremes(data, x_dtype) -> None:
    """The bound is attained: the extreme inputs (q_x at the end of the range matching each weight's sign)
    reach it, and brute force over every input vector never exceeds it."""
    k = data.draw(st.integers(1, 6))
    qw = np.array(data.draw(st.lists(st.integers(-127, 127), min_size=k, max_size=k)), np.int64).reshape(1, k)
    lo_b, hi_b = accumulator_bounds(qw.astype(np.int8), x_dtype)
    lo, hi = dtype_range(x_dtype)
    xs = np.array(np.meshgrid(*[[lo, hi]] * k)).reshape(k, -1).T  # every extreme input vector
    sums = xs @ qw[0]
    assert sums.max() == hi_b[0] and sums.min() == lo_b[0]  # attained by an extreme input
    # partial sums (any order the kernel might accumulate in) stay inside too
    for x in xs:
        partial = np.cumsum(x * qw[0])
        assert partial.max() <= hi_b[0] and partial.min() >= lo_b[0]
    tried()


def _big_k_conv(cin: int, weights: str) -> tvm.IRModule:
    rng = np.random.default_rng(0)
    w = np.ones((1, cin, 3, 3)) if weights == "full" else rng.normal(size=(1, cin, 3, 3))
    return conv_module(w, np.zeros(1), size=3)


def test_uint8_conv_with_k_over_66k_is_detected_and_named() -> None:
    """K = 8192*3*3 = 73728 full-scale weights with uint8 activations: 255*127*K > 2**31 - 1. Before the
    check this built silently and TVM's int32 accumulator wrapped (run != int64 reference)."""
    mod = _big_k_conv(8192, "full")
    cal = [np.abs(np.random.default_rng(1).normal(size=(1, 8192, 3, 3))).astype("float32")]
    with pytest.raises(QuantizationError, match=r"conv2d 'lv\d*'.*K = 73728.*2\.388e\+09 > 2\*\*31 - 1"):
        build(mod, cal, config=QuantConfig(act_dtype="uint8"))
    # the same layer with int8 activations fits (128*127*K < 2**31) and is exact at full scale
    model = build(mod, cal, config=QuantConfig(act_dtype="int8"))
    for v in (1e3, -1e3):
        assert_bitexact(model, np.full((1, 8192, 3, 3), v, "float32"))
    tried(3)


def test_big_k_with_ordinary_weights_is_not_rejected() -> None:
    """The bound uses the actual weights (sum |q_w|), not K * 127: a K = 73728 layer with Gaussian weights
    fits even in uint8, and saturating inputs stay exact."""
    mod = _big_k_conv(8192, "gaussian")
    cal = [np.abs(np.random.default_rng(1).normal(size=(1, 8192, 3, 3))).astype("float32")]
    model = build(mod, cal, config=QuantConfig(act_dtype="uint8"))
    rng = np.random.default_rng(3)
    x = np.where(rng.random((1, 8192, 3, 3)) < 0.5, 1e3, -1e3).astype("float32")
    assert_bitexact(model, x)
    assert_bitexact(model, np.full((1, 8192, 3, 3), 1e3, "float32"))
    tried(2)


def test_dense_with_huge_k_is_detected_and_named() -> None:
    mod = dense_module(np.ones((70000, 2)), np.zeros(2))
    cal = [np.abs(np.random.default_rng(1).normal(size=(1, 70000))).astype("float32")]
    with pytest.raises(QuantizationError, match=r"dense 'lv\d*'.*K = 70000"):
        build(mod, cal, config=QuantConfig(act_dtype="uint8"))


def test_fit_int32_leaves_ordinary_layers_untouched() -> None:
    rng = np.random.default_rng(0)
    qw = rng.integers(-127, 128, (8, 16, 3, 3)).astype(np.int8)
    s_w = rng.uniform(1e-3, 1e-2, 8)
    bias = rng.normal(size=8)
    qw2, s_w2, b_fold = fit_int32(qw, s_w, bias, 0.02, 7, "uint8", "conv2d 'l'")
    np.testing.assert_array_equal(qw2, qw)
    np.testing.assert_array_equal(s_w2, s_w)
    want = np.rint(bias / (0.02 * s_w)).astype(np.int64) - 7 * qw.reshape(8, -1).astype(np.int64).sum(axis=1)
    np.testing.assert_array_equal(b_fold, want)


@PROPS
@given(
    log_sx=st.floats(-45, 2), log_sw=st.floats(-9, 0), log_b=st.floats(-6, 4), z_x=st.integers(-128, 255),
    x_dtype=st.sampled_from(["int8", "uint8"]), seed=st.integers(0, 2**16),
)
def test_fit_int32_always_fits_and_keeps_the_layer(log_sx, log_sw, log_b, z_x, x_dtype, seed) -> None:
    """Over scales from denormal to large: the folded bias fits int32, |acc + b'| fits the int64
    requantization, and the layer still computes the same real function within its error bound."""
    lo, hi = dtype_range(x_dtype)
    z_x = int(np.clip(z_x, lo, hi))
    rng = np.random.default_rng(seed)
    k = 27
    qw = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    s_x = float(np.float32(max(10.0**log_sx, 1e-45)))
    assume(s_x > 0)
    s_w = np.full(4, 10.0**log_sw)
    bias = rng.choice([-1, 1], 4) * 10.0**log_b
    qw2, s_w2, b_fold = fit_int32(qw, s_w, bias, s_x, z_x, x_dtype, "conv2d 't'")
    acc_lo, acc_hi = accumulator_bounds(qw2, x_dtype)
    assert np.all(np.abs(b_fold) <= INT32_MAX)
    assert np.all(acc_hi + b_fold <= ACC64_MAX) and np.all(acc_lo + b_fold >= -ACC64_MAX)
    assert np.all(s_w2 >= s_w)
    # real weights move by at most half a (new) step, the bias is represented within half an accumulator unit
    w_old = qw.reshape(4, -1) * s_w[:, None]
    w_new = qw2.reshape(4, -1) * s_w2[:, None]
    assert np.all(np.abs(w_new - w_old) <= s_w2[:, None] / 2 * (1 + 1e-9) + 1e-300)
    b_real = (b_fold + z_x * qw2.reshape(4, -1).astype(np.int64).sum(axis=1)) * (s_x * s_w2)
    assert np.all(np.abs(b_real - bias) <= s_x * s_w2 / 2 * (1 + 1e-9))
    # the coarser weights cost at most K * |x|max * step / 2 in real units, which is below K * 2**-24 * |b|
    changed = s_w2 > s_w
    max_x = (hi - lo) * s_x
    assert np.all((k * max_x * s_w2 / 2)[changed] <= k * 2.0**-24 * np.abs(bias[changed]) * 1.01)
    tried()


# ------------------------------------------------------------------------------------------ requantization


@pytest.mark.parametrize(
    ("real", "m0", "rshift"),
    [
        (0.0, 0, 62), (1e-320, 0, 62), (2.0**-64, 0, 62), (2.0**-62, 1, 62), (2.0**-40, 2**22, 62),
        (2.0**-32, 2**30, 62), (2.0**-31, 2**30, 61), (0.5, 2**30, 31), (1.0, 2**30, 30),
        (2.0**29, 2**30, 1), (2.0**30, 2**31 - 1, 1), (1e30, 2**31 - 1, 1),
    ],
)
def test_quantize_multiplier_edges(real, m0, rshift) -> None:
    got = quantize_multiplier(real, saturate=True)
    assert (int(got[0][0]), int(got[1][0])) == (m0, rshift)


def test_quantize_multiplier_rejects_what_it_cannot_represent() -> None:
    for bad in (np.nan, np.inf, -1.0):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)
    with pytest.raises(OverflowError, match="too large"):
        quantize_multiplier(2.0**30)  # only saturated on request
    tried(4)


@PROPS
@given(
    log_real=st.one_of(st.floats(-70, 35), st.sampled_from([-63.0, -62.0, -32.0, -31.0, 29.0, 30.0])),
    acc=st.one_of(st.integers(-ACC64_MAX, ACC64_MAX), st.sampled_from([0, 1, -1, ACC64_MAX, -ACC64_MAX])),
)
def test_requantization_matches_exact_rational(log_real, acc) -> None:
    """``(acc * M0 + 2**(rshift-1)) >> rshift`` in int64 equals the same formula in Python ints (no int64
    overflow), and is within 1/2 + |acc| * |real - M0 / 2**rshift| of the exact ``acc * real``;
    the representation error is below real * 2**-31 (or 2**-63 absolute for tiny multipliers)."""
    real = float(2.0**log_real)
    m0, rs = (int(v[0]) for v in quantize_multiplier(real, saturate=True))
    got = int(requantize_np(np.array([acc]), np.array([m0]), np.array([rs]))[0])
    exact_formula = (acc * m0 + (1 << (rs - 1))) >> rs
    assert got == exact_formula
    if real >= 2.0**30:  # saturated: zero stays zero, anything else is beyond any 8/16-bit clamp
        assert got == 0 if acc == 0 else abs(got) >= 2**29 and (got > 0) == (acc > 0)
        tried()
        return
    rep = abs(Fraction(real) - Fraction(m0, 2**rs))
    assert rep <= max(Fraction(real) * Fraction(1, 2**31), Fraction(1, 2**63))
    assert abs(got - Fraction(acc) * Fraction(real)) <= Fraction(1, 2) + abs(acc) * rep
    if abs(acc) * rep < Fraction(1, 2**20):  # representation error negligible: rounding is exact
        assert got == round_half_up(Fraction(acc) * Fraction(m0, 2**rs))
    tried()


@pytest.fixture(scope="module")
def qdense_kernel():
    """TVM's fused dense+requantization kernel with int32 output, compiled once; constants are inputs."""
    n = 64
    x = te.placeholder((1, 1), "int8", name="x")
    w = te.placeholder((n, 1), "int8", name="w")
    b = te.placeholder((n,), "int32", name="b")
    m0 = te.placeholder((n,), "int32", name="m0")
    rs = te.placeholder((n,), "int32", name="rs")
    out = REGISTRY.kernel("qdense").compute(x, w, b, m0, rs, zp_y=0, qlo=-(2**31), qhi=2**31 - 1, out_dtype="int32")
    lib = tvm.compile(te.create_prim_func([x, w, b, m0, rs, out]), target="llvm")
    return n, lib


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), log_lo=st.integers(-70, 0), log_hi=st.integers(0, 35))
def test_tvm_requantization_kernel_matches_exact_rational(qdense_kernel, seed, log_lo, log_hi) -> None:
    """The compiled kernel (int32 accumulate, int64 bias + fixed-point multiply) over random multipliers
    from 2**-70 to 2**35 and accumulators up to 2**31: equal to the Python-int formula, bit for bit."""
    n, lib = qdense_kernel
    rng = np.random.default_rng(seed)
    reals = 2.0 ** rng.uniform(log_lo, log_hi, n)
    m0, rs = quantize_multiplier(reals, saturate=True)
    x = rng.integers(-128, 128, (1, 1)).astype(np.int8)
    w = rng.integers(-127, 128, (n, 1)).astype(np.int8)
    b = rng.integers(-(2**31) + 2**15, 2**31 - 2**15, n).astype(np.int32)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in (x, w, b, m0, rs)]
    out = tvm.runtime.tensor(np.zeros((1, n), np.int32), dev)
    lib(*args, out)
    for j in range(n):
        acc = int(x[0, 0]) * int(w[j, 0]) + int(b[j])
        want = (acc * int(m0[j]) + (1 << (int(rs[j]) - 1))) >> int(rs[j])
        assert int(out.numpy()[0, j]) == int(np.clip(want, -(2**31), 2**31 - 1)), (j, acc, reals[j])
    tried(n)


# ------------------------------------------------------------------------------------------ add / concat rescaling


scales = st.floats(-40, 25).map(lambda e: float(np.float32(2.0**e)))


@PROPS
@given(s_in=st.lists(scales, min_size=2, max_size=4), s_y=scales, seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(["int8", "uint8"]))
def test_qadd_and_qconcat_rescaling_match_exact_rational(s_in, s_y, seed, dtype) -> None:
    """Integer rescale-and-sum (add) and rescale (concat) over random scales and zero points: within
    1/2 + sum |q - z| * |r - M / 2**shift| of the exact rational result -- or a clear QuantizationError
    when a factor is beyond int64 arithmetic."""
    rng = np.random.default_rng(seed)
    lo, hi = dtype_range(dtype)
    ratios = [s / s_y for s in s_in]
    try:
        mults, shift = common_multipliers(ratios)
    except QuantizationError:
        assert max(ratios) >= 2.0**38
        tried()
        return
    assert max(mults) < MAX_RESCALE_MULT and 1 <= shift <= 40
    if max(ratios) >= 2.0**-10:  # the largest factor keeps >= 29 significant bits
        assert max(mults) >= 2**29
    zps = [int(z) for z in rng.integers(lo, hi + 1, len(s_in))]
    z_y = int(rng.integers(lo, hi + 1))
    qs = [rng.integers(lo, hi + 1, 16).astype(dtype) for _ in s_in]
    y_add = REGISTRY.kernel("qadd").reference(qs, out_shape=[16], zps=zps, mults=mults, shift=shift, zp_y=z_y, qlo=lo, qhi=hi,
                           out_dtype="int64")
    y_cat = REGISTRY.kernel("qconcat").reference(qs, axis=0, zps=zps, mults=mults, shift=shift, zp_y=z_y, qlo=lo, qhi=hi,
                              out_dtype="int64")
    reps = [abs(Fraction(r) - Fraction(m, 2**shift)) for r, m in zip(ratios, mults, strict=True)]
    assert all(rep <= Fraction(1, 2 ** (shift + 1)) for rep in reps)
    for i in range(16):
        terms = [int(q[i]) - z for q, z in zip(qs, zps, strict=True)]
        exact = z_y + sum(Fraction(t) * Fraction(r) for t, r in zip(terms, ratios, strict=True))
        bound = Fraction(1, 2) + sum(abs(t) * rep for t, rep in zip(terms, reps, strict=True))
        clipped = min(max(exact, lo), hi)
        assert abs(int(y_add[i]) - clipped) <= bound
        for j, (t, r, rep) in enumerate(zip(terms, ratios, reps, strict=True)):
            e = min(max(z_y + Fraction(t) * Fraction(r), lo), hi)
            assert abs(int(y_cat[j * 16 + i]) - e) <= Fraction(1, 2) + abs(t) * rep
    tried()


# ------------------------------------------------------------------------------------------ scales


@PROPS
@given(
    alpha=st.one_of(st.floats(-1e38, 0.0), st.sampled_from([0.0, -1e-45, -1e-38, -1e-30, -3.4e38])),
    beta=st.one_of(st.floats(0.0, 1e38), st.sampled_from([0.0, 1e-45, 1e-38, 1e-30, 3.4e38])),
    kind=st.sampled_from(list(RangeKind)), dtype=st.sampled_from(["int8", "uint8"]),
)
def test_choose_qparams_is_safe_for_any_range(alpha, beta, kind, dtype) -> None:
    """Zero, denormal and near-float32-max ranges: a finite positive float32 scale, an in-range zero point,
    0.0 exactly representable, and quantizing anything (even +-float32 max) gives no NaN."""
    qp = choose_qparams(alpha, beta, kind, dtype)
    assert np.isfinite(qp.scale) and qp.scale > 0 and float(np.float32(qp.scale)) == qp.scale
    assert qp.qmin <= qp.zero_point <= qp.qmax
    assert qp.dequantize(qp.quantize(np.float32(0.0)))[()] == 0.0
    extremes = np.array([-3.4e38, alpha, 0.0, beta, 3.4e38], np.float32)
    with np.errstate(over="ignore"):  # x / tiny scale -> inf, clamped to the integer range
        q = qp.quantize(extremes)
    grid = qp.dequantize(np.arange(qp.qmin, qp.qmax + 1).astype(dtype))
    assert q.dtype == np.dtype(dtype) and np.all(np.isfinite(grid))
    if qp.scale < MAX_SCALE and beta - alpha > 1e-30:  # the clipping range is covered to within one step
        assert grid[-1] >= np.float32(beta) - 1.01 * qp.scale
        if kind is not RangeKind.ONE_SIDED:
            assert grid[0] <= np.float32(alpha) + 1.01 * qp.scale
    tried()


# ------------------------------------------------------------------------------------------ end to end


def test_requant_multiplier_above_2_30_end_to_end() -> None:
    """Huge inputs (1e30 outlier) into a layer whose ReLU output is always zero: s_x * s_w / s_y ~ 1e31.
    This crashed with 'requantization multiplier ... too large'; now it saturates exactly."""
    mod = conv_module(-np.abs(np.random.default_rng(0).normal(size=(2, 3, 3, 3))), np.zeros(2), act="relu")
    cal = [np.abs(x) for x in calibration_set(mod, 4, seed=2)]
    cal[1][0, 0, 2, 2] = 1e30
    model = build(mod, cal)
    for x in [cal[0], cal[1], -cal[0]]:
        assert_bitexact(model, x)
    np.testing.assert_array_equal(model.run(cal[0]), 0)
    tried(3)


def test_add_rescale_factor_above_2_30_end_to_end() -> None:
    """``conv(x, W) + conv(x, -W)`` cancels exactly; with large inputs the output scale is ~1e-7 and the
    input scales ~1e4, so the add's rescale factors exceed 2**30 (this was 'rescale factor too large')."""
    mod = cancelling_add_module()
    cal = [x * 1e4 for x in calibration_set(mod, 3, seed=4)]
    model = build(mod, cal)
    f32 = tvm_arq.build(mod, None, "host", scheme="float")
    for x in cal:
        assert_bitexact(model, x)
        np.testing.assert_allclose(model.run(x), f32.run(x), atol=1e-3)
    tried(len(cal))


@pytest.mark.parametrize("magnitude", [1e-20, 1e-30, 1e-38, 1e-42])
def test_tiny_and_denormal_activations(magnitude) -> None:
    """Activations of 1e-20 down to float32 denormals feeding a conv with an ordinary bias: the input
    scale is tiny, the folded bias must not saturate (it did: outputs were off by the bias)."""
    rng = np.random.default_rng(0)
    mod = conv_module(rng.normal(size=(4, 3, 3, 3)) * 0.3, rng.normal(size=4), act=None)
    cal = [x * np.float32(magnitude) for x in calibration_set(mod, 3, seed=1)]
    model = build(mod, cal)
    f32 = tvm_arq.build(mod, None, "host", scheme="float")
    for x in cal:
        assert_bitexact(model, x)
        y = f32.run(x)
        np.testing.assert_allclose(model.run(x), y, atol=np.abs(y).max() / 100)
    tried(len(cal))


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.builds(Spec, channels=st.sampled_from([2, 3]), size=st.integers(3, 6),
                   ops=st.lists(st.sampled_from(["conv", "dwconv", "add", "concat", "avgpool", "mul", "sigmoid"]),
                                min_size=1, max_size=4),
                   seed=st.integers(0, 1000), act=st.sampled_from(["none", "relu", "clip_sym"])),
    log_mag=st.integers(-40, 25),
)
def test_random_graphs_at_extreme_magnitudes_stay_bitexact(spec, log_mag) -> None:
    """Random small graphs calibrated and run on data scaled by 10**-40 .. 10**25: no error, bit-exact."""
    assert set(spec.ops) <= set(OPS)
    mod = build_graph(spec)
    cal = [x * np.float32(10.0**log_mag) for x in calibration_set(mod, 3, seed=spec.seed)]
    model = build(mod, cal)
    for x in cal[:2]:
        assert_bitexact(model, x)
    tried()
