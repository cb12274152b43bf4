"""``scripts/bench_latency.py``: the PP-OCR workload definitions and the per-run sections of its report.

Cheap: no tuning, no TVM build (the workloads only render their calibration samples).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from arq_bench import assets

ROOT = Path(__file__).resolve().parent.parent


def _bench_latency():  # noqa: ANN202 - the script module
    spec = importlib.util.spec_from_file_location("bench_latency", ROOT / "scripts" / "bench_latency.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_ppocr_models_are_benchmarked() -> None:
    bl = _bench_latency()
    assert "ppocr_cls" in bl.DEFAULT_MODELS
    assert {"ppocr_cls", "ppocr_rec", "ppocr_det"} <= set(bl.WORKLOADS)
    args = bl.parse_args(["--models", "ppocr_rec", "ppocr_det", "--run", "other"])
    assert args.models == ["ppocr_rec", "ppocr_det"] and args.run == "other"


@pytest.mark.parametrize(("name", "shape"), [("ppocr_rec", (1, 3, 48, 320)), ("ppocr_det", (1, 3, 256, 256))])
def test_ppocr_workloads(name: str, shape: tuple[int, ...]) -> None:
    if not assets.is_cached(name):
        pytest.skip(f"asset {name} not cached")
    w = _bench_latency().WORKLOADS[name](2)
    assert w.shape == shape and w.sample.shape == shape and w.sample.dtype == np.float32
    assert len(w.calibration) == 2 and all(c.shape == shape for c in w.calibration)
    assert not np.array_equal(w.calibration[0], w.sample)


def _records(model: str, ms: float) -> list[dict]:
    return [{"model": model, "variant": v, "threads": 2, "median_ms": ms, "p90_ms": ms, "trials": 0}
            for v in ("tvm_int8_hybrid", "ort_int8")]


def test_a_named_run_keeps_the_main_run(tmp_path: Path) -> None:
    bl = _bench_latency()
    meta = {"command": "python scripts/bench_latency.py", "machine": "host A", "target": "t", "threads": 2,
            "trials": 8, "int8_db": "one", "loadavg_start": "0"}
    bl.write_results(_records("mnist_cnn", 1.0), tmp_path, meta)
    bl.write_results(_records("ppocr_rec", 2.0), tmp_path, {**meta, "machine": "host B"}, run="b")
    bl.write_results(_records("mnist_cnn", 3.0), tmp_path, meta)  # re-running the main run keeps run b
    data = json.loads((tmp_path / "latency.json").read_text())
    assert {r["model"] for r in data["records"]} == {"mnist_cnn"}
    assert data["records"][0]["median_ms"] == 3.0
    assert {r["model"] for r in data["runs"]["b"]["records"]} == {"ppocr_rec"}
    md = (tmp_path / "latency.md").read_text()
    assert md.index("## Main run: host A") < md.index("## Run `b`: host B")
    assert "| ppocr_rec | 2 | - | - | 1.00 | - | - |" in md
