"""Integer kernels (TE) by name; :mod:`tvm_arq.reference` holds a numpy twin under the same name."""

from . import generic

#: kernel name -> TE compute function. Every kernel takes its tensor operands positionally and its
#: constants as keyword arguments (JSON-serializable), which are stored on the PrimFunc as
#: ``arq.op`` / ``arq.params`` so that the reference interpreter can replay it.
KERNELS = {
    "qconv2d": generic.qconv2d_nchw,
    "qdense": generic.qdense,
    "qadd": generic.qrescale_sum,
    "qconcat": generic.qconcat,
    "qmaxpool2d": generic.qmaxpool2d_nchw,
    "qavgpool2d": generic.qavgpool2d_nchw,
    "qmean_hw": generic.qmean_hw,
    "qclamp": generic.qclamp,
    "qlut": generic.qlut,
    "qmul": generic.qmul,
    "qresize_nearest": generic.qresize_nearest,
    "qresize_bilinear": generic.qresize_bilinear,
    "qpad": generic.qpad,
    "qsoftmax": generic.qsoftmax,
    "quantize": generic.quantize,
    "dequantize": generic.dequantize,
}

__all__ = ["KERNELS", "generic"]
