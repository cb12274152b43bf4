"""Plant one-LSB faults, one at a time, and check that the per-tensor bit-exactness check catches each.

For one small graph that uses every kernel family (conv, grouped and depthwise conv, dense, add, concat, mul,
max/average/global pool, lookup-table activations, softmax, resize, pad, quantize, dequantize) and for each
layout -- the NCHW program (``tvm_arq.build`` without layout conversion), the NHWC x86 program, and the
aarch64, riscv64 and riscv64+V programs (their converted layouts compiled for this machine: the layout code,
not the boards' instructions) -- the script plants, one at a time:

- a *program* fault: the first output element of the first call of a kernel gets its lowest bit flipped
  (integer outputs; float outputs get +1e-3) inside the compiled program, through a fault-injection input
  added after the call (one compile per layout, the faults are chosen at run time);
- a *twin* fault: the numpy twin of that kernel returns its first element one LSB off.

Each fault is checked with :func:`tvm_arq.verify.compare_tensors` (what ``tests/test_verify.py``,
``tests/test_bitexact.py``, ``tests/test_layouts.py`` and the board tests run). A fault is caught when the
report's first mismatch is the tensor the faulty kernel wrote. Prints a table, writes
``results/plant_faults.{json,md}`` and ends with ``caught X/Y planted faults``; exit code 0 only when X = Y.

Usage: ``python scripts/plant_faults.py [--layouts nchw,x86,aarch64,riscv64,riscv64-rvv] [--max-kernels N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("plant_faults")

#: layout name -> (target the program is converted for, convert the layout?)
LAYOUTS: dict[str, tuple[str, bool]] = {
    "nchw": ("host", False),
    "x86": ("host", True),
    "aarch64": ("aarch64", True),
    "riscv64": ("riscv64", True),
    "riscv64-rvv": ("riscv64-rvv", True),
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One planted fault and what the check reported."""

    layout: str
    side: str  # "program" or "twin"
    kernel: str
    tensor: str
    caught: bool
    first_mismatch: str


def _graph(small: bool = False) -> tuple[Any, list[np.ndarray]]:
    from tests.graphs import OPS, Spec, build_graph, calibration_set

    ops = ["conv", "dwconv", "add", "maxpool", "avgpool", "concat", "resize"] if small else list(OPS[:-1])
    spec = Spec(channels=4, size=8, ops=ops, seed=3, act="relu6", softmax=True)
    mod = build_graph(spec)
    return mod, calibration_set(mod, 3, seed=3, skew=0.7)


def _inject(program: Any) -> tuple[Any, list[tuple[str, str, Any]]]:
    """The debug module with one fault-injection input after the first call of each kernel.

    Returns the module and, per injection input, (kernel op, tensor name, tensor type).
    """
    import tvm
    from tvm import relax

    from tvm_arq.ops.irutil import bindings_of

    func = program.ir["main"]
    first: dict[str, str] = {}
    for t in program.tensors:
        if t.checked and t.kernel and t.op not in first:
            first[t.op] = t.name
    wanted = {name: op for op, name in first.items()}
    masks: list[relax.Var] = []
    info: list[tuple[str, str, Any]] = []
    new_bindings = []
    for b in bindings_of(func):
        if b.name not in wanted:
            new_bindings.append(relax.VarBinding(b.var, b.value))
            continue
        ty = b.var.ty
        raw = relax.Var(f"{b.name}_raw", ty)
        mask = relax.Var(f"fault_{b.name}", ty)
        masks.append(mask)
        info.append((wanted[b.name], b.name, ty))
        new_bindings.append(relax.VarBinding(raw, b.value))
        op = relax.op.add if str(ty.dtype).startswith("float") else relax.op.bitwise_xor
        new_bindings.append(relax.VarBinding(b.var, op(raw, mask)))
    body = relax.SeqExpr([relax.BindingBlock(new_bindings)], func.body.body)
    new = relax.Function([*func.params, *masks], body, ret_ty=func.ret_ty, attrs=func.attrs)
    mod = tvm.IRModule({gv: f for gv, f in program.ir.functions.items() if gv.name_hint != "main"})
    mod["main"] = new
    return relax.transform.Normalize()(mod), info


def _compile(mod: Any, program: Any) -> Any:
    import tvm
    from tvm import relax

    from tvm_arq.backends import ApplyDefaultSchedules

    if program.runs_on is not program.target:  # a host copy of a cross target: unscheduled
        ex = tvm.compile(mod, target=program.runs_on.target)
    else:
        ex = tvm.compile(ApplyDefaultSchedules()(mod), target=program.target.target)
    return relax.VirtualMachine(ex, tvm.cpu())


def _mask(ty: Any, planted: bool) -> np.ndarray:
    shape = tuple(int(d) for d in ty.shape.values)
    m = np.zeros(shape, str(ty.dtype))
    if planted:
        m.reshape(-1)[0] = 1e-3 if m.dtype.kind == "f" else 1
    return m


def _plant_twin(kernel: str) -> Any:
    """Replace the numpy twin of ``kernel`` by one whose first output element is one LSB off; returns the undo."""
    from tvm_arq.ops.registry import REGISTRY

    kd = REGISTRY.kernel(kernel)
    twin = kd.reference

    def faulty(*args: Any, **kwargs: Any) -> np.ndarray:
        out = np.array(twin(*args, **kwargs), order="C")
        flat = out.reshape(-1)
        if out.dtype.kind == "f":
            flat.view(f"u{out.dtype.itemsize}")[0] ^= 1
        else:
            flat[0] = flat[0] - 1 if flat[0] > np.iinfo(out.dtype).min else flat[0] + 1
        return out

    REGISTRY.kernels[kernel] = dataclasses.replace(kd, reference=faulty)
    return lambda: REGISTRY.kernels.__setitem__(kernel, kd)


def run_layout(layout: str, ir: Any, x: np.ndarray, max_kernels: int | None) -> list[Outcome]:
    """Plant every fault of one layout; returns the outcomes."""
    import tvm

    from tvm_arq.verify import compare_tensors, debug_build

    target, convert = LAYOUTS[layout]
    host_copy = convert and target != "host"
    program = debug_build(ir, target, layout=convert, host_copy=host_copy)
    mod, all_info = _inject(program)
    info = all_info if max_kernels is None else all_info[:max_kernels]
    vm = _compile(mod, program)

    def run(planted: int | None) -> list[np.ndarray]:
        masks = [_mask(ty, i == planted) for i, (_, _, ty) in enumerate(all_info)]
        args = [tvm.runtime.tensor(x), *(tvm.runtime.tensor(m) for m in masks)]
        return [o.numpy() for o in vm["main"](*args)]

    clean = run(None)
    base = compare_tensors(program, clean, [x], layout)
    if not base.ok:
        raise SystemExit(f"{layout}: the unplanted program is not bit-exact:\n{base.to_text()}")
    out: list[Outcome] = []
    for i, (op, name, _) in enumerate(info):
        for side in ("program", "twin"):
            if side == "program":
                report = compare_tensors(program, run(i), [x], layout)
            else:
                undo = _plant_twin(op)
                try:
                    report = compare_tensors(program, clean, [x], layout)
                finally:
                    undo()
            first = report.first_mismatch
            caught = first is not None and first.tensor.name == name
            out.append(Outcome(layout, side, op, name, caught, "-" if first is None else first.describe()))
    return out


def to_markdown(outcomes: list[Outcome], seconds: float) -> str:
    """The results table."""
    lines = ["| layout | side | kernel | tensor | caught | first mismatch reported |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.layout} | {o.side} | {o.kernel} | {o.tensor} | {'yes' if o.caught else 'NO'} | "
                     f"{o.first_mismatch.replace('|', '/')} |")
    n = sum(o.caught for o in outcomes)
    return "\n".join([*lines, "", f"{len(outcomes)} faults in {seconds:.0f} s", f"caught {n}/{len(outcomes)} "
                      "planted faults"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma list of {', '.join(LAYOUTS)}")
    ap.add_argument("--max-kernels", type=int, default=None, help="plant in at most N kernels per layout (CI)")
    ap.add_argument("--small", action="store_true", help="a 7-op graph instead of the every-op graph (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="folder for plant_faults.{json,md}")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    layouts = [s.strip() for s in args.layouts.split(",") if s.strip()]
    unknown = [s for s in layouts if s not in LAYOUTS]
    if unknown:
        raise SystemExit(f"unknown layout(s) {unknown}; known: {', '.join(LAYOUTS)}")
    from tvm_arq.build import prepare
    from tvm_arq.config import QuantConfig
    from tvm_arq.quantize import quantize_module
    from tvm_arq.target import resolve_target

    t0 = time.perf_counter()
    mod, cal = _graph(args.small)
    irs: dict[str, Any] = {}
    outcomes: list[Outcome] = []
    for layout in layouts:
        # the integer program for that target's storage dtype (uint8 on x86, int8 on ARM/RISC-V)
        act = resolve_target(LAYOUTS[layout][0]).act_dtype
        if act not in irs:
            irs[act] = quantize_module(prepare(mod, None), cal, QuantConfig(), act, progress=False).int_mod
        outcomes += run_layout(layout, irs[act], cal[0], args.max_kernels)
        logger.warning("%s: %d faults planted", layout, sum(o.layout == layout for o in outcomes))
    seconds = time.perf_counter() - t0
    md = to_markdown(outcomes, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plant_faults.json").write_text(json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1))
    (args.out / "plant_faults.md").write_text("# Planted faults\n\n" + md + "\n")
    print(md)
    return 0 if all(o.caught for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
