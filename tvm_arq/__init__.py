"""tvm_arq: activation-redistribution hybrid asymmetric int8 quantization for Apache TVM."""

from . import deploy  # callable package: tvm_arq.deploy(model, rpc=...) / tvm_arq.deploy.EmulatedBoard
from .build import build
from .config import Calibrator, QuantConfig, RangeKind, Scheme
from .frontend import from_onnx
from .model import QuantizedModel
from .target import resolve_target

__all__ = ["Calibrator", "QuantConfig", "QuantizedModel", "RangeKind", "Scheme", "build", "deploy", "from_onnx",
           "resolve_target"]
__version__ = "0.1.0"
