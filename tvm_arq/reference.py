"""Re-export of the numpy integer reference interpreter (:mod:`tvm_arq.ops.reference`)."""

from .ops.reference import ReferenceInterpreter

__all__ = ["ReferenceInterpreter"]
