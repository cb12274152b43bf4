"""Pass-level tests in TVM's style: Before module -> pass -> compare with an Expected module."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from tvm_arq.config import RangeKind
from tvm_arq.ops import conv
from tvm_arq.ops import qdq as K
from tvm_arq.passes import AnnotateQuantization, InsertCalibration, RealizeInteger, plan_quantization
from tvm_arq.qmath import choose_qparams, quantize_multiplier, quantize_weights_per_channel

RNG = np.random.default_rng(0)
W = (RNG.normal(size=(4, 3, 3, 3)) * 0.3).astype("float32")
B = (RNG.normal(size=(1, 4, 1, 1)) * 0.1).astype("float32")
X_TY = relax.TensorType((1, 3, 8, 8), "float32")


def before() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", X_TY)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(W), padding=[1, 1, 1, 1]))
            y = bb.emit(R.add(y, relax.const(B)))
            y = bb.emit(R.nn.relu(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


QX = choose_qparams(-2.0, 1.0, RangeKind.ASYMMETRIC, "int8")
QY = choose_qparams(0.0, 3.0, RangeKind.ONE_SIDED, "int8")


def _names(mod):
    return [b.var.name for blk in mod["main"].body.blocks for b in blk.bindings][:3]


def test_plan_groups_conv_bias_relu():
    mod = before()
    plan = plan_quantization(mod)
    names = _names(mod)
    assert plan.points == ["x", names[2]]
    assert plan.producer_nonneg == {names[2]}
    assert [plan.ops[n].role.value for n in names] == ["anchor", "epilogue", "epilogue"]
    assert not plan.fallbacks


def test_insert_calibration():
    mod = before()
    plan = plan_quantization(mod)
    after = InsertCalibration(plan.points)(mod)

    bb = relax.BlockBuilder()
    x = relax.Var("x", X_TY)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(W), padding=[1, 1, 1, 1]))
            y = bb.emit(R.add(y, relax.const(B)))
            y = bb.emit(R.nn.relu(y))
            out = bb.emit_output(relax.Tuple([y, x, y]))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after, bb.get())


def _qdq(bb, v, qp):
    s = relax.const(np.float32(qp.scale), "float32")
    z = relax.const(qp.zero_point, "int8")
    q = bb.emit(R.quantize(v, s, z, axis=-1, out_dtype="int8"))
    return bb.emit(R.dequantize(q, s, z, axis=-1, out_dtype="float32"))


def test_annotate_quantization():
    mod = before()
    plan = plan_quantization(mod)
    names = _names(mod)
    after = AnnotateQuantization(plan, {"x": QX, names[2]: QY})(mod)

    qw, sw = quantize_weights_per_channel(W, axis=0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", X_TY)
    with bb.function("main", [x]):
        with bb.dataflow():
            xd = _qdq(bb, x, QX)
            wd = R.dequantize(relax.const(qw, "int8"), relax.const(sw), relax.const(np.zeros(4, np.int8), "int8"),
                              axis=0, out_dtype="float32")
            y = bb.emit(R.nn.conv2d(xd, wd, padding=[1, 1, 1, 1]))
            y = bb.emit(R.add(y, relax.const(B)))
            y = bb.emit(R.nn.relu(y))
            y = _qdq(bb, y, QY)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after, bb.get())


def test_realize_integer_folds_zero_point_into_bias():
    mod = before()
    plan = plan_quantization(mod)
    names = _names(mod)
    qdq = AnnotateQuantization(plan, {"x": QX, names[2]: QY})(mod)
    after = RealizeInteger()(qdq)

    # Expected integer parameters, computed here from the definitions (method.md step 4 / 6)
    qw, sw = quantize_weights_per_channel(W, axis=0)
    acc_scale = np.float64(QX.scale) * sw.astype(np.float64)
    b_q = np.rint(B.reshape(-1) / acc_scale).astype(np.int64)
    b_fold = (b_q - QX.zero_point * qw.reshape(4, -1).astype(np.int64).sum(1)).astype(np.int32)
    m0, rs = quantize_multiplier(acc_scale / QY.scale)
    conv_params = {"strides": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
                   "zp_x": QX.zero_point, "zp_y": QY.zero_point, "qlo": QY.zero_point, "qhi": 127,
                   "out_dtype": "int8"}
    qparams = {"scale": QX.scale, "zp": QX.zero_point, "qlo": -128, "qhi": 127, "out_dtype": "int8"}
    dparams = {"scale": QY.scale, "zp": QY.zero_point}

    def attrs(name, params):
        return {"arq.op": name, "arq.params": json.dumps(params, sort_keys=True)}

    bb = relax.BlockBuilder()
    x = relax.Var("x", X_TY)
    with bb.function("main", [x]):
        with bb.dataflow():
            q = bb.emit_te(K.quantize, x, primfunc_name_hint="arq_quantize", primfunc_attrs=attrs("quantize", qparams),
                           **qparams)
            y = bb.emit_te(conv.qconv2d_nchw, q, relax.const(qw, "int8"), relax.const(b_fold, "int32"),
                           relax.const(m0, "int32"), relax.const(rs, "int32"), primfunc_name_hint="arq_qconv2d",
                           primfunc_attrs=attrs("qconv2d", conv_params), **conv_params)
            d = bb.emit_te(K.dequantize, y, primfunc_name_hint="arq_dequantize",
                           primfunc_attrs=attrs("dequantize", dparams), **dparams)
            out = bb.emit_output(d)
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after, bb.get())


def test_unsupported_op_falls_back_with_warning(caplog):
    bb = relax.BlockBuilder()
    x = relax.Var("x", X_TY)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const(W), padding=[1, 1, 1, 1]))
            y = bb.emit(R.erf(y))
            y = bb.emit(R.nn.conv2d(y, relax.const(W[:, :4].repeat(2, axis=1)[:, :4]), padding=[1, 1, 1, 1]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    with caplog.at_level(logging.WARNING):
        plan = plan_quantization(bb.get())
    assert [op for _, op, _ in plan.fallbacks] == ["relax.erf"]
    assert "relax.erf" in caplog.text
    # the float op's output feeds the second conv: it becomes a quantization point
    assert len(plan.points) == 4


def test_annotate_requires_every_point():
    mod = before()
    plan = plan_quantization(mod)
    with pytest.raises(KeyError, match="no quantization parameters"):
        AnnotateQuantization(plan, {"x": QX})
