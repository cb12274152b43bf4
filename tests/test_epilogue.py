"""The int32 requantization epilogue of the NHWC conv kernels (``requant32``).

- ``requant32_exact`` (decided at build time from the accumulator bounds) accepts a layer only when adding
  the bias in int32, narrowing the requantized value to int32 and adding the zero point in int32 lose nothing;
- equivalence of :func:`~tvm_arq.ops.conv_nhwc.requant_qp32` (vectorized; run on the host, and, marked slow,
  on the emulated aarch64 and riscv64+V boards) with the int64
  contract for **every** shift ``rshift`` in ``[1, 62]`` that ``quantize_multiplier`` can emit, ``m0`` at
  ``2**30``, ``2**31 - 1``, random and tiny, the accumulator at the int32 extremes with a bias, and the largest
  and smallest sums the predicate accepts;
- a packed conv whose ``acc + bias`` reaches ``INT32_MAX`` / ``INT32_MIN`` takes the int32 epilogue and equals
  its twin; one past that keeps the int64 epilogue;
- generated assembly: the conv and depthwise epilogues use sign-extended 32x32->64 multiplies (``vpmuldq``;
  ``smull``/``smlal``) and no 64-bit multiply (``vpmullq``; ``mul``/``madd`` on x registers) on x86 AVX2
  (znver3), AVX-512 (cascadelake) and AArch64 ``+dotprod`` (compiled, not run; on AArch64 only the kernels
  whose epilogue is vectorized, i.e. a multiple of 4 channels).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, te

from tests.graphs import Spec, build_graph, calibration_set
from tvm_arq.backends import apply_default_schedule, get_backend
from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.ops import REGISTRY, emit_kernel
from tvm_arq.ops.conv import INT32_MAX, INT32_MIN, accumulator_bounds
from tvm_arq.ops.conv_nhwc import ZP_MARGIN, pack_conv_weight, requant32_exact, requant_qp32
from tvm_arq.passes.layout import convert_layout
from tvm_arq.qmath import MAX_RSHIFT, MIN_RSHIFT, requantize_np
from tvm_arq.quantize import quantize_module
from tvm_arq.target import resolve_target

HOST = resolve_target("host")


def _exact(s: int, m0: int, r: int) -> bool:
    return requant32_exact(np.array([s]), np.array([s]), np.array([0]), np.array([m0]), np.array([r]))


def _extreme_sum(m0: int, r: int, sign: int) -> int | None:
    """The sum of largest magnitude (of ``sign``) that the predicate accepts, by bisection."""
    if not _exact(0, m0, r):
        return None
    lo, hi = 0, 2**31 if sign < 0 else 2**31 - 1  # lo accepted
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _exact(sign * mid, m0, r):
            lo = mid
        else:
            hi = mid - 1
    return sign * lo


def test_requant32_exact_predicate() -> None:
    one = np.array([1])
    assert requant32_exact(np.array([-1000]), np.array([1000]), np.array([5]), one * 2**30, one * 40)
    # the int32 sum acc + bias overflows
    assert not requant32_exact(np.array([0]), np.array([INT32_MAX]), one, one * 2**30, one * 40)
    assert not requant32_exact(np.array([INT32_MIN]), np.array([0]), -one, one * 2**30, one * 40)
    # a multiplier >= 1/2 (rshift < 31) can push the requantized value out of int32
    assert not requant32_exact(np.array([-2**30]), np.array([2**30]), 0 * one, one * (2**31 - 1), one * 30)
    assert requant32_exact(np.array([-2**20]), np.array([2**20]), 0 * one, one * (2**31 - 1), one * 30)
    # headroom for the zero point: m0 = 2**31 - 1 at rshift 31 maps INT32_MAX to 2**31 - 2
    assert not _exact(INT32_MAX, 2**31 - 1, 31)
    assert _exact(INT32_MAX, 2**31 - 1, 32)
    # one bad channel decides for the layer; shifts outside [1, 62] are refused
    assert not requant32_exact(np.array([0, 0]), np.array([10, INT32_MAX]), np.array([0, 1]), np.array([2**30] * 2),
                               np.array([40, 40]))
    assert not _exact(10, 2**30, 63) and not _exact(10, 2**30, 0)


def _requant_cases() -> tuple[np.ndarray, ...]:
    """(acc, bias, m0, rshift, zp) rows: every shift, edge multipliers, extreme accumulators."""
    rng = np.random.default_rng(7)
    rows = []
    for r in range(MIN_RSHIFT, MAX_RSHIFT + 1):
        for m0 in (2**30, 2**31 - 1, int(rng.integers(2**30, 2**31)), int(rng.integers(0, 2**20)), 0):
            s_max, s_min = _extreme_sum(m0, r, 1), _extreme_sum(m0, r, -1)
            if s_max is None:
                continue
            sums = {s_max, s_min, s_max - 1, s_min + 1, 0, 1, -1}
            for _ in range(6):  # log-uniform magnitudes inside the accepted range
                bound = s_max if rng.random() < 0.5 else s_min
                sums.add(int(np.sign(bound) * int(abs(bound) * 2.0 ** -rng.uniform(0, 31))))
            for s in sums:
                # the accumulator at an int32 extreme with a bias bringing the sum back, or a random split
                acc = INT32_MAX if s >= 0 else INT32_MIN
                if rng.random() < 0.3:
                    acc = int(rng.integers(min(0, s), max(0, s) + 1))
                zp = int(rng.choice([0, 3, -128, 255, -7]))
                rows.append((acc, s - acc, m0, r, zp))
    a = np.array(rows, np.int64)
    pad = (-len(a)) % 16
    a = np.concatenate([a, np.tile(a[:1], (pad, 1))])
    return tuple(a[:, i].astype(np.int32) for i in range(5))


def _every_shift_kernel(lanes: int) -> tuple[tvm.IRModule, list[np.ndarray], np.ndarray]:
    """:func:`requant_qp32` over :func:`_requant_cases`, vectorized by ``lanes``: module, inputs, expected."""
    acc, bias, m0, rs, zp = _requant_cases()
    n = len(acc)
    for a, b, m, r in zip(acc, bias, m0, rs, strict=True):
        assert requant32_exact(np.array([a]), np.array([a]), np.array([b]), np.array([m]), np.array([r]))
    assert len(set(rs.tolist())) == MAX_RSHIFT - MIN_RSHIFT + 1
    lo, hi = INT32_MIN + ZP_MARGIN, INT32_MAX - ZP_MARGIN
    ph = {k: te.placeholder((n,), "int32", name=k) for k in ("acc", "bias", "m0", "rs", "zp")}
    qp = te.placeholder((4,), "int32", name="qp")  # qp[1] unused here: the zero point is per element

    def f(i):
        return requant_qp32(ph["acc"][i] + ph["bias"][i], ph["m0"][i], ph["rs"][i],
                            [qp[0], ph["zp"][i], qp[2], qp[3]])

    out = te.compute((n,), f, name="out")
    sch = s_tir.Schedule(te.create_prim_func([*ph.values(), qp, out]).with_attr("global_symbol", "every_shift"))
    (i,) = sch.get_loops(sch.get_sblock("out"))
    sch.vectorize(sch.split(i, [None, lanes])[1])
    want = np.clip(requantize_np(acc.astype(np.int64) + bias, m0, rs) + zp, lo, hi)
    return sch.mod, [acc, bias, m0, rs, zp, np.array([0, 0, lo, hi], np.int32)], want


def test_int32_requant_equals_int64_for_every_shift() -> None:
    mod, inputs, want = _every_shift_kernel(16)
    ex = tvm.compile(mod, target=HOST.target)
    res = tvm.runtime.tensor(np.zeros(len(want), np.int32))
    ex["every_shift"](*[tvm.runtime.tensor(v) for v in inputs], res)
    np.testing.assert_array_equal(res.numpy(), want)


@pytest.mark.slow
@pytest.mark.parametrize(("board", "preset", "lanes"), [("aarch64", "aarch64-dotprod", 16),
                                                        ("riscv64-rvv", "riscv64-rvv", 8)])
def test_int32_requant_every_shift_on_emulated_boards(board: str, preset: str, lanes: int, tmp_path) -> None:
    """The same cases run on the emulated boards: the intrinsic's lowering there (NEON ``smull``/``smlal`` +
    ``sshl``, RVV ``vwmul``/``vnsra``) keeps the single rounding for every shift."""
    from tvm_arq.backends.export import export_library
    from tvm_arq.deploy import pipe_session

    mod, inputs, want = _every_shift_kernel(lanes)
    info = resolve_target(preset)
    path = export_library(tvm.compile(mod, target=info.target), tmp_path / "every_shift.so", info)
    sess = pipe_session(board)
    sess.upload(str(path))
    dev = sess.cpu()
    res = tvm.runtime.tensor(np.zeros(len(want), np.int32), dev)
    sess.load_module("every_shift.so")["every_shift"](*[tvm.runtime.tensor(v, dev) for v in inputs], res)
    np.testing.assert_array_equal(res.numpy(), want)


def _packed_conv(x: np.ndarray, consts: list[np.ndarray], params: dict) -> np.ndarray:
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [xv]):
        with bb.dataflow():
            tensors = [xv, *(relax.const(c, str(c.dtype)) for c in consts)]
            out = bb.emit_output(emit_kernel(bb, "qconv2d_nhwc_packed", tensors, params, opaque=True))
        bb.emit_func_output(out)
    mod = bb.get()
    gv, f = next((gv, f) for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    mod[gv] = apply_default_schedule(f).with_attr("global_symbol", gv.name_hint)
    vm = relax.VirtualMachine(tvm.compile(mod, target=HOST.target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("past_the_edge", [False, True])
def test_packed_conv_with_int32_extreme_sums_matches_twin(past_the_edge: bool) -> None:
    """acc + bias == INT32_MAX (channel 0) and INT32_MIN (channel 1) exactly: the int32 epilogue is chosen and
    exact; one more and the layer keeps the int64 epilogue (also exact)."""
    plan = get_backend(HOST).layout_plan()
    cfg = plan.conv
    dom = cfg.domain_dtype or "uint8"
    lo, hi = (0, 255) if dom == "uint8" else (-128, 127)
    rng = np.random.default_rng(3)
    o, c = 20, 24
    w = rng.integers(-127, 128, (o, c, 1, 1)).astype(np.int8)
    w[0], w[1] = 127, -127
    a_lo, a_hi = accumulator_bounds(w, dom)
    bias = rng.integers(-5000, 5000, o).astype(np.int64)
    bias[0], bias[1] = INT32_MAX - a_hi[0] + past_the_edge, INT32_MIN - a_lo[1]
    m0 = np.full(o, 2**31 - 1, np.int32)
    m0[2:] = rng.integers(2**30, 2**31, o - 2)
    rs = np.full(o, 40, np.int32)
    chosen = requant32_exact(a_lo, a_hi, bias, m0, rs)
    assert chosen is not past_the_edge
    bias = bias.astype(np.int32) if not past_the_edge else bias.clip(INT32_MIN, INT32_MAX).astype(np.int32)
    x = rng.integers(lo, hi + 1, (1, 4, 4, c)).astype(dom)
    x[0, :2] = hi  # pixels where channel 0 and channel 1 reach their extreme accumulators
    qp = np.array([lo, 0, INT32_MIN + ZP_MARGIN, INT32_MAX - ZP_MARGIN], np.int32)  # unclamped int32 outputs
    params = {"strides": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "out_channels": o, "in_offset": 0,
              "domain_dtype": dom, "out_dtype": "int32", "schedule": cfg.rule, "requant32": chosen}
    consts = [pack_conv_weight(w, cfg.lanes, cfg.kgroup), bias, m0, rs, qp]
    got = _packed_conv(x, consts, params)
    twin = REGISTRY.kernel("qconv2d_nhwc_packed").reference(x, *consts, **params)
    np.testing.assert_array_equal(got, twin)
    if not past_the_edge:
        assert got[0, 0, 0, 0] == requantize_np(np.array([INT32_MAX]), m0[:1], rs[:1])[0]
        assert got[0, 0, 0, 1] == requantize_np(np.array([INT32_MIN]), m0[1:2], rs[1:2])[0]


# ------------------------------------------------------------------------------------------ assembly

EPILOGUE_KERNELS = ("qconv2d_nhwc_packed", "qdwconv2d_nhwc")
MUL64_X86 = re.compile(r"^\s+vpmullq\b", re.M)
MUL64_A64 = re.compile(r"^\s+(mul|madd|msub|smulh)\s+x\d+", re.M)


@pytest.fixture(scope="module")
def small_net() -> dict[str, tvm.IRModule]:
    spec = Spec(channels=3, size=8, ops=["conv", "dwconv", "conv"], seed=4, act="relu6")
    mod = build_graph(spec)
    cal = calibration_set(mod, 2, seed=1)
    return {dt: quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), dt, progress=False).int_mod
            for dt in ("int8", "uint8")}


@pytest.mark.parametrize(("target", "act_dtype"), [
    ("llvm -mtriple=x86_64-linux-gnu -mcpu=znver3", "uint8"),
    ("llvm -mtriple=x86_64-linux-gnu -mcpu=cascadelake", "uint8"),
    ("aarch64-dotprod", "int8"),
])  # fmt: skip
def test_epilogue_has_no_64bit_multiply(small_net: dict[str, tvm.IRModule], target: str, act_dtype: str) -> None:
    info = resolve_target(target)
    lm = convert_layout(small_net[act_dtype], get_backend(info).layout_plan())
    seen = set()
    for gv, f in lm.functions.items():
        if not (isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                and str(f.attrs.get("arq.op", "")) in EPILOGUE_KERNELS):
            continue
        op = str(f.attrs["arq.op"])
        channels = int(re.search(r"requant: T\.Buffer\(\(.*T\.int64\((\d+)\)\)", f.script()).group(1))
        if info.arch == "aarch64" and channels % 4:
            continue  # a ragged channel count leaves the epilogue scalar (its smaddl-like madd is no vector loop)
        assert json.loads(str(f.attrs["arq.params"]))["requant32"], gv.name_hint
        ex = tvm.compile(tvm.IRModule({gv.name_hint: apply_default_schedule(f).with_attr("global_symbol",
                                                                                      gv.name_hint)}),
                         target=info.target)
        asm = "".join(m.inspect_source("asm") for m in ex.mod._collect_dso_modules())
        if info.arch == "aarch64":
            assert not MUL64_A64.findall(asm), (gv.name_hint, MUL64_A64.findall(asm)[:4])
            assert re.search(r"^\s+(smull2?|smlal2?)\s+v", asm, re.M), gv.name_hint
        else:
            assert not MUL64_X86.findall(asm), gv.name_hint
            assert re.search(r"^\s+vpmuldq\b", asm, re.M), gv.name_hint
        seen.add(op)
    assert seen == set(EPILOGUE_KERNELS)
