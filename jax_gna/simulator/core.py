"""The n-D tile simulator: which KV tiles each Q tile visits, and the speedup bounds.

All window math comes from :mod:`jax_gna.semantics`: each spatial dim gets its
``tile_map_1d`` (dilation groups tiled separately, group-local coordinates), and the n-D
picture is the Cartesian product of the per-dim pictures, because a GNA neighborhood is
the AND of independent per-dim windows:

* an n-D Q tile is one Q tile per dim; the KV tiles it visits are the product of the
  per-dim visited ranges, so its visited count is the product of the per-dim counts;
* an n-D KV tile is interior (every query of the Q tile sees every key of it) iff it is
  interior along every dim, so the interior count is the product of per-dim interior counts.

Per-dim counts therefore combine with ``np.multiply.outer`` into arrays over the Q-tile
grid; nothing ever loops over n-D tiles, so 3-D video problems with thousands of Q tiles
cost milliseconds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import numpy as np

from jax_gna import semantics

__all__ = ["SimulationResult", "simulate", "dim_tile_counts", "default_tiles"]

# The tiles the GNA paper (arXiv 2504.16922) uses on Hopper, by spatial rank: 256 query
# tokens and 128 key tokens per tile in 2-D/3-D, 128/128 for 1-D (the suite tiles of
# docs/semantics.md, "Benchmark suite and effective FLOPs").
_DEFAULT_TILES = {
    1: ((128,), (128,)),
    2: ((16, 16), (16, 8)),
    3: ((4, 8, 8), (2, 8, 8)),
}


def default_tiles(rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(Q tile, KV tile) used when the caller names none: the paper's tiles for that rank."""
    if rank not in _DEFAULT_TILES:
        raise ValueError(f"GNA supports 1, 2 or 3 spatial dims; got rank {rank}")
    return _DEFAULT_TILES[rank]


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
    """Visited/interior KV-tile counts per Q tile along one dim (cached: best_tiles reuses).

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


def _outer_product(vectors: Sequence[np.ndarray]) -> np.ndarray:
    out = np.ones((), np.int64)
    for v in vectors:
        out = np.multiply.outer(out, v)
    return out


@dataclasses.dataclass(frozen=True, eq=False)   # holds arrays: compare figures instead
class SimulationResult:
    """Figures and per-Q-tile arrays of one (problem, Q tile, KV tile) configuration.

    Per-Q-tile arrays have the shape of the Q-tile grid ``q_tile_grid`` (per dim: the
    number of Q tiles along that dim, summed over its dilation groups, in the order of
    ``tile_maps[axis]``).
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
    attended_pairs: int | None        # sum over queries of keys seen (None: not computed)
    self_attention_q_tiles: int
    self_attention_kv_tiles: int
    flop_speedup: float | None
    worst_tile_speedup: float
    mean_tile_speedup: float
    tile_work_speedup: float
    boundary_tile_fraction: float
    perfectly_block_sparse: bool

    # -- derived sizes ---------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def q_tile_grid(self) -> tuple[int, ...]:
        return tuple(self.visited.shape)

    @property
    def num_q_tiles(self) -> int:
        return int(self.visited.size)

    @property
    def max_visited(self) -> int:
        return int(self.visited.max())

    @property
    def mean_visited(self) -> float:
        return float(self.visited.mean())

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

    @property
    def simple_flop_bound(self) -> float:
        """The simple FLOP bound ``N / prod(k)`` (docs/semantics.md; ignores causal masking)."""
        return self.num_tokens / math.prod(self.kernel_size)

    # -- per Q tile detail -----------------------------------------------------------------
    def q_tile_of(self, query: Sequence[int]) -> tuple[int, ...]:
        """Index (in ``q_tile_grid``) of the Q tile that holds the query at ``query``."""
        index = []
        for axis, (i, tm) in enumerate(zip(query, self.tile_maps)):
            if not 0 <= i < self.shape[axis]:
                raise ValueError(f"query[{axis}]={i} is outside [0, {self.shape[axis]})")
            g, ii = i % tm.dilation, i // tm.dilation
            hit = np.nonzero((tm.group == g) & (tm.q_start <= ii) & (ii < tm.q_end))[0]
            index.append(int(hit[0]))
        return tuple(index)

    def visited_kv_tiles(self, q_index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """KV tiles visited by one n-D Q tile: (``[n, rank]`` per-dim KV tile indices,
        ``[n]`` interior flags), in row-major order over the visited box."""
        per_dim = [(tm.visited(t), tm.interior(t)) for tm, t in zip(self.tile_maps, q_index)]
        idx = np.stack(np.meshgrid(*[v for v, _ in per_dim], indexing="ij"), -1)
        inner = _outer_product([f.astype(np.int64) for _, f in per_dim]).astype(bool)
        return idx.reshape(-1, self.rank), inner.reshape(-1)

    def tile_coordinates(self, axis: int, tile: int, kind: str = "kv") -> np.ndarray:
        """Global coordinates along ``axis`` covered by one tile (``kind`` "q" or "kv").

        A tile lives in one dilation group, so its tokens are ``g + d * jj`` for its
        group-local range -- strided in global coordinates when ``d > 1``.
        """
        tm = self.tile_maps[axis]
        if kind == "kv":
            g, lo, hi = tm.kv_group[tile], tm.kv_tile_start[tile], tm.kv_tile_end[tile]
        else:
            g, lo, hi = tm.group[tile], tm.q_start[tile], tm.q_end[tile]
        return g + tm.dilation * np.arange(lo, hi)

    # -- serialisation ---------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        return {
            "flop_speedup": self.flop_speedup,
            "worst_tile_speedup": self.worst_tile_speedup,
            "mean_tile_speedup": self.mean_tile_speedup,
            "tile_work_speedup": self.tile_work_speedup,
            "boundary_tile_fraction": self.boundary_tile_fraction,
            "perfectly_block_sparse": self.perfectly_block_sparse,
        }

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """Plain-JSON view: inputs, figures and counts (per-Q-tile arrays if ``arrays``)."""
        out: dict[str, Any] = {
            "shape": list(self.shape),
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "is_causal": list(self.is_causal),
            "q_tile": list(self.q_tile),
            "kv_tile": list(self.kv_tile),
            **self.figures(),
            "simple_flop_bound": self.simple_flop_bound,
            "num_tokens": self.num_tokens,
            "attended_pairs": self.attended_pairs,
            "q_tile_grid": list(self.q_tile_grid),
            "num_q_tiles": self.num_q_tiles,
            "self_attention_q_tiles": self.self_attention_q_tiles,
            "self_attention_kv_tiles": self.self_attention_kv_tiles,
            "max_visited": self.max_visited,
            "mean_visited": self.mean_visited,
            "total_visited": self.total_visited,
            "total_boundary": self.total_boundary,
        }
        if arrays:
            out["visited"] = self.visited.tolist()
            out["interior"] = self.interior.tolist()
            out["boundary"] = self.boundary.tolist()
        return out


def _tile_tuple(tile: Any, rank: int, name: str) -> tuple[int, ...]:
    tile = semantics.normalize_per_dim(tile, rank, name)
    for axis, t in enumerate(tile):
        if t < 1:
            raise ValueError(f"{name}[{axis}]={t} must be >= 1")
    return tile


def simulate(shape: Sequence[int], kernel_size: Any, stride: Any = 1, dilation: Any = 1,
             is_causal: Any = False, q_tile: Any = None, kv_tile: Any = None, *,
             count_flops: bool = True) -> SimulationResult:
    """Simulate the tile schedule of one GNA problem.

    ``q_tile``/``kv_tile``: an int or one size per dim (default: the paper's tiles for the
    rank, see :func:`default_tiles`). ``count_flops=False`` skips the exact FLOP count
    (tile-independent, so :func:`best_tiles` computes it once).

    Figures:

    * ``flop_speedup = N**2 / sum_q keys(q)``: FLOPs of self attention over those of this
      GNA, exact (border shifts, causal masking). ``N / prod(k)`` (docs/semantics.md) is its simple
      form (``simple_flop_bound``).
    * ``worst_tile_speedup = SA KV tiles / max visited``: the GNA paper's bound, where SA KV
      tiles is the number of KV tiles covering the whole problem (dilation 1).
    * ``mean_tile_speedup = (SA Q tiles * SA KV tiles) / total visited``: total tile pairs
      of self attention over those of GNA, the GNA paper's bound for a perfectly balanced
      schedule. With dilation 1 the Q-tile counts agree and this is ``SA KV tiles / mean
      visited``; with dilation, groups are tiled separately, so GNA may have more (partial)
      Q tiles and the total-work form is the honest one. Self attention is counted on the
      same per-dim tile grid, padding included (30 rows in tiles of 8 count as 32).
    * ``tile_work_speedup = N**2 / (total visited * Q tile volume * KV tile volume)``: the
      dense kernel's pairs (the flat token sequence: no per-dim padding) over the pairs of
      every visited tile pair, whole tiles counted. The speedup of a kernel that runs each
      visited tile pair at the dense kernel's rate, so the figure tiles are chosen by
      (:func:`jax_gna.simulator.search.best_tiles`). Where tiles pad a dim it is below
      ``mean_tile_speedup``, which counts the padding as dense work too (Hunyuan 30x48x80,
      stride 1, tiles 8x4x4 / 4x8x4: 6.26 against 7.12); without padding they agree.
    * ``boundary_tile_fraction``: share of visited tiles that need an element mask.
    * ``perfectly_block_sparse``: no visited tile needs a mask.
    """
    shape = tuple(int(n) for n in shape)
    params = semantics.make_params(shape, kernel_size, stride, dilation, is_causal)
    rank = params.rank
    dq, dkv = default_tiles(rank)
    q_tile = _tile_tuple(dq if q_tile is None else q_tile, rank, "q_tile")
    kv_tile = _tile_tuple(dkv if kv_tile is None else kv_tile, rank, "kv_tile")

    dims = [dim_tile_counts(n, *params.dim(ax), q_tile[ax], kv_tile[ax])
            for ax, n in enumerate(shape)]
    visited = _outer_product([d.visited for d in dims])
    interior = _outer_product([d.interior for d in dims])
    boundary = visited - interior

    n_tokens = math.prod(shape)
    sa_q = math.prod(-(-n // t) for n, t in zip(shape, q_tile))
    sa_kv = math.prod(-(-n // t) for n, t in zip(shape, kv_tile))
    total = int(visited.sum())
    n_boundary = int(boundary.sum())

    pairs = flop = None
    if count_flops:
        pairs = int(semantics.keys_per_query(shape, params).sum())
        flop = float(n_tokens) * float(n_tokens) / pairs

    return SimulationResult(
        shape=shape, kernel_size=params.kernel_size, stride=params.stride,
        dilation=params.dilation, is_causal=params.is_causal, q_tile=q_tile,
        kv_tile=kv_tile, tile_maps=tuple(d.tile_map for d in dims), visited=visited,
        interior=interior, boundary=boundary, num_tokens=n_tokens, attended_pairs=pairs,
        self_attention_q_tiles=sa_q, self_attention_kv_tiles=sa_kv, flop_speedup=flop,
        worst_tile_speedup=sa_kv / int(visited.max()),
        mean_tile_speedup=sa_q * sa_kv / total,
        tile_work_speedup=(float(n_tokens) * n_tokens
                           / (float(total) * math.prod(q_tile) * math.prod(kv_tile))),
        boundary_tile_fraction=n_boundary / total,
        perfectly_block_sparse=n_boundary == 0,
    )
