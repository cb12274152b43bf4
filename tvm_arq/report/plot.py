"""PNG of the per-layer SQNR of one or more reports (matplotlib, imported only when plotting)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .render import fmt_db, union_names

if TYPE_CHECKING:
    from .records import QuantReport

__all__ = ["plot_sqnr"]

_KIND_MARKERS = {"one_sided": "o", "symmetric": "s", "asymmetric": "^"}


def plot_sqnr(reports: dict[str, QuantReport], path_png: str | Path, title: str | None = None) -> Path:
    """PNG of sim SQNR by layer, one line per report (e.g. ``{"hybrid": r1, "symmetric": r2}``).

    Marker shape shows each tensor's range kind; a cross marks tensors produced by a float fallback;
    dashed horizontal lines show each report's end-to-end integer output SQNR. Infinite SQNR is drawn at the
    top edge.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    if not reports:
        raise ValueError("plot_sqnr needs at least one report")
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'tvm_arq[plot]'") from e

    names = union_names(reports)
    x_of = {n: i for i, n in enumerate(names)}
    finite = [t.sqnr_db for r in reports.values() for t in r.tensors
              if t.sqnr_db is not None and math.isfinite(t.sqnr_db)]
    finite += [o.sqnr_int_db for r in reports.values() for o in r.outputs
               if o.sqnr_int_db is not None and math.isfinite(o.sqnr_int_db)]
    top = (max(finite) if finite else 60.0) + 5.0
    bottom = min(0.0, min(finite) - 5.0) if finite else 0.0

    width = float(np.clip(2.5 + 0.28 * len(names), 7.0, 30.0))
    fig = Figure(figsize=(width, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    handles = []
    for c_i, (label, r) in enumerate(reports.items()):
        color = colors[c_i % len(colors)]
        pts = [(x_of[t.name], t) for t in r.tensors if t.sqnr_db is not None and not math.isnan(t.sqnr_db)]
        xs = [x for x, _ in pts]
        ys = [min(t.sqnr_db, top) if t.sqnr_db > -math.inf else bottom for _, t in pts]
        ax.plot(xs, ys, "-", color=color, lw=1.3, alpha=0.8)
        for kind, marker in _KIND_MARKERS.items():
            sel = [(x, y) for (x, t), y in zip(pts, ys, strict=True) if t.kind == kind]
            if sel:
                ax.scatter([s[0] for s in sel], [s[1] for s in sel], marker=marker, color=color, s=28, zorder=3)
        fb = [(x, y) for (x, t), y in zip(pts, ys, strict=True) if t.domain == "float"]
        if fb:
            ax.scatter([s[0] for s in fb], [s[1] for s in fb], marker="x", color="black", s=50, zorder=4)
        out = ", ".join(fmt_db(o.sqnr_int_db) for o in r.outputs)
        for o in r.outputs:
            if o.sqnr_int_db is not None and math.isfinite(o.sqnr_int_db):
                ax.axhline(o.sqnr_int_db, color=color, ls="--", lw=1.0, alpha=0.7)
        handles.append(Line2D([], [], color=color, lw=1.5,
                              label=f"{label} (min {fmt_db(r.summary()['min_sqnr_db'])} dB; output {out} dB)"))
    kinds_seen = {t.kind for r in reports.values() for t in r.tensors}
    for kind, marker in _KIND_MARKERS.items():
        if kind in kinds_seen:
            handles.append(Line2D([], [], ls="", marker=marker, color="gray", label=kind.replace("_", "-")))
    if any(t.domain == "float" for r in reports.values() for t in r.tensors):
        handles.append(Line2D([], [], ls="", marker="x", color="black", label="float-fallback producer"))
    handles.append(Line2D([], [], ls="--", color="gray", label="end-to-end output (integer build)"))

    step = max(1, math.ceil(len(names) / 80))
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=90, fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(bottom, top + 2.0)
    ax.set_xlabel("quantization point (graph order)")
    ax.set_ylabel("SQNR vs fp32 (dB)")
    n_samples = sorted({r.n_samples for r in reports.values()})
    ax.set_title(title or f"Per-layer SQNR on calibration data ({'/'.join(map(str, n_samples))} samples)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="best")
    p = Path(path_png)
    fig.savefig(p)
    return p
