"""Constant padding in the integer domain (``qpad``): the pad value quantized with the input's parameters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax

from .common import TO_NHWC, RealizeContext, pad_const, pad_np, pass_check
from .registry import (
    Agnostic,
    Kind,
    PlanRule,
    Quant,
    Stage,
    emit_kernel,
    register_kernel,
    register_layout,
    register_plan,
    register_realize,
    register_reference,
)


def _pad_ok(b, shp) -> str:
    if str(b.value.attrs.pad_mode) != "constant":
        return f"pad mode {b.value.attrs.pad_mode} (only constant)"
    return ""


register_plan(PlanRule(("relax.nn.pad",), Kind.PASS, check=pass_check(_pad_ok)))


@register_realize(Stage.PASS, ops=("relax.nn.pad",))
def realize_pad(ctx: RealizeContext, call: relax.Call, x, qin: Quant, out: Quant):
    a = call.attrs
    qlo, qhi = out.range
    pw = [int(v) for v in a.pad_width]
    pads = [[pw[2 * i], pw[2 * i + 1]] for i in range(len(pw) // 2)]
    value = int(np.clip(qin.zp + np.rint(np.float32(float(a.pad_value)) / np.float32(qin.scale)), qlo, qhi))
    return emit_kernel(ctx.bb, "qpad", [x], {"pads": pads, "value": value})


@register_kernel("qpad")
def qpad(x, *, pads: Sequence[Sequence[int]], value: int):
    """Constant padding in the integer domain: ``value`` is the quantized pad value (the zero point for
    a real 0)."""
    return pad_const(x, [tuple(p) for p in pads], value, name="qpad")


@register_reference("qpad")
def qpad_np(x, *, pads, value):
    return pad_np(x, [tuple(p) for p in pads], value)


register_layout("qpad", Agnostic(lambda p: {**p, "pads": [p["pads"][i] for i in TO_NHWC]}))

__all__ = ["qpad", "qpad_np"]
