"""The split between the product (``tvm_arq``) and the benchmark package (``arq_bench``).

- ``tvm_arq`` never imports ``arq_bench`` (AST scan of every module);
- the demo runs as ``python -m arq_bench demo`` (no longer a ``tvm-arq`` subcommand);
- a wheel ships the C++ sources runtime_build compiles (``tvm_arq/_native``) and the bundled model, and
  runtime_build's locator finds them inside the installed package, outside any source checkout;
- the optional dependencies (pillow, matplotlib) fail with an error naming the extra to install.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from arq_bench.mnist import MNIST_CNN_PATH

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (anywhere: top level or in functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_tvm_arq_never_imports_arq_bench() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] == "arq_bench")
        for p in sorted((ROOT / "tvm_arq").rglob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}
    assert not [p for p in (ROOT / "tvm_arq").rglob("*.py") if "arq_bench" in p.read_text()]


def test_demo_is_not_a_tvm_arq_subcommand(capsys) -> None:
    from tvm_arq import cli

    assert cli.main(["demo"]) == 2
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def test_demo_help(capsys) -> None:
    from arq_bench.__main__ import main

    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m arq_bench demo") and "--tune-trials" in out
    assert main(["nope"]) == 2


def test_demo_module_runs_in_a_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "arq_bench", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout


@pytest.mark.slow
def test_demo_runs(capsys, tmp_path) -> None:
    from arq_bench.__main__ import main

    code = main(["demo", "--calib", "4", "--eval", "8", "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert len(json.loads((tmp_path / "d.json").read_text())) == 3 and "hybrid" in out.out


# ------------------------------------------------------------------------------------------- wheel


def test_wheel_ships_native_sources_and_models(tmp_path) -> None:
    """Build a wheel from a copy of the sources, unpack it elsewhere and locate the C++ sources there."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    for name in ("tvm_arq", "arq_bench"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(tmp_path / "dist")],
        cwd=src, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0 and "pip" in proc.stderr and ("connection" in proc.stderr.lower()
                                                          or "network" in proc.stderr.lower()):
        pytest.skip(f"building a wheel needs setuptools/wheel from the index: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tvm_arq-*.whl")

    members = set(zipfile.ZipFile(wheel).namelist())
    native = {str(p.relative_to(ROOT / "tvm_arq")) for p in (ROOT / "tvm_arq" / "_native").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert native >= {"_native/rpc_server/tvm_arq_rpc_server.cc", "_native/tests/support_selftest.cc"}
    assert {f"tvm_arq/{n}" for n in native} <= members
    model = f"arq_bench/models/{MNIST_CNN_PATH.name}"
    assert {model, "arq_bench/zoo.py", "tvm_arq/deploy/runtime_build.py"} <= members

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "TVM_ARQ_NATIVE_DIR"}
    env["PYTHONPATH"] = str(site)  # the unpacked wheel first: not the checkout, not the editable install
    code = ("import tvm_arq, arq_bench.zoo as z; from tvm_arq.deploy.runtime_build import native_dir; "
            "print(tvm_arq.__file__); print(native_dir()); print(z.mnist_cnn())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg, found, model_path = proc.stdout.strip().splitlines()[-3:]
    assert Path(pkg).resolve().is_relative_to(site.resolve())
    assert Path(found).resolve() == (site / "tvm_arq" / "_native").resolve()
    assert Path(model_path).resolve() == (site / model).resolve()


# ------------------------------------------------------------------------------------------- extras


def test_missing_matplotlib_names_the_plot_extra(monkeypatch, tmp_path) -> None:
    from tvm_arq.report import plot_sqnr

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.lines"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"matplotlib: pip install 'tvm_arq\[plot\]'"):
        plot_sqnr({"hybrid": object()}, tmp_path / "x.png")


def test_missing_pillow_names_the_images_extra(monkeypatch, tmp_path) -> None:
    from tvm_arq.samples import load_samples

    (tmp_path / "a.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pillow: pip install 'tvm_arq\[images\]'"):
        load_samples(tmp_path, (1, 1, 28, 28))


def test_bench_accuracy_cache_key_covers_data_model_and_config(monkeypatch, tmp_path) -> None:
    """``--resume`` never pairs new rows with stale ones: a change of the data, the model file or the row
    configuration gives a new cache key, for the fp32 reference row too."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "scripts" / "bench_accuracy.py")
    ba = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_accuracy", ba)  # dataclasses look their module up there
    spec.loader.exec_module(ba)
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"model-v1")
    inputs = {"x": np.zeros((2, 3), "float32")}

    def fake(sizes):
        return ba.Workload("fake", str(model_file), "input", (1, 3), inputs["x"].copy(), [np.ones((1, 3))],
                           {"labels": np.array([1, 2])})

    monkeypatch.setitem(ba.WORKLOADS, "fake", fake)
    fp32, hyb = ba.Config("onnxruntime", "fp32"), ba.Config("tvm_arq", "hybrid", "minmax")
    sizes = ba.Sizes.make(True, None)

    def keys() -> tuple[str, str]:
        ba._data_digest.cache_clear()
        return ba._cache_key("fake", fp32, sizes), ba._cache_key("fake", hyb, sizes)

    base = keys()
    assert base == keys() and base[0] != base[1]
    assert ba._cache_key("fake", ba.Config("tvm_arq", "hybrid", "mse"), sizes) != base[1]
    assert ba._cache_key("fake", fp32, ba.Sizes.make(True, 5)) != base[0]
    inputs["x"] = np.full((2, 3), 0.5, "float32")  # same sizes, different data
    changed = keys()
    assert changed[0] != base[0] and changed[1] != base[1]
    model_file.write_bytes(b"model-v2")  # same path, different model
    assert keys()[0] not in (base[0], changed[0])
    assert str(ba._cache_path(tmp_path, "fake", hyb, sizes)).endswith(f"{keys()[1]}.pkl")
