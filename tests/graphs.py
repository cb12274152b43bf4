"""Random small float CNN graphs (Relax) built from every op the quantizer supports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax import op as R

#: ops of the random graphs; ``dense_head`` (always appended) must stay last
OPS = (
    "conv", "dwconv", "gconv", "add", "relu", "clip", "maxpool", "avgpool", "concat",
    # lookup-table activations, in the forms the ONNX importer produces
    "silu", "hardswish", "se", "sigmoid", "tanh", "leaky", "prelu", "gelu",
    # integer-domain data movement and element-wise product
    "mul", "resize", "pad", "slice", "split", "transpose",
    "dense_head",
)


@dataclass
class Spec:
    channels: int
    size: int
    ops: list[str]
    seed: int
    act: str = "relu"  # epilogue of convs: none | relu | relu6 | clip_sym
    softmax: bool = False  # end the dense head with a softmax


def hardswish_decomposed(bb: relax.BlockBuilder, x, variant: int):
    """hardswish in one of the decomposed forms importers produce."""
    three, six = relax.const(3.0), relax.const(6.0)
    if variant == 0:  # ONNX HardSwish: x * (clip(x + 3, 0, 6) / 6)
        t = bb.emit(R.clip(bb.emit(R.add(x, three)), 0, 6))
        return bb.emit(R.multiply(x, bb.emit(R.divide(t, six))))
    if variant == 1:  # PP-OCR: (x * clip(x + 3, 0, 6)) / 6
        t = bb.emit(R.clip(bb.emit(R.add(x, three)), 0, 6))
        return bb.emit(R.divide(bb.emit(R.multiply(x, t)), six))
    # x * hard_sigmoid(x) with hard_sigmoid = clip(x / 6 + 0.5, 0, 1)
    h = bb.emit(R.clip(bb.emit(R.add(bb.emit(R.multiply(relax.const(1 / 6), x)), relax.const(0.5))), 0, 1))
    return bb.emit(R.multiply(h, x))


def hard_sigmoid(bb: relax.BlockBuilder, x, alpha: float = 0.2, beta: float = 0.5):
    """ONNX HardSigmoid as imported: clip(alpha * x + beta, 0, 1)."""
    return bb.emit(R.clip(bb.emit(R.add(bb.emit(R.multiply(relax.const(alpha), x)), relax.const(beta))), 0, 1))


def build_graph(spec: Spec) -> relax.Function:
    rng = np.random.default_rng(spec.seed)
    c = spec.channels
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, spec.size, spec.size), "float32"))

    def w(*shape, scale=0.5):
        return relax.const((rng.normal(size=shape) * scale).astype("float32"))

    def epilogue(y, cout):
        y = bb.emit(R.add(y, w(1, cout, 1, 1, scale=0.3)))
        if spec.act == "relu":
            y = bb.emit(R.nn.relu(y))
        elif spec.act == "relu6":
            y = bb.emit(R.clip(y, 0.0, 6.0))
        elif spec.act == "clip_sym":
            y = bb.emit(R.clip(y, -2.0, 3.0))
        return y

    def shape(t):
        return tuple(int(d) for d in t.ty.shape.values)

    with bb.function("main", [x]):
        with bb.dataflow():
            cur = x
            cur_c = c
            history = []
            for op in spec.ops:
                h, wd = shape(cur)[2:]
                if op == "conv":
                    k = int(rng.choice([1, 3]))
                    stride = int(rng.choice([1, 2])) if min(h, wd) >= 4 else 1
                    cout = int(rng.choice([4, 8]))
                    cur = bb.emit(R.nn.conv2d(cur, w(cout, cur_c, k, k, scale=1.0 / np.sqrt(cur_c * k * k)),
                                              strides=stride, padding=k // 2))
                    cur = epilogue(cur, cout)
                    cur_c = cout
                elif op == "dwconv":
                    cur = bb.emit(R.nn.conv2d(cur, w(cur_c, 1, 3, 3, scale=0.4), padding=[1, 0, 1, 2],
                                              groups=cur_c))
                    cur = epilogue(cur, cur_c)
                elif op == "gconv" and cur_c % 2 == 0:
                    cur = bb.emit(R.nn.conv2d(cur, w(cur_c, cur_c // 2, 3, 3, scale=0.3), padding=1, groups=2,
                                              dilation=1))
                    cur = epilogue(cur, cur_c)
                elif op == "add":
                    same = [t for t in history if shape(t) == shape(cur)]
                    if same:
                        cur = bb.emit(R.add(cur, same[-1]))
                        if rng.random() < 0.5:
                            cur = bb.emit(R.nn.relu(cur))
                elif op == "relu":
                    cur = bb.emit(R.nn.relu(cur))
                elif op == "clip":
                    cur = bb.emit(R.clip(cur, -1.0, 1.5))
                elif op == "maxpool" and h >= 2:
                    cur = bb.emit(R.nn.max_pool2d(cur, (2, 2), (2, 2), padding=(0, 0, 1, 1) if h % 2 else (0, 0, 0, 0)))
                elif op == "avgpool" and h >= 3:
                    cur = bb.emit(R.nn.avg_pool2d(cur, (3, 3), (1, 1), padding=(1, 1, 1, 1),
                                                  count_include_pad=bool(rng.random() < 0.5)))
                elif op == "concat":
                    same = [t for t in history if shape(t)[2:] == shape(cur)[2:]]
                    other = same[-1] if same else cur
                    cur = bb.emit(R.concat([cur, other], axis=1))
                    cur_c = shape(cur)[1]
                elif op == "silu":  # as YOLOX imports it: sigmoid + multiply
                    cur = bb.emit(R.multiply(cur, bb.emit(R.sigmoid(cur))))
                elif op == "hardswish":
                    cur = hardswish_decomposed(bb, cur, int(rng.integers(0, 3)))
                elif op == "se":  # squeeze-excitation: x * hard_sigmoid(conv(mean(x))), broadcast over H, W
                    g = bb.emit(R.mean(cur, axis=[2, 3], keepdims=True))
                    g = bb.emit(R.nn.conv2d(g, w(cur_c, cur_c, 1, 1, scale=1.0 / np.sqrt(cur_c))))
                    g = hard_sigmoid(bb, bb.emit(R.add(g, w(1, cur_c, 1, 1, scale=0.3))))
                    cur = bb.emit(R.multiply(cur, g))
                elif op == "sigmoid":
                    cur = bb.emit(R.sigmoid(cur))
                elif op == "tanh":
                    cur = bb.emit(R.tanh(cur))
                elif op == "leaky":
                    cur = bb.emit(R.nn.leakyrelu(cur, float(rng.choice([0.01, 0.1, 0.2]))))
                elif op == "prelu":
                    cur = bb.emit(R.nn.prelu(cur, relax.const(rng.uniform(-0.5, 0.8, size=cur_c).astype("float32"))))
                elif op == "gelu":
                    cur = bb.emit(R.nn.gelu(cur) if rng.random() < 0.5 else R.nn.gelu_tanh(cur))
                elif op == "mul":
                    same = [t for t in history if shape(t) == shape(cur)]
                    if same:
                        cur = bb.emit(R.multiply(same[-1], cur))
                elif op == "resize":
                    if rng.random() < 0.5:
                        oh, ow = (2 * h, 2 * wd) if max(h, wd) <= 8 else (h // 2, wd // 2)
                        cur = bb.emit(R.image.resize2d(cur, (oh, ow), method="nearest_neighbor",
                                                       coordinate_transformation_mode="asymmetric",
                                                       rounding_method="floor"))
                    else:
                        mode = str(rng.choice(["half_pixel", "align_corners", "asymmetric"]))
                        cur = bb.emit(R.image.resize2d(cur, (h + 3, max(2, wd - 1)), method="linear",
                                                       coordinate_transformation_mode=mode))
                elif op == "pad":
                    cur = bb.emit(R.nn.pad(cur, [0, 0, 0, 0, 1, 0, 0, 2]))
                elif op == "slice" and min(h, wd) >= 3:
                    cur = bb.emit(R.strided_slice(cur, axes=[2, 3], begin=[1, 0], end=[h, wd], strides=[1, 2]))
                elif op == "split" and cur_c % 2 == 0:
                    parts = bb.emit(R.split(cur, 2, axis=1))
                    a = bb.emit(relax.TupleGetItem(parts, 0))
                    b = bb.emit(R.sigmoid(bb.emit(relax.TupleGetItem(parts, 1))))
                    cur = bb.emit(R.concat([b, a], axis=1))
                elif op == "transpose":
                    cur = bb.emit(R.permute_dims(cur, [0, 1, 3, 2]))
                history.append(cur)
            g = bb.emit(R.mean(cur, axis=[2, 3], keepdims=True))
            f = bb.emit(R.reshape(g, (1, cur_c)))
            d = bb.emit(R.matmul(f, w(cur_c, 5, scale=0.5)))
            d = bb.emit(R.add(d, w(5, scale=0.1)))
            if spec.softmax:
                d = bb.emit(R.nn.softmax(d, axis=-1))
            out = bb.emit_output(d)
        bb.emit_func_output(out)
    return bb.get()


def calibration_set(mod, n: int, seed: int = 1, skew: float = 0.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in mod["main"].params[0].ty.shape.values)
    return [(rng.normal(size=shape) + skew).astype("float32") for _ in range(n)]
