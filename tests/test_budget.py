"""Accuracy budget: build(..., accuracy=AccuracyBudget(...)) keeps layers in float only when the drop demands it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import tvm_arq
from tests.test_sensitivity import _bad_layer_model, bad_layer_case
from tvm_arq import AccuracyBudget, cli
from tvm_arq.report import QuantReport


@pytest.fixture(scope="module")
def model():
    return bad_layer_case(16)


def test_unmet_budget_keeps_the_bad_layer_in_float(model):
    mod, params, cal, held_out = model
    m = tvm_arq.build(mod, params, calibration=cal, calibrator="minmax", progress=False,
                      accuracy=AccuracyBudget(data=held_out, max_drop=0.0, samples=4))
    rep = m.accuracy_report
    assert rep.fp32 == 100.0 and rep.int8 < 50.0  # all-int8 breaks top-1 agreement (bad_conv's weights)
    assert [k.name for k in rep.kept] == ["bad_conv"] and rep.kept[0].rank == 1
    assert rep.met and rep.drop == 0.0 and rep.final == 100.0
    assert 0 < rep.macs_kept < rep.macs_total
    assert "bad_conv" in m.config.exclude
    assert any(v == "bad_conv" and why == "excluded by the user" for v, _, why in m.fallbacks)
    # the compiled model is the candidate the search measured on the reference interpreter
    np.testing.assert_array_equal(m.run(held_out[0]), m.reference(held_out[0]))
    text = m.summary()
    assert "kept in higher precision (1 layer(s)" in text and "bad_conv" in text
    # and in tvm_arq.report (text and JSON round trip)
    qr = tvm_arq.report(m, held_out[:2])
    assert qr.accuracy["kept"][0]["name"] == "bad_conv" and "bad_conv" in qr.to_text()
    assert QuantReport.from_json(qr.to_json()).accuracy == qr.accuracy


def test_candidates_compiled_when_the_interpreter_is_slow(model, monkeypatch):
    """Past the interpreter time limit the candidates run compiled for the host: same integers, same choice."""
    import tvm_arq.budget as budget

    monkeypatch.setattr(budget, "INTERPRETER_SECONDS", 0.0)
    mod, params, cal, held_out = model
    m = tvm_arq.build(mod, params, calibration=cal, calibrator="minmax", progress=False,
                      accuracy=AccuracyBudget(data=held_out[:4], max_drop=0.0, samples=4))
    rep = m.accuracy_report
    assert [k.name for k in rep.kept] == ["bad_conv"] and rep.met and rep.final == 100.0


def test_met_budget_keeps_nothing(model):
    mod, params, cal, held_out = model

    def neg_mse(outputs, data):  # a custom metric: higher is better
        return -float(np.mean([np.mean(np.square(o)) for o in outputs]))

    m = tvm_arq.build(mod, params, calibration=cal, calibrator="minmax", progress=False,
                      accuracy=AccuracyBudget(data=held_out, max_drop=1e9, metric=neg_mse))
    rep = m.accuracy_report
    assert rep.kept == [] and rep.met and rep.metric == "neg_mse"
    assert rep.evaluations == 1  # the all-int8 model only: no ranking, no search
    assert m.config.exclude == () and not m.fallbacks
    assert "nothing (all-int8 meets the budget)" in rep.to_text()


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_drop": -0.5}, ValueError, "max_drop must be finite and >= 0"),
    ({"max_drop": float("nan")}, ValueError, "max_drop must be finite"),
    ({"max_drop": "0.5"}, TypeError, "max_drop must be a number"),
    ({"metric": "top5"}, ValueError, "metric must be one of"),
    ({"metric": 3}, TypeError, "metric must be a name"),
    ({"metric": "top1"}, ValueError, "needs labels"),
    ({"metric": "top1", "labels": [1, 2]}, ValueError, "2 labels for 3 samples"),
    ({"data": []}, ValueError, "data is empty"),
    ({"data": "images/"}, TypeError, "sequence of samples"),
    ({"samples": 0}, ValueError, "samples must be an integer >= 1"),
])
def test_bad_budget_arguments(kwargs, error, match):
    args = {"data": [np.zeros((1, 4, 8, 8), np.float32)] * 3, **kwargs}
    with pytest.raises(error, match=match):
        AccuracyBudget(**args)


def test_build_refuses_a_non_budget(model):
    mod, params, cal, _ = model
    with pytest.raises(TypeError, match="accuracy must be a tvm_arq.AccuracyBudget"):
        tvm_arq.build(mod, params, calibration=cal, accuracy=0.5, progress=False)


def test_metric_returning_nan_is_a_clear_error(model):
    mod, params, cal, held_out = model
    budget = AccuracyBudget(data=held_out[:2], metric=lambda outputs, data: float("nan"))
    with pytest.raises(ValueError, match="the accuracy metric returned nan"):
        tvm_arq.build(mod, params, calibration=cal, accuracy=budget, progress=False)


def test_cli_max_drop(model, tmp_path, capsys):
    _, _, cal, held_out = model
    onnx.save(_bad_layer_model(), tmp_path / "bad.onnx")
    np.save(tmp_path / "cal.npy", np.concatenate(cal))
    np.save(tmp_path / "data.npy", np.concatenate(held_out))
    base = ["build", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "bad.so"), "--calibration",
            str(tmp_path / "cal.npy")]
    assert cli.main([*base, "--max-drop", "-1"]) == 2
    assert "must be finite and >= 0" in capsys.readouterr().err
    assert cli.main([*base, "--data", str(tmp_path / "data.npy")]) == 1
    assert "give --max-drop too" in capsys.readouterr().err
    assert cli.main([*base, "--max-drop", "100", "--data", str(tmp_path / "data.npy")]) == 0
    out = capsys.readouterr().out
    assert "accuracy budget (agreement, 16 samples)" in out and "max 100: met" in out
