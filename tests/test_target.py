"""Tests for tvm_arq.target: presets, CLI strings, dicts and Target objects."""

from __future__ import annotations

import dataclasses
import platform

import pytest
import tvm
from tvm.target import codegen

from tvm_arq.target import PRESETS, Arch, TargetInfo, resolve_target

ON_X86 = platform.machine() in ("x86_64", "AMD64")
HOST_CPU = str(codegen.llvm_get_system_cpu())


def _attrs(info: TargetInfo) -> dict:
    return {str(k): v for k, v in info.target.export().items()}


def _mattr(info: TargetInfo) -> list[str]:
    return [str(a) for a in _attrs(info).get("mattr", ())]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_resolves(preset: str) -> None:
    info = resolve_target(preset)
    assert isinstance(info.target, tvm.target.Target)
    assert info.target.kind.name == "llvm"
    assert isinstance(info.arch, Arch)
    assert info.act_dtype in ("int8", "uint8")


def test_host_preset_is_real_cpu_not_generic() -> None:
    assert HOST_CPU not in ("", "generic")
    for spec in ("host", "llvm", {"kind": "llvm"}, tvm.target.Target("llvm"), "llvm -mcpu=native"):
        info = resolve_target(spec)
        assert str(_attrs(info)["mcpu"]) == HOST_CPU, spec
        assert info.is_host
        assert info.cross_compiler is None
        assert info.debian_package is None


def test_explicit_generic_is_respected() -> None:
    info = resolve_target({"kind": "llvm", "mcpu": "generic"})
    assert str(_attrs(info)["mcpu"]) == "generic"
    assert info.is_host


@pytest.mark.skipif(not ON_X86, reason="x86-64 host expectations")
def test_host_x86_facts() -> None:
    info = resolve_target("host")
    assert info.arch is Arch.X86_64
    assert info.act_dtype == "uint8"
    assert info.has_vnni == bool(codegen.target_has_features("avx512vnni", info.target))


def test_exact_llvm_mtriple_aarch64_string() -> None:
    info = resolve_target("llvm -mtriple=aarch64")
    attrs = _attrs(info)
    assert str(attrs["mtriple"]) == "aarch64-linux-gnu"
    assert _mattr(info) == ["+neon"]
    assert info.arch is Arch.AARCH64
    assert info.triple == "aarch64-linux-gnu"
    assert info.act_dtype == "int8"
    assert not info.has_dotprod and not info.has_i8mm
    if ON_X86:
        assert not info.is_host
        assert info.cross_compiler == "aarch64-linux-gnu-g++"
        assert info.debian_package == "g++-aarch64-linux-gnu"
    assert info.extra_link_options == ()


def test_aarch64_presets_features() -> None:
    plain = resolve_target("aarch64")
    dot = resolve_target("aarch64-dotprod")
    assert not plain.has_dotprod
    assert dot.has_dotprod and not dot.has_i8mm
    assert _mattr(dot) == ["+neon", "+dotprod"]
    i8mm = resolve_target("llvm -mtriple=aarch64-linux-gnu -mattr=+dotprod,+i8mm")
    assert i8mm.has_i8mm and i8mm.has_dotprod
    assert _mattr(i8mm)[0] == "+neon"  # default prepended


def test_mcpu_implies_features() -> None:
    info = resolve_target("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a76 -num-cores=4")
    assert str(_attrs(info)["mcpu"]) == "cortex-a76"
    assert int(_attrs(info)["num-cores"]) == 4
    assert info.has_dotprod  # Cortex-A76 implements ARMv8.2 dot product


def test_riscv64_defaults_and_rvv() -> None:
    base = resolve_target("riscv64")
    assert base.arch is Arch.RISCV64
    assert str(_attrs(base)["mcpu"]) == "generic-rv64"
    assert _mattr(base) == ["+m", "+a", "+f", "+d", "+c"]
    assert not base.has_rvv
    assert base.extra_link_options == ("-latomic",)
    assert base.act_dtype == "int8"
    if ON_X86:
        assert base.cross_compiler == "riscv64-linux-gnu-g++"
        assert base.debian_package == "g++-riscv64-linux-gnu"

    full = resolve_target("llvm -mtriple=riscv64-linux-gnu -mattr=+m,+a,+f,+d,+c,+v")
    assert full.has_rvv
    assert _mattr(full) == ["+m", "+a", "+f", "+d", "+c", "+v"]
    assert str(_attrs(full)["mcpu"]) == "generic-rv64"

    short = resolve_target("llvm -mtriple=riscv64 -mattr=+v")
    assert short.triple == "riscv64-linux-gnu"
    assert _mattr(short) == ["+m", "+a", "+f", "+d", "+c", "+v"]
    assert resolve_target("riscv64-rvv").has_rvv


def test_cli_option_forms() -> None:
    info = resolve_target("aarch64-dotprod -num-cores 2 -fast-math")
    attrs = _attrs(info)
    assert int(attrs["num-cores"]) == 2
    assert bool(attrs["fast-math"]) is True
    assert info.has_dotprod
    info = resolve_target('{"kind": "llvm", "mtriple": "aarch64"}')
    assert info.triple == "aarch64-linux-gnu"


def test_dict_form() -> None:
    info = resolve_target({"kind": "llvm", "mtriple": "riscv64-linux-gnu", "mattr": "+v"})
    assert info.has_rvv
    assert _mattr(info) == ["+m", "+a", "+f", "+d", "+c", "+v"]
    info = resolve_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]})
    assert info.has_dotprod


def test_target_object_form() -> None:
    tgt = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+i8mm"]})
    info = resolve_target(tgt)
    assert info.arch is Arch.AARCH64
    assert info.has_i8mm
    assert resolve_target(info) is info
    # round trip through the plain dict
    again = resolve_target(info.to_dict())
    assert _attrs(again) == _attrs(info)


@pytest.mark.skipif(not ON_X86, reason="x86-64 host expectations")
def test_x86_vnni_preset() -> None:
    info = resolve_target("x86-vnni")
    assert info.has_vnni
    assert info.arch is Arch.X86_64
    assert info.act_dtype == "uint8"
    assert info.cross_compiler is None
    host_vnni = bool(codegen.llvm_cpu_has_features("avx512vnni", resolve_target("host").target))
    assert info.is_host == host_vnni


@pytest.mark.skipif(not ON_X86, reason="x86-64 host expectations")
def test_foreign_x86_cpu_not_runnable_if_features_missing() -> None:
    host_feats = set(codegen.llvm_get_cpu_features(resolve_target("host").target))
    info = resolve_target({"kind": "llvm", "mcpu": "sapphirerapids"})
    assert info.is_host == ("amx-int8" in host_feats)


@pytest.mark.parametrize(
    "bad",
    [
        "bogus",
        "cuda",
        "",
        "llvm -nosuchoption=1",
        "llvm -mtriple",
        "llvm -num-cores=x",
        "llvm -mtriple=armv7-linux-gnueabihf",
        "llvm -mcpu=notacpu",
        "llvm -mtriple=aarch64 -mcpu=native",
        "llvm stray",
        '{"kind": "llvm"',
        {"kind": "cuda"},
        {"kind": "llvm", "nosuchoption": 1},
        42,
    ],
)
def test_bad_specs_raise_value_error_listing_forms(bad: object) -> None:
    with pytest.raises(ValueError) as err:
        resolve_target(bad)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "Accepted target forms" in msg
    for preset in PRESETS:
        assert preset in msg
    assert "llvm -mtriple=aarch64" in msg


def test_target_info_is_frozen() -> None:
    info = resolve_target("aarch64")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.arch = Arch.X86_64  # type: ignore[misc]
    assert "aarch64-linux-gnu" in str(info)
