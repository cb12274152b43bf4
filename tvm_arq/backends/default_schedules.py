"""The pass that gives every templated kernel of a module its default (untuned) schedule."""

from __future__ import annotations

import tvm
from tvm import tirx

from .registry import register_kernel_rules
from .schedules import apply_default_schedule

__all__ = ["ApplyDefaultSchedules"]


@tvm.transform.module_pass(opt_level=0, name="tvm_arq.ApplyDefaultSchedules")
class ApplyDefaultSchedules:
    """Give every templated kernel of a module its default (untuned) schedule."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        register_kernel_rules()  # templates and intrinsics (idempotent)
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc):
                new = apply_default_schedule(func)
                if new is not None:
                    updates[gv] = new
        if not updates:
            return mod
        mod = mod.clone()  # never mutate the pass input
        for gv, func in updates.items():
            mod.update_func(gv, func)
        return mod
