"""Tile counts and tile-box choice: which KV tiles each Q tile visits, and the boxes a kernel
call uses.

All window math comes from :mod:`jax_gna.semantics`: each spatial dim gets its
``tile_map_1d`` (dilation groups tiled separately, group-local coordinates), and the n-D
picture is the Cartesian product of the per-dim pictures, because a GNA neighborhood is the
AND of independent per-dim windows:

* an n-D Q tile is one Q tile per dim; the KV tiles it visits are the product of the
  per-dim visited ranges, so its visited count is the product of the per-dim counts;
* an n-D KV tile is interior (every query of the Q tile sees every key of it) iff it is
  interior along every dim, so the interior count is the product of per-dim interior counts.

Per-dim counts therefore combine with an outer product into arrays over the Q-tile grid;
nothing loops over n-D tiles, so 3-D video problems with thousands of Q tiles cost
milliseconds.

The CUDA lowering calls :func:`best_boxes`; the tile simulator (``jax_gna.simulator``) builds
its figures and rankings on this module. It depends on nothing but ``semantics`` and numpy.

The halo forward (``xla_ffi/cuda/halo``) has no KV tiles: each Q tile loads its *halo*, the
box of keys its queries see together (per dim, from the window start of its first query to
the window end of its last: ``TileMap1D.kv_start`` / ``kv_end``), in chunks of keys.
:func:`halo_stats` gives the figures of a Q box and :func:`best_halo_box` the box that
minimises the halo keys loaded (both per-dim products, like the tile counts above).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Iterable, Sequence

import numpy as np

from jax_gna import semantics

__all__ = ["DimTileCounts", "dim_tile_counts", "TileCounts", "tile_counts",
           "power_of_two_boxes", "default_candidates", "box_visited", "OBJECTIVES",
           "check_objective", "ranked",
           "best_boxes", "HaloStats", "halo_stats", "best_halo_box",
           "inverse_halo_extents"]

# Figures that may be maximised; ties fall through to the next ones in this order, then to
# fewer boundary tiles (less masking work). The default, tile_work_speedup, is what a
# kernel's time follows (visited tile pairs, whole tiles); mean_tile_speedup counts a dim's
# padding as self-attention work too, so ranking by it favoured tiles that pad (Cosmos
# 16x44x80, stride 1x8x16: Q 1x8x16, 6 tiles for 44 rows, over 2x4x16, 11 tiles: 9% more
# tile pairs).
OBJECTIVES = ("tile_work_speedup", "mean_tile_speedup", "worst_tile_speedup")


@dataclasses.dataclass(frozen=True)
class DimTileCounts:
    """Per-dim summary of a tile map: counts indexed by the dim's Q tile (all groups)."""

    tile_map: semantics.TileMap1D
    visited: np.ndarray        # KV tiles visited by each Q tile along this dim
    interior: np.ndarray       # how many of those are interior along this dim
    num_kv_tiles: int          # KV tiles along this dim (all dilation groups)


@functools.lru_cache(maxsize=4096)
def dim_tile_counts(length: int, kernel_size: int, stride: int, dilation: int,
                    causal: bool, q_tile: int, kv_tile: int) -> DimTileCounts:
    """Visited/interior KV-tile counts per Q tile along one dim (cached: rankings reuse).

    ``TileMap1D.interior`` is the one definition of an interior tile; calling it once per
    per-dim Q tile is cheap (a dim has at most a few thousand Q tiles) and keeps this
    module free of window math.
    """
    tm = semantics.tile_map_1d(length, kernel_size, stride, dilation, causal, q_tile, kv_tile)
    visited = (tm.kv_tile_last - tm.kv_tile_first).astype(np.int64)
    interior = np.fromiter((int(np.count_nonzero(tm.interior(t)))
                            for t in range(tm.num_q_tiles)), np.int64, tm.num_q_tiles)
    for arr in (visited, interior):
        arr.setflags(write=False)   # shared through the cache
    return DimTileCounts(tm, visited, interior, tm.num_kv_tiles)


def outer_product(vectors: Sequence[np.ndarray]) -> np.ndarray:
    out = np.ones((), np.int64)
    for v in vectors:
        out = np.multiply.outer(out, v)
    return out


@dataclasses.dataclass(frozen=True, eq=False)   # holds arrays: compare figures instead
class TileCounts:
    """Tile counts and figures of one (problem, Q tile, KV tile) configuration.

    Per-Q-tile arrays have the shape of the Q-tile grid (per dim: the number of Q tiles
    along that dim, summed over its dilation groups, in the order of ``tile_maps[axis]``).
    The figures are defined in ``jax_gna.simulator.simulate``.
    """

    shape: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]
    q_tile: tuple[int, ...]
    kv_tile: tuple[int, ...]
    tile_maps: tuple[semantics.TileMap1D, ...] = dataclasses.field(repr=False)
    visited: np.ndarray = dataclasses.field(repr=False)    # KV tiles visited per Q tile
    interior: np.ndarray = dataclasses.field(repr=False)   # of which interior
    boundary: np.ndarray = dataclasses.field(repr=False)   # of which boundary (need a mask)
    num_tokens: int
    self_attention_q_tiles: int
    self_attention_kv_tiles: int
    worst_tile_speedup: float
    mean_tile_speedup: float
    tile_work_speedup: float
    boundary_tile_fraction: float
    perfectly_block_sparse: bool

    @property
    def total_visited(self) -> int:
        return int(self.visited.sum())

    @property
    def total_boundary(self) -> int:
        return int(self.boundary.sum())

    def modeled_speedup(self, boundary_cost: float = 0.0) -> float:
        """``tile_work_speedup`` with each boundary tile pair costing ``1 + boundary_cost``
        unmasked ones (the element mask's price, a kernel figure: ``KernelFamily``)."""
        cost = self.total_visited + boundary_cost * self.total_boundary
        return self.tile_work_speedup * self.total_visited / cost

    def tile_coordinates(self, axis: int, tile: int, kind: str = "kv") -> np.ndarray:
        """Global coordinates along ``axis`` covered by one tile (``kind`` "q" or "kv").

        A tile lives in one dilation group, so its tokens are that group's positions of its
        group-local range -- strided in global coordinates when ``d > 1``.
        """
        tm = self.tile_maps[axis]
        if kind == "kv":
            g, lo, hi = tm.kv_group[tile], tm.kv_tile_start[tile], tm.kv_tile_end[tile]
        else:
            g, lo, hi = tm.group[tile], tm.q_start[tile], tm.q_end[tile]
        return semantics.coordinate(g, np.arange(lo, hi), tm.dilation)


def count_fields(shape: Sequence[int], params: semantics.GNAParams, q_tile: tuple[int, ...],
                 kv_tile: tuple[int, ...]) -> dict:
    """The fields of :class:`TileCounts` for a validated problem and normalised tiles."""
    shape = tuple(int(n) for n in shape)
    dims = [dim_tile_counts(n, *params.dim(ax), q_tile[ax], kv_tile[ax])
            for ax, n in enumerate(shape)]
    visited = outer_product([d.visited for d in dims])
    interior = outer_product([d.interior for d in dims])
    boundary = visited - interior
    n_tokens = math.prod(shape)
    sa_q = math.prod(-(-n // t) for n, t in zip(shape, q_tile))
    sa_kv = math.prod(-(-n // t) for n, t in zip(shape, kv_tile))
    total = int(visited.sum())
    n_boundary = int(boundary.sum())
    return dict(
        shape=shape, kernel_size=params.kernel_size, stride=params.stride,
        dilation=params.dilation, is_causal=params.is_causal, q_tile=q_tile,
        kv_tile=kv_tile, tile_maps=tuple(d.tile_map for d in dims), visited=visited,
        interior=interior, boundary=boundary, num_tokens=n_tokens,
        self_attention_q_tiles=sa_q, self_attention_kv_tiles=sa_kv,
        worst_tile_speedup=sa_kv / int(visited.max()),
        mean_tile_speedup=sa_q * sa_kv / total,
        tile_work_speedup=(float(n_tokens) * n_tokens
                           / (float(total) * math.prod(q_tile) * math.prod(kv_tile))),
        boundary_tile_fraction=n_boundary / total,
        perfectly_block_sparse=n_boundary == 0,
    )


def tile_counts(shape: Sequence[int], params: semantics.GNAParams, q_tile: Sequence[int],
                kv_tile: Sequence[int]) -> TileCounts:
    """Tile counts of a validated problem (``semantics.make_params``) for one tile pair."""
    return TileCounts(**count_fields(shape, params, tuple(int(t) for t in q_tile),
                                     tuple(int(t) for t in kv_tile)))


# ----------------------------------------------------------------------------------------
# Candidates and ranking
# ----------------------------------------------------------------------------------------


def power_of_two_boxes(volume: int, shape: Sequence[int]) -> list[tuple[int, ...]]:
    """All boxes with power-of-two sides and exactly ``volume`` tokens, for ``shape``.

    A side longer than the next power of two >= that dim's length would only add padding,
    so such boxes are left out (unless nothing else reaches the volume).
    """
    if volume < 1 or volume & (volume - 1):
        raise ValueError(f"tile volume must be a power of two; got {volume}")
    total = volume.bit_length() - 1
    caps = [max(0, (int(n) - 1).bit_length()) for n in shape]   # log2(next pow2 >= n)
    boxes = []
    for exps in itertools.product(range(total + 1), repeat=len(shape)):
        if sum(exps) == total and all(e <= c for e, c in zip(exps, caps)):
            boxes.append(tuple(1 << e for e in exps))
    if not boxes:   # the problem is smaller than one tile: allow overhanging sides
        boxes = [tuple(1 << e for e in exps)
                 for exps in itertools.product(range(total + 1), repeat=len(shape))
                 if sum(exps) == total]
    return boxes


def default_candidates(shape: Sequence[int], q_tokens: int = 128,
                       kv_tokens: int | Iterable[int] = (128, 64)
                       ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (Q box, KV box) pair of power-of-two sides with the given token counts."""
    kv_list = [kv_tokens] if isinstance(kv_tokens, int) else list(kv_tokens)
    q_boxes = power_of_two_boxes(q_tokens, shape)
    kv_boxes = [b for v in kv_list for b in power_of_two_boxes(v, shape)]
    return [(q, kv) for q in q_boxes for kv in kv_boxes]


def box_visited(result: TileCounts, query_box: Sequence[tuple[int, int]]) -> int:
    """(Q tile, KV tile) pairs a kernel visits when it computes only the Q tiles holding a
    query of ``query_box`` (``(lo, hi)`` per dim, global coordinates): the work of a
    box-restricted call, forward (per Q tile) and backward (the same pairs, KV-major)."""
    keep = []
    for axis, (lo, hi) in enumerate(query_box):
        n = result.visited.shape[axis]
        keep.append(np.array([bool(np.any((c >= lo) & (c < hi))) for c in
                              (result.tile_coordinates(axis, t, "q") for t in range(n))]))
    return int(result.visited[np.ix_(*keep)].sum())


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")


def ranked(results: Sequence[TileCounts], objective: str = "tile_work_speedup",
           boundary_cost: float = 0.0,
           query_box: Sequence[tuple[int, int]] | None = None) -> list:
    """``results`` best first by ``objective`` (higher is better; ties fall through to the
    other ``OBJECTIVES``, then to fewer boundary tiles; equal candidates keep their order).

    With the default objective a boundary tile pair counts ``1 + boundary_cost`` unmasked
    ones (:meth:`TileCounts.modeled_speedup`). With ``query_box`` (only those queries are
    computed, e.g. a context-parallel slab inside its halo window), candidates are ranked
    first by the tile pairs visited for the box (:func:`box_visited`, fewer is better): Q
    tiles that straddle the box edges cost whole tiles, so a tile that divides the box can
    beat the grid's best.
    """
    check_objective(objective)
    if not results:
        raise ValueError("ranking tiles needs at least one candidate")
    order = (objective,) + tuple(o for o in OBJECTIVES if o != objective)

    box_cost = {}
    if query_box is not None:
        shape = results[0].shape
        box = tuple((int(lo), int(hi)) for lo, hi in query_box)
        if len(box) != len(shape) or any(not 0 <= lo < hi <= n
                                         for (lo, hi), n in zip(box, shape)):
            raise ValueError(f"query_box {query_box} is not a non-empty box inside {shape}")
        box_cost = {id(r): box_visited(r, box) for r in results}

    def figure(r: TileCounts, name: str) -> float:
        if name == "tile_work_speedup":
            return r.modeled_speedup(boundary_cost)
        return getattr(r, name)

    def key(r: TileCounts):
        return ((box_cost.get(id(r), 0),) + tuple(-figure(r, o) for o in order)
                + (r.boundary_tile_fraction,))

    return sorted(results, key=key)   # stable: equal candidates keep the given order


@functools.lru_cache(maxsize=256)
def best_boxes(spatial_shape: tuple, params: semantics.GNAParams, q_tokens: int,
               kv_tokens: int, max_sides: tuple, query_box: tuple | None = None,
               boundary_cost: float = 0.0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(Q box, KV box) with power-of-two sides and these token counts that a kernel call
    should use: the best ``tile_work_speedup`` (boundary tiles weighted by the family's
    ``boundary_cost``), among boxes whose sides respect ``max_sides`` (all boxes if none
    does); for a call with a ``query_box``, ranked first by the tile pairs it visits."""
    fits = lambda box: all(t <= m for t, m in zip(box, max_sides))  # noqa: E731
    everything = default_candidates(spatial_shape, q_tokens, kv_tokens)
    candidates = [(q, kv) for q, kv in everything if fits(q) and fits(kv)] or everything
    results = [tile_counts(spatial_shape, params, q, kv) for q, kv in candidates]
    best = ranked(results, "tile_work_speedup", boundary_cost, query_box)[0]
    return best.q_tile, best.kv_tile


# ----------------------------------------------------------------------------------------
# Halo boxes (the halo forward)
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HaloStats:
    """The halos of one Q box over a problem's Q tiles (the figures the halo forward's
    admission and box choice use; ``xla_ffi/cuda/halo/halo_plan.h`` computes max_extent the
    same way, over every Q tile of every dilation group)."""

    q_box: tuple[int, ...]
    max_extent: tuple[int, ...]   # largest halo side per dim over all Q tiles
    max_tokens: int               # largest halo (keys one Q tile loads): prod(max_extent)
    num_q_tiles: int              # Q tiles counted below (those of the query box, if any)
    total_tokens: int             # halo keys loaded, summed over those Q tiles
    total_chunks: int             # sum of ceil((halo + num_extra) / chunk): the steps run


@functools.lru_cache(maxsize=4096)
def _halo_extents_1d(length: int, kernel_size: int, stride: int, dilation: int, causal: bool,
                     q_tile: int) -> tuple[np.ndarray, tuple]:
    """Per Q tile of one dim (all groups, ``TileMap1D`` order): the halo extent, and the
    global coordinates of the tile's queries (for query boxes)."""
    tm = semantics.tile_map_1d(length, kernel_size, stride, dilation, causal, q_tile, q_tile)
    extent = (tm.kv_end - tm.kv_start).astype(np.int64)
    extent.setflags(write=False)
    coords = tuple(semantics.coordinate(tm.group[t], np.arange(tm.q_start[t], tm.q_end[t]),
                                        dilation) for t in range(tm.num_q_tiles))
    return extent, coords


@functools.lru_cache(maxsize=1024)
def halo_stats(spatial_shape: tuple, params: semantics.GNAParams, q_box: tuple,
               num_extra: int = 0, chunk: int = 64,
               query_box: tuple | None = None) -> HaloStats:
    """Halo figures of Q box ``q_box`` (``max_*`` over every Q tile of the grid; the totals
    over the Q tiles holding a query of ``query_box``, or all)."""
    per_dim, kept = [], []
    for axis, n in enumerate(spatial_shape):
        extent, coords = _halo_extents_1d(int(n), *params.dim(axis), int(q_box[axis]))
        per_dim.append(extent)
        if query_box is None:
            kept.append(np.ones(extent.shape, bool))
        else:
            lo, hi = query_box[axis]
            kept.append(np.array([bool(np.any((c >= lo) & (c < hi))) for c in coords]))
    tokens = outer_product(per_dim)
    keep = outer_product([k.astype(np.int64) for k in kept]).astype(bool)
    chunks = -(-(tokens + int(num_extra)) // int(chunk))
    max_extent = tuple(int(e.max()) for e in per_dim)
    return HaloStats(q_box=tuple(int(t) for t in q_box), max_extent=max_extent,
                     max_tokens=math.prod(max_extent), num_q_tiles=int(keep.sum()),
                     total_tokens=int(tokens[keep].sum()), total_chunks=int(chunks[keep].sum()))


@functools.lru_cache(maxsize=1024)
def inverse_halo_extents(spatial_shape: tuple, params: semantics.GNAParams,
                         kv_box: tuple) -> tuple[int, ...]:
    """Largest inverse halo side per dim over every KV box ``kv_box`` of the grid: the queries
    that see any key of one box (``TileMap1D.kv_q_start`` / ``kv_q_end``), the halo
    backward's dK/dV work per query head (``xla_ffi/cuda/halo/halo_plan.h``
    max_inverse_halo_extent computes the same)."""
    out = []
    for axis, n in enumerate(spatial_shape):
        k, s, d, c = params.dim(axis)
        tm = semantics.tile_map_1d(int(n), k, s, d, c, int(kv_box[axis]), int(kv_box[axis]))
        out.append(max(0, int((tm.kv_q_end - tm.kv_q_start).max())))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def best_halo_box(spatial_shape: tuple, params: semantics.GNAParams, q_tokens: int,
                  max_sides: tuple, num_extra: int = 0, chunk: int = 64,
                  max_tokens: int | None = None, max_side: int | None = None,
                  query_box: tuple | None = None) -> tuple[int, ...]:
    """The Q box (power-of-two sides, ``q_tokens`` tokens, sides within ``max_sides``) the
    halo forward should use: among the boxes whose largest halo respects ``max_tokens`` and
    ``max_side`` per dim (all boxes if none does), the fewest halo keys loaded over the Q
    tiles (``HaloStats.total_tokens``: the kernel is bound by moving them), then the fewest
    key chunks (steps run), then the smallest largest halo (shared memory); ties keep
    ``power_of_two_boxes`` order."""
    fits = lambda box: all(t <= m for t, m in zip(box, max_sides))  # noqa: E731
    boxes = power_of_two_boxes(q_tokens, spatial_shape)
    boxes = [b for b in boxes if fits(b)] or boxes

    def key(i_box):
        i, box = i_box
        s = halo_stats(tuple(spatial_shape), params, box, num_extra, chunk, query_box)
        over = ((max_tokens is not None and s.max_tokens > max_tokens)
                or (max_side is not None and max(s.max_extent) > max_side))
        return (over, s.total_tokens, s.total_chunks, s.max_tokens, i)

    return min(enumerate(boxes), key=key)[1]
