"""Binding detached weights back into a Relax function as constants."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

__all__ = ["bind_params", "prepare_module"]


def bind_params(
    mod: tvm.IRModule,
    params: Mapping[str, np.ndarray | tvm.runtime.Tensor],
    func_name: str = "main",
) -> tvm.IRModule:
    """Bind weight values to the parameters of ``func_name`` as constants.

    Parameters
    ----------
    mod : tvm.IRModule
        A module such as the one returned by :func:`from_onnx`.
    params : dict of str to numpy.ndarray or tvm.runtime.Tensor
        Values keyed by parameter name. Every key must name a parameter of the
        function whose shape and dtype match.
    func_name : str
        The function whose parameters are bound.

    Returns
    -------
    tvm.IRModule
        The module whose ``func_name`` takes only the remaining (data) parameters.

    Raises
    ------
    KeyError
        If a key names no parameter.
    ValueError
        If a value's shape or dtype does not match the parameter.
    """
    func = mod[func_name]
    by_name = {p.name: p for p in func.params}
    binding: dict[relax.Var, tvm.runtime.Tensor] = {}
    for key, value in params.items():
        var = by_name.get(key)
        if var is None:
            raise KeyError(f"{func_name} has no parameter named {key!r}")
        tensor = (
            value
            if isinstance(value, tvm.runtime.Tensor)
            else tvm.runtime.tensor(np.ascontiguousarray(value))
        )
        ty = var.ty
        want_shape = [int(d) for d in ty.shape] if getattr(ty, "shape", None) is not None else None
        if want_shape is not None and list(tensor.shape) != want_shape:
            raise ValueError(
                f"parameter {key!r} expects shape {tuple(want_shape)}, got {tuple(tensor.shape)}"
            )
        if str(tensor.dtype) != str(ty.dtype):
            raise ValueError(f"parameter {key!r} expects dtype {ty.dtype}, got {tensor.dtype}")
        binding[var] = tensor
    return relax.transform.BindParams(func_name, binding)(mod)


def prepare_module(mod: tvm.IRModule, params: Mapping[str, np.ndarray] | None) -> tvm.IRModule:
    """Bind weights as constants and fold constant subexpressions (e.g. transposed Gemm weights).

    This is the float module every quantization step plans on (``build``, ``sensitivity``).
    """
    if params:
        mod = bind_params(mod, params)
    mod = relax.transform.FoldConstant()(mod)
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    return mod
