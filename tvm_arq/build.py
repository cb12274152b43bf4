"""``tvm_arq.build``: float Relax module + calibration data -> integer program compiled for a target."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from os import PathLike
from typing import Any

import numpy as np
import tvm

from .backends import ApplyDefaultSchedules, get_backend
from .budget import AccuracyBudget, meet_budget
from .config import Calibrator, QuantConfig, Scheme
from .frontend import model_qparams, prepare_module
from .model import QuantizedModel
from .quantize import input_specs, normalize_sample, quantize_fixed, quantize_module
from .target import TargetInfo, resolve_target

logger = logging.getLogger(__name__)


def prepare(mod: tvm.IRModule, params: Mapping[str, np.ndarray] | None) -> tvm.IRModule:
    """Bind weights as constants and fold constant subexpressions (see :func:`~tvm_arq.frontend.prepare_module`)."""
    return prepare_module(mod, params)


def has_integer_kernels(mod: tvm.IRModule) -> bool:
    """Whether ``mod`` calls kernels of :mod:`tvm_arq.kernels` (an integer module)."""
    return any(isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "arq.op" in f.attrs
               for f in mod.functions.values())


def lower_for_target(mod: tvm.IRModule, info: TargetInfo) -> tvm.IRModule:
    """The integer module in the target's layouts (NHWC, packed weights, tensorized kernels).

    See :class:`~tvm_arq.passes.layout.ConvertLayout`. Float modules are returned unchanged.
    """
    if not has_integer_kernels(mod):
        return mod
    from .passes.layout import convert_layout

    return convert_layout(mod, get_backend(info).layout_plan())


def compile_for(mod: tvm.IRModule, info: TargetInfo, tuning: Any = None, *, layout: bool = True):
    """Compile a Relax module for a target (tuned when ``tuning`` is given).

    An integer module is first rewritten for the target (:func:`lower_for_target`, unless
    ``layout=False``). Untuned, its conv/depthwise kernels get their default tensorized schedules;
    tuned, MetaSchedule searches the tile sizes of the same templates.
    """
    if layout:
        mod = lower_for_target(mod, info)
    if tuning is not None:
        from .tune import compile_tuned, tune

        db = tune(mod, info, tuning)
        return compile_tuned(mod, info, db, num_threads=tuning.threads)
    return tvm.compile(ApplyDefaultSchedules()(mod), target=info.target)


def build(
    mod: tvm.IRModule,
    params: Mapping[str, np.ndarray] | None = None,
    target: Any = "host",
    *,
    calibration: Iterable | None = None,
    scheme: Scheme | str = Scheme.HYBRID,
    calibrator: Calibrator | str = Calibrator.OUTPUT,
    config: QuantConfig | None = None,
    tuning: Any = None,
    accuracy: AccuracyBudget | None = None,
    progress: bool = True,
) -> QuantizedModel:
    """Quantize a float model with calibration data and compile it for ``target``.

    Parameters
    ----------
    mod, params
        Float Relax module and its weights, e.g. from :func:`tvm_arq.from_onnx`.
    target
        ``"host"``, a preset (``aarch64``, ``aarch64-dotprod``, ``riscv64``, ``riscv64-rvv``, ``x86-vnni``),
        a CLI-style string such as ``"llvm -mtriple=aarch64"``, a target dict or a ``tvm.target.Target``.
    calibration
        Iterable of samples: arrays (single input), tuples of arrays, or dicts input name -> array.
        Required unless ``scheme="float"`` or the model is pre-quantized (a QDQ / QOperator ONNX model imported
        by :func:`tvm_arq.from_onnx`): without calibration such a model is compiled with exactly its own scales,
        zero points and integer weights (``model.qparams[t].rule`` starts with ``"from model"``); with
        calibration it is re-quantized our way (``scheme``, ``calibrator``) from its float weights.
    scheme
        ``"hybrid"`` (default), ``"symmetric"``, ``"asymmetric"`` or ``"float"``.
    calibrator
        Range estimator, see :class:`~tvm_arq.config.Calibrator`.
    config
        Full :class:`~tvm_arq.config.QuantConfig`; overrides ``scheme`` and ``calibrator``.
    tuning
        A :class:`~tvm_arq.tune.TuneConfig` to autotune the kernels with MetaSchedule.
    accuracy
        An :class:`~tvm_arq.budget.AccuracyBudget`: measure fp32 and int8 on its data and keep the fewest,
        cheapest layers in float until the metric drop is at most ``max_drop`` (see :mod:`tvm_arq.budget`);
        what was kept and measured is ``model.accuracy_report``.

    Returns
    -------
    QuantizedModel
    """
    t0 = time.perf_counter()
    if not isinstance(mod, tvm.IRModule):
        hint = (" (load ONNX models with tvm_arq.from_onnx(...), which returns (mod, params))"
                if isinstance(mod, str | bytes | PathLike) or type(mod).__name__ == "ModelProto" else "")
        raise TypeError(f"build() takes a Relax tvm.IRModule, not {type(mod).__name__}{hint}")
    info = resolve_target(target)
    if config is None:
        config = QuantConfig(scheme=Scheme(scheme), calibrator=Calibrator(calibrator))
    fmod = prepare(mod, params)
    func = fmod["main"]
    if func.attrs is not None and "num_input" in func.attrs and len(func.params) > int(func.attrs["num_input"]):
        unbound = [p.name for p in func.params[int(func.attrs["num_input"]):]]
        raise ValueError(f"main has {len(unbound)} unbound weight parameter(s) {unbound[:5]}: pass the params "
                         "returned by from_onnx, build(mod, params, ...)")
    if config.scheme is Scheme.FLOAT:
        ex = compile_for(fmod, info, tuning)
        return QuantizedModel(ir=fmod, qdq=None, qparams={}, plan=None, target=info, config=config,
                              executable=ex, float_ir=fmod, build_seconds=time.perf_counter() - t0)
    act_dtype = config.act_dtype or info.act_dtype
    table = model_qparams(mod)
    if calibration is None and table is not None:
        if accuracy is not None:
            raise ValueError("an accuracy budget needs calibration data (the pre-quantized model's parameters are "
                             "used as they are without it)")
        table.check_supported()
        res = quantize_fixed(fmod, table, config, act_dtype)
        ex = compile_for(res.int_mod, info, tuning)
        return QuantizedModel(ir=res.int_mod, qdq=res.qdq_mod, qparams=res.qparams, plan=res.plan, target=info,
                              config=config, executable=ex, float_ir=fmod, build_seconds=time.perf_counter() - t0)
    if calibration is None:
        raise ValueError("calibration data is required for a quantized scheme (or pass scheme='float'); models "
                         "quantized elsewhere (QDQ ONNX) build without it")
    acc_report = None
    if accuracy is not None:
        if not isinstance(accuracy, AccuracyBudget):
            raise TypeError(f"accuracy must be a tvm_arq.AccuracyBudget, not {type(accuracy).__name__}")
        calibration = list(calibration)
        all_int8 = config
        config, acc_report, res = meet_budget(fmod, calibration, config, act_dtype, accuracy, progress=progress)
        if res is None and not acc_report.kept:
            raise ValueError("nothing to quantize: the model has no quantizable layer (build it with "
                             "scheme='float')")
        if res is None:
            logger.warning("the accuracy budget keeps every layer in float: building the float model")
            ex = compile_for(fmod, info, tuning)
            return QuantizedModel(ir=fmod, qdq=None, qparams={}, plan=None, target=info, config=config,
                                  executable=ex, float_ir=fmod, build_seconds=time.perf_counter() - t0,
                                  accuracy_report=acc_report)
    else:
        res = quantize_module(fmod, calibration, config, act_dtype, progress=progress)
    ex = compile_for(res.int_mod, info, tuning)
    model = QuantizedModel(ir=res.int_mod, qdq=res.qdq_mod, qparams=res.qparams, plan=res.plan, target=info,
                           config=config, executable=ex, float_ir=fmod, build_seconds=time.perf_counter() - t0,
                           accuracy_report=acc_report)
    if acc_report is not None and accuracy.measure_latency:
        _measure_budget_latency(model, fmod, calibration, all_int8, act_dtype, info, accuracy, tuning, progress)
        model.build_seconds = time.perf_counter() - t0
    return model


def _measure_budget_latency(model: QuantizedModel, fmod: tvm.IRModule, calibration: list, config: QuantConfig,
                            act_dtype: str, info: TargetInfo, budget: AccuracyBudget, tuning: Any,
                            progress: bool) -> None:
    """Fill ``model.accuracy_report.latency``: the final model against the all-int8 one, on this machine."""
    rep = model.accuracy_report
    if not info.is_host:
        rep.latency = None
        logger.warning("measure_latency: target %s does not run here; latency not measured", info.triple)
        return
    specs = input_specs(fmod)
    x = normalize_sample(budget.data[0], specs, 0)
    if rep.kept:
        res = quantize_module(fmod, calibration, config, act_dtype, progress=progress)
        int8 = QuantizedModel(ir=res.int_mod, qdq=res.qdq_mod, qparams=res.qparams, plan=res.plan, target=info,
                              config=config, executable=compile_for(res.int_mod, info, tuning), float_ir=fmod)
    else:
        int8 = model
    final_ms = model.benchmark(*x)["median_ms"]
    int8_ms = final_ms if int8 is model else int8.benchmark(*x)["median_ms"]
    rep.latency = {"final_ms": final_ms, "int8_ms": int8_ms,
                   "note": ("tuned" if tuning is not None else "untuned kernels") + ", median on this machine"}
