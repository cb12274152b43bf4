"""Emulated dev boards: the target's TVM runtime and our RPC server under ``qemu-user``.

An emulated board behaves like a real one on the network: it listens on a loopback port and,
when asked, registers with a TVM RPC tracker under a key, so :func:`tvm_arq.deploy` and
MetaSchedule's RPC runner use it exactly as they would use a board. The boards are those of the target
backends (:attr:`tvm_arq.backends.TargetBackend.boards`):

- ``aarch64``: runtime from the aarch64 wheels; ``qemu-aarch64 -L /usr/aarch64-linux-gnu``;
- ``riscv64``: cross-built runtime; ``qemu-riscv64 -L /usr/riscv64-linux-gnu -cpu rv64,v=false``
  (rv64gc, no vector unit);
- ``riscv64-rvv``: the same runtime with ``-cpu rv64,v=true,vlen=128,elen=64,vext_spec=v1.0``
  (needs QEMU >= 8: 7.x aborts on some vector instructions).

Python use (tests)::

    with EmulatedBoard("riscv64-rvv") as board:            # a free loopback port
        remote = tvm_arq.deploy(model, rpc=board.address)

Command line (the lead wires ``tvm-arq board ...`` to :func:`main`)::

    python -m tvm_arq.deploy.boards setup --arch all
    python -m tvm_arq.deploy.boards start --arch riscv64-rvv --port 9091 [--tracker 127.0.0.1:9190 --key rv]
    python -m tvm_arq.deploy.boards list
    python -m tvm_arq.deploy.boards stop [--name NAME | --all]

Boards started from the command line keep running after the command returns; their state is kept
in ``<cache>/boards/run/<name>.json`` (pid, address, log file) for ``stop`` and ``list``.

Emulated timings are **not** board latency: qemu-user translates every instruction (hundreds of
times slower on small kernels, with ratios that differ per ISA and operator).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..backends import BoardSpec, board_specs
from .runtime_build import RUNTIME_ARCHS, RuntimeBundle, SetupError, board_cache_root, ensure_runtime

__all__ = [
    "BOARDS",
    "BoardError",
    "BoardSpec",
    "EmulatedBoard",
    "LocalTracker",
    "RunningBoard",
    "free_port",
    "list_boards",
    "main",
    "pipe_session",
    "qemu_version",
    "setup_boards",
    "start_board",
    "stop_board",
]

logger = logging.getLogger(__name__)

_READY_RE = re.compile(r"tvm_arq_rpc_server listening on (\S+):(\d+)")


class BoardError(RuntimeError):
    """An emulated board could not be started, or died."""


#: The emulated boards of every target backend: name -> spec.
BOARDS: dict[str, BoardSpec] = board_specs()


def _spec(arch: str) -> BoardSpec:
    try:
        return BOARDS[arch]
    except KeyError:
        raise BoardError(f"unknown board {arch!r}; emulated boards: {', '.join(BOARDS)}") from None


def qemu_version(exe: str) -> tuple[int, ...]:
    """Version of a qemu-user executable, e.g. ``(10, 0, 2)`` (``(0,)`` if unknown)."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return (0,)
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in m.groups() if g is not None) if m else (0,)


def _qemu(spec: BoardSpec) -> str:
    exe = shutil.which(spec.qemu)
    if exe is None:
        raise BoardError(
            f"{spec.qemu} is not installed; install it with `apt-get install {spec.debian_package}` "
            "(`make apt` does it)"
        )
    if spec.qemu_cpu and "v=true" in spec.qemu_cpu and qemu_version(exe) < (8,):
        raise BoardError(
            f"{exe} is QEMU {'.'.join(map(str, qemu_version(exe)))}, which aborts on some RISC-V vector "
            "instructions (e.g. vfncvt.rtz.x.f.w); install qemu-user >= 8 (`make boards` takes it from the "
            "distribution's backports)"
        )
    return exe


def emulator_prefix(arch: str, bundle: RuntimeBundle | None = None) -> list[str]:
    """The ``qemu-<arch> -L <sysroot> [-cpu ...]`` prefix that runs a program of board ``arch``."""
    spec = _spec(arch)
    bundle = bundle or ensure_runtime(spec.runtime_arch)
    cmd = [_qemu(spec), "-L", bundle.sysroot]
    if spec.qemu_cpu:
        cmd += ["-cpu", spec.qemu_cpu]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_loopback(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as err:
        raise BoardError(f"cannot resolve {host!r}: {err}") from None
    import ipaddress

    if not all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos):
        logger.warning("emulated board listening on %s, which is not a loopback address", host)


def _parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BoardError(f"{what} must be HOST:PORT, got {text!r}")
    return host, int(port)


class EmulatedBoard:
    """An emulated board: our RPC server under qemu-user, on a loopback port.

    Parameters
    ----------
    arch
        ``"aarch64"``, ``"riscv64"`` or ``"riscv64-rvv"``.
    port
        Port to listen on; ``None`` picks a free one.
    tracker
        ``"host:port"`` of a TVM RPC tracker to register with (needs ``key``).
    key
        Tracker key (device name) of this board.
    host
        Address to listen on (loopback by default).
    startup_timeout
        Seconds to wait for the server to listen (qemu start-up takes ~1 s).
    log_file
        Where the server's output goes (default: a temporary file, see :attr:`log_file`).
    detach
        Keep the board running when this object is garbage collected (used by :func:`start_board`).

    Examples
    --------
    >>> with EmulatedBoard("aarch64") as board:  # doctest: +SKIP
    ...     remote = tvm_arq.deploy(model, rpc=board.address)
    """

    def __init__(
        self,
        arch: str = "aarch64",
        port: int | None = None,
        tracker: str | None = None,
        key: str | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        log_file: str | os.PathLike[str] | None = None,
        detach: bool = False,
    ) -> None:
        self.spec = _spec(arch)
        if tracker and not key:
            raise BoardError("a board registered with a tracker needs a key (e.g. key='rk3588')")
        if tracker:
            _parse_hostport(tracker, "tracker")
        self.arch = arch
        self.host = host
        self.requested_port = port
        self.tracker = tracker
        self.key = key
        self.startup_timeout = startup_timeout
        self._log_file = Path(log_file) if log_file else None
        self._owns_log = log_file is None
        self.detach = detach
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- properties ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``"host:port"`` to pass as ``deploy(model, rpc=...)``."""
        if self.port is None:
            raise BoardError("the board is not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the qemu process (the process group leader)."""
        return self.proc.pid if self.proc else None

    @property
    def log_file(self) -> Path | None:
        """The server's log (stdout and stderr)."""
        return self._log_file

    def is_running(self) -> bool:
        """Whether the emulator process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the server's log."""
        if self._log_file is None or not self._log_file.exists():
            return ""
        return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-lines:])

    def command(self, bundle: RuntimeBundle | None = None) -> list[str]:
        """The full command line that starts the board."""
        bundle = bundle or ensure_runtime(self.spec.runtime_arch)
        port = self.requested_port if self.requested_port is not None else 0
        cmd = [*emulator_prefix(self.arch, bundle), str(bundle.server), "--host", self.host, "--port", str(port)]
        if self.tracker:
            cmd += ["--tracker", self.tracker, "--key", str(self.key)]
        return cmd

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> EmulatedBoard:
        """Start the board and wait until it listens (and, with a tracker, has registered).

        Raises
        ------
        BoardError
            If qemu is missing, the server exits, or it does not listen within ``startup_timeout``.
        SetupError
            If the runtime cannot be fetched or built.
        """
        if self.is_running():
            return self
        _check_loopback(self.host)
        bundle = ensure_runtime(self.spec.runtime_arch)
        cmd = self.command(bundle)
        if self._log_file is None:
            fd, name = tempfile.mkstemp(prefix=f"tvm_arq_board_{self.arch}_", suffix=".log")
            os.close(fd)
            self._log_file = Path(name)
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting emulated %s board: %s", self.arch, " ".join(cmd))
        with open(self._log_file, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own command line
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            m = _READY_RE.search(self._log_file.read_text(errors="replace"))
            if m:
                self.port = int(m.group(2))
                break
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.proc = None
                raise BoardError(f"the emulated {self.arch} board exited at start-up:\n{tail}")
            if time.monotonic() > deadline:
                self.kill()
                raise BoardError(
                    f"the emulated {self.arch} board did not listen within {self.startup_timeout:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)
        if self.tracker:
            self._wait_registered(deadline)
        logger.info("emulated %s board listening on %s (pid %s)", self.arch, self.address, self.pid)
        return self

    def _wait_registered(self, deadline: float) -> None:
        from .rpc import tracker_summary

        host, port = _parse_hostport(str(self.tracker), "tracker")
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BoardError(f"the emulated {self.arch} board exited:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                summary = tracker_summary(host, port, timeout=5)
                listed = any(
                    s.get("key") == f"server:{self.key}" and int((s.get("addr") or [None, -1])[1]) == self.port
                    for s in summary.get("server_info", [])
                )
                free = summary.get("queue_info", {}).get(str(self.key), {}).get("free", 0)
                if listed and free > 0:
                    return
            time.sleep(0.1)
        raise BoardError(f"the emulated {self.arch} board did not register with tracker {self.tracker}:\n"
                         f"{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the board (SIGTERM to its process group, SIGKILL after ``timeout``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # any session child left behind
        self.proc = None
        if self._owns_log and self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.unlink()

    def kill(self) -> None:
        """Kill the board at once (SIGKILL), as if it had crashed or lost power."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def __enter__(self) -> EmulatedBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if not getattr(self, "detach", True) and getattr(self, "proc", None) is not None:
            with contextlib.suppress(Exception):
                self.stop()

    def __repr__(self) -> str:
        state = f"listening on {self.address}" if self.port and self.is_running() else "stopped"
        reg = f", tracker={self.tracker} key={self.key}" if self.tracker else ""
        return f"EmulatedBoard({self.arch}, {state}{reg})"


def pipe_session(arch: str) -> Any:
    """An RPC session with a fresh emulated board over pipes (no ports; ends with the session).

    Returns
    -------
    tvm.rpc.RPCSession
    """
    from tvm import rpc

    bundle = ensure_runtime(_spec(arch).runtime_arch)
    cmd = [*emulator_prefix(arch, bundle), str(bundle.server), "--quiet", "--pipe"]
    return rpc.RPCSession(rpc._ffi_api.CreatePipeClient(*cmd))


# --------------------------------------------------------------------------------------------------
# a local tracker (tests, trying things out)


class LocalTracker:
    """``python -m tvm.exec.rpc_tracker`` on a loopback port, as a context manager.

    Parameters
    ----------
    port
        Port to use; ``None`` picks a free one.
    host
        Address to bind (loopback by default).
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", startup_timeout: float = 60.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``"host:port"`` of the tracker."""
        return f"{self.host}:{self.port}"

    def start(self) -> LocalTracker:
        """Start the tracker and wait until it answers."""
        from .rpc import tracker_summary

        cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", self.host, "--port", str(self.port),
               "--port-end", str(self.port + 1), "--silent"]
        self.proc = subprocess.Popen(  # noqa: S603
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BoardError(f"the RPC tracker exited at start-up:\n{err[-2000:]}")
            with contextlib.suppress(Exception):
                tracker_summary(self.host, self.port, timeout=2)
                return self
            time.sleep(0.2)
        self.stop()
        raise BoardError(f"the RPC tracker did not answer on {self.address} within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        """Stop the tracker."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> LocalTracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# functions behind the command line


@dataclass
class RunningBoard:
    """A board started by :func:`start_board` (state kept in ``<cache>/boards/run/<name>.json``)."""

    name: str
    arch: str
    pid: int
    host: str
    port: int
    tracker: str | None
    key: str | None
    log_file: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # a zombie or a recycled pid is not our board
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            return b"tvm_arq_rpc_server" in cmdline
        return True


def _run_dir() -> Path:
    d = board_cache_root() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def setup_boards(archs: Sequence[str] = RUNTIME_ARCHS, *, jobs: int | None = None) -> dict[str, RuntimeBundle]:
    """Fetch/build (or find cached) the runtime of each board architecture.

    Returns
    -------
    dict
        Architecture -> :class:`~tvm_arq.deploy.runtime_build.RuntimeBundle`.
    """
    out: dict[str, RuntimeBundle] = {}
    for arch in archs:
        runtime_arch = _spec(arch).runtime_arch
        if runtime_arch not in out:
            out[runtime_arch] = ensure_runtime(runtime_arch, jobs=jobs)
        _qemu(_spec(arch))
    return out


def start_board(
    arch: str,
    port: int | None = None,
    tracker: str | None = None,
    key: str | None = None,
    *,
    host: str = "127.0.0.1",
    name: str | None = None,
) -> RunningBoard:
    """Start an emulated board that keeps running after this call (``tvm-arq board start``).

    Parameters
    ----------
    arch
        ``"aarch64"``, ``"riscv64"`` or ``"riscv64-rvv"``.
    port
        Port to listen on (``None``: a free one).
    tracker, key
        Register with the tracker at ``"host:port"`` under ``key``.
    host
        Listen address (loopback by default).
    name
        Name for :func:`stop_board` (default ``<arch>-<port>``).

    Returns
    -------
    RunningBoard
    """
    run = _run_dir()
    log = run / f"{name or arch}-{os.getpid()}-{int(time.time())}.log"
    board = EmulatedBoard(arch, port, tracker, key, host=host, log_file=log, detach=True).start()
    assert board.port is not None and board.pid is not None
    state = RunningBoard(name or f"{arch}-{board.port}", arch, board.pid, host, board.port, tracker, key, str(log))
    final_log = run / f"{state.name}.log"
    with contextlib.suppress(OSError):
        os.replace(log, final_log)  # the server keeps writing to the same inode
        state.log_file = str(final_log)
    (run / f"{state.name}.json").write_text(json.dumps(asdict(state), indent=1))
    return state


def list_boards() -> list[RunningBoard]:
    """Boards started with :func:`start_board` that are still running (stale entries are removed)."""
    out = []
    for path in sorted(_run_dir().glob("*.json")):
        try:
            state = RunningBoard(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if state.is_running():
            out.append(state)
        else:
            path.unlink(missing_ok=True)
    return out


def stop_board(name: str | None = None, *, timeout: float = 5.0) -> list[str]:
    """Stop boards started with :func:`start_board` (``tvm-arq board stop``).

    Parameters
    ----------
    name
        Board name, ``"<arch>-<port>"`` by default; ``None`` stops all of them.

    Returns
    -------
    list of str
        Names of the boards stopped.
    """
    stopped = []
    boards = list_boards()
    if name is not None:
        boards = [b for b in boards if b.name == name]
        if not boards:
            raise BoardError(f"no running board named {name!r} (running: {[b.name for b in list_boards()]})")
    for b in boards:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(b.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while b.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(b.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(b.pid, os.WNOHANG)  # reap it if this process started it
        (_run_dir() / f"{b.name}.json").unlink(missing_ok=True)
        stopped.append(b.name)
        logger.info("stopped board %s (%s)", b.name, b.address)
    return stopped


def _port(text: str) -> int:
    """argparse type of ``--port``: an integer in 1..65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text} (1-65535)")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tvm_arq.deploy.boards {setup,start,stop,list}``."""
    parser = argparse.ArgumentParser(prog="tvm-arq board", description="emulated dev boards (qemu-user)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup", help="fetch/build the board runtimes (cached)")
    p.add_argument("--arch", default="all", help=f"{', '.join(BOARDS)} or all")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel compilers of a cross-built runtime (riscv64)")
    p = sub.add_parser("start", help="start an emulated board in the background")
    p.add_argument("--arch", required=True, choices=sorted(BOARDS))
    p.add_argument("--port", type=_port, default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker")
    p.add_argument("--key", default=None, help="tracker key of the board")
    p.add_argument("--name", default=None)
    p = sub.add_parser("stop", help="stop boards started with `start`")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--name", default=None)
    g.add_argument("--all", action="store_true")
    sub.add_parser("list", help="list running boards")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.cmd == "setup":
            archs = list(BOARDS) if args.arch == "all" else [args.arch]
            t0 = time.perf_counter()
            bundles = setup_boards(archs, jobs=args.jobs)
            for arch, b in bundles.items():
                print(f"{arch}: {b.directory}")
            print(f"board runtimes ready in {time.perf_counter() - t0:.1f} s")
        elif args.cmd == "start":
            b = start_board(args.arch, args.port, args.tracker, args.key, host=args.host, name=args.name)
            reg = f", registered at {b.tracker} as {b.key!r}" if b.tracker else ""
            print(f"board {b.name}: emulated {b.arch} listening on {b.address}{reg} (pid {b.pid}, log {b.log_file})")
        elif args.cmd == "stop":
            names = stop_board(args.name)
            print("stopped: " + (", ".join(names) if names else "nothing"))
        else:
            for b in list_boards():
                reg = f" tracker={b.tracker} key={b.key}" if b.tracker else ""
                print(f"{b.name}\t{b.arch}\t{b.address}\tpid={b.pid}{reg}")
    except (BoardError, SetupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
