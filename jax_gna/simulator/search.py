"""Choosing tile shapes: ranking candidates by a simulator figure (the candidates and the
ranking rule live in :mod:`jax_gna.tiles`, which the CUDA lowering uses as well)."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from jax_gna import semantics
from jax_gna.simulator.core import SimulationResult, simulate
from jax_gna.tiles import (OBJECTIVES, box_visited, check_objective, default_candidates,
                           power_of_two_boxes, ranked)

__all__ = ["power_of_two_boxes", "default_candidates", "best_tiles", "box_visited",
           "TileRanking", "OBJECTIVES"]


@dataclasses.dataclass(frozen=True)
class TileRanking:
    """Result of :func:`best_tiles`: the winner and every candidate, best first."""

    objective: str
    best: SimulationResult
    ranked: tuple[SimulationResult, ...]

    def table(self) -> list[dict[str, Any]]:
        return [{"q_tile": list(r.q_tile), "kv_tile": list(r.kv_tile),
                 "tile_work_speedup": r.tile_work_speedup,
                 "mean_tile_speedup": r.mean_tile_speedup,
                 "worst_tile_speedup": r.worst_tile_speedup,
                 "boundary_tile_fraction": r.boundary_tile_fraction,
                 "perfectly_block_sparse": r.perfectly_block_sparse} for r in self.ranked]


def best_tiles(shape: Sequence[int], kernel_size: Any, stride: Any = 1, dilation: Any = 1,
               is_causal: Any = False, candidates: Iterable[tuple[Any, Any]] | None = None,
               objective: str = "tile_work_speedup", *, q_tokens: int = 128,
               kv_tokens: int | Iterable[int] = (128, 64),
               query_box: Sequence[tuple[int, int]] | None = None,
               boundary_cost: float = 0.0) -> TileRanking:
    """Rank (Q tile, KV tile) candidates by ``objective`` (higher is better).

    ``boundary_cost``: with the default objective, a boundary tile pair (element mask)
    counts ``1 + boundary_cost`` unmasked ones (:meth:`SimulationResult.modeled_speedup`;
    the kernels' figures are in ``jax_gna.backends.KERNELS``).

    ``candidates`` default to :func:`default_candidates` for ``q_tokens``/``kv_tokens``.
    The winner's result carries the exact FLOP figure; the others skip it (it does not
    depend on tiles). With ``query_box`` (only those queries are computed, e.g. a
    context-parallel slab inside its halo window), candidates are ranked first by the
    tile pairs visited for the box (:func:`box_visited`, fewer is better), then as above:
    Q tiles that straddle the box edges cost whole tiles, so a tile that divides the box
    can beat the grid's best.
    """
    check_objective(objective)   # before the simulations
    shape = tuple(int(n) for n in shape)
    params = semantics.make_params(shape, kernel_size, stride, dilation, is_causal)
    if candidates is None:
        candidates = default_candidates(shape, q_tokens, kv_tokens)
    results = [simulate(shape, params.kernel_size, params.stride, params.dilation,
                        params.is_causal, q, kv, count_flops=False) for q, kv in candidates]
    order = ranked(results, objective, boundary_cost, query_box)
    winner = order[0]
    best = simulate(shape, params.kernel_size, params.stride, params.dilation,
                    params.is_causal, winner.q_tile, winner.kv_tile)
    return TileRanking(objective, best, (best,) + tuple(order[1:]))
