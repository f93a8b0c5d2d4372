"""The n-D tile simulator: which KV tiles each Q tile visits, and the speedup bounds.

The tile counts come from :mod:`jax_gna.tiles` (per-dim tile maps of
:mod:`jax_gna.semantics`, combined by outer products); this module adds the exact FLOP
figure, the per-Q-tile detail and the serialisation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from jax_gna import _checks, semantics, tiles
from jax_gna.tiles import dim_tile_counts

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


@dataclasses.dataclass(frozen=True, eq=False)   # holds arrays: compare figures instead
class SimulationResult(tiles.TileCounts):
    """Figures and per-Q-tile arrays of one (problem, Q tile, KV tile) configuration: the
    tile counts (:class:`jax_gna.tiles.TileCounts`) and the exact FLOP figure.

    Per-Q-tile arrays have the shape of the Q-tile grid ``q_tile_grid`` (per dim: the
    number of Q tiles along that dim, summed over its dilation groups, in the order of
    ``tile_maps[axis]``).
    """

    attended_pairs: int | None        # sum over queries of keys seen (None: not computed)
    flop_speedup: float | None

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
            g, ii = semantics.group_of(i, tm.dilation)
            hit = np.nonzero((tm.group == g) & (tm.q_start <= ii) & (ii < tm.q_end))[0]
            index.append(int(hit[0]))
        return tuple(index)

    def visited_kv_tiles(self, q_index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """KV tiles visited by one n-D Q tile: (``[n, rank]`` per-dim KV tile indices,
        ``[n]`` interior flags), in row-major order over the visited box."""
        per_dim = [(tm.visited(t), tm.interior(t)) for tm, t in zip(self.tile_maps, q_index)]
        idx = np.stack(np.meshgrid(*[v for v, _ in per_dim], indexing="ij"), -1)
        inner = tiles.outer_product([f.astype(np.int64) for _, f in per_dim]).astype(bool)
        return idx.reshape(-1, self.rank), inner.reshape(-1)

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
      (:func:`jax_gna.tiles.best_boxes`, :func:`jax_gna.simulator.search.best_tiles`).
      Where tiles pad a dim it is below ``mean_tile_speedup``, which counts the padding as dense work too (Hunyuan 30x48x80,
      stride 1, tiles 8x4x4 / 4x8x4: 6.26 against 7.12); without padding they agree.
    * ``boundary_tile_fraction``: share of visited tiles that need an element mask.
    * ``perfectly_block_sparse``: no visited tile needs a mask.
    """
    shape = tuple(int(n) for n in shape)
    params = semantics.make_params(shape, kernel_size, stride, dilation, is_causal)
    rank = params.rank
    dq, dkv = default_tiles(rank)
    q_tile = _checks.check_tile(dq if q_tile is None else q_tile, rank, "q_tile")
    kv_tile = _checks.check_tile(dkv if kv_tile is None else kv_tile, rank, "kv_tile")

    pairs = flop = None
    if count_flops:
        n_tokens = math.prod(shape)
        pairs = int(semantics.keys_per_query(shape, params).sum())
        flop = float(n_tokens) * float(n_tokens) / pairs
    return SimulationResult(**tiles.count_fields(shape, params, q_tile, kv_tile),
                            attended_pairs=pairs, flop_speedup=flop)
