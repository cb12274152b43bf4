"""tvm_arq: activation-redistribution hybrid asymmetric int8 quantization for Apache TVM."""

from .config import Calibrator, QuantConfig, RangeKind, Scheme

__all__ = ["Calibrator", "QuantConfig", "RangeKind", "Scheme"]
__version__ = "0.1.0"
