"""Per-layer report: SQNR against fp32, fallbacks, JSON, PNG, CLI, bounded memory."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tvm import relax
from tvm.relax import op as R

import tvm_arq
from tests.graphs import Spec, build_graph, calibration_set
from tvm_arq.cli import build_parser
from tvm_arq.report import (
    QuantReport,
    SqnrAccumulator,
    compare_text,
    plot_sqnr,
    report,
    sqnr_db,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def simple():
    """conv -> dwconv -> add graph, hybrid and symmetric 8-bit builds, and their reports."""
    mod = build_graph(Spec(channels=3, size=8, ops=["conv", "dwconv", "add"], seed=1))
    cal = calibration_set(mod, 8, skew=0.5)
    models = {s: tvm_arq.build(mod, None, "host", calibration=cal, scheme=s, calibrator="minmax", progress=False)
              for s in ("hybrid", "symmetric")}  # minmax: the ranges cover the calibration data (checked below)
    reports = {s: report(m, cal, max_samples=8, progress=False) for s, m in models.items()}
    return mod, cal, models, reports


def _erf_graph() -> relax.Function:
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d(x, relax.const((rng.normal(size=(4, 3, 3, 3)) * 0.3).astype("float32")),
                                    padding=1))
            y = bb.emit(R.add(y, relax.const((rng.normal(size=(1, 4, 1, 1)) * 0.1).astype("float32"))))
            e = bb.emit(R.erf(y))
            z = bb.emit(R.nn.conv2d(e, relax.const((rng.normal(size=(4, 4, 1, 1)) * 0.3).astype("float32"))))
            out = bb.emit_output(z)
        bb.emit_func_output(out)
    return bb.get()


def test_hybrid_sqnr_finite_and_high(simple):
    _, _, models, reports = simple
    r = reports["hybrid"]
    model = models["hybrid"]
    assert [t.name for t in r.tensors] == model.plan.points
    assert r.n_samples == 8 and r.scheme == "hybrid"
    for t in r.tensors:
        qp = model.qparams[t.name]
        assert (t.kind, t.scale, t.zero_point, t.dtype, t.rule) == (qp.kind.value, qp.scale, qp.zero_point,
                                                                   qp.dtype, qp.rule)
        assert t.rule
        assert t.sqnr_db is not None and math.isfinite(t.sqnr_db) and t.sqnr_db > 25.0, t
        assert t.own_sqnr_db is not None and t.own_sqnr_db > 25.0
        # minmax ranges cover the calibration data; only the asymmetric grid, whose rounded zero point can
        # shift it by up to one step, may leave the extreme values just outside
        assert t.clipped_fraction == 0.0 if t.kind != "asymmetric" else t.clipped_fraction < 0.01
    # the graph input has no upstream error: the simulation equals its own quantization
    x = r.tensor("x")
    assert x.domain == "input" and x.sqnr_db == pytest.approx(x.own_sqnr_db, abs=1e-6)
    # the output is the last point's dequantized value: its sim SQNR is the QDQ output SQNR
    (out,) = r.outputs
    assert r.tensors[-1].sqnr_db == pytest.approx(out.sqnr_qdq_db, abs=1e-6)
    # the real integer build agrees closely with the simulation
    assert out.sqnr_int_db > 25.0 and abs(out.sqnr_int_db - out.sqnr_qdq_db) < 3.0
    assert r.fallbacks == []
    assert {"conv2d+add+relu", "dwconv2d+add+relu", "input"} <= {t.producer for t in r.tensors}
    s = r.summary()
    assert sum(s["kinds"].values()) == len(r.tensors)
    assert s["min_sqnr_db"] == min(t.sqnr_db for t in r.tensors)
    assert s["worst"][0]["sqnr_db"] == s["min_sqnr_db"] and len(s["worst"]) == min(5, len(r.tensors))


def test_symmetric_worse_than_hybrid_on_one_sided(simple):
    _, _, _, reports = simple
    hyb, sym = reports["hybrid"], reports["symmetric"]
    one_sided = [t for t in hyb.tensors if t.kind == "one_sided"]
    assert one_sided, "the graph has ReLU outputs"
    for t in one_sided:
        s = sym.tensor(t.name)
        assert s.kind == "symmetric"
        # a one-sided tensor wastes the sign half of the symmetric grid: ~6 dB on its own quantization
        assert s.own_sqnr_db < t.own_sqnr_db - 4.0
        assert s.sqnr_db < t.sqnr_db
    assert sym.outputs[0].sqnr_int_db < hyb.outputs[0].sqnr_int_db


def test_text_report(simple):
    _, _, _, reports = simple
    text = reports["hybrid"].to_text()
    for t in reports["hybrid"].tensors:
        assert t.name in text and t.rule in text
    assert "float fallbacks: none" in text and "integer build" in text and "worst:" in text
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("#"))
    # aligned: the SQNR column ends at the same position in the header and in every row
    end = lines[header].index("sim dB") + len("sim dB")
    for row in lines[header + 2: header + 2 + len(reports["hybrid"].tensors)]:
        assert row[end - 1].isdigit() and row[end] == " "
    cmp = compare_text(reports)
    assert "hybrid dB" in cmp and "symmetric dB" in cmp


def test_fallback_op_listed():
    mod = _erf_graph()
    cal = calibration_set(mod, 3)
    model = tvm_arq.build(mod, None, "host", calibration=cal, scheme="hybrid", progress=False)
    r = report(model, cal, progress=False)
    assert [(f.op, f.reason) for f in r.fallbacks] == [("relax.erf", "no integer implementation")]
    erf_out = r.tensor(r.fallbacks[0].var)
    assert erf_out.domain == "float" and erf_out.producer == "erf"
    assert all(t.sqnr_db > 25.0 for t in r.tensors)
    text = r.to_text()
    assert "float fallbacks (1)" in text and "relax.erf" in text


def test_json_round_trip(simple, tmp_path):
    _, _, _, reports = simple
    r = reports["hybrid"]
    assert QuantReport.from_json(r.to_json()) == r
    # non-finite values survive as strict JSON (no Infinity/NaN literals)
    t0 = dataclasses.replace(r.tensors[0], sqnr_db=math.inf, own_sqnr_db=-math.inf)
    odd = dataclasses.replace(r, tensors=[t0, *r.tensors[1:]])
    text = odd.to_json()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    path = odd.save_json(tmp_path / "r.json")
    back = QuantReport.load_json(path)
    assert back == odd and back.tensors[0].sqnr_db == math.inf
    d = json.loads(r.to_json())
    assert d["summary"]["n_tensors"] == len(r.tensors) and d["version"] == 1
    with pytest.raises(ValueError, match="version"):
        QuantReport.from_dict({**d, "version": 99})


def test_png_written(simple, tmp_path):
    _, _, _, reports = simple
    p = plot_sqnr(reports, tmp_path / "sqnr.png")
    data = p.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def test_sqnr_accumulator_streams_exactly():
    rng = np.random.default_rng(0)
    refs = [rng.normal(size=(2, 7)).astype(np.float32) for _ in range(5)]
    approx = [r + rng.normal(scale=0.01, size=r.shape).astype(np.float32) for r in refs]
    acc = SqnrAccumulator()
    for r, a in zip(refs, approx, strict=True):
        acc.update(r, a)
    ref, app = np.concatenate(refs).astype(np.float64), np.concatenate(approx).astype(np.float64)
    expect = 10 * np.log10(np.sum(ref**2) / np.sum((ref - app) ** 2))
    assert acc.sqnr_db == pytest.approx(expect, rel=1e-12)
    assert acc.count == ref.size and acc.max_abs_error == pytest.approx(np.max(np.abs(ref - app)))
    assert SqnrAccumulator().sqnr_db is None
    assert sqnr_db(1.0, 0.0) == math.inf and sqnr_db(0.0, 1.0) == -math.inf
    with pytest.raises(ValueError):
        acc.update(np.zeros(3), np.zeros(4))


def test_memory_does_not_grow_with_samples():
    # the accumulators are scalars whatever the number of samples
    acc = SqnrAccumulator()
    fields_before = {k: type(v) for k, v in vars(acc).items()}
    for _ in range(50):
        acc.update(np.ones(1000), np.zeros(1000))
    assert {k: type(v) for k, v in vars(acc).items()} == fields_before
    assert all(isinstance(v, int | float) for v in vars(acc).values())

    # traced Python/numpy memory when sample i is requested, i.e. after samples 0..i-1 were measured: flat
    # (a few hundred bytes per sample of ctypes objects from tvm's Tensor.numpy()). Keeping the activations
    # would add ~76 KB per sample here (5 points + output of a 32x32 input).
    mod = build_graph(Spec(channels=3, size=32, ops=["conv", "dwconv", "add"], seed=1))
    model = tvm_arq.build(mod, None, "host", calibration=calibration_set(mod, 2), progress=False)
    shape = tuple(int(d) for d in mod["main"].params[0].ty.shape.values)
    current: list[int] = []

    def samples(n):  # a generator: no list of samples is held either
        rng = np.random.default_rng(3)
        for _ in range(n):
            gc.collect()  # count live memory only, not garbage awaiting the cycle collector
            current.append(tracemalloc.get_traced_memory()[0])
            yield rng.normal(size=shape).astype("float32")

    n = 24
    tracemalloc.start()
    try:
        r = report(model, samples(n), max_samples=None, progress=False)
    finally:
        tracemalloc.stop()
    assert r.n_samples == n and len(current) == n
    growth = current[-1] - current[3]
    assert growth < 128 * 1024, [c - current[3] for c in current]


def test_max_samples_and_errors(simple):
    mod, cal, models, _ = simple
    consumed = []

    def gen():
        for i, c in enumerate(cal):
            consumed.append(i)
            yield c

    r = report(models["hybrid"], gen(), max_samples=3, progress=False)
    assert r.n_samples == 3 and consumed == [0, 1, 2]
    with pytest.raises(ValueError, match="no samples"):
        report(models["hybrid"], [], progress=False)
    with pytest.raises(ValueError, match="max_samples"):
        report(models["hybrid"], cal, max_samples=0, progress=False)
    with pytest.raises(ValueError, match="sample 0"):
        report(models["hybrid"], [np.zeros((1, 8, 8, 3), "float32")], progress=False)
    fl = dataclasses.replace(models["hybrid"], qdq=None, qparams={}, plan=None)
    with pytest.raises(ValueError, match="quantized model"):
        report(fl, cal, progress=False)


def _onnx_conv_relu(path):
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, (4, 3, 3, 3), (rng.normal(size=(4, 3, 3, 3)) * 0.3).ravel())
    b = helper.make_tensor("B", TensorProto.FLOAT, (4,), rng.normal(size=4) * 0.1)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["y"])]
    w2 = helper.make_tensor("W2", TensorProto.FLOAT, (2, 4, 1, 1), (rng.normal(size=(2, 4, 1, 1)) * 0.3).ravel())
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w, b, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)


def test_cli_report(tmp_path, capsys):
    _onnx_conv_relu(tmp_path / "m.onnx")
    np.save(tmp_path / "cal.npy", np.random.default_rng(0).normal(size=(6, 3, 8, 8)).astype("float32"))
    args = build_parser().parse_args(["report", str(tmp_path / "m.onnx"), "--shape", "1,3,8,8", "--calibration",
                          str(tmp_path / "cal.npy"), "--scheme", "hybrid", "--compare", "symmetric",
                          "--json", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png"),
                          "--max-samples", "4"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "scheme=hybrid" in out and "symmetric dB" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data) == {"hybrid", "symmetric"}
    reps = {k: QuantReport.from_dict(v) for k, v in data.items()}
    assert reps["hybrid"].n_samples == 4 and reps["symmetric"].scheme == "symmetric"
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_is_a_public_function():
    assert tvm_arq.report is report
    assert not hasattr(tvm_arq.QuantizedModel, "report")
