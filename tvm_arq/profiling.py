"""Where the time goes: per-kernel timings of a compiled model (``model.profile(x)``, ``remote.profile(x)``).

TVM 0.27's Relax VM has no profiler of its own (``relax.VirtualMachine(..., profile=True)`` and
``VirtualMachineProfiler`` are gone); it has an *instrument* hook (``vm.set_instrument(f)``) called before
and after every packed-function call with the function's symbol and its real arguments. A profile:

1. runs the model once with that hook and records every kernel call (symbol, arguments, calls per run);
2. times each distinct kernel (PrimFunc) with TVM's time evaluator on its real arguments from that run
   (``number`` runs per measurement, at least ``min_repeat_ms`` each, ``repeat`` measurements, mean);
3. times the whole model the same way (end to end) and reports ``end_to_end - sum(kernel time x calls)``:
   VM dispatch, allocation, thread-pool wake-ups, and the cache misses a kernel meets in the network but
   not when it runs back to back on warm data.

On a board (:meth:`tvm_arq.deploy.RemoteModel.profile`) the hook cannot run remotely: the calls and
their arguments are recorded on a host build of the same lowered module, and each kernel is timed on the
board with the remote time evaluator (see :mod:`tvm_arq.deploy.profile`).

MACs (conv, grouped / depthwise conv, dense, matmul, conv_transpose) are counted from the kernel's
argument shapes: the logical multiply-accumulates of the layer (padded channels of packed weights and
zero taps are not counted), so GMAC/s compares with other engines' figures for the same layer.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .ops import REGISTRY

__all__ = ["KernelCall", "KernelTime", "Profile", "kernel_category", "kernel_macs", "kernel_op", "record_calls"]

logger = logging.getLogger(__name__)

#: The categories of :func:`kernel_category`, in the order of the summary.
CATEGORIES = ("pointwise", "conv", "depthwise", "dense", "matmul", "conv_transpose", "add", "elementwise",
              "activation", "pool", "quantize", "layout", "float", "other")

_QUANTIZE = {"quantize", "dequantize", "quantize_to_nhwc", "dequantize_to_nchw"}
_ELEMENTWISE = {"qsub", "qmul", "qdiv", "qclamp"}
_POOL = {"qmaxpool2d", "qavgpool2d", "qmean_hw", "qmaxpool2d_nhwc", "qavgpool2d_nhwc", "qmean_hw_nhwc",
         "qreduce", "qsum"}
_LAYOUT_WORDS = ("transpose", "permute", "reshape", "layout", "squeeze", "expand_dims", "concat", "split",
                 "strided_slice", "take", "pad", "flatten", "copy")
_FLOAT_WORDS = ("conv", "matmul", "dense", "add", "multiply", "divide", "subtract", "exp", "sigmoid", "tanh",
                "softmax", "mean", "sum", "max", "pool", "erf", "sqrt", "power", "relu", "clip")


@dataclass(frozen=True)
class KernelCall:
    """One kernel of a run: its symbol, the arguments of its first call (tensors as numpy arrays, scalars as
    they are) and calls per run."""

    name: str
    args: tuple[np.ndarray, ...]
    calls: int


@dataclass(frozen=True)
class KernelTime:
    """One kernel (PrimFunc) of the profiled model.

    Attributes
    ----------
    name
        The PrimFunc's symbol in the compiled library.
    op
        Its op family (the ``arq.op`` of :mod:`tvm_arq.ops`, e.g. ``qconv2d_nhwc_packed``), or the
        symbol without its numeric suffix for kernels TVM legalized from plain Relax ops.
    category
        See :func:`kernel_category` (``pointwise``, ``depthwise``, ``add``, ``quantize``, ``layout``...).
    shapes
        Argument shapes (inputs, then the output).
    dtypes
        Argument dtypes.
    calls
        Calls per inference.
    us_per_call
        Mean time of one call over the repeats, in microseconds.
    us
        ``calls * us_per_call``: its time per inference.
    us_min
        ``calls *`` the fastest measurement of one call (robust to load on a shared machine).
    share
        ``us`` over the sum of all kernels' ``us``.
    macs
        Multiply-accumulates per inference (all calls), ``None`` where not counted.
    gmacs
        ``macs / us / 1e3`` (GMAC/s), ``None`` without MACs.
    """

    name: str
    op: str
    category: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    calls: int
    us_per_call: float
    us: float
    us_min: float
    share: float
    macs: int | None
    gmacs: float | None

    @property
    def shape_text(self) -> str:
        """``input shape -> output shape``."""
        if not self.shapes:
            return ""
        first, last = self.shapes[0], self.shapes[-1]
        return "x".join(map(str, first)) + ("" if len(self.shapes) == 1 else " -> " + "x".join(map(str, last)))


@dataclass(frozen=True)
class Profile:
    """Per-kernel timings of one model on one device; kernels sorted by time, most expensive first.

    Attributes
    ----------
    kernels
        One :class:`KernelTime` per kernel (PrimFunc).
    end_to_end_us
        Mean time of one inference (the whole VM function) in microseconds.
    kernels_us
        Sum of the kernels' ``us``.
    overhead_us
        ``end_to_end_us - kernels_us``: dispatch, allocation, thread-pool wake-ups, cold caches (negative
        when the kernels run slower in isolation than inside the network, e.g. under load).
    end_to_end_min_us, kernels_min_us, overhead_min_us
        The same from the fastest measurement of each (less sensitive to other jobs on the machine).
    device
        ``"host"`` or ``"board HOST:PORT"``.
    target
        The target triple the kernels were compiled for.
    repeat, min_repeat_ms
        Measurements per kernel (and end to end) and the minimum length of one measurement.
    method
        How the kernels were timed, in words.
    """

    kernels: tuple[KernelTime, ...]
    end_to_end_us: float
    kernels_us: float
    overhead_us: float
    end_to_end_min_us: float
    kernels_min_us: float
    overhead_min_us: float
    device: str
    target: str
    repeat: int
    min_repeat_ms: int
    method: str

    @property
    def macs(self) -> int:
        """Counted MACs per inference."""
        return sum(k.macs or 0 for k in self.kernels)

    def by_category(self) -> dict[str, dict[str, float]]:
        """Per :func:`kernel_category`: ``us``, ``share``, ``kernels``, ``calls``, ``macs`` and ``gmacs``."""
        out: dict[str, dict[str, float]] = {}
        for k in self.kernels:
            row = out.setdefault(k.category, {"us": 0.0, "share": 0.0, "kernels": 0, "calls": 0, "macs": 0})
            row["us"] += k.us
            row["share"] += k.share
            row["kernels"] += 1
            row["calls"] += k.calls
            row["macs"] += k.macs or 0
        for row in out.values():
            row["gmacs"] = row["macs"] / row["us"] / 1e3 if row["macs"] and row["us"] > 0 else None
        order = {c: i for i, c in enumerate(CATEGORIES)}
        return dict(sorted(out.items(), key=lambda kv: (-kv[1]["us"], order.get(kv[0], 99))))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the fields, ``macs`` and :meth:`by_category`."""
        d = asdict(self)
        d["kernels"] = [{**asdict(k), "shapes": [list(s) for s in k.shapes]} for k in self.kernels]
        d["macs"] = self.macs
        d["by_category"] = self.by_category()
        return d

    def to_json(self, indent: int | None = 1) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self, top: int | None = 20) -> str:
        """The table (the ``top`` kernels by time; ``None``: all), the per-category summary and the totals."""
        shown = self.kernels if top is None else self.kernels[:top]
        lines = [f"profile on {self.device} ({self.target}): {len(self.kernels)} kernels, {self.method}",
                 f"{'kernel':<34} {'op':<22} {'shape (in -> out)':<34} {'calls':>5} {'us':>9} {'share':>6} "
                 f"{'MMAC':>8} {'GMAC/s':>7}"]
        for k in shown:
            mmac = f"{k.macs / 1e6:8.2f}" if k.macs else f"{'-':>8}"
            gm = f"{k.gmacs:7.1f}" if k.gmacs is not None else f"{'-':>7}"
            lines.append(f"{k.name[:34]:<34} {k.op[:22]:<22} {k.shape_text[:34]:<34} {k.calls:>5} {k.us:9.1f} "
                         f"{k.share:6.1%} {mmac} {gm}")
        if len(shown) < len(self.kernels):
            rest = self.kernels[len(shown):]
            lines.append(f"... {len(rest)} more kernels: {sum(k.us for k in rest):.1f} us, "
                         f"{sum(k.share for k in rest):.1%}")
        lines.append("by category: " + ", ".join(
            f"{c} {r['share']:.1%}" + (f" ({r['gmacs']:.1f} GMAC/s)" if r["gmacs"] else "")
            for c, r in self.by_category().items()))
        gm = self.macs / self.kernels_us / 1e3 if self.macs and self.kernels_us > 0 else 0.0
        lines.append(f"end to end {self.end_to_end_us:.1f} us; sum of kernels {self.kernels_us:.1f} us "
                     f"({self.macs / 1e6:.1f} MMAC, {gm:.1f} GMAC/s); overhead (end to end - kernels) "
                     f"{self.overhead_us:.1f} us ({self.overhead_us / self.end_to_end_us:.1%}); fastest "
                     f"measurements: end to end {self.end_to_end_min_us:.1f} us, kernels {self.kernels_min_us:.1f} us, "
                     f"overhead {self.overhead_min_us:.1f} us"
                     if self.end_to_end_us > 0 else "end to end: not measured")
        return "\n".join(lines)


# -- kernels: family, category, MACs ---------------------------------------------------------------


def kernel_op(symbol: str) -> str:
    """The op family of a kernel symbol: ``arq_qconv2d_nhwc_packed3`` -> ``qconv2d_nhwc_packed``.

    Kernels of :mod:`tvm_arq.ops` are named ``arq_<op><n>`` (fused by TVM: ``fused_arq_<op><n>_...``);
    other kernels (legalized Relax ops) give their symbol without the numeric suffix.
    """
    for m in re.finditer(r"(?:^|_)arq_", symbol):
        rest = symbol[m.end():]
        # the longest registered name the symbol spells out (qconv2d_nhwc_packed before qconv2d_nhwc)
        known = [k for k in REGISTRY.kernels if re.match(re.escape(k) + r"\d*(?:_|$)", rest)]
        if known:
            return max(known, key=len)
    return re.sub(r"\d+$", "", symbol.removeprefix("fused_"))


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def kernel_macs(op: str, shapes: Sequence[Sequence[int]], params: Mapping[str, Any] | None = None) -> int | None:
    """Multiply-accumulates of one call of a kernel from its argument shapes (output last).

    Conv: output elements x (input channels per group x KH x KW); depthwise: output elements x KH x KW;
    dense / matmul: output elements x K; conv_transpose: input elements x (output channels per group) x
    KH x KW (``params["kernel"]`` gives KH, KW of the phase-packed NHWC kernel; without it the packed taps
    are counted). ``None`` for other ops.
    """
    if len(shapes) < 2:
        return None
    x, w, out = shapes[0], shapes[1], shapes[-1]
    n_out = _prod(out)
    if op == "qconv2d" and len(w) == 4:  # NCHW x OIHW (groups: w[1] = C / groups)
        return n_out * _prod(w[1:])
    if op == "qconv2d_nhwc_packed" and len(w) == 6 and len(x) == 4:  # [O/L, KH, KW, C/G, L, G], C = x[3]
        return n_out * int(w[1]) * int(w[2]) * int(x[3])
    if op == "qconv2d_nhwc" and len(w) == 4:  # [KH, KW, C/groups, O]
        return n_out * _prod(w[:3])
    if op == "qdwconv2d_nhwc" and len(w) == 3:  # [KH, KW, C]
        return n_out * int(w[0]) * int(w[1])
    if op == "qdense" and len(x) == 2:
        return n_out * int(x[1])
    if op == "qmatmul" and len(x) >= 2 and len(out) >= 2:
        k = int(x[-1]) if int(x[-2]) == int(out[-2]) else int(x[-2])
        return n_out * k
    if op == "qconv2d_transpose" and len(w) == 4:  # NCHW x [C, O/groups, KH, KW]
        return _prod(x) * _prod(w[1:])
    if op == "qconv2d_transpose_nhwc" and len(w) == 6 and len(x) == 4:  # [s_h, s_w, T_h, T_w, C/g, O]
        groups = max(1, int(x[3]) // int(w[4]))
        kernel = (params or {}).get("kernel") or (int(w[0]) * int(w[2]), int(w[1]) * int(w[3]))
        return _prod(x) * (int(w[5]) // groups) * int(kernel[0]) * int(kernel[1])
    return None


def kernel_category(op: str, shapes: Sequence[Sequence[int]]) -> str:
    """A coarse category of a kernel for the summary (see :data:`CATEGORIES`).

    ``pointwise`` is a 1x1 conv (and a dense layer lowered to one), ``conv`` any other dense conv,
    ``depthwise`` a conv with one input channel per group; ``quantize`` the float <-> int8 boundary
    kernels; ``layout`` data movement (transposes, reshapes, slices, pads, concatenations); ``float`` a
    legalized float op (a fallback layer).
    """
    w = shapes[1] if len(shapes) > 1 else ()
    if op == "qdwconv2d_nhwc":
        return "depthwise"
    if op == "qconv2d" and len(w) == 4:
        if int(w[1]) == 1 and len(shapes[0]) == 4 and int(shapes[0][1]) > 1:
            return "depthwise"
        return "pointwise" if tuple(w[2:]) == (1, 1) else "conv"
    if op == "qconv2d_nhwc_packed" and len(w) == 6:
        return "pointwise" if (int(w[1]), int(w[2])) == (1, 1) else "conv"
    if op == "qconv2d_nhwc" and len(w) == 4:
        if int(w[2]) == 1 and len(shapes[0]) == 4 and int(shapes[0][3]) > 1:
            return "depthwise"
        return "pointwise" if (int(w[0]), int(w[1])) == (1, 1) else "conv"
    if op == "qdense":
        return "dense"
    if op == "qmatmul":
        return "matmul"
    if op.startswith("qconv2d_transpose"):
        return "conv_transpose"
    if op == "qadd":
        return "add"
    if op in _QUANTIZE:
        return "quantize"
    if op in _ELEMENTWISE:
        return "elementwise"
    if op in ("qlut", "qsoftmax", "qnorm"):
        return "activation"
    if op in _POOL or op.startswith("qresize"):
        return "pool" if op in _POOL else "layout"
    if op in ("qconcat", "qpad"):
        return "layout"
    if op in REGISTRY.kernels:
        return "other"
    low = op.lower()
    if any(wd in low for wd in _LAYOUT_WORDS):
        return "layout"
    if any(wd in low for wd in _FLOAT_WORDS):
        return "float"
    return "other"


# -- recording and assembling ----------------------------------------------------------------------


def record_calls(vm: Any, inputs: Sequence[Any], on_first_call: Callable[[str, Any, tuple], None] | None = None
                 ) -> list[KernelCall]:
    """Run ``vm["main"](*inputs)`` once with an instrument; the kernels it calls, in first-call order.

    VM builtins (``vm.builtin.*``: allocation, shape checks, reshapes of views) are not kernels and are
    left out. ``on_first_call(symbol, func, args)`` runs before the first call of each kernel, with the live
    argument tensors (the host profile times the kernel there, on its real data).
    """
    order: list[str] = []
    calls: dict[str, int] = {}
    first: dict[str, tuple[np.ndarray, ...]] = {}

    def instrument(func: Any, symbol: Any, before_run: bool, ret: Any, *args: Any) -> int:
        del ret
        name = str(symbol)
        if not before_run or name.startswith("vm."):
            return 0
        if name not in calls:
            order.append(name)
            calls[name] = 0
            first[name] = tuple(a.numpy() if hasattr(a, "numpy") else a for a in args)
            if on_first_call is not None:
                on_first_call(name, func, args)
        calls[name] += 1
        return 0

    vm.set_instrument(instrument)
    try:
        vm["main"](*inputs)
    finally:
        vm.set_instrument(None)
    return [KernelCall(n, first[n], calls[n]) for n in order]


def assemble(calls: Sequence[KernelCall], times_us: Mapping[str, tuple[float, float]],
             end_to_end_us: tuple[float, float], *, device: str,
             target: str, repeat: int, min_repeat_ms: int, method: str,
             params: Mapping[str, Mapping[str, Any]] | None = None) -> Profile:
    """A :class:`Profile` from the recorded calls, each kernel's (mean, fastest) time per call and the same of
    the whole model."""
    rows = []
    for c in calls:
        if c.name not in times_us:
            logger.warning("kernel %s was not timed; left out of the profile", c.name)
            continue
        op = kernel_op(c.name)
        arrays = [a for a in c.args if isinstance(a, np.ndarray)]  # tensors (scalar arguments left out)
        shapes = tuple(tuple(int(d) for d in a.shape) for a in arrays)
        one = kernel_macs(op, shapes, (params or {}).get(c.name))
        macs = None if one is None else one * c.calls
        rows.append((c, op, shapes, tuple(str(a.dtype) for a in arrays), macs, *map(float, times_us[c.name])))
    total = sum(r[5] * r[0].calls for r in rows)
    total_min = sum(r[6] * r[0].calls for r in rows)
    kernels = []
    for c, op, shapes, dtypes, macs, t, t_min in rows:
        us = t * c.calls
        kernels.append(KernelTime(
            name=c.name, op=op, category=kernel_category(op, shapes), shapes=shapes,
            dtypes=dtypes, calls=c.calls, us_per_call=t, us=us, us_min=t_min * c.calls,
            share=us / total if total > 0 else 0.0, macs=macs,
            gmacs=(macs / us / 1e3) if macs and us > 0 else None,
        ))
    kernels.sort(key=lambda k: -k.us)
    e2e, e2e_min = map(float, end_to_end_us)
    return Profile(kernels=tuple(kernels), end_to_end_us=e2e, kernels_us=total, overhead_us=e2e - total,
                   end_to_end_min_us=e2e_min, kernels_min_us=total_min, overhead_min_us=e2e_min - total_min,
                   device=device, target=target, repeat=repeat,
                   min_repeat_ms=min_repeat_ms, method=method)


def kernel_params(mod: Any) -> dict[str, dict[str, Any]]:
    """``{PrimFunc name: arq.params}`` of the kernels of a (lowered) integer module."""
    import tvm

    out = {}
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.params" in f.attrs:
            out[gv.name_hint] = json.loads(str(f.attrs["arq.params"]))
    return out


def find_kernel_module(root: Any, symbol: str) -> Any | None:
    """The module (``root`` or one of its imports, depth first) that implements ``symbol``."""
    stack = [root]
    while stack:
        m = stack.pop()
        try:
            if m.implements_function(symbol):
                return m
        except Exception:  # noqa: BLE001 - modules of another architecture cannot be queried
            pass
        stack.extend(m.imports)
    return None


def time_kernel(module: Any, symbol: str, dev: Any, args: Sequence[Any], repeat: int,
                min_repeat_ms: int) -> tuple[float, float]:
    """Mean and fastest time of one call of ``module[symbol](*args)`` in microseconds (TVM's time evaluator)."""
    timer = module.time_evaluator(symbol, dev, number=1, repeat=repeat, min_repeat_ms=max(1, round(min_repeat_ms)))
    res = np.asarray(timer(*args).results) * 1e6
    return float(res.mean()), float(res.min())


def profile_executable(executable: Any, inputs: Sequence[np.ndarray], *, repeat: int = 10,
                       min_repeat_ms: int = 2, target: str = "host",
                       params: Mapping[str, Mapping[str, Any]] | None = None) -> Profile:
    """Profile a Relax executable compiled for this machine (see the module docstring).

    Parameters
    ----------
    executable
        A ``tvm.compile`` / ``relax.build`` result that runs here.
    inputs
        One array per input of ``main``.
    repeat
        Measurements per kernel and of the whole model (their mean is reported).
    min_repeat_ms
        Each measurement runs the kernel (model) as often as needed to last at least this long.
    target
        Target triple for the report.
    params
        ``{kernel symbol: arq.params}`` (see :func:`kernel_params`), for MAC counts that need them.
    """
    import tvm
    from tvm import relax

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
    root = getattr(executable, "mod", executable)
    times: dict[str, tuple[float, float]] = {}

    def time_it(symbol: str, func: Any, live: tuple) -> None:
        module = find_kernel_module(root, symbol)
        if module is None:  # not in the library (an external function): a Python-side loop
            import time

            func(*live)
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                func(*live)
                runs.append((time.perf_counter() - t0) * 1e6)
            times[symbol] = (float(np.mean(runs)), float(np.min(runs)))
            return
        times[symbol] = time_kernel(module, symbol, dev, live, repeat, min_repeat_ms)

    vm = relax.VirtualMachine(executable, dev)
    calls = record_calls(vm, args, time_it)
    plain = relax.VirtualMachine(executable, dev)
    e2e = plain.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=max(1, round(min_repeat_ms)))(*args)
    res = np.asarray(e2e.results) * 1e6
    return assemble(calls, times, (float(res.mean()), float(res.min())), device="host", target=target, repeat=repeat,
                    min_repeat_ms=min_repeat_ms, params=params,
                    method=f"each kernel timed alone on its arguments from a real run (TVM time evaluator, mean of "
                           f"{repeat} measurements of >= {min_repeat_ms:g} ms)")
