"""Random small float CNN graphs (Relax) built from every op the quantizer supports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax import op as R

OPS = ("conv", "dwconv", "gconv", "add", "relu", "clip", "maxpool", "avgpool", "concat", "dense_head")


@dataclass
class Spec:
    channels: int
    size: int
    ops: list[str]
    seed: int
    act: str = "relu"  # epilogue of convs: none | relu | relu6 | clip_sym


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

    with bb.function("main", [x]):
        with bb.dataflow():
            cur = x
            cur_c = c
            history = []
            for op in spec.ops:
                h = int(cur.ty.shape.values[2])
                if op == "conv":
                    k = int(rng.choice([1, 3]))
                    stride = int(rng.choice([1, 2])) if h >= 4 else 1
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
                    same = [t for t in history if tuple(t.ty.shape.values) == tuple(cur.ty.shape.values)]
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
                    same = [t for t in history if tuple(t.ty.shape.values)[2:] == tuple(cur.ty.shape.values)[2:]]
                    other = same[-1] if same else cur
                    cur = bb.emit(R.concat([cur, other], axis=1))
                    cur_c = int(cur.ty.shape.values[1])
                history.append(cur)
            g = bb.emit(R.mean(cur, axis=[2, 3], keepdims=True))
            f = bb.emit(R.reshape(g, (1, cur_c)))
            d = bb.emit(R.matmul(f, w(cur_c, 5, scale=0.5)))
            d = bb.emit(R.add(d, w(5, scale=0.1)))
            out = bb.emit_output(d)
        bb.emit_func_output(out)
    return bb.get()


def calibration_set(mod, n: int, seed: int = 1, skew: float = 0.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in mod["main"].params[0].ty.shape.values)
    return [(rng.normal(size=shape) + skew).astype("float32") for _ in range(n)]
