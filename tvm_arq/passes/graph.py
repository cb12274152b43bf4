"""Re-export of :mod:`tvm_arq.ops.irutil` (the IR helpers live below the passes, with the op registry)."""

from ..ops.irutil import (
    Binding,
    Rebuilder,
    bindings_of,
    check_unique_names,
    const_value,
    tensor_dtype,
    tensor_shape,
    uses,
    var_names,
)

__all__ = ["Binding", "Rebuilder", "bindings_of", "check_unique_names", "const_value", "tensor_dtype",
           "tensor_shape", "uses", "var_names"]
