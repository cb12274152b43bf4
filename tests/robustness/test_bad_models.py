"""Bad models: every one gives a clear error (FrontendError, TypeError, ValueError naming the problem) or
a documented behaviour that is tested here -- never a crash deep inside TVM."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax, tirx
from tvm.relax import op as R

import tvm_arq
from tests.robustness._models import (
    assert_bitexact,
    build,
    conv_relu_onnx,
    init,
    onnx_model,
    outputs,
    two_in_two_out_onnx,
    vi,
)
from tests.robustness._tally import tried
from tvm_arq.frontend import FrontendError, from_onnx

RNG = np.random.default_rng(0)


def _cal(shape: tuple[int, ...], n: int = 4, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype("float32") for _ in range(n)]


# ------------------------------------------------------------------------------------------ damaged files


def test_every_truncation_of_a_model_is_a_frontend_error() -> None:
    """Cut the serialized model at every byte: each prefix is rejected with FrontendError, nothing else."""
    data = conv_relu_onnx().SerializeToString()
    for cut in range(len(data)):
        with pytest.raises(FrontendError):
            from_onnx(data[:cut])
    tried(len(data))
    mod, params = from_onnx(data)  # the whole file still imports
    assert set(params) and mod["main"]


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_file_on_disk(tmp_path: Path, fraction: float) -> None:
    data = conv_relu_onnx().SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(FrontendError, match="model.onnx"):
        from_onnx(path)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/data.pkl", b"\x80\x04K\x01.")
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 3), "float32"))
    return buf.getvalue()


NOT_ONNX = {
    "text": b"this is not a neural network\n",
    "json": json.dumps({"graph": {"node": []}}).encode(),
    "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "zip (torch.save)": _zip_bytes(),
    "npy": _npy_bytes(),
    "zeros": bytes(256),
    "onnx text form": onnx.printer.to_text(conv_relu_onnx()).encode(),
    **{f"random {n} bytes": RNG.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 7, 100, 5000)},
}


@pytest.mark.parametrize("kind", list(NOT_ONNX))
def test_non_onnx_content_is_a_frontend_error(tmp_path: Path, kind: str) -> None:
    with pytest.raises(FrontendError, match="ONNX model"):
        from_onnx(NOT_ONNX[kind])
    path = tmp_path / "model.onnx"
    path.write_bytes(NOT_ONNX[kind])
    with pytest.raises(FrontendError, match="model.onnx"):
        from_onnx(path)
    tried(2)


def test_empty_missing_and_directory_paths(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(FrontendError, match="is empty"):
        from_onnx(tmp_path / "empty.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path)
    with pytest.raises(TypeError, match="path, bytes or onnx.ModelProto"):
        from_onnx(12345)  # type: ignore[arg-type]
    tried(4)


def test_structurally_broken_graphs() -> None:
    good = conv_relu_onnx()
    cases: dict[str, onnx.ModelProto] = {}
    m = onnx.ModelProto()
    m.CopyFrom(good)
    del m.graph.initializer[:]  # Conv reads an undefined weight
    cases["undefined tensor"] = m
    m = onnx.ModelProto()
    m.CopyFrom(good)
    m.graph.output[0].name = "nowhere"
    cases["output never produced"] = m
    m = onnx.ModelProto()
    m.CopyFrom(good)
    del m.graph.node[:]
    cases["no nodes"] = m
    m = onnx.ModelProto()
    m.CopyFrom(good)
    m.ir_version = 0
    cases["no IR version"] = m
    for model in cases.values():
        with pytest.raises(FrontendError, match="not a valid ONNX model"):
            from_onnx(model)
    tried(len(cases))


# ------------------------------------------------------------------------------------------ opsets and ops


@pytest.mark.parametrize("opset", [0, onnx.defs.onnx_opset_version() + 1, 99])
def test_unsupported_opset_is_rejected(opset: int) -> None:
    """A model from a future (or impossible) opset is never imported with guessed semantics."""
    with pytest.raises(FrontendError, match=f"opset {opset} is not supported"):
        from_onnx(conv_relu_onnx(opset=opset))


def test_missing_default_opset_and_future_ir_version_are_rejected() -> None:
    m = conv_relu_onnx()
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(FrontendError, match="declares no ONNX opset"):
        from_onnx(m)
    m = conv_relu_onnx()
    m.ir_version = onnx.IR_VERSION + 1
    with pytest.raises(FrontendError, match="IR version"):
        from_onnx(m)
    tried(2)


@pytest.mark.parametrize("opset", [7, 11, 13, 17, onnx.defs.onnx_opset_version()])
def test_supported_opsets_import_and_quantize(opset: int) -> None:
    mod, params = from_onnx(conv_relu_onnx(opset=opset))
    model = build(mod, _cal((1, 3, 8, 8)), params)
    assert_bitexact(model, _cal((1, 3, 8, 8), 1, seed=9)[0])


UNSUPPORTED_OPS = {
    "LSTM": onnx_model([helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=2)],
                       [vi("x", [1, 1, 3])], [vi("y", None)],
                       [init("W", RNG.normal(size=(1, 8, 3))), init("R", RNG.normal(size=(1, 8, 2)))]),
    "com.example.Foo": onnx_model([helper.make_node("Foo", ["x"], ["y"], domain="com.example")],
                                  [vi("x", [1, 3])], [vi("y", [1, 3])]),
    "StringNormalizer": onnx_model([helper.make_node("StringNormalizer", ["x"], ["y"])],
                                   [vi("x", [2], TensorProto.STRING)], [vi("y", None, TensorProto.STRING)]),
}


@pytest.mark.parametrize("op", list(UNSUPPORTED_OPS))
def test_unsupported_op_is_named(op: str) -> None:
    model = UNSUPPORTED_OPS[op]
    if "." in op:
        model.opset_import.append(helper.make_opsetid(op.rsplit(".", 1)[0], 1))
    with pytest.raises(FrontendError, match=f"does not support: {op}"):
        from_onnx(model)


def test_failure_inside_tvm_importer_names_the_node() -> None:
    """Weights that contradict the input (5 vs 3 channels): TVM's converter fails, we name the node."""
    bad = onnx_model([helper.make_node("Conv", ["x", "W"], ["y"], name="stem_conv")],
                     [vi("x", [1, 3, 4, 4])], [vi("y", None)], [init("W", np.ones((2, 5, 3, 3)))])
    with pytest.raises(FrontendError, match="while converting Conv node 'stem_conv'"):
        from_onnx(bad)


# ------------------------------------------------------------------------------------------ shapes


def _dynamic_conv(dims: list[int | str]) -> onnx.ModelProto:
    return onnx_model([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], [vi("x", dims)],
                      [vi("y", None)], [init("W", RNG.normal(size=(4, 3, 3, 3)))])


@pytest.mark.parametrize("dims", [["N", 3, "H", "W"], [1, 3, "H", 8], [1, "C", 8, 8], None])
def test_dynamic_shape_without_shape_argument(dims) -> None:
    with pytest.raises(FrontendError, match="pass shape="):
        from_onnx(_dynamic_conv(dims))


def test_dynamic_shape_fixed_by_shape_argument_quantizes() -> None:
    mod, params = from_onnx(_dynamic_conv(["N", 3, "H", "W"]), shape=(1, 3, 6, 6))
    model = build(mod, _cal((1, 3, 6, 6)), params)
    assert_bitexact(model, _cal((1, 3, 6, 6), 1, seed=5)[0])


def test_dynamic_batch_only_defaults_to_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tvm_arq.frontend"):
        mod, _ = from_onnx(_dynamic_conv(["batch", 3, 8, 8]))
    assert "batch size 1" in caplog.text
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [1, 3, 8, 8]


def test_bad_shape_arguments() -> None:
    model = _dynamic_conv(["N", 3, "H", "W"])
    for shape, msg in [((1, 3, 8), "rank 4"), ((1, 3, 0, 8), "non-positive"), ({"y": (1, 3, 8, 8)}, "unknown input")]:
        with pytest.raises(FrontendError, match=msg):
            from_onnx(model, shape=shape)
    with pytest.raises(FrontendError, match="pass shape= as a dict"):
        from_onnx(two_in_two_out_onnx(), shape=(1, 3, 6, 6))
    tried(4)


def _symbolic_relax_conv() -> tvm.IRModule:
    n = tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, 3, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(RNG.normal(size=(4, 3, 3, 3)).astype("float32")), padding=1))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def test_symbolic_relax_module_is_named_not_nothing_to_quantize() -> None:
    with pytest.raises(ValueError, match="input 'x' has a dynamic shape"):
        build(_symbolic_relax_conv(), _cal((1, 3, 6, 6)))


def test_symbolic_relax_module_runs_in_float() -> None:
    model = tvm_arq.build(_symbolic_relax_conv(), None, "host", scheme="float")
    for batch in (1, 3):
        x = _cal((batch, 3, 6, 6), 1)[0]
        assert model.run(x).shape == (batch, 4, 6, 6)
    tried(2)


# ------------------------------------------------------------------------------------------ graphs without conv


def test_gemm_only_model_quantizes_to_integer_dense() -> None:
    m = onnx_model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)], [vi("x", [1, 8])], [vi("y", [1, 4])],
                   [init("W", RNG.normal(size=(4, 8))), init("B", RNG.normal(size=4))])
    mod, params = from_onnx(m)
    cal = _cal((1, 8), 8)
    model = build(mod, cal, params)
    assert not model.fallbacks
    kernels = {str(f.attrs["arq.op"]) for f in model.ir.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs}
    assert "qdense" in kernels
    f32 = tvm_arq.build(mod, params, "host", scheme="float")
    for x in cal[:3]:
        assert_bitexact(model, x)
        np.testing.assert_allclose(model.run(x), f32.run(x), atol=0.1 * np.abs(f32.run(x)).max())
    tried(3)


def test_float_only_model_is_a_clear_error_and_builds_as_float() -> None:
    """Nothing quantizable (only data movement): a clear error pointing at scheme='float', which works."""
    m = onnx_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["y"], perm=[0, 1, 3, 2])],
                   [vi("x", [1, 3, 4, 5])], [vi("y", [1, 3, 5, 4])])
    mod, params = from_onnx(m)
    with pytest.raises(ValueError, match=r"nothing to quantize.*scheme='float'"):
        build(mod, _cal((1, 3, 4, 5)), params)
    x = _cal((1, 3, 4, 5), 1)[0]
    f32 = tvm_arq.build(mod, params, "host", scheme="float")
    np.testing.assert_array_equal(f32.run(x), np.maximum(x, 0).transpose(0, 1, 3, 2))
    tried(2)


def test_elementwise_only_model_becomes_a_lookup_table() -> None:
    """Documented: a single-input element-wise graph (here Sigmoid) is one 256-entry integer table."""
    m = onnx_model([helper.make_node("Sigmoid", ["x"], ["y"])], [vi("x", [1, 3, 4, 4])], [vi("y", [1, 3, 4, 4])])
    mod, params = from_onnx(m)
    cal = _cal((1, 3, 4, 4))
    model = build(mod, cal, params)
    assert not model.fallbacks
    x = cal[0]
    assert_bitexact(model, x)
    np.testing.assert_allclose(model.run(x), 1 / (1 + np.exp(-x)), atol=2 / 255)


def test_conv3d_model_is_a_documented_float_fallback() -> None:
    m = onnx_model([helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                   [vi("x", [1, 1, 3, 3, 3])], [vi("y", None)], [init("W", RNG.normal(size=(1, 1, 2, 2, 2)))])
    mod, params = from_onnx(m)
    with pytest.raises(ValueError, match="nothing to quantize"):
        build(mod, _cal((1, 1, 3, 3, 3)), params)
    assert tvm_arq.build(mod, params, "host", scheme="float").run(_cal((1, 1, 3, 3, 3), 1)[0]).shape == (1, 1, 2, 2, 2)
    tried(2)


# ------------------------------------------------------------------------------------------ several inputs/outputs


@pytest.fixture(scope="module")
def two_io():
    mod, params = from_onnx(two_in_two_out_onnx())
    cal = list(zip(_cal((1, 3, 6, 6), 6, seed=2), _cal((1, 2, 6, 6), 6, seed=3), strict=True))
    return mod, params, cal


def test_two_inputs_two_outputs_quantize_and_run(two_io) -> None:
    mod, params, cal = two_io
    assert [p.name for p in mod["main"].params[:2]] == ["a", "b"]
    model = build(mod, cal, params)
    assert not model.fallbacks
    f32 = tvm_arq.build(mod, params, "host", scheme="float")
    for a, b in cal[:3]:
        got, ref = outputs(model.run(a, b)), outputs(f32.run(a, b))
        assert [g.shape for g in got] == [(1, 4, 6, 6), (1, 2, 6, 6)]
        assert_bitexact(model, a, b)
        for g, r in zip(got, ref, strict=True):
            assert np.abs(g - r).max() < 0.05 * np.abs(r).max() + 1e-3
    tried(3)


def test_two_inputs_tuple_and_dict_calibration_agree(two_io) -> None:
    mod, params, cal = two_io
    by_tuple = build(mod, cal, params)
    by_dict = build(mod, [{"b": b, "a": a} for a, b in cal], params)
    assert by_tuple.qparams == by_dict.qparams
    with pytest.raises(ValueError, match="model takes 2 input"):
        by_tuple.run(cal[0][0])
    tried(2)


# ------------------------------------------------------------------------------------------ misuse of build()


def test_build_rejects_files_and_protos_with_a_hint(tmp_path: Path) -> None:
    proto = conv_relu_onnx()
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    for what in (str(path), path, proto, proto.SerializeToString()):
        with pytest.raises(TypeError, match=r"tvm_arq.from_onnx"):
            tvm_arq.build(what, None, "host", calibration=_cal((1, 3, 8, 8)))  # type: ignore[arg-type]
    tried(4)


def test_build_without_params_names_the_unbound_weights() -> None:
    mod, params = from_onnx(conv_relu_onnx())
    with pytest.raises(ValueError, match=r"unbound weight parameter.*pass the params"):
        build(mod, _cal((1, 3, 8, 8)))
    with pytest.raises(KeyError, match="no parameter named 'nope'"):
        build(mod, _cal((1, 3, 8, 8)), {"nope": np.zeros(3, "float32")})
    wrong = {k: np.zeros((1, *v.shape), v.dtype) for k, v in params.items()}
    with pytest.raises(ValueError, match="expects shape"):
        build(mod, _cal((1, 3, 8, 8)), wrong)
    tried(3)
