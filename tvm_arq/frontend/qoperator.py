"""onnxruntime's QOperator format (``QLinearConv`` ...) rewritten into QDQ form (placeholder)."""
from __future__ import annotations

import onnx


def qoperator_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    raise NotImplementedError
