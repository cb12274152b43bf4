"""Relax passes of the quantizer (each a ``tvm.transform`` module pass usable in a ``Sequential``)."""

from .analysis import QuantPlan, plan_quantization, recognize_blocks
from .annotate import AnnotateQuantization
from .insert_calibration import InsertCalibration
from .realize import RealizeInteger

__all__ = ["AnnotateQuantization", "InsertCalibration", "QuantPlan", "RealizeInteger", "plan_quantization", "recognize_blocks"]
