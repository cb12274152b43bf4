"""Experiment (issue 12 item 2): does a better per-layer weight rounding beat round-to-nearest + bias correction?

EfficientNet-Lite0, **weights only** quantized (per-output-channel symmetric int8, scale = max|w| / 127), activations
left in float, run by onnxruntime, so the measured loss is the weights' alone. Agreement of top-1 with the fp32
model on crops of the evaluation photos (``assets.natural_photos(extended=True)``, split ``eval``); the layer
statistics come from crops of the calibration photos (split ``calib``). Rounding modes:

- ``rtn``: round to nearest (what tvm_arq ships);
- ``gptq``: Hessian-aware sequential rounding (GPTQ / OBQ): weights of a row are rounded one input at a time and
  the error is spread over the not-yet-rounded inputs through the inverse of ``H = E[x x^T]`` of the layer's
  im2col input (per channel for depthwise convs), dampened by 1 % of its mean diagonal;
- ``masked-gptq``: as ``gptq`` with ``H`` summed only over output positions inside the following ReLU6's
  window (0 < y < 6; errors where the activation clips do not propagate), per output channel (positions
  subsampled, 384 per image);
- ``+bc``: bias correction, ``(W - Q) E[x]`` added to the bias (tvm_arq does this by default).

Usage::

    python scripts/experiments/weight_rounding.py --crops 1000 --calib 32 --modes rtn,rtn+bc,gptq,gptq+bc
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.lib.stride_tricks import sliding_window_view
from onnx import helper, numpy_helper

from arq_bench import assets, datasets, zoo


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _top1(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = _session(model)
    return np.array([int(s.run(None, {"input": x[i : i + 1]})[0].argmax()) for i in range(len(x))])


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}


def _gptq(w: np.ndarray, h: np.ndarray, s: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """Rows ``w`` (O, K) rounded to the grid ``s`` (O, 1) minimizing ``e^T h e`` sequentially; dequantized."""
    wk = w.astype(np.float64).copy()
    k = wk.shape[1]
    h = h.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * np.mean(np.diag(h)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros_like(wk)
    for j in range(k):
        q[:, j] = np.clip(np.round(wk[:, j] / s[:, 0]), -127, 127) * s[:, 0]
        err = (wk[:, j] - q[:, j]) / u[j, j]
        wk[:, j + 1 :] -= np.outer(err, u[j, j + 1 :])
    return q


class LayerStats:
    """Streaming im2col statistics of one Conv / Gemm input: ``H`` (shared, or per channel for depthwise),
    the input mean, and optionally per-output-channel ``H`` masked to the ReLU6 window."""

    def __init__(self, node: onnx.NodeProto, w: np.ndarray, window: tuple[float, float] | None, masked: bool):
        self.node, self.w, self.window, self.masked = node, w, window, masked
        self.h: np.ndarray | float = 0.0
        self.hm: np.ndarray | float = 0.0
        self.total: np.ndarray | float = 0.0
        self.count = 0
        a = _attrs(node)
        self.depthwise = node.op_type == "Conv" and a.get("group", 1) > 1
        self.rng = np.random.default_rng(0)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.node.op_type == "Gemm":
            cols = x.reshape(1, -1).astype(np.float64)
            self.h = self.h + cols.T @ cols
            self.total, self.count = self.total + cols.sum(0), self.count + 1
            return
        a = _attrs(self.node)
        st, p = a.get("strides", [1, 1])[0], a.get("pads", [0, 0, 0, 0])
        kh, kw = self.w.shape[2:]
        xp = np.pad(x[0], ((0, 0), (p[0], p[2]), (p[1], p[3])))
        win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::st, ::st]  # C, OH, OW, kh, kw
        c = xp.shape[0]
        act = None
        if self.masked and self.window is not None:
            lo, hi = self.window
            act = ((y[0] > lo) & (y[0] < hi)).reshape(y.shape[1], -1)
        if self.depthwise:
            cols = win.reshape(c, -1, kh * kw).astype(np.float64)
            self.h = self.h + np.einsum("cpk,cpl->ckl", cols, cols)
            if act is not None:
                self.hm = self.hm + np.einsum("cpk,cpl->ckl", cols * act[:, :, None], cols)
            self.total, self.count = self.total + cols.sum(1), self.count + cols.shape[1]
            return
        cols = win.transpose(1, 2, 0, 3, 4).reshape(-1, c * kh * kw).astype(np.float64)
        self.h = self.h + cols.T @ cols
        if act is not None and cols.shape[1] <= 300:
            sel = self.rng.choice(cols.shape[0], min(cols.shape[0], 384), replace=False)
            c2 = cols[sel]
            self.hm = self.hm + np.einsum("op,pk,pl->okl", act[:, sel].astype(np.float64), c2, c2,
                                          optimize=True) * (cols.shape[0] / len(sel))  # fmt: skip
        self.total, self.count = self.total + cols.sum(0), self.count + cols.shape[0]

    def rounded(self, mode: str) -> np.ndarray:
        o = self.w.shape[0]
        w2 = self.w.reshape(o, -1)
        s = np.abs(w2).max(1, keepdims=True) / 127
        s[s == 0] = 1.0
        if mode == "rtn":
            return np.clip(np.round(w2 / s), -127, 127) * s
        use_mask = mode == "masked-gptq" and not isinstance(self.hm, float)
        if self.depthwise or use_mask:
            hs = self.hm if use_mask else self.h
            shared = self.h if not self.depthwise else None
            out = []
            for ch in range(o):
                h = hs[ch] if np.trace(hs[ch]) > 0 else (self.h[ch] if self.depthwise else shared)
                out.append(_gptq(w2[ch : ch + 1], h, s[ch : ch + 1])[0])
            return np.stack(out)
        return _gptq(w2, self.h, s)

    def shift(self, q: np.ndarray) -> np.ndarray:
        o = self.w.shape[0]
        w2 = self.w.reshape(o, -1)
        mean = self.total / self.count
        return ((w2 - q) * mean).sum(1) if self.depthwise else (w2 - q) @ mean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=1000)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--modes", default="rtn,rtn+bc,gptq,gptq+bc")
    ap.add_argument("--out", type=Path, default=Path("results"))
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    photos = assets.natural_photos(extended=True)
    x = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(args.crops, 224, seed=1, split="eval", photos=photos))
    xc = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(args.calib, 224, seed=0, split="calib",
                                                                photos=photos))  # fmt: skip
    x, xc = x.astype(np.float32), xc.astype(np.float32)
    model = zoo.efficientnet_lite0()
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    ref = _top1(model, x)
    readers: dict[str, list] = {}
    for nd in model.graph.node:
        for i in nd.input:
            readers.setdefault(i, []).append(nd)
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    masked = any(m.startswith("masked") for m in modes)
    stats = {}
    for n in nodes:
        r = readers.get(n.output[0], [])
        window = None
        if len(r) == 1 and r[0].op_type == "Clip" and len(r[0].input) == 3:
            window = (float(np.ravel(inits[r[0].input[1]])[0]), float(np.ravel(inits[r[0].input[2]])[0]))
        stats[n.name] = LayerStats(n, inits[n.input[1]], window, masked)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [t for n in nodes for t in (n.input[0], n.output[0])]
    for t in names:
        probe.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = _session(probe)
    t0 = time.perf_counter()
    for i in range(len(xc)):
        vals = sess.run(names, {"input": xc[i : i + 1]})
        for n, xi, yi in zip(nodes, vals[0::2], vals[1::2], strict=True):
            stats[n.name].update(xi, yi)
    stats_s = time.perf_counter() - t0
    rows = []
    for mode in modes:
        base, bc = mode.removesuffix("+bc"), mode.endswith("+bc")
        t0 = time.perf_counter()
        m = onnx.ModelProto()
        m.CopyFrom(model)
        by_name = {i.name: i for i in m.graph.initializer}
        for n in nodes:
            st = stats[n.name]
            q = st.rounded(base)
            by_name[n.input[1]].CopyFrom(numpy_helper.from_array(q.reshape(st.w.shape).astype(np.float32), n.input[1]))
            if bc:
                b = inits[n.input[2]] + st.shift(q)
                by_name[n.input[2]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), n.input[2]))
        build_s = time.perf_counter() - t0
        agree = float((_top1(m, x) == ref).mean())
        rows.append({"mode": mode, "agreement": agree, "n": len(x), "rounding_s": build_s})
        print(f"{mode:16s} agreement {agree:.3f} (n={len(x)}) rounding {build_s:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python " + " ".join(sys.argv), "calib": args.calib, "stats_s": stats_s}
    (args.out / "weight_rounding.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = ["# Weight rounding (EfficientNet-Lite0, int8 per-channel weights only, activations float)", "",
          f"Command: `{meta['command']}`; layer statistics over {args.calib} calibration crops in {stats_s:.0f} s.", "",
          "| rounding | top-1 agreement with fp32 | n | rounding time (s) |", "|---|---:|---:|---:|"]  # fmt: skip
    md += [f"| {r['mode']} | {100 * r['agreement']:.1f} | {r['n']} | {r['rounding_s']:.1f} |" for r in rows]
    (args.out / "weight_rounding.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
