"""Generated assembly of the integer conv kernels per target.

The conv kernels of a converted module (tvm_arq.passes.layout), with their default schedules, must use the
target's integer dot product: ``vpdpbusd`` on x86 AVX-512 VNNI, ``sdot`` on AArch64 ``+dotprod`` (NEON
``smull``/``saddlp`` without it), RISC-V V widening multiply-accumulates (``vwmacc*``). Cross targets are
only compiled (their execution is checked on boards); each conv kernel is compiled on its own so that the
check is per kernel. The assembly comes from ``executable.mod._collect_dso_modules()`` /
``inspect_source("asm")``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.graphs import Spec, build_graph, calibration_set
from tvm_arq.backends import ApplyDefaultSchedules, apply_default_schedule, get_backend
from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.passes.layout import convert_layout as _convert_layout
from tvm_arq.quantize import quantize_module
from tvm_arq.target import resolve_target

CONV_KERNELS = ("qconv2d_nhwc_packed",)


def layout_plan(target):
    """The target backend's kernels (registers its schedule rules)."""
    return get_backend(target).layout_plan()


def convert_layout(mod, target):
    return _convert_layout(mod, layout_plan(target))
HOST = resolve_target("host")


def asm_of(executable) -> str:  # noqa: ANN001 - relax or tirx executable
    """Assembly of every LLVM module of a compiled executable."""
    return "".join(m.inspect_source("asm") for m in executable.mod._collect_dso_modules())


def mnemonics(asm: str) -> set[str]:
    return set(re.findall(r"^\s+([a-z][a-z0-9.]*)\b", asm, re.M))


@pytest.fixture(scope="module")
def graphs() -> dict[str, tvm.IRModule]:
    """The integer module of a small conv network (3x3, stride 2, 1x1, depthwise, dense head), per act dtype."""
    spec = Spec(channels=3, size=12, ops=["conv", "conv", "dwconv", "conv", "silu", "conv"], seed=21, act="relu6")
    mod = build_graph(spec)
    cal = calibration_set(mod, 2, seed=1)
    return {dt: quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), dt, progress=False).int_mod
            for dt in ("int8", "uint8")}


def conv_kernels_asm(int_mod: tvm.IRModule, target: str) -> list[tuple[str, str]]:
    """``(kernel params, assembly)`` of every packed conv kernel, scheduled and compiled for ``target``."""
    info = resolve_target(target)
    lm = convert_layout(int_mod, info)
    out = []
    for gv, f in lm.functions.items():
        if not (isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                and str(f.attrs.get("arq.op", "")) in CONV_KERNELS):
            continue
        sched = apply_default_schedule(f)
        assert sched is not None, gv.name_hint
        ex = tvm.compile(tvm.IRModule({gv.name_hint: sched.with_attr("global_symbol", gv.name_hint)}),
                         target=info.target)
        out.append((str(f.attrs["arq.params"]), asm_of(ex)))
    assert len(out) >= 4  # 3x3 s1, 3x3 s2 / 1x1 convs and the dense head
    return out


@pytest.mark.parametrize("act_dtype", ["int8", "uint8"])
def test_aarch64_dotprod_conv_kernels_use_sdot(graphs: dict[str, tvm.IRModule], act_dtype: str) -> None:
    for params, asm in conv_kernels_asm(graphs[act_dtype], "aarch64-dotprod"):
        assert "sdot" in mnemonics(asm), params
        assert json.loads(params)["domain_dtype"] == "int8"


def test_aarch64_neon_conv_kernels_without_dotprod(graphs: dict[str, tvm.IRModule]) -> None:
    for params, asm in conv_kernels_asm(graphs["int8"], "aarch64"):
        ops = mnemonics(asm)
        assert "sdot" not in ops, params
        assert {"smull", "saddlp"} <= ops or {"smull2", "saddlp"} <= ops, params


@pytest.mark.parametrize("target", ["host", "x86-vnni"])
def test_x86_conv_kernels_use_vpdpbusd(graphs: dict[str, tvm.IRModule], target: str) -> None:
    if target == "host" and not HOST.has_vnni:
        pytest.skip("the host has no AVX-512 VNNI")
    for params, asm in conv_kernels_asm(graphs["uint8"], target):
        assert "vpdpbusd" in mnemonics(asm), params
    # int8 storage: the +128 shift keeps the kernels on vpdpbusd
    for params, asm in conv_kernels_asm(graphs["int8"], target):
        assert "vpdpbusd" in mnemonics(asm), params
        assert json.loads(params)["in_offset"] == 128


@pytest.mark.parametrize("act_dtype", ["int8", "uint8"])
def test_riscv_rvv_conv_kernels_use_widening_macs(graphs: dict[str, tvm.IRModule], act_dtype: str) -> None:
    for params, asm in conv_kernels_asm(graphs[act_dtype], "riscv64-rvv"):
        ops = mnemonics(asm)
        assert any(op.startswith(("vwmacc", "vwmul")) for op in ops), params


def test_riscv_without_v_is_scalar(graphs: dict[str, tvm.IRModule]) -> None:
    for params, asm in conv_kernels_asm(graphs["int8"], "riscv64"):
        assert not any(op.startswith(("vwmacc", "vle", "vsetvli")) for op in mnemonics(asm)), params


@pytest.mark.parametrize("target", ["aarch64-dotprod", "riscv64-rvv"])
def test_whole_cross_modules_compile(graphs: dict[str, tvm.IRModule], target: str) -> None:
    info = resolve_target(target)
    lm = ApplyDefaultSchedules()(convert_layout(graphs["int8"], info))
    ex = tvm.compile(lm, target=info.target)
    assert asm_of(ex)


@pytest.mark.parametrize("target", ["aarch64-dotprod", "riscv64-rvv", "riscv64"])
def test_pools_and_every_window_op_compile_for_cross_targets(target: str) -> None:
    """Regression: the default NHWC average-pool schedule vectorized its window sum, which TVM's RVV
    codegen rejects (``lanes_match``)."""
    spec = Spec(channels=4, size=8, ops=["conv", "dwconv", "add", "maxpool", "conv", "avgpool", "concat"], seed=11)
    mod = build_graph(spec)
    info = resolve_target(target)
    int_mod = quantize_module(mod, calibration_set(mod, 2, seed=3, skew=0.4), QuantConfig(scheme=Scheme.HYBRID),
                              info.act_dtype, progress=False).int_mod
    lm = ApplyDefaultSchedules()(convert_layout(int_mod, info))
    ops = {str(f.attrs.get("arq.op", "")) for f in lm.functions.values()
           if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None}
    assert {"qavgpool2d_nhwc", "qmaxpool2d_nhwc", "qdwconv2d_nhwc"} <= ops
    assert asm_of(tvm.compile(lm, target=info.target))


@pytest.mark.slow
@pytest.mark.skipif(not (HOST.has_vnni and HOST.is_host), reason="needs an AVX-512 VNNI host")
def test_tuned_conv_template_keeps_vpdpbusd_and_is_exact(graphs: dict[str, tvm.IRModule], tmp_path: Path) -> None:
    """MetaSchedule searches the template's tile sizes only: every tuned conv kernel is tensorized."""
    from tvm_arq.ops.reference import ReferenceInterpreter
    from tvm_arq.tune import TuneConfig, compile_tuned, tune

    int_mod = graphs["uint8"]
    lm = convert_layout(int_mod, HOST)
    cfg = TuneConfig(trials=12, trials_per_iter=2, work_dir=tmp_path, num_threads=2, population_size=16,
                     progress=False, op_names=("qconv2d_nhwc_packed",))
    db = tune(lm, HOST, cfg)
    ex = compile_tuned(lm, HOST, db, num_threads=2)
    assert "vpdpbusd" in mnemonics(asm_of(ex))
    x = np.random.default_rng(0).normal(size=(1, 3, 12, 12)).astype("float32")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, ReferenceInterpreter(int_mod).run(x))


@pytest.mark.parametrize("target", ["llvm -mtriple=x86_64-linux-gnu -mcpu=haswell", "x86-vnni", "aarch64",
                                    "aarch64-dotprod", "riscv64", "riscv64-rvv"])
def test_packed_conv_schedule_is_parallel_and_unrolls_only_the_tile(target: str) -> None:
    """Regression: on the templates without a tensor intrinsic (x86 without VNNI, RVV) the init loop nest
    was counted with the reduction loop, so the fused outer loop lost ``parallel`` and was fully unrolled
    (a 1280-iteration unroll took LLVM minutes for one YOLOX conv and ran on one core)."""
    spec = Spec(channels=8, size=24, ops=["conv", "conv"], seed=5)
    mod = build_graph(spec)
    info = resolve_target(target)
    int_mod = quantize_module(mod, calibration_set(mod, 2, seed=1), QuantConfig(scheme=Scheme.HYBRID),
                              info.act_dtype, progress=False).int_mod
    lm = convert_layout(int_mod, info)
    n = 0
    for gv, f in lm.functions.items():
        if not (isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                and str(f.attrs.get("arq.op", "")) in CONV_KERNELS):
            continue
        text = apply_default_schedule(f).script()
        unrolled = [int(e) for e in re.findall(r"T\.unroll\(T\.int64\((\d+)\)\)", text)]
        assert max(unrolled, default=0) <= 64, (gv.name_hint, unrolled)
        assert re.search(r"_fused in T\.parallel\(", text), gv.name_hint
        n += 1
    assert n >= 2
