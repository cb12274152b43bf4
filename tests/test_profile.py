"""``model.profile`` / ``remote.profile`` / ``tvm-arq bench --profile``: per-kernel times, shares, MACs.

A tiny graph (3x3 conv, depthwise conv, residual add, 1x1 conv) built once for the host; MACs are
checked against hand counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from tvm import relax

import tvm_arq
from tvm_arq import cli
from tvm_arq.profiling import kernel_category, kernel_macs, kernel_op

H = W = 12
C_IN, C = 8, 16
CONV_MACS = H * W * C * C_IN * 9       # 3x3 conv 8 -> 16, padding 1
DW_MACS = H * W * C * 9                # 3x3 depthwise on 16 channels
PW_MACS = H * W * C_IN * C             # 1x1 conv 16 -> 8


def _tiny() -> tuple:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.2, (C, C_IN, 3, 3)).astype("float32")
    wd = rng.normal(0, 0.2, (C, 1, 3, 3)).astype("float32")
    w2 = rng.normal(0, 0.2, (C_IN, C, 1, 1)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, C_IN, H, W), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w1), padding=1)))
            d = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(a, relax.const(wd), padding=1, groups=C)))
            s = bb.emit(relax.op.add(a, d))
            y = bb.emit_output(relax.op.nn.conv2d(s, relax.const(w2)))
        bb.emit_func_output(y)
    cal = [rng.normal(0, 1, (1, C_IN, H, W)).astype("float32") for _ in range(4)]
    return bb.get(), cal


@pytest.fixture(scope="module")
def tiny():
    mod, cal = _tiny()
    return tvm_arq.build(mod, None, "host", calibration=cal, progress=False), cal[0]


def test_host_profile_every_kernel_shares_and_macs(tiny):
    model, x = tiny
    prof = model.profile(x, repeat=2, min_repeat_ms=1)
    called = {n for n in re.findall(r"call\s+(\S+)", model.executable.as_text()) if not n.startswith("vm.")}
    assert {k.name for k in prof.kernels} == called
    assert sum(k.share for k in prof.kernels) == pytest.approx(1.0, abs=1e-9)
    assert all(k.us > 0 and k.calls >= 1 for k in prof.kernels)
    assert [k.us for k in prof.kernels] == sorted((k.us for k in prof.kernels), reverse=True)
    by_cat = {k.category: k for k in prof.kernels}
    assert by_cat["conv"].macs == CONV_MACS
    assert by_cat["depthwise"].macs == DW_MACS
    assert by_cat["pointwise"].macs == PW_MACS
    assert "add" in by_cat and "quantize" in by_cat
    assert prof.macs == CONV_MACS + DW_MACS + PW_MACS
    assert by_cat["conv"].gmacs == pytest.approx(CONV_MACS / by_cat["conv"].us / 1e3)
    assert prof.end_to_end_us > 0
    assert prof.overhead_us == pytest.approx(prof.end_to_end_us - prof.kernels_us)
    assert prof.overhead_min_us == pytest.approx(prof.end_to_end_min_us - prof.kernels_min_us)
    assert all(0 < k.us_min <= k.us * (1 + 1e-9) for k in prof.kernels)
    assert sum(r["share"] for r in prof.by_category().values()) == pytest.approx(1.0)
    data = json.loads(prof.to_json())
    assert len(data["kernels"]) == len(prof.kernels) and data["macs"] == prof.macs
    text = prof.to_text(top=2)
    assert prof.kernels[0].name in text and "more kernels" in text and "overhead" in text


def test_kernel_families_and_mac_formulas():
    assert kernel_op("arq_qconv2d_nhwc_packed3") == "qconv2d_nhwc_packed"
    assert kernel_op("arq_qconv2d_nhwc") == "qconv2d_nhwc"
    assert kernel_op("fused_arq_qadd2_reshape1") == "qadd"
    assert kernel_op("arq_qconv2d_transpose_nhwc1") == "qconv2d_transpose_nhwc"
    assert kernel_op("transpose12") == "transpose"
    assert kernel_category("transpose", [(1, 2), (2, 1)]) == "layout"
    # conv_transpose: input elements x output channels per group x KH x KW
    x, w_nchw, out = (1, 4, 5, 5), (4, 6, 2, 2), (1, 6, 10, 10)
    assert kernel_macs("qconv2d_transpose", [x, w_nchw, out]) == 4 * 25 * 6 * 4
    w_phase = (2, 2, 2, 2, 4, 6)  # [s_h, s_w, T_h, T_w, C/g, O] of a 3x3 stride-2 kernel
    xn, outn = (1, 5, 5, 4), (1, 10, 10, 6)
    assert kernel_macs("qconv2d_transpose_nhwc", [xn, w_phase, outn], {"kernel": [3, 3]}) == 25 * 4 * 6 * 9
    assert kernel_macs("qmatmul", [(2, 3, 5), (2, 5, 7), (2, 3, 7)]) == 2 * 3 * 7 * 5
    assert kernel_macs("qmatmul", [(2, 5, 3), (2, 5, 7), (2, 3, 7)]) == 2 * 3 * 7 * 5  # transpose_a
    assert kernel_macs("qadd", [(1, 4), (1, 4), (1, 4)]) is None


def test_cli_bench_profile_on_host(tiny, tmp_path, capsys):
    from tvm_arq.deploy import save_model

    model, x = tiny
    lib = save_model(model, tmp_path / "tiny.so")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "prof.json"
    code = cli.main(["bench", str(lib), "--profile", "--input", str(tmp_path / "x.npy"), "--repeat", "2",
                     "--top", "3", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "profile on host" in text and "overhead" in text
    data = json.loads(out.read_text())
    assert data["macs"] == CONV_MACS + DW_MACS + PW_MACS
    assert sum(k["share"] for k in data["kernels"]) == pytest.approx(1.0)
    # bench without --profile still needs a board
    assert cli.main(["bench", str(lib)]) == 1
    assert "give the board" in capsys.readouterr().err


_BOARD_TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-g++")


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in _BOARD_TOOLS) and os.environ.get("CI") != "true",
                    reason=f"emulated boards need {_BOARD_TOOLS} (run `make apt`)")
def test_profile_on_emulated_board():
    from tvm_arq.deploy import EmulatedBoard, deploy

    mod, cal = _tiny()
    model = tvm_arq.build(mod, None, "aarch64", calibration=cal, progress=False)
    with pytest.raises(ValueError, match="does not run here"):
        model.profile(cal[0])
    with EmulatedBoard("aarch64") as b, deploy(model, rpc=b.address, timeout=120) as remote:
        prof = remote.profile(cal[0], repeat=1, min_repeat_ms=1)
    called = {n for n in re.findall(r"call\s+(\S+)", model.executable.as_text()) if not n.startswith("vm.")}
    assert {k.name for k in prof.kernels} == called
    assert prof.device.startswith("board") and "aarch64" in prof.target
    assert sum(k.share for k in prof.kernels) == pytest.approx(1.0)
    assert prof.macs == CONV_MACS + DW_MACS + PW_MACS
    assert prof.end_to_end_us > 0
