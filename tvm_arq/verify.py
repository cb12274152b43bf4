"""Per-tensor bit-exactness checks of the program that ships.

:func:`debug_build` compiles a *debug copy* of a quantized model: the integer module after the layout
conversion for the model's target (NHWC, packed weights, tensorized kernels), with the same default or tuned
schedules :func:`tvm_arq.build` uses, whose ``main`` returns every integer tensor of the program (and every
tensor a ``tvm_arq`` kernel writes, such as dequantized outputs) instead of only the model's outputs. The
kernels are the shipped ones: only the function that calls them returns more.

:func:`verify_host` exports that program with :func:`~tvm_arq.backends.export.export_library` (the very
library a deployment loads), loads it back and compares each tensor, bit for bit, with the numpy reference
interpreter's (:class:`~tvm_arq.ops.reference.ReferenceInterpreter`) run of the same converted module;
:func:`verify_on_board` does the same on a board (real, or emulated with :class:`~tvm_arq.deploy.EmulatedBoard`)
through :func:`~tvm_arq.deploy.deploy`. The :class:`VerifyReport` names the first tensor (in program order)
that differs, the op and kernel that wrote it, how many elements differ and where.

The reference of the converted module is also compared with the reference of the unconverted module on the
model's outputs, so an error in a layout twin does not hide behind an identical error in the kernel.
Tensors of float fallback ops (including float data movement before the first quantize) are outside the
integer contract and are not compared (the report counts them): the reference takes the program's values for
them, because TVM's float code inside the module and compiled on its own can differ in the last bit, and a
quantize right after such an op then differs by one level.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .backends import ApplyDefaultSchedules
from .backends.export import export_library
from .build import has_integer_kernels, lower_for_target
from .ops.irutil import bindings_of
from .ops.reference import ReferenceInterpreter
from .target import TargetInfo, resolve_target

logger = logging.getLogger(__name__)

__all__ = ["DebugProgram", "TensorCheck", "VerifyReport", "compare_tensors", "debug_build", "verify_host",
           "verify_on_board", "verify_remote"]

_INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64")


@dataclass(frozen=True)
class ProbedTensor:
    """One tensor the debug program returns.

    Attributes
    ----------
    name
        The Relax variable (binding) name in the converted module; ``"<output>"`` for the model output.
    op
        What wrote it: the ``tvm_arq`` kernel family (``arq.op``) or the Relax op name.
    kernel
        The PrimFunc called (``call_tir``), or ``""`` for a plain Relax op.
    checked
        ``False`` for a float fallback tensor: outside the integer contract, not compared; the reference
        takes the program's value of it, so the integer tensors computed from it are compared on equal inputs.
    """

    name: str
    op: str
    kernel: str
    checked: bool = True


@dataclass
class DebugProgram:
    """A compiled debug copy of a model: ``main`` returns every checked tensor (see :func:`debug_build`).

    It has the ``executable``, ``target`` and ``ir`` attributes :func:`~tvm_arq.deploy.deploy` needs.

    Attributes
    ----------
    ir
        The converted integer module whose ``main`` returns the tensors (what was compiled).
    converted
        The converted module with its original ``main`` (what the reference interpreter runs).
    original
        The integer module before the layout conversion (``QuantizedModel.ir``).
    executable
        The compiled debug program.
    target
        The target it was compiled for.
    tensors
        The returned tensors, in program order; the last one is the model's output.
    skipped
        Names of tensors not checked (float fallback ops).
    tuned
        Whether a tuning database supplied the schedules.
    runs_on
        Where the compiled program runs: :attr:`target`, or this machine for a ``host_copy``.
    """

    ir: tvm.IRModule
    converted: tvm.IRModule
    original: tvm.IRModule
    executable: Any
    target: TargetInfo
    tensors: tuple[ProbedTensor, ...]
    skipped: tuple[str, ...]
    tuned: bool = False
    runs_on: TargetInfo | None = None

    def __post_init__(self) -> None:
        if self.runs_on is None:
            self.runs_on = self.target


@dataclass(frozen=True)
class TensorCheck:
    """The comparison of one tensor with the reference.

    Attributes
    ----------
    tensor
        Which tensor.
    shape, dtype
        Of the reference tensor.
    n_diff
        Elements that differ (0: bit-exact); ``-1`` when shape or dtype differ.
    max_abs_diff
        Largest absolute difference (as float).
    first_index
        Index of the first differing element, or ``None``.
    got, want
        The values there (program, reference).
    """

    tensor: ProbedTensor
    shape: tuple[int, ...]
    dtype: str
    n_diff: int
    max_abs_diff: float = 0.0
    first_index: tuple[int, ...] | None = None
    got: float | None = None
    want: float | None = None

    @property
    def ok(self) -> bool:
        return self.n_diff == 0

    def describe(self) -> str:
        """One line: tensor, op, kernel and the difference."""
        t = self.tensor
        where = f"tensor {t.name!r} (op {t.op}" + (f", kernel {t.kernel}" if t.kernel else "") + ")"
        if self.ok:
            return f"{where}: bit-exact {self.shape} {self.dtype}"
        if self.n_diff < 0:
            return f"{where}: shape/dtype differ from the reference's {self.shape} {self.dtype}"
        size = int(np.prod(self.shape)) if self.shape else 1
        return (f"{where}: {self.n_diff} of {size} elements differ, max |diff| {self.max_abs_diff:g}; "
                f"first at {self.first_index}: got {self.got:g}, reference {self.want:g}")


@dataclass(frozen=True)
class VerifyReport:
    """All tensor comparisons of one run of a debug program.

    Attributes
    ----------
    where
        ``"host"`` or the board's address.
    target
        The target triple.
    checks
        One per tensor, in program order (the last: the model output), then the comparison of the
        converted module's reference output with the unconverted module's.
    skipped
        Tensors not compared (float fallbacks).
    """

    where: str
    target: str
    checks: tuple[TensorCheck, ...]
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_mismatch(self) -> TensorCheck | None:
        """The first differing tensor in program order (the one to look at first), or ``None``."""
        return next((c for c in self.checks if not c.ok), None)

    def to_text(self) -> str:
        """A summary line, then the first mismatch and the count of differing tensors."""
        n_bad = sum(not c.ok for c in self.checks)
        head = (f"{self.where} ({self.target}): {len(self.checks) - n_bad}/{len(self.checks)} tensors bit-exact"
                + (f", {len(self.skipped)} float fallback tensor(s) not compared (the reference takes the "
                   "program's values for them)" if self.skipped else ""))
        first = self.first_mismatch
        if first is None:
            return head
        return f"{head}\nfirst mismatch: {first.describe()}\n{n_bad} tensor(s) differ: " + ", ".join(
            c.tensor.name for c in self.checks if not c.ok)

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with :meth:`to_text` unless every tensor is bit-exact."""
        if not self.ok:
            raise AssertionError(self.to_text())


# --------------------------------------------------------------------------------------------------
# the debug program


def _producer(mod: tvm.IRModule, value: relax.Expr) -> tuple[str, str, bool]:
    """(op, kernel, is a tvm_arq kernel) of a binding's value."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        if value.op.name == "relax.call_tir":
            gvar = value.args[0]
            attrs = mod[gvar].attrs
            if attrs is not None and "arq.op" in attrs:
                return str(attrs["arq.op"]), gvar.name_hint, True
            return "call_tir", gvar.name_hint, False
        return value.op.name, "", False
    return type(value).__name__, "", False


def _probe_module(mod: tvm.IRModule) -> tuple[tvm.IRModule, tuple[ProbedTensor, ...], tuple[str, ...]]:
    """``mod`` with ``main`` returning every checked tensor, then the output."""
    mod = relax.transform.ToNonDataflow()(mod)
    func = mod["main"]
    out_vars: list[relax.Expr] = []
    probed: list[ProbedTensor] = []
    skipped: list[str] = []
    alias: dict[str, str] = {}
    for b in bindings_of(func):
        ty = b.var.ty
        if not isinstance(ty, relax.TensorType):
            continue
        if isinstance(b.value, relax.Var):  # a plain alias (e.g. the dataflow block's output)
            alias[b.name] = alias.get(b.value.name, b.value.name)
            continue
        op, kernel, is_kernel = _producer(mod, b.value)
        checked = str(ty.dtype) in _INT_DTYPES or is_kernel
        out_vars.append(b.var)
        probed.append(ProbedTensor(b.name, op, kernel, checked))
        if not checked:
            skipped.append(b.name)
    out = func.body.body
    if not isinstance(out.ty, relax.TensorType):
        raise ValueError("debug_build: only models with one tensor output are supported")
    if isinstance(out, relax.Var) and alias.get(out.name, out.name) in skipped:
        skipped.append("<output>")  # written by a float fallback op: outside the integer contract
    else:
        out_vars.append(out)
        probed.append(ProbedTensor("<output>", "output", ""))
    body = relax.SeqExpr(func.body.blocks, relax.Tuple(out_vars))
    new = relax.Function(func.params, body, ret_ty=relax.TupleType([v.ty for v in out_vars]), attrs=func.attrs)
    mod = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"})
    mod["main"] = new
    return relax.transform.Normalize()(mod), tuple(probed), tuple(skipped)


def debug_build(model: Any, target: Any = None, *, database: Any = None, num_threads: int | None = None,
                layout: bool = True, host_copy: bool = False) -> DebugProgram:
    """Compile the debug copy of a quantized model: every integer tensor becomes an output.

    Parameters
    ----------
    model
        A :class:`~tvm_arq.QuantizedModel` (its integer ``ir``) or an integer ``tvm.IRModule``.
    target
        Target to compile for (default: the model's).
    database
        A MetaSchedule tuning database (or its ``work_dir``) of this model: its schedules are applied like
        :func:`~tvm_arq.tune.compile_tuned` does; ``None`` gives the default schedules of ``tvm_arq.build``.
        Limit: the tuned build fuses small ops (e.g. reshapes) into kernels; returning their intermediates
        changes some fused groups, whose tuning records then do not match and which get the default schedule
        (measured on a 4-op graph: 5 of 11 debug kernels tuned, against 7 of 9 in the shipped build).
    num_threads
        With ``database``: the tuning's thread count.
    layout
        Convert the layouts for the target first, as :func:`tvm_arq.build` does (default); ``False`` checks
        the unconverted program.
    host_copy
        Compile the program converted for ``target`` for *this* machine instead, unscheduled (the target's
        intrinsics do not run here): checks a cross target's layout code without a board, not its kernels.

    Returns
    -------
    DebugProgram
    """
    ir = model if isinstance(model, tvm.IRModule) else model.ir
    info = resolve_target(target if target is not None else model.target)
    if not has_integer_kernels(ir):
        raise ValueError("debug_build needs an integer module (a quantized model, not scheme='float')")
    converted = lower_for_target(ir, info) if layout else ir
    probe, tensors, skipped = _probe_module(converted)
    runs_on = resolve_target("host") if host_copy else info
    if host_copy:
        if database is not None:
            raise ValueError("debug_build: host_copy=True compiles unscheduled; it takes no database")
        ex = tvm.compile(probe, target=runs_on.target)
    elif database is not None:
        from .tune import compile_tuned

        ex = compile_tuned(probe, info, database, num_threads=num_threads)
    else:
        ex = tvm.compile(ApplyDefaultSchedules()(probe), target=info.target)
    logger.info("debug program for %s (runs on %s): %d tensors returned, %d float fallback tensors not checked",
                info.triple, runs_on.triple, len(tensors), len(skipped))
    return DebugProgram(probe, converted, ir, ex, info, tensors, skipped, tuned=database is not None,
                        runs_on=runs_on)


# --------------------------------------------------------------------------------------------------
# comparing


def reference_tensors(program: DebugProgram, *inputs: np.ndarray,
                      overrides: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """The reference interpreter's value of every tensor of ``program``, in the order it returns them.

    ``overrides``: values to take for some bindings instead of evaluating them (the float fallbacks).
    """
    env, out = ReferenceInterpreter(program.converted).trace(*inputs, overrides=overrides)
    return [np.asarray(out if t.name == "<output>" else env[t.name]) for t in program.tensors]


def _check(tensor: ProbedTensor, got: np.ndarray, want: np.ndarray) -> TensorCheck:
    shape, dtype = tuple(int(d) for d in want.shape), str(want.dtype)
    if got.shape != want.shape or got.dtype != want.dtype:
        return TensorCheck(tensor, shape, dtype, -1)
    # bitwise for floats (NaN == NaN, -0.0 != 0.0), exact for integers
    bits_g = got.view(f"u{got.dtype.itemsize}") if got.dtype.kind == "f" else got
    bits_w = want.view(f"u{want.dtype.itemsize}") if want.dtype.kind == "f" else want
    diff = bits_g != bits_w
    n = int(diff.sum())
    if n == 0:
        return TensorCheck(tensor, shape, dtype, 0)
    delta = np.abs(got.astype(np.float64) - want.astype(np.float64))
    delta[~diff] = 0
    idx = tuple(int(i) for i in np.argwhere(diff)[0])
    return TensorCheck(tensor, shape, dtype, n, float(np.nanmax(delta)), idx, float(got[idx]), float(want[idx]))


def compare_tensors(program: DebugProgram, outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray],
                    where: str) -> VerifyReport:
    """Compare the debug program's ``outputs`` (for ``inputs``) with the reference, tensor by tensor.

    Parameters
    ----------
    program
        The debug program that produced ``outputs``.
    outputs
        Its returned tensors (one per :attr:`DebugProgram.tensors`).
    inputs
        The model inputs of that run.
    where
        ``"host"`` or the board, for the report.

    Returns
    -------
    VerifyReport
    """
    outputs = [np.asarray(o) for o in outputs]
    if len(outputs) != len(program.tensors):
        raise ValueError(f"{len(outputs)} tensors for a debug program returning {len(program.tensors)}")
    fallbacks = {t.name: o for t, o in zip(program.tensors, outputs, strict=True) if not t.checked}
    want = reference_tensors(program, *inputs, overrides=fallbacks)
    checks = [_check(t, g, w) for t, g, w in zip(program.tensors, outputs, want, strict=True) if t.checked]
    if program.converted is not program.original and "<output>" not in program.skipped:
        # both references on their own (float fallbacks evaluated the same way in both)
        converted = np.asarray(ReferenceInterpreter(program.converted).run(*inputs))
        unconverted = np.asarray(ReferenceInterpreter(program.original).run(*inputs))
        checks.append(_check(ProbedTensor("<output>", "layout conversion (reference before vs after)", ""),
                             converted, unconverted))
    return VerifyReport(where, str(program.target.triple), tuple(checks), program.skipped)


def _inputs(inputs: Sequence[Any]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.asarray(x)) for x in inputs]


def verify_host(program: DebugProgram, *inputs: np.ndarray, workspace: str | Path | None = None,
                export: bool = True) -> VerifyReport:
    """Export the debug program as a library, load it on this machine, run it, compare every tensor.

    Parameters
    ----------
    program
        From :func:`debug_build` for a target this machine runs.
    inputs
        One array per model input.
    workspace
        Directory for the library (a temporary one by default).
    export
        Run the exported library (default). ``False`` runs the executable in memory (the same compiled
        code without the link step: for tests that check many small programs).

    Returns
    -------
    VerifyReport
    """
    assert program.runs_on is not None
    if not program.runs_on.is_host:
        raise ValueError(f"verify_host: {program.runs_on.triple} does not run here; use verify_on_board "
                         "(or debug_build(..., host_copy=True) to check the layout code here)")
    arrays = _inputs(inputs)
    if not export:
        vm = relax.VirtualMachine(program.executable, tvm.cpu())
        res = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
        return compare_tensors(program, [r.numpy() for r in res], arrays, "host (in memory)")
    with tempfile.TemporaryDirectory(prefix="tvm_arq_verify_") as tmp:
        lib_path = export_library(program.executable, Path(workspace or tmp) / "debug_program.so", program.runs_on)
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
        res = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
        outputs = [r.numpy() for r in res]
    return compare_tensors(program, outputs, arrays, "host")


def verify_on_board(program: DebugProgram, samples: Sequence[Sequence[np.ndarray] | np.ndarray],
                    **connection: Any) -> list[VerifyReport]:
    """Deploy the debug program to a board and compare every tensor of each sample's run.

    Parameters
    ----------
    program
        From :func:`debug_build` for the board's target.
    samples
        Model inputs: one array per sample (single-input model) or a sequence of arrays per sample.
    connection
        Passed to :func:`~tvm_arq.deploy.deploy` (``rpc=`` or ``tracker=``/``key=``, ``timeout=``...).

    Returns
    -------
    list of VerifyReport
        One per sample.
    """
    from .deploy import deploy

    with deploy(program, **connection) as remote:
        return verify_remote(program, remote, samples)


def verify_remote(program: DebugProgram, remote: Any, samples: Sequence[Sequence[np.ndarray] | np.ndarray]
                  ) -> list[VerifyReport]:
    """Like :func:`verify_on_board`, on ``remote``: the debug program already deployed (``deploy(program)``).

    Returns
    -------
    list of VerifyReport
        One per sample.
    """
    reports = []
    for sample in samples:
        arrays = _inputs([sample] if isinstance(sample, np.ndarray) else sample)
        out = remote.run(*arrays)
        reports.append(compare_tensors(program, list(out), arrays, str(remote.board)))
    return reports


def reports_to_json(reports: Sequence[VerifyReport]) -> str:
    """The reports as JSON (for scripts and CI logs)."""
    return json.dumps([{"where": r.where, "target": r.target, "ok": r.ok, "n_tensors": len(r.checks),
                        "first_mismatch": None if r.first_mismatch is None else r.first_mismatch.describe(),
                        "skipped": list(r.skipped)} for r in reports], indent=1)
