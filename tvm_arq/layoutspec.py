"""Kernel configurations a target chooses (packed conv, depthwise) and the layout plan built from them.

Plain frozen dataclasses at the bottom of the layer stack: the op kernels and the layout conversion read
them, the target backends create them, the MetaSchedule rules are keyed by their ``rule`` names.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``op_pattern`` of scheduled kernels: opaque, so FuseOps never merges them with neighbours
OPAQUE = 8


@dataclass(frozen=True)
class PackedConvTarget:
    """How a target runs the packed conv kernel.

    Attributes
    ----------
    rule
        Name of the MetaSchedule custom rule (block annotation value).
    lanes, kgroup
        Weight packing ``[O/lanes, KH, KW, C/kgroup, lanes, kgroup]``.
    domain_dtype
        Activation dtype the dot product takes (``uint8`` for VNNI, ``int8`` for ``sdot``).
    intrin
        Tensor intrinsic for a ``[sub_lanes, kgroup]`` block, or ``None`` to vectorize the lanes
        (LLVM picks the widening multiply-accumulate, e.g. RISC-V ``vwmacc``).
    sub_lanes
        Output channels per intrinsic call.
    acc_budget
        Accumulator blocks of ``lanes`` channels that fit the register file with room to spare.
    max_tile_w
        Largest output-column tile sampled by the tuner.
    epilogue_vector
        Vector width of the requantization epilogue.
    vectorize_pad
        Vectorize the padding stage (off for RISC-V V, where TVM 0.27's codegen rejects it next to a
        vectorized consumer: "lanes_match").
    """

    rule: str
    lanes: int
    kgroup: int
    domain_dtype: str | None
    intrin: str | None
    sub_lanes: int
    acc_budget: int
    max_tile_w: int
    epilogue_vector: int = 16
    vectorize_pad: bool = True


@dataclass(frozen=True)
class DepthwiseTarget:
    """How a target runs the NHWC depthwise kernel (vectorized along channels)."""

    rule: str
    max_vector: int
    acc_budget: int
    vectorize_pad: bool = True
    #: the int32 requantization epilogue (``requant32``) where it is exact; ``False`` keeps the int64 one
    int32_epilogue: bool = True


@dataclass(frozen=True)
class LayoutPlan:
    """Kernels a target uses.

    Attributes
    ----------
    conv
        Packed conv configuration (tensorized when it has an intrinsic).
    conv_fallback
        Configuration used when shifting the activation into ``conv.domain_dtype`` could overflow.
    depthwise
        Depthwise configuration.
    """

    conv: PackedConvTarget
    conv_fallback: PackedConvTarget
    depthwise: DepthwiseTarget


__all__ = ["OPAQUE", "DepthwiseTarget", "LayoutPlan", "PackedConvTarget"]
