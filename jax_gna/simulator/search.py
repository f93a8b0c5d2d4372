"""Choosing tile shapes: candidate generation and ranking by a simulator figure."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterable, Sequence

import numpy as np

from jax_gna import semantics
from jax_gna.simulator.core import SimulationResult, simulate

__all__ = ["power_of_two_boxes", "default_candidates", "best_tiles", "box_visited",
           "TileRanking", "OBJECTIVES"]

# Figures that may be maximised; ties fall through to the next ones in this order, then to
# fewer boundary tiles (less masking work). The default, tile_work_speedup, is what a
# kernel's time follows (visited tile pairs, whole tiles); mean_tile_speedup counts a dim's
# padding as self-attention work too, so ranking by it favoured tiles that pad (Cosmos
# 16x44x80, stride 1x8x16: Q 1x8x16, 6 tiles for 44 rows, over 2x4x16, 11 tiles: 9% more
# tile pairs).
OBJECTIVES = ("tile_work_speedup", "mean_tile_speedup", "worst_tile_speedup")


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


def box_visited(result: SimulationResult, query_box: Sequence[tuple[int, int]]) -> int:
    """(Q tile, KV tile) pairs a kernel visits when it computes only the Q tiles holding a
    query of ``query_box`` (``(lo, hi)`` per dim, global coordinates): the work of a
    box-restricted call, forward (per Q tile) and backward (the same pairs, KV-major)."""
    keep = []
    for axis, (lo, hi) in enumerate(query_box):
        n = result.visited.shape[axis]
        keep.append(np.array([bool(np.any((c >= lo) & (c < hi))) for c in
                              (result.tile_coordinates(axis, t, "q") for t in range(n))]))
    return int(result.visited[np.ix_(*keep)].sum())


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
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    shape = tuple(int(n) for n in shape)
    params = semantics.make_params(shape, kernel_size, stride, dilation, is_causal)
    if candidates is None:
        candidates = default_candidates(shape, q_tokens, kv_tokens)
    results = [simulate(shape, params.kernel_size, params.stride, params.dilation,
                        params.is_causal, q, kv, count_flops=False) for q, kv in candidates]
    if not results:
        raise ValueError("best_tiles needs at least one candidate")
    order = (objective,) + tuple(o for o in OBJECTIVES if o != objective)

    box_cost = {}
    if query_box is not None:
        box = tuple((int(lo), int(hi)) for lo, hi in query_box)
        if len(box) != len(shape) or any(not 0 <= lo < hi <= n
                                         for (lo, hi), n in zip(box, shape)):
            raise ValueError(f"query_box {query_box} is not a non-empty box inside {shape}")
        box_cost = {id(r): box_visited(r, box) for r in results}

    def figure(r: SimulationResult, name: str) -> float:
        if name == "tile_work_speedup":
            return r.modeled_speedup(boundary_cost)
        return getattr(r, name)

    def key(r: SimulationResult):
        return ((box_cost.get(id(r), 0),) + tuple(-figure(r, o) for o in order)
                + (r.boundary_tile_fraction,))

    ranked = sorted(results, key=key)   # stable: equal candidates keep the given order
    winner = ranked[0]
    best = simulate(shape, params.kernel_size, params.stride, params.dilation,
                    params.is_causal, winner.q_tile, winner.kv_tile)
    return TileRanking(objective, best, (best,) + tuple(ranked[1:]))
