"""Per-kernel profile of a deployed model on its board (:meth:`RemoteModel.profile`).

The Relax VM's instrument hook (what the host profile uses, see :mod:`tvm_arq.profiling`) is a function
of the process running the VM; over RPC it cannot be installed on the board. So:

1. the model's lowered module (the target's layouts, what the board's library was compiled from) is
   compiled for *this* machine and run once with the hook: the kernel calls, their arguments (real data)
   and calls per run; the kernel names must be those of the board's library (checked against the VM
   bytecode; a tuned build, whose kernels TVM fused, is replayed with the same fusion);
2. the library's kernel module alone is exported for the board, uploaded and loaded, and each kernel is
   timed there with TVM's remote time evaluator on those arguments (mean of ``repeat`` measurements);
3. the whole model is timed on the board the same way, through its VM.

On an emulated board (qemu-user) the times are emulation times, not the board's.
"""

from __future__ import annotations

import logging
import re
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..profiling import KernelCall, Profile, assemble, kernel_params, record_calls, time_kernel

__all__ = ["profile_on_board"]

logger = logging.getLogger(__name__)


def _library_kernels(executable: Any) -> set[str]:
    """Kernel symbols the VM bytecode calls (VM builtins left out)."""
    return {n for n in re.findall(r"call\s+(\S+)", executable.as_text()) if not n.startswith("vm.")}


def _replay_on_host(model: Any, lowered: Any, inputs: Sequence[np.ndarray]) -> list[KernelCall]:
    """The board library's kernel calls with their arguments, recorded on a host build of the same module."""
    import tvm
    from tvm import relax

    from ..tune.search import prepare_for_tuning

    wanted = _library_kernels(model.executable)
    host = tvm.target.Target({"kind": "llvm"})
    calls: list[KernelCall] = []
    for fused in (False, True):
        mod = prepare_for_tuning(lowered, host) if fused else lowered
        ex = tvm.compile(mod, target=host)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        calls = record_calls(vm, [tvm.runtime.tensor(x) for x in inputs])
        missing = sorted({c.name for c in calls} ^ wanted)
        if not missing:
            return calls
        logger.info("host replay%s: kernel names differ from the board library's: %s", " (fused)" if fused else "",
                    missing[:8])
    logger.warning("the board library's kernels were not all found on the host replay (%s...): profiling those "
                   "that were", missing[:4])
    return [c for c in calls if c.name in wanted]


def _kernel_module(executable: Any) -> Any:
    """The executable's compiled kernel library (its ``llvm`` import)."""
    mods = [m for m in executable.mod.imports if m.kind == "llvm"]
    if not mods:
        raise ValueError("the executable has no compiled kernel library (llvm module) to profile")
    if len(mods) > 1:
        logger.warning("the executable has %d kernel libraries; profiling the first", len(mods))
    return mods[0]


def profile_on_board(remote: Any, model: Any, inputs: Sequence[np.ndarray], *, repeat: int = 10,
                     min_repeat_ms: int = 2) -> Profile:
    """Profile ``model``, deployed as ``remote``, on the board (see the module docstring).

    Parameters
    ----------
    remote
        The :class:`~tvm_arq.deploy.RemoteModel` that :func:`~tvm_arq.deploy.deploy` returned for ``model``.
    model
        The :class:`~tvm_arq.QuantizedModel` (its lowered module and executable).
    inputs
        One array per model input (checked against the model's inputs).
    repeat, min_repeat_ms
        As for :meth:`tvm_arq.QuantizedModel.profile`.
    """
    import tvm

    from .export import export_library

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    arrays = remote._inputs(inputs)
    lowered = model.lowered_ir()
    calls = _replay_on_host(model, lowered, arrays)
    kernels = _kernel_module(model.executable)
    with tempfile.TemporaryDirectory(prefix="tvm_arq_profile_") as tmp:
        lib = Path(tmp) / f"{Path(remote.library_name).stem}_kernels.so"
        # our export_library reads `.mod` to check the architecture; a bare module would look it up as a kernel
        export_library(types.SimpleNamespace(mod=kernels, export_library=kernels.export_library), lib, model.target)

        def load() -> Any:
            remote.session.upload(str(lib))
            return remote.session.load_module(lib.name)

        rlib = remote._call("uploading the kernel library", load)
    dev = remote.device
    times: dict[str, tuple[float, float]] = {}
    budget = remote.timeout * max(1.0, repeat / 10)
    for c in calls:
        def go(c: KernelCall = c) -> tuple[float, float]:
            args = [tvm.runtime.tensor(a, dev) if isinstance(a, np.ndarray) else a for a in c.args]
            return time_kernel(rlib, c.name, dev, args, repeat, min_repeat_ms)

        times[c.name] = remote._call(f"timing {c.name}", go, timeout=budget)

    def whole() -> tuple[float, float]:
        args = [tvm.runtime.tensor(a, dev) for a in arrays]
        timer = remote._vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=max(1, min_repeat_ms))
        res = np.asarray(timer(*args).results) * 1e6
        return float(res.mean()), float(res.min())

    e2e = remote._call("timing the model", whole, timeout=budget)
    method = (f"each kernel timed alone on the board (remote TVM time evaluator, mean of {repeat} measurements of "
              f">= {min_repeat_ms} ms) on arguments recorded on a host run of the same lowered module")
    return assemble(calls, times, e2e, device=f"board {remote.board}", target=str(model.target.triple),
                    repeat=repeat, min_repeat_ms=min_repeat_ms, method=method,
                    params=kernel_params(lowered))
