"""Helpers shared by several test modules (one copy instead of one per file)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import tvm
from tvm import relax

__all__ = ["assert_not_hung", "conv_module", "record_lines"]


def conv_module() -> tvm.IRModule:
    """fp32 conv2d 1x16x16x16 -> 16 channels, 3x3, padding 1, + ReLU (the weight is a parameter)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 16, 16), "float32"))
    w = relax.Var("w", relax.TensorType((16, 16, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, padding=1))
            z = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(z)
    return bb.get()


def record_lines(work_dir: Path) -> list[str]:
    """The complete (parseable) lines of a MetaSchedule tuning-record file in ``work_dir``, in order."""
    path = work_dir / "database_tuning_record.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(line)
    return out


def assert_not_hung(started: float, timeout: float, what: str = "the call") -> None:
    """Fault tests only: ``what`` (started at ``time.monotonic()`` = ``started``) returned instead of hanging.

    This is not a speed threshold. Without its time-out the call under test would block forever (a stopped,
    killed or busy board); the bound only tells "returned" from "hung", so it is deliberately generous
    (four times the configured time-out plus two minutes) to hold on a loaded 2-core CI machine.
    """
    elapsed = time.monotonic() - started
    bound = 4 * timeout + 120
    assert elapsed < bound, f"{what} took {elapsed:.0f} s with a {timeout:.0f} s time-out: it hung"
