"""``tvm-arq`` subcommands, run for real on the bundled MNIST CNN (tiny budgets), and their error paths.

Board tests (deploy, bench, tune through RPC) use an emulated aarch64 board, as tests/test_boards.py does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arq_bench import zoo
from tvm_arq import cli
from tvm_arq.samples import PixelRange, load_labels, load_samples, npz_labels

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(zoo.mnist_cnn())
SUBCOMMANDS = ["build", "compare", "tune", "deploy", "bench", "report", "board"]
_BOARD_TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-g++")
needs_board = pytest.mark.skipif(
    any(shutil.which(t) is None for t in _BOARD_TOOLS) and os.environ.get("CI") != "true",
    reason=f"emulated boards need {_BOARD_TOOLS} (run `make apt`)",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Calibration .npy, a labelled evaluation .npz, separate labels, a folder of PNG digits."""
    d = tmp_path_factory.mktemp("cli_data")
    x, y = zoo.mnist_test()
    np.save(d / "cal.npy", x[100:116])
    np.savez(d / "cal.npz", x=x[100:116])
    np.savez(d / "eval.npz", x=x[:24], y=y[:24])
    np.save(d / "eval.npy", x[:24])
    np.save(d / "labels.npy", y[:24])
    (d / "labels.txt").write_text("\n".join(str(int(v)) for v in y[:24]))
    images = d / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray((x[200 + i, 0] * 255).astype(np.uint8), mode="L").save(images / f"{i:02d}.png")
    return {"dir": d, "cal": d / "cal.npy", "cal.npz": d / "cal.npz", "eval": d / "eval.npz",
            "labels": d / "labels.npy", "images": images}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------------------------------
# help, usage


def test_console_script_help_in_a_subprocess() -> None:
    exe = Path(sys.executable).parent / "tvm-arq"
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "tvm_arq.cli", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    for name in SUBCOMMANDS:
        assert name in proc.stdout


def test_boards_module_runs_without_importing_itself_twice() -> None:
    """``python -m tvm_arq.deploy.boards``: importing tvm_arq (which binds ``tvm_arq.deploy`` to the deploy
    function) must not import the boards module before runpy executes it (a RuntimeWarning)."""
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "tvm_arq.deploy.boards", "--help"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert "setup" in proc.stdout


@pytest.mark.parametrize("name", [s for s in SUBCOMMANDS if s != "board"])
def test_every_subcommand_has_help(capsys, name: str) -> None:
    code, out, _ = run(capsys, name, "--help")
    assert code == 0
    assert out.startswith("usage: tvm-arq " + name)


def test_board_help_and_usage_errors_exit_2(capsys) -> None:
    assert run(capsys, "board", "--help")[0] == 0
    assert run(capsys, "board", "list")[0] == 0
    assert run(capsys, "board")[0] == 2
    code, _, err = run(capsys)
    assert code == 2 and "usage:" in err
    code, _, err = run(capsys, "compare", MODEL)  # --calibration is required for a float model (not a QDQ one)
    assert code == 1 and "--calibration" in err
    code, _, err = run(capsys, "tune", MODEL, "--trials", "0", "--calibration", "x.npy")
    assert code == 2 and "--trials" in err
    code, _, err = run(capsys, "deploy", MODEL)  # one of --rpc / --tracker is required
    assert code == 2 and "--rpc" in err


# --------------------------------------------------------------------------------------------------
# error paths: exit 1, one line, no traceback


def _one_clean_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s" not in ln and "sample/s" not in ln]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def test_missing_model_file_exits_1_without_traceback(capsys, data, tmp_path) -> None:
    code, _, err = run(capsys, "build", tmp_path / "nope.onnx", "-o", tmp_path / "m.so",
                       "--calibration", data["cal"])
    assert code == 1
    line = _one_clean_line(err)
    assert line.startswith("tvm-arq build: error:") and "nope.onnx" in line
    assert not (tmp_path / "m.so").exists()


@pytest.mark.parametrize("argv, words", [
    (["compare", MODEL, "--calibration", "{d}/missing.npy"], ["missing.npy"]),
    (["build", MODEL, "-o", "{d}/x.so"], ["--calibration"]),
    (["build", MODEL, "-o", "{d}/x.so", "--calibration", "{d}/images", "--shape", "1,a,2"], ["--shape"]),
    (["compare", MODEL, "--calibration", "{d}/cal.npy", "--data", "{d}/eval.npy", "--labels", "{d}/cal.npy"],
     ["labels must be"]),
    (["compare", MODEL, "--calibration", "{d}/labels.npy"], ["do not match the model input"]),
    (["compare", MODEL, "--calibration", "{d}/cal.npy", "--labels", "{d}/labels.npy"], ["--labels needs --data"]),
    (["tune", MODEL, "--calibration", "{d}/cal.npy", "--target", "aarch64", "--trials", "2"], ["--rpc"]),
    (["tune", MODEL, "--calibration", "{d}/cal.npy", "--tracker", "127.0.0.1:1", "--trials", "2"], ["--key"]),
    (["deploy", "{d}/none.so", "--rpc", "127.0.0.1:1"], ["none.so"]),
    (["bench", MODEL, "--rpc", "127.0.0.1:1", "--calibration", "{d}/cal.npy"], ["--target"]),
    (["deploy", "{d}/cal.npy", "--rpc", "nohostport"], ["HOST:PORT"]),
])
def test_user_errors_exit_1_with_one_line(capsys, data, argv, words) -> None:
    code, _, err = run(capsys, *[a.format(d=data["dir"]) for a in argv])
    assert code == 1, err
    line = _one_clean_line(err)
    assert line.startswith(f"tvm-arq {argv[0]}: error:")
    for w in words:
        assert w in line


def test_verbose_shows_the_exception(data, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        cli.main(["build", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "m.so"), "--verbose"])


def test_missing_file_in_a_subprocess_exits_1_without_traceback(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tvm_arq.cli", "compare", str(tmp_path / "no.onnx"),
                           "--calibration", str(tmp_path / "no.npy")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tvm-arq compare: error: no such model file")


# --------------------------------------------------------------------------------------------------
# samples (the API behind --calibration / --data / --labels)


def test_load_samples_from_npy_npz_and_images(data) -> None:
    shape = (1, 1, 28, 28)
    a = load_samples(data["cal"], shape)
    b = load_samples(data["cal.npz"], shape)
    assert len(a) == len(b) == 16 and all(s.shape == shape for s in a)
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    imgs = load_samples(data["images"], shape, pixel_range=PixelRange.UNIT)
    assert len(imgs) == 6 and imgs[0].shape == shape and imgs[0].dtype == np.float32
    x, _ = zoo.mnist_test()
    np.testing.assert_allclose(imgs[0][0, 0], x[200, 0], atol=1 / 255 + 1e-6)
    signed = load_samples(data["images"], shape)
    assert signed[0].min() >= -1 and signed[0].min() < -0.9
    assert len(load_samples(data["cal"], shape, limit=3)) == 3
    np.testing.assert_array_equal(load_labels(data["labels"]), load_labels(data["dir"] / "labels.txt"))
    np.testing.assert_array_equal(npz_labels(data["eval"]), load_labels(data["labels"]))
    assert npz_labels(data["dir"] / "cal.npz") is None
    with pytest.raises(ValueError, match="do not match"):
        load_samples(data["cal"], (1, 3, 28, 28))
    with pytest.raises(FileNotFoundError):
        load_samples(data["dir"] / "missing", shape)


# --------------------------------------------------------------------------------------------------
# build, compare, tune, report on the host


def _run_library(lib: Path, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("calibration", ["cal", "cal.npz", "images"])
def test_build_takes_npy_npz_or_image_folder(capsys, data, tmp_path, calibration) -> None:
    cal = data["dir"] / (calibration if calibration != "cal" else "cal.npy")
    lib = tmp_path / "m.so"
    code, out, err = run(capsys, "build", MODEL, "-o", lib, "--calibration", cal, "--pixel-range", "unit",
                         "--qparams", tmp_path / "q.json")
    assert code == 0, err
    assert "scheme=hybrid" in out and f"wrote {lib}" in out
    meta = json.loads((tmp_path / "m.so.json").read_text())
    assert meta["input_specs"] == [["input", [1, 1, 28, 28], "float32"]] and meta["scheme"] == "hybrid"
    assert json.loads((tmp_path / "q.json").read_text())
    x, y = zoo.mnist_test()
    logits = np.concatenate([_run_library(lib, x[i:i + 1]) for i in range(8)])
    assert logits.shape == (8, 10) and np.mean(logits.argmax(1) == y[:8]) >= 0.75


def test_compare_with_labels_and_without(capsys, data, tmp_path) -> None:
    js = tmp_path / "cmp.json"
    code, out, err = run(capsys, "compare", MODEL, "--calibration", data["cal"], "--data", data["eval"],
                         "--json", js)
    assert code == 0, err
    assert "UNTUNED" in out and "untuned ms" in out and "CALIBRATION samples" not in out
    res = json.loads(js.read_text())
    assert [r["scheme"] for r in res["rows"]] == ["fp32", "symmetric", "hybrid"]
    assert res["labelled"] and res["latency"] == "untuned" and res["n_samples"] == 24
    for r in res["rows"]:
        assert 0.7 <= r["accuracy"] <= 1.0 and r["median_ms"] > 0 and not r["tuned"]
        assert f"{r['accuracy']:.3f}" in out
    assert res["rows"][0]["agreement"] == 1.0
    # explicit labels give the same accuracies; no labels: agreement only
    code, _, _ = run(capsys, "compare", MODEL, "--calibration", data["cal"], "--data", data["dir"] / "eval.npy",
                     "--labels", data["labels"], "--json", tmp_path / "b.json", "--limit", "24")
    assert code == 0
    assert [r["accuracy"] for r in json.loads((tmp_path / "b.json").read_text())["rows"]] == \
        [r["accuracy"] for r in res["rows"]]
    code, out, _ = run(capsys, "compare", MODEL, "--calibration", data["cal"], "--json", tmp_path / "c.json")
    assert code == 0 and "agreement with fp32 only" in out
    assert "CALIBRATION samples" in out and "note: agreement measured on the" in out  # says what it scored
    assert "calibration samples" in " ".join(json.loads((tmp_path / "c.json").read_text())["notes"])
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert all(r["accuracy"] is None for r in rows) and rows[0]["agreement"] == 1.0


def _records(work_dir: Path) -> int:
    path = work_dir / "database_tuning_record.json"
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@pytest.mark.slow
def test_tune_on_host_persists_and_resumes(capsys, data, tmp_path) -> None:
    wd, lib = tmp_path / "wd", tmp_path / "tuned.so"
    argv = ["tune", MODEL, "--calibration", data["cal"], "--trials", "4", "--work-dir", wd, "-o", lib,
            "--threads", "1"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    n = _records(wd)
    assert n >= 1 and lib.exists() and json.loads((tmp_path / "tuned.so.json").read_text())["tuned"]
    assert "tuning database" in out
    # the budget is already recorded: a second run measures nothing new and still writes the library
    lib.unlink()
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert _records(wd) == n and lib.exists()
    x, _ = zoo.mnist_test()
    assert _run_library(lib, x[:1]).shape == (1, 10)


@pytest.mark.slow
def test_compare_tuned(capsys, data, tmp_path) -> None:
    js = tmp_path / "cmp.json"
    code, out, err = run(capsys, "compare", MODEL, "--calibration", data["cal"], "--data", data["eval"],
                         "--trials", "2", "--work-dir", tmp_path / "wd", "--threads", "1", "--json", js)
    assert code == 0, err
    res = json.loads(js.read_text())
    assert res["tuned"] and res["latency"].startswith("tuned") and "UNTUNED" not in out
    for name in ("fp32", "symmetric", "hybrid"):
        assert _records(tmp_path / "wd" / name) >= 1


def test_report_runs(capsys, data, tmp_path) -> None:
    code, out, err = run(capsys, "report", MODEL, "--calibration", data["cal"], "--max-samples", "4",
                         "--json", tmp_path / "r.json")
    assert code == 0, err
    assert (tmp_path / "r.json").exists() and "SQNR" in out.upper()


# --------------------------------------------------------------------------------------------------
# deploy, bench, tune through RPC on an emulated aarch64 board


@pytest.fixture(scope="module")
def board():
    from tvm_arq.deploy import EmulatedBoard

    with EmulatedBoard("aarch64") as b:
        yield b


@needs_board
@pytest.mark.slow
def test_deploy_and_bench_on_emulated_board(capsys, data, tmp_path, board) -> None:
    lib = tmp_path / "a64.so"
    code, _, err = run(capsys, "build", MODEL, "-o", lib, "--calibration", data["cal"], "--target", "aarch64")
    assert code == 0, err
    out_npy = tmp_path / "y.npy"
    code, out, err = run(capsys, "deploy", lib, "--rpc", board.address, "--input", data["eval"], "-o", out_npy)
    assert code == 0, err
    assert f"ran a64.so on {board.address}" in out and "output 0: shape (1, 10) float32" in out
    x, y = zoo.mnist_test()
    assert int(np.load(out_npy).argmax()) == int(y[0])
    # without --input: random inputs of the shape recorded in a64.so.json
    code, out, err = run(capsys, "deploy", lib, "--rpc", board.address)
    assert code == 0, err
    js = tmp_path / "bench.json"
    code, out, err = run(capsys, "bench", lib, "--rpc", board.address, "--repeat", "3", "--json", js)
    assert code == 0, err
    stats = json.loads(js.read_text())
    assert stats["repeat"] == 3 and 0 < stats["median_ms"] <= stats["p90_ms"]
    assert "median" in out and "not the board's latency" in out
    # an ONNX model is built here for --target, run on the board and checked against the host build
    code, out, err = run(capsys, "deploy", MODEL, "--rpc", board.address, "--target", "aarch64",
                         "--calibration", data["cal"], "--input", data["eval"])
    assert code == 0, err
    assert "bit-exact with the host build: yes" in out


@needs_board
@pytest.mark.slow
def test_tune_through_rpc_on_emulated_board(capsys, data, tmp_path, board) -> None:
    wd, lib = tmp_path / "wd", tmp_path / "tuned_a64.so"
    code, _, err = run(capsys, "tune", MODEL, "--calibration", data["cal"], "--target", "aarch64", "--trials", "4",
                       "--work-dir", wd, "--rpc", board.address, "--threads", "1", "-o", lib)
    assert code == 0, err
    records = [json.loads(line) for line in (wd / "database_tuning_record.json").read_text().splitlines()]
    secs = [float(s) for r in records for s in r[1][1]]
    assert secs and min(secs) < 1e9, secs  # measured on the board (failed candidates get 1e10 s)
    code, out, err = run(capsys, "deploy", lib, "--rpc", board.address, "--input", data["eval"])
    assert code == 0, err
    assert "output 0: shape (1, 10)" in out


@needs_board
def test_unreachable_board_exits_1(capsys, data, tmp_path) -> None:
    from tvm_arq.deploy.boards import free_port

    lib = tmp_path / "a64.so"
    assert run(capsys, "build", MODEL, "-o", lib, "--calibration", data["cal"], "--target", "aarch64")[0] == 0
    code, _, err = run(capsys, "bench", lib, "--rpc", f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert code == 1
    assert "connection refused" in _one_clean_line(err)
