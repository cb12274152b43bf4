"""What the benchmark scripts share to run onnxruntime's ``quantize_static`` on a model (the onnxruntime rows of
``bench_accuracy``, ``bench_latency`` and ``bench_qdq``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["calibration_reader", "qdq_ready_model"]


def qdq_ready_model(model: Any) -> Any:
    """The model as an ``onnx.ModelProto`` (loaded if a path) at opset 13 or later: per-channel QDQ
    (``DequantizeLinear`` with an ``axis``) needs opset 13."""
    import onnx

    model = model if hasattr(model, "graph") else onnx.load(str(model))
    if next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13) < 13:
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
    return model


def calibration_reader(input_name: str, samples: Iterable[np.ndarray]) -> Any:
    """An onnxruntime ``CalibrationDataReader`` feeding ``samples`` (batch-1 arrays) to ``input_name`` once."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    return _Reader()
