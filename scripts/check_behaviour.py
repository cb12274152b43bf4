"""Record or check the integer behaviour of tvm_arq on every bundled / zoo model (refactor guard).

For each model (MNIST CNN, PP-OCR direction classifier, EfficientNet-Lite0, YOLOX-Tiny) and each scheme
(hybrid, symmetric), on fixed calibration samples and fixed inputs, it records

- the bytes (sha256) of the host program's outputs (``model.run``: the compiled, layout-converted x86 module),
- the bytes of the reference interpreter's outputs on ``model.ir``,
- the multiset of sha256 digests of **every integer tensor** the reference interpreter computes on
  ``model.ir`` and on the layout-converted modules for ``x86-vnni``, ``aarch64-dotprod`` and ``riscv64-rvv``
  (a multiset, so renamed or reordered bindings do not matter; a changed value does),
- every quantization point's scale, zero point and dtype.

``--record`` writes ``results/behaviour_baseline.json``; ``--check`` recomputes and compares, printing the
first differences and exiting 1 if anything differs.

    python scripts/check_behaviour.py --record
    python scripts/check_behaviour.py --check
    python scripts/check_behaviour.py --record --no-compile --models efficientnet yolox   # no TVM compile
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAYOUT_TARGETS = ("x86-vnni", "aarch64-dotprod", "riscv64-rvv")


def _bench():
    """The benchmark helpers (moved out of ``tvm_arq`` into ``arq_bench`` by the architecture refactor)."""
    try:
        return (importlib.import_module("arq_bench.zoo"), importlib.import_module("arq_bench.datasets"),
                importlib.import_module("arq_bench.assets"))
    except ImportError:
        return (importlib.import_module("tvm_arq.zoo"), importlib.import_module("tvm_arq.datasets"),
                importlib.import_module("tvm_arq.assets"))


def _convert_layout(mod, target):
    from tvm_arq.passes.layout import convert_layout

    try:
        from tvm_arq.backends import get_backend
    except ImportError:  # before the architecture refactor: convert_layout took the target
        return convert_layout(mod, target)
    return convert_layout(mod, get_backend(target).layout_plan())


def _workloads(names: list[str]):
    zoo, datasets, assets = _bench()
    rng = np.random.default_rng(0)
    out = {}
    if "mnist" in names:
        x, _ = zoo.mnist_test()
        xtr, _ = zoo.mnist_train()
        out["mnist"] = (str(zoo.mnist_cnn()), (1, 1, 28, 28), [xtr[i][None] for i in range(8)], [x[i][None] for i in range(3)])
    if "ppocr_cls" in names:
        x, _ = datasets.text_direction_set(11, seed=0)
        out["ppocr_cls"] = (str(assets.fetch("ppocr_cls")), (1, 3, 48, 192), [s[None] for s in x[:8]],
                            [s[None] for s in x[8:]])
    if "efficientnet" in names:
        crops = zoo.efficientnet_lite0_preprocess(datasets.photo_crops(6, 224, seed=0, split="calib"))
        out["efficientnet"] = (zoo.efficientnet_lite0(), (1, 3, 224, 224), [c[None] for c in crops[:4]],
                               [c[None] for c in crops[4:]])
    if "yolox" in names:
        x, _ = zoo.yolox_detection_set(5, seed=0, split="calib")
        out["yolox"] = (str(assets.fetch("yolox_tiny")), (1, 3, 416, 416), [c[None] for c in x[:3]],
                        [c[None] for c in x[3:]])
    del rng
    return out


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:24]


def _flat(res) -> list[np.ndarray]:
    if isinstance(res, tuple | list):
        return [r for x in res for r in _flat(x)]
    return [np.asarray(res)]


def _int_tensors(mod, x: np.ndarray) -> list[str]:
    """Digests of every integer tensor the reference interpreter computes (sorted multiset)."""
    try:
        from tvm_arq.ops.irutil import bindings_of
        from tvm_arq.ops.reference import ReferenceInterpreter
    except ImportError:  # before the architecture refactor
        from tvm_arq.passes.graph import bindings_of
        from tvm_arq.reference import ReferenceInterpreter

    interp = ReferenceInterpreter(mod)
    env: dict[str, object] = {}
    for p in interp.func.params:
        env[p.name] = np.asarray(x)
    digests = []
    for b in bindings_of(interp.func):
        env[b.name] = v = interp._eval(b.value, env)
        for t in _flat(v):
            if t.dtype.kind in "iu":
                digests.append(_digest(t))
    return sorted(digests)


class _Uncompiled:
    """What the check needs of a model, from the target-independent pipeline only (no TVM compilation)."""

    def __init__(self, mod, params, calib, config):
        import tvm_arq
        from tvm_arq.build import prepare
        from tvm_arq.quantize import quantize_module

        res = quantize_module(prepare(mod, params), calib, config, tvm_arq.resolve_target("host").act_dtype,
                              progress=False)
        self.ir, self.qparams, self.fallbacks = res.int_mod, res.qparams, res.plan.fallbacks

    def reference(self, x):
        try:
            from tvm_arq.ops.reference import ReferenceInterpreter
        except ImportError:
            from tvm_arq.reference import ReferenceInterpreter
        return ReferenceInterpreter(self.ir).run(x)


def measure(names: list[str], compile_programs: bool = True) -> dict:
    import tvm_arq

    res = {}
    for name, (model, shape, calib, inputs) in _workloads(names).items():
        mod, params = tvm_arq.from_onnx(model, shape=shape)
        for scheme in ("hybrid", "symmetric"):
            t0 = time.time()
            cfg = {"scheme": scheme, "calibrator": "minmax"}
            if "calibration_checks" in tvm_arq.QuantConfig.__dataclass_fields__:
                cfg["calibration_checks"] = False  # data-sanity rules added after the baseline: not a refactor
            if compile_programs:
                m = tvm_arq.build(mod, params, "host", calibration=calib, config=tvm_arq.QuantConfig(**cfg),
                                  progress=False)
            else:
                m = _Uncompiled(mod, params, calib, tvm_arq.QuantConfig(**cfg))
            rec: dict = {"run": [], "reference": [], "tensors": {}, "compiled": compile_programs}
            for x in inputs:
                if compile_programs:
                    rec["run"].append([_digest(o) for o in _flat(m.run(x))])
                rec["reference"].append([_digest(o) for o in _flat(m.reference(x))])
            x0 = inputs[0]
            rec["tensors"]["ir"] = _int_tensors(m.ir, x0)
            for t in LAYOUT_TARGETS:
                rec["tensors"][t] = _int_tensors(_convert_layout(m.ir, tvm_arq.resolve_target(t)), x0)
            rec["qparams"] = {k: [float(np.asarray(v.scale).sum()), int(np.asarray(v.zero_point).sum()), str(v.dtype)]
                              for k, v in sorted(m.qparams.items())}
            rec["fallbacks"] = len(m.fallbacks)
            res[f"{name}/{scheme}"] = rec
            print(f"{name}/{scheme}: {sum(len(v) for v in rec['tensors'].values())} integer tensors, "
                  f"{len(rec['qparams'])} qparams, {time.time() - t0:.1f} s", flush=True)
    return res


def compare(old: dict, new: dict) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new:
            diffs.append(f"{key}: present only in {'new' if key in new else 'baseline'}")
            continue
        a, b = old[key], new[key]
        if a.get("compiled", True) and not b.get("compiled", True):
            diffs.append(f"{key}: baseline compiled the program, this run did not (drop --no-compile)")
        fields = ("run", "reference", "qparams", "fallbacks") if b.get("compiled", True) else \
            ("reference", "qparams", "fallbacks")
        for field in fields:
            if field == "qparams" and a[field] != b[field] \
                    and sorted(map(tuple, a[field].values())) == sorted(map(tuple, b[field].values())):
                continue  # the same scales / zero points under new tensor names (e.g. ONNX node names)
            if a[field] != b[field]:
                diffs.append(f"{key}: {field} differs")
        for t in sorted(set(a["tensors"]) | set(b["tensors"])):
            ca, cb = Counter(a["tensors"].get(t, [])), Counter(b["tensors"].get(t, []))
            if ca != cb:
                diffs.append(f"{key}: {t}: {sum((ca - cb).values())} baseline tensors missing, "
                             f"{sum((cb - ca).values())} new tensors")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", action="store_true")
    g.add_argument("--check", action="store_true")
    ap.add_argument("--models", nargs="+", default=["mnist", "ppocr_cls", "efficientnet", "yolox"])
    ap.add_argument("--baseline", type=Path, default=ROOT / "results" / "behaviour_baseline.json")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip TVM compilation (large models on a slow host): integer tensors of the reference "
                         "interpreter on the IR and the layout-converted modules, qparams; no run() outputs")
    args = ap.parse_args(argv)
    new = measure(args.models, compile_programs=not args.no_compile)
    if args.record:
        old = json.loads(args.baseline.read_text()) if args.baseline.exists() else {}
        args.baseline.write_text(json.dumps({**old, **new}, indent=0, sort_keys=True))
        print(f"recorded {len(new)} builds -> {args.baseline}")
        return 0
    old = json.loads(args.baseline.read_text())
    old = {k: v for k, v in old.items() if k.split("/")[0] in args.models}
    diffs = compare(old, new)
    n_t = sum(len(v) for r in new.values() for v in r["tensors"].values())
    if diffs:
        print("\n".join(diffs[:50]))
        print(f"DIFFERENT: {len(diffs)} differences over {len(new)} builds")
        return 1
    n_run = sum(len(r["run"]) for r in new.values())
    n_ref = sum(len(r["reference"]) for r in new.values())
    print(f"identical: {len(new)} builds, {n_t} integer tensors (IR + 3 target layouts), outputs of reference() "
          f"on {n_ref} inputs" + (f" and of the compiled host program on {n_run} inputs" if n_run else
                                  " (not compiled: --no-compile)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
