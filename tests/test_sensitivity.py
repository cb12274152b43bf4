"""Per-layer control: ONNX node names through from_onnx, QuantConfig(exclude=...), sensitivity ranking, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import tvm_arq
from tvm_arq.frontend import prepare_module
from tvm_arq.frontend.naming import layer_of
from tvm_arq.ops.irutil import bindings_of
from tvm_arq.ops.reference import ReferenceInterpreter
from tvm_arq.quantize import compile_host, quantize_module


def _bad_layer_model() -> onnx.ModelProto:
    """conv1 -> relu1 -> bad_conv -> relu2 -> conv3, where bad_conv's weights are deliberately bad for int8.

    conv1's channel 0 is always 0 after its ReLU (zero weights, bias -1); bad_conv reads that channel with a
    weight of 50 in every output channel. The weight is harmless in float, but per-channel int8 weight scales
    become 50/127, which rounds bad_conv's real weights (~0.1) to 0 or +-0.39.
    """
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    w1[0] = 0.0
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    b1[0] = -1.0
    w2 = rng.normal(0, 0.1, (8, 8, 1, 1)).astype(np.float32)
    w2[:, 0] = 50.0
    b2 = np.zeros(8, np.float32)
    w3 = rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)
    b3 = np.zeros(4, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["t1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t1"], ["t2"], name="relu1"),
        helper.make_node("Conv", ["t2", "w2", "b2"], ["t3"], name="bad_conv"),
        helper.make_node("Relu", ["t3"], ["t4"], name="relu2"),
        helper.make_node("Conv", ["t4", "w3", "b3"], ["y"], name="conv3"),
    ]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def bad_layer_case(n_held_out: int):
    """The bad-layer model imported, 16 calibration samples and ``n_held_out`` held-out samples."""
    mod, params = tvm_arq.from_onnx(_bad_layer_model())
    rng = np.random.default_rng(1)
    cal = [rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(16)]
    held_out = [rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(n_held_out)]
    return mod, params, cal, held_out


@pytest.fixture(scope="module")
def model():
    return bad_layer_case(8)


def _error(res, refs, samples) -> float:
    """Relative squared output error of the integer module (numpy reference) against the fp32 outputs."""
    interp = ReferenceInterpreter(res.int_mod)
    num = den = 0.0
    for x, ref in zip(samples, refs, strict=True):
        out = np.asarray(interp.run(x), np.float64)
        num += float(np.sum((out - ref) ** 2))
        den += float(np.sum(ref ** 2))
    return num / den


def test_onnx_node_names_survive_import(model):
    mod, _, _, _ = model
    names = [b.name for b in bindings_of(mod["main"])]
    assert {layer_of(n) for n in names} == {"conv1", "relu1", "bad_conv", "relu2", "conv3"}
    # the output of each node carries its name exactly; the conv2d before the bias add is "<node>::conv2d"
    assert {"conv1", "relu1", "bad_conv", "relu2", "conv3", "conv1::conv2d"} <= set(names)


def test_unknown_exclude_names_close_matches(model):
    mod, params, cal, _ = model
    with pytest.raises(ValueError, match=r"no layer is named or matches 'bad_con'.*closest layer names: 'bad_conv'"):
        quantize_module(prepare_module(mod, params), cal[:2], tvm_arq.QuantConfig(exclude=("bad_con",)), "int8",
                        progress=False)
    with pytest.raises(ValueError, match="exclude entries"):
        tvm_arq.QuantConfig(exclude=("",))
    assert tvm_arq.QuantConfig(exclude="conv1").exclude == ("conv1",)  # one name, not its characters


def test_exclude_by_name_and_regex_lists_fallbacks(model):
    mod, params, cal, _ = model
    fmod = prepare_module(mod, params)
    res = quantize_module(fmod, cal, tvm_arq.QuantConfig(exclude=("bad_conv", "conv[3]")), "int8", progress=False)
    excluded = [(n, r) for n, _op, r in res.plan.fallbacks]
    assert excluded == [("bad_conv", "excluded by the user"), ("conv3", "excluded by the user")]
    assert "relu1" in res.plan.points  # conv1 (+ relu1) is still quantized


#: a tensor-local calibrator: each variant's error then equals that of quantize_module(..., exclude=...) exactly
#: (the output calibrator judges every variant's points at the fully quantized plan's consumers)
MINMAX = tvm_arq.QuantConfig(calibrator="minmax")


@pytest.fixture(scope="module")
def exact_ranking(model):
    mod, params, cal, _ = model
    return tvm_arq.sensitivity(mod, params, cal, samples=8, config=MINMAX)


def test_sensitivity_ranks_bad_layer_and_excluding_it_lowers_error(model, exact_ranking):
    mod, params, cal, held_out = model
    res = exact_ranking
    assert res.config["evaluator"] == "integer"  # auto: a small model is ranked exactly
    names = [e.name for e in res.layers]
    assert sorted(names) == ["bad_conv", "conv1", "conv3"]
    top = res.layers[0]
    assert top.name == "bad_conv", res.table()
    assert max(res.layers, key=lambda e: e.alone_error).name == "bad_conv"
    assert top.gain > 0 and top.left_out_error < res.full_error

    fmod = prepare_module(mod, params)
    full = quantize_module(fmod, cal, MINMAX, "int8", progress=False)
    kept = quantize_module(fmod, cal, tvm_arq.QuantConfig(calibrator="minmax", exclude=top.exclude), "int8",
                           progress=False)
    vm = compile_host(fmod)
    ref_cal = [vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64) for x in cal[:8]]
    ref_held = [vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64) for x in held_out]
    # one calibration pass serves every variant: the ranked errors are those of the real quantizer's output
    assert _error(full, ref_cal, cal[:8]) == pytest.approx(res.full_error, rel=1e-9)
    assert _error(kept, ref_cal, cal[:8]) == pytest.approx(top.left_out_error, rel=1e-9)
    # ... and on samples it never saw, excluding the top-ranked layer lowers the output error
    assert _error(kept, ref_held, held_out) < 0.5 * _error(full, ref_held, held_out)

    d = res.to_dict()
    assert d["layers"][0]["name"] == "bad_conv" and d["layers"][0]["exclude"] == ["bad_conv", "relu2"]
    assert "bad_conv" in res.table()


def test_cli_sensitivity(model, tmp_path, capsys):
    from tvm_arq.cli import main

    _, _, cal, _ = model
    onnx_path = tmp_path / "bad.onnx"
    onnx.save(_bad_layer_model(), onnx_path)
    npy = tmp_path / "cal.npy"
    np.save(npy, np.concatenate(cal[:8]))
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(["sensitivity", str(onnx_path), "--calibration", str(npy), "--samples", "4", "--json", str(out_json),
               "--png", str(out_png)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "bad_conv" in text and "--exclude 'bad_conv' --exclude 'relu2'" in text
    assert json.loads(out_json.read_text())["layers"][0]["name"] == "bad_conv"
    pytest.importorskip("matplotlib")
    assert out_png.stat().st_size > 0

    rc = main(["sensitivity", str(onnx_path), "--calibration", str(npy), "--exclude", "conv_3"])
    err = capsys.readouterr().err
    assert rc == 1 and "'conv3'" in err


def test_fake_quantized_ranking_agrees_with_the_integer_one(model, exact_ranking):
    """The switchable fake-quantized evaluator (one compiled module for every variant) ranks like the exact
    integer one and its errors are close to the integer programs' errors."""
    mod, params, cal, _ = model
    exact = exact_ranking
    fake = tvm_arq.sensitivity(mod, params, cal, samples=8, evaluator="fake", config=MINMAX)
    assert exact.config["evaluator"] == "integer" and fake.config["evaluator"] == "fake"
    assert fake.layers[0].name == exact.layers[0].name == "bad_conv"
    assert fake.full_error == pytest.approx(exact.full_error, rel=0.05)
    by_name = {e.name: e for e in exact.layers}
    for e in fake.layers:
        assert e.alone_error == pytest.approx(by_name[e.name].alone_error, rel=0.2, abs=1e-3)
        assert e.left_out_error == pytest.approx(by_name[e.name].left_out_error, rel=0.2, abs=1e-3)


def test_switches_turn_fake_quantization_on_and_off(model):
    """AnnotateQuantization with switches: all off is the float model, all on is the fake-quantized module."""
    from tvm_arq.passes import AnnotateQuantization
    from tvm_arq.passes.annotate import Switches
    from tvm_arq.sensitivity import layer_units

    mod, params, cal, _ = model
    fmod = prepare_module(mod, params)
    res = quantize_module(fmod, cal, tvm_arq.QuantConfig(bias_correction=False), "int8", progress=False)
    units = layer_units(res.plan)
    sw = Switches(points={p: len(units) + i for i, p in enumerate(res.plan.points)},
                  weights={lay: i for i, (_, lays, _) in enumerate(units) for lay in lays})
    switched = compile_host(AnnotateQuantization(res.plan, res.qparams, switches=sw)(res.float_mod))
    plain, fp32 = compile_host(res.qdq_mod), compile_host(fmod)
    x = tvm.runtime.tensor(cal[0])
    for value, want in ((0.0, fp32["main"](x)), (1.0, plain["main"](x))):
        got = switched["main"](x, tvm.runtime.tensor(np.full(sw.size, value, np.float32)))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
