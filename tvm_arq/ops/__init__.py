"""Integer op families and their registry (:mod:`tvm_arq.ops.registry`).

Importing this package registers every family; one module per family holds its planner rule, realize
function, TE kernels (NCHW and target layouts), numpy twins and layout behaviour. To add an op: write
one module like :mod:`tvm_arq.ops.mul` and import it here.
"""

from . import (  # noqa: F401  (imported for their registrations)
    add,
    concat,
    conv,
    conv_nhwc,
    conv_transpose,
    depthwise,
    divide,
    lut,
    matmul,
    movement,
    mul,
    norm,
    pad,
    pool,  # before reduce: its realize rule takes the H, W mean first
    qdq,
    reduce,
    resize,
    softmax,
    sub,
)
from .reference import ReferenceInterpreter
from .registry import REGISTRY, Role, emit_kernel

__all__ = ["REGISTRY", "ReferenceInterpreter", "Role", "emit_kernel"]
