"""The object :func:`tvm_arq.build` returns."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tvm import relax

from .backends.export import export_library
from .config import QuantConfig, Scheme
from .passes.analysis import QuantPlan
from .qmath import QParams
from .target import TargetInfo

if TYPE_CHECKING:
    from .budget import AccuracyReport
    from .profiling import Profile

logger = logging.getLogger(__name__)


def _to_numpy(res) -> Any:
    if isinstance(res, tvm.runtime.Tensor):
        return res.numpy()
    if isinstance(res, list | tuple) or hasattr(res, "__len__") and not hasattr(res, "numpy"):
        return tuple(_to_numpy(r) for r in res)
    return res.numpy() if hasattr(res, "numpy") else res


def _check_finite(name: str, x: np.ndarray) -> None:
    """Raise ``ValueError`` if the float array ``x`` holds NaN or Inf values."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    n_nan = int(np.isnan(x).sum())
    n_inf = int(np.isinf(x).sum())
    if n_nan or n_inf:
        raise ValueError(f"input {name!r}: {n_nan} NaN and {n_inf} Inf value(s) of {x.size} "
                         "(check_inputs=True refuses non-finite inputs)")


@dataclass
class QuantizedModel:
    """A quantized (or float) model compiled for a target.

    Attributes
    ----------
    ir
        The integer Relax module (for ``scheme="float"``: the float module).
    qdq
        The annotated module (quantize/dequantize pairs; runs in float as a fake-quantized simulation),
        ``None`` for the float scheme.
    qparams
        Per quantization point: scale, zero point, dtype, range kind, clipping range and the rule that
        chose it.
    plan
        Which ops became integer and which stayed in float (``plan.fallbacks``).
    target
        The resolved target.
    executable
        The compiled Relax executable for ``target``.
    check_inputs
        Default of ``run(..., check_inputs=...)``: refuse NaN/Inf inputs with a ``ValueError``.
    accuracy_report
        With ``build(..., accuracy=AccuracyBudget(...))``: the measured metrics, the layers kept in higher
        precision and their cost (:class:`~tvm_arq.budget.AccuracyReport`); else ``None``.
    """

    ir: tvm.IRModule
    qdq: tvm.IRModule | None
    qparams: dict[str, QParams]
    plan: QuantPlan | None
    target: TargetInfo
    config: QuantConfig
    executable: Any
    float_ir: tvm.IRModule | None = None
    build_seconds: float = 0.0
    check_inputs: bool = False
    accuracy_report: AccuracyReport | None = None
    _host_exec: Any = field(default=None, repr=False)
    _vms: threading.local = field(default_factory=threading.local, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def scheme(self) -> Scheme:
        return self.config.scheme

    @property
    def fallbacks(self) -> list[tuple[str, str, str]]:
        """``(tensor, op, reason)`` of ops that run in float inside the quantized graph."""
        return [] if self.plan is None else list(self.plan.fallbacks)

    def _vm(self) -> relax.VirtualMachine:
        """This thread's virtual machine for the host executable.

        A Relax VM holds its register file and call frames, so one VM must never run two calls at once:
        every thread gets its own VM (created on the thread's first call, about a millisecond and the
        size of the VM's registers; the executable and its weights are shared). ``run`` is therefore safe
        to call from many threads at once, without a lock.
        """
        vm = getattr(self._vms, "vm", None)
        if vm is None:
            with self._lock:
                if self._host_exec is None:
                    if self.target.is_host:
                        self._host_exec = self.executable
                    else:
                        logger.info("target %s does not run here: building a host copy for run()",
                                    self.target.triple)
                        self._host_exec = tvm.compile(self.ir, target=tvm.target.Target({"kind": "llvm"}))
            vm = self._vms.vm = relax.VirtualMachine(self._host_exec, tvm.cpu())
        return vm

    def run(self, *inputs: np.ndarray, check_inputs: bool | None = None):
        """Run on this machine; returns a numpy array (or a tuple for several outputs).

        Parameters
        ----------
        inputs
            One array per model input.
        check_inputs
            Refuse float inputs holding NaN or Inf (``ValueError`` naming the input and the counts).
            ``None``: the model's :attr:`check_inputs` attribute (``False`` unless set). Unchecked,
            non-finite values have one defined meaning, the same in ``run()``, ``reference()`` and on
            boards: NaN quantizes to the zero point, +Inf to the top and -Inf to the bottom of the range.
        """
        specs = [(p.name, tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else -1 for d in p.ty.shape.values),
                  str(p.ty.dtype)) for p in self.ir["main"].params]
        if len(inputs) != len(specs):
            raise ValueError(f"model takes {len(specs)} input(s) {[s[0] for s in specs]}, got {len(inputs)}")
        args = []
        for (name, shape, dtype), x in zip(specs, inputs, strict=True):
            x = np.asarray(x)
            if (self.check_inputs if check_inputs is None else check_inputs):
                _check_finite(name, x)
            if len(x.shape) != len(shape) or any(d not in (-1, e) for e, d in zip(x.shape, shape, strict=True)):
                raise ValueError(f"input {name!r}: expected shape {shape} (-1: any), got {x.shape}")
            args.append(tvm.runtime.tensor(np.ascontiguousarray(x.astype(dtype, copy=False))))
        return _to_numpy(self._vm()["main"](*args))

    def reference(self, *inputs: np.ndarray):
        """Run the numpy integer reference interpreter on the integer module."""
        from .ops.reference import ReferenceInterpreter

        return ReferenceInterpreter(self.ir).run(*inputs)

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 5) -> dict[str, float]:
        """Host latency (median / p90 over ``repeat`` measurements of ``number`` runs), in ms."""
        vm = self._vm()
        args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs]
        vm["main"](*args)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                vm["main"](*args)
            times.append((time.perf_counter() - t0) / number * 1e3)
        return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}

    def profile(self, *inputs: np.ndarray, repeat: int = 10, min_repeat_ms: int = 2) -> Profile:
        """Where the time goes on this machine: each kernel's time, share, calls, MACs and GMAC/s.

        Each kernel (PrimFunc) is timed alone on its real arguments from one run, the whole model end to
        end; ``end_to_end_us - kernels_us`` is the VM's dispatch and thread-pool overhead (plus the cold
        caches kernels meet inside the network). See :mod:`tvm_arq.profiling`; on a board use
        :meth:`tvm_arq.deploy.RemoteModel.profile`.

        Parameters
        ----------
        inputs
            One array per model input.
        repeat
            Measurements per kernel and of the whole model (means are reported).
        min_repeat_ms
            Minimum length of one measurement (short kernels run several times per measurement).

        Returns
        -------
        tvm_arq.profiling.Profile
            ``to_text()``, ``to_json()``, ``kernels`` (most expensive first), ``by_category()``.

        Raises
        ------
        ValueError
            If the model was compiled for another architecture (its kernels do not run here).
        """
        from .profiling import kernel_params, profile_executable

        if not self.target.is_host:
            raise ValueError(f"the model is compiled for {self.target.triple}, which does not run here: profile it "
                             "on a board (tvm_arq.deploy(model, rpc=...).profile(x))")
        args = [np.ascontiguousarray(np.asarray(x).astype(str(p.ty.dtype), copy=False))
                for x, p in zip(inputs, self.ir["main"].params, strict=True)]
        return profile_executable(self.executable, args, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                  target=str(self.target.triple), params=kernel_params(self.lowered_ir()))

    def lowered_ir(self) -> tvm.IRModule:
        """The integer module in the target's layouts (what the executable was compiled from, before TVM's
        own lowering); the module itself for float models."""
        if not any(isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs
                   for f in self.ir.functions.values()):
            return self.ir
        from .backends import get_backend
        from .passes.layout import convert_layout

        return convert_layout(self.ir, get_backend(self.target).layout_plan())

    def export_library(self, path: str | Path) -> Path:
        """Write a shared object (or ``.tar``) for the target, cross-linked with the target's toolchain."""
        return export_library(self.executable, path, self.target)

    def qparams_table(self) -> list[dict]:
        return [{"tensor": k, **v.to_dict()} for k, v in self.qparams.items()]

    def summary(self) -> str:
        n_int = sum(1 for o in (self.plan.ops.values() if self.plan else []) if o.role.value != "float")
        lines = [
            f"scheme={self.scheme.value} calibrator={self.config.calibrator.value} target={self.target.triple}",
            f"quantization points: {len(self.qparams)}; integer ops: {n_int}; float fallbacks: {len(self.fallbacks)}",
        ]
        kinds: dict[str, int] = {}
        for q in self.qparams.values():
            kinds[q.kind.value] = kinds.get(q.kind.value, 0) + 1
        lines.append("range kinds: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
        if self.accuracy_report is not None:
            lines.append(self.accuracy_report.to_text())
        return "\n".join(lines)

    def save_qparams(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.qparams_table(), indent=1))
