"""Bad calibration data: a clear CalibrationError naming the sample (and input) -- or a defined, tested
behaviour: zero ranges get a safe scale and stay bit-exact, outliers are finite, extra dict keys are ignored."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import tvm_arq
from tests.graphs import Spec, build_graph
from tests.robustness._models import assert_bitexact, build, conv_module, outputs, two_in_two_out_onnx
from tests.robustness._tally import tried
from tvm_arq.config import Calibrator, QuantConfig
from tvm_arq.frontend import from_onnx
from tvm_arq.quantize import CalibrationError

SHAPE = (1, 3, 6, 6)


@pytest.fixture(scope="module")
def mod():
    return build_graph(Spec(channels=3, size=6, ops=["conv", "add", "conv"], seed=4, act="none"))


def _cal(n: int = 4, seed: int = 1, shape: tuple[int, ...] = SHAPE, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape) * scale).astype("float32") for _ in range(n)]


@pytest.fixture(scope="module")
def reference_model(mod):
    return build(mod, _cal())


# ------------------------------------------------------------------------------------------ shape, layout, dtype


@pytest.mark.parametrize("shape", [(1, 3, 6, 5), (2, 3, 6, 6), (1, 1, 3, 6, 6), (3, 6), (), (6, 6, 3), (1, 6, 6, 3)])
def test_wrong_shape_names_sample_and_input(mod, shape) -> None:
    cal = _cal(2) + [np.zeros(shape, "float32")]
    with pytest.raises(CalibrationError, match=r"sample 2, input 'x': shape .* does not match the model's \(1, 3, 6, 6\)"):
        build(mod, cal)


def test_nhwc_for_nchw_gets_a_layout_hint(mod) -> None:
    nhwc = [x.transpose(0, 2, 3, 1) for x in _cal(2)]
    with pytest.raises(CalibrationError, match=r"looks like NHWC.*transpose\(0, 3, 1, 2\)"):
        build(mod, nhwc)
    with pytest.raises(CalibrationError, match="looks like NHWC"):
        build(mod, [x[0] for x in nhwc])  # no batch dim either
    tried(2)


def test_missing_batch_dim_is_added(mod, reference_model) -> None:
    """Documented: a sample of shape model_shape[1:] (batch 1 models) gets its batch dim."""
    model = build(mod, [x[0] for x in _cal()])
    assert model.qparams == reference_model.qparams


@pytest.mark.parametrize("dtype", ["float64", "float16", "int32", "uint8", "int64"])
def test_real_dtypes_are_converted(mod, dtype) -> None:
    cal = [(x * 20).astype(dtype) for x in _cal()]
    model = build(mod, cal)
    want = build(mod, [c.astype("float32") for c in cal])
    assert model.qparams == want.qparams


@pytest.mark.parametrize("kind", ["bool", "complex64", "complex128", "str", "object", "None"])
def test_non_real_samples_are_rejected(mod, kind) -> None:
    x = _cal(1)[0]
    bad = {"bool": x > 0, "complex64": x.astype("complex64"), "complex128": x.astype("complex128"),
           "str": np.full(SHAPE, "a"), "object": np.empty(SHAPE, dtype=object), "None": None}[kind]
    with pytest.raises(CalibrationError, match=r"sample 1, input 'x': (non-real dtype|shape)"):
        build(mod, [x, bad])


def test_float64_that_overflows_float32_is_rejected(mod) -> None:
    cal = _cal(2)
    cal[1] = cal[1].astype("float64") * 1e300
    with pytest.raises(CalibrationError, match=r"sample 1, input 'x': \d+ NaN/Inf"):
        build(mod, cal)


# ------------------------------------------------------------------------------------------ how many samples


@pytest.mark.parametrize("empty", ["list", "generator", "array", "tuple"])
def test_empty_calibration(mod, empty) -> None:
    data = {"list": [], "generator": (x for x in []), "array": np.zeros((0, *SHAPE), "float32"), "tuple": ()}[empty]
    with pytest.raises(CalibrationError, match="calibration data is empty"):
        build(mod, data)


@pytest.mark.parametrize("what", [5, 3.0, "x.npy", b"bytes", "dict", "scalar array"])
def test_calibration_that_is_not_a_collection_of_samples(mod, what) -> None:
    if what == "dict":
        what = {"x": _cal(1)[0]}  # one sample instead of a list of samples
    elif what == "scalar array":
        what = np.float32(1.0) * np.ones(())
    with pytest.raises(CalibrationError, match="calibration must be an iterable of samples"):
        build(mod, what)


def test_calibration_none_is_required_unless_float(mod) -> None:
    with pytest.raises(ValueError, match="calibration data is required"):
        tvm_arq.build(mod, None, "host")


def test_batched_array_is_iterated_per_sample(mod) -> None:
    """Documented: an array [N, C, H, W] for a batch-1 model is N samples."""
    cal = _cal(5)
    model = build(mod, np.concatenate(cal))
    assert model.qparams == build(mod, cal).qparams


def test_single_sample_warns_and_works(mod, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tvm_arq.quantize"):
        model = build(mod, _cal(1))
    assert "single sample" in caplog.text
    for x in _cal(3, seed=7):
        assert_bitexact(model, x)
    tried(3)


# ------------------------------------------------------------------------------------------ NaN / Inf


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("index", [0, 3])
def test_nan_inf_names_input_and_sample(mod, value, index) -> None:
    cal = _cal(5)
    cal[index][0, 1, 2, 3] = value
    with pytest.raises(CalibrationError, match=rf"calibration sample {index}, input 'x': 1 NaN/Inf"):
        build(mod, cal)


def test_nan_in_second_input_of_two() -> None:
    mod, params = from_onnx(two_in_two_out_onnx())
    rng = np.random.default_rng(0)
    cal = [(rng.normal(size=(1, 3, 6, 6)).astype("float32"), rng.normal(size=(1, 2, 6, 6)).astype("float32"))
           for _ in range(3)]
    cal[2][1][0, 0, 0, :] = np.nan
    with pytest.raises(CalibrationError, match=r"calibration sample 2, input 'b': 6 NaN/Inf"):
        build(mod, cal, params)
    cal[2] = {"a": cal[2][0], "b": cal[2][1]}
    with pytest.raises(CalibrationError, match=r"calibration sample 2, input 'b'"):
        build(mod, cal, params)
    tried(2)


def test_inf_produced_inside_the_network_names_the_tensor() -> None:
    """Finite inputs whose float activations overflow to Inf: the error names the tensor and the sample."""
    mod = conv_module(np.full((2, 1, 1, 1), 1e20, "float32"), np.zeros(2), act="relu")
    cal = [np.abs(x) for x in _cal(3, shape=(1, 1, 5, 5))]
    cal[1] *= 1e25  # 1e25 * 1e20 > float32 max
    with pytest.raises(CalibrationError, match=r"tensor '\w+' on calibration sample 1"):
        build(mod, cal)


# ------------------------------------------------------------------------------------------ degenerate ranges


@pytest.mark.parametrize("value", [0.0, 0.5, -3.0, 1e-30, 1e-40])
def test_constant_calibration_input_is_an_error(mod, value) -> None:
    """A model calibrated on a constant input would ignore its input: a clear error naming the input."""
    with pytest.raises(CalibrationError, match=r"calibration input 'x' is constant over all 3 sample\(s\) "
                                               r"\(every value is .*\): a model calibrated on it would ignore"):
        build(mod, [np.full(SHAPE, value, "float32")] * 3)
    tried()


@pytest.mark.parametrize("value", [0.0, 0.5, -3.0, 1e-30, 1e-40])
def test_constant_calibration_input_when_checks_are_off(mod, value) -> None:
    """Zero / constant / denormal calibration inputs, built anyway: a finite positive scale, still bit-exact."""
    model = build(mod, [np.full(SHAPE, value, "float32")] * 3, config=QuantConfig(calibration_checks=False))
    for q in model.qparams.values():
        assert np.isfinite(q.scale) and q.scale > 0 and q.qmin <= q.zero_point <= q.qmax
    for x in [np.full(SHAPE, value, "float32"), *_cal(2, seed=11)]:
        assert_bitexact(model, x)
    tried(3)


def test_dead_relu_layer_then_conv_keeps_the_bias() -> None:
    """A ReLU layer that is all zero on the calibration data (zero range -> tiny scale) feeding a conv whose
    bias dominates: the folded int32 bias must not saturate (it silently did: output 0 instead of 1)."""
    rng = np.random.default_rng(0)
    mod = conv_module(rng.normal(size=(4, 3, 3, 3)) * 0.1, np.full(4, -100.0), act="relu",
                      then=(rng.normal(size=(2, 4, 1, 1)) * 1e-4, np.array([1.0, -0.5])))
    cal = _cal(4, shape=(1, 3, 5, 5))
    model = build(mod, cal)
    f32 = tvm_arq.build(mod, None, "host", scheme="float")
    for x in cal:
        assert_bitexact(model, x)
        np.testing.assert_allclose(model.run(x), f32.run(x), atol=0.01)
    tried(len(cal))


def test_all_zero_calibration_with_small_weights_and_large_bias() -> None:
    rng = np.random.default_rng(1)
    mod = conv_module(rng.normal(size=(4, 3, 3, 3)) * 1e-3, np.full(4, 0.5), act="relu",
                      then=(rng.normal(size=(2, 4, 1, 1)), np.full(2, 0.7)))
    zeros = [np.zeros((1, 3, 5, 5), "float32")] * 2
    with pytest.raises(CalibrationError, match="constant"):
        build(mod, zeros)
    model = build(mod, zeros, config=QuantConfig(calibration_checks=False))
    f32 = tvm_arq.build(mod, None, "host", scheme="float")
    assert_bitexact(model, zeros[0])
    np.testing.assert_allclose(model.run(zeros[0]), f32.run(zeros[0]), atol=0.01)


# ------------------------------------------------------------------------------------------ outliers


@pytest.mark.parametrize("calibrator", [c.value for c in Calibrator])
def test_huge_outlier_sample(mod, calibrator) -> None:
    """One sample with a 1e30 spike: every calibrator gives finite parameters and a bit-exact program."""
    cal = _cal(6)
    cal[2][0, 0, 1, 1] = 1e30
    model = build(mod, cal, calibrator=calibrator)
    for q in model.qparams.values():
        assert np.isfinite(q.scale) and q.scale > 0
    for x in [cal[0], cal[2]]:
        y = outputs(model.run(x))[0]
        assert np.all(np.isfinite(y))
        assert_bitexact(model, x)
    tried(2)


@pytest.mark.parametrize("calibrator", [c.value for c in Calibrator])
def test_one_outlier_pixel_among_64_samples_is_clipped(mod, calibrator, caplog) -> None:
    """One pixel of 1e4 in one of 64 samples: without the outlier rule every range was set by it and the model's
    output no longer depended on its input. Now the range is clipped to the other samples' range, with a
    warning and a rule naming the tensor and the sample, and the model follows fp32."""
    cal = _cal(64, seed=3)
    cal[17][0, 1, 2, 3] = 1e4
    with caplog.at_level(logging.WARNING, logger="tvm_arq.quantize"):
        model = build(mod, cal, calibrator=calibrator)
    assert any("calibration sample(s) [17] reach 1e+04" in r.getMessage() for r in caplog.records)
    q_in = [q for q in model.qparams.values() if "outliers: calibration sample(s) [17]" in q.rule]
    assert q_in, [q.rule for q in model.qparams.values()]
    assert all(q.beta < 100 for q in q_in)
    f32 = tvm_arq.build(mod, None, "host", scheme="float")
    ys = [outputs(model.run(x))[0] for x in _cal(8, seed=99)]
    ref = [outputs(f32.run(x))[0] for x in _cal(8, seed=99)]
    assert not all(np.array_equal(ys[0], y) for y in ys[1:]), "output does not depend on the input"
    for y, r in zip(ys, ref, strict=True):
        err = np.abs(y - r).max() / (np.abs(r).max() + 1e-12)
        assert err < 0.1, err
    assert_bitexact(model, cal[17])
    tried(8)


def test_outlier_rule_is_off_with_checks_off_and_needs_enough_samples(mod) -> None:
    cal = _cal(64, seed=3)
    cal[17][0, 1, 2, 3] = 1e4
    model = build(mod, cal, config=QuantConfig(calibration_checks=False))
    assert not any("outliers" in q.rule for q in model.qparams.values())
    assert max(q.beta for q in model.qparams.values()) > 1e3  # the old behaviour, documented as such
    few = _cal(7, seed=3)
    few[2][0, 1, 2, 3] = 1e4
    model = build(mod, few)  # 7 samples cannot tell an outlier from the data
    assert not any("outliers" in q.rule for q in model.qparams.values())


def test_find_outliers_rule() -> None:
    from tvm_arq.quantize import find_outliers

    rng = np.random.default_rng(0)
    lo, hi = -rng.uniform(1, 3, 100), rng.uniform(1, 3, 100)
    assert find_outliers(lo, hi) is None  # ordinary spread
    hi2 = hi.copy()
    hi2[[5, 40]] = 500.0
    clip = find_outliers(lo, hi2)
    assert clip is not None and clip.samples == (5, 40) and clip.extreme == 500.0
    assert clip.hi == pytest.approx(hi[np.r_[0:5, 6:40, 41:100]].max())
    hi3 = hi.copy()
    hi3[[1, 2, 3]] = 500.0  # 3 of 100 > 2 %: that is the data, not an outlier
    assert find_outliers(lo, hi3) is None
    lo4 = lo.copy()
    lo4[9] = -1e6
    clip = find_outliers(lo4, hi)
    assert clip is not None and clip.samples == (9,) and clip.extreme == -1e6 and clip.lo < 0
    assert find_outliers(np.zeros(20), np.r_[np.zeros(19), 1.0]) is None  # all else zero: not an outlier


# ------------------------------------------------------------------------------------------ iterators that fail


def test_generator_raising_midway_names_the_sample(mod) -> None:
    def samples():
        yield from _cal(2)
        raise OSError("disk gone")

    with pytest.raises(CalibrationError, match=r"raised OSError while producing sample 2 .*disk gone") as err:
        build(mod, samples())
    assert isinstance(err.value.__cause__, OSError)  # the original error is chained, traceback kept


def test_keyboard_interrupt_in_generator_is_not_swallowed(mod) -> None:
    def samples():
        yield _cal(1)[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(mod, samples())


def test_dataset_raising_on_getitem(mod) -> None:
    class Dataset:  # a map-style dataset: iterated through __getitem__ until IndexError
        def __getitem__(self, i: int) -> np.ndarray:
            if i == 3:
                raise ValueError("corrupt JPEG")
            return _cal(1, seed=i)[0]

    with pytest.raises(CalibrationError, match=r"ValueError while producing sample 3.*corrupt JPEG"):
        build(mod, Dataset())


# ------------------------------------------------------------------------------------------ dict samples


def test_dict_samples_missing_key(mod) -> None:
    with pytest.raises(CalibrationError, match=r"sample 0: missing input\(s\) \['x'\]; got keys \['image'\]"):
        build(mod, [{"image": x} for x in _cal()])


def test_dict_samples_missing_key_later(mod) -> None:
    cal: list = [{"x": x} for x in _cal()]
    cal[2] = {"X": cal[2]["x"]}
    with pytest.raises(CalibrationError, match=r"sample 2: missing input"):
        build(mod, cal)


def test_dict_samples_extra_keys_are_ignored_with_a_warning(mod, reference_model, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tvm_arq.quantize"):
        model = build(mod, [{"x": x, "label": 3, "path": "a.jpg"} for x in _cal()])
    assert "['label', 'path']" in caplog.text and "ignored" in caplog.text
    assert model.qparams == reference_model.qparams


def test_tuple_with_wrong_arity(mod) -> None:
    with pytest.raises(CalibrationError, match=r"sample 0: model has 1 input\(s\) \['x'\], sample has 2"):
        build(mod, [(x, x) for x in _cal()])
