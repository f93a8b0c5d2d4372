"""The window math of Generalized Neighborhood Attention: the one Python source of truth.

Everything that needs to know which keys a query sees -- the references, the kernels' host
side, the simulator and the tests -- calls this module. Its C++ twin is
``xla_ffi/include/jax_gna/window.h``; the CPU FFI target ``gna_window_bounds`` evaluates the
C++ side so tests can prove the two agree.

Semantics are those of ``docs/semantics.md`` (NATTEN 0.21). Along one spatial dim of length ``L``
a query at coordinate ``i`` lives in dilation group ``g = i % d`` at group-local position
``ii = i // d``; its keys are ``j = g + d * jj`` for ``jj`` in ``[start, end)``. Inside a
group the problem is an undilated one of the group's own length ``Lg``, so the tile map
(which KV tiles a Q tile visits, which Q tiles a KV tile serves) is defined in group-local
coordinates with dilation 1.

All functions are vectorised over coordinates and work with numpy (default) or jax.numpy
(pass ``xp=jnp``); parameters (length, kernel size, ...) are Python ints.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Sequence

import numpy as np

__all__ = [
    "GNAParams",
    "normalize_per_dim",
    "make_params",
    "group_length",
    "group_of",
    "coordinate",
    "num_tiles_1d",
    "window_1d",
    "attends_1d",
    "window_keys_1d",
    "neighborhood_mask_1d",
    "neighborhood_mask",
    "keys_per_query",
    "inverse_window_1d",
    "TileMap1D",
    "tile_map_1d",
]


# ----------------------------------------------------------------------------------------
# Parameters: normalisation and validation
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GNAParams:
    """Per-dim GNA parameters, normalised to tuples (hashable: usable as static params)."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    def dim(self, axis: int) -> tuple[int, int, int, bool]:
        """(kernel_size, stride, dilation, is_causal) along one spatial dim."""
        return (self.kernel_size[axis], self.stride[axis], self.dilation[axis],
                self.is_causal[axis])

    def is_self_attention(self, spatial_shape: Sequence[int]) -> bool:
        """True when every query sees every key (k == L, s == 1, not causal, on every dim)."""
        return all(k == n and s == 1 and d == 1 and not c for k, s, d, c, n in zip(
            self.kernel_size, self.stride, self.dilation, self.is_causal, spatial_shape))


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def normalize_per_dim(value: Any, rank: int, name: str, *, kind: str = "int") -> tuple:
    """An int (bool for ``kind="bool"``) or a sequence with one entry per spatial dim -> tuple.

    Raises TypeError for a wrong type and ValueError for a wrong length, naming ``name``.
    """
    check = _is_int if kind == "int" else (lambda x: isinstance(x, (bool, np.bool_)))
    what = "an int" if kind == "int" else "a bool"
    if check(value):
        return tuple([int(value) if kind == "int" else bool(value)] * rank)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"{name} must be {what} or a tuple of {rank} such values "
                        f"(one per spatial dim); got {value!r}")
    items = list(value)
    if len(items) != rank:
        raise ValueError(f"{name} has {len(items)} entries but the input has {rank} spatial "
                         f"dim(s); pass {what} or a tuple of {rank}: got {tuple(items)!r}")
    for axis, item in enumerate(items):
        if not check(item):
            raise TypeError(f"{name}[{axis}] must be {what}; got {item!r} "
                            f"of type {type(item).__name__}")
    return tuple(int(x) if kind == "int" else bool(x) for x in items)


def make_params(spatial_shape: Sequence[int], kernel_size: Any, stride: Any = 1,
                dilation: Any = 1, is_causal: Any = False) -> GNAParams:
    """Normalise and validate GNA parameters against a spatial shape (docs/semantics.md,
    "Parameters")."""
    spatial_shape = tuple(int(n) for n in spatial_shape)
    rank = len(spatial_shape)
    if rank not in (1, 2, 3):
        raise ValueError(f"GNA supports 1, 2 or 3 spatial dims; got {rank} "
                         f"(spatial shape {spatial_shape})")
    ks = normalize_per_dim(kernel_size, rank, "kernel_size")
    st = normalize_per_dim(stride, rank, "stride")
    dl = normalize_per_dim(dilation, rank, "dilation")
    ca = normalize_per_dim(is_causal, rank, "is_causal", kind="bool")
    for ax, (k, s, d, n) in enumerate(zip(ks, st, dl, spatial_shape)):
        if n < 1:
            raise ValueError(f"spatial size along dim {ax} must be >= 1; got {n}")
        if k < 2:
            raise ValueError(f"kernel_size[{ax}]={k} must be >= 2")
        if d < 1:
            raise ValueError(f"dilation[{ax}]={d} must be >= 1")
        if k * d > n:
            raise ValueError(f"kernel_size[{ax}]={k} times dilation[{ax}]={d} exceeds "
                             f"spatial size {n} along dim {ax}")
        if not 1 <= s <= k:
            raise ValueError(f"stride[{ax}]={s} must satisfy 1 <= stride <= kernel_size "
                             f"(kernel_size[{ax}]={k})")
    return GNAParams(ks, st, dl, ca)


# ----------------------------------------------------------------------------------------
# One dim: the window of each query
# ----------------------------------------------------------------------------------------


def group_length(g, length: int, dilation: int, xp=np):
    """Length of dilation group ``g`` (groups differ when ``dilation`` does not divide L)."""
    return length // dilation + xp.where(g < length % dilation, 1, 0)


def group_of(i, dilation: int):
    """(dilation group, group-local position) of the coordinates ``i`` along one dim."""
    return i % dilation, i // dilation


def coordinate(g, local, dilation: int):
    """Coordinate of group-local position ``local`` of dilation group ``g``."""
    return g + dilation * local


def num_tiles_1d(length: int, dilation: int, tile: int) -> int:
    """Tiles of ``tile`` positions along one dim, each dilation group tiled separately."""
    lengths = group_length(np.arange(dilation), length, dilation)
    return int((-(-lengths // tile)).sum())


def window_1d(i, length: int, kernel_size: int, stride: int, dilation: int, causal: bool,
              xp=np):
    """Group-local window ``[start, end)`` of the queries at coordinates ``i`` along one dim.

    Keys are ``g + dilation * jj`` for ``jj`` in ``[start, end)`` with ``g = i % dilation``.
    """
    k, s, d = kernel_size, stride, dilation
    i = xp.asarray(i)
    g, ii = group_of(i, d)
    lg = group_length(g, length, d, xp)
    if not causal:
        leader = xp.minimum((ii // s) * s + s // 2, lg - 1)
        start = xp.clip(leader - k // 2, 0, lg - k)
        end = start + k
    else:
        leader = xp.minimum((ii // s) * s + s - 1, lg - 1)
        start = xp.maximum(leader - k + 1, 0)
        end = ii + 1
    return start, end


def window_keys_1d(i, length: int, kernel_size: int, stride: int, dilation: int,
                   causal: bool):
    """(first key coordinate, step, count) of each query's keys along one dim (numpy)."""
    i = np.asarray(i)
    start, end = window_1d(i, length, kernel_size, stride, dilation, causal)
    return coordinate(i % dilation, start, dilation), dilation, end - start


def attends_1d(i, j, length: int, kernel_size: int, stride: int, dilation: int,
               causal: bool, xp=np):
    """Boolean, broadcast over coordinate arrays: does the query at ``i`` see the key at
    ``j`` along one dim (same dilation group, group-local key inside the window)?"""
    start, end = window_1d(i, length, kernel_size, stride, dilation, causal, xp)
    g, jj = group_of(j, dilation)
    return (g == i % dilation) & (jj >= start) & (jj < end)


def neighborhood_mask_1d(length: int, kernel_size: int, stride: int, dilation: int,
                         causal: bool, xp=np):
    """Boolean ``[L, L]``: entry ``[i, j]`` is True when query ``i`` sees key ``j``."""
    i = xp.arange(length)[:, None]
    j = xp.arange(length)[None, :]
    return attends_1d(i, j, length, kernel_size, stride, dilation, causal, xp)


def neighborhood_mask(spatial_shape: Sequence[int], params: GNAParams, xp=np):
    """Boolean ``[N, N]`` over row-major flattened tokens: the AND of the per-dim masks."""
    mask = None
    for ax, n in enumerate(spatial_shape):
        m = neighborhood_mask_1d(n, *params.dim(ax), xp=xp)
        if mask is None:
            mask = m
        else:
            mask = (mask[:, None, :, None] & m[None, :, None, :]).reshape(
                mask.shape[0] * n, mask.shape[1] * n)
    return mask


def keys_per_query(spatial_shape: Sequence[int], params: GNAParams) -> np.ndarray:
    """Number of keys each query sees, shape ``spatial_shape`` (int64, numpy)."""
    out = np.ones((), np.int64)
    for ax, n in enumerate(spatial_shape):
        start, end = window_1d(np.arange(n), n, *params.dim(ax))
        out = np.multiply.outer(out, (end - start).astype(np.int64))
    return out


# ----------------------------------------------------------------------------------------
# One dim, group-local (dilation 1 inside a group): inverse window and tile map
# ----------------------------------------------------------------------------------------


def inverse_window_1d(jj, group_len: int, kernel_size: int, stride: int, causal: bool):
    """Group-local query range ``[first, last)`` that sees group-local key ``jj`` (numpy).

    Window starts and ends are non-decreasing in the query, so the queries that see a key
    form one contiguous range, found by binary search (the C++ twin does the same).
    """
    ii = np.arange(group_len)
    start, end = window_1d(ii, group_len, kernel_size, stride, 1, causal)
    jj = np.asarray(jj)
    first = np.searchsorted(end, jj, side="right")    # first query whose end > jj
    last = np.searchsorted(start, jj, side="right")   # one past the last with start <= jj
    return first, last


@dataclasses.dataclass(frozen=True)
class TileMap1D:
    """The tile map of one spatial dim, over every (dilation group, tile) pair.

    Q tiles (and KV tiles) of ``q_tile`` (``kv_tile``) tokens cover each dilation group
    separately, in group-local coordinates; the last tile of a group may be partial.
    Arrays are indexed by Q tile unless named ``kv_*`` (indexed by KV tile).
    """

    length: int
    kernel_size: int
    stride: int
    dilation: int
    causal: bool
    q_tile: int
    kv_tile: int
    group: np.ndarray          # dilation group of each Q tile
    group_len: np.ndarray      # that group's length
    q_start: np.ndarray        # group-local first query of the tile
    q_end: np.ndarray          # group-local one-past-last query (clipped to the group)
    kv_start: np.ndarray       # group-local window start of the tile's first query
    kv_end: np.ndarray         # group-local window end of the tile's last query
    kv_tile_first: np.ndarray  # first KV tile index (within the group) the Q tile visits
    kv_tile_last: np.ndarray   # one past the last KV tile index it visits
    min_end: np.ndarray        # smallest window end over the tile's queries
    max_start: np.ndarray      # largest window start over the tile's queries
    kv_group: np.ndarray       # dilation group of each KV tile
    kv_tile_start: np.ndarray  # group-local first key of each KV tile
    kv_tile_end: np.ndarray    # one past its last key (clipped to the group)
    kv_q_start: np.ndarray     # group-local first query that sees any key of the KV tile
    kv_q_end: np.ndarray       # one past the last such query

    @property
    def num_q_tiles(self) -> int:
        return int(self.q_start.shape[0])

    @property
    def num_kv_tiles(self) -> int:
        return int(self.kv_tile_start.shape[0])

    def visited(self, t: int) -> np.ndarray:
        """Global KV tile indices visited by Q tile ``t`` along this dim."""
        base = int(np.searchsorted(self.kv_group, self.group[t]))
        return base + np.arange(self.kv_tile_first[t], self.kv_tile_last[t])

    def interior(self, t: int) -> np.ndarray:
        """Per visited KV tile of Q tile ``t``: does every query see every key (this dim)?

        A KV tile is interior when it lies inside the window of every query of the Q tile:
        ``max_start <= tile start`` and ``tile end <= min_end``; a partial tile (cut by the
        group's end) is never interior, since its missing keys must be masked.
        """
        idx = self.visited(t)
        full = (self.kv_tile_end[idx] - self.kv_tile_start[idx]) == self.kv_tile
        return (full & (self.kv_tile_start[idx] >= self.max_start[t])
                & (self.kv_tile_end[idx] <= self.min_end[t]))


def tile_map_1d(length: int, kernel_size: int, stride: int, dilation: int, causal: bool,
                q_tile: int, kv_tile: int) -> TileMap1D:
    """Build the tile map of one dim (numpy; cheap, computed at trace time)."""
    k, s, d, c = kernel_size, stride, dilation, causal
    if q_tile < 1 or kv_tile < 1:
        raise ValueError(f"tile sizes must be >= 1; got q_tile={q_tile}, kv_tile={kv_tile}")
    cols: dict[str, list] = {n: [] for n in (
        "group", "group_len", "q_start", "q_end", "kv_start", "kv_end", "kv_tile_first",
        "kv_tile_last", "min_end", "max_start", "kv_group", "kv_tile_start", "kv_tile_end",
        "kv_q_start", "kv_q_end")}
    for g in range(d):
        lg = int(group_length(g, length, d))
        ii = np.arange(lg)
        start, end = window_1d(ii, lg, k, s, 1, c)
        q0 = np.arange(0, lg, q_tile)
        q1 = np.minimum(q0 + q_tile, lg)
        cols["group"].append(np.full(q0.shape, g))
        cols["group_len"].append(np.full(q0.shape, lg))
        cols["q_start"].append(q0)
        cols["q_end"].append(q1)
        kv0, kv1 = start[q0], end[q1 - 1]
        cols["kv_start"].append(kv0)
        cols["kv_end"].append(kv1)
        cols["kv_tile_first"].append(kv0 // kv_tile)
        cols["kv_tile_last"].append(-(-kv1 // kv_tile))
        cols["min_end"].append(end[q0])          # ends are non-decreasing
        cols["max_start"].append(start[q1 - 1])  # starts are non-decreasing
        t0 = np.arange(0, lg, kv_tile)
        t1 = np.minimum(t0 + kv_tile, lg)
        cols["kv_group"].append(np.full(t0.shape, g))
        cols["kv_tile_start"].append(t0)
        cols["kv_tile_end"].append(t1)
        first, _ = inverse_window_1d(t0, lg, k, s, c)
        _, last = inverse_window_1d(t1 - 1, lg, k, s, c)
        cols["kv_q_start"].append(first)
        cols["kv_q_end"].append(last)
    arrays = {n: np.concatenate(v).astype(np.int64) for n, v in cols.items()}
    return TileMap1D(length=length, kernel_size=k, stride=s, dilation=d, causal=c,
                     q_tile=q_tile, kv_tile=kv_tile, **arrays)


def tile_volume(shape: Sequence[int]) -> int:
    return int(math.prod(shape))
