"""The requantization epilogue, int64 (old) vs int32 (``requant32``), side by side on the same kernels.

Each case is one EfficientNet-Lite0-like layer built as a single kernel (``qconv2d_nhwc_packed`` for the 1x1
convs, ``qdwconv2d_nhwc`` for the depthwise 3x3) with the host backend's **default schedule** (the same for
both epilogues; no tuning), then timed with the VM's ``time_evaluator`` (old and new interleaved, repeated).
Both outputs are compared with each other and with the kernel's numpy twin. The assembly of each kernel is
also compiled (not run) for ``x86-vnni`` (Cascade Lake) and ``aarch64-dotprod``: total instruction count of
the kernel and the count of 64-bit multiplies (``vpmullq``; ``mul``/``madd`` on x registers) against
sign-extended 32x32->64 ones (``vpmuldq``; ``smull``/``smlal``).

Usage::

    python scripts/bench_epilogue.py                 # writes results/epilogue.{json,md}
    python scripts/bench_epilogue.py --threads 1 --repeat 5 --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_epilogue")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One layer: a 1x1 conv ``c -> o`` or a depthwise ``k x k`` conv (``o == c``) at ``hw x hw``."""

    name: str
    kind: str  # "pw" or "dw"
    c: int
    o: int
    hw: int
    k: int = 1
    stride: int = 1


CASES = [
    Case("pw 24->144 @56", "pw", 24, 144, 56),
    Case("pw 144->24 @56", "pw", 144, 24, 56),
    Case("pw 40->240 @28", "pw", 40, 240, 28),
    Case("pw 240->40 @28", "pw", 240, 40, 28),
    Case("pw 112->672 @14", "pw", 112, 672, 14),
    Case("dw 3x3 144 @56", "dw", 144, 144, 56, 3),
    Case("dw 3x3 240 @28", "dw", 240, 240, 28, 3),
]
QUICK = [CASES[0], CASES[5]]


def _operands(case: Case, target, requant32: bool) -> tuple[str, np.ndarray, list[np.ndarray], dict]:
    """Kernel name, input, constant operands and params of ``case`` for ``target``."""
    from tvm_arq.backends import get_backend
    from tvm_arq.ops.conv import accumulator_bounds
    from tvm_arq.ops.conv_nhwc import pack_conv_weight, requant32_exact

    plan = get_backend(target).layout_plan()
    rng = np.random.default_rng(0)
    x_dtype = target.act_dtype
    lo, hi = np.iinfo(x_dtype).min, np.iinfo(x_dtype).max
    x = rng.integers(lo, hi + 1, (1, case.hw, case.hw, case.c)).astype(x_dtype)
    kc = 1 if case.kind == "dw" else case.c
    w = rng.integers(-127, 128, (case.o, kc, case.k, case.k)).astype(np.int8)
    bias = rng.integers(-5000, 5000, case.o).astype(np.int32)
    m0 = rng.integers(2**30, 2**31 - 1, case.o).astype(np.int32)
    # a multiplier that spreads the outputs over the 8-bit range (acc std ~ sqrt(K) * 74 * 73)
    rs = np.full(case.o, 30 + int(np.ceil(np.log2(np.sqrt(kc * case.k * case.k) * 74 * 73 / 40))), np.int32)
    zp_x, zp_y = (lo + hi + 1) // 2, 3
    qp = np.array([zp_x, zp_y, lo, hi], np.int32)
    pad = case.k // 2
    common = {"strides": [case.stride] * 2, "padding": [pad] * 4, "dilation": [1, 1], "out_dtype": x_dtype}
    if case.kind == "dw":
        a_lo, a_hi = accumulator_bounds(w, x_dtype)
        assert not requant32 or requant32_exact(a_lo, a_hi, bias, m0, rs)
        consts = [np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)), bias, m0, rs, qp]
        return "qdwconv2d_nhwc", x, consts, {**common, "schedule": plan.depthwise.rule, "requant32": requant32}
    cfg = plan.conv
    dom = cfg.domain_dtype or x_dtype
    shift = int(np.iinfo(dom).min) - int(lo)
    bias_d = (bias.astype(np.int64) - shift * w.reshape(case.o, -1).astype(np.int64).sum(1)).astype(np.int32)
    a_lo, a_hi = accumulator_bounds(w, dom)
    assert not requant32 or requant32_exact(a_lo, a_hi, bias_d, m0, rs)
    qp = np.array([zp_x + shift, zp_y, lo, hi], np.int32)
    consts = [pack_conv_weight(w, cfg.lanes, cfg.kgroup), bias_d, m0, rs, qp]
    params = {**common, "out_channels": case.o, "in_offset": shift, "domain_dtype": dom, "schedule": cfg.rule,
              "requant32": requant32}
    return "qconv2d_nhwc_packed", x, consts, params


def _module(name: str, x: np.ndarray, consts: list[np.ndarray], params: dict):
    import tvm
    from tvm import relax

    from tvm_arq.backends import apply_default_schedule
    from tvm_arq.ops import emit_kernel

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [xv]):
        with bb.dataflow():
            tensors = [xv, *(relax.const(c, str(c.dtype)) for c in consts)]
            out = bb.emit_output(emit_kernel(bb, name, tensors, params, opaque=True))
        bb.emit_func_output(out)
    mod = bb.get()
    gv, f = next((gv, f) for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    sched = apply_default_schedule(f)
    mod[gv] = sched.with_attr("global_symbol", gv.name_hint)
    return mod, tvm.IRModule({gv.name_hint: mod[gv]})


def _asm_stats(prim_mod, target) -> dict:
    import tvm

    ex = tvm.compile(prim_mod, target=target.target)
    asm = "".join(m.inspect_source("asm") for m in ex.mod._collect_dso_modules())
    ops = re.findall(r"^\s+([a-z][a-z0-9.]*)\s*([^\n]*)", asm, re.M)
    cnt = Counter(op for op, _ in ops)
    mul64 = cnt["vpmullq"] + sum(1 for op, args in ops if op in ("mul", "madd", "smulh") and args.startswith("x"))
    mul32x32 = cnt["vpmuldq"] + cnt["smull"] + cnt["smull2"] + cnt["smlal"] + cnt["smlal2"]
    return {"instructions": sum(cnt.values()), "mul64": mul64, "widening_mul32": mul32x32}


def run_case(case: Case, threads: int, number: int, repeat: int) -> dict:
    import tvm
    from tvm import relax

    from tvm_arq.ops import REGISTRY
    from tvm_arq.target import resolve_target

    host = resolve_target("host")
    row: dict = {"case": asdict(case), "macs": case.o * case.hw**2 * (1 if case.kind == "dw" else case.c) * case.k**2}
    vms, outs = {}, {}
    for r32 in (False, True):
        name, x, consts, params = _operands(case, host, r32)
        mod, prim = _module(name, x, consts, params)
        ex = tvm.compile(mod, target=host.target)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        xt = tvm.runtime.tensor(x)
        outs[r32] = vm["main"](xt).numpy()
        vms[r32] = (vm, xt)
        tag = "int32" if r32 else "int64"
        row[f"asm_{tag}"] = {t: _asm_stats(prim, resolve_target(t)) for t in ("host", "x86-vnni", "aarch64-dotprod")}
        if not r32:
            twin = REGISTRY.kernel(name).reference(x, *consts, **params)
            row["twin_equal"] = bool(np.array_equal(outs[r32], twin))
    row["bit_equal"] = bool(np.array_equal(outs[False], outs[True]))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):  # interleaved
        for r32 in (False, True):
            vm, xt = vms[r32]
            t = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=1)(xt)
            times[r32].append(float(t.mean) * 1e6)
    for r32, tag in ((False, "int64"), (True, "int32")):
        med = float(np.min(times[r32]))
        row[f"us_{tag}"] = med
        row[f"us_{tag}_median"] = float(np.median(times[r32]))
        row[f"us_{tag}_all"] = times[r32]
        row[f"gmacs_{tag}"] = row["macs"] / med / 1e3
    row["speedup"] = row["us_int64"] / row["us_int32"]
    row["threads"] = threads
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Requantization epilogue: int64 vs int32 (`requant32`)", "",
             f"Host `{meta['cpu']}`, {meta['threads']} thread(s), default schedules (untuned), "
             f"best of {meta['repeat']} interleaved runs x {meta['number']} calls (the machine is shared: the minimum "
             "is the least disturbed; medians are in the JSON). Load average at the end of the run: "
             f"{meta['load_average'][0]:.1f} on 2 cores: run-to-run differences of the speed-up of ±0.15 are "
             "noise. Generated by `scripts/bench_epilogue.py`.", "",
             "| layer | int64 µs | int32 µs | speed-up | GMAC/s int64 | GMAC/s int32 | bit-equal | "
             "instr. host 64→32 | instr. cascadelake 64→32 | 64-bit muls cascadelake 64→32 | "
             "instr. aarch64 64→32 | 64-bit muls aarch64 64→32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a64, a32 = r["asm_int64"], r["asm_int32"]
        lines.append(
            f"| {r['case']['name']} | {r['us_int64']:.1f} | {r['us_int32']:.1f} | {r['speedup']:.2f}× | "
            f"{r['gmacs_int64']:.1f} | {r['gmacs_int32']:.1f} | {r['bit_equal'] and r['twin_equal']} | "
            f"{a64['host']['instructions']}→{a32['host']['instructions']} | "
            f"{a64['x86-vnni']['instructions']}→{a32['x86-vnni']['instructions']} | "
            f"{a64['x86-vnni']['mul64']}→{a32['x86-vnni']['mul64']} | "
            f"{a64['aarch64-dotprod']['instructions']}→{a32['aarch64-dotprod']['instructions']} | "
            f"{a64['aarch64-dotprod']['mul64']}→{a32['aarch64-dotprod']['mul64']} |")
    lines += ["", "Instruction counts are of the whole kernel (conv loop + epilogue, static, after unrolling); "
              "64-bit muls: `vpmullq` on x86, `mul`/`madd` on x registers on AArch64 (the int32 epilogue uses "
              "`vpmuldq` / `smull`/`smlal` instead). Cross targets are compiled only, not run."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--number", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=80)
    ap.add_argument("--quick", action="store_true", help="two cases only")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "epilogue")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    from tvm_arq.target import resolve_target

    rows = []
    for case in QUICK if args.quick else CASES:
        t0 = time.time()
        row = run_case(case, args.threads, args.number, args.repeat)
        logger.info("%-18s int64 %8.1f us  int32 %8.1f us  x%.2f  equal=%s  (%.0f s)", case.name, row["us_int64"],
                    row["us_int32"], row["speedup"], row["bit_equal"] and row["twin_equal"], time.time() - t0)
        rows.append(row)
    meta = {"cpu": resolve_target("host").target.attrs.get("mcpu", "?"), "threads": args.threads,
            "number": args.number, "repeat": args.repeat, "load_average": list(os.getloadavg())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(rows, meta))
    logger.info("wrote %s.{json,md}", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
