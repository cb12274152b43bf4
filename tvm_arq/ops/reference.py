"""Numpy integer reference interpreter.

Runs an integer Relax module (the output of :class:`~tvm_arq.passes.RealizeInteger`, or of the layout
conversion) without TVM's code generation: every ``call_tir`` to one of our kernels is replayed by the
numpy twin registered under the same kernel name (:data:`~tvm_arq.ops.registry.REGISTRY`, same constants
read from the PrimFunc's ``arq.params``), computed independently with int64 arithmetic and explicit zero
points; plain Relax ops of the integer module (reshape, slicing, ...) by their registered numpy versions.
The TVM build must match it bit for bit.

Ops left in float (fallbacks) are evaluated by compiling that single Relax op for the host: they are
outside the integer contract and are not part of the bit-exactness check.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from .irutil import bindings_of
from .registry import REGISTRY

logger = logging.getLogger(__name__)


class ReferenceInterpreter:
    """Interpret the integer module's ``main`` with numpy.

    Parameters
    ----------
    mod
        Output of :class:`~tvm_arq.passes.RealizeInteger` (before any TVM lowering).
    float_cache
        Compiled float ops, keyed by the structure of the one-op function (its operands are parameters): pass
        the same dict to several interpreters to compile each distinct float op once (one thread at a time).
    """

    def __init__(self, mod: tvm.IRModule, float_cache: dict | None = None):
        self.mod = mod
        self.func = mod["main"]
        self._float_cache: dict = {} if float_cache is None else float_cache
        self.unsupported_calls: list[str] = []

    def _eval(self, expr, env):
        if isinstance(expr, relax.Var):
            return env[expr.name]
        if isinstance(expr, tvm.ir.expr.Constant):
            return expr.value.numpy()
        if isinstance(expr, relax.Tuple):
            return tuple(self._eval(f, env) for f in expr.fields)
        if isinstance(expr, relax.TupleGetItem):
            return self._eval(expr.tuple_value, env)[expr.index]
        if isinstance(expr, relax.Call):
            return self._call(expr, env)
        raise NotImplementedError(f"reference: cannot evaluate {type(expr).__name__}")

    def _call(self, call: relax.Call, env):
        opname = call.op.name if isinstance(call.op, tvm.ir.Op) else None
        if opname == "relax.call_tir":
            gvar = call.args[0]
            prim = self.mod[gvar]
            attrs = prim.attrs
            if attrs is None or "arq.op" not in attrs:
                raise NotImplementedError(f"reference: call_tir to {gvar.name_hint} is not a tvm_arq kernel")
            kernel = REGISTRY.kernel(str(attrs["arq.op"]))
            params = json.loads(str(attrs["arq.params"]))
            args = [self._eval(a, env) for a in call.args[1].fields]
            # kernels taking a list of tensors (add, concat) received them flattened by emit_te
            if kernel.tensor_list:
                return kernel.reference(args, **params)
            return kernel.reference(*args, **params)
        fn = REGISTRY.relax_reference.get(opname)
        if fn is not None:
            return fn(call, lambda e: self._eval(e, env))
        return self._float_op(call, env)

    def _float_op(self, call: relax.Call, env):
        """Evaluate a float fallback op by compiling it alone for the host (outside the int contract)."""
        args = []
        params = []
        new_args = []
        for i, a in enumerate(call.args):
            if isinstance(a, relax.Var | relax.Call | relax.Tuple | relax.TupleGetItem) and hasattr(a, "ty") and \
                    isinstance(a.ty, relax.TensorType):
                v = relax.Var(f"a{i}", a.ty)
                params.append(v)
                new_args.append(v)
                args.append(self._eval(a, env))
            else:
                new_args.append(a)
        bb = relax.BlockBuilder()
        with bb.function("main", params):
            out = bb.emit(relax.Call(call.op, new_args, call.attrs, call.ty_args))
            bb.emit_func_output(out)
        one_op = bb.get()
        key = tvm_ffi.structural_hash(one_op["main"])
        if key not in self._float_cache:
            ex = tvm.compile(one_op, target="llvm")
            self._float_cache[key] = relax.VirtualMachine(ex, tvm.cpu())
        vm = self._float_cache[key]
        res = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args])
        if hasattr(res, "numpy"):
            return res.numpy()
        return tuple(r.numpy() for r in res)

    def run(self, *inputs: np.ndarray):
        """The output of ``main`` for ``inputs``."""
        return self.trace(*inputs)[1]

    def trace(self, *inputs: np.ndarray, overrides: dict[str, np.ndarray] | None = None
              ) -> tuple[dict[str, object], object]:
        """(value of every parameter and binding by name, the output) of ``main`` for ``inputs``.

        ``overrides`` gives the values of some bindings instead of evaluating them (e.g. the float fallback
        tensors a compiled program computed, so that the integer tensors after them are compared on the
        same inputs).
        """
        env: dict[str, object] = {}
        for p, x in zip(self.func.params, inputs, strict=True):
            env[p.name] = np.asarray(x)
        for b in bindings_of(self.func):
            env[b.name] = overrides[b.name] if overrides and b.name in overrides else self._eval(b.value, env)
        return env, self._eval(self.func.body.body, env)


__all__ = ["ReferenceInterpreter"]
