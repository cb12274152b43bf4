"""Every supported op in one graph: every integer tensor of TVM's build == numpy reference, bit for bit.

The random graphs (Hypothesis strategies over every op, non-degenerate, on the shipped NHWC program) are in
``tests/test_random_graphs.py``.
"""

from __future__ import annotations

import tvm

from tests.graphs import OPS, Spec, build_graph, calibration_set
from tvm_arq.config import QuantConfig, Scheme
from tvm_arq.quantize import quantize_module
from tvm_arq.verify import debug_build, verify_host


def _check(spec: Spec, scheme: Scheme, act_dtype: str):
    mod = build_graph(spec)
    cal = calibration_set(mod, 4, seed=spec.seed, skew=0.7)
    res = quantize_module(mod, cal, QuantConfig(scheme=scheme), act_dtype, progress=False)
    assert not res.plan.fallbacks, res.plan.fallbacks
    # every integer tensor of the compiled program, not only the (averaged, dequantized) output
    program = debug_build(res.int_mod, "host", layout=False)
    for x in cal[:2] + calibration_set(mod, 1, seed=spec.seed + 99, skew=-0.5):
        verify_host(program, x, export=False).assert_ok()
    return res


def test_every_op_in_one_graph():
    spec = Spec(channels=4, size=8, ops=list(OPS[:-1]), seed=3, act="relu6", softmax=True)
    res = _check(spec, Scheme.HYBRID, "int8")
    kernels = {str(f.attrs["arq.op"]) for f in res.int_mod.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs}
    assert {"qconv2d", "qdense", "qadd", "qconcat", "qmaxpool2d", "qavgpool2d", "qmean_hw", "quantize",
            "dequantize", "qlut", "qmul", "qsoftmax", "qpad"} <= kernels
    assert kernels & {"qresize_nearest", "qresize_bilinear"}


def test_asymmetric_scheme_bitexact():
    _check(Spec(channels=3, size=6, ops=["conv", "dwconv", "add", "avgpool"], seed=5, act="clip_sym"),
           Scheme.ASYMMETRIC, "uint8")
