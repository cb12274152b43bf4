"""``AnnotateQuantization``: make the quantization decision visible in the IR.

Every tensor computed in the integer domain gets a ``quantize -> dequantize`` pair carrying its scale,
zero point and storage dtype; conv2d / dense weights become ``dequantize(int8 constant, per-channel
scale, 0)``.  The result still runs in float (fake quantization), which is what ``RealizeInteger``
pattern-matches and lowers to integer kernels.

**Bias correction.** Rounding the weights of a channel shifts its output by ``sum_k (Q(w_k) - w_k) x_k``,
whose expectation ``sum_k (Q(w_k) - w_k) E[x_k]`` is not zero when the input has a non-zero mean (every
ReLU6 output has one). Given the calibrated per-channel means of an anchor's input, that expected shift is
subtracted from the layer's float bias (Nagel et al., "Data-Free Quantization Through Weight Equalization
and Bias Correction", ICCV 2019, empirical variant). It is a compile-time constant: it ends up in the int32
bias like the zero-point terms, so the integer kernels are unchanged. Padding is treated as if it carried
the channel mean (a border approximation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from ..frontend.naming import layer_of
from ..ops.irutil import Binding, Rebuilder
from ..ops.registry import REGISTRY, PlanRule
from ..qmath import QParams, quantize_weights_per_channel
from .analysis import QuantPlan, Role
from .fixed import model_weights


def qdq(bb: relax.BlockBuilder, x: relax.Expr, qp: QParams, name: str, switch: relax.Expr | None = None
        ) -> relax.Var:
    """Emit ``dequantize(quantize(x))`` with the tensor's parameters; return the dequantized var.

    ``switch`` (a ``[1]`` float tensor holding 0 or 1): emit ``x + switch * (qdq(x) - x)`` instead, the
    fake quantization turned on or off at run time (see :class:`Switches`).
    """
    s = relax.const(np.float32(qp.scale), "float32")
    z = relax.const(qp.zero_point, qp.dtype)
    q = bb.emit(R.quantize(x, s, z, axis=-1, out_dtype=qp.dtype), name + "_q")
    dq = bb.emit(R.dequantize(q, s, z, axis=-1, out_dtype="float32"), name + "_dq")
    return dq if switch is None else bb.emit(_blend(x, dq, switch), name + "_sw")


def _blend(off: relax.Expr, on: relax.Expr, switch: relax.Expr) -> relax.Expr:
    return R.add(off, R.multiply(switch, R.subtract(on, off)))


@dataclass(frozen=True)
class Switches:
    """Run-time switches of a fake-quantized module (:class:`AnnotateQuantization` with ``switches``).

    The module gets one more parameter, ``SWITCHES`` (float32 ``[size]``); element ``points[p]`` turns the
    fake quantization of point ``p`` on (1) or off (0), element ``weights[layer]`` the weight rounding (and
    bias correction) of a conv / dense layer. One compiled module then evaluates any mix of quantized and
    float layers (:func:`tvm_arq.sensitivity.sensitivity`).
    """

    points: Mapping[str, int]
    weights: Mapping[str, int]

    @property
    def size(self) -> int:
        return 1 + max([*self.points.values(), *self.weights.values(), 0])


#: name of the switches parameter
SWITCHES = "arq_switches"


def weight_shift(w: np.ndarray, w_hat: np.ndarray, input_mean: np.ndarray, rule: PlanRule, call: relax.Call
                 ) -> np.ndarray:
    """Expected output shift per output channel caused by replacing weights ``w`` by ``w_hat``.

    ``sum_k (w_hat - w)[o, k] * E[x_k]`` with ``E[x]`` per input channel (``input_mean``), as the anchor
    op's plan rule (``rule.weight_shift``) contracts the weight error of ``call``.
    """
    d = w_hat.astype(np.float64) - w.astype(np.float64)
    m = np.asarray(input_mean, np.float64).reshape(-1)
    return rule.weight_shift(d, m, call)


def dq_weight(w: np.ndarray, axis: int, fixed: tuple[np.ndarray, np.ndarray] | None = None) -> relax.Expr:
    """``dequantize(int8 weights, per-channel scales, 0)``: quantized here, or the model's own (``fixed``)."""
    qw, scales = fixed if fixed is not None else quantize_weights_per_channel(w, axis=axis)
    return R.dequantize(
        relax.const(qw, "int8"),
        relax.const(scales, "float32"),
        relax.const(np.zeros(scales.shape, np.int8), "int8"),
        axis=axis,
        out_dtype="float32",
    )


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.AnnotateQuantization")
class AnnotateQuantization:
    """Insert quantize/dequantize pairs according to a plan and calibrated parameters.

    Parameters
    ----------
    plan
        From :func:`~tvm_arq.passes.analysis.plan_quantization` on the same module.
    qparams
        Parameters of every quantization point (``plan.points``).
    input_means
        Optional per-channel means of the data inputs of conv2d / dense anchors over the calibration set,
        keyed by the input tensor's name (see :class:`~tvm_arq.quantize.ChannelMean`). Given,
        the expected output shift of the weight rounding is removed from the anchor's bias (bias
        correction, see the module docstring). Anchors without a bias add are left as they are.
    weight_scales
        Optional weight scales of a pre-quantized model per layer name (:func:`~tvm_arq.passes.fixed.plan_fixed`):
        those anchors take the model's integer weights (:func:`~tvm_arq.passes.fixed.model_weights`).
    switches
        Optional :class:`Switches`: ``main`` gets the parameter ``SWITCHES`` and every quantize/dequantize
        pair and weight rounding listed there can be turned off at run time (not for :class:`RealizeInteger`:
        a fake-quantized module to compile in float).
    """

    def __init__(self, plan: QuantPlan, qparams: dict[str, QParams],
                 input_means: dict[str, np.ndarray] | None = None,
                 weight_scales: dict[str, np.ndarray] | None = None, switches: Switches | None = None):
        missing = [p for p in plan.points if p not in qparams]
        if missing:
            raise KeyError(f"no quantization parameters for {missing[:5]}")
        self.plan = plan
        self.qparams = qparams
        self.input_means = input_means or {}
        self.weight_scales = weight_scales or {}
        self.switches = switches

    def _qp(self, name: str) -> QParams:
        return self.qparams[self.plan.qsource[name]]

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        plan = self.plan
        var2val = relax.analysis.get_var2val(mod["main"])
        # group output -> (anchor binding, its plan rule, expected shift to remove from the bias add)
        shifts: dict[str, tuple[Binding, PlanRule, np.ndarray]] = {}
        sw = self.switches
        flags: dict[int, relax.Var] = {}
        if sw is not None:
            f = mod["main"]
            param = relax.Var(SWITCHES, relax.TensorType([sw.size], "float32"))
            mod = tvm.IRModule({**{gv: fn for gv, fn in mod.functions.items() if gv.name_hint != "main"},
                                "main": relax.Function([*f.params, param], f.body, f.ret_ty,
                                                       attrs=f.attrs)}, attrs=mod.attrs)

        def switch(rb: Rebuilder, index: int | None) -> relax.Expr | None:
            if index is None:
                return None
            if index not in flags:
                flags[index] = rb.bb.emit(R.strided_slice(rb.env[SWITCHES], axes=[0], begin=[index], end=[index + 1]),
                                          f"{SWITCHES}_{index}")
            return flags[index]

        def point_switch(rb: Rebuilder, name: str) -> relax.Expr | None:
            return None if sw is None else switch(rb, sw.points.get(self.plan.qsource[name]))

        def weight_switch(rb: Rebuilder, name: str) -> relax.Expr | None:
            return None if sw is None else switch(rb, sw.weights.get(layer_of(name)))

        def on_start(rb: Rebuilder):
            for p in rb.func.params:
                if plan.is_int(p.name):
                    rb.env[p.name] = qdq(rb.bb, rb.env[p.name], self._qp(p.name), p.name, point_switch(rb, p.name))

        def on_binding(rb: Rebuilder, b, value):
            op_plan = plan.ops.get(b.name)
            if op_plan is not None and op_plan.role is Role.ANCHOR:
                rule = REGISTRY.plan_rule(b.op)
                w = value.args[1].value.numpy()
                axis = rule.weight_axis
                x = b.value.args[0]  # the original (float) input: means are keyed by its name
                mean = self.input_means.get(x.name) if isinstance(x, relax.Var) else None
                if mean is not None:
                    qw, scales = quantize_weights_per_channel(w, axis=axis)
                    shape = [1] * w.ndim
                    shape[axis] = -1
                    shifts[op_plan.group_output] = (b, rule, weight_shift(
                        w, qw.astype(np.float32) * scales.reshape(shape), np.asarray(mean), rule, value))
                fixed = None
                if layer_of(b.name) in self.weight_scales:
                    fixed = model_weights(w, axis, self.weight_scales[layer_of(b.name)], layer_of(b.name))
                wq = dq_weight(w, axis, fixed)
                flag = weight_switch(rb, b.name)
                if flag is not None:
                    wq = _blend(value.args[1], wq, flag)
                value = relax.Call(value.op, [value.args[0], wq], value.attrs, value.ty_args)
            elif op_plan is not None and op_plan.role is Role.EPILOGUE and op_plan.group_output in shifts:
                anchor, rule, shift = shifts[op_plan.group_output]
                if rule.bias is not None and rule.bias(anchor, b, var2val):  # the group's bias add
                    value = _corrected_bias(value, shift, weight_switch(rb, anchor.name))
                    del shifts[op_plan.group_output]
            quantized_here = plan.is_int(b.name) and not (
                op_plan is not None and op_plan.role in (Role.ANCHOR, Role.EPILOGUE) and op_plan.group_output != b.name
            )
            if not quantized_here:
                return value
            v = rb.bb.emit(value, b.name)
            return qdq(rb.bb, v, self._qp(b.name), b.name, point_switch(rb, b.name))

        return Rebuilder(mod).run(on_binding, on_start=on_start)


def _corrected_bias(add: relax.Call, shift: np.ndarray, switch: relax.Expr | None = None) -> relax.Call:
    """The bias add ``add`` of a group with ``shift`` subtracted from its constant operand (blended with
    the uncorrected one by ``switch`` when given)."""
    args = list(add.args)
    k = next((i for i, a in enumerate(args) if isinstance(a, tvm.ir.expr.Constant)), None)
    if k is None:  # bias bound through a var: leave it (the planner accepts only constants anyway)
        return add
    c = args[k].value.numpy()
    new = (c.astype(np.float64) - shift.reshape(c.shape)).astype(c.dtype)
    args[k] = relax.const(new, str(c.dtype)) if switch is None else _blend(args[k], relax.const(new, str(c.dtype)),
                                                                            switch)
    return relax.Call(add.op, args, add.attrs, add.ty_args)
