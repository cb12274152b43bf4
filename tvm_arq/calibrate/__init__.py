"""Streaming calibration: observers that turn calibration activations into clipping ranges.

Usage::

    from tvm_arq.calibrate import make_observer
    obs = make_observer("redistribution")          # or Calibrator.REDISTRIBUTION, kwargs per calibrator
    for sample in calibration_set:
        obs.update(activation(sample))              # any shape; NaN/Inf -> ValueError
    alpha, beta = obs.compute_range(RangeKind.ASYMMETRIC, n_levels=256)

Calibrators (:class:`~tvm_arq.config.Calibrator`):

- ``minmax`` / ``moving_minmax``: global / exponentially averaged per-sample extremes.
- ``histogram``: L2-optimal range along a greedy bin-trimming path of the streaming histogram.
- ``percentile``: percentile of the histogram distribution (``|x|`` for symmetric ranges).
- ``entropy``: KL-divergence range (TensorRT's P/Q construction, every candidate compared at the same
  resolution per quantization level); asymmetric = one joint search of both cuts on the signed histogram.
- ``mse``: one clip factor of the min/max range, exact expected squared error.
- ``output``: every calibrator's range (and a shrink grid) judged by the error at
  the output of the tensor's consumer layers on a calibration subsample (:mod:`.output`).
- ``redistribution``: this project's method (method.md step 5, built from Wei et al., CMES 2024, whose
  full algorithm is not published): the range ``[alpha, beta]`` minimizing the expected squared
  quantize->dequantize error over the streaming histogram, both ends searched independently
  (coarse-to-fine 2-D search on an O(1)-per-candidate approximation, polished with the exact model).

The histogram is a bounded power-of-two lattice that re-bins exactly as the range grows
(:mod:`.histogram`); the error model is in :mod:`.error`; the grids in :mod:`.grid`; the searches in
:mod:`.search`.
"""

from .error import batch_expected_sq_error, expected_sq_error
from .grid import MIN_SCALE, fake_quantize, finalize_range, grid_params, n_steps
from .histogram import LatticeHistogram
from .observers import (
    EntropyObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    RedistributionObserver,
    make_observer,
)
from .output import (
    Consumer,
    OutputObserver,
    OutputSampler,
    choose_candidate,
    conv_consumer,
    dense_consumer,
    layer_norm_consumer,
    softmax_consumer,
)

__all__ = [
    "MIN_SCALE",
    "EntropyObserver",
    "HistogramObserver",
    "LatticeHistogram",
    "MSEObserver",
    "MinMaxObserver",
    "MovingMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "RedistributionObserver",
    "Consumer",
    "OutputObserver",
    "OutputSampler",
    "batch_expected_sq_error",
    "choose_candidate",
    "layer_norm_consumer",
    "softmax_consumer",
    "conv_consumer",
    "dense_consumer",
    "expected_sq_error",
    "fake_quantize",
    "finalize_range",
    "grid_params",
    "make_observer",
    "n_steps",
]
