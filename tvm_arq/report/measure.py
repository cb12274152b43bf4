"""Measuring a quantized model layer by layer against fp32 on calibration data.

Three programs run per sample: the float module with the quantization points exposed
(:class:`~tvm_arq.passes.InsertCalibration`), the fake-quantized QDQ module with every point's
``<name>_dq`` binding exposed, and the integer build (``model.run``). Only scalar sums are kept.
The model is used through its attributes only (``float_ir``, ``qdq``, ``plan``, ``qparams``, ``config``,
``target``, ``run``), so this module does not import :mod:`tvm_arq.model`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sized
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tqdm.auto import tqdm

from ..ops.irutil import bindings_of, tensor_shape
from ..passes import InsertCalibration
from ..passes.analysis import Role
from ..quantize import compile_host, input_specs, normalize_sample
from .records import FallbackOp, OutputReport, QuantReport, TensorReport
from .stats import PointStats, SqnrAccumulator

if TYPE_CHECKING:
    from ..model import QuantizedModel

logger = logging.getLogger(__name__)

__all__ = ["DQ_SUFFIX", "report"]

#: the dequantized binding that follows a quantized tensor ``name`` in the QDQ module
DQ_SUFFIX = "_dq"


def _short(op: str | None) -> str:
    if op is None:
        return "?"
    return op.removeprefix("relax.").removeprefix("nn.")


def _producers(model: QuantizedModel) -> dict[str, tuple[str, str]]:
    """Point name -> (producer description, domain)."""
    plan = model.plan
    by_name = {b.name: b for b in bindings_of(model.float_ir["main"])}
    params = {p.name for p in model.float_ir["main"].params}

    def describe(name: str) -> str:
        b = by_name.get(name)
        op = _short(b.op if b is not None else None)
        if b is not None and b.op == "relax.nn.conv2d":
            groups = int(b.value.attrs.groups)
            cin = (tensor_shape(b.value.args[0]) or (0, 0))[1]
            if groups > 1:
                op = "dwconv2d" if groups == cin else f"conv2d/g{groups}"
        return op

    out: dict[str, tuple[str, str]] = {}
    for p in plan.points:
        if p in params:
            out[p] = ("input", "input")
            continue
        op_plan = plan.ops.get(p)
        if op_plan is None:
            out[p] = (describe(p), "float")
            continue
        if op_plan.role is Role.FLOAT:
            out[p] = (describe(p), "float")
        elif op_plan.role in (Role.ANCHOR, Role.EPILOGUE, Role.ADD):
            members = [n for n, o in plan.ops.items() if o.group_output == p
                       and o.role in (Role.ANCHOR, Role.EPILOGUE, Role.ADD)]
            out[p] = ("+".join(describe(n) for n in members) or describe(p), "int")
        else:
            out[p] = (describe(p), "int")
    return out


def _flatten(res: Any) -> list[np.ndarray]:
    """VM / ``model.run`` result (tensor, numpy array or nested tuple) -> list of numpy arrays."""
    if isinstance(res, np.ndarray):
        return [res]
    if isinstance(res, tvm.runtime.Tensor):
        return [res.numpy()]
    if hasattr(res, "numpy") and not hasattr(res, "__len__"):
        return [np.asarray(res.numpy())]
    if isinstance(res, list | tuple) or hasattr(res, "__len__"):
        out: list[np.ndarray] = []
        for r in res:
            out += _flatten(r)
        return out
    return [np.asarray(res)]


_END = object()


def _grid_limits(scale: float, zero_point: int, dtype: str) -> tuple[float, float]:
    info = np.iinfo(np.dtype(dtype))
    return scale * (int(info.min) - zero_point), scale * (int(info.max) - zero_point)


def report(model: QuantizedModel, calibration_samples: Iterable, max_samples: int | None = 32, *,
           progress: bool = True) -> QuantReport:
    """Measure a quantized model layer by layer against fp32.

    Parameters
    ----------
    model
        A quantized :class:`~tvm_arq.model.QuantizedModel` (not ``scheme="float"``).
    calibration_samples
        Samples in any form :func:`tvm_arq.build` accepts (arrays, tuples, dicts); may be a generator.
    max_samples
        Use at most this many samples (``None``: all).
    progress
        Show a progress bar.

    Returns
    -------
    QuantReport

    Notes
    -----
    Three programs run per sample: the float module with the quantization points exposed, the QDQ module
    with every point's ``<name>_dq`` binding exposed, and the integer build. Only scalar sums are kept.
    """
    if model.qdq is None or model.plan is None or not model.qparams:
        raise ValueError(f"report needs a quantized model; this one has scheme={model.scheme.value!r}")
    if model.float_ir is None:
        raise ValueError("report needs the model's float module (model.float_ir); build it with tvm_arq.build")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    plan = model.plan
    points = list(plan.points)
    qdq_names = {b.name for b in bindings_of(model.qdq["main"])} | {p.name for p in model.qdq["main"].params}
    sim_points = [p for p in points if p + DQ_SUFFIX in qdq_names]
    missing = [p for p in points if p not in sim_points]
    if missing:
        logger.warning("QDQ module has no %s binding for %s: their sim SQNR is not measured", DQ_SUFFIX,
                       missing[:10])

    specs = input_specs(model.float_ir)
    # check the first sample before compiling anything: bad data fails fast
    samples = itertools.islice(calibration_samples, max_samples)
    first = next(samples, _END)
    if first is _END:
        raise ValueError("no samples to measure the report on: pass at least one calibration sample")
    normalize_sample(first, specs, 0)
    samples = itertools.chain([first], samples)

    float_vm = compile_host(InsertCalibration(points)(model.float_ir))
    qdq_vm = compile_host(InsertCalibration([p + DQ_SUFFIX for p in sim_points])(model.qdq))
    stats = {p: PointStats() for p in points}
    out_int: list[SqnrAccumulator] = []
    out_qdq: list[SqnrAccumulator] = []
    out_shapes: list[tuple[int, ...]] = []
    limits = {p: _grid_limits(q.scale, q.zero_point, q.dtype) for p, q in model.qparams.items()}

    sim_index = {p: j for j, p in enumerate(sim_points)}
    shapes: dict[str, tuple[int, ...]] = {}
    total = len(calibration_samples) if isinstance(calibration_samples, Sized) else None
    if max_samples is not None:
        total = max_samples if total is None else min(total, max_samples)
    n = 0
    for i, sample in enumerate(tqdm(samples, desc="measuring SQNR", unit="sample", total=total,
                                    disable=not progress, leave=False)):
        arrays = normalize_sample(sample, specs, i)
        args = [tvm.runtime.tensor(a) for a in arrays]
        fres = float_vm["main"](*args)
        qres = qdq_vm["main"](*args)
        f_out = _flatten(fres[0])
        q_out = _flatten(qres[0])
        i_out = _flatten(model.run(*arrays))
        if not out_int:
            out_shapes = [tuple(a.shape) for a in f_out]
            out_int = [SqnrAccumulator() for _ in f_out]
            out_qdq = [SqnrAccumulator() for _ in f_out]
        for k, ref in enumerate(f_out):
            out_int[k].update(ref, i_out[k])
            out_qdq[k].update(ref, q_out[k])
        for j, p in enumerate(points):
            ref = fres[j + 1].numpy()
            shapes.setdefault(p, tuple(ref.shape))
            st = stats[p]
            qp = model.qparams[p]
            st.own.update(ref, qp.dequantize(qp.quantize(ref)))
            lo, hi = limits[p]
            half = 0.5 * qp.scale
            st.clipped += int(np.count_nonzero((ref < lo - half) | (ref > hi + half)))
            if p in sim_index:
                st.sim.update(ref, qres[sim_index[p] + 1].numpy())
        n += 1

    producers = _producers(model)
    tensors = []
    for p in points:
        qp = model.qparams[p]
        st = stats[p]
        desc, domain = producers[p]
        tensors.append(TensorReport(
            name=p, producer=desc, domain=domain, shape=shapes[p], kind=qp.kind.value, rule=qp.rule,
            alpha=float(qp.alpha), beta=float(qp.beta), scale=float(qp.scale), zero_point=int(qp.zero_point),
            dtype=qp.dtype, sqnr_db=st.sim.sqnr_db, own_sqnr_db=st.own.sqnr_db,
            clipped_fraction=st.clipped / st.own.count if st.own.count else 0.0,
            max_abs_error=st.sim.max_abs_error if st.sim.count else None,
        ))
    outputs = [OutputReport(index=k, shape=out_shapes[k], sqnr_int_db=out_int[k].sqnr_db,
                            sqnr_qdq_db=out_qdq[k].sqnr_db, max_abs_error_int=out_int[k].max_abs_error)
               for k in range(len(out_int))]
    act_dtype = next(iter(model.qparams.values())).dtype
    return QuantReport(
        scheme=model.scheme.value, calibrator=model.config.calibrator.value, target=model.target.triple,
        act_dtype=act_dtype, n_samples=n, tensors=tensors, outputs=outputs,
        fallbacks=[FallbackOp(v, op, why) for v, op, why in plan.fallbacks],
        accuracy=None if getattr(model, "accuracy_report", None) is None else model.accuracy_report.to_dict(),
    )
