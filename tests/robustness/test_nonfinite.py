"""Non-finite inputs (NaN, +Inf, -Inf): one defined behaviour in the TE quantize kernels, their numpy twins,
``run()`` and ``reference()``: NaN -> the zero point, +Inf -> qmax, -Inf -> qmin; ``run(..., check_inputs=True)``
refuses them with a ValueError naming the input and the count."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from tests.robustness._models import assert_bitexact, build, conv_module, outputs
from tests.robustness._tally import tried
from tvm_arq.ops import REGISTRY

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e30, -1e30, 0.3, -0.7], "float32")


@pytest.mark.parametrize("name", ["quantize", "quantize_to_nhwc"])
@pytest.mark.parametrize(("dtype", "zp", "qlo", "qhi"), [("int8", 3, -128, 127), ("uint8", 128, 0, 255)])
def test_kernel_and_twin_define_nan_and_inf(name, dtype, zp, qlo, qhi) -> None:
    """The compiled TE kernel and its numpy twin agree element for element, and give the documented values."""
    shape = (1, 2, 1, 5)
    x = te.placeholder(shape, "float32", name="x")
    p = {"scale": 0.05, "zp": zp, "qlo": qlo, "qhi": qhi, "out_dtype": dtype}
    kdef = REGISTRY.kernel(name)
    out = kdef.compute(x, **p)
    lib = tvm.compile(te.create_prim_func([x, out]), target="llvm")
    xs = SPECIAL.reshape(shape)
    got = tvm.runtime.empty(tuple(int(d) for d in out.shape), dtype)
    lib(tvm.runtime.tensor(xs), got)
    want = kdef.reference(xs, **p)
    np.testing.assert_array_equal(got.numpy(), want)
    flat = want.reshape(-1) if name == "quantize" else want.transpose(0, 3, 1, 2).reshape(-1)
    assert flat[0] == zp and flat[1] == qhi and flat[2] == qlo  # NaN, +Inf, -Inf
    assert flat[6] == qhi and flat[7] == qlo  # huge finite values saturate the same way
    tried(2)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype("float32")
    calib = [rng.normal(size=(1, 3, 5, 5)).astype("float32") for _ in range(8)]
    return build(conv_module(w, rng.normal(size=4).astype("float32"), act="relu"), calib)


def _with(x: np.ndarray, value: float, where: list[tuple[int, ...]]) -> np.ndarray:
    y = x.copy()
    for idx in where:
        y[idx] = value
    return y


CASES = {
    "nan": [(np.nan, 0.0)],  # NaN behaves as the value that quantizes to the zero point
    "+inf": [(np.inf, 1e30)],  # +Inf behaves as any value above the range (qmax)
    "-inf": [(-np.inf, -1e30)],
    "mixed": [(np.nan, 0.0), (np.inf, 1e30), (-np.inf, -1e30)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_and_reference_agree_on_nonfinite_inputs(model, case) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 3, 5, 5)).astype("float32")
    bad, equiv = x.copy(), x.copy()
    places = [(0, 0, 0, 0), (0, 1, 2, 3), (0, 2, 4, 4)]
    for k, (value, same_as) in enumerate(CASES[case]):
        bad = _with(bad, value, places[k::3])
        equiv = _with(equiv, same_as, places[k::3])
    assert_bitexact(model, bad)  # run() == reference(), bit for bit
    got = outputs(model.run(bad))
    assert all(np.isfinite(g).all() for g in got)
    for g, e in zip(got, outputs(model.run(equiv)), strict=True):
        np.testing.assert_array_equal(g, e)  # the documented values
    tried()


def test_check_inputs_names_the_input_and_counts(model) -> None:
    x = np.zeros((1, 3, 5, 5), "float32")
    x[0, 0, 0, :3] = np.nan
    x[0, 1, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"input 'x'.*3 NaN.*1 Inf"):
        model.run(x, check_inputs=True)
    model.run(np.zeros((1, 3, 5, 5), "float32"), check_inputs=True)  # finite inputs pass
    model.run(x)  # unchecked: the defined behaviour
    tried(2)
