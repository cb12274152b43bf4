"""Tests for tvm_arq.deploy.export: cross-linking shared objects for aarch64 and riscv64."""

from __future__ import annotations

import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_arq.deploy.export import ExportError, export_library, read_elf_machine
from tvm_arq.target import resolve_target

EM_X86_64, EM_AARCH64, EM_RISCV = 62, 183, 243
ET_DYN = 3


def _matmul_relu_module() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    w = relax.Var("w", relax.TensorType((8, 16), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, w))
            z = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(z)
    return bb.get()


def _elf_header(path: Path) -> tuple[int, int, int]:
    """(EI_CLASS, e_type, e_machine) read independently of the module under test."""
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[5] == 1, "expected little endian"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    return data[4], e_type, e_machine


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (make apt)")


@pytest.mark.parametrize(
    ("spec", "compiler", "machine"),
    [
        ("llvm -mtriple=aarch64", "aarch64-linux-gnu-g++", EM_AARCH64),
        ("aarch64-dotprod", "aarch64-linux-gnu-g++", EM_AARCH64),
        ("riscv64", "riscv64-linux-gnu-g++", EM_RISCV),
        ("llvm -mtriple=riscv64-linux-gnu -mattr=+m,+a,+f,+d,+c,+v", "riscv64-linux-gnu-g++", EM_RISCV),
    ],
)
def test_cross_export_is_elf_shared_object_for_machine(
    tmp_path: Path, spec: str, compiler: str, machine: int
) -> None:
    _needs(compiler)
    info = resolve_target(spec)
    ex = tvm.compile(_matmul_relu_module(), info.target)
    out = export_library(ex, tmp_path / "model.so", info)
    assert out == (tmp_path / "model.so").resolve()
    ei_class, e_type, e_machine = _elf_header(out)
    assert ei_class == 2  # 64-bit
    assert e_type == ET_DYN
    assert e_machine == machine
    assert read_elf_machine(out) == machine


def test_riscv_export_is_double_float_abi(tmp_path: Path) -> None:
    _needs("riscv64-linux-gnu-g++")
    info = resolve_target("riscv64")
    out = export_library(tvm.compile(_matmul_relu_module(), info.target), tmp_path / "m.so", info)
    data = out.read_bytes()
    (e_flags,) = struct.unpack_from("<I", data, 0x30)
    assert e_flags & 0x6 == 0x4  # EF_RISCV_FLOAT_ABI_DOUBLE: links against Debian's lp64d glibc


def test_host_export_loads_and_runs(tmp_path: Path) -> None:
    info = resolve_target("host")
    ex = tvm.compile(_matmul_relu_module(), info.target)
    out = export_library(ex, tmp_path / "host.so", info)
    assert _elf_header(out)[2] == EM_X86_64 or not info.triple.startswith("x86_64")
    lib = tvm.runtime.load_module(str(out))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype("float32")
    w = rng.standard_normal((8, 16)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x, tvm.cpu()), tvm.runtime.tensor(w, tvm.cpu())).numpy()
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)


def test_tar_needs_no_linker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = resolve_target("llvm -mtriple=aarch64")
    ex = tvm.compile(_matmul_relu_module(), info.target)
    only_tar = tmp_path / "only-tar-bin"  # TVM archives with `tar -czf`; no compiler is needed
    only_tar.mkdir()
    for tool in ("tar", "gzip"):
        exe = shutil.which(tool)
        assert exe is not None
        (only_tar / tool).symlink_to(exe)
    monkeypatch.setenv("PATH", str(only_tar))
    out = export_library(ex, tmp_path / "model.tar", info)
    with tarfile.open(out) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".o")]
        assert members
        obj = tar.extractfile(members[0])
        assert obj is not None
        header = obj.read(20)
    assert struct.unpack_from("<H", header, 18)[0] == EM_AARCH64


@pytest.mark.parametrize(
    ("spec", "compiler", "package"),
    [
        ("llvm -mtriple=aarch64", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
        ("riscv64", "riscv64-linux-gnu-g++", "g++-riscv64-linux-gnu"),
    ],
)
def test_missing_cross_compiler_names_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, compiler: str, package: str
) -> None:
    info = resolve_target(spec)
    ex = tvm.compile(_matmul_relu_module(), info.target)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ExportError) as err:
        export_library(ex, tmp_path / "model.so", info)
    assert isinstance(err.value, RuntimeError)
    msg = str(err.value)
    assert compiler in msg
    assert f"apt-get install {package}" in msg
    assert not (tmp_path / "model.so").exists()


def test_arch_mismatch_is_reported(tmp_path: Path) -> None:
    ex = tvm.compile(_matmul_relu_module(), resolve_target("riscv64").target)
    with pytest.raises(ExportError, match="riscv64"):
        export_library(ex, tmp_path / "model.so", "aarch64")


def test_read_elf_machine_rejects_non_elf(tmp_path: Path) -> None:
    p = tmp_path / "x.so"
    p.write_bytes(b"not an elf file at all")
    with pytest.raises(ValueError):
        read_elf_machine(p)
