"""Pre-quantized ONNX models (QDQ and onnxruntime's QOperator format) compiled with the model's own parameters.

The small models are built here with ``onnx.helper`` and quantized with onnxruntime's ``quantize_static``
(offline, a few random calibration samples). The reference for "the model's arithmetic" is onnxruntime with
graph optimizations disabled: it then runs the QDQ graph as ONNX defines it (dequantize -> float op ->
quantize); with its default optimizations it fuses integer kernels whose x86 AVX2 u8 x s8 path saturates
(documented in results/qdq.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvm_arq
from tvm_arq.frontend import QDQError, model_qparams
from tvm_arq.verify import debug_build, verify_host

ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")

SHAPE = (1, 4, 12, 12)


def _float_model(tiny: bool = False) -> onnx.ModelProto:
    """Conv+ReLU, depthwise conv, SiLU (x * sigmoid x), residual Add, MaxPool, Concat, GAP, Flatten, Gemm
    (``tiny``: Conv+ReLU, GAP, Flatten, Gemm)."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int, s: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, s, shape).astype(np.float32), name)

    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        mk("Relu", ["c1"], ["r1"], name="relu1"),
        mk("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw2"),
        mk("Sigmoid", ["c2"], ["s2"], name="sig2"),
        mk("Mul", ["c2", "s2"], ["m2"], name="silu2"),
        mk("Add", ["m2", "r1"], ["a3"], name="add3"),
        mk("MaxPool", ["a3"], ["p3"], kernel_shape=[2, 2], strides=[2, 2], name="pool3"),
        mk("Conv", ["p3", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1], name="conv4"),
        mk("Concat", ["c4", "p3"], ["k4"], axis=1, name="cat4"),
        mk("GlobalAveragePool", ["k4"], ["g5"], name="gap5"),
        mk("Flatten", ["g5"], ["f5"], name="flat5"),
        mk("Gemm", ["f5", "w6", "b6"], ["y"], transB=1, name="fc6"),
    ]
    inits = [w("w1", 8, 4, 3, 3), w("b1", 8, s=0.1), w("w2", 8, 1, 3, 3), w("b2", 8, s=0.1),
             w("w4", 8, 8, 3, 3, s=0.2), w("b4", 8, s=0.1), w("w6", 5, 16, s=0.3), w("b6", 5, s=0.1)]
    if tiny:
        nodes = [*nodes[:2], mk("GlobalAveragePool", ["r1"], ["g5"], name="gap5"), *nodes[-2:]]
        inits = [*inits[:2], w("w6", 5, 8, s=0.3), inits[-1]]
    g = helper.make_graph(nodes, "qdq_test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _samples(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, SHAPE).astype(np.float32) for _ in range(n)]


def quantize_file(src: Path, dst: Path, act: str = "uint8", fmt: str = "QDQ") -> Path:
    """``src`` quantized by onnxruntime ``quantize_static`` (per-channel int8 weights, 4 samples) into ``dst``."""

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(_samples(4, 1))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    quant.quantize_static(str(src), str(dst), Reader(), quant_format=getattr(quant.QuantFormat, fmt),
                          per_channel=True, weight_type=quant.QuantType.QInt8,
                          activation_type=quant.QuantType.QUInt8 if act == "uint8" else quant.QuantType.QInt8)
    return dst


def quantized(tmp: Path, act: str = "uint8", fmt: str = "QDQ", tiny: bool = False) -> Path:
    """The test model quantized by onnxruntime ``quantize_static`` (per-channel int8 weights)."""
    src, dst = tmp / f"float{'_tiny' * tiny}.onnx", tmp / f"q_{act}_{fmt}{'_tiny' * tiny}.onnx"
    onnx.save(_float_model(tiny), src)
    return quantize_file(src, dst, act, fmt)


def onnx_semantics(path: Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime without graph optimizations: the QDQ graph evaluated as ONNX defines it."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("qdq")
    return {"uint8": quantized(tmp, "uint8"), "int8": quantized(tmp, "int8"),
            "qoperator": quantized(tmp, "uint8", "QOperator"), "tiny": quantized(tmp, "uint8", tiny=True)}


def integer_program(path: Path):
    """The integer module of a pre-quantized model and its numpy reference interpreter (nothing compiled)."""
    from tvm_arq.build import prepare
    from tvm_arq.ops.reference import ReferenceInterpreter
    from tvm_arq.quantize import quantize_fixed

    mod, params = tvm_arq.from_onnx(path)
    res = quantize_fixed(prepare(mod, params), model_qparams(mod), tvm_arq.QuantConfig(), "int8")
    return res, ReferenceInterpreter(res.int_mod)


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_qdq_build_matches_model_arithmetic(models, act):
    """No calibration: the model's scales and integer weights; output equal to the QDQ graph's within 1 LSB.

    Runs tvm_arq's numpy reference interpreter (no compilation: test time); the compiled host program is checked
    bit-exact against it, every tensor, in :func:`test_cli_build_compare_and_verify_without_calibration`.
    """
    path = models[act]
    table = model_qparams(tvm_arq.from_onnx(path)[0])
    assert table is not None and table.source == "QDQ" and len(table.weights) == 4
    res, ref = integer_program(path)  # the numpy reference: compiled programs are bit-exact with it (see below)
    qparams, run = res.qparams, ref.run
    assert not res.plan.fallbacks
    assert qparams and all(q.rule.startswith("from model (QDQ)") for q in qparams.values())
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out_scale = float(inits[next(n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"
                                 and n.output[0] == "y")])
    diffs = []
    for x in _samples(6, 2):
        diffs.append(np.abs(np.asarray(run(x)) - onnx_semantics(path, x)).reshape(-1) / out_scale)
    d = np.concatenate(diffs)
    assert d.max() <= 1.0 + 1e-3
    assert (d < 1e-3).mean() >= 0.9  # most outputs identical (the rest: fixed-point vs float requantization)


def test_qoperator_equals_qdq(models):
    """QOperator (QLinearConv, QLinearAdd, QLinearMul, QLinearSigmoid, QLinearConcat, QGemm ...) gives the same
    integer program as the QDQ form of the same quantization."""
    assert model_qparams(tvm_arq.from_onnx(models["qoperator"])[0]).source == "QOperator"
    (_, a), (_, b) = integer_program(models["qoperator"]), integer_program(models["uint8"])
    for x in _samples(3, 4):
        np.testing.assert_array_equal(np.asarray(a.run(x)), np.asarray(b.run(x)))


def test_requantize_with_calibration(models):
    """With calibration data the model is re-quantized our way (rules are not 'from model')."""
    mod, params = tvm_arq.from_onnx(models["tiny"])
    qm = tvm_arq.build(mod, params, "host", calibration=_samples(3, 5), scheme="symmetric", progress=False)
    assert not any(q.rule.startswith("from model") for q in qm.qparams.values())


def _edit(path: Path, fn) -> onnx.ModelProto:
    m = onnx.load(path)
    fn(m)
    return m


def _init(m: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in m.graph.initializer if t.name == name)


def _set(m: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    t = _init(m, name)
    t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))


def _weight_dq(m: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w1_quantized")


def _zp_300(m: onnx.ModelProto) -> None:
    t = _init(m, "r1_zero_point")
    t.ClearField("raw_data")
    t.int32_data[:] = [300]


def _dynamic_weight(m: onnx.ModelProto) -> None:
    m.graph.input.append(helper.make_tensor_value_info("wq", TensorProto.INT8, [8, 4, 3, 3]))
    _weight_dq(m).input[0] = "wq"


def _int16(m: onnx.ModelProto) -> None:
    t = _init(m, "r1_zero_point")
    t.CopyFrom(numpy_helper.from_array(np.array(0, np.int16), "r1_zero_point"))


@pytest.mark.parametrize("case, edit, match", [
    ("scale 0", lambda m: _set(m, "r1_scale", np.array(0.0)), r"r1_\w+Linear.*finite and > 0.*\[0.0\]"),
    ("scale < 0", lambda m: _set(m, "r1_scale", np.array(-0.1)), r"finite and > 0"),
    ("scale NaN", lambda m: _set(m, "w1_scale", np.full(8, np.nan)), r"w1_DequantizeLinear.*finite and > 0"),
    ("zp range", _zp_300, r"r1_\w+Linear.*zero point \[300\] is out of range for uint8"),
    ("axis", lambda m: _weight_dq(m).attribute[0].CopyFrom(helper.make_attribute("axis", 7)),
     r"w1_DequantizeLinear.*axis 7 is out of range for a tensor of rank 4"),
    ("dynamic weight", _dynamic_weight, r"w1_DequantizeLinear.*weight of Conv node 'conv1'.*non-constant"),
    ("int16", _int16, r"r1_\w+Linear.*int16 quantization is not supported; supported: 8-bit"),
])
def test_bad_qdq_inputs_name_the_node(models, case, edit, match):
    m = _edit(models["uint8"], edit)
    with pytest.raises(QDQError, match=match):
        tvm_arq.from_onnx(m)


def _per_axis_r1(m: onnx.ModelProto) -> None:
    _set(m, "r1_scale", np.full(8, 0.05))
    _set(m, "r1_zero_point", np.zeros(8))
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] == "r1_scale":
            n.attribute.append(helper.make_attribute("axis", 1))


@pytest.mark.parametrize("case, edit, match", [
    ("per-axis activation", _per_axis_r1,
     r"r1_QuantizeLinear.*per-axis activation quantization is supported only where.*GlobalAveragePool node 'gap5'"),
    ("weight zp", lambda m: _set(m, "w1_zero_point", np.full(8, 3)), r"w1_DequantizeLinear.*asymmetric"),
])
def test_valid_but_unsupported_quantization_needs_calibration(models, case, edit, match):
    """Valid quantization the integer kernels cannot take as it is (NNCF's per-channel activations, asymmetric
    weights): the import succeeds (the float graph is exact), building with the model's own parameters is a
    clear error naming the node, and with calibration data the model is re-quantized our way."""
    mod, params = tvm_arq.from_onnx(_edit(models["tiny"], edit))
    with pytest.raises(QDQError, match=match + r".*Give calibration data"):
        tvm_arq.build(mod, params, "host", progress=False)
    if case == "per-axis activation":
        qm = tvm_arq.build(mod, params, "host", calibration=_samples(3, 5), scheme="symmetric", progress=False)
        assert not any(q.rule.startswith("from model") for q in qm.qparams.values())


def test_per_channel_activations_before_depthwise_fold_into_weights(tmp_path):
    """NNCF's per-channel activation quantization (conv -> ReLU -> per-channel Q/DQ -> depthwise conv) folds
    into the weight scales on both sides: it builds without calibration and agrees with onnxruntime."""
    rng = np.random.default_rng(3)
    mk = helper.make_node

    def w(name, *shape, s=0.3):
        return numpy_helper.from_array(rng.normal(0, s, shape).astype(np.float32), name)

    nodes = [mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             mk("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
             mk("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw2"),
             mk("Relu", ["c2"], ["r2"], name="relu2"),
             mk("GlobalAveragePool", ["r2"], ["g"], name="gap"), mk("Flatten", ["g"], ["f"], name="flat"),
             mk("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")]
    inits = [w("w1", 8, 4, 3, 3), w("b1", 8, s=0.1), w("w2", 8, 1, 3, 3), w("b2", 8, s=0.1), w("w3", 5, 8),
             w("b3", 5, s=0.1), numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    g = helper.make_graph(nodes, "pc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), src)
    m = onnx.load(quantize_file(src, dst))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1")
    s0 = float(numpy_helper.to_array(_init(m, q.input[1])))
    _set(m, q.input[1], (s0 * rng.uniform(0.5, 1.0, 8)).astype(np.float32))  # per channel, Q and DQ share it
    _set(m, q.input[2], np.zeros(8))
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] == q.input[1]:
            n.attribute.append(helper.make_attribute("axis", 1))
    mod, params = tvm_arq.from_onnx(m)
    qm = tvm_arq.build(mod, params, "host", progress=False)
    out_scale = float(numpy_helper.to_array(_init(m, next(n for n in m.graph.node if n.op_type == "DequantizeLinear"
                                                          and n.output[0] == "y").input[1])))
    for x in _samples(6, 9):
        d = np.abs(np.asarray(qm.run(x)) - onnx_semantics(m, x)) / out_scale
        assert d.max() <= 1.0 + 1e-3, d.max()
    assert all(q.rule.startswith("from model") for q in qm.qparams.values())


def test_blocked_quantization_is_refused(models):
    def blocked(m: onnx.ModelProto) -> None:
        _weight_dq(m).attribute.append(helper.make_attribute("block_size", 2))

    with pytest.raises(QDQError, match=r"w1_DequantizeLinear.*blocked quantization"):
        tvm_arq.from_onnx(_edit(models["uint8"], blocked))


def test_cli_build_compare_and_verify_without_calibration(models, tmp_path, capsys):
    from tvm_arq import cli

    out = tmp_path / "m.so"
    assert cli.main(["build", str(models["tiny"]), "-o", str(out), "--target", "aarch64",
                     "--qparams", str(tmp_path / "q.json")]) == 0
    assert out.is_file()
    rules = [v["rule"] for v in json.loads((tmp_path / "q.json").read_text())]
    assert rules and all(r.startswith("from model (QDQ)") for r in rules)
    np.save(tmp_path / "x.npy", np.concatenate(_samples(4, 6)))
    assert cli.main(["compare", str(models["tiny"]), "--data", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "model-qdq" in text and "onnxruntime" in text
    # every integer tensor of the host program bit-exact against the reference (tvm_arq.verify)
    host = tvm_arq.build(*tvm_arq.from_onnx(models["tiny"]), "host", progress=False)
    verify_host(debug_build(host), _samples(1, 3)[0], export=False).assert_ok()


def test_fake_quantized_weights_are_quantized_at_import(models):
    """PyTorch / NNCF style ``QuantizeLinear(float weight) -> DequantizeLinear``: the same integer weights."""

    def fake_quant(m: onnx.ModelProto) -> None:
        dq = _weight_dq(m)
        q = numpy_helper.to_array(_init(m, "w1_quantized")).astype(np.float32)
        s = numpy_helper.to_array(_init(m, "w1_scale")).reshape(-1, 1, 1, 1)
        m.graph.initializer.append(numpy_helper.from_array(q * s, "w1_float"))
        m.graph.node.insert(0, helper.make_node("QuantizeLinear", ["w1_float", "w1_scale", "w1_zero_point"],
                                                ["w1_fq"], axis=0, name="w1_QuantizeLinear"))
        dq.input[0] = "w1_fq"

    (_, a), (_, b) = integer_program(_edit(models["uint8"], fake_quant)), integer_program(models["uint8"])
    x = _samples(1, 7)[0]
    np.testing.assert_array_equal(np.asarray(a.run(x)), np.asarray(b.run(x)))
