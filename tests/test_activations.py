"""Integer activations (256-entry lookup tables) and integer-domain ops.

- every activation and op: the TVM build equals the numpy reference bit for bit (hybrid and symmetric,
  int8 and uint8 storage);
- lookup tables against float: within half an output LSB of ``f(dequantized input)``, and within that
  plus the input rounding (``L * s_x / 2``, ``L`` the activation's Lipschitz constant) of ``f(x)``;
- decomposed activation subgraphs are planned as one region with one quantization point at its output;
- data movement (resize nearest, slice, split, transpose, pad) is exact: dequantizing the integer result
  equals the float op on the dequantized input.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from tests.graphs import hard_sigmoid, hardswish_decomposed
from tvm_arq.config import QuantConfig, RangeKind, Scheme
from tvm_arq.ops.elementwise import grow_region, lut_table, saturation_interval
from tvm_arq.ops.reference import ReferenceInterpreter
from tvm_arq.ops.resize import resize_linear_table, resize_source_index
from tvm_arq.passes import AnnotateQuantization, RealizeInteger, plan_quantization
from tvm_arq.passes.analysis import Role
from tvm_arq.qmath import choose_qparams
from tvm_arq.quantize import QuantizationResult, calibrate, compile_host, quantize_module, select_qparams

RNG = np.random.default_rng(0)
SHAPE = (1, 4, 6, 6)
COMBOS = [(Scheme.HYBRID, "int8"), (Scheme.HYBRID, "uint8"), (Scheme.SYMMETRIC, "int8"), (Scheme.SYMMETRIC, "uint8")]
SLOPES = np.array([0.25, -0.3, 0.05, 1.2], np.float32)


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


#: name -> (builder on a float var, float64 reference, Lipschitz constant, expected plan name)
ACTIVATIONS = {
    "silu_sigmoid_mul": (lambda bb, x: bb.emit(R.multiply(x, bb.emit(R.sigmoid(x)))),
                         lambda x: x * _sigmoid(x), 1.1, "silu"),
    "silu_op": (lambda bb, x: bb.emit(R.nn.silu(x)), lambda x: x * _sigmoid(x), 1.1, "silu"),
    "hardswish_onnx": (lambda bb, x: hardswish_decomposed(bb, x, 0), lambda x: x * np.clip(x + 3, 0, 6) / 6, 1.5, "hardswish"),
    "hardswish_ppocr": (lambda bb, x: hardswish_decomposed(bb, x, 1), lambda x: x * np.clip(x + 3, 0, 6) / 6, 1.5, "hardswish"),
    "hardswish_hsig": (lambda bb, x: hardswish_decomposed(bb, x, 2), lambda x: x * np.clip(x / 6 + 0.5, 0, 1), 1.5,
                       "hardswish"),
    "hard_sigmoid": (lambda bb, x: hard_sigmoid(bb, x), lambda x: np.clip(0.2 * x + 0.5, 0, 1), 0.2, "hard_sigmoid"),
    "sigmoid": (lambda bb, x: bb.emit(R.sigmoid(x)), _sigmoid, 0.25, "sigmoid"),
    "tanh": (lambda bb, x: bb.emit(R.tanh(x)), np.tanh, 1.0, "tanh"),
    "leaky_relu": (lambda bb, x: bb.emit(R.nn.leakyrelu(x, 0.1)), lambda x: np.where(x >= 0, x, 0.1 * x), 1.0,
                   "leaky_relu"),
    "prelu": (lambda bb, x: bb.emit(R.nn.prelu(x, relax.const(SLOPES))),
              lambda x: np.where(x >= 0, x, SLOPES.reshape(1, -1, 1, 1).astype(np.float64) * x), 1.2, "prelu"),
    "gelu": (lambda bb, x: bb.emit(R.nn.gelu(x)), _gelu, 1.13, "gelu"),
    "gelu_tanh": (lambda bb, x: bb.emit(R.nn.gelu_tanh(x)), _gelu_tanh, 1.13, "gelu"),
}


def _module(body, shape=SHAPE, conv: bool = True) -> tvm.IRModule:
    """``x -> [conv3x3 + bias ->] body -> output`` (the same conv weights in every module)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    c = shape[1]
    rng = np.random.default_rng(7)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            if conv:
                w = relax.const((rng.normal(size=(c, c, 3, 3)) / 6).astype("float32"))
                y = bb.emit(R.nn.conv2d(x, w, padding=1))
                y = bb.emit(R.add(y, relax.const((rng.normal(size=(1, c, 1, 1)) * 0.3).astype("float32"))))
            out = bb.emit_output(body(bb, y))
        bb.emit_func_output(out)
    return bb.get()


def _data(n: int, shape=SHAPE, scale: float = 2.5, skew: float = 0.3, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape) * scale + skew).astype("float32") for _ in range(n)]


def _bitexact(mod, scheme, act_dtype, data):
    res = quantize_module(mod, data, QuantConfig(scheme=scheme), act_dtype, progress=False)
    return res, _check_bitexact(res, data)


def _check_bitexact(res, data):
    assert not res.plan.fallbacks, res.plan.fallbacks
    vm = compile_host(res.int_mod)
    ref = ReferenceInterpreter(res.int_mod)
    for x in data[:2]:
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref.run(x))
    return vm


def _bitexact_combos(mod, data, combos=COMBOS):
    """Bit-exactness under every (scheme, storage dtype), calibrating once (observers are shared)."""
    plan = plan_quantization(mod)
    observers = calibrate(mod, data, plan, QuantConfig(), progress=False)
    out = []
    for scheme, dt in combos:
        qparams = select_qparams(plan, observers, QuantConfig(scheme=scheme), dt)
        qdq = AnnotateQuantization(plan, qparams)(mod)
        res = QuantizationResult(mod, plan, qparams, qdq, RealizeInteger(plan)(qdq))
        _check_bitexact(res, data)
        out.append(res)
    return out


def _kernels(mod) -> list[str]:
    """Kernel name of every ``call_tir`` in ``main`` (one entry per call site), sorted."""
    out = []
    for b in mod["main"].body.blocks[0].bindings:
        v = b.value
        if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir":
            out.append(str(mod[v.args[0]].attrs["arq.op"]))
    return sorted(out)


# -- activations ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_bitexact_one_table(name):
    build, _f, _lip, _pname = ACTIVATIONS[name]
    for res in _bitexact_combos(_module(build), _data(3)):
        assert _kernels(res.int_mod) == ["dequantize", "qconv2d", "qlut", "quantize"]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_decomposed_activation_is_one_region(name):
    build, _f, _lip, pname = ACTIVATIONS[name]
    mod = _module(build)
    plan = plan_quantization(mod)
    names = [b.var.name for b in mod["main"].body.blocks[0].bindings][:-1]  # drop the output alias
    conv_out, act_out = names[1], names[-1]
    # intermediates of the activation are not quantization points: input, conv output, activation output
    assert plan.points == ["x", conv_out, act_out]
    lut_ops = [o for o in plan.ops.values() if o.role is Role.LUT]
    assert len(lut_ops) == len(names) - 2 and all(o.group_output == act_out for o in lut_ops)
    assert lut_ops[0].reason == f"lookup table: {pname}"
    assert (act_out in plan.producer_nonneg) == (pname in ("sigmoid", "hard_sigmoid"))
    # annotated graph: one quantize per point (x, conv output, activation output), none inside
    qp = {p: choose_qparams(-3.0, 4.0, RangeKind.ASYMMETRIC, "int8") for p in plan.points}
    qdq = AnnotateQuantization(plan, qp)(mod)
    n_q = sum(1 for b in qdq["main"].body.blocks[0].bindings
              if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.quantize")
    assert n_q == 3


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("act_dtype", ["int8", "uint8"])
def test_lut_accuracy_against_float(name, act_dtype):
    build, f, lip, _pname = ACTIVATIONS[name]
    mod = _module(build, conv=False)
    data = _data(4, scale=3.0)
    res = quantize_module(mod, data, QuantConfig(scheme=Scheme.HYBRID), act_dtype, progress=False)
    vm = compile_host(res.int_mod)
    qx, qy = res.qparams["x"], res.qparams[res.plan.points[-1]]
    for x in data:
        got = vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64)
        xd = qx.dequantize(qx.quantize(x)).astype(np.float64)
        want_dq = f(xd)
        inside = (want_dq >= qy.scale * (qy.qmin - qy.zero_point)) & (want_dq <= qy.scale * (qy.qmax - qy.zero_point))
        # the table entry is f(dequantized input) rounded to the output grid: half an output LSB
        assert np.abs(got - want_dq)[inside].max() <= 0.5 * qy.scale * (1 + 1e-5)
        # against f(x): plus the input rounding, L * s_x / 2 (inputs inside the calibrated range)
        x_in = (x >= qx.scale * (qx.qmin - qx.zero_point)) & (x <= qx.scale * (qx.qmax - qx.zero_point))
        err = np.abs(got - f(x.astype(np.float64)))[inside & x_in]
        assert err.max() <= 0.5 * qy.scale * (1 + 1e-5) + lip * 0.5 * qx.scale


def test_lut_table_rows_per_channel_and_rounding():
    mod = _module(ACTIVATIONS["prelu"][0], conv=False)
    func = mod["main"]
    v2v = relax.analysis.get_var2val(func)
    tail = func.body.blocks[0].bindings[-2].var  # the last binding is the output alias
    region = grow_region(tail, v2v, lambda v: True)
    assert region.axis == 1 and region.leaf.name == "x"
    t = lut_table(region, v2v, 0.05, 3, "int8", 0.04, -10, "int8")
    assert t.shape == (4, 256) and t.dtype == np.int8
    q = np.arange(-128, 128)
    xr = (q - 3) * np.float64(np.float32(0.05))
    for c in range(4):
        y = np.where(xr >= 0, xr, np.float64(SLOPES[c]) * xr)
        np.testing.assert_array_equal(t[c], np.clip(np.rint(y / np.float64(np.float32(0.04))) - 10, -128, 127))


def test_saturation_interval():
    def region(name):
        mod = _module(ACTIVATIONS[name][0], conv=False)
        func = mod["main"]
        v2v = relax.analysis.get_var2val(func)
        return grow_region(func.body.blocks[0].bindings[-2].var, v2v, lambda v: True)

    lo, hi = saturation_interval([region("hard_sigmoid")], -20.0, 20.0)
    assert -2.52 <= lo <= -2.49 and 2.49 <= hi <= 2.52  # exactly flat outside +-2.5
    lo, hi = saturation_interval([region("hardswish_onnx")], -20.0, 20.0)
    assert -3.02 <= lo <= -2.85 and hi > 19.9  # flat below -3 (and within half a step of the ends)
    lo, hi = saturation_interval([region("silu_sigmoid_mul")], -20.0, 20.0)
    assert -8 < lo < -4 and hi > 19.9  # within half an output step of SiLU(-20) below lo
    assert saturation_interval([region("leaky_relu")], -20.0, 20.0)[0] < -19.0


@pytest.mark.parametrize(("scheme", "clipped"), [(Scheme.HYBRID, True), (Scheme.SYMMETRIC, False)])
def test_hybrid_clips_lookup_table_inputs_where_they_saturate(scheme, clipped):
    mod = _module(ACTIVATIONS["hard_sigmoid"][0])
    res = quantize_module(mod, _data(3, scale=6.0), QuantConfig(scheme=scheme), "int8", progress=False)
    conv_out = res.plan.points[1]
    assert res.plan.lut_inputs == {conv_out: [res.plan.points[2]]}
    q = res.qparams[conv_out]
    assert (q.beta < 2.6) == clipped and ("saturate" in q.rule) == clipped


def test_silu_with_shared_sigmoid_is_table_plus_mul():
    """When sigmoid(x) has another consumer, SiLU cannot be one table: sigmoid is, and x * s is a qmul."""

    def body(bb, x):
        s = bb.emit(R.sigmoid(x))
        return bb.emit(R.add(bb.emit(R.multiply(x, s)), s))

    mod = _module(body)
    res, _ = _bitexact(mod, Scheme.HYBRID, "int8", _data(3))
    assert _kernels(res.int_mod).count("qlut") == 1 and "qmul" in _kernels(res.int_mod)


def test_skipped_activation_stays_float():
    """``skip_ops`` keeps an op in float even where a lookup table would match the annotated graph."""
    mod = _module(ACTIVATIONS["silu_sigmoid_mul"][0])
    data = _data(3)
    res = quantize_module(mod, data, QuantConfig(skip_ops=("relax.sigmoid",)), "int8", progress=False)
    assert [op for _, op, _ in res.plan.fallbacks] == ["relax.sigmoid"]
    ks = _kernels(res.int_mod)
    assert "qlut" not in ks and "qmul" in ks
    ops = {getattr(b.value.op, "name", "") for b in res.int_mod["main"].body.blocks[0].bindings
           if isinstance(b.value, relax.Call)}
    assert "relax.sigmoid" in ops
    vm = compile_host(res.int_mod)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(data[0])).numpy(),
                                  ReferenceInterpreter(res.int_mod).run(data[0]))


def test_lone_erf_stays_float():
    mod = _module(lambda bb, x: bb.emit(R.erf(x)))
    assert [op for _, op, _ in plan_quantization(mod).fallbacks] == ["relax.erf"]


# -- element-wise product (squeeze-excitation) -----------------------------------------------------


def _se(bb, x):
    c = SHAPE[1]
    g = bb.emit(R.mean(x, axis=[2, 3], keepdims=True))
    g = bb.emit(R.nn.conv2d(g, relax.const((RNG.normal(size=(c, c, 1, 1)) * 0.5).astype("float32"))))
    g = hard_sigmoid(bb, bb.emit(R.add(g, relax.const(np.full((1, c, 1, 1), 0.1, np.float32)))))
    return bb.emit(R.multiply(x, g))


def test_squeeze_excitation_mul_bitexact():
    for res in _bitexact_combos(_module(_se), _data(3)):
        assert _kernels(res.int_mod).count("qmul") == 1
        mul = [o for o in res.plan.ops.values() if o.role is Role.MUL]
        assert len(mul) == 1 and mul[0].name == res.plan.points[-1]


@pytest.mark.parametrize("act_dtype", ["int8", "uint8"])
def test_mul_matches_fake_quantization_within_one_lsb(act_dtype):
    """The integer product with one fixed-point multiplier equals quantize(dq(a) * dq(b)) up to ties."""

    def body(bb, x):
        y = bb.emit(R.nn.relu(x))
        g = bb.emit(R.sigmoid(bb.emit(R.mean(x, axis=[2, 3], keepdims=True))))
        return bb.emit(R.multiply(y, g))

    mod = _module(body, conv=False)
    data = _data(3)
    res, vm = _bitexact(mod, Scheme.HYBRID, act_dtype, data)
    qdq = compile_host(res.qdq_mod)
    qy = res.qparams[res.plan.points[-1]]
    for x in data:
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        assert np.abs(got - qdq["main"](tvm.runtime.tensor(x)).numpy()).max() <= qy.scale * (1 + 1e-5)
        want = np.maximum(x, 0) * _sigmoid(x.mean(axis=(2, 3), keepdims=True))
        assert np.abs(got - want).max() < 4 * qy.scale


# -- data movement in the integer domain -----------------------------------------------------------


def _float_op(name_or_body, y: np.ndarray) -> np.ndarray:
    """The float op alone applied to ``y`` (compiled by TVM)."""
    body = MOVES.get(name_or_body, name_or_body)
    return compile_host(_module(body, shape=y.shape, conv=False))["main"](tvm.runtime.tensor(y)).numpy()


@functools.cache
def _conv_only(scheme, act_dtype):
    data = _data(3)
    return _bitexact(_module(lambda bb, y: y), scheme, act_dtype, data)[1], data


def _conv_then(body, scheme, act_dtype):
    """Integer builds of ``x -> conv`` and ``x -> conv -> body`` (same weights, same calibration)."""
    vm_a, data = _conv_only(scheme, act_dtype)
    res_b, vm_b = _bitexact(_module(body), scheme, act_dtype, data)
    return vm_a, res_b, vm_b, data


MOVES = {
    "nearest_2x": lambda bb, x: bb.emit(R.image.resize2d(x, (12, 12), method="nearest_neighbor",
                                                          coordinate_transformation_mode="asymmetric",
                                                          rounding_method="floor")),
    "nearest_half_pixel": lambda bb, x: bb.emit(R.image.resize2d(x, (9, 7), method="nearest_neighbor",
                                                                  coordinate_transformation_mode="half_pixel",
                                                                  rounding_method="round_prefer_ceil")),
    "nearest_align": lambda bb, x: bb.emit(R.image.resize2d(x, (11, 4), method="nearest_neighbor",
                                                             coordinate_transformation_mode="align_corners",
                                                             rounding_method="round")),
    "nearest_tf": lambda bb, x: bb.emit(R.image.resize2d(x, (10, 13), method="nearest_neighbor",
                                                          coordinate_transformation_mode="tf_half_pixel_for_nn",
                                                          rounding_method="floor")),
    "transpose": lambda bb, x: bb.emit(R.permute_dims(x, [0, 2, 3, 1])),
    "slice": lambda bb, x: bb.emit(R.strided_slice(x, axes=[1, 3], begin=[1, 5], end=[4, 0], strides=[2, -2])),
    "split": lambda bb, x: bb.emit(relax.TupleGetItem(bb.emit(R.split(x, [1, 3], axis=1)), 1)),
    "pad": lambda bb, x: bb.emit(R.nn.pad(x, [0, 0, 1, 0, 2, 1, 0, 3])),
}


@pytest.mark.parametrize("name", list(MOVES))
@pytest.mark.parametrize(("scheme", "act_dtype"), [(Scheme.HYBRID, "int8"), (Scheme.SYMMETRIC, "uint8")])
def test_data_movement_is_exact(name, scheme, act_dtype):
    vm_a, res, vm_b, data = _conv_then(MOVES[name], scheme, act_dtype)
    assert len(res.plan.points) == 2  # x and the conv output: the op keeps its input's parameters
    for x in data:
        y = vm_a["main"](tvm.runtime.tensor(x)).numpy()  # dequantized conv output
        np.testing.assert_array_equal(vm_b["main"](tvm.runtime.tensor(x)).numpy(), _float_op(name, y))


@pytest.mark.parametrize("mode", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"])
@pytest.mark.parametrize("act_dtype", ["int8", "uint8"])
def test_bilinear_resize_integer_weights(mode, act_dtype):
    def body(bb, x):
        return bb.emit(R.image.resize2d(x, (11, 8), method="linear", coordinate_transformation_mode=mode))

    vm_a, res, vm_b, data = _conv_then(body, Scheme.HYBRID, act_dtype)
    assert _kernels(res.int_mod) == ["dequantize", "qconv2d", "qresize_bilinear", "quantize"]
    s = res.qparams[res.plan.points[-1]].scale
    for x in data:
        y = vm_a["main"](tvm.runtime.tensor(x)).numpy()
        err = np.abs(vm_b["main"](tvm.runtime.tensor(x)).numpy() - _float_op(body, y))
        # half an LSB of rounding plus the 12-bit weight rounding (two axes, 255 LSB spread at most)
        assert err.max() <= s * (0.5 + 2 * 255 * 2.0**-13) + 1e-6


def test_resize_tables():
    np.testing.assert_array_equal(resize_source_index(3, 6, "asymmetric", "floor"), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(resize_source_index(4, 2, "half_pixel", "round_prefer_ceil"), [1, 3])
    t = resize_linear_table(2, 4, "half_pixel", 12)
    np.testing.assert_array_equal(t[0], [0, 0, 0, 1])
    np.testing.assert_array_equal(t[1], [0, 1, 1, 1])  # clamped at the border
    np.testing.assert_array_equal(t[2], [3072, 1024, 3072, 1024])


def test_float_input_glue_moves_into_integer_domain():
    """YOLOX slices its float input before the first conv: the input is quantized once, slices are int."""

    def body(bb, x):
        parts = [bb.emit(R.strided_slice(x, axes=[2, 3], begin=[i, j], end=[6, 6], strides=[2, 2]))
                 for i in (0, 1) for j in (0, 1)]
        y = bb.emit(R.concat(parts, axis=1))
        w = relax.const((RNG.normal(size=(4, 16, 1, 1)) * 0.3).astype("float32"))
        return bb.emit(R.nn.conv2d(y, w))

    mod = _module(body, conv=False)
    res, _ = _bitexact(mod, Scheme.HYBRID, "int8", _data(3))
    assert res.plan.points[0] == "x" and len(res.plan.points) == 3  # x, concat, conv
    assert _kernels(res.int_mod).count("quantize") == 1


# -- softmax -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "act_dtype"), COMBOS)
def test_integer_softmax(scheme, act_dtype):
    def body(bb, x):
        f = bb.emit(R.reshape(bb.emit(R.mean(x, axis=[2, 3], keepdims=True)), (1, SHAPE[1])))
        d = bb.emit(R.matmul(f, relax.const((RNG.normal(size=(SHAPE[1], 10)) * 2).astype("float32"))))
        return bb.emit(R.nn.softmax(d, axis=-1))

    data = _data(4)
    res, vm = _bitexact(_module(body), scheme, act_dtype, data)
    assert "qsoftmax" in _kernels(res.int_mod)
    assert res.plan.points[-1] in res.plan.producer_nonneg
    qy = res.qparams[res.plan.points[-1]]
    # fake quantization computes quantize(softmax(dq(logits))) in float: equal up to rounding ties
    qdq = compile_host(res.qdq_mod)
    for x in data:
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        assert np.abs(got - qdq["main"](tvm.runtime.tensor(x)).numpy()).max() <= qy.scale * (1 + 1e-5)


# -- real models (slow: run in CI) ---------------------------------------------------------------------


@pytest.mark.slow
def test_ppocr_cls_is_integer_from_input_to_output():
    """PP-OCR direction classifier: hardswish (Add->Clip->Mul->Div), hard-sigmoid SE blocks and the final
    softmax all run as integer kernels; no float op between the input quantize and the output dequantize."""
    import tvm_arq
    from arq_bench import assets, datasets

    mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
    x, y = datasets.text_direction_set(96, seed=1)
    model = tvm_arq.build(mod, params, "host", calibration=[x[i:i + 1] for i in range(32)], scheme="hybrid",
                          progress=False)
    assert model.fallbacks == []
    ks = _kernels(model.ir)
    assert ks.count("quantize") == 1 and ks.count("dequantize") == 1 and ks.count("qsoftmax") == 1
    assert ks.count("qmul") == 9 and ks.count("qlut") == 27  # SE products; 18 hardswish + 9 hard-sigmoid
    pred = np.array([model.run(x[i:i + 1]).argmax() for i in range(32, 96)])
    assert np.mean(pred == y[32:]) >= 0.93
    np.testing.assert_array_equal(model.run(x[40:41]), model.reference(x[40:41]))


@pytest.mark.slow
def test_yolox_tiny_is_integer_from_input_to_output():
    """YOLOX-Tiny (SiLU as sigmoid*x, input slicing, nearest upsampling, sigmoid heads): fully integer,
    bit-exact against the reference, close to fp32 (run at 160x160 to keep the test short)."""
    import tvm_arq
    from arq_bench import assets, datasets

    size = 160
    mod, params = tvm_arq.from_onnx(assets.fetch("yolox_tiny"), shape=(1, 3, size, size))
    crops = datasets.photo_crops(6, size, split="calib")
    x = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2).astype("float32"))  # BGR 0..255 NCHW
    model = tvm_arq.build(mod, params, "host", calibration=[x[i:i + 1] for i in range(4)], scheme="hybrid",
                          progress=False)
    assert model.fallbacks == []
    ks = _kernels(model.ir)
    assert ks.count("quantize") == 1 and ks.count("dequantize") == 1
    assert ks.count("qlut") == 80 and ks.count("qresize_nearest") == 2  # 74 SiLU + 6 head sigmoids
    fp32 = tvm_arq.build(mod, params, "host", scheme="float")
    got = model.run(x[4:5])
    np.testing.assert_array_equal(got, model.reference(x[4:5]))
    want = fp32.run(x[4:5])
    assert np.abs(got - want).mean() < 0.15 * np.abs(want).mean()
