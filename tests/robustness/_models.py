"""Small models for the robustness suite: ONNX protos and Relax modules built in code."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax import op as R

import tvm_arq


def vi(name: str, shape: Sequence[int | str] | None, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def onnx_model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: Sequence = (),
               opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def conv_relu_onnx(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv(4, 3x3, pad 1) + bias -> Relu -> y."""
    rng = np.random.default_rng(seed)
    return onnx_model(
        [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        [vi("x", [1, 3, 8, 8])], [vi("y", [1, 4, 8, 8])],
        [init("W", rng.normal(size=(4, 3, 3, 3)) * 0.3), init("B", rng.normal(size=4) * 0.1)],
        opset=opset,
    )


def two_in_two_out_onnx(seed: int = 0) -> onnx.ModelProto:
    """a[1,3,6,6], b[1,2,6,6] -> conv each, add, relu -> y1; conv(conv(a)) -> y2 (an intermediate reused)."""
    rng = np.random.default_rng(seed)
    return onnx_model(
        [
            helper.make_node("Conv", ["a", "W1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["b", "W2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c1", "c2"], ["s"]),
            helper.make_node("Relu", ["s"], ["y1"]),
            helper.make_node("Conv", ["c1", "W3"], ["y2"]),
        ],
        [vi("a", [1, 3, 6, 6]), vi("b", [1, 2, 6, 6])],
        [vi("y1", [1, 4, 6, 6]), vi("y2", [1, 2, 6, 6])],
        [init("W1", rng.normal(size=(4, 3, 3, 3)) * 0.3), init("W2", rng.normal(size=(4, 2, 3, 3)) * 0.3),
         init("W3", rng.normal(size=(2, 4, 1, 1)) * 0.5)],
    )


def conv_module(w: np.ndarray, b: np.ndarray | None = None, *, size: int = 5, act: str | None = None,
                then: tuple[np.ndarray, np.ndarray] | None = None) -> tvm.IRModule:
    """Relax ``conv(x, w) [+ b] [-> relu] [-> conv1x1 + bias]`` with weights as constants."""
    cout, cin, k, _ = w.shape
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, size, size), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(w.astype("float32")), padding=k // 2))
            if b is not None:
                y = bb.emit(R.add(y, relax.const(b.reshape(1, cout, 1, 1).astype("float32"))))
            if act == "relu":
                y = bb.emit(R.nn.relu(y))
            if then is not None:
                w2, b2 = then
                y = bb.emit(R.nn.conv2d(y, relax.const(w2.astype("float32"))))
                y = bb.emit(R.add(y, relax.const(b2.reshape(1, -1, 1, 1).astype("float32"))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def dense_module(w: np.ndarray, b: np.ndarray) -> tvm.IRModule:
    """Relax ``matmul(x, w) + b`` with ``w`` of shape [K, N]."""
    k, n = w.shape
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.matmul(x, relax.const(w.astype("float32"))))
            y = bb.emit(R.add(y, relax.const(b.astype("float32"))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def cancelling_add_module(cin: int = 3, size: int = 5, seed: int = 0) -> tvm.IRModule:
    """``conv(x, W) + conv(x, -W)``: the sum is exactly zero on every input (a degenerate output range)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, cin, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, size, size), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(R.nn.conv2d(x, relax.const(w), padding=1))
            b = bb.emit(R.nn.conv2d(x, relax.const(-w), padding=1))
            out = bb.emit_output(R.add(a, b))
        bb.emit_func_output(out)
    return bb.get()


def outputs(res) -> tuple[np.ndarray, ...]:
    return res if isinstance(res, tuple) else (res,)


def assert_bitexact(model: tvm_arq.QuantizedModel, *inputs: np.ndarray) -> None:
    """TVM's integer build and the numpy int64 reference agree bit for bit."""
    got, want = outputs(model.run(*inputs)), outputs(model.reference(*inputs))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def build(mod, calibration, params=None, **kw) -> tvm_arq.QuantizedModel:
    return tvm_arq.build(mod, params, "host", calibration=calibration, progress=False, **kw)
