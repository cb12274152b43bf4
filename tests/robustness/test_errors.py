"""Errors that name their cause before expensive work: a library for another CPU (before the upload), an
unwritable output path (before calibration), a directory given as the model, an initializer of the wrong size,
invalid ports, and ``--timeout`` honoured by every wait of ``deploy``/``bench``."""

from __future__ import annotations

import errno
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import tvm_arq
from tests.helpers import assert_not_hung
from tests.robustness._models import conv_relu_onnx
from tests.robustness._tally import tried
from tvm_arq.cli import _one_line, main
from tvm_arq.deploy import deploy_library
from tvm_arq.frontend import FrontendError


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("errors") / "conv.onnx"
    onnx.save(conv_relu_onnx(), path)
    return path


def _cli(capsys, *argv: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main(list(argv))
    return code, capsys.readouterr().err, time.monotonic() - t0


# ------------------------------------------------------------------------------------------ output path


def test_unwritable_output_is_reported_before_calibration(onnx_file, tmp_path, capsys) -> None:
    """The calibration path does not exist either: the output path is checked first, so it is what is named."""
    missing_cal = str(tmp_path / "no_such_calibration.npy")
    code, err, secs = _cli(capsys, "build", str(onnx_file), "--calibration", missing_cal,
                           "-o", str(tmp_path / "no_such_dir" / "m.so"))
    assert code == 1 and "the directory" in err and "does not exist" in err and "calibration" not in err
    code, err, _ = _cli(capsys, "build", str(onnx_file), "--calibration", missing_cal, "-o", str(tmp_path))
    assert code == 1 and "is a directory" in err
    tried(2)


def test_read_only_file_system_is_reported_with_the_os_text(onnx_file, tmp_path, capsys, monkeypatch) -> None:
    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    code, err, _ = _cli(capsys, "build", str(onnx_file), "--calibration", str(tmp_path / "x.npy"),
                        "-o", str(tmp_path / "m.so"))
    assert code == 1 and "Read-only file system" in err and "m.so" in err
    tried()


def test_cli_export_error_shows_the_linkers_cause() -> None:
    from tvm_arq.deploy import ExportError

    err = ExportError("Linking /ro/m.so failed:\n/usr/bin/ld: cannot open output file /ro/m.so: Read-only file "
                      "system\ncollect2: error: ld returned 1 exit status\nCommand line: cc -shared ...")
    assert "Read-only file system" in _one_line(err)
    tried()


# ------------------------------------------------------------------------------------------ model files


def test_directory_as_model(tmp_path, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="is a directory, not an ONNX file"):
        tvm_arq.from_onnx(tmp_path)
    code, err, _ = _cli(capsys, "build", str(tmp_path), "--calibration", "x.npy", "-o", str(tmp_path / "m.so"))
    assert code == 1 and "is a directory, not an ONNX file" in err
    tried(2)


def test_initializer_of_wrong_size_is_named() -> None:
    model = conv_relu_onnx()
    w = next(t for t in model.graph.initializer if t.name == "W")
    w.raw_data = w.raw_data[: len(w.raw_data) // 2]  # half the data its dims promise
    with pytest.raises(FrontendError, match=r"initializer 'W'.*shape \[4, 3, 3, 3\]"):
        tvm_arq.from_onnx(model)
    tried()


# ------------------------------------------------------------------------------------------ ports, time-outs


@pytest.mark.parametrize("port", ["99999", "0", "65536"])
def test_invalid_port(port, tmp_path, capsys) -> None:
    lib = tmp_path / "m.so"
    lib.write_bytes(b"\x7fELF")
    with pytest.raises(ValueError, match=rf"invalid port {int(port)} \(1-65535\)"):
        deploy_library(lib, rpc=f"127.0.0.1:{port}")
    code, err, _ = _cli(capsys, "deploy", str(lib), "--rpc", f"127.0.0.1:{port}")
    assert code == 1 and f"invalid port {int(port)} (1-65535)" in err and "refused" not in err
    tried(2)


@pytest.fixture
def silent_server():
    """A socket that accepts connections and never answers (a hung board)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    th.join()
    for c in conns:
        c.close()
    srv.close()


@pytest.mark.parametrize("command", ["bench", "deploy"])
def test_timeout_is_honoured_by_every_wait(command, silent_server, tmp_path, capsys) -> None:
    lib = tmp_path / "m.so"
    lib.write_bytes(b"\x7fELF")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), "float32"))
    code, err, secs = _cli(capsys, command, str(lib), "--rpc", silent_server, "--timeout", "3")
    assert code == 1 and "did not answer within 3 s" in err
    # a fault test, not a speed threshold: the server never answers, so without the time-out the command
    # would block forever; the bound only tells "failed with the time-out" from "hung"
    assert_not_hung(time.monotonic() - secs, 3, f"{command} --timeout 3")
    tried()
