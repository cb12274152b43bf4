"""tvm_arq: activation-redistribution hybrid asymmetric int8 quantization for Apache TVM.

The public verbs are plain functions: :func:`from_onnx`, :func:`build`, :func:`report` (per-layer SQNR
report of a built model) and :func:`deploy` (run a model on a board over TVM RPC); :func:`sensitivity` ranks layers by their
contribution to the output error. ``build``, ``report``
and ``deploy`` share their names with the subpackages that implement them; ``from tvm_arq.report import
QuantReport`` and ``from tvm_arq.deploy import EmulatedBoard`` import from those.
"""

from .budget import AccuracyBudget
from .build import build
from .config import Calibrator, QuantConfig, RangeKind, Scheme
from .deploy.rpc import deploy
from .frontend import from_onnx
from .model import QuantizedModel
from .report import report
from .sensitivity import sensitivity
from .target import resolve_target

__all__ = ["AccuracyBudget", "Calibrator", "QuantConfig", "QuantizedModel", "RangeKind", "Scheme", "build", "deploy", "from_onnx",
           "report", "resolve_target", "sensitivity"]
__version__ = "0.1.0"
