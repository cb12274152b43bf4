"""CPU tensor intrinsics: TVM's x86 / Arm / RISC-V ones without the slow CUDA ones, and our VNNI one.

The kernels of the backends tensorize with these intrinsics (by name), so they must be registered in
the process that schedules them (default schedules, tuning) and in every process that applies a tuning
database. Traps of TVM 0.27 handled here:

- ``import tvm.s_tir.tensor_intrin`` takes ~25 s (almost all of it CUDA intrinsics); only the CPU
  submodules are loaded (:func:`load_cpu_tensor_intrinsics`).
- The shipped x86 VNNI intrinsic ``dot_16x4_vnni`` fails LLVM 22 verification; see
  :func:`register_vnni_intrinsic`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
import types
from pathlib import Path

import tvm

__all__ = ["VNNI_INTRIN_NAME", "load_cpu_tensor_intrinsics", "register_vnni_intrinsic"]

logger = logging.getLogger(__name__)

VNNI_INTRIN_NAME = "dot_16x4_vnni"

_intrin_lock = threading.Lock()
_vnni_registered = False


def load_cpu_tensor_intrinsics() -> None:
    """Register TVM's CPU tensor intrinsics (x86, Arm, RISC-V) without the 20 s CUDA ones.

    ``import tvm.s_tir.tensor_intrin`` (done by every MetaSchedule ``TuneContext``) parses all
    intrinsics, ~22 s of it for CUDA. If that package is not imported yet, a package object without
    its ``__init__`` is put in ``sys.modules`` and only the CPU submodules are imported; later imports
    of the package are then no-ops, and ``tvm.s_tir.tensor_intrin.<sub>`` imports still work.
    Idempotent. Also (re-)registers our VNNI intrinsic.
    """
    with _intrin_lock:
        name = "tvm.s_tir.tensor_intrin"
        if name not in sys.modules:
            import tvm.s_tir

            pkg_dir = Path(tvm.s_tir.__file__).resolve().parent / "tensor_intrin"
            pkg = types.ModuleType(name, "CPU tensor intrinsics only (loaded by tvm_arq.backends)")
            pkg.__path__ = [str(pkg_dir)]
            pkg.__package__ = name
            pkg.__file__ = str(pkg_dir / "__init__.py")
            sys.modules[name] = pkg
            tvm.s_tir.tensor_intrin = pkg  # type: ignore[attr-defined]
            started = time.perf_counter()
            for sub in ("dot_product_common", "x86", "arm_cpu", "riscv_cpu"):
                try:
                    module = importlib.import_module(f"{name}.{sub}")
                    setattr(pkg, sub, module)
                except Exception:  # noqa: BLE001 - a missing optional module must not stop tuning
                    logger.warning("could not import %s.%s", name, sub, exc_info=True)
            logger.debug("CPU tensor intrinsics loaded in %.1f s", time.perf_counter() - started)
    register_vnni_intrinsic()


def _vnni_desc_and_impl() -> tuple[tvm.tirx.PrimFunc, tvm.tirx.PrimFunc]:
    """Our u8 x s8 -> s32 16x4 dot product for AVX-512 VNNI (``vpdpbusd zmm``).

    Semantics: ``acc[lane] += sum_k int32(act[k]) * int32(wgt[lane, k])`` for 16 lanes and k < 4,
    with the 4 activation bytes shared by every lane. LLVM 22 declares
    ``llvm.x86.avx512.vpdpbusd.512`` as ``(<16 x i32>, <64 x i8>, <64 x i8>) -> <16 x i32>``, so both
    byte operands are passed as ``int8x64`` (the shipped intrinsic passes ``int32x16`` and fails LLVM
    verification).
    """
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def vnni_desc(
        act: T.Buffer((4,), "uint8", offset_factor=1),
        wgt: T.Buffer((16, 4), "int8", offset_factor=1),
        acc: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(acc[0:16], act[0:4], wgt[0:16, 0:4])
            T.writes(acc[0:16])
            for lane, kk in T.grid(16, 4):
                with T.sblock("update"):
                    v_lane, v_k = T.axis.remap("SR", [lane, kk])
                    acc[v_lane] = acc[v_lane] + T.Cast("int32", act[v_k]) * T.Cast("int32", wgt[v_lane, v_k])

    @T.prim_func(s_tir=True)
    def vnni_impl(
        act: T.Buffer((4,), "uint8", offset_factor=1),
        wgt: T.Buffer((16, 4), "int8", offset_factor=1),
        acc: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(acc[0:16], act[0:4], wgt[0:16, 0:4])
            T.writes(acc[0:16])
            # the 4 activation bytes as one i32, splat to 16 lanes, viewed as 64 bytes
            act_splat = T.reinterpret(
                T.broadcast(T.reinterpret(act.vload([0], "uint8x4"), dtype="int32"), 16), dtype="int8x64"
            )
            acc[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                acc.vload([0], "int32x16"),
                act_splat,
                wgt.vload([0, 0], "int8x64"),
                dtype="int32x16",
            )

    return vnni_desc, vnni_impl


def register_vnni_intrinsic() -> str:
    """(Re-)register ``dot_16x4_vnni`` with LLVM-22-correct ``int8x64`` operands.

    MetaSchedule's x86 VNNI schedule rule and the traces in a tuning database refer to the intrinsic
    by this name, so it must be registered in the tuning process *and* in the process that applies
    the database (:func:`tvm_arq.tune.compile_tuned` does it). Build workers do not need it: candidates reach
    them already tensorized. Idempotent; returns the intrinsic name.
    """
    global _vnni_registered
    if _vnni_registered:
        return VNNI_INTRIN_NAME
    from tvm.s_tir import TensorIntrin

    desc, impl = _vnni_desc_and_impl()
    TensorIntrin.register(VNNI_INTRIN_NAME, desc, impl, override=True)
    _vnni_registered = True
    logger.debug("registered %s (vpdpbusd.512 with int8x64 operands)", VNNI_INTRIN_NAME)
    return VNNI_INTRIN_NAME

