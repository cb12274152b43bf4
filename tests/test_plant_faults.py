"""CI budget of scripts/plant_faults.py: planted one-LSB faults are caught and named (full run: the script)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plant_faults():
    spec = importlib.util.spec_from_file_location("plant_faults", ROOT / "scripts" / "plant_faults.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["plant_faults"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("plant_faults", None)


def test_small_budget_catches_every_planted_fault(plant_faults, tmp_path, capsys) -> None:
    code = plant_faults.main(["--small", "--layouts", "x86", "--max-kernels", "4", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last == "caught 8/8 planted faults", out[-2000:]
    assert code == 0
    assert (tmp_path / "plant_faults.md").read_text().strip().endswith(last)
    # the twins were restored: a second, unplanted check is clean
    from tvm_arq.ops.registry import REGISTRY

    assert all(kd.reference is None or kd.reference.__name__ != "faulty" for kd in REGISTRY.kernels.values())
