"""Per-layer quantization report: what every quantization point got, and what it cost in SQNR.

For every quantization point of a :class:`~tvm_arq.model.QuantizedModel` the report lists the range
kind the scheme chose (with the hybrid rule that fired), the clipping range ``[alpha, beta]``, scale,
zero point and storage dtype, and the signal-to-quantization-noise ratio against fp32 measured on
calibration data:

``sim SQNR``
    fp32 tensor (the float module with the points exposed, :class:`~tvm_arq.passes.InsertCalibration`)
    against the same tensor in the fake-quantized QDQ module, i.e. its ``<name>_dq`` binding. This is the
    value the integer model carries for that tensor (dequantized), so the error accumulated upstream is
    included.
``own SQNR``
    fp32 tensor against ``dequantize(quantize(fp32 tensor))`` with the tensor's own parameters: the error of
    this tensor's clipping range and rounding alone. A low sim SQNR with a high own SQNR points upstream.

The end-to-end output SQNR of the real integer build (:meth:`QuantizedModel.run`) and of the QDQ
simulation are reported too, as are the ops that ran in float (fallbacks) and why.

All statistics are streamed: per tensor only scalar energy sums are kept, one sample's activations at a
time, so memory does not grow with the number of samples.

Modules: :mod:`.stats` (streaming accumulators), :mod:`.measure` (:func:`report`), :mod:`.records`
(:class:`QuantReport` and its JSON), :mod:`.render` (text tables), :mod:`.plot` (:func:`plot_sqnr`). The
``tvm-arq report`` command is defined with the other commands of the command line.

``SQNR = 10 log10(sum(x_fp32^2) / sum((x_fp32 - x_quant)^2))`` over all elements of all samples.
"""

from .measure import DQ_SUFFIX, report
from .plot import plot_sqnr
from .records import REPORT_VERSION, FallbackOp, OutputReport, QuantReport, TensorReport
from .render import compare_text
from .stats import SqnrAccumulator, sqnr_db

__all__ = [
    "DQ_SUFFIX",
    "REPORT_VERSION",
    "FallbackOp",
    "OutputReport",
    "QuantReport",
    "SqnrAccumulator",
    "TensorReport",
    "compare_text",
    "plot_sqnr",
    "report",
    "sqnr_db",
]
