"""Tests for tvm_arq.backends: one backend per architecture, selected from any target form."""

from __future__ import annotations

import pytest

from tvm_arq.backends import (
    PORTABLE_VECTOR_CONV,
    PRESETS,
    Arch,
    RuntimeSource,
    TargetBackend,
    aarch64,
    all_backends,
    backend_for_arch,
    board_specs,
    get_backend,
    resolve_target,
    riscv64,
    runtime_recipe,
    x86_64,
)
from tvm_arq.backends.export import ELF_MACHINE


def test_every_architecture_has_one_backend() -> None:
    assert {b.arch for b in all_backends()} == set(Arch)
    for backend in all_backends():
        assert isinstance(backend, TargetBackend)
        assert backend_for_arch(backend.arch.value) is backend
        assert set(backend.presets) <= set(PRESETS)


@pytest.mark.parametrize(
    ("spec", "cls", "conv", "fallback", "depthwise"),
    [
        ("x86-vnni", x86_64.X86Backend, x86_64.VNNI_CONV, x86_64.VECTOR_CONV, x86_64.DEPTHWISE),
        ("aarch64", aarch64.AArch64Backend, aarch64.NEON_CONV, PORTABLE_VECTOR_CONV, aarch64.DEPTHWISE),
        ("aarch64-dotprod", aarch64.AArch64Backend, aarch64.SDOT_CONV, PORTABLE_VECTOR_CONV, aarch64.DEPTHWISE),
        ("riscv64", riscv64.RiscV64Backend, riscv64.RVV_CONV, riscv64.RVV_CONV, riscv64.DEPTHWISE),
        ("riscv64-rvv", riscv64.RiscV64Backend, riscv64.RVV_CONV, riscv64.RVV_CONV, riscv64.DEPTHWISE),
    ],
)
def test_layout_plan_from_target_features(spec, cls, conv, fallback, depthwise) -> None:
    for form in (spec, resolve_target(spec), resolve_target(spec).target):
        backend = get_backend(form)
        assert type(backend) is cls
        plan = backend.layout_plan()
        assert (plan.conv, plan.conv_fallback, plan.depthwise) == (conv, fallback, depthwise)


def test_unbound_backend_has_no_plan() -> None:
    with pytest.raises(ValueError, match="not bound"):
        backend_for_arch("riscv64").layout_plan()
    with pytest.raises(ValueError, match="serves"):
        x86_64.X86Backend(resolve_target("aarch64"))


def test_target_facts_come_from_the_backend() -> None:
    for spec in ("aarch64", "riscv64-rvv"):
        info = resolve_target(spec)
        backend = get_backend(info)
        assert info.act_dtype == backend.act_dtype == "int8"
        assert info.cross_compiler == backend.toolchain.cross_compiler
        assert info.extra_link_options == backend.toolchain.extra_link_options
    assert ELF_MACHINE == {Arch.X86_64: 62, Arch.AARCH64: 183, Arch.RISCV64: 243}


def test_boards_and_runtime_recipes() -> None:
    assert list(board_specs()) == ["aarch64", "riscv64", "riscv64-rvv"]
    assert runtime_recipe("aarch64").source is RuntimeSource.WHEELS
    assert runtime_recipe("riscv64-rvv") is runtime_recipe("riscv64")
    assert runtime_recipe("riscv64").source is RuntimeSource.CROSS_BUILD
    assert runtime_recipe("x86_64") is None
