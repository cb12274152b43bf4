"""``relax.dpl`` patterns of the quantize/dequantize (QDQ) graph, declared once.

``RealizeInteger`` matches these on the annotated module; each match becomes one integer kernel.
"""

from __future__ import annotations

from tvm.relax.dpl import is_const, is_op, wildcard


def dq(x):
    """``dequantize(x, const scale, const zero_point)``."""
    return is_op("relax.dequantize")(x, is_const(), is_const())


# operands
X = wildcard()          # quantized activation (int8/uint8)
Y = wildcard()          # second quantized activation (add)
W = is_const()          # int8 weight constant
BIAS = is_const()       # float bias constant
Q_SCALE = is_const()
Q_ZP = is_const()

DQ_X = dq(X)
DQ_Y = dq(Y)
DQ_W = dq(W)

CONV = is_op("relax.nn.conv2d")(DQ_X, DQ_W)
DENSE = is_op("relax.matmul")(DQ_X, DQ_W)
ANCHOR = CONV | DENSE
BIASED = is_op("relax.add")(ANCHOR, BIAS) | is_op("relax.add")(BIAS, ANCHOR)
LINEAR = BIASED | ANCHOR


def _activation(inner):
    relu = is_op("relax.nn.relu")(inner)
    clip = is_op("relax.clip")(inner, wildcard(), wildcard())  # ReLU6 imports as clip(0, 6)
    return relu, clip


RELU, CLIP = _activation(LINEAR)
#: quantize(act?(add?(conv2d|matmul(dequantize(x), dequantize(w)), bias)))
QLINEAR = is_op("relax.quantize")(RELU | CLIP | LINEAR, Q_SCALE, Q_ZP)

ADD = is_op("relax.add")(DQ_X, DQ_Y)
ADD_RELU, ADD_CLIP = _activation(ADD)
#: quantize(act?(add(dequantize(a), dequantize(b))))
QADD = is_op("relax.quantize")(ADD_RELU | ADD_CLIP | ADD, Q_SCALE, Q_ZP)

#: quantize(<unary op>(dequantize(x), ...)) for pooling, reshape and standalone activations
UNARY = wildcard()
QUNARY = is_op("relax.quantize")(UNARY, Q_SCALE, Q_ZP)

#: dequantize(x) of an activation (the weight dequantizes die with their float ops)
DQ_ACT = dq(X)
QUANTIZE = is_op("relax.quantize")(wildcard(), Q_SCALE, Q_ZP)
