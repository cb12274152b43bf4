"""Runners of tuning candidates: on this machine, or on boards through a TVM RPC tracker or directly.

Also the RPC handshake probe (:func:`probe_rpc_server`) that checks a board answers without disturbing
it, shared with :mod:`tvm_arq.deploy.rpc`.
"""

from __future__ import annotations

import shutil
import socket
import struct
import time
from typing import Any

from tvm.s_tir import meta_schedule as ms

from ..target import TargetInfo
from .config import RPCSettings, RunnerKind, TuneConfig, TuneError
from .interrupts import ignore_sigint

__all__ = ["RPC_MAGIC", "check_runner", "direct_session", "make_runner", "probe_rpc_server", "recv_exact"]

#: magic number of TVM's RPC protocol (first word of a session handshake)
RPC_MAGIC = 0xFF271


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes from ``sock``.

    Raises
    ------
    ConnectionError
        If the peer closes the connection first.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        buf += chunk
    return bytes(buf)


def probe_rpc_server(host: str, port: int, timeout: float) -> None:
    """Check that an RPC server answers at ``host:port`` without disturbing it.

    Sends a session handshake with a key no server expects: TVM's servers (ours, the Python and the
    C++ ones) answer "key mismatch" and keep waiting for the real client with the same match key.

    Raises
    ------
    ConnectionRefusedError
        Nothing listens there.
    TimeoutError
        The board accepted the connection but did not answer: hung, or busy with another session.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        key = b"client:__tvm_arq_probe__"
        sock.sendall(struct.pack("<ii", RPC_MAGIC, len(key)) + key)
        try:
            recv_exact(sock, 4)
        except TimeoutError:
            raise TimeoutError(
                f"the board accepted a connection but did not answer within {timeout:.0f} s: it is hung, "
                "or busy with another session (a board serves one session at a time)"
            ) from None


def check_runner(config: TuneConfig, info: TargetInfo) -> None:
    """Fail early when the local runner is asked to measure code this machine cannot run."""
    if config.runner is RunnerKind.LOCAL and not info.is_host:
        raise TuneError(
            f"Target {info} cannot run on this machine, so it cannot be measured with the local "
            "runner; use RunnerKind.RPC with a board (or an emulated one) registered at a tracker"
        )
    if config.runner is RunnerKind.RPC and info.cross_compiler and not shutil.which(info.cross_compiler):
        raise TuneError(
            f"Candidates for {info.arch.value} boards are linked with {info.cross_compiler!r}, which is "
            f"not on PATH; install it with `apt-get install {info.debian_package}`"
        )


def _rpc_preflight(rpc: RPCSettings) -> None:
    """Check that the tracker answers and serves ``rpc.key``.

    MetaSchedule's RPC runner asks the tracker for a session with ``request()``, which blocks forever
    when no board serves the key; fail with a clear message instead.
    """
    from tvm import rpc as tvm_rpc

    if rpc.direct:
        try:
            probe_rpc_server(rpc.tracker_host, rpc.tracker_port, max(1.0, rpc.wait_for_board_sec))
        except OSError as err:
            raise TuneError(f"The board's RPC server at {rpc.address} does not answer: {err}") from err
        return
    deadline = time.monotonic() + rpc.wait_for_board_sec
    try:
        tracker = tvm_rpc.connect_tracker(rpc.tracker_host, rpc.tracker_port)
    except Exception as err:  # noqa: BLE001 - TVM raises RuntimeError/OSError variants
        raise TuneError(
            f"Cannot reach the RPC tracker at {rpc.tracker_host}:{rpc.tracker_port}: {err}"
        ) from err
    while True:
        summary = tracker.summary()
        keys = {str(item.get("key", "")).split(":", 1)[-1] for item in summary.get("server_info", [])}
        keys |= {str(k) for k in summary.get("queue_info", {})}
        if rpc.key in keys:
            return
        if time.monotonic() >= deadline:
            raise TuneError(
                f"No board serves key {rpc.key!r} at the tracker {rpc.tracker_host}:{rpc.tracker_port} "
                f"(keys there: {sorted(k for k in keys if k) or 'none'})"
            )
        time.sleep(0.5)


def make_runner(config: TuneConfig, info: TargetInfo) -> ms.runner.Runner:
    """The runner ``config`` asks for (checked: the target runs here, or the board answers)."""
    if isinstance(config.runner, ms.runner.Runner):
        return config.runner
    check_runner(config, info)
    evaluator = ms.runner.EvaluatorConfig(
        number=config.number,
        repeat=config.repeat,
        min_repeat_ms=config.min_repeat_ms,
        enable_cpu_cache_flush=False,
    )
    if config.runner is RunnerKind.LOCAL:
        return ms.runner.LocalRunner(timeout_sec=config.runner_timeout_sec, evaluator_config=evaluator,
                                     initializer=ignore_sigint)
    assert config.rpc is not None
    _rpc_preflight(config.rpc)
    rpc_config = ms.runner.RPCConfig(
        tracker_host=config.rpc.tracker_host,
        tracker_port=config.rpc.tracker_port,
        tracker_key=config.rpc.key,
        session_priority=config.rpc.session_priority,
        session_timeout_sec=config.rpc.session_timeout_sec,
    )
    if config.rpc.direct:
        return ms.runner.RPCRunner(
            rpc_config=rpc_config, evaluator_config=evaluator, max_workers=1, f_create_session=direct_session,
            initializer=ignore_sigint,
        )
    return ms.runner.RPCRunner(
        rpc_config=rpc_config, evaluator_config=evaluator, max_workers=config.rpc.max_workers,
        initializer=ignore_sigint,
    )


def direct_session(rpc_config: ms.runner.RPCConfig) -> Any:
    """``f_create_session`` of the RPC runner for :attr:`RPCSettings.direct`: connect to the board itself.

    Runs in the runner's worker processes (``tracker_host``/``tracker_port`` hold the board's address).
    """
    from tvm import rpc as tvm_rpc

    return tvm_rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                           session_timeout=rpc_config.session_timeout_sec)

