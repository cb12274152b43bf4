"""Schedule templates of the NHWC integer kernels: tensorized register tiles with tunable sizes.

Every heavy kernel of :mod:`tvm_arq.ops.conv_nhwc` carries a block annotation
``schedule_rule = <rule name>``. One template per kernel family serves twice:

- as a **MetaSchedule custom rule**: ``ApplyCustomRule`` (the first of MetaSchedule's default CPU
  rules) calls the global function ``s_tir.meta_schedule.cpu.<rule name>``, registered here, which
  applies the template with its tile sizes *sampled* (``sample_perfect_tile``), so the tuner searches
  a space in which every candidate is tensorized (and never one that is not);
- as the **default schedule** of untuned builds (:class:`~tvm_arq.backends.ApplyDefaultSchedules`): the same template
  with tile sizes from a register-budget heuristic.

The packed conv template (a dense layer is a 1x1 conv) tiles the output into
``th x tw`` pixels x ``to`` blocks of ``lanes`` output channels, keeps the ``th*tw*to`` accumulators
of a tile in vector registers across the whole reduction (``KH, KW, C/kgroup``), calls the target's
dot-product intrinsic on each ``[sub_lanes, kgroup]`` block, and requantizes the tile right after
its reduction (the epilogue is computed at the tile, so int32 accumulators never reach memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from ..layoutspec import OPAQUE, DepthwiseTarget, PackedConvTarget
from ..ops.common import SCHEDULE_RULE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvTile:
    """Register tile of the packed conv template (output rows, columns, lane blocks, loop order)."""

    th: int
    tw: int
    to: int
    channel_outer: bool = False


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_conv_tile(oh: int, ow: int, oblocks: int, cfg: PackedConvTarget, channels: int | None = None) -> ConvTile:
    """Largest register tile within ``cfg.acc_budget`` (prefer wide rows, then two lane blocks).

    When the output channels are not a multiple of ``cfg.lanes`` (e.g. 24), a tile covering fewer lane
    blocks than the layer has ends in a partial block: its epilogue is predicated, which TVM cannot
    vectorize (3-4x slower conv). Such layers take all their lane blocks in one tile when they have at
    most 4.
    """
    best: tuple[tuple[int, int, int], ConvTile] | None = None
    ragged = channels is not None and channels % cfg.lanes != 0 and oblocks <= 4
    for to in _divisors(oblocks):
        if to > 4 or (ragged and to != oblocks):
            continue
        for tw in _divisors(ow):
            if tw > cfg.max_tile_w:
                continue
            for th in _divisors(oh):
                if th > 4:
                    continue
                size = th * tw * to
                if size > cfg.acc_budget:
                    continue
                key = (size, tw, -th)
                if best is None or key > best[0]:
                    best = (key, ConvTile(th, tw, to))
    assert best is not None
    tile = best[1]
    # deep layers: many weights, few pixels -> iterate channel blocks outermost (weights stay cached)
    return ConvTile(tile.th, tile.tw, tile.to, channel_outer=oh * ow < 16 * 16)


def _loop_extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _producer_compute(sch: s_tir.Schedule, block):
    """The padding/shift stage feeding ``block`` inside the same PrimFunc, if any."""
    out = []
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith("pad"):
            out.append(p)
    return out


def _schedule_elementwise(sch: s_tir.Schedule, block, vector: int, vectorize: bool = True) -> None:
    """Parallelize the outer loops of a root-level element-wise stage, vectorize its innermost."""
    loops = sch.get_loops(block)
    if len(loops) >= 3:
        outer = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
        sch.parallel(outer)
    inner = loops[-1]
    if not vectorize:
        return
    ext = _loop_extent(sch, inner)
    if ext >= vector and ext % vector == 0:
        _, vi = sch.split(inner, [None, vector])
        sch.vectorize(vi)
    elif ext <= 64:
        sch.vectorize(inner)


def schedule_packed_conv(sch: s_tir.Schedule, block, cfg: PackedConvTarget, tile: ConvTile | None = None,
                         channel_outer: bool = False) -> None:
    """Apply the packed conv template to ``block``.

    With ``tile=None`` the tile sizes are sampled (MetaSchedule design space) and ``channel_outer``
    picks the loop order; otherwise ``tile`` fixes both.
    """
    consumers = sch.get_consumers(block)
    pads = _producer_compute(sch, block)
    b, i, j, o, ry, rx, rc = sch.get_loops(block)
    oh, ow, ob = _loop_extent(sch, i), _loop_extent(sch, j), _loop_extent(sch, o) // cfg.lanes
    oo, oi = sch.split(o, [None, cfg.lanes])
    rco, rci = sch.split(rc, [None, cfg.kgroup])
    if tile is None:
        fi = sch.sample_perfect_tile(i, n=2, max_innermost_factor=4)
        fj = sch.sample_perfect_tile(j, n=2, max_innermost_factor=cfg.max_tile_w)
        fo = sch.sample_perfect_tile(oo, n=2, max_innermost_factor=4)
    else:
        fi, fj, fo = [oh // tile.th, tile.th], [ow // tile.tw, tile.tw], [ob // tile.to, tile.to]
        channel_outer = tile.channel_outer
    io, ii = sch.split(i, fi)
    jo, ji = sch.split(j, fj)
    ooo, ooi = sch.split(oo, fo)
    outer = [b, ooo, io, jo] if channel_outer else [b, io, jo, ooo]
    if cfg.sub_lanes < cfg.lanes:
        lane_loops = list(sch.split(oi, [None, cfg.sub_lanes]))
    else:
        lane_loops = [oi]
    inner = [ii, ji, ooi, rci, *lane_loops] if cfg.intrin is None else [ii, ji, ooi, *lane_loops, rci]
    sch.reorder(*outer, ry, rx, rco, *inner)
    fused = sch.fuse(*outer)
    sch.parallel(fused)
    for c in consumers:
        sch.reverse_compute_at(c, fused, preserve_unit_loops=True)
        last = sch.get_loops(c)[-1]
        ext = _loop_extent(sch, last)
        for vec in (cfg.epilogue_vector, 8, 4):
            if vec <= ext and ext % vec == 0:
                _, lv = sch.split(last, [None, vec])
                sch.vectorize(lv)
                break
    if cfg.intrin is None:
        # (vectorize before decompose_reduction: a reduction block without init cannot be vectorized)
        sch.vectorize(lane_loops[-1])
    init = sch.decompose_reduction(block, ry)
    # the init block has every inner loop but the reduction loop ``rci`` (the fused outer loop stays parallel)
    init_inner = sch.get_loops(init)[-(len(inner) - 1):]
    sch.vectorize(init_inner[-1])
    for lp in init_inner[:-1]:
        sch.unroll(lp)
    if cfg.intrin is not None:
        sch.tensorize(lane_loops[-1], cfg.intrin)
        for lp in [ii, ji, ooi, *lane_loops[:-1]]:
            sch.unroll(lp)
    else:
        for lp in [ii, ji, ooi, rci, *lane_loops[:-1]]:
            sch.unroll(lp)
    for p in pads:
        _schedule_elementwise(sch, p, 64, cfg.vectorize_pad)


def schedule_depthwise(sch: s_tir.Schedule, block, cfg: DepthwiseTarget, tile: tuple[int, int] | None = None) -> None:
    """NHWC depthwise template: channels vectorized, a row segment of ``tw`` pixels in registers."""
    consumers = sch.get_consumers(block)
    pads = _producer_compute(sch, block)
    b, i, j, k, ry, rx = sch.get_loops(block)
    c, ow = _loop_extent(sch, k), _loop_extent(sch, j)
    if tile is None:
        fk = sch.sample_perfect_tile(k, n=2, max_innermost_factor=cfg.max_vector)
        fj = sch.sample_perfect_tile(j, n=2, max_innermost_factor=8)
    else:
        tw, vec = tile
        fk, fj = [c // vec, vec], [ow // tw, tw]
    ko, ki = sch.split(k, fk)
    jo, ji = sch.split(j, fj)
    sch.reorder(b, i, jo, ko, ry, rx, ji, ki)
    fused = sch.fuse(b, i)
    sch.parallel(fused)
    for cons in consumers:
        sch.reverse_compute_at(cons, ko, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(cons)[-1])
    sch.vectorize(ki)
    sch.unroll(ji)
    sch.unroll(rx)
    sch.unroll(ry)
    init = sch.decompose_reduction(block, ry)
    il = sch.get_loops(init)
    sch.vectorize(il[-1])
    sch.unroll(il[-2])
    for p in pads:
        _schedule_elementwise(sch, p, 64, cfg.vectorize_pad)


def default_depthwise_tile(ow: int, c: int, cfg: DepthwiseTarget) -> tuple[int, int]:
    """``(tw, vector)``: the widest channel vector dividing ``C``, then the widest pixel run that fits."""
    vec = max(d for d in _divisors(c) if d <= cfg.max_vector)
    blocks = max(1, vec // 16)
    tw = max(d for d in _divisors(ow) if d * blocks <= cfg.acc_budget and d <= 8)
    return tw, vec


# --------------------------------------------------------------------------------------------------
# registry of rules


@dataclass(frozen=True)
class _Rule:
    kind: str  # "packed_conv" | "depthwise"
    cfg: PackedConvTarget | DepthwiseTarget


_RULES: dict[str, _Rule] = {}


def _custom_rule(rule: _Rule) -> Callable:
    def apply(sch: s_tir.Schedule, block) -> list[s_tir.Schedule]:
        if rule.kind == "packed_conv":
            alt = sch.copy()
            schedule_packed_conv(sch, block, rule.cfg, channel_outer=False)
            # a second design space: lane blocks outermost (deep layers: weights stay in cache)
            schedule_packed_conv(alt, block, rule.cfg, channel_outer=True)
            return [sch, alt]
        schedule_depthwise(sch, block, rule.cfg)
        return [sch]

    return apply


def register_rule(kind: str, cfg: PackedConvTarget | DepthwiseTarget) -> str:
    """Register a template as MetaSchedule custom rule ``s_tir.meta_schedule.cpu.<cfg.rule>`` (idempotent)."""
    rule = _Rule(kind, cfg)
    if _RULES.get(cfg.rule) != rule:
        _RULES[cfg.rule] = rule
        tvm_ffi.register_global_func(f"s_tir.meta_schedule.cpu.{cfg.rule}", _custom_rule(rule), override=True)
    return cfg.rule


def _rule_block(sch: s_tir.Schedule) -> tuple[str, str] | None:
    """``(block name, rule name)`` of the first top-level block annotated with one of our rules."""
    root = sch.get_sblock("root")
    for blk in sch.get_child_blocks(root):
        node = sch.get(blk)
        if SCHEDULE_RULE in node.annotations:
            name = str(node.annotations[SCHEDULE_RULE])
            if name in _RULES:
                return node.name_hint, name
    return None


def rule_of(func: tirx.PrimFunc) -> tuple[str, str] | None:
    """``(block name, rule name)`` of the block of ``func`` annotated with one of our rules, if any."""
    return _rule_block(s_tir.Schedule(tvm.IRModule({"main": func})))


def default_schedule(func: tirx.PrimFunc) -> s_tir.Schedule | None:
    """The (traced) default schedule of a templated kernel: template + heuristic tile sizes.

    ``None`` when ``func`` has no rule of ours or is already scheduled. The trace replays on the
    kernel (MetaSchedule databases store it as a record of the task).
    """
    if func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False)):
        return None
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    hit = _rule_block(sch)
    if hit is None:
        return None
    block_name, rule_name = hit
    rule = _RULES[rule_name]
    block = sch.get_sblock(block_name)
    loops = sch.get_loops(block)
    if rule.kind == "packed_conv":
        cfg = rule.cfg
        oh, ow, ob = (_loop_extent(sch, loops[k]) for k in (1, 2, 3))
        consumers = sch.get_consumers(block)
        channels = _loop_extent(sch, sch.get_loops(consumers[0])[-1]) if consumers else None
        schedule_packed_conv(sch, block, cfg, default_conv_tile(oh, ow, ob // cfg.lanes, cfg, channels))
    else:
        ow, c = _loop_extent(sch, loops[2]), _loop_extent(sch, loops[3])
        schedule_depthwise(sch, block, rule.cfg, default_depthwise_tile(ow, c, rule.cfg))
    return sch


#: NHWC window kernels without a tuning template that still get a default schedule (untuned builds)
POOL_KERNELS = ("qmaxpool2d_nhwc", "qavgpool2d_nhwc")


def schedule_pool_nhwc(sch: s_tir.Schedule, vector: int = 32, vectorize_compute: bool = True) -> None:
    """Default schedule of an NHWC pooling kernel: rows in parallel, channels in vector lanes.

    With ``vectorize_compute=False`` only the padding copy is vectorized (the average pool: its int32
    window sum and int64 floor division do not vectorize on every target, TVM's RVV codegen fails a
    lane check).
    """
    root = sch.get_sblock("root")
    for blk in sch.get_child_blocks(root):
        loops = sch.get_loops(blk)
        if len(loops) < 4:
            continue
        b, i, j, k = loops[:4]
        c = _loop_extent(sch, k)
        vec = max(d for d in _divisors(c) if d <= vector)
        if len(loops) == 6:  # window reduction: b, i, j, k, ry, rx
            ry, rx = loops[4:]
            ko, ki = sch.split(k, [None, vec])
            sch.reorder(b, i, j, ko, ry, rx, ki)
            sch.unroll(rx)
        else:
            ko, ki = sch.split(k, [None, vec])
        sch.parallel(sch.fuse(b, i))
        if vec > 1 and (vectorize_compute or sch.get(blk).name_hint == "pad"):
            sch.vectorize(ki)


def schedule_qmatmul(sch: s_tir.Schedule, vector: int = 16) -> None:
    """Default (untuned) schedule of a ``qmatmul`` kernel (:mod:`tvm_arq.ops.matmul`), in place.

    Rows (batch x M) in parallel; per row, blocks of ``vector`` output columns whose int32 accumulators stay
    in vector registers across the whole reduction (``k`` outer, the column block inner and vectorized: each
    step is a broadcast multiply-accumulate); the requantization epilogue (which also reads the row and column
    sums) is a parallel, vectorized element-wise pass. Not tensorized with a dot-product intrinsic (see the module docstring of
    :mod:`tvm_arq.ops.matmul`); MetaSchedule tunes the kernel with its generic CPU rules.
    """
    acc = sch.get_sblock("acc")
    out = sch.get_sblock("qmatmul")
    *outer, j, r = sch.get_loops(acc)
    n = _loop_extent(sch, j)
    vec = max(d for d in _divisors(n) if d <= vector)
    jo, ji = sch.split(j, [None, vec])
    sch.reorder(*outer, jo, r, ji)
    row = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.parallel(row)
    if vec > 1:
        sch.vectorize(ji)  # (before decompose_reduction, as in the conv template)
    init = sch.decompose_reduction(acc, r)
    if vec > 1:
        sch.vectorize(sch.get_loops(init)[-1])
    # the epilogue also reads the row / column sums (computed at the root): a root-level element-wise pass
    _schedule_elementwise(sch, out, vec, vec > 1)


def apply_default_schedule(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """Schedule one kernel with its template and heuristic tile sizes; ``None`` if it has no rule
    (or is already scheduled)."""
    op = str(func.attrs.get("arq.op", "")) if func.attrs is not None else ""
    if op == "qmatmul" and not bool(func.attrs.get("tirx.is_scheduled", False)):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        schedule_qmatmul(sch)
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    if op in POOL_KERNELS and not bool(func.attrs.get("tirx.is_scheduled", False)):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        schedule_pool_nhwc(sch, vectorize_compute=op != "qavgpool2d_nhwc")
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    sch = default_schedule(func)
    if sch is None:
        return None
    out = sch.mod["main"]
    return out.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", OPAQUE)


__all__ = [
    "OPAQUE",
    "POOL_KERNELS",
    "ConvTile",
    "DepthwiseTarget",
    "PackedConvTarget",
    "apply_default_schedule",
    "default_conv_tile",
    "default_depthwise_tile",
    "default_schedule",
    "register_rule",
    "rule_of",
    "schedule_depthwise",
    "schedule_packed_conv",
    "schedule_qmatmul",
]
