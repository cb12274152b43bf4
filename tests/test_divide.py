"""Division by a tensor stays float with a clear reason and computes IEEE division (inf on a zero divisor,
saturated by the next quantize);
division by a constant stays integer (a lookup table)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import relax as R

import tvm_arq
from tvm_arq.ops.divide import DIVIDE_BY_TENSOR


@tvm.script.ir_module
class DivideBlock:
    @R.function
    def main(x: R.Tensor((1, 4, 3, 3), "float32"), y: R.Tensor((1, 4, 3, 3), "float32")):
        with R.dataflow():
            a = R.nn.relu(x)
            b = R.divide(a, y)
            c = R.divide(a, R.const(np.full((1, 4, 1, 1), 2.0, "float32")))
            d = R.add(b, c)
            R.output(d)
        return d


def test_divide_by_tensor_falls_back_with_reason_and_stays_ieee() -> None:
    rng = np.random.default_rng(0)
    cal = [(rng.normal(size=(1, 4, 3, 3)).astype("float32"), rng.uniform(1, 2, (1, 4, 3, 3)).astype("float32"))
           for _ in range(4)]  # fmt: skip
    m = tvm_arq.build(DivideBlock, {}, "host", calibration=cal, progress=False)
    assert [(name, op, why) for name, op, why in m.fallbacks] == [("b", "relax.divide", DIVIDE_BY_TENSOR)]
    x = rng.uniform(0.5, 1.0, (1, 4, 3, 3)).astype("float32")  # inside the calibrated ranges
    y = rng.uniform(1, 2, (1, 4, 3, 3)).astype("float32")
    y[0, 1, 1, 1] = 0.0  # a divisor calibration never saw
    out = np.asarray(m.run(x, y))
    # float division gives +inf there; the quantize of the next integer op saturates it to the top of the range
    # (no fixed-point wrap-around to a negative or arbitrary value)
    rest = np.ones(out.shape, bool)
    rest[0, 1, 1, 1] = False
    b_hat = out - x / 2  # the quantized quotient (up to the rounding of x / 2)
    assert np.isfinite(out).all() and b_hat[0, 1, 1, 1] >= b_hat[rest].max() - 0.1
    ref = x / y + x / 2
    np.testing.assert_allclose(out[rest], ref[rest], rtol=0.05, atol=0.05)
