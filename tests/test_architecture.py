"""Architecture guards: the layer contract (import-linter), no import cycles, file sizes, product/benchmark split."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 700


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{LINT.parent}:/usr/bin:/bin", "PYTHONPATH": str(cwd), "HOME": str(Path.home())}
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_layer_contract_holds():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "broken" not in res.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(("module", "back_import"), [
    ("tvm_arq/config.py", "from tvm_arq import cli as _cli  # deliberate back-import\n"),
    ("tvm_arq/qmath.py", "def _late():\n    from tvm_arq.build import build  # function-level back-import\n    return build\n"),
    ("tvm_arq/config.py", "import arq_bench as _b  # product imports the benchmark package\n"),
])
def test_deliberate_back_import_fails_the_contract(tmp_path, module, back_import):
    for name in ("tvm_arq", "arq_bench"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint(tmp_path).returncode == 0  # the copy itself is clean
    with open(tmp_path / module, "a") as fh:
        fh.write("\n" + back_import)
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    assert "BROKEN" in res.stdout.upper()


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on.add(v)
            if i < len(edges[v]):
                work.append((v, i + 1))
                w = edges[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def test_no_import_cycles():
    """No runtime import cycle among tvm_arq's modules (function-level imports count; imports under
    ``TYPE_CHECKING`` do not run and do not count)."""
    graph = grimp.build_graph("tvm_arq", include_external_packages=False, exclude_type_checking_imports=True)
    modules = {m for m in graph.modules if m.startswith("tvm_arq")}
    cycles = _cycles(graph, modules)
    assert cycles == [], f"import cycles: {cycles}"


def test_no_file_over_700_lines():
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "tvm_arq").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_product_never_imports_the_benchmark_package():
    graph = grimp.build_graph("tvm_arq", "arq_bench", include_external_packages=False)
    offenders = [m for m in graph.modules if m.startswith("tvm_arq")
                 and any(i.startswith("arq_bench") for i in graph.find_modules_directly_imported_by(m))]
    assert offenders == []
