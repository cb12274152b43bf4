"""Text rendering of reports: the per-layer table and a side-by-side comparison of several reports."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import QuantReport

__all__ = ["accuracy_text", "compare_text", "fmt_db", "fmt_num", "report_text", "table", "union_names"]


def fmt_db(v: float | None) -> str:
    """A dB value for tables: two decimals, ``inf``/``-inf``, ``n/a`` for None."""
    if v is None:
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.2f}"


def fmt_num(v: float | None) -> str:
    """A number for tables: four significant digits, ``n/a`` for None."""
    return "n/a" if v is None else f"{v:.4g}"


def table(header: list[str], rows: list[list[str]], right: set[str]) -> list[str]:
    """Aligned text table (header, rule, rows); columns named in ``right`` are right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        out = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header, strict=True)]
        return "  ".join(out).rstrip()

    return [fmt(header), "-" * len(fmt(["-" * w for w in widths]))] + [fmt(r) for r in rows]


def report_text(rep: QuantReport) -> str:
    """Aligned, human-readable table of one report: header, tensors, outputs, fallbacks, summary."""
    lines = [
        f"per-layer quantization report: scheme={rep.scheme} calibrator={rep.calibrator} "
        f"target={rep.target} act_dtype={rep.act_dtype} samples={rep.n_samples}",
        "SQNR vs fp32 in dB. sim: integer model's tensor (fake-quant simulation, upstream error included);"
        " own: this tensor's own range/rounding only.",
        "",
    ]
    header = ["#", "tensor", "producer", "domain", "kind", "dtype", "alpha", "beta", "scale", "zp",
              "sim dB", "own dB", "clip%", "rule"]
    right = {"#", "alpha", "beta", "scale", "zp", "sim dB", "own dB", "clip%"}
    rows = [[str(i), t.name, t.producer, t.domain, t.kind, t.dtype, f"{t.alpha:.4g}", f"{t.beta:.4g}",
             f"{t.scale:.4g}", str(t.zero_point), fmt_db(t.sqnr_db), fmt_db(t.own_sqnr_db),
             f"{100.0 * t.clipped_fraction:.2f}", t.rule] for i, t in enumerate(rep.tensors)]
    lines += table(header, rows, right)
    lines.append("")
    for o in rep.outputs:
        lines.append(f"output[{o.index}] {tuple(o.shape)}: integer build {fmt_db(o.sqnr_int_db)} dB, "
                     f"QDQ simulation {fmt_db(o.sqnr_qdq_db)} dB, max |error| (integer) "
                     f"{fmt_num(o.max_abs_error_int)}")
    if rep.fallbacks:
        lines.append(f"float fallbacks ({len(rep.fallbacks)}): ops that ran in float between dequantize and"
                     " quantize")
        lines += ["  " + r for r in table(["var", "op", "reason"],
                                            [[f.var, f.op, f.reason] for f in rep.fallbacks], set())]
    else:
        lines.append("float fallbacks: none (fully integer between input quantize and output dequantize)")
    s = rep.summary()
    kinds = ", ".join(f"{k}={v}" for k, v in s["kinds"].items())
    lines.append(f"summary: {s['n_tensors']} tensors ({kinds}); sim SQNR min {fmt_db(s['min_sqnr_db'])} dB,"
                 f" median {fmt_db(s['median_sqnr_db'])} dB")
    if s["worst"]:
        lines.append("worst: " + ", ".join(f"{w['name']} ({w['producer']}, {w['kind']}) {fmt_db(w['sqnr_db'])}"
                                           f" dB [own {fmt_db(w['own_sqnr_db'])}]" for w in s["worst"]))
    if rep.accuracy is not None:
        lines.append(accuracy_text(rep.accuracy))
    return "\n".join(lines)


def accuracy_text(d: dict[str, Any]) -> str:
    """Text of ``model.accuracy_report.to_dict()`` (:class:`~tvm_arq.budget.AccuracyReport`)."""
    share = 100.0 * d["macs_kept"] / d["macs_total"] if d["macs_total"] else 0.0
    lines = [
        f"accuracy budget ({d['metric']}, {d['n_samples']} samples): fp32 {d['fp32']:.2f}, all-int8 "
        f"{d['int8']:.2f} (drop {d['int8_drop']:.2f}), final {d['final']:.2f} (drop {d['drop']:.2f}, max "
        f"{d['max_drop']:g}: {'met' if d['met'] else 'NOT met'}); {d['evaluations']} candidate(s) in "
        f"{d['seconds']:.1f} s",
    ]
    if d["kept"]:
        lines.append(f"kept in higher precision ({len(d['kept'])} layer(s), {d['macs_kept']:,} of "
                     f"{d['macs_total']:,} MACs = {share:.1f} % in float):")
        for k in d["kept"]:
            extra = f" (+ {', '.join(k['layers'][1:])})" if len(k["layers"]) > 1 else ""
            lines.append(f"  {k['name']}{extra}: {k['precision']}, sensitivity rank {k['rank']}, "
                         f"{k['macs']:,} MACs, {k['op']}")
    else:
        lines.append("kept in higher precision: nothing (all-int8 meets the budget)")
    lat = d.get("latency")
    if lat:
        lines.append(f"latency: final {lat['final_ms']:.3f} ms vs all-int8 {lat['int8_ms']:.3f} ms "
                     f"({lat.get('note', '')})")
    return "\n".join(lines)


def compare_text(reports: dict[str, QuantReport]) -> str:
    """Side-by-side SQNR table of several reports of the same model (e.g. hybrid vs symmetric)."""
    labels = list(reports)
    names = union_names(reports)
    header = ["tensor", "producer"]
    for lb in labels:
        header += [f"{lb} kind", f"{lb} dB"]
    right = {f"{lb} dB" for lb in labels}
    rows = []
    for n in names:
        first = next(r for r in reports.values() if _has(r, n)).tensor(n)
        row = [n, first.producer]
        for lb in labels:
            t = reports[lb].tensor(n) if _has(reports[lb], n) else None
            row += [t.kind if t else "-", fmt_db(t.sqnr_db) if t else "-"]
        rows.append(row)
    lines = table(header, rows, right)
    for lb, r in reports.items():
        outs = ", ".join(f"output[{o.index}] {fmt_db(o.sqnr_int_db)} dB" for o in r.outputs)
        s = r.summary()
        lines.append(f"{lb}: integer build {outs}; sim SQNR min {fmt_db(s['min_sqnr_db'])} dB, median "
                     f"{fmt_db(s['median_sqnr_db'])} dB; float fallbacks {len(r.fallbacks)}")
    return "\n".join(lines)


def _has(r: QuantReport, name: str) -> bool:
    return any(t.name == name for t in r.tensors)


def union_names(reports: dict[str, QuantReport]) -> list[str]:
    """Tensor names of all reports, in first-seen graph order."""
    names: list[str] = []
    for r in reports.values():
        for t in r.tensors:
            if t.name not in names:
                names.append(t.name)
    return names
