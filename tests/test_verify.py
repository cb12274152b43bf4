"""Per-tensor checks of the shipped program (tvm_arq.verify) on the host.

The debug program is the integer module after the layout conversion, compiled with the default schedules and
exported with ``export_library``; every integer tensor is compared with the reference interpreter's. Faults
planted one at a time in the numpy twins (one LSB of one element) must be caught and the report must name
the tensor and kernel that wrote the wrong value. (Board runs: tests/test_boards.py.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

import tvm_arq
from tests.graphs import Spec, build_graph, calibration_set
from tvm_arq.ops.registry import REGISTRY
from tvm_arq.verify import DebugProgram, compare_tensors, debug_build, verify_host

SPEC = Spec(channels=4, size=12, ops=["conv", "dwconv", "add", "avgpool", "maxpool", "gconv", "concat", "resize",
                                      "silu", "se"], seed=5, softmax=True)


@pytest.fixture(scope="module")
def program() -> tuple[tvm_arq.QuantizedModel, DebugProgram, list[np.ndarray]]:
    mod = build_graph(SPEC)
    cal = calibration_set(mod, 4, seed=3, skew=0.4)
    model = tvm_arq.build(mod, None, "host", calibration=cal, progress=False)
    return model, debug_build(model), cal


@pytest.fixture(scope="module")
def host_outputs(program) -> tuple[list[np.ndarray], Any]:
    """One run of the exported debug library: (its tensors, the report)."""
    _, prog, cal = program
    report = verify_host(prog, cal[0])
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(prog.executable, tvm.cpu())
    return [o.numpy() for o in vm["main"](tvm.runtime.tensor(cal[0]))], report


def test_every_tensor_of_the_converted_program_is_bitexact(program, host_outputs) -> None:
    model, prog, cal = program
    _, report = host_outputs
    report.assert_ok()
    ops = {c.tensor.op for c in report.checks}
    # the NHWC (converted) kernels are the ones checked, each tensor they write
    for op in ("quantize_to_nhwc", "qconv2d_nhwc_packed", "qdwconv2d_nhwc", "qadd", "qmaxpool2d_nhwc",
               "qavgpool2d_nhwc", "qconcat", "qresize_nearest_nhwc", "qlut", "qmul", "qmean_hw_nhwc", "qsoftmax",
               "dequantize"):
        assert op in ops, (op, sorted(ops))
    assert sum(c.dtype in ("uint8", "int8") for c in report.checks) >= 12
    assert report.where == "host" and "tensors bit-exact" in report.to_text()
    # its output is the model's, and the reference's of the unconverted program
    np.testing.assert_array_equal(host_outputs[0][-1], model.run(cal[0]))
    np.testing.assert_array_equal(host_outputs[0][-1], model.reference(cal[0]))


def _plant(monkeypatch: pytest.MonkeyPatch, kernel: str, nth: int = 0) -> None:
    """Make the numpy twin of ``kernel`` return one element one LSB off (element ``nth`` of the flat output)."""
    kd = REGISTRY.kernel(kernel)
    twin = kd.reference

    def faulty(*args: Any, **kwargs: Any) -> np.ndarray:
        out = np.array(twin(*args, **kwargs), order="C")  # reshape(-1) below must be a view
        flat = out.reshape(-1)
        if out.dtype.kind == "f":
            flat.view(f"u{out.dtype.itemsize}")[nth] ^= 1
        else:
            info = np.iinfo(out.dtype)
            flat[nth] = flat[nth] - 1 if flat[nth] > info.min else flat[nth] + 1
        return out

    monkeypatch.setitem(REGISTRY.kernels, kernel, dataclasses.replace(kd, reference=faulty))


@pytest.mark.parametrize("kernel", ["quantize_to_nhwc", "qconv2d_nhwc_packed", "qdwconv2d_nhwc", "qadd",
                                    "qmaxpool2d_nhwc", "qavgpool2d_nhwc", "qconcat", "qresize_nearest_nhwc",
                                    "qlut", "qmul", "qmean_hw_nhwc", "qsoftmax", "dequantize"])
def test_one_lsb_fault_is_caught_and_named(kernel: str, program, host_outputs, monkeypatch) -> None:
    """A one-LSB error in one element of one kernel family is found at the tensor that kernel wrote first."""
    _, prog, cal = program
    outputs, _ = host_outputs
    _plant(monkeypatch, kernel)
    report = compare_tensors(prog, outputs, [cal[0]], "host")
    first = report.first_mismatch
    assert first is not None, f"a fault in {kernel} went unnoticed"
    assert first.tensor.op == kernel and first.n_diff == 1 and first.max_abs_diff > 0
    assert first.first_index == (0,) * len(first.shape)
    assert kernel in report.to_text() and first.tensor.name in report.to_text()
    with pytest.raises(AssertionError, match="first mismatch"):
        report.assert_ok()


def test_unconverted_program_and_float_model_are_handled(program) -> None:
    model, _, cal = program
    plain = debug_build(model, layout=False)  # the program before the layout conversion, NCHW kernels
    report = verify_host(plain, cal[1])
    report.assert_ok()
    assert not any("layout conversion" in c.tensor.op for c in report.checks)
    assert any(c.tensor.op == "qconv2d" for c in report.checks)
    with pytest.raises(ValueError, match="integer module"):
        debug_build(model.float_ir, "host")
