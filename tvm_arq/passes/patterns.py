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

#: quantize(multiply(dequantize(a), dequantize(b))): element-wise product (squeeze-excitation)
MUL = is_op("relax.multiply")(DQ_X, DQ_Y)
QMUL = is_op("relax.quantize")(MUL, Q_SCALE, Q_ZP)

#: quantize(softmax(dequantize(x)))
SOFTMAX = is_op("relax.nn.softmax")(DQ_X)
QSOFTMAX = is_op("relax.quantize")(SOFTMAX, Q_SCALE, Q_ZP)


# -- named activations -----------------------------------------------------------------------------
# The lookup-table regions are found structurally (:mod:`tvm_arq.passes.elementwise`); these patterns
# only *name* them (plan, kernel attributes, report). ``x`` is the region's input (any expression),
# so the same patterns name a region in the float graph and in the annotated graph.


def _c():
    return is_const()


def _comm(op: str, a, b):
    return is_op(op)(a, b) | is_op(op)(b, a)


def _clip(e):
    return is_op("relax.clip")(e, wildcard(), wildcard())


def activation_patterns(x) -> list[tuple[str, object]]:
    """``(name, pattern)`` of the activations the ONNX importer decomposes, most specific first."""
    sig = is_op("relax.sigmoid")(x)
    relu6_shift = _clip(_comm("relax.add", x, _c()))                       # clip(x + 3, 0, 6)
    hsig_affine = _clip(_comm("relax.add", _comm("relax.multiply", x, _c()), _c()))  # clip(a*x + b, 0, 1)
    hsig_div = is_op("relax.divide")(relu6_shift, _c()) | _comm("relax.multiply", relu6_shift, _c())  # relu6(x+3)/6
    return [
        ("silu", _comm("relax.multiply", x, sig) | is_op("relax.nn.silu")(x)),
        ("hardswish", is_op("relax.divide")(_comm("relax.multiply", x, relu6_shift), _c())),
        ("hardswish", _comm("relax.multiply", x, hsig_div | hsig_affine)),
        ("hardswish", _comm("relax.multiply", _comm("relax.multiply", x, relu6_shift), _c())),
        ("hard_sigmoid", hsig_affine | hsig_div),
        ("sigmoid", sig),
        ("tanh", is_op("relax.tanh")(x)),
        ("leaky_relu", is_op("relax.nn.leakyrelu")(x)),
        ("prelu", is_op("relax.nn.prelu")(x, _c())),
        ("gelu", is_op("relax.nn.gelu")(x) | is_op("relax.nn.gelu_tanh")(x)),
        ("mish", _comm("relax.multiply", x, is_op("relax.tanh")(is_op("relax.nn.softplus")(x)))),
    ]


ACTIVATIONS = activation_patterns(wildcard())


def activation_name(expr, var2val) -> str | None:
    """Name of the activation computed by ``expr`` (the region's output value), if recognized."""
    for name, pat in ACTIVATIONS:
        if pat.match(expr, var2val):
            return name
    return None
