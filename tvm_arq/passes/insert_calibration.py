"""``InsertCalibration``: expose every quantization point as an extra output of ``main``.

The calibration driver runs the returned float module once per sample and streams each extra output
into its observer, then drops it: statistics are accumulated, activations are never stored.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..ops.irutil import Rebuilder
from .analysis import plan_quantization


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.InsertCalibration")
class InsertCalibration:
    """Make ``main`` return ``(original output, point_0, point_1, ...)``.

    Parameters
    ----------
    points
        Names of the tensors to observe; default: the quantization points of
        :func:`~tvm_arq.passes.analysis.plan_quantization`.
    """

    def __init__(self, points: list[str] | None = None, skip_ops: tuple[str, ...] = ()):
        self.points = points
        self.skip_ops = skip_ops

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        points = self.points
        if points is None:
            points = plan_quantization(mod, self.skip_ops).points

        def on_output(rb: Rebuilder, out):
            missing = [p for p in points if p not in rb.env]
            if missing:
                raise KeyError(f"InsertCalibration: no tensor named {missing[:5]} in main")
            return relax.Tuple([out] + [rb.env[p] for p in points])

        return Rebuilder(mod).run(lambda rb, b, v: v, on_output=on_output)
