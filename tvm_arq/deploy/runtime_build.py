"""The TVM runtime and our RPC server for a board architecture, fetched or cross-built, cached.

A board (real or emulated) needs three files, kept together in one directory:

- ``libtvm_ffi.so`` and ``libtvm_runtime.so`` for the board's architecture,
- ``tvm_arq_rpc_server``, our RPC server (``tvm_arq/_native/rpc_server/tvm_arq_rpc_server.cc``) linked
  against them with ``RUNPATH=$ORIGIN``.

Where the runtime comes from is the target backend's :class:`~tvm_arq.backends.RuntimeRecipe`:

- **wheels** (aarch64): the ``manylinux_2_28_aarch64`` wheels of the installed ``apache-tvm`` and
  ``apache-tvm-ffi`` versions, downloaded with ``pip download`` (only the two libraries are kept).
- **cross-build** (riscv64): there are no wheels, so it is cross-built with the backend's toolchain
  (``riscv64-linux-gnu-g++``) from the runtime sources the installed x86 wheels ship
  (``tvm/src/runtime``, ``tvm/include``, ``tvm_ffi/src``, ``tvm_ffi/include``, dlpack) plus our own implementations of the support
  headers those sources include but the wheels do not ship (``tvm_arq/_native/runtime_support``).
  Compilation runs ``jobs`` compilers in parallel and keeps finished objects, so an interrupted
  build resumes.

Everything is cached under ``<cache>/boards/<arch>-tvm<version>-ffi<version>-<hash>/``
(``<cache>`` is ``$TVM_ARQ_CACHE`` or ``~/.cache/tvm_arq``); the hash covers our native sources and
the build flags, so editing them rebuilds only what depends on them. A complete directory appears
atomically and holds ``bundle.json``; a second set-up only checks that file (well under a second).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import RuntimeRecipe, RuntimeSource, all_backends, runtime_recipe

__all__ = [
    "RUNTIME_ARCHS",
    "RuntimeBundle",
    "SetupError",
    "board_cache_root",
    "ensure_runtime",
    "native_dir",
    "versions",
]

logger = logging.getLogger(__name__)

#: Architectures whose runtime can be provided.
RUNTIME_ARCHS: tuple[str, ...] = tuple(b.runtime_recipe.arch for b in all_backends() if b.runtime_recipe)

_SERVER_NAME = "tvm_arq_rpc_server"
_BUNDLE_FILE = "bundle.json"
_CXX_FLAGS: tuple[str, ...] = ("-O2", "-fPIC", "-std=c++17", "-DTVM_INDEX_DEFAULT_I64=1", "-DNDEBUG")
_FFI_DEFINES: tuple[str, ...] = ("-DTVM_FFI_USE_LIBBACKTRACE=0", "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0")
#: Runtime sources (relative to tvm/src/runtime) not needed on a CPU board: GPU, Hexagon, the
#: micro-RPC popen server and LLM serving state (KV caches, attention backends).
_RUNTIME_SKIP_DIRS: tuple[str, ...] = ("extra", "rpc/minrpc", "vm/cuda", "vm/hexagon")
_RUNTIME_SKIP_FILES: tuple[str, ...] = (
    "vm/paged_kv_cache.cc",
    "vm/attn_backend.cc",
    "vm/kv_state.cc",
    "vm/rnn_state.cc",
    "vm/lm_support.cc",
)


class SetupError(RuntimeError):
    """A board runtime could not be fetched or built (the message says what to install or fix)."""


def _recipe(arch: str) -> RuntimeRecipe:
    recipe = runtime_recipe(arch)
    if recipe is None:
        raise SetupError(f"unknown board architecture {arch!r}; expected one of {', '.join(RUNTIME_ARCHS)}")
    return recipe


@dataclass(frozen=True)
class RuntimeBundle:
    """A directory with a board's TVM runtime and our RPC server.

    Attributes
    ----------
    arch
        ``"aarch64"`` or ``"riscv64"``.
    directory
        Directory holding ``libtvm_ffi.so``, ``libtvm_runtime.so`` and ``tvm_arq_rpc_server``.
    sysroot
        The Debian cross sysroot (``qemu-<arch> -L`` prefix for emulation).
    info
        Contents of ``bundle.json`` (versions, sources, build times).
    """

    arch: str
    directory: Path
    sysroot: str
    info: dict = field(default_factory=dict, compare=False)

    @property
    def server(self) -> Path:
        """Path of the RPC server executable."""
        return self.directory / _SERVER_NAME

    @property
    def libraries(self) -> list[Path]:
        """The runtime libraries a real board needs next to the server."""
        return [self.directory / "libtvm_ffi.so", self.directory / "libtvm_runtime.so"]


# --------------------------------------------------------------------------------------------------
# locations and keys


def versions() -> dict[str, str]:
    """Installed ``apache-tvm`` and ``apache-tvm-ffi`` versions (the runtime must match them)."""
    from importlib import metadata

    return {"tvm": metadata.version("apache-tvm"), "tvm_ffi": metadata.version("apache-tvm-ffi")}


def board_cache_root() -> Path:
    """``<cache>/boards`` (``$TVM_ARQ_CACHE`` or ``~/.cache/tvm_arq``)."""
    env = os.environ.get("TVM_ARQ_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "tvm_arq") / "boards"


def native_dir() -> Path:
    """tvm_arq's C++ sources: package data ``tvm_arq/_native`` (``$TVM_ARQ_NATIVE_DIR`` overrides it)."""
    env = os.environ.get("TVM_ARQ_NATIVE_DIR")
    path = Path(env) if env else Path(str(importlib.resources.files("tvm_arq").joinpath("_native")))
    if not (path / "rpc_server" / f"{_SERVER_NAME}.cc").is_file():
        raise SetupError(
            f"tvm_arq's C++ sources were not found in {path}; reinstall tvm_arq (they ship in the package as "
            "tvm_arq/_native) or set TVM_ARQ_NATIVE_DIR to a copy of that directory"
        )
    return path


def _site_packages() -> tuple[Path, Path]:
    import tvm
    import tvm_ffi

    return Path(tvm.__file__).resolve().parent, Path(tvm_ffi.__file__).resolve().parent


def _hash_files(paths: Sequence[Path], base: Path, extra: Sequence[str] = ()) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(base)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    for item in extra:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def _runtime_key(arch: str) -> str:
    """Cache key of the runtime libraries: versions, plus our headers and flags for a cross-build."""
    v = versions()
    key = f"{arch}-tvm{v['tvm']}-ffi{v['tvm_ffi']}"
    if _recipe(arch).source is RuntimeSource.CROSS_BUILD:
        native = native_dir()
        files = [p for p in (native / "runtime_support").rglob("*") if p.is_file()]
        flags = [*_CXX_FLAGS, *_FFI_DEFINES, *_RUNTIME_SKIP_DIRS, *_RUNTIME_SKIP_FILES]
        key += "-" + _hash_files(files, native, flags)
    return key


def _server_hash() -> str:
    native = native_dir()
    return _hash_files([native / "rpc_server" / f"{_SERVER_NAME}.cc"], native, _CXX_FLAGS)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock_dir = board_cache_root() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_bundle(arch: str, directory: Path, *, need_server: bool = True) -> RuntimeBundle | None:
    """The bundle in ``directory`` if its libraries (and an up-to-date server) are complete."""
    meta = directory / _BUNDLE_FILE
    if not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    bundle = RuntimeBundle(arch, directory, _recipe(arch).toolchain.sysroot, info)
    if not all(p.is_file() for p in bundle.libraries):
        return None
    if need_server and (not bundle.server.is_file() or info.get("server_hash") != _server_hash()):
        return None
    return bundle


# --------------------------------------------------------------------------------------------------
# tools


def _require_compiler(arch: str) -> str:
    tc = _recipe(arch).toolchain
    exe = shutil.which(tc.cross_compiler)
    if exe is None:
        raise SetupError(
            f"{tc.cross_compiler} is not installed; install it with `apt-get install {tc.debian_package}` "
            "(`make apt` does it)"
        )
    return exe


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> None:
    logger.debug("%s: %s", what, " ".join(map(str, cmd)))
    proc = subprocess.run(list(map(str, cmd)), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise SetupError(f"{what} failed (exit {proc.returncode}):\n{tail}\ncommand: {' '.join(map(str, cmd))}")


# --------------------------------------------------------------------------------------------------
# RuntimeSource.WHEELS: libraries from the wheels


def _fetch_wheel_libraries(dest: Path, recipe: RuntimeRecipe) -> dict[str, str]:
    """Download the board's wheels of the installed versions and keep their runtime libraries."""
    arch, platform = recipe.arch, recipe.wheel_platform
    if platform is None:
        raise SetupError(f"the runtime recipe of {arch} names no wheel platform")
    v = versions()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory(prefix="tvm_arq_wheels_") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--platform", platform, "--python-version", py, "--dest", tmp,
            f"apache-tvm=={v['tvm']}", f"apache-tvm-ffi=={v['tvm_ffi']}",
        ]  # fmt: skip
        logger.info("downloading the %s wheels of apache-tvm %s and apache-tvm-ffi %s", arch, v["tvm"], v["tvm_ffi"])
        _run(cmd, f"pip download of the {arch} TVM wheels")
        wanted = {"tvm/lib/libtvm_runtime.so": "libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so": "libtvm_ffi.so"}
        found: dict[str, str] = {}
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for member, name in wanted.items():
                    if member in zf.namelist():
                        with zf.open(member) as src, open(dest / name, "wb") as out:
                            shutil.copyfileobj(src, out)
                        os.chmod(dest / name, 0o755)
                        found[name] = wheel.name
        missing = sorted(set(wanted.values()) - set(found))
        if missing:
            raise SetupError(f"the downloaded {arch} wheels lack {missing}")
    return found


# --------------------------------------------------------------------------------------------------
# RuntimeSource.CROSS_BUILD: runtime cross-built from the shipped sources


def _stage_sources(tree: Path, arch: str) -> None:
    """Lay out the shipped sources and our support headers in one tree (relative includes work)."""
    tvm_dir, ffi_dir = _site_packages()
    native = native_dir() / "runtime_support"
    if tree.exists():
        shutil.rmtree(tree)
    for src, dst in [
        (tvm_dir / "src" / "runtime", tree / "src" / "runtime"),
        (tvm_dir / "include", tree / "include"),
        (ffi_dir / "src", tree / "ffi" / "src"),
        (ffi_dir / "include", tree / "ffi" / "include"),
        (ffi_dir / "3rdparty" / "dlpack" / "include", tree / "ffi" / "dlpack" / "include"),
    ]:
        if not src.is_dir():
            raise SetupError(f"the installed TVM wheels do not ship {src}; cannot build the {arch} runtime")
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("extra") if src.name == "runtime" else None)
    # our own headers: include/tvm/support, src/support, 3rdparty/compiler-rt
    shutil.copytree(native, tree, dirs_exist_ok=True)


def _runtime_sources(tree: Path) -> list[Path]:
    root = tree / "src" / "runtime"
    out = []
    for p in sorted(root.rglob("*.cc")):
        rel = p.relative_to(root).as_posix()
        if any(rel.startswith(d + "/") for d in _RUNTIME_SKIP_DIRS) or rel in _RUNTIME_SKIP_FILES:
            continue
        out.append(p)
    return out


def _ffi_sources(tree: Path) -> list[Path]:
    root = tree / "ffi" / "src" / "ffi"
    out = [p for p in sorted(root.glob("*.cc")) if p.name != "backtrace_win.cc"]
    out += sorted((root / "extra").glob("*.cc"))
    return out


def _include_flags(tree: Path) -> list[str]:
    return [
        f"-I{tree / 'include'}",
        f"-I{tree / 'ffi' / 'include'}",
        f"-I{tree / 'ffi' / 'dlpack' / 'include'}",
        f"-I{tree / '3rdparty' / 'compiler-rt'}",
    ]


def _compile_all(
    cxx: str, jobs: list[tuple[Path, Path, list[str]]], workers: int, progress: Callable[[int, int], None]
) -> None:
    """Compile (source, object, flags) jobs in parallel; objects already present are kept."""
    todo = [j for j in jobs if not j[1].is_file()]
    done = len(jobs) - len(todo)
    if done:
        logger.info("%d of %d object file(s) already built; compiling %d", done, len(jobs), len(todo))

    def one(job: tuple[Path, Path, list[str]]) -> Path:
        src, obj, flags = job
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_suffix(f".tmp{os.getpid()}.o")
        _run([cxx, *flags, "-c", str(src), "-o", str(tmp)], f"compiling {src.name}")
        os.replace(tmp, obj)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(one, j) for j in todo]
        try:
            for fut in concurrent.futures.as_completed(futures):
                fut.result()
                done += 1
                progress(done, len(jobs))
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _cross_build_runtime(arch: str, dest: Path, work: Path, workers: int) -> dict[str, object]:
    cxx = _require_compiler(arch)
    tree = work / "tree"
    _stage_sources(tree, arch)
    inc = _include_flags(tree)
    obj_dir = work / "obj"
    ffi_jobs = [
        (s, obj_dir / "ffi" / s.relative_to(tree / "ffi" / "src").with_suffix(".o"), [*_CXX_FLAGS, *_FFI_DEFINES, *inc])
        for s in _ffi_sources(tree)
    ]
    rt_jobs = [
        (s, obj_dir / "runtime" / s.relative_to(tree / "src" / "runtime").with_suffix(".o"), [*_CXX_FLAGS, *inc])
        for s in _runtime_sources(tree)
    ]
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 15 or done == total:
            last[0] = now
            logger.info("%s runtime: %d/%d files compiled (%.0f s)", arch, done, total, now - started)

    logger.info(
        "cross-building the %s TVM runtime (%d files, %d parallel compiler(s); a few minutes, once)",
        arch, len(ffi_jobs) + len(rt_jobs), workers,
    )
    _compile_all(cxx, ffi_jobs + rt_jobs, workers, progress)
    libs = list(_recipe(arch).toolchain.extra_link_options)
    _run(
        [cxx, "-shared", "-o", dest / "libtvm_ffi.so", *[j[1] for j in ffi_jobs], "-Wl,--no-undefined",
         "-ldl", "-lpthread", *libs],
        "linking libtvm_ffi.so",
    )
    _run(
        [cxx, "-shared", "-o", dest / "libtvm_runtime.so", *[j[1] for j in rt_jobs], f"-L{dest}",
         "-Wl,--no-undefined", "-Wl,--no-as-needed", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN", "-ldl", "-lpthread",
         *libs],
        "linking libtvm_runtime.so",
    )
    return {"compile_seconds": round(time.perf_counter() - started, 1), "files": len(ffi_jobs) + len(rt_jobs)}


# --------------------------------------------------------------------------------------------------
# the server


def _build_server(arch: str, libdir: Path, out: Path) -> None:
    """Compile and link our RPC server against the runtime in ``libdir``."""
    cxx = _require_compiler(arch)
    _, ffi_dir = _site_packages()
    src = native_dir() / "rpc_server" / f"{_SERVER_NAME}.cc"
    _run(
        [cxx, *_CXX_FLAGS, "-Wall", f"-I{ffi_dir / 'include'}", f"-I{ffi_dir / '3rdparty' / 'dlpack' / 'include'}",
         str(src), "-o", out, f"-L{libdir}", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
         "-Wl,-rpath,$ORIGIN", "-lpthread", *_recipe(arch).toolchain.extra_link_options],
        f"building {_SERVER_NAME} for {arch}",
    )


# --------------------------------------------------------------------------------------------------
# entry point


def ensure_runtime(arch: str, *, jobs: int | None = None, force: bool = False) -> RuntimeBundle:
    """Return the cached runtime bundle for ``arch``, fetching or building it first if needed.

    Parameters
    ----------
    arch
        A runtime architecture (:data:`RUNTIME_ARCHS`: ``"aarch64"``, ``"riscv64"``) or a board name
        (``riscv64-rvv`` boards use the ``riscv64`` runtime).
    jobs
        Parallel compilers of a cross-build (default: number of CPUs).
    force
        Rebuild even if a complete bundle is cached.

    Returns
    -------
    RuntimeBundle

    Raises
    ------
    SetupError
        If a cross compiler is missing (the message names the Debian package), the wheels cannot be
        downloaded, or a compile/link step fails (the message holds the compiler's output).
    """
    arch = _recipe(arch).arch
    key = _runtime_key(arch)
    root = board_cache_root()
    final = root / key
    if not force and (bundle := _load_bundle(arch, final)) is not None:
        logger.debug("board runtime %s is cached", final)
        return bundle
    _require_compiler(arch)
    with _locked(f"runtime-{arch}"):
        if force or _load_bundle(arch, final, need_server=False) is None:
            _make_runtime(arch, key, final, jobs)
        if (bundle := _load_bundle(arch, final)) is None:
            started = time.perf_counter()
            tmp = final / f".{_SERVER_NAME}.tmp{os.getpid()}"
            _build_server(arch, final, tmp)
            os.replace(tmp, final / _SERVER_NAME)
            meta = final / _BUNDLE_FILE
            info = json.loads(meta.read_text())
            info["server_hash"] = _server_hash()
            info["server_build_seconds"] = round(time.perf_counter() - started, 1)
            tmp_meta = meta.with_suffix(".tmp")
            tmp_meta.write_text(json.dumps(info, indent=1))
            os.replace(tmp_meta, meta)
            logger.info("built %s for %s in %.1f s", _SERVER_NAME, arch, time.perf_counter() - started)
    bundle = _load_bundle(arch, final)
    if bundle is None:
        raise SetupError(f"the board runtime in {final} is incomplete after set-up")
    return bundle


def _make_runtime(arch: str, key: str, final: Path, jobs: int | None) -> None:
    """Fetch or build the runtime libraries into ``final`` (atomically; lock held)."""
    root = final.parent
    started = time.perf_counter()
    work = root / ".build" / key  # kept across interruptions (finished objects are reused)
    work.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        info: dict[str, object] = {"arch": arch, "key": key, **versions()}
        recipe = _recipe(arch)
        if recipe.source is RuntimeSource.WHEELS:
            info["runtime_source"] = _fetch_wheel_libraries(staging, recipe)
        else:
            info["runtime_source"] = "cross-built from the x86 wheels' sources + tvm_arq/_native/runtime_support"
            info.update(_cross_build_runtime(arch, staging, work, jobs or os.cpu_count() or 2))
        info["runtime_seconds"] = round(time.perf_counter() - started, 1)
        (staging / _BUNDLE_FILE).write_text(json.dumps(info, indent=1))
        os.chmod(staging, 0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    logger.info("board runtime for %s ready in %.1f s: %s", arch, time.perf_counter() - started, final)
