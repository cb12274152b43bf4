"""Integer LayerNorm / RMS norm, reductions on any axis and subtract (tvm_arq.ops.norm, .reduce, .sub).

- hypothesis: each kernel compiled for the host (default schedule) == its numpy twin, bit for bit, over random
  shapes, zero points, scales, int8 and uint8;
- the block recognition as TVMScript ``Before`` / ``Expected`` (decomposed LayerNorm -> ``R.nn.layer_norm``,
  RMS norm with ``rsqrt`` -> ``R.nn.rms_norm``);
- bad forms (epsilon 0, dynamic shape) stay float with a reason in ``plan.fallbacks``;
- accuracy of the integer LayerNorm against float LayerNorm on realistic data.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.ops import REGISTRY
from tvm_arq.ops.norm import isqrt_np, norm_constants
from tvm_arq.ops.reference import ReferenceInterpreter
from tvm_arq.ops.registry import emit_kernel
from tvm_arq.passes import plan_quantization, recognize_blocks
from tvm_arq.qmath import choose_qparams, common_multipliers, dtype_range, quantize_multiplier
from tvm_arq.quantize import compile_host, quantize_module

SETTINGS = settings(max_examples=5, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from(["int8", "uint8"])


def _run_kernel(name: str, xs: list[np.ndarray], consts: list[np.ndarray], params: dict) -> None:
    """Compile kernel ``name`` alone for the host and compare it with its numpy twin on ``xs``."""
    bb = relax.BlockBuilder()
    vs = [relax.Var(f"x{i}", relax.TensorType(x.shape, str(x.dtype))) for i, x in enumerate(xs)]
    with bb.function("main", vs):
        with bb.dataflow():
            tensors = vs + [relax.const(c, str(c.dtype)) for c in consts]
            y = emit_kernel(bb, name, [tensors] if REGISTRY.kernel(name).tensor_list else tensors, params)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    vm = compile_host(bb.get())
    got = vm["main"](*[tvm.runtime.tensor(x) for x in xs]).numpy()
    ref = REGISTRY.kernel(name).reference
    want = ref(xs, **params) if REGISTRY.kernel(name).tensor_list else ref(*xs, *consts, **params)
    np.testing.assert_array_equal(got, want)


def _ints(draw, shape, dtype):
    lo, hi = dtype_range(dtype)
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).integers(lo, hi + 1, size=shape).astype(dtype)


# -- kernels vs numpy twins ------------------------------------------------------------------------


@settings(SETTINGS, max_examples=8)
@given(data=st.data())
def test_qnorm_bitexact(data):
    d = data.draw
    nd = d(st.integers(2, 3))
    shape = tuple(d(st.lists(st.integers(1, 5), min_size=nd - 1, max_size=nd - 1))) + (d(st.integers(1, 40)),)
    axis = d(st.integers(1, nd - 1))
    dt, odt = d(DTYPES), d(DTYPES)
    x = _ints(d, shape, dt)
    if d(st.booleans()):  # a constant row: variance 0, only epsilon in the square root
        x[(0,) * (nd - 1)] = x.reshape(-1)[0]
    nshape = shape[axis:]
    rng = np.random.default_rng(d(st.integers(0, 999)))
    gamma = rng.uniform(-2, 2, nshape).astype(np.float32)
    beta = rng.normal(0, 1, nshape).astype(np.float32)
    s_x, s_y = d(st.floats(1e-3, 1.0)), d(st.floats(1e-3, 0.2))
    eps = d(st.sampled_from([1e-12, 1e-6, 1e-5, 1e-2, 10.0]))
    c = norm_constants(s_x, s_y, int(np.prod(nshape)), eps, gamma, beta)
    qlo, qhi = dtype_range(odt)
    params = {"axis": axis, "zp": d(st.integers(*dtype_range(dt))), "center": d(st.booleans()),
              "eps_int": c["eps_int"], "k": c["k"], "frac": c["frac"], "shift": c["shift"],
              "zp_y": d(st.integers(qlo, qhi)), "qlo": qlo, "qhi": qhi, "out_dtype": odt}
    _run_kernel("qnorm", [x], [c["mult"], c["bias"]], params)


@SETTINGS
@given(data=st.data())
def test_reductions_bitexact(data):
    d = data.draw
    nd = d(st.integers(1, 4))
    shape = tuple(d(st.lists(st.integers(1, 5), min_size=nd, max_size=nd)))
    axes = sorted(d(st.sets(st.integers(0, nd - 1), min_size=1)))
    keep = d(st.booleans())
    dt = d(DTYPES)
    x = _ints(d, shape, dt)
    lo, hi = dtype_range(dt)
    zp = d(st.integers(lo, hi))
    reduce = d(st.sampled_from(["mean", "max", "min"]))
    _run_kernel("qreduce", [x], [], {"reduce": reduce, "axes": axes, "keepdims": keep, "zp": zp, "qlo": lo,
                                     "qhi": hi})
    odt = d(DTYPES)
    qlo, qhi = dtype_range(odt)
    m0, rs = quantize_multiplier(d(st.floats(1e-3, 2.0)))
    _run_kernel("qsum", [x], [], {"axes": axes, "keepdims": keep, "zp": zp, "m0": int(m0[0]), "rshift": int(rs[0]),
                                  "zp_y": d(st.integers(qlo, qhi)), "qlo": qlo, "qhi": qhi, "out_dtype": odt})


@SETTINGS
@given(data=st.data())
def test_subtract_bitexact(data):
    d = data.draw
    shape = tuple(d(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    dts = [d(DTYPES), d(DTYPES)]
    a, b = _ints(d, shape, dts[0]), _ints(d, shape[-1:], dts[1])  # broadcast over the leading axes
    odt = d(DTYPES)
    qlo, qhi = dtype_range(odt)
    (ma, mb), shift = common_multipliers([d(st.floats(0.05, 4.0)), d(st.floats(0.05, 4.0))])
    params = {"out_shape": list(shape), "zps": [d(st.integers(*dtype_range(t))) for t in dts],
              "mults": [ma, -mb], "shift": shift, "zp_y": d(st.integers(qlo, qhi)), "qlo": qlo, "qhi": qhi,
              "out_dtype": odt}
    _run_kernel("qadd", [a, b], [], params)


def test_isqrt_exact():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.integers(0, 2**61, 2000), np.arange(0, 300), [2**61 - 1, 2**60, 4**30 - 1, 4**30]])
    np.testing.assert_array_equal(isqrt_np(v.astype(np.int64)), [math.isqrt(int(a)) for a in v])


# -- block recognition (Before / Expected) ---------------------------------------------------------

G = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
B = np.array([0.1, -0.2, 0.3, 0.0], np.float32)


def recognize(mod: tvm.IRModule) -> tvm.IRModule:
    """The rewrite under test; trivial var-to-var bindings folded (how the output is aliased does not matter)."""
    return relax.transform.CanonicalizeBindings()(recognize_blocks(mod))


def test_recognize_layer_norm_structural():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                m = R.mean(x, axis=[-1], keepdims=True)
                d = R.subtract(x, m)
                p = R.power(d, R.const(2.0, "float32"))
                v = R.mean(p, axis=[-1], keepdims=True)
                ve = R.add(v, R.const(1e-5, "float32"))
                s = R.sqrt(ve)
                n = R.divide(d, s)
                g = R.multiply(n, R.const(G))
                y = R.add(g, R.const(B))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                y = R.nn.layer_norm(x, R.const(G), R.const(B), axes=[2], epsilon=float(np.float32(1e-5)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(recognize(Before), Expected)


def test_recognize_rms_norm_structural():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                p = R.multiply(x, x)
                v = R.mean(p, axis=[2], keepdims=True)
                ve = R.add(R.const(1e-6, "float32"), v)
                r = R.rsqrt(ve)
                n = R.multiply(r, x)
                y = R.multiply(R.const(G), n)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                y = R.nn.rms_norm(x, R.const(G), axes=[2], epsilon=float(np.float32(1e-6)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(recognize(Before), Expected)


def test_non_trailing_mean_is_not_a_norm():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                m = R.mean(x, axis=[1], keepdims=True)
                d = R.subtract(x, m)
                p = R.power(d, R.const(2.0, "float32"))
                v = R.mean(p, axis=[1], keepdims=True)
                ve = R.add(v, R.const(1e-5, "float32"))
                s = R.sqrt(ve)
                y = R.divide(d, s)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(recognize(Before), Before)


# -- bad forms -------------------------------------------------------------------------------------


def _ln_module(eps: float, batch=2) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, 3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.add(x, x))
            y = bb.emit(relax.op.nn.layer_norm(a, relax.const(G), relax.const(B), [-1], epsilon=eps))
            out = bb.emit_output(relax.op.add(y, y))
        bb.emit_func_output(out)
    return bb.get()


def test_bad_forms_fall_back_with_reason():
    plan = plan_quantization(_ln_module(0.0))
    assert [(op, why.split(":")[0]) for _, op, why in plan.fallbacks] == [("relax.nn.layer_norm", "epsilon 0")]
    plan = plan_quantization(_ln_module(1e-5, batch=tvm.tirx.Var("n", "int64")))
    assert ("relax.nn.layer_norm", "dynamic shape") in [(op, why) for _, op, why in plan.fallbacks]
    assert not plan_quantization(_ln_module(1e-5)).fallbacks


def test_eps0_float_build_is_correct():
    """An epsilon-0 LayerNorm stays float inside the integer module and still computes LayerNorm."""
    mod = _ln_module(0.0)
    rng = np.random.default_rng(0)
    cal = [rng.normal(size=(2, 3, 4)).astype("float32") for _ in range(3)]
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), "int8", progress=False)
    got = compile_host(res.int_mod)["main"](tvm.runtime.tensor(cal[0])).numpy()
    a = 2 * cal[0]
    ln = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True)) * G + B
    assert np.max(np.abs(got - 2 * ln)) < 0.15


# -- accuracy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False])
def test_norm_accuracy_vs_float(center):
    """Realistic transformer activations (per-channel offsets, a few outlier channels), N = 120: the
    dequantized integer output is float LayerNorm / RMS norm of the dequantized input correctly rounded (within
    0.5 output step where the output range does not clamp it, 1 step anywhere), and within 3 steps of the float
    LayerNorm of the float input (input rounding included)."""
    rng = np.random.default_rng(7)
    n, rows = 120, 64
    chan = rng.normal(0, 0.5, n) + np.where(rng.random(n) < 0.05, rng.normal(0, 6, n), 0)
    x = (rng.normal(0, 1.0, (rows, n)) * rng.uniform(0.5, 2, (rows, 1)) + chan).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, n).astype(np.float32)
    beta = (rng.normal(0, 0.2, n) if center else np.zeros(n)).astype(np.float32)
    eps = 1e-5

    def ln(v):
        v = v.astype(np.float64)
        c = v - v.mean(-1, keepdims=True) if center else v
        return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * gamma + beta

    qx = choose_qparams(float(x.min()), float(x.max()), "asymmetric", "int8")
    yref = ln(x)
    qy = choose_qparams(float(yref.min()), float(yref.max()), "asymmetric", "int8")
    q = qx.quantize(x)
    c = norm_constants(qx.scale, qy.scale, n, eps, gamma, beta)
    lo, hi = dtype_range("int8")
    params = {"axis": 1, "zp": qx.zero_point, "center": center, "eps_int": c["eps_int"], "k": c["k"],
              "frac": c["frac"], "shift": c["shift"], "zp_y": qy.zero_point, "qlo": lo, "qhi": hi,
              "out_dtype": "int8"}
    qo = REGISTRY.kernel("qnorm").reference(q, c["mult"], c["bias"], **params)
    y = qy.dequantize(qo)
    err_int = np.abs(y - ln(qx.dequantize(q))) / qy.scale
    err_all = np.abs(y - yref) / qy.scale
    inside = (qo > lo) & (qo < hi)  # not clamped by the output range
    logging.getLogger(__name__).info("max error vs float of the dequantized input %.3f steps (%.3f unclamped), "
                                     "vs float input %.3f", err_int.max(), err_int[inside].max(), err_all.max())
    assert err_int[inside].max() <= 0.501, err_int[inside].max()
    assert err_int.max() <= 1.0, err_int.max()
    assert err_all.max() <= 3.0, err_all.max()


def test_layer_norm_graph_bitexact_and_integer():
    """A decomposed LayerNorm between two integer ops becomes one ``qnorm``; TVM == reference."""
    rng = np.random.default_rng(3)
    mod = _decomposed()
    cal = [(rng.normal(size=(1, 5, 8)) * 2 + 0.5).astype("float32") for _ in range(3)]
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), "uint8", progress=False)
    assert not res.plan.fallbacks
    ops = {str(f.attrs["arq.op"]) for f in res.int_mod.functions.values()
           if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs}
    assert {"qnorm", "qadd"} <= ops
    vm = compile_host(res.int_mod)
    ref = ReferenceInterpreter(res.int_mod)
    for x in cal[:2]:
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref.run(x))


def _decomposed() -> tvm.IRModule:
    g = np.linspace(0.5, 1.5, 8).astype(np.float32)
    b = np.linspace(-0.3, 0.3, 8).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 5, 8), "float32"))
    O = relax.op  # noqa: N806, E741
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(O.add(x, x))
            m = bb.emit(O.mean(a, axis=[-1], keepdims=True))
            d = bb.emit(O.subtract(a, m))
            v = bb.emit(O.mean(bb.emit(O.multiply(d, d)), axis=[-1], keepdims=True))
            s = bb.emit(O.sqrt(bb.emit(O.add(v, relax.const(1e-5, "float32")))))
            n = bb.emit(O.multiply(bb.emit(O.divide(d, s)), relax.const(g)))
            y = bb.emit(O.add(n, relax.const(b)))
            out = bb.emit_output(O.add(y, a))
        bb.emit_func_output(out)
    return bb.get()
