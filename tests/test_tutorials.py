"""Every tutorial runs to the end with a small budget (TVM_ARQ_QUICK=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
#: files a tutorial must write (besides anything else it writes)
EXPECTED = {
    "03_tune_and_deploy": ["03_tune_and_deploy.json", "03_mnist_hybrid_tuned.so"],
    "04_latency": ["04_latency.json", "04_latency.png"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(script, tmp_path):
    env = dict(os.environ, TVM_ARQ_QUICK="1", TVM_ARQ_OUT=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(tmp_path.iterdir()), "tutorial wrote no output"
    for name in EXPECTED.get(script.stem, []):
        assert (tmp_path / name).is_file(), f"{script.name} did not write {name}"
    if script.stem == "03_tune_and_deploy":
        result = json.loads((tmp_path / "03_tune_and_deploy.json").read_text())
        # the figures the tutorial computed, not a flag it wrote: every checked sample matched bit for bit
        assert result["checked_samples"] >= 1 and result["mismatches"] == []
        assert result["bitexact_samples"] == result["checked_samples"] and result["bitexact"] is True
        assert 0 <= result["correct"] <= result["checked_samples"] and result["latency"]["median_ms"] > 0
    if script.stem == "04_latency":
        result = json.loads((tmp_path / "04_latency.json").read_text())["results"]
        assert set(result) == {"x86 host", "aarch64 (emulated)"}
        assert all(set(rows) == {"fp32", "symmetric", "hybrid"} for rows in result.values())
