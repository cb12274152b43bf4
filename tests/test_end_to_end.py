"""End to end: real pretrained model and real data, and the cross-compiled library."""

from __future__ import annotations

import numpy as np
import pytest

import tvm_arq
from tests.graphs import Spec, build_graph, calibration_set
from tvm_arq.deploy.export import read_elf_machine

EM_AARCH64 = 183
EM_RISCV = 243


def test_build_accepts_familiar_aarch64_string_and_cross_links(tmp_path):
    mod = build_graph(Spec(channels=3, size=8, ops=["conv", "dwconv", "add", "maxpool"], seed=1))
    cal = calibration_set(mod, 4)
    model = tvm_arq.build(mod, None, target="llvm -mtriple=aarch64", calibration=cal, scheme="hybrid",
                          progress=False)
    assert model.target.triple == "aarch64-linux-gnu"
    assert model.qparams and all(q.dtype == "int8" for q in model.qparams.values())
    so = model.export_library(tmp_path / "model.so")
    assert read_elf_machine(so) == EM_AARCH64
    # the same integer program runs on the host (a host copy is built) and matches the reference
    x = cal[0]
    np.testing.assert_array_equal(model.run(x), model.reference(x))


def test_build_riscv_rvv_string(tmp_path):
    mod = build_graph(Spec(channels=2, size=6, ops=["conv"], seed=2))
    model = tvm_arq.build(mod, None, target="llvm -mtriple=riscv64-linux-gnu -mattr=+m,+a,+f,+d,+c,+v",
                          calibration=calibration_set(mod, 2), progress=False)
    assert read_elf_machine(model.export_library(tmp_path / "m.so")) == EM_RISCV


def test_scheme_float_and_symmetric_zero_points():
    mod = build_graph(Spec(channels=3, size=6, ops=["conv", "conv"], seed=4, act="clip_sym"))
    cal = calibration_set(mod, 3, skew=1.0)
    f = tvm_arq.build(mod, None, "host", scheme="float")
    s = tvm_arq.build(mod, None, "host", calibration=cal, scheme="symmetric", progress=False)
    assert f.qparams == {} and f.qdq is None
    # symmetric: zero point is real 0 everywhere (128 in uint8 storage on x86)
    off = 128 if s.target.act_dtype == "uint8" else 0
    assert {q.zero_point for q in s.qparams.values()} == {off}
    y32 = f.run(cal[0])
    y8 = s.run(cal[0])
    assert np.abs(y8 - y32).max() < 0.1 * np.abs(y32).max() + 1e-3


def test_calibration_errors_are_clear():
    mod = build_graph(Spec(channels=3, size=6, ops=["conv"], seed=4))
    with pytest.raises(ValueError, match="calibration data is empty"):
        tvm_arq.build(mod, None, "host", calibration=[], progress=False)
    with pytest.raises(ValueError, match=r"sample 0, input 'x': shape \(1, 6, 6, 3\)"):
        tvm_arq.build(mod, None, "host", calibration=[np.zeros((1, 6, 6, 3), "float32")], progress=False)
    bad = calibration_set(mod, 2)
    bad[1][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="sample 1, input 'x': 1 NaN/Inf"):
        tvm_arq.build(mod, None, "host", calibration=bad, progress=False)


@pytest.mark.slow
def test_ppocr_direction_classifier_int8_within_one_point():
    """Real pretrained model (PP-OCR text direction classifier) on 200 real-font text lines."""
    from arq_bench import assets, datasets

    mod, params = tvm_arq.from_onnx(assets.fetch("ppocr_cls"), shape=(1, 3, 48, 192))
    x, y = datasets.text_direction_set(260, seed=0)
    cal = [x[i:i + 1] for i in range(60)]
    xe, ye = x[60:], y[60:]
    fp32 = tvm_arq.build(mod, params, "host", scheme="float")
    hyb = tvm_arq.build(mod, params, "host", calibration=cal, scheme="hybrid", progress=False)
    p32 = np.array([fp32.run(xe[i:i + 1]).argmax() for i in range(len(xe))])
    p8 = np.array([hyb.run(xe[i:i + 1]).argmax() for i in range(len(xe))])
    acc32 = float(np.mean(p32 == ye))
    acc8 = float(np.mean(p8 == ye))
    print(f"PP-OCR cls n={len(ye)}: fp32 {acc32:.3f} hybrid int8 {acc8:.3f}")
    assert acc32 > 0.9
    assert acc8 >= acc32 - 0.01
    np.testing.assert_array_equal(hyb.run(xe[:1]), hyb.reference(xe[:1]))


def test_deploy_is_a_plain_function():
    import inspect

    from tvm_arq.deploy import DeployError, EmulatedBoard, deploy
    from tvm_arq.deploy.boards import EmulatedBoard as BoardsEmulatedBoard

    assert inspect.isfunction(tvm_arq.deploy) and tvm_arq.deploy is deploy
    assert issubclass(DeployError, Exception)
    assert EmulatedBoard is BoardsEmulatedBoard
