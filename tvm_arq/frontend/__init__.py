"""ONNX frontend: load, simplify and import float CNNs into Relax (TVM 0.27).

The pipeline is

1. :func:`load_onnx` (:mod:`.loader`) reads a path, bytes or ``onnx.ModelProto`` and checks that it
   is a structurally sound ONNX model (truncated or foreign files raise
   :class:`FrontendError`).
2. :func:`simplify_onnx` (:mod:`.simplify`) fixes the input shapes (:mod:`.shapes`) and simplifies the
   ONNX graph with the project's own passes (no onnxruntime): shape inference, constant folding
   (including ``Shape``/``Size`` of statically shaped tensors) to a fixed point,
   ``Conv``+``BatchNormalization`` folding, standalone ``BatchNormalization`` to
   ``Mul``+``Add``, zero ``Pad`` folded into the following ``Conv``, and removal of
   ``Identity``/``Dropout``.
3. :func:`from_onnx` (:mod:`.onnx_import`) imports the simplified model with
   ``tvm.relax.frontend.onnx.from_onnx(..., keep_params_in_input=True)``, detaches
   the weights and canonicalizes ``Clip`` (which TVM 0.27 imports as ``call_tir``
   of TOPI ``maximum``/``minimum`` kernels) into ``R.clip``/``R.nn.relu`` (:mod:`.canonicalize`).

The returned module's ``main`` takes the data inputs first and then one parameter per
weight; :func:`bind_params` (:mod:`.params`) binds the weights back as constants.
"""

from .canonicalize import canonicalize_clip
from .loader import FrontendError, ModelLike, load_onnx
from .onnx_import import from_onnx, model_qparams
from .params import bind_params, prepare_module
from .qdq import ModelQuant, QDQError
from .shapes import ShapeLike
from .simplify import MAX_FOLD_BYTES, simplify_onnx

__all__ = [
    "FrontendError",
    "MAX_FOLD_BYTES",
    "ModelLike",
    "ModelQuant",
    "QDQError",
    "ShapeLike",
    "bind_params",
    "canonicalize_clip",
    "from_onnx",
    "load_onnx",
    "model_qparams",
    "prepare_module",
    "simplify_onnx",
]
