"""Pictures of a simulation (matplotlib, Agg backend: works without a display).

Left: the neighborhood of one query -- for 3-D the 2-D slice through the query along dim 0
-- drawn over the KV tiles its Q tile visits, so masked-out work inside visited tiles
shows. Middle/right: per Q tile, KV tiles visited and boundary tiles (for 3-D, the slice of
the Q-tile grid through the query's tile).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jax_gna import semantics
from jax_gna.simulator.core import SimulationResult

__all__ = ["neighborhood_picture", "plot_simulation", "MATPLOTLIB_HINT"]

# What a missing matplotlib (the `plot` extra) is reported with.
MATPLOTLIB_HINT = ("plotting needs matplotlib: pip install matplotlib (or pip install "
                   "'.[plot]' in the jax_gna checkout)")

# Cell values of the neighborhood picture.
OUTSIDE, VISITED_MASKED, ATTENDED = 0, 1, 2


def _per_dim_sets(result: SimulationResult, query: Sequence[int]):
    """Per dim: boolean over coordinates for (attended by the query, in a visited KV tile,
    in the query's Q tile)."""
    q_index = result.q_tile_of(query)
    out = []
    for axis, (n, i, t) in enumerate(zip(result.shape, query, q_index)):
        k, s, d, c = (result.kernel_size[axis], result.stride[axis], result.dilation[axis],
                      result.is_causal[axis])
        first, step, count = semantics.window_keys_1d(np.array([i]), n, k, s, d, c)
        attended = np.zeros(n, bool)
        attended[first[0] + step * np.arange(count[0])] = True
        visited = np.zeros(n, bool)
        for kv in result.tile_maps[axis].visited(t):
            visited[result.tile_coordinates(axis, int(kv), "kv")] = True
        in_q_tile = np.zeros(n, bool)
        in_q_tile[result.tile_coordinates(axis, t, "q")] = True
        out.append((attended, visited, in_q_tile))
    return out


def neighborhood_picture(result: SimulationResult, query: Sequence[int]) -> np.ndarray:
    """Integer image over the query's 2-D plane (1-D: one row; 3-D: slice at query[0]).

    OUTSIDE: not visited; VISITED_MASKED: inside a visited KV tile but not attended (work
    a boundary tile wastes); ATTENDED: a key the query sees.
    """
    sets = _per_dim_sets(result, query)
    if result.rank == 3:
        # Only the dim-0 entry at the query's coordinate matters for the slice.
        a0, v0, _ = (x[query[0]] for x in sets[0])
        sets = sets[1:]
    else:
        a0 = v0 = True
    if len(sets) == 1:
        sets = [(np.array([True]), np.array([True]), np.array([True]))] + sets
    (a1, v1, _), (a2, v2, _) = sets
    img = np.full((a1.size, a2.size), OUTSIDE, np.int8)
    img[np.outer(v1, v2) & v0] = VISITED_MASKED
    img[np.outer(a1, a2) & a0] = ATTENDED
    return img


def _grid_slice(arr: np.ndarray, q_index: Sequence[int]) -> np.ndarray:
    if arr.ndim == 3:
        return arr[q_index[0]]
    if arr.ndim == 1:
        return arr[None, :]
    return arr


def plot_simulation(result: SimulationResult, path: str,
                    query: Sequence[int] | None = None) -> str:
    """Write the three-panel picture to ``path`` (PNG by extension); returns ``path``.
    Without matplotlib: ``ModuleNotFoundError`` with ``MATPLOTLIB_HINT``."""
    try:
        import matplotlib
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(MATPLOTLIB_HINT, name=err.name) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if query is None:
        query = tuple(n // 2 for n in result.shape)
    query = tuple(int(i) for i in query)
    if len(query) != result.rank:
        raise ValueError(f"query has {len(query)} coordinates; the problem has rank "
                         f"{result.rank}")
    q_index = result.q_tile_of(query)

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    img = neighborhood_picture(result, query)
    cmap = ListedColormap(["#f2f2f2", "#f4a582", "#2166ac"])
    ax = axes[0]
    ax.imshow(img, cmap=cmap, vmin=0, vmax=2, interpolation="nearest", aspect="auto")
    # The query's own Q tile (its in-plane tokens) and the query itself.
    sets = _per_dim_sets(result, query)
    plane = sets[1:] if result.rank == 3 else sets
    rows = np.nonzero(plane[0][2])[0] if len(plane) == 2 else np.array([0])
    cols = np.nonzero(plane[-1][2])[0]
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    ax.scatter(cc.ravel(), rr.ravel(), s=6, c="k", marker="s", label="query's Q tile")
    qr = query[-2] if result.rank >= 2 else 0
    ax.scatter([query[-1]], [qr], s=60, c="yellow", edgecolors="k", marker="*",
               label="query")
    where = f" (slice dim0={query[0]})" if result.rank == 3 else ""
    ax.set_title(f"neighborhood of query {query}{where}\n"
                 "blue: attended, orange: visited tile but masked")
    ax.legend(loc="upper right", fontsize=7)
    if result.rank == 1:
        ax.set_yticks([])

    for ax, arr, name in ((axes[1], result.visited, "KV tiles visited"),
                          (axes[2], result.boundary, "boundary KV tiles")):
        grid = _grid_slice(arr, q_index)
        im = ax.imshow(grid, cmap="viridis", interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=ax, shrink=0.8)
        where = f" (Q-tile slice dim0={q_index[0]})" if result.rank == 3 else ""
        ax.set_title(f"{name} per Q tile{where}")
        ax.set_xlabel("Q tile along last dim")
        if result.rank == 1:
            ax.set_yticks([])

    fig.suptitle(
        f"shape {result.shape} k {result.kernel_size} s {result.stride} "
        f"d {result.dilation} causal {result.is_causal}; Q {result.q_tile} KV "
        f"{result.kv_tile} -- worst {result.worst_tile_speedup:.2f}x, mean "
        f"{result.mean_tile_speedup:.2f}x, FLOP {result.flop_speedup or float('nan'):.2f}x",
        fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
