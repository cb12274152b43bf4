"""Plots of the benchmark results for the README.

Reads ``results/latency.json`` (written by ``scripts/bench_latency.py``) and ``results/accuracy.json``
(``scripts/bench_accuracy.py``) and writes ``results/plots/latency.png`` (median latency per model and
variant, one panel per thread count, log scale) and ``results/plots/accuracy.png`` (hybrid+redistribution,
symmetric, best onnxruntime row and fp32 per model and metric).

Usage::

    python scripts/plot_results.py [--results results] [--out results/plots]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger("plot_results")

VARIANT_LABELS = {
    "tvm_fp32": "TVM fp32 (tuned)",
    "tvm_int8_symmetric": "tvm_arq symmetric int8 (tuned)",
    "tvm_int8_hybrid": "tvm_arq hybrid int8 (tuned)",
    "ort_fp32": "onnxruntime fp32",
    "ort_int8": "onnxruntime int8 (QDQ)",
}
COLORS = {"tvm_fp32": "#9e9e9e", "tvm_int8_symmetric": "#4c72b0", "tvm_int8_hybrid": "#dd8452",
          "ort_fp32": "#c7c7c7", "ort_int8": "#55a868"}


def plot_latency(path: Path, out: Path) -> Path:
    """Grouped bars of median latency (log scale), one panel per thread count."""
    data = json.loads(path.read_text())
    recs = data["records"]
    models = list(dict.fromkeys(r["model"] for r in recs))
    threads = sorted({int(r["threads"]) for r in recs}, reverse=True)
    variants = [v for v in VARIANT_LABELS if any(r["variant"] == v for r in recs)]
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.2), squeeze=False)
    width = 0.8 / max(1, len(variants))
    for ax, t in zip(axes[0], threads, strict=True):
        x = np.arange(len(models))
        for i, v in enumerate(variants):
            vals = []
            for m in models:
                hit = [r["median_ms"] for r in recs if r["model"] == m and r["variant"] == v and r["threads"] == t]
                vals.append(hit[0] if hit else np.nan)
            bars = ax.bar(x + (i - (len(variants) - 1) / 2) * width, vals, width, label=VARIANT_LABELS[v],
                          color=COLORS[v])
            for b, val in zip(bars, vals, strict=True):
                if np.isfinite(val):
                    ax.annotate(f"{val:.3g}", (b.get_x() + b.get_width() / 2, val), ha="center", va="bottom",
                                fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xticks(x, models)
        ax.set_ylabel("median latency, ms (log)")
        ax.set_title(f"{t} thread(s), batch 1, {data['meta'].get('machine', '')}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(variants))
    fig.suptitle(f"tuned latency ({data['meta'].get('trials')} MetaSchedule trials per TVM variant)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "latency.png"
    fig.savefig(dest, dpi=120)
    plt.close(fig)
    return dest


def plot_accuracy(path: Path, out: Path) -> Path:
    """Bars per model/metric: fp32, symmetric, hybrid+redistribution, best onnxruntime row."""
    data = json.loads(path.read_text())
    recs = data["records"] if isinstance(data, dict) else data
    metrics = list(dict.fromkeys((r["model"], r["metric"]) for r in recs))

    def value(model: str, metric: str, pred) -> float:  # noqa: ANN001 - a predicate on records
        vals = [100.0 * r["value"] for r in recs if r["model"] == model and r["metric"] == metric and pred(r)
                and r["value"] is not None]
        return max(vals) if vals else np.nan

    rows = {
        "fp32": lambda r: r["scheme"] == "fp32",
        "tvm_arq symmetric": lambda r: r["scheme"] == "symmetric" and r.get("engine", "tvm_arq") != "onnxruntime",
        "tvm_arq hybrid + redistribution": lambda r: r["scheme"] == "hybrid" and r["calibrator"] == "redistribution",
        "onnxruntime QDQ (best calibrator)": lambda r: r.get("engine") == "onnxruntime" and r["scheme"] != "fp32",
    }
    colors = ["#9e9e9e", "#4c72b0", "#dd8452", "#55a868"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    x = np.arange(len(metrics))
    width = 0.8 / len(rows)
    for i, (label, pred) in enumerate(rows.items()):
        vals = [value(m, k, pred) for m, k in metrics]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, label=label, color=colors[i])
    ax.set_xticks(x, [f"{m}\n{k}" for m, k in metrics], fontsize=7)
    lo = np.nanmin([100.0 * r["value"] for r in recs if r["scheme"] in ("fp32", "symmetric", "hybrid")
                    and r["value"] is not None and r["calibrator"] in (None, "minmax", "redistribution")])
    ax.set_ylim(max(0.0, lo - 5), 100.5)
    ax.set_ylabel("%")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("accuracy of int8 programs vs fp32 (higher is better)", fontsize=10)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "accuracy.png"
    fig.savefig(dest, dpi=120)
    plt.close(fig)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent.parent / "results")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RESULTS/plots)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.results / "plots"
    for name, fn in (("latency.json", plot_latency), ("accuracy.json", plot_accuracy)):
        src = args.results / name
        if src.exists():
            logger.info("wrote %s", fn(src, out))
        else:
            logger.warning("no %s", src)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
