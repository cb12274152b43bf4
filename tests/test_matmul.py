"""Integer matmul of two activations and dense with an N-D input (tvm_arq.ops.matmul, tvm_arq.ops.conv).

- hypothesis: ``qmatmul`` compiled for the host with its default schedule == its numpy twin, bit for bit, over
  random shapes (broadcast batch axes, transposed operands), zero points and scales, int8 / uint8 / int16;
- ``RealizeInteger`` as TVMScript ``Before`` / ``Expected`` (a transposed operand folded into ``qmatmul``; a
  3-D dense reshaped around ``qdense``);
- a small attention block quantized end to end: no float fallback, transposes folded, TVM == reference;
- unsupported forms fall back with a reason and stay correct in float;
- slow: the PP-OCRv4 recognizer builds with no fallback and every tensor is bit-exact on the host.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tests.test_realize_structural import (
    arq,
    assert_lowers_to,
    dq,
    dq_weight,
    q,
    realize,
    requant,
    stub_quantize,
)
from tvm_arq.backends.default_schedules import ApplyDefaultSchedules
from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.ops import REGISTRY
from tvm_arq.ops.matmul import acc_dtype, fit_multiplier, max_abs
from tvm_arq.ops.reference import ReferenceInterpreter
from tvm_arq.ops.registry import emit_kernel
from tvm_arq.passes import plan_quantization
from tvm_arq.qmath import dtype_range, quantize_multiplier
from tvm_arq.quantize import compile_host, quantize_module

SETTINGS = settings(max_examples=4, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from(["int8", "uint8", "int16"])


def _ints(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    lo, hi = dtype_range(dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


@st.composite
def matmul_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    m, n, k = (draw(st.integers(1, 9)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    # each operand: the batch axes or a suffix of them, some broadcast (1)
    ba = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    bb = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    ta, tb = draw(st.booleans()), draw(st.booleans())
    da, db, dy = draw(DTYPES), draw(DTYPES), draw(DTYPES)
    a = _ints(rng, [*ba, k, m] if ta else [*ba, m, k], da)
    b = _ints(rng, [*bb, n, k] if tb else [*bb, k, n], db)
    za, zb, zy = (int(_ints(rng, (), d)) for d in (da, db, dy))
    lo, hi = dtype_range(dy)
    real = float(np.exp(rng.uniform(np.log(1e-6), np.log(1.0)))) * (hi - lo) / (max_abs(da) * max_abs(db) * k)
    (m0,), (rs,) = quantize_multiplier(real)
    m0, rs = fit_multiplier(int(m0), int(rs), k * max_abs(da, za) * max_abs(db, zb))
    out_shape = [*np.broadcast_shapes(tuple(ba), tuple(bb)), m, n]
    params = {"out_shape": [int(d) for d in out_shape], "transpose_a": ta, "transpose_b": tb, "zp_a": za,
              "zp_b": zb, "m0": m0, "rshift": rs, "zp_y": zy, "qlo": lo, "qhi": hi, "out_dtype": dy}
    return a, b, params


def _check_kernel(a: np.ndarray, b: np.ndarray, params: dict) -> None:
    """``qmatmul`` compiled for the host with its default schedule == its numpy twin, bit for bit."""
    bb = relax.BlockBuilder()
    va, vb = (relax.Var(n, relax.TensorType(x.shape, str(x.dtype))) for n, x in (("a", a), ("b", b)))
    with bb.function("main", [va, vb]):
        with bb.dataflow():
            out = bb.emit_output(emit_kernel(bb, "qmatmul", [va, vb], params))
        bb.emit_func_output(out)
    mod = ApplyDefaultSchedules()(bb.get())
    assert all(bool(f.attrs["tirx.is_scheduled"]) for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    got = compile_host(mod)["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
    want = REGISTRY.kernel("qmatmul").reference(a, b, **params)
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(matmul_case())
def test_qmatmul_bitexact(case):
    _check_kernel(*case)


def test_qmatmul_int16_transposed_broadcast_bitexact():
    """Deterministic corner the random draw may miss: int16 x int16 (int64 accumulator, shortened multiplier),
    ``K^T`` folded, broadcast batch axes, both zero points non-zero."""
    rng = np.random.default_rng(4)
    a, b = _ints(rng, (2, 1, 5, 33), "int16"), _ints(rng, (3, 6, 33), "int16")
    m0, rs = fit_multiplier(2**31 - 1, 50, 33 * 2 * 32768 * 2 * 32768)
    params = {"out_shape": [2, 3, 5, 6], "transpose_a": False, "transpose_b": True, "zp_a": -1000, "zp_b": 77,
              "m0": m0, "rshift": rs, "zp_y": 5, "qlo": -32768, "qhi": 32767, "out_dtype": "int16"}
    _check_kernel(a, b, params)


def test_accumulator_and_multiplier_fit():
    assert acc_dtype("int8", "int8", 4096) == "int32" and acc_dtype("uint8", "uint8", 33025) == "int32" \
        and acc_dtype("uint8", "uint8", 33026) == "int64"
    assert acc_dtype("int16", "int8", 2) == "int32" and acc_dtype("int16", "int16", 2) == "int64"
    m0, rs = fit_multiplier(2**31 - 1, 40, 64 * 2**30)  # int16 x int16, K = 64
    assert 64 * 2**30 * m0 + 2 ** (rs - 1) < 2**62 and 2**31 - 1 >> (40 - rs) == m0
    assert fit_multiplier(2**30, 40, 4096 * 128 * 128) == (2**30, 40)  # int8: untouched


# -- RealizeInteger, Before / Expected -------------------------------------------------------------
# a: s=0.5 z=1; b: s=0.25 z=-2, transposed by permute_dims (same parameters); y: s=2 z=3
# M = s_a * s_b / s_y = 1/16 -> M0 = 2**30, rshift = 34
MM_M0, MM_RS = requant(0.5 * 0.25 / 2.0)


@I.ir_module
class MatmulBefore:
    @R.function
    def main(a: R.Tensor((2, 3, 4), "float32"), b: R.Tensor((2, 5, 4), "float32")) -> R.Tensor((2, 3, 5), "float32"):
        with R.dataflow():
            aq = q(a, 0.5, 1)
            ad = dq(aq, 0.5, 1)
            bq = q(b, 0.25, -2)
            bd = dq(bq, 0.25, -2)
            bt = R.permute_dims(bd, axes=[0, 2, 1])
            btq = q(bt, 0.25, -2)
            btd = dq(btq, 0.25, -2)
            y = R.matmul(ad, btd)
            yq = q(y, 2.0, 3)
            yd = dq(yq, 2.0, 3)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class MatmulExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 1))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_quantize1():
        T.func_attr(stub_quantize(0.25, -2))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qmatmul():
        T.func_attr(arq("qmatmul", out_shape=[2, 3, 5], transpose_a=False, transpose_b=True, zp_a=1, zp_b=-2,
                        m0=int(MM_M0[0]), rshift=int(MM_RS[0]), zp_y=3, qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=2.0, zp=3))
        T.evaluate(0)

    @R.function
    def main(a: R.Tensor((2, 3, 4), "float32"), b: R.Tensor((2, 5, 4), "float32")) -> R.Tensor((2, 3, 5), "float32"):
        cls = MatmulExpected
        with R.dataflow():
            aq = R.call_tir(cls.arq_quantize, (a,), out_ty=R.Tensor((2, 3, 4), "int8"))
            bq = R.call_tir(cls.arq_quantize1, (b,), out_ty=R.Tensor((2, 5, 4), "int8"))
            y = R.call_tir(cls.arq_qmatmul, (aq, bq), out_ty=R.Tensor((2, 3, 5), "int8"))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((2, 3, 5), "float32"))
            R.output(yd)
        return yd


def test_matmul_transposed_operand_folded():
    assert_lowers_to(relax.transform.DeadCodeElimination()(realize(MatmulBefore)), MatmulExpected)


# 3-D dense: x s=0.5 z=0; w per-channel s_w=[0.25, 0.5]; no bias; y s=1 z=0 -> M = [1/8, 1/4]
DENSE_W = np.array([[1, -2], [3, 4], [-5, 6], [7, 0]], np.int8)  # [K=4, O=2]
DENSE_SW = np.array([0.25, 0.5], np.float32)
DENSE_M0, DENSE_RS = requant(0.5 * DENSE_SW / 1.0)


@I.ir_module
class Dense3dBefore:
    @R.function
    def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 2), "float32"):
        with R.dataflow():
            xq = q(x, 0.5, 0)
            xd = dq(xq, 0.5, 0)
            w = dq_weight(DENSE_W, DENSE_SW, axis=1)
            y = R.matmul(xd, w)
            yq = q(y, 1.0, 0)
            yd = dq(yq, 1.0, 0)
            R.output(yd)
        return yd


@I.ir_module(check_well_formed=False)
class Dense3dExpected:
    @T.prim_func(private=True)
    def arq_quantize():
        T.func_attr(stub_quantize(0.5, 0))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_qdense():
        T.func_attr(arq("qdense", zp_y=0, qlo=-128, qhi=127, out_dtype="int8"))
        T.evaluate(0)

    @T.prim_func(private=True)
    def arq_dequantize():
        T.func_attr(arq("dequantize", scale=1.0, zp=0))
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 2), "float32"):
        cls = Dense3dExpected
        with R.dataflow():
            xq = R.call_tir(cls.arq_quantize, (x,), out_ty=R.Tensor((2, 3, 4), "int8"))
            x2 = R.reshape(xq, R.shape([6, 4]))
            y2 = R.call_tir(cls.arq_qdense, (x2, R.const(np.ascontiguousarray(DENSE_W.T), "int8"),
                                             R.const(np.zeros(2, np.int32), "int32"), R.const(DENSE_M0, "int32"),
                                             R.const(DENSE_RS, "int32")), out_ty=R.Tensor((6, 2), "int8"))
            y = R.reshape(y2, R.shape([2, 3, 2]))
            yd = R.call_tir(cls.arq_dequantize, (y,), out_ty=R.Tensor((2, 3, 2), "float32"))
            R.output(yd)
        return yd


def test_dense_3d_input_reshaped():
    assert_lowers_to(realize(Dense3dBefore), Dense3dExpected)


# -- a small attention block end to end -------------------------------------------------------------


def _attention(batch=1, tokens: int = 6, dim: int = 8) -> tvm.IRModule:
    rng = np.random.default_rng(5)
    w = {k: relax.const(rng.normal(0, 0.4, (dim, dim)).astype("float32")) for k in "qkvo"}
    bias = relax.const(rng.normal(0, 0.1, dim).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, tokens, dim), "float32"))
    O = relax.op  # noqa: N806, E741
    with bb.function("main", [x]):
        with bb.dataflow():
            qq = bb.emit(O.add(O.matmul(x, w["q"]), bias))
            kk = bb.emit(O.matmul(x, w["k"]))
            vv = bb.emit(O.matmul(x, w["v"]))
            kt = bb.emit(O.permute_dims(kk, [0, 2, 1]))
            s = bb.emit(O.matmul(qq, kt))
            a = bb.emit(O.nn.softmax(s, axis=-1))
            o = bb.emit(O.matmul(a, vv))
            out = bb.emit_output(O.add(O.matmul(o, w["o"]), x))
        bb.emit_func_output(out)
    return bb.get()


def test_attention_block_integer_and_bitexact():
    mod = _attention()
    rng = np.random.default_rng(1)
    cal = [rng.normal(0, 1, (1, 6, 8)).astype("float32") for _ in range(4)]
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), "int8", progress=False)
    assert res.plan.fallbacks == []
    prims = [f for f in res.int_mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    ops = [str(f.attrs["arq.op"]) for f in prims]
    assert ops.count("qmatmul") == 2 and ops.count("qdense") == 4
    assert '"transpose_b": true' in " ".join(str(f.attrs["arq.params"]) for f in prims)
    assert "permute_dims" not in res.int_mod["main"].script()  # the K^T copy is folded into the kernel
    vm = compile_host(ApplyDefaultSchedules()(res.int_mod))
    ref = ReferenceInterpreter(res.int_mod)
    for x in cal[:2]:
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref.run(x))


def test_attention_block_int16_bitexact():
    """The attention block with every activation int16 (W8A16): qmatmul reads and writes int16, bit-exact."""
    mod = _attention()
    rng = np.random.default_rng(1)
    cal = [rng.normal(0, 1, (1, 6, 8)).astype("float32") for _ in range(4)]
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID, int16=(".*",)), "int8", progress=False)
    assert res.plan.fallbacks == []
    mm = [f for f in res.int_mod.functions.values()
          if isinstance(f, tvm.tirx.PrimFunc) and str(f.attrs["arq.op"]) == "qmatmul"]  # fmt: skip
    assert len(mm) == 2 and all("int16" in str(f.params[0].ty) or "int16" in f.script() for f in mm)
    vm = compile_host(ApplyDefaultSchedules()(res.int_mod))
    ref = ReferenceInterpreter(res.int_mod)
    for x in cal[:2]:
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref.run(x))


def _matmul_module(a_shape, b_shape) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, "float32"))
    b = relax.Var("b", relax.TensorType(b_shape, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(relax.op.add(a, a), relax.op.add(b, b)))
            out = bb.emit_output(relax.op.add(y, y))
        bb.emit_func_output(out)
    return bb.get()


def test_unsupported_forms_fall_back_with_reason():
    n = tvm.tirx.Var("n", "int64")
    why = [r for _, op, r in plan_quantization(_matmul_module((n, 3, 4), (4, 5))).fallbacks if op == "relax.matmul"]
    assert why == ["lhs has a dynamic shape"]
    why = [(op, r) for _, op, r in plan_quantization(_matmul_module((4,), (4, 5))).fallbacks]
    assert why == [("relax.matmul", "lhs is a 1-D vector")]
    assert not plan_quantization(_matmul_module((2, 3, 4), (4, 5))).fallbacks


def test_vector_matmul_stays_correct_in_float():
    mod = _matmul_module((4,), (4, 5))
    rng = np.random.default_rng(2)
    cal = [(rng.normal(size=4).astype("float32"), rng.normal(size=(4, 5)).astype("float32")) for _ in range(3)]
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), "int8", progress=False)
    a, b = cal[0]
    got = compile_host(res.int_mod)["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
    want = 2 * (2 * a) @ (2 * b)
    assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want))


# -- the real model ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_ppocr_rec_integer_attention_bitexact_on_host():
    """PP-OCRv4 recognizer (attention + LayerNorm), 1x3x48x80: no float fallback, every tensor bit-exact.

    ``quantize_module`` (what ``tvm_arq.build`` quantizes with; ``model.fallbacks`` is ``plan.fallbacks``) and one
    debug compile, instead of ``build`` + a second compile, to keep the test short."""
    import tvm_arq
    from arq_bench import assets
    from arq_bench.datasets import text_recognition_set
    from tvm_arq.build import prepare
    from tvm_arq.verify import debug_build, verify_host

    mod, params = tvm_arq.from_onnx(str(assets.fetch("ppocr_rec")), shape=(1, 3, 48, 80))
    x, _ = text_recognition_set(3, seed=0, width=80)
    res = quantize_module(prepare(mod, params), [x[i][None] for i in range(2)], QuantConfig(scheme=Scheme.HYBRID),
                          "int8", progress=False)
    assert res.plan.fallbacks == []
    ops = [str(f.attrs["arq.op"]) for f in res.int_mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)
           and f.attrs is not None and "arq.op" in f.attrs]
    assert ops.count("qmatmul") == 4 and ops.count("qdense") == 9
    verify_host(debug_build(res.int_mod, "host"), x[2][None], export=False).assert_ok()
