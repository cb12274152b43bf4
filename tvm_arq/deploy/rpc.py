"""Deploy a quantized model to a dev board over TVM RPC and run or time it there.

::

    remote = tvm_arq.deploy(model, rpc="192.168.1.20:9090")                  # a board's RPC server
    remote = tvm_arq.deploy(model, tracker="127.0.0.1:9190", key="rk3588")    # through a tracker
    out = remote.run(x)                       # numpy outputs, computed on the board
    stats = remote.benchmark(x, number=10, repeat=5)   # {"median_ms": ..., "p90_ms": ...}

The model is exported with its target's cross toolchain (``.so``), uploaded, loaded with
``load_module`` and run in the Relax VM on ``remote.cpu()``. Every network step has a time-out:
a tracker key that no board serves, a board that is busy for too long, a dead or hung board all
raise one :class:`DeployError` that names the host, the key and the cause, instead of blocking
forever (which is what ``TrackerSession.request`` and ``rpc.connect`` do on their own).

Timings measured on an *emulated* board (qemu-user) are not the board's latency.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..tune.runner import probe_rpc_server, recv_exact

__all__ = ["DeployError", "RemoteModel", "deploy", "deploy_library", "tracker_summary"]

logger = logging.getLogger(__name__)

_TRACKER_MAGIC = 0x2F271
_TRACKER_SUCCESS = 0
_TRACKER_REQUEST = 4
_TRACKER_SUMMARY = 6

T = TypeVar("T")


class DeployError(RuntimeError):
    """Deploying to, or running on, a board failed.

    Attributes
    ----------
    host
        ``"host:port"`` of the board or of the tracker.
    key
        Tracker key (``None`` for a direct connection).
    cause
        What went wrong, in words.
    """

    def __init__(self, host: str, key: str | None, cause: str) -> None:
        self.host = host
        self.key = key
        self.cause = cause
        where = f"board {host}" if key is None else f"tracker {host}, key {key!r}"
        super().__init__(f"{where}: {cause}")


# --------------------------------------------------------------------------------------------------
# tracker protocol (a few messages, with socket time-outs)


def _send_json(sock: socket.socket, value: Any) -> None:
    data = json.dumps(value).encode()
    sock.sendall(struct.pack("<i", len(data)) + data)


def _recv_json(sock: socket.socket) -> Any:
    (n,) = struct.unpack("<i", recv_exact(sock, 4))
    return json.loads(recv_exact(sock, n).decode())


def _split(address: str, what: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what} must be 'host:port', got {address!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} {address!r}: invalid port {int(port)} (1-65535)")
    return host, int(port)


def _tracker_socket(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
        (magic,) = struct.unpack("<i", recv_exact(sock, 4))
        if magic != _TRACKER_MAGIC:
            raise ConnectionError(f"{host}:{port} is not a TVM RPC tracker")
    except BaseException:
        sock.close()
        raise
    return sock


def tracker_summary(host: str, port: int, timeout: float = 10.0) -> dict[str, Any]:
    """The tracker's summary: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``.

    Raises
    ------
    OSError
        If the tracker cannot be reached within ``timeout``.
    """
    with _tracker_socket(host, port, timeout) as sock:
        _send_json(sock, [_TRACKER_SUMMARY])
        reply = _recv_json(sock)
    if not isinstance(reply, list) or reply[0] != _TRACKER_SUCCESS:
        raise ConnectionError(f"unexpected tracker reply {reply!r}")
    return dict(reply[1])


def _boards_for_key(summary: dict[str, Any], key: str) -> list[str]:
    """``host:port`` of the servers registered under ``key``."""
    out = []
    for info in summary.get("server_info", []):
        if info.get("key") == f"server:{key}":
            addr = info.get("addr") or [None, None]
            out.append(f"{addr[0]}:{addr[1]}")
    return out


def _request_board(host: str, port: int, key: str, timeout: float, priority: int) -> tuple[str, int, str]:
    """Ask the tracker for a board serving ``key``; returns (board host, port, match key)."""
    where = f"{host}:{port}"
    try:
        summary = tracker_summary(host, port, timeout=min(timeout, 10.0))
    except (OSError, ValueError) as err:
        raise DeployError(where, key, f"cannot reach the RPC tracker ({err})") from err
    boards = _boards_for_key(summary, key)
    if not boards:
        known = sorted(
            {str(s.get("key", ""))[len("server:"):] for s in summary.get("server_info", [])} - {""}
        )
        raise DeployError(
            where, key,
            f"no board is registered under this key (registered keys: {', '.join(known) or 'none'}); "
            "start the board's RPC server with --tracker and --key",
        )
    free = summary.get("queue_info", {}).get(key, {}).get("free", 0)
    logger.info("tracker %s: %d board(s) under key %r (%d free): %s", where, len(boards), key, free, boards)
    try:
        with _tracker_socket(host, port, timeout) as sock:
            sock.settimeout(timeout)
            _send_json(sock, [_TRACKER_REQUEST, key, "", priority])
            reply = _recv_json(sock)
    except TimeoutError as err:
        raise DeployError(
            where, key,
            f"all {len(boards)} board(s) under this key stayed busy for {timeout:.0f} s (time-out)",
        ) from err
    except OSError as err:
        raise DeployError(where, key, f"the tracker connection failed ({err})") from err
    if not isinstance(reply, list) or reply[0] != _TRACKER_SUCCESS:
        raise DeployError(where, key, f"unexpected tracker reply {reply!r}")
    board_host, board_port, matchkey = reply[1]
    return str(board_host), int(board_port), str(matchkey)


# --------------------------------------------------------------------------------------------------
# time-outs around blocking RPC calls


def _with_timeout(fn: Callable[[], T], timeout: float | None, fail: Callable[[str], DeployError]) -> T:
    """Run ``fn`` in a helper thread; raise ``fail(cause)`` on error or after ``timeout`` seconds.

    TVM's RPC calls block in C++ with no time-out of their own. On a time-out the helper thread is
    abandoned (it is a daemon thread and ends when the connection does).
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            result["error"] = err

    thread = threading.Thread(target=target, name="tvm_arq-rpc-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise fail(f"no answer within {timeout:.0f} s (time-out): the board is dead, hung or overloaded")
    if "error" in result:
        err = result["error"]
        raise fail(_describe(err)) from err
    return result["value"]


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # TVM errors carry a C++ traceback; the last lines say what happened
    msg = lines[-1] if lines else type(err).__name__
    for line in reversed(lines):
        if "Error" in line and ":" in line:
            msg = line.strip()
            break
    low = text.lower()
    if isinstance(err, TimeoutError) and text:
        msg = text
    elif "connection refused" in low or isinstance(err, ConnectionRefusedError) or (
        "connect to" in low and "failed" in low
    ):
        msg = f"connection refused: nothing listens there (board down?) [{msg}]"
    elif "closes before" in low or "connection reset" in low or "broken pipe" in low:
        msg = (f"the board closed the connection (it crashed, was killed, or the model used an instruction "
               f"the board lacks) [{msg}]")
    return msg


# --------------------------------------------------------------------------------------------------
# the remote model


@dataclass
class RemoteModel:
    """A model loaded on a board, run through an RPC session.

    Attributes
    ----------
    session
        The ``tvm.rpc.RPCSession``.
    board
        ``"host:port"`` of the board's RPC server.
    key
        Tracker key the board was requested with (``None`` for a direct connection).
    tracker
        ``"host:port"`` of the tracker, if one was used.
    target
        The model's :class:`~tvm_arq.target.TargetInfo`.
    timeout
        Seconds each remote call may take before :class:`DeployError` is raised.
    """

    session: Any
    board: str
    key: str | None
    tracker: str | None
    target: Any
    timeout: float
    input_specs: list[tuple[str, tuple[int, ...], str]]
    library_name: str
    model: Any = field(repr=False, default=None)
    _vm: Any = field(repr=False, default=None)
    _broken: str | None = field(repr=False, default=None)
    # an RPC session is one connection with one request in flight: calls from several threads take turns
    _lock: threading.Lock = field(repr=False, default_factory=threading.Lock)

    @property
    def device(self) -> Any:
        """``remote.cpu()``."""
        return self.session.cpu()

    def _fail(self, cause: str) -> DeployError:
        if self.tracker is not None:
            return DeployError(self.tracker, self.key, f"board {self.board}: {cause}")
        return DeployError(self.board, None, cause)

    def _call(self, what: str, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run one remote call under the session lock (see :meth:`run` for the cost)."""
        with self._lock:
            if self._broken is not None:
                raise self._fail(f"the session is unusable after an earlier failure ({self._broken})")
            try:
                return _with_timeout(fn, timeout or self.timeout, lambda c: self._fail(f"{what}: {c}"))
            except DeployError as err:
                self._broken = err.cause
                raise

    def _inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.input_specs):
            names = [s[0] for s in self.input_specs]
            raise ValueError(f"model takes {len(self.input_specs)} input(s) {names}, got {len(inputs)}")
        out = []
        for (name, shape, dtype), x in zip(self.input_specs, inputs, strict=True):
            x = np.asarray(x)
            if x.shape != shape:
                raise ValueError(f"input {name!r}: expected shape {shape}, got {x.shape}")
            out.append(np.ascontiguousarray(x.astype(dtype, copy=False)))
        return out

    def random_inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Inputs of the right shapes and dtypes (for timing)."""
        rng = np.random.default_rng(seed)
        out = []
        for _, shape, dtype in self.input_specs:
            if np.issubdtype(np.dtype(dtype), np.integer):
                info = np.iinfo(np.dtype(dtype))
                out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype))
            else:
                out.append(rng.standard_normal(shape).astype(dtype))
        return out

    def run(self, *inputs: np.ndarray) -> Any:
        """Run the model on the board.

        Safe to call from many threads: one RPC session carries one request at a time and the remote VM
        keeps its inputs and outputs between ``set_input`` and ``get_outputs``, so each call (upload of the
        inputs, the run, the copy back) holds a lock of this :class:`RemoteModel`. The cost: calls from
        several threads are serialised -- no parallel speed-up on one board, and a thread waits for the
        calls queued before it (the :attr:`timeout` counts from when its own call starts). For parallel
        throughput, deploy to several boards (one :class:`RemoteModel` each).

        Returns
        -------
        numpy.ndarray or tuple
            The output (a tuple of arrays for several outputs), copied back to the host.

        Raises
        ------
        DeployError
            If the board fails or does not answer within :attr:`timeout`.
        """
        import tvm

        arrays = self._inputs(inputs)

        def go() -> Any:
            dev = self.device
            args = [tvm.runtime.tensor(a, dev) for a in arrays]
            # the stateful interface fetches tuple outputs field by field (a tuple returned by a
            # remote call would stay a handle on the board)
            self._vm.set_input("main", *args)
            self._vm.invoke_stateful("main")
            return _to_numpy(self._vm.get_outputs("main"))

        return self._call("run", go)

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 5) -> dict[str, float]:
        """Time the model on the board with TVM's remote time evaluator.

        Parameters
        ----------
        inputs
            Model inputs (random ones of the right shape when omitted).
        number
            Runs averaged into one measurement.
        repeat
            Measurements.

        Returns
        -------
        dict
            ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms`` over the ``repeat`` measurements.
            On an emulated board these are qemu timings, **not** the board's latency.
        """
        import tvm

        arrays = self._inputs(inputs) if inputs else self.random_inputs()

        def go() -> list[float]:
            dev = self.device
            args = [tvm.runtime.tensor(a, dev) for a in arrays]
            timer = self._vm.time_evaluator("main", dev, number=number, repeat=repeat)
            return [float(t) for t in timer(*args).results]

        # the time-out grows with the work asked for: 10 x the timeout per 10 runs at most
        budget = self.timeout * max(1.0, number * repeat / 10)
        secs = self._call("benchmark", go, timeout=budget)
        ms = np.asarray(secs) * 1e3
        return {
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(np.mean(ms)),
            "min_ms": float(np.min(ms)),
        }

    def profile(self, *inputs: np.ndarray, repeat: int = 10, min_repeat_ms: int = 2) -> Any:
        """Per-kernel times on the board (:class:`~tvm_arq.profiling.Profile`); needs :attr:`model`.

        The kernels are timed one by one on the board with the remote time evaluator, on arguments recorded
        on a host run of the same lowered module (the VM profiler hook cannot run over RPC); see
        :mod:`tvm_arq.deploy.profile`. Random inputs of the right shapes when ``inputs`` are omitted.
        """
        from .profile import profile_on_board

        if self.model is None:
            raise ValueError("profiling on a board needs the model: deploy(model, ...) (a bare library has no "
                             "kernel shapes to replay)")
        return profile_on_board(self, self.model, list(inputs) or self.random_inputs(), repeat=repeat,
                                min_repeat_ms=min_repeat_ms)

    def close(self) -> None:
        """Drop the session (the board removes its work directory and, via a tracker, is free again)."""
        self._vm = None
        self.session = None
        self._broken = "closed"
        # the VM and the session's module reference each other: collect the cycle now so that the
        # connection closes (a board serves one session at a time)
        gc.collect()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_numpy(res: Any) -> Any:
    if hasattr(res, "numpy"):
        return res.numpy()
    if isinstance(res, list | tuple) or (hasattr(res, "__len__") and not isinstance(res, str)):
        return tuple(_to_numpy(r) for r in res)
    return res


def _input_specs(model: Any) -> list[tuple[str, tuple[int, ...], str]]:
    ir = getattr(model, "ir", None)
    if ir is None:
        return []
    specs = []
    for p in ir["main"].params:
        shape = tuple(int(d) for d in p.ty.shape.values)
        specs.append((str(p.name), shape, str(p.ty.dtype)))
    return specs


def deploy(
    model: Any,
    rpc: str | None = None,
    *,
    tracker: str | None = None,
    key: str | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 20.0,
    session_timeout: float = 0,
    priority: int = 1,
    workspace: str | Path | None = None,
) -> RemoteModel:
    """Export a compiled model for its target, upload it to a board and load it there.

    Parameters
    ----------
    model
        A :class:`~tvm_arq.QuantizedModel` (anything with ``executable``, ``target`` and ``ir``)
        compiled for the board's target (e.g. ``"aarch64"``, ``"riscv64-rvv"``).
    rpc
        ``"host:port"`` of the board's RPC server.
    tracker
        ``"host:port"`` of a TVM RPC tracker (instead of ``rpc``); needs ``key``.
    key
        Tracker key the board registered with (``--key``).
    timeout
        Seconds each step may take: waiting for a free board at the tracker, uploading, loading,
        and later each :meth:`RemoteModel.run`.
    connect_timeout
        Seconds to open the connection to the board.
    session_timeout
        Passed to the board: it ends the session after this many seconds (0: never).
    priority
        Priority of the request at the tracker.
    workspace
        Directory for the exported library (a temporary one by default).

    Returns
    -------
    RemoteModel

    Raises
    ------
    DeployError
        Naming the host, the key and the cause: tracker unreachable, no board under ``key``,
        boards busy beyond ``timeout``, board dead or not answering, export or load failure.
    ValueError
        For invalid arguments.
    """
    from .export import ExportError

    _check_connection_args(rpc, tracker, key)
    target = getattr(model, "target", None)
    if getattr(model, "executable", None) is None or target is None:
        raise ValueError("deploy() needs a compiled model (tvm_arq.build(...)) with .executable and .target")

    # 1. export for the target (before touching the network: a missing toolchain is a local error)
    tmp = None
    if workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="tvm_arq_deploy_")
        workspace = tmp.name
    try:
        digest = hashlib.sha256(str(getattr(target, "triple", "")).encode() + str(id(model)).encode()).hexdigest()[:10]
        lib_path = Path(workspace) / f"tvm_arq_model_{digest}.so"
        try:
            from .export import export_library

            export_library(model.executable, lib_path, target)
        except ExportError as err:
            where = rpc if rpc is not None else str(tracker)
            raise DeployError(where, None if rpc is not None else key,
                              f"exporting the model for {getattr(target, 'triple', target)} failed: {err}") from err
        remote = _connect_and_load(lib_path, rpc, tracker, key, target, _input_specs(model), timeout=timeout,
                                   connect_timeout=connect_timeout, session_timeout=session_timeout,
                                   priority=priority)
        remote.model = model
        return remote
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.cleanup()


def _connect_and_load(
    lib_path: Path,
    rpc: str | None,
    tracker: str | None,
    key: str | None,
    target: Any,
    input_specs: list[tuple[str, tuple[int, ...], str]],
    *,
    timeout: float,
    connect_timeout: float,
    session_timeout: float,
    priority: int,
) -> RemoteModel:
    """Connect to the board (directly or through the tracker), upload ``lib_path``, load it in the VM."""
    from tvm import relax
    from tvm import rpc as tvm_rpc

    where = rpc if rpc is not None else str(tracker)
    err_key = None if rpc is not None else key
    lib_name = lib_path.name

    def fail(cause: str) -> DeployError:
        return DeployError(where, err_key, cause)

    # 2. connect
    if rpc is not None:
        host, port = _split(rpc, "rpc")
        matchkey = ""
    else:
        thost, tport = _split(str(tracker), "tracker")
        host, port, matchkey = _request_board(thost, tport, str(key), timeout, priority)
        logger.info("tracker %s gave board %s:%d for key %r", tracker, host, port, key)
    board = f"{host}:{port}"

    def board_fail(cause: str) -> DeployError:
        return fail(cause if rpc is not None else f"board {board}: {cause}")

    try:
        probe_rpc_server(host, port, connect_timeout)
    except OSError as err:
        raise board_fail(_describe(err)) from err
    session = _with_timeout(
        lambda: tvm_rpc.connect(host, port, key=matchkey, session_timeout=session_timeout),
        connect_timeout,
        lambda c: board_fail(
            f"connecting: {c}" + (" (a board serves one session at a time: is another session to it open?)"
                                  if "time-out" in c else "")
        ),
    )

    # 3. the library's CPU architecture against the board's, before uploading
    from .archcheck import check_before_upload

    mismatch = check_before_upload(session, lib_path, target, lambda fn: _with_timeout(
        fn, timeout, lambda c: board_fail(f"asking the board for its architecture: {c}")))
    if mismatch is not None:
        session = None  # noqa: F841 - close the connection now (a board serves one session at a time)
        gc.collect()
        raise board_fail(mismatch)

    # 4. upload, load, create the VM
    def load() -> Any:
        session.upload(str(lib_path))
        return session.load_module(lib_name)

    def load_fail(cause: str) -> DeployError:
        hint = ""
        if any(w in cause for w in ("ELF", "cannot open shared object", "wrong", "cannot load")):
            hint = f" (the model was compiled for {getattr(target, 'triple', target)}: is that the board's CPU?)"
        return board_fail(f"uploading/loading {lib_name}: {cause}{hint}")

    rlib = _with_timeout(load, timeout, load_fail)
    vm = _with_timeout(
        lambda: relax.VirtualMachine(rlib, session.cpu()), timeout, lambda c: board_fail(f"creating the VM: {c}")
    )
    remote = RemoteModel(
        session=session,
        board=board,
        key=key if tracker is not None else None,
        tracker=tracker,
        target=target,
        timeout=timeout,
        input_specs=input_specs,
        library_name=lib_name,
        _vm=vm,
    )
    logger.info("deployed %s to %s in the Relax VM", lib_name, board)
    return remote


def _check_connection_args(rpc: str | None, tracker: str | None, key: str | None) -> None:
    if (rpc is None) == (tracker is None):
        raise ValueError("pass exactly one of rpc='host:port' or tracker='host:port' (with key=...)")
    if tracker is not None and not key:
        raise ValueError("deploying through a tracker needs key= (the board's --key)")
    if rpc is not None:
        _split(rpc, "rpc")
    else:
        _split(str(tracker), "tracker")


def deploy_library(
    path: str | Path,
    rpc: str | None = None,
    *,
    tracker: str | None = None,
    key: str | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 20.0,
    session_timeout: float = 0,
    priority: int = 1,
) -> RemoteModel:
    """Upload an exported library (``.so`` written by :func:`~tvm_arq.deploy.export.save_model`) and load it.

    Parameters
    ----------
    path
        The shared object, already linked for the board's CPU. Its metadata file ``<path>.json``
        (written by ``save_model``; input names, shapes, dtypes, target), when present, lets
        :meth:`RemoteModel.run` check inputs and :meth:`RemoteModel.random_inputs` make them.
    rpc, tracker, key, timeout, connect_timeout, session_timeout, priority
        As for :func:`deploy`.

    Returns
    -------
    RemoteModel

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DeployError
        As for :func:`deploy`.
    """
    from .export import load_model_meta

    _check_connection_args(rpc, tracker, key)
    lib = Path(path).expanduser().resolve()
    if not lib.is_file():
        raise FileNotFoundError(f"no such library: {lib}")
    if lib.suffix != ".so":
        raise ValueError(f"{lib}: deploy a linked shared object (.so), not {lib.suffix or 'a file without suffix'}")
    meta = load_model_meta(lib)
    specs = [] if meta is None else meta.input_specs
    target = None if meta is None else meta.target
    return _connect_and_load(lib, rpc, tracker, key, target, specs, timeout=timeout,
                             connect_timeout=connect_timeout, session_timeout=session_timeout, priority=priority)


def wait_for(predicate: Callable[[], bool], timeout: float, period: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()
