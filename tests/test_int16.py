"""int16 activations (W8A16): kernels vs their numpy twins, int8 <-> int16 boundaries, whole models bit-exact.

The kernel test builds one module per example holding every kernel an int16 model uses (NCHW conv / dense, the
packed NHWC conv of the host's intrinsic-free configuration, depthwise, add, concat, mul, lookup table) on random
int16 operands, mixed with 8-bit ones and 8-bit outputs, compiles it with the default schedules and compares
each output, bit for bit, with the kernel's twin. ``TVM_ARQ_HYPOTHESIS=thorough`` raises the budget.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_arq
from tests.test_sensitivity import bad_layer_case
from tvm_arq.backends import ApplyDefaultSchedules, get_backend
from tvm_arq.config import RangeKind
from tvm_arq.frontend import prepare_module
from tvm_arq.ops import REGISTRY, emit_kernel
from tvm_arq.ops.conv_nhwc import pack_conv_weight
from tvm_arq.ops.mul import fit_product_multiplier
from tvm_arq.ops.registry import Quant
from tvm_arq.qmath import choose_qparams, quantize_multiplier
from tvm_arq.quantize import compile_host, quantize_module
from tvm_arq.target import resolve_target
from tvm_arq.verify import debug_build, verify_host

THOROUGH = os.environ.get("TVM_ARQ_HYPOTHESIS") == "thorough"
EXAMPLES = int(os.environ.get("TVM_ARQ_KERNEL_EXAMPLES", "200")) if THOROUGH else 3
HOST = resolve_target("host")
I16 = (-32768, 32767)
HOST_ACT = get_backend(HOST).act_dtype

cases = st.fixed_dictionaries({
    "c": st.integers(1, 6), "o": st.integers(1, 20),
    "h": st.integers(3, 6), "w": st.integers(3, 6),
    "k": st.integers(1, 3), "stride": st.integers(1, 2), "pad": st.integers(0, 1),
    "out_dtype": st.sampled_from(["int16", "int8", "uint8"]),
    "other_dtype": st.sampled_from(["int16", "int8", "uint8"]),  # the second operand of add / concat / mul
    "lut_rows": st.sampled_from([1, 0]),  # 0: one table row per channel
    "seed": st.integers(0, 2**16),
})  # fmt: skip


def twin(name: str):
    return REGISTRY.kernel(name).reference


def _rand(rng, shape, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=not THOROUGH)
@given(case=cases)
def test_int16_kernels_match_twins(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    c, o, h, w, k, s, p = (case[n] for n in ("c", "o", "h", "w", "k", "stride", "pad"))
    out_dt, other_dt = case["out_dtype"], case["other_dtype"]
    qlo, qhi = (int(v) for v in (np.iinfo(out_dt).min, np.iinfo(out_dt).max))
    x = _rand(rng, (1, c, h, w), "int16")
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = _rand(rng, (1, c, h, w), other_dt)
    zp_x, zp_y = int(rng.integers(-300, 301)), int(rng.integers(qlo, qhi + 1))
    qw = rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)
    bias = rng.integers(-2**20, 2**20, o).astype(np.int32)
    m0, rs = quantize_multiplier(rng.uniform(0.5, 1.0, o) * 2.0 ** rng.integers(-24, -8, o))
    conv_p = {"strides": [s, s], "padding": [p] * 4, "dilation": [1, 1]}
    nchw_p = {**conv_p, "groups": 1, "zp_x": zp_x, "zp_y": zp_y, "qlo": qlo, "qhi": qhi, "out_dtype": out_dt}
    qp = np.array([zp_x, zp_y, qlo, qhi], np.int32)
    cfg = get_backend(HOST).layout_plan().conv_fallback  # the configuration int16 activations take
    wp = pack_conv_weight(qw, cfg.lanes, cfg.kgroup)
    packed_p = {**conv_p, "out_channels": o, "in_offset": 0, "domain_dtype": "int16", "out_dtype": out_dt,
                "schedule": cfg.rule}
    dw_w = rng.integers(-127, 128, (k, k, c)).astype(np.int8)
    dw_b, (dw_m0, dw_rs) = bias[:1].repeat(c), quantize_multiplier(np.full(c, 2.0**-12))
    dw_p = {**conv_p, "out_dtype": out_dt, "schedule": get_backend(HOST).layout_plan().depthwise.rule}
    xd = x.reshape(1, -1)
    dense_w = rng.integers(-127, 128, (o, xd.shape[1])).astype(np.int8)
    dense_p = {"zp_y": zp_y, "qlo": qlo, "qhi": qhi, "out_dtype": out_dt}
    zy = int(rng.integers(-100, 101)) if other_dt != "uint8" else int(rng.integers(0, 256))
    sum_p = {"zps": [zp_x, zy], "mults": [int(rng.integers(1, 2**20)), int(rng.integers(-2**20, 2**20))],
             "shift": int(rng.integers(10, 30)), "zp_y": zp_y, "qlo": qlo, "qhi": qhi, "out_dtype": out_dt}
    add_p = {**sum_p, "out_shape": [1, c, h, w]}
    cat_p = {**sum_p, "mults": [abs(v) for v in sum_p["mults"]], "axis": 1}
    mm0, mrs = quantize_multiplier(float(rng.uniform(1e-9, 1e-3)))
    mm0, mrs = fit_product_multiplier(int(mm0[0]), int(mrs[0]), Quant(1.0, zp_x, "int16"), Quant(1.0, zy, other_dt))
    mul_p = {"out_shape": [1, c, h, w], "zps": [zp_x, zy], "m0": mm0, "rshift": mrs, "zp_y": zp_y, "qlo": qlo,
             "qhi": qhi, "out_dtype": out_dt}
    rows = case["lut_rows"] or c
    table = _rand(rng, (rows, 65536), out_dt)
    lut_p = {"axis": 1 if rows > 1 else -1, "qmin": I16[0], "fn": "random"}

    calls = [
        ("qconv2d", [x, qw, bias, m0, rs], nchw_p),
        ("qdense", [xd, dense_w, bias, m0, rs], dense_p),
        ("qconv2d_nhwc_packed", [x_nhwc, wp, bias, m0, rs, qp], packed_p),
        ("qdwconv2d_nhwc", [x_nhwc, dw_w, dw_b, dw_m0, dw_rs, qp], dw_p),
        ("qadd", [[x, y]], add_p),
        ("qconcat", [[x, y]], cat_p),
        ("qmul", [x, y], mul_p),
        ("qlut", [x, table], lut_p),
    ]
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "int16"))
    xn = relax.Var("x_nhwc", relax.TensorType(x_nhwc.shape, "int16"))
    xdv = relax.Var("xd", relax.TensorType(xd.shape, "int16"))
    yv = relax.Var("y", relax.TensorType(y.shape, other_dt))
    var_of = {id(x): xv, id(x_nhwc): xn, id(xd): xdv, id(y): yv}

    def operand(a):
        if isinstance(a, list):
            return [operand(t) for t in a]
        return var_of[id(a)] if id(a) in var_of else relax.const(a)

    with bb.function("main", [xv, xn, xdv, yv]):
        with bb.dataflow():
            outs = [emit_kernel(bb, name, [operand(a) for a in args], params, opaque=True)
                    for name, args, params in calls]
            res = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(res)
    vm = relax.VirtualMachine(tvm.compile(ApplyDefaultSchedules()(bb.get()), target=HOST.target), tvm.cpu())
    got = [r.numpy() for r in vm["main"](*[tvm.runtime.tensor(a) for a in (x, x_nhwc, xd, y)])]
    for (name, args, params), g in zip(calls, got, strict=True):
        want = twin(name)(*args, **params)
        assert g.dtype == want.dtype == np.dtype(out_dt), name
        np.testing.assert_array_equal(g, want, err_msg=f"{name}: compiled kernel vs its twin ({case})")
    # the packed NHWC kernel and the NCHW one compute the same conv
    np.testing.assert_array_equal(got[2], got[0].transpose(0, 2, 3, 1))


def test_int16_qparams_and_product_multiplier() -> None:
    qp = choose_qparams(-1.0, 3.0, RangeKind.ONE_SIDED, "int16")
    assert qp.zero_point == 0 and qp.kind is RangeKind.SYMMETRIC and qp.dtype == "int16"
    assert qp.scale == pytest.approx(3.0 / 32767, rel=1e-6)
    assert list(qp.quantize(np.array([3.0, -3.0, 0.0, -10.0], np.float32))) == [32767, -32767, 0, -32768]
    a, b = Quant(1.0, -300, "int16"), Quant(1.0, 7, "int16")
    m0, rs = fit_product_multiplier(2**31 - 1, 62, a, b)
    bound = (32767 + 300) * (32768 + 7)
    assert bound * m0 + 2 ** (rs - 1) < 2**63 and m0 / 2.0**rs == pytest.approx((2**31 - 1) / 2.0**62, rel=1e-8)
    assert fit_product_multiplier(2**31 - 1, 40, Quant(1.0, 0, "int8"), Quant(1.0, 0, "uint8")) == (2**31 - 1, 40)


def test_int16_option_unknown_name_names_close_matches() -> None:
    mod, params, cal, _ = bad_layer_case(0)
    fmod = prepare_module(mod, params)
    with pytest.raises(ValueError, match=r"QuantConfig\(int16=\.\.\.\).*'bad_con'.*closest layer names: 'bad_conv'"):
        quantize_module(fmod, cal[:2], tvm_arq.QuantConfig(int16=("bad_con",)), "int8", progress=False)
    with pytest.raises(ValueError, match="int16 entries"):
        tvm_arq.QuantConfig(int16=("",))
    assert tvm_arq.QuantConfig(int16="conv1").int16 == ("conv1",)


@pytest.mark.slow
def test_mnist_all_int16_bit_exact_and_close_to_fp32() -> None:
    from arq_bench import zoo

    mod, params = tvm_arq.from_onnx(zoo.mnist_cnn())
    x_train, _ = zoo.mnist_train()
    x_test, _ = zoo.mnist_test()
    cal, data = list(x_train[:8]), [x[None] for x in x_test[:8]]
    m16 = tvm_arq.build(mod, params, calibration=cal, config=tvm_arq.QuantConfig(int16=(".*",)), progress=False)
    assert {q.dtype for q in m16.qparams.values()} == {"int16"} and not m16.fallbacks
    rep = verify_host(debug_build(m16), data[0], export=False)
    assert all(c.ok for c in rep.checks), [c for c in rep.checks if not c.ok][:3]
    vm = compile_host(prepare_module(mod, params))
    ref = [vm["main"](tvm.runtime.tensor(x)).numpy() for x in data]
    rel = [np.sum((np.asarray(m16.run(x)) - r) ** 2) / np.sum(r**2) for x, r in zip(data, ref, strict=True)]
    assert float(np.mean(rel)) < 5e-4  # the int8 weights dominate; int8 activations: see results/int16.md


@pytest.fixture(scope="module")
def bad_int16() -> tuple:
    """The bad-layer model quantized (the host's 8-bit storage) with bad_conv in int16, and one held-out sample."""
    mod, params, cal, held_out = bad_layer_case(1)
    res = quantize_module(prepare_module(mod, params), cal[:4], tvm_arq.QuantConfig(int16=("bad_conv",)), HOST_ACT,
                          progress=False)
    return res, held_out[0]


def test_int8_int16_boundaries_bit_exact(bad_int16) -> None:
    """bad_conv in int16: conv1 writes int16 from an 8-bit input, bad_conv reads and writes int16, conv3 reads
    int16 and writes 8-bit; the converted program (NHWC kernels) is bit-exact against the reference."""
    res, x = bad_int16
    dt = {k: v.dtype for k, v in res.qparams.items()}
    assert sorted(dt.values()) == sorted(["int16", "int16", HOST_ACT, HOST_ACT]), dt  # bad_conv's input and output
    rep = verify_host(debug_build(res.int_mod, "host", host_copy=True), x, export=False)  # scheduled: MNIST test
    assert all(c.ok for c in rep.checks) and len(rep.checks) >= 4


def test_int16_layout_code_for_an_int8_dot_product_target(bad_int16) -> None:
    """On aarch64-dotprod (8-bit layers on sdot's int8 domain), the int16 layer takes the intrinsic-free
    configuration: the converted program, compiled for this machine, is bit-exact against the reference."""
    res, x = bad_int16
    prog = debug_build(res.int_mod, "aarch64-dotprod", host_copy=True)
    domains = {json.loads(str(f.attrs["arq.params"])).get("domain_dtype") for f in prog.converted.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
               and str(f.attrs.get("arq.op", "")) == "qconv2d_nhwc_packed"}
    assert domains == {"int8", "int16"}
    rep = verify_host(prog, x, export=False)
    assert all(c.ok for c in rep.checks)


@pytest.mark.parametrize(("target", "widening"), [
    ("aarch64-dotprod", ("smlal", "smlal2")), ("riscv64-rvv", ("vwmacc.vv",)), ("x86-vnni", ("vpmaddwd", "vpmulld")),
])
def test_int16_packed_conv_uses_widening_multiply_adds(bad_int16, target: str, widening: tuple[str, ...]) -> None:
    """bad_conv's int16 packed conv kernel compiled for ``target``: sign-extended int16 x int8 products become the
    target's widening multiply-adds (seen: x86 vpmaddwd or vpmovsxwd + vpmulld, AArch64 smlal/smlal2, RVV
    vwmacc.vv after vsext.vf2)."""
    from tests.test_codegen import asm_of, mnemonics
    from tvm_arq.backends import apply_default_schedule
    from tvm_arq.passes.layout import convert_layout

    info = resolve_target(target)
    lm = convert_layout(bad_int16[0].int_mod, get_backend(info).layout_plan())
    gv, f = next((gv, f) for gv, f in lm.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
                 and f.attrs is not None and str(f.attrs.get("arq.op", "")) == "qconv2d_nhwc_packed"
                 and json.loads(str(f.attrs["arq.params"]))["domain_dtype"] == "int16")
    ex = tvm.compile(tvm.IRModule({gv.name_hint: apply_default_schedule(f).with_attr("global_symbol", gv.name_hint)}),
                     target=info.target)
    assert set(widening) & mnemonics(asm_of(ex)), target


def test_int16_input_that_could_overflow_the_accumulator_stays_8bit() -> None:
    """A 3x3 conv over 64 channels of full-scale weights: 576 * 127 * 32768 > 2**31, so its input stays 8-bit
    (its output, read by nothing else, is int16)."""
    w = numpy_helper.from_array(np.ones((4, 64, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="big", pads=[1, 1, 1, 1])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    mod, params = tvm_arq.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    cal = [np.random.default_rng(i).normal(0, 1, (1, 64, 4, 4)).astype(np.float32) for i in range(2)]
    res = quantize_module(prepare_module(mod, params), cal, tvm_arq.QuantConfig(int16=(".*",)), "int8",
                          progress=False)
    assert {k: v.dtype for k, v in res.qparams.items()} == {"x": "int8", "big": "int16"}


def test_cli_build_int16(tmp_path) -> None:
    from tests.test_sensitivity import _bad_layer_model
    from tvm_arq import cli

    _, _, cal, _ = bad_layer_case(0)
    onnx.save(_bad_layer_model(), tmp_path / "bad.onnx")
    np.save(tmp_path / "cal.npy", np.concatenate(cal[:4]))
    assert cli.main(["build", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "bad.so"), "--calibration",
                     str(tmp_path / "cal.npy"), "--int16", "bad_conv", "--qparams", str(tmp_path / "q.json")]) == 0
    text = (tmp_path / "q.json").read_text()
    assert text.count('"int16"') == 2
