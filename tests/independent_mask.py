"""The GNA neighborhood, written again from the contract (docs/semantics.md, "Which keys a query
sees") without importing jax_gna: the mask of the float64 oracle (``tests/oracle.py``).

``jax_gna.semantics`` is the code under test; deriving the oracle's mask from it would let a
bug there pass the whole suite. This module shares no code with it and follows the
contract's pseudo-code literally, one query at a time in plain Python integers (only the
combination of the per-dim masks into the n-D one uses numpy). ``test_independent_mask.py``
pins it to the contract's worked examples and compares it with ``jax_gna.semantics``.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np


def _clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(x, hi))


def keys_of_query(i: int, length: int, k: int, s: int, d: int, causal: bool) -> list[int]:
    """Coordinates of the keys that the query at coordinate ``i`` sees along one dim."""
    wl = k // 2
    g = i % d                                    # dilation group: keys share it
    ii = i // d                                  # position inside the group
    lg = length // d + (1 if g < length % d else 0)   # the group's own length
    if not causal:
        leader = min((ii // s) * s + s // 2, lg - 1)  # centre of the stride group
        start = _clamp(leader - wl, 0, lg - k)        # shifts at borders: always k keys
        end = start + k
    else:
        leader = min((ii // s) * s + s - 1, lg - 1)   # last query of the stride group
        start = max(leader - k + 1, 0)
        end = ii + 1                                  # never past the query itself
    return [g + d * jj for jj in range(start, end)]


@functools.lru_cache(maxsize=4096)
def mask_1d(length: int, k: int, s: int, d: int, causal: bool) -> np.ndarray:
    """Boolean ``[L, L]``: ``[i, j]`` is True when query ``i`` sees key ``j`` (read-only)."""
    m = np.zeros((length, length), bool)
    for i in range(length):
        for j in keys_of_query(i, length, k, s, d, causal):
            m[i, j] = True
    m.setflags(write=False)
    return m


def neighborhood_mask(spatial, kernel_size, stride, dilation, is_causal) -> np.ndarray:
    """Boolean ``[N, N]`` over row-major flattened tokens: query ``q`` sees key ``j`` when
    it does along every dim. Parameters are per-dim sequences."""
    spatial = tuple(int(n) for n in spatial)
    per_dim = [mask_1d(n, int(k), int(s), int(d), bool(c)) for n, k, s, d, c in
               zip(spatial, kernel_size, stride, dilation, is_causal)]
    coords = np.array(list(itertools.product(*[range(n) for n in spatial])), np.int64)
    coords = coords.reshape(-1, len(spatial))          # token -> per-dim coordinates
    mask = np.ones((coords.shape[0], coords.shape[0]), bool)
    for axis, m in enumerate(per_dim):
        mask &= m[coords[:, axis][:, None], coords[:, axis][None, :]]
    return mask


def params_mask(spatial, params) -> np.ndarray:
    """:func:`neighborhood_mask` of an object with per-dim ``kernel_size``, ``stride``,
    ``dilation`` and ``is_causal`` tuples (e.g. ``jax_gna.GNAParams``)."""
    return neighborhood_mask(spatial, params.kernel_size, params.stride, params.dilation,
                             params.is_causal)
