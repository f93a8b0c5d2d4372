"""Analytical tile simulator for Generalized Neighborhood Attention (pure numpy).

Given a problem (spatial shape, kernel size, stride, dilation, causal) and a Q/KV tile
shape, it reports which KV tiles every Q tile visits, how many of them need an element
mask, and the speedup bounds over self attention that follow (GNA paper, arXiv
2504.16922). Window math comes only from :mod:`jax_gna.semantics`.

    >>> from jax_gna.simulator import simulate
    >>> r = simulate((30, 48, 80), (18, 24, 24), stride=(16, 8, 8),
    ...              q_tile=(4, 8, 8), kv_tile=(2, 8, 8))
    >>> round(r.worst_tile_speedup, 2)
    11.11

Command line: ``python -m jax_gna.simulator --help``.
"""

from jax_gna.simulator.core import SimulationResult, default_tiles, simulate
from jax_gna.simulator.search import (OBJECTIVES, TileRanking, best_tiles, box_visited,
                                      default_candidates, power_of_two_boxes)

__all__ = ["SimulationResult", "simulate", "default_tiles", "best_tiles", "box_visited",
           "TileRanking", "default_candidates", "power_of_two_boxes", "OBJECTIVES"]
