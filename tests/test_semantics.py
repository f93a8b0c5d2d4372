"""The window math of docs/semantics.md: worked examples, invariants, tile map, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jax_gna import semantics as sem


def _keys(length, k, s, d, causal, i):
    first, step, count = sem.window_keys_1d(np.array([i]), length, k, s, d, causal)
    return list(range(int(first[0]), int(first[0]) + step * int(count[0]), step))


@pytest.mark.parametrize("i, expect", [(0, range(0, 5)), (5, range(3, 8)), (9, range(5, 10))])
def test_spec_sliding_window(i, expect):
    assert _keys(10, 5, 1, 1, False, i) == list(expect)


@pytest.mark.parametrize("i, expect", [(4, [3, 4]), (8, range(5, 9)), (9, range(5, 10))])
def test_spec_causal_strided(i, expect):
    assert _keys(10, 5, 4, 1, True, i) == list(expect)


def test_even_kernel_has_one_more_key_on_the_left():
    assert _keys(20, 4, 1, 1, False, 10) == [8, 9, 10, 11]


def test_dilation_groups_of_different_lengths():
    # L=11, d=3: groups {0,3,6,9}, {1,4,7,10}, {2,5,8}; k=3 on group 2 (length 3) is all of it.
    assert _keys(11, 3, 1, 3, False, 5) == [2, 5, 8]
    assert _keys(11, 3, 1, 3, False, 10) == [4, 7, 10]


def test_blocked_attention_is_block_diagonal():
    m = sem.neighborhood_mask_1d(12, 4, 4, 1, False)
    blocks = np.kron(np.eye(3, dtype=bool), np.ones((4, 4), bool))
    np.testing.assert_array_equal(m, blocks)


def test_self_attention_when_window_is_the_grid():
    p = sem.make_params((5, 6), (5, 6))
    assert sem.neighborhood_mask((5, 6), p).all()
    assert p.is_self_attention((5, 6))


@st.composite
def dims(draw):
    length = draw(st.integers(2, 60))
    d = draw(st.integers(1, length // 2))
    k = draw(st.integers(2, length // d))
    return length, k, draw(st.integers(1, k)), d, draw(st.booleans())


@given(dims())
@settings(max_examples=300, deadline=None)
def test_window_invariants(dim):
    length, k, s, d, causal = dim
    i = np.arange(length)
    start, end = sem.window_1d(i, length, k, s, d, causal)
    lg = sem.group_length(i % d, length, d)
    assert (start >= 0).all() and (end <= lg).all() and (end > start).all()
    if causal:
        assert (end == i // d + 1).all() and (end - start <= k).all()
    else:
        assert (end - start == k).all()           # always exactly k keys
        assert ((start <= i // d) & (i // d < end)).all()   # a query sees itself
    # Queries of one stride group share one window (non-causal) / one start (causal).
    ii = i // d
    for g in range(d):
        sel = i % d == g
        for grp in np.unique(ii[sel] // s):
            members = sel & (ii // s == grp)
            assert len(np.unique(start[members])) == 1


@given(dims(), st.integers(1, 9), st.integers(1, 9))
@settings(max_examples=300, deadline=None)
def test_tile_map_against_the_mask(dim, q_tile, kv_tile):
    length, k, s, d, causal = dim
    tm = sem.tile_map_1d(length, k, s, d, causal, q_tile, kv_tile)
    for g in range(d):
        lg = int(sem.group_length(g, length, d))
        m = sem.neighborhood_mask_1d(lg, k, s, 1, causal)
        for t in np.flatnonzero(tm.group == g):
            rows = m[tm.q_start[t]:tm.q_end[t]]
            seen = np.flatnonzero(rows.any(0))
            lo, hi = tm.kv_tile_first[t] * kv_tile, tm.kv_tile_last[t] * kv_tile
            assert seen.min() >= lo and seen.max() < hi            # visited box covers all
            assert tm.kv_start[t] == seen.min() and tm.kv_end[t] == seen.max() + 1
            idx = tm.visited(t)
            interior = tm.interior(t)
            for j, inside in zip(idx, interior):
                k0, k1 = tm.kv_tile_start[j], tm.kv_tile_end[j]
                assert rows[:, k0:k1].all() == bool(inside) or (k1 - k0 < kv_tile
                                                                  and not inside)
        for j in np.flatnonzero(tm.kv_group == g):
            cols = m[:, tm.kv_tile_start[j]:tm.kv_tile_end[j]]
            who = np.flatnonzero(cols.any(1))
            assert tm.kv_q_start[j] == who.min() and tm.kv_q_end[j] == who.max() + 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=1), "kernel_size[0]=1 must be >= 2"),
    (dict(kernel_size=(3, 9), dilation=(1, 2)),
     "kernel_size[1]=9 times dilation[1]=2 exceeds spatial size 16 along dim 1"),
    (dict(kernel_size=3, stride=4), "stride[0]=4 must satisfy 1 <= stride <= kernel_size"),
    (dict(kernel_size=3, stride=0), "stride[0]=0"),
    (dict(kernel_size=3, dilation=0), "dilation[0]=0 must be >= 1"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size has 3 entries but the input has 2"),
    (dict(kernel_size=3, is_causal=(True,)), "is_causal has 1 entries"),
])
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        sem.make_params((12, 16), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=3.0), "kernel_size must be an int"),
    (dict(kernel_size=(3, "a")), "kernel_size\\[1\\] must be an int"),
    (dict(kernel_size=True), "kernel_size must be an int"),
    (dict(kernel_size=3, is_causal=1), "is_causal must be a bool"),
])
def test_parameter_types(kwargs, message):
    with pytest.raises(TypeError, match=message):
        sem.make_params((12, 16), **kwargs)
