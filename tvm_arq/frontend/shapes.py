"""Fixing the input shapes of an ONNX model: the ``shape=`` argument, defaults for a dynamic batch."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import onnx

from .graph import dim_label, value_dims
from .loader import FrontendError

logger = logging.getLogger(__name__)

__all__ = ["ShapeLike", "fix_input_shapes"]

ShapeLike = Sequence[int] | Mapping[str, Sequence[int]] | None


def fix_input_shapes(model: onnx.ModelProto, shape: ShapeLike, name: str) -> dict[str, tuple[int, ...]]:
    """Replace dynamic input dims by static ones; return the data input shapes."""
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    # Initializers listed as graph inputs (old exporters) are constants for inference.
    if any(vi.name in init_names for vi in graph.input):
        data_inputs = [vi for vi in graph.input if vi.name not in init_names]
        del graph.input[:]
        graph.input.extend(data_inputs)
    data_inputs = list(graph.input)  # references into the graph (extend() copies)
    input_names = [vi.name for vi in data_inputs]
    if not input_names:
        raise FrontendError(f"{name} has no data inputs")

    if shape is None:
        given: dict[str, tuple[int, ...]] = {}
    elif isinstance(shape, Mapping):
        unknown = sorted(set(shape) - set(input_names))
        if unknown:
            raise FrontendError(
                f"shape= names unknown input(s) {unknown} of {name}; its inputs are {input_names}"
            )
        given = {k: tuple(int(d) for d in v) for k, v in shape.items()}
    else:
        if len(input_names) != 1:
            raise FrontendError(
                f"{name} has {len(input_names)} inputs {input_names}: pass shape= as a dict "
                "mapping input name to shape"
            )
        given = {input_names[0]: tuple(int(d) for d in shape)}

    result: dict[str, tuple[int, ...]] = {}
    for vi in data_inputs:
        tt = vi.type.tensor_type
        declared = value_dims(vi)
        if vi.name in given:
            new = given[vi.name]
            if any(d <= 0 for d in new):
                raise FrontendError(f"shape {new} for input {vi.name!r} of {name} has non-positive dims")
            if declared is not None and len(declared) != len(new):
                raise FrontendError(
                    f"input {vi.name!r} of {name} has rank {len(declared)} "
                    f"({[dim_label(d) for d in tt.shape.dim]}), but shape= gives {new}"
                )
            if declared is not None:
                for i, (a, b) in enumerate(zip(declared, new, strict=True)):
                    if a is not None and a != b:
                        logger.warning(
                            "input %r of %s: overriding static dim %d (%d) with %d", vi.name, name, i, a, b
                        )
        else:
            if declared is None:
                raise FrontendError(
                    f"input {vi.name!r} of {name} has an unknown shape; pass shape= "
                    f"(e.g. shape={{'{vi.name}': (1, 3, 224, 224)}})"
                )
            dynamic = [i for i, d in enumerate(declared) if d is None]
            if dynamic and dynamic != [0]:
                labels = [dim_label(d) for d in tt.shape.dim]
                raise FrontendError(
                    f"input {vi.name!r} of {name} has dynamic dims {labels}; pass shape= with a static "
                    f"shape for it (e.g. shape={{'{vi.name}': {tuple(d or 1 for d in declared)}}})"
                )
            if dynamic == [0]:
                logger.warning(
                    "input %r of %s has a dynamic batch dim %r; using batch size 1 (pass shape= to change)",
                    vi.name,
                    name,
                    dim_label(tt.shape.dim[0]),
                )
            new = tuple(d if d is not None else 1 for d in declared)
        tt.ClearField("shape")
        tt.shape.SetInParent()
        for d in new:
            tt.shape.dim.add().dim_value = d
        result[vi.name] = new
    return result


# --------------------------------------------------------------------------------------
