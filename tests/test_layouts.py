"""Target layouts (tvm_arq.passes.layout): NHWC kernels with packed weights, bit-exact with the reference.

- kernel level: every new kernel, compiled with its default (tensorized) schedule for this machine, equals
  its numpy twin, and the twin equals the generic NCHW twin on transposed data;
- graph level: random graphs of every supported op (tests/graphs.py), quantized for x86 (uint8, and int8
  through the +128 shift), converted for "host" / "x86-vnni", compiled with the default schedules, equal
  the reference interpreter of the *unconverted* integer module bit for bit;
- the layout transforms are hoisted (no transposes inside conv/pool/add/concat/LUT chains), LUTs fuse into
  conv epilogues, symmetric and hybrid builds have identical kernels;
- ARM and RISC-V conversions are checked on the host (their kernels' semantics; code generation is in
  tests/test_codegen.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
import tvm_ffi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax

from tests.graphs import OPS, Spec, build_graph, calibration_set
from tvm_arq.backends import ApplyDefaultSchedules, ConvTile, default_conv_tile, get_backend
from tvm_arq.backends import x86_64 as x86
from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.ops import REGISTRY, emit_kernel
from tvm_arq.ops.conv_nhwc import pack_conv_weight, unpack_conv_weight
from tvm_arq.ops.reference import ReferenceInterpreter
from tvm_arq.passes.layout import LayoutContext
from tvm_arq.passes.layout import convert_layout as _convert_layout
from tvm_arq.quantize import compile_host, quantize_module
from tvm_arq.target import resolve_target
from tvm_arq.verify import debug_build, verify_host


def layout_plan(target):
    """The target backend's kernels (registers its schedule rules)."""
    return get_backend(target).layout_plan()


def convert_layout(mod, target):
    return _convert_layout(mod, layout_plan(target))


def twin_of(name: str):
    """The numpy twin of kernel ``name``."""
    return REGISTRY.kernel(name).reference


HOST = resolve_target("host")
needs_vnni = pytest.mark.skipif(not (HOST.has_vnni and HOST.is_host), reason="needs an AVX-512 VNNI host")


def _kernel_module(name: str, inputs: list[np.ndarray], consts: list[np.ndarray], params: dict) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(inputs)]
    with bb.function("main", xs):
        with bb.dataflow():
            tensors = [*xs, *(relax.const(c, str(c.dtype)) for c in consts)]
            out = bb.emit_output(emit_kernel(bb, name, tensors, params, opaque=True))
        bb.emit_func_output(out)
    return bb.get()


def _run_host(mod: tvm.IRModule, inputs: list[np.ndarray], scheduled: bool = True) -> np.ndarray:
    if scheduled:
        get_backend("x86-vnni").register()
        mod = ApplyDefaultSchedules()(mod)
    ex = tvm.compile(mod, target=HOST.target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


def _requant_consts(rng: np.random.Generator, o: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bias = rng.integers(-30000, 30000, o).astype(np.int32)
    m0 = rng.integers(2**30, 2**31 - 1, o).astype(np.int32)
    rs = rng.integers(36, 42, o).astype(np.int32)
    return bias, m0, rs


# ------------------------------------------------------------------------------------------ packing


@pytest.mark.parametrize(("o", "c", "k", "lanes", "kg"), [(5, 3, 3, 16, 4), (32, 16, 1, 16, 4), (17, 9, 3, 16, 1)])
def test_pack_unpack_roundtrip(o: int, c: int, k: int, lanes: int, kg: int) -> None:
    w = np.random.default_rng(0).integers(-127, 128, (o, c, k, k)).astype(np.int8)
    p = pack_conv_weight(w, lanes, kg)
    assert p.shape == (-(-o // lanes), k, k, -(-c // kg), lanes, kg)
    np.testing.assert_array_equal(unpack_conv_weight(p, o, c), w.transpose(0, 2, 3, 1))
    assert int(np.abs(p).sum()) == int(np.abs(w.astype(np.int64)).sum())  # padding is zero


def test_default_tiles_fit_the_register_budget() -> None:
    for oh, ow, ob in [(56, 56, 4), (7, 7, 20), (13, 13, 16), (1, 1, 63), (112, 112, 1), (52, 52, 2)]:
        t = default_conv_tile(oh, ow, ob, x86.VNNI_CONV)
        assert isinstance(t, ConvTile)
        assert oh % t.th == 0 and ow % t.tw == 0 and ob % t.to == 0
        assert t.th * t.tw * t.to <= x86.VNNI_CONV.acc_budget
    assert default_conv_tile(13, 13, 16, x86.VNNI_CONV).tw == 13  # prime widths keep whole rows


# ------------------------------------------------------------------------------------------ kernels

conv_cases = st.fixed_dictionaries({
    "c": st.integers(1, 20), "o": st.integers(1, 40), "size": st.integers(3, 11), "k": st.sampled_from([1, 3, 5]),
    "stride": st.sampled_from([1, 2]), "dilation": st.sampled_from([1, 2]), "pads": st.lists(st.integers(0, 2),
    min_size=4, max_size=4), "x_dtype": st.sampled_from(["uint8", "int8"]), "lut": st.sampled_from(["none", "tensor",
    "channel"]), "seed": st.integers(0, 1000),
})  # fmt: skip


@needs_vnni
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(case=conv_cases)
def test_packed_conv_kernel_matches_twins(case: dict) -> None:
    """VNNI-tensorized conv == its twin == the generic NCHW twin (zero point pad, +128 shift, fused LUT)."""
    rng = np.random.default_rng(case["seed"])
    c, o, k, s, d = case["c"], case["o"], case["k"], case["stride"], case["dilation"]
    size = max(case["size"], d * (k - 1) + 1)
    lo, hi = (0, 255) if case["x_dtype"] == "uint8" else (-128, 127)
    x = rng.integers(lo, hi + 1, (1, size, size, c)).astype(case["x_dtype"])
    w = rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)
    bias, m0, rs = _requant_consts(rng, o)
    zp_x, zp_y = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    shift = 128 if case["x_dtype"] == "int8" else 0  # VNNI takes uint8: the kernel shifts int8 inputs
    bias_dom = (bias.astype(np.int64) - shift * w.reshape(o, -1).astype(np.int64).sum(1)).astype(np.int32)
    qp = np.array([zp_x + shift, zp_y, lo, hi], np.int32)
    params = {"strides": [s, s], "padding": case["pads"], "dilation": [d, d], "out_channels": o,
              "in_offset": shift, "domain_dtype": "uint8", "out_dtype": case["x_dtype"],
              "schedule": x86.VNNI_CONV.rule}
    consts = [pack_conv_weight(w, 16, 4), bias_dom, m0, rs, qp]
    if case["lut"] != "none":
        rows = o if case["lut"] == "channel" else 1
        consts.append(rng.integers(-128, 128, (rows, 256)).astype(np.int8))
        params.update(lut_axis=3 if rows > 1 else -1, lut_qmin=lo, out_dtype="int8")
    got = _run_host(_kernel_module("qconv2d_nhwc_packed", [x], consts, params), [x])
    twin = twin_of("qconv2d_nhwc_packed")(x, *consts[:5], consts[5] if len(consts) > 5 else None, **params)
    np.testing.assert_array_equal(got, twin)
    # independent check: the generic NCHW twin on the original (unshifted) operands
    gen = twin_of("qconv2d")(x.transpose(0, 3, 1, 2), w, bias, m0, rs, strides=[s, s], padding=case["pads"],
                      dilation=[d, d], groups=1, zp_x=zp_x, zp_y=zp_y, qlo=lo, qhi=hi, out_dtype=case["x_dtype"])
    gen = gen.transpose(0, 2, 3, 1)
    if case["lut"] != "none":
        gen = twin_of("qlut")(gen, consts[5], axis=3 if case["lut"] == "channel" else -1, qmin=lo)
    np.testing.assert_array_equal(twin, gen)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(c=st.integers(1, 40), size=st.integers(3, 12), k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]),
       seed=st.integers(0, 1000))
def test_depthwise_kernel_matches_twins(c: int, size: int, k: int, stride: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, size, size, c)).astype(np.uint8)
    w = rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8)
    bias, m0, rs = _requant_consts(rng, c)
    zp_x, zp_y = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    pads = [k // 2, k // 2 - 1, k // 2, k // 2]
    qp = np.array([zp_x, zp_y, 3, 250], np.int32)
    params = {"strides": [stride, stride], "padding": pads, "dilation": [1, 1], "out_dtype": "uint8",
              "schedule": x86.DEPTHWISE.rule}
    consts = [np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)), bias, m0, rs, qp]
    got = _run_host(_kernel_module("qdwconv2d_nhwc", [x], consts, params), [x])
    twin = twin_of("qdwconv2d_nhwc")(x, *consts, **params)
    np.testing.assert_array_equal(got, twin)
    gen = twin_of("qconv2d")(x.transpose(0, 3, 1, 2), w, bias, m0, rs, strides=[stride, stride], padding=pads,
                      dilation=[1, 1], groups=c, zp_x=zp_x, zp_y=zp_y, qlo=3, qhi=250, out_dtype="uint8")
    np.testing.assert_array_equal(twin, gen.transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------------------------ graphs

graph_specs = st.builds(
    Spec,
    channels=st.sampled_from([2, 3, 4, 16]),
    size=st.integers(3, 9),
    ops=st.lists(st.sampled_from(OPS[:-1]), min_size=1, max_size=7),
    seed=st.integers(0, 10_000),
    act=st.sampled_from(["none", "relu", "relu6", "clip_sym"]),
    softmax=st.booleans(),
)


def _check_graph(spec: Spec, scheme: Scheme, act_dtype: str, target: str) -> tvm.IRModule:
    info = resolve_target(target)
    mod = build_graph(spec)
    cal = calibration_set(mod, 4, seed=spec.seed, skew=0.7)
    res = quantize_module(mod, cal, QuantConfig(scheme=scheme), act_dtype, progress=False)
    assert not res.plan.fallbacks, res.plan.fallbacks
    # the converted program with its default schedules: every integer tensor against the converted
    # module's reference, and the reference output against the unconverted module's (tvm_arq.verify)
    program = debug_build(res.int_mod, info)
    for x in cal[:2] + calibration_set(mod, 1, seed=spec.seed + 99, skew=-0.5):
        verify_host(program, x, export=False).assert_ok()
    return program.converted


@needs_vnni
@pytest.mark.parametrize("scheme", [Scheme.HYBRID, Scheme.SYMMETRIC])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(spec=graph_specs, target=st.sampled_from(["host", "x86-vnni"]))
def test_random_graphs_x86_bitexact(scheme: Scheme, spec: Spec, target: str) -> None:
    _check_graph(spec, scheme, "uint8", target)


@needs_vnni
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(spec=graph_specs)
def test_random_graphs_x86_int8_activations_bitexact(spec: Spec) -> None:
    """int8 storage on x86: the conv kernels shift the activations by +128 into VNNI's uint8 operand."""
    _check_graph(spec, Scheme.HYBRID, "int8", "host")


@needs_vnni
def test_every_op_in_one_graph_x86() -> None:
    spec = Spec(channels=4, size=8, ops=list(OPS[:-1]), seed=3, act="relu6", softmax=True)
    lm = _check_graph(spec, Scheme.HYBRID, "uint8", "host")
    kernels = _kernels(lm)
    assert {"quantize_to_nhwc", "qconv2d_nhwc_packed", "qdwconv2d_nhwc", "qconv2d_nhwc", "qmaxpool2d_nhwc",
            "qavgpool2d_nhwc", "qmean_hw_nhwc"} <= set(kernels)
    assert "qconv2d" not in kernels and "qdense" not in kernels


@pytest.mark.parametrize("target", ["aarch64-dotprod", "aarch64", "riscv64-rvv"])
@pytest.mark.parametrize("act_dtype", ["int8", "uint8"])
def test_cross_target_layouts_match_reference_on_host(target: str, act_dtype: str) -> None:
    """ARM/RISC-V conversions (int8 domain: uint8 inputs shifted by -128; kgroup 1 on RISC-V), compiled
    unscheduled for this machine, equal the reference."""
    spec = Spec(channels=4, size=8, ops=["conv", "dwconv", "gconv", "add", "silu", "maxpool", "concat", "conv",
                                         "resize", "avgpool", "se", "conv"], seed=11, act="relu6")
    mod = build_graph(spec)
    cal = calibration_set(mod, 3, seed=2, skew=0.5)
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), act_dtype, progress=False)
    lm = convert_layout(res.int_mod, target)
    plan = layout_plan(target)
    packed = [json.loads(str(f.attrs["arq.params"])) for f in lm.functions.values()
              if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
              and str(f.attrs.get("arq.op", "")) == "qconv2d_nhwc_packed"]
    assert packed and {p["schedule"] for p in packed} == {plan.conv.rule}
    if plan.conv.domain_dtype and plan.conv.domain_dtype != act_dtype:
        assert {p["in_offset"] for p in packed} == {-128}
    program = debug_build(res.int_mod, target, host_copy=True)  # the target's layouts, compiled for here
    for x in cal[:2]:
        verify_host(program, x, export=False).assert_ok()  # every tensor; reference before == after conversion


# ------------------------------------------------------------------------------------------ structure


def _kernels(mod: tvm.IRModule) -> list[str]:
    out = []
    for b in mod["main"].body.blocks[0].bindings:
        v = b.value
        if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir":
            f = mod[v.args[0]]
            out.append(str(f.attrs["arq.op"]) if f.attrs is not None and "arq.op" in f.attrs else "?")
    return out


def _ops(mod: tvm.IRModule) -> list[str]:
    return [b.value.op.name for b in mod["main"].body.blocks[0].bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]


def test_layout_transforms_are_hoisted_and_luts_fused() -> None:
    """An EfficientNet/YOLOX-like chain stays NHWC from the input quantize to the head: no transpose."""
    spec = Spec(channels=3, size=16, ops=["conv", "dwconv", "conv", "add", "silu", "conv", "maxpool", "concat",
                                          "avgpool", "resize", "leaky", "conv", "se", "conv"], seed=5, act="relu6")
    mod = build_graph(spec)
    cal = calibration_set(mod, 3, seed=1)
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), "uint8", progress=False)
    conv = LayoutContext(res.int_mod, layout_plan("host"))
    lm = conv.run()
    assert "relax.permute_dims" not in _ops(lm), conv.stats
    kernels = _kernels(lm)
    assert kernels[0] == "quantize_to_nhwc"
    assert conv.stats.get("fused_lut", 0) >= 1
    assert kernels.count("qlut") < _kernels(res.int_mod).count("qlut")


def test_unknown_ops_get_nchw_through_one_transpose() -> None:
    """A reshape of a real feature map needs NCHW: one permute_dims, made once, right before it."""
    from tvm.relax.op import nn as rnn

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 6, 6), "float32"))
    rng = np.random.default_rng(0)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(rnn.conv2d(x, relax.const(rng.normal(size=(8, 3, 3, 3)).astype("float32")), padding=1))
            y = bb.emit(relax.op.add(y, relax.const(rng.normal(size=(1, 8, 1, 1)).astype("float32"))))
            r = bb.emit(relax.op.reshape(y, (1, 8, 36)))
            r2 = bb.emit(relax.op.reshape(y, (1, 288)))
            out = bb.emit_output(relax.Tuple([r, r2]))
        bb.emit_func_output(out)
    mod = bb.get()
    cal = [rng.normal(size=(1, 3, 6, 6)).astype("float32") for _ in range(3)]
    res = quantize_module(mod, cal, QuantConfig(scheme=Scheme.HYBRID), "uint8", progress=False)
    lm = convert_layout(res.int_mod, "host")
    assert _ops(lm).count("relax.permute_dims") == 1
    vm = compile_host(lm)
    want = ReferenceInterpreter(res.int_mod).run(cal[0])
    got = vm["main"](tvm.runtime.tensor(cal[0]))
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.numpy(), w_)


def test_symmetric_and_hybrid_share_identical_kernels() -> None:
    """Zero points are kernel operands: the symmetric and the hybrid build of a network have structurally
    identical conv kernels (same tuning workloads, same machine code, different constants)."""
    spec = Spec(channels=3, size=8, ops=["conv", "dwconv", "conv", "silu", "conv"], seed=2, act="clip_sym")
    mod = build_graph(spec)
    cal = calibration_set(mod, 3, seed=1, skew=1.0)
    funcs = {}
    for scheme in (Scheme.SYMMETRIC, Scheme.HYBRID):
        res = quantize_module(mod, cal, QuantConfig(scheme=scheme), "uint8", progress=False)
        assert {q.zero_point for q in res.qparams.values()} != {128} or scheme is Scheme.SYMMETRIC
        lm = convert_layout(res.int_mod, "host")
        funcs[scheme] = sorted(
            (f for f in lm.functions.values() if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
             and str(f.attrs.get("arq.op", "")) in ("qconv2d_nhwc_packed", "qdwconv2d_nhwc")),
            key=lambda f: str(f.attrs["arq.params"]),
        )
    sym, hyb = funcs[Scheme.SYMMETRIC], funcs[Scheme.HYBRID]
    assert len(sym) == len(hyb) >= 3
    for a, b in zip(sym, hyb, strict=True):
        assert tvm_ffi.structural_equal(a, b)


@needs_vnni
def test_build_uses_the_layout_pass_and_stays_exact() -> None:
    """tvm_arq.build for the host compiles the converted module (int8 storage too) and matches the
    reference of its integer module."""
    import tvm_arq

    spec = Spec(channels=3, size=10, ops=["conv", "dwconv", "add", "hardswish", "conv", "avgpool"], seed=8)
    mod = build_graph(spec)
    cal = calibration_set(mod, 3, seed=3)
    for act_dtype in ("uint8", "int8"):
        model = tvm_arq.build(mod, None, "host", calibration=cal,
                              config=QuantConfig(scheme=Scheme.HYBRID, act_dtype=act_dtype), progress=False)
        for x in cal[:2]:
            np.testing.assert_array_equal(model.run(x), model.reference(x))


def test_default_schedules_cover_conv_depthwise_and_pools() -> None:
    """Untuned builds: every conv, depthwise and pooling kernel of a converted module gets a schedule."""
    spec = Spec(channels=4, size=16, ops=["conv", "dwconv", "avgpool", "maxpool", "conv"], seed=4)
    mod = build_graph(spec)
    res = quantize_module(mod, calibration_set(mod, 2), QuantConfig(scheme=Scheme.HYBRID), "uint8", progress=False)
    sm = ApplyDefaultSchedules()(convert_layout(res.int_mod, "host"))
    ops = {}
    for f in sm.functions.values():
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs:
            ops.setdefault(str(f.attrs["arq.op"]), []).append(bool(f.attrs.get("tirx.is_scheduled", False)))
    for name in ("qconv2d_nhwc_packed", "qdwconv2d_nhwc", "qmaxpool2d_nhwc", "qavgpool2d_nhwc"):
        assert ops.get(name) and all(ops[name]), (name, ops)
