"""Re-export of :mod:`tvm_arq.ops.elementwise` (lookup-table regions live with the op registry)."""

from ..ops.elementwise import (
    EVALUATORS,
    Region,
    evaluate,
    grow_region,
    lut_table,
    nonneg_on_probe,
    saturation_interval,
)

__all__ = ["EVALUATORS", "Region", "evaluate", "grow_region", "lut_table", "nonneg_on_probe", "saturation_interval"]
