"""The C++ window math (xla_ffi/include/jax_gna/window.h) agrees with jax_gna.semantics.

The CPU FFI targets of ``jax_gna._gna_ext`` evaluate window.h -- the header every CUDA kernel
compiles -- so these tests prove, on randomized configurations, that the kernels' window,
tile-map and interior-tile math is the Python contract's. They need the extension built
(``pip install .``); without it they skip with the load error, unless
``JAX_GNA_REQUIRE_EXTENSION=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jax_gna import _extension, semantics

EXAMPLES = 300
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _require_extension():
    if _extension.cpu_extension_available():
        return
    reason = f"jax_gna CPU extension not available: {_extension.load_error('cpu')}"
    if os.environ.get("JAX_GNA_REQUIRE_EXTENSION", "") not in ("", "0"):
        pytest.fail(reason + " (JAX_GNA_REQUIRE_EXTENSION is set)")
    pytest.skip(reason)


# ---- calling the targets -------------------------------------------------------------------


def _dim_attrs(length, kernel_size, stride, dilation, causal):
    # int64 / bool attributes, as the C++ handlers bind them.
    return dict(length=np.int64(length), kernel_size=np.int64(kernel_size),
                stride=np.int64(stride), dilation=np.int64(dilation), causal=bool(causal))


def _i32(x):
    return jnp.asarray(np.asarray(x, dtype=np.int32))


def cpp_window(i, length, kernel_size, stride, dilation, causal):
    i = np.asarray(i, np.int32)
    out = jax.ShapeDtypeStruct(i.shape, jnp.int32)
    start, end = jax.ffi.ffi_call("gna_window_bounds", (out, out))(
        _i32(i), **_dim_attrs(length, kernel_size, stride, dilation, causal))
    return np.asarray(start), np.asarray(end)


def cpp_tile_map(tm: semantics.TileMap1D):
    nq, nk = tm.num_q_tiles, tm.num_kv_tiles
    q_out = jax.ShapeDtypeStruct((nq,), jnp.int32)
    kv_out = jax.ShapeDtypeStruct((nk,), jnp.int32)
    outs = jax.ffi.ffi_call("gna_tile_map", (q_out,) * 4 + (kv_out,) * 2)(
        _i32(tm.q_start), _i32(tm.group), _i32(tm.kv_tile_start), _i32(tm.kv_group),
        **_dim_attrs(tm.length, tm.kernel_size, tm.stride, tm.dilation, tm.causal),
        q_tile=np.int64(tm.q_tile), kv_tile=np.int64(tm.kv_tile))
    names = ("kv_start", "kv_end", "kv_tile_first", "kv_tile_last", "kv_q_start", "kv_q_end")
    return {n: np.asarray(o) for n, o in zip(names, outs)}


def cpp_tile_interior(group, q_start, kv_start, length, kernel_size, stride, dilation, causal,
                      q_tile, kv_tile):
    group = np.asarray(group, np.int32)
    out = jax.ShapeDtypeStruct(group.shape, jnp.bool_)
    (interior,) = jax.ffi.ffi_call("gna_tile_interior", (out,))(
        _i32(group), _i32(q_start), _i32(kv_start),
        **_dim_attrs(length, kernel_size, stride, dilation, causal),
        q_tile=np.int64(q_tile), kv_tile=np.int64(kv_tile))
    return np.asarray(interior)


# ---- strategies -----------------------------------------------------------------------------


@st.composite
def dims(draw):
    """(length, kernel_size, stride, dilation, causal) valid per docs/semantics.md (k * d <= L)."""
    length = draw(st.integers(2, 200))  # k >= 2 needs L >= 2
    # Dilation 1 half the time; otherwise any valid one (most do not divide L).
    dilation = draw(st.one_of(st.just(1), st.integers(1, length // 2)))
    kernel_size = draw(st.integers(2, length // dilation))
    stride = draw(st.integers(1, kernel_size))
    causal = draw(st.booleans())
    return length, kernel_size, stride, dilation, causal


tile_sizes = st.one_of(st.sampled_from([1, 2, 4, 8, 16, 32, 64]), st.integers(1, 70))


# ---- gna_window_bounds ----------------------------------------------------------------------


def check_window(length, kernel_size, stride, dilation, causal):
    i = np.arange(length)
    start, end = cpp_window(i, length, kernel_size, stride, dilation, causal)
    ref_start, ref_end = semantics.window_1d(i, length, kernel_size, stride, dilation, causal)
    cfg = dict(length=length, kernel_size=kernel_size, stride=stride, dilation=dilation,
               causal=causal)
    np.testing.assert_array_equal(start, ref_start, err_msg=f"start, {cfg}")
    np.testing.assert_array_equal(end, ref_end, err_msg=f"end, {cfg}")


@SETTINGS
@given(dims())
@example((10, 5, 1, 1, False))
@example((10, 5, 4, 1, True))
@example((10, 2, 1, 3, False))   # dilation 3 does not divide 10: group lengths 4, 3, 3
@example((10, 3, 3, 3, True))
@example((2, 2, 1, 1, False))
@example((200, 200, 1, 1, False))  # self attention
@example((200, 2, 2, 100, True))
def test_window_bounds_matches_semantics(cfg):
    check_window(*cfg)


@pytest.mark.parametrize("causal, expected", [
    # docs/semantics.md worked examples, L=10, k=5: keys (group-local == global, d=1) per query.
    (False, {0: (0, 5), 5: (3, 8), 9: (5, 10)}),   # s=1: q0 -> 0..4, q5 -> 3..7, q9 -> 5..9
    (True, {4: (3, 5), 8: (5, 9), 9: (5, 10)}),    # s=4: q4 -> {3,4}, q8 -> 5..8, q9 -> 5..9
])
def test_window_bounds_spec_worked_examples(causal, expected):
    stride = 4 if causal else 1
    queries = sorted(expected)
    start, end = cpp_window(queries, 10, 5, stride, 1, causal)
    assert {q: (int(s), int(e)) for q, s, e in zip(queries, start, end)} == expected


def test_window_bounds_any_shape():
    # The handler reads element counts, not a fixed rank: a 2-D batch of queries works.
    i = np.arange(24).reshape(4, 6) % 13
    start, end = cpp_window(i, 13, 4, 2, 2, False)
    ref_start, ref_end = semantics.window_1d(i, 13, 4, 2, 2, False)
    np.testing.assert_array_equal(start, ref_start)
    np.testing.assert_array_equal(end, ref_end)


@pytest.mark.parametrize("attrs, message", [
    ((10, 1, 1, 1, False), "kernel_size=1 must be >= 2"),
    ((10, 6, 1, 2, False), "kernel_size=6 times dilation=2 exceeds length 10"),
    ((10, 3, 4, 1, False), "stride=4 must satisfy 1 <= stride <= kernel_size"),
    ((10, 3, 0, 1, False), "stride=0"),
    ((10, 3, 1, 0, False), "dilation=0 must be >= 1"),
    ((0, 3, 1, 1, False), "length=0 must be >= 1"),
    ((2**31, 3, 1, 1, False), "length=2147483648 does not fit"),
])
def test_window_bounds_rejects_bad_attributes(attrs, message):
    with pytest.raises(Exception, match=message):
        cpp_window([0], *attrs)


def test_window_bounds_rejects_out_of_range_query():
    with pytest.raises(Exception, match=r"i\[2\]=10 is outside \[0, length=10\)"):
        cpp_window([0, 9, 10], 10, 3, 1, 1, False)
    with pytest.raises(Exception, match=r"i\[0\]=-1"):
        cpp_window([-1], 10, 3, 1, 1, False)


# ---- gna_tile_map ---------------------------------------------------------------------------


def check_tile_map(cfg, q_tile, kv_tile):
    tm = semantics.tile_map_1d(*cfg, q_tile, kv_tile)
    got = cpp_tile_map(tm)
    ref = {"kv_start": tm.kv_start, "kv_end": tm.kv_end, "kv_tile_first": tm.kv_tile_first,
           "kv_tile_last": tm.kv_tile_last, "kv_q_start": tm.kv_q_start,
           "kv_q_end": tm.kv_q_end}
    for name, want in ref.items():
        np.testing.assert_array_equal(got[name], want,
                                      err_msg=f"{name}, cfg={cfg}, q_tile={q_tile}, "
                                              f"kv_tile={kv_tile}")


@SETTINGS
@given(dims(), tile_sizes, tile_sizes)
@example((10, 5, 1, 1, False), 4, 4)
@example((10, 5, 4, 1, True), 2, 3)
@example((10, 2, 1, 3, False), 2, 2)  # unequal dilation groups, partial last tiles
@example((2, 2, 1, 1, False), 64, 64)
@example((200, 16, 16, 1, False), 16, 16)  # blocked, tile-aligned
def test_tile_map_matches_semantics(cfg, q_tile, kv_tile):
    check_tile_map(cfg, q_tile, kv_tile)


def test_tile_map_rejects_bad_tiles():
    tm = semantics.tile_map_1d(10, 2, 1, 3, False, 2, 2)
    bad_group = dataclasses.replace(tm, group=np.where(tm.group == 2, 3, tm.group))
    with pytest.raises(Exception, match=r"q group\[\d+\]=3 is outside \[0, dilation=3\)"):
        cpp_tile_map(bad_group)
    bad_start = dataclasses.replace(
        tm, kv_tile_start=np.where(tm.kv_tile_start == 2, 4, tm.kv_tile_start))
    with pytest.raises(Exception, match=r"kv start\[\d+\]=4 is outside \[0, 4\)"):
        cpp_tile_map(bad_start)
    zero_tile = dataclasses.replace(tm, kv_tile=0)
    with pytest.raises(Exception, match="kv_tile=0 must be >= 1"):
        cpp_tile_map(zero_tile)


# ---- gna_tile_interior ----------------------------------------------------------------------


def brute_force_interior(lg, kernel_size, stride, causal, q0, q1, k0, k1, kv_tile):
    """Every query of [q0, q1) sees every key of [k0, k1), and the KV tile is full."""
    ii = np.arange(q0, q1)
    start, end = semantics.window_1d(ii, lg, kernel_size, stride, 1, causal)
    return (k1 - k0 == kv_tile) and bool(np.all(start <= k0) and np.all(end >= k1))


def check_tile_interior(cfg, q_tile, kv_tile, seed):
    _, kernel_size, stride, _, causal = cfg
    tm = semantics.tile_map_1d(*cfg, q_tile, kv_tile)
    # (1) Every visited (Q tile, KV tile) pair: expected from TileMap1D.interior.
    q_idx = [np.full(tm.visited(t).shape, t) for t in range(tm.num_q_tiles)]
    kv_idx = [tm.visited(t) for t in range(tm.num_q_tiles)]
    want = [tm.interior(t) for t in range(tm.num_q_tiles)]
    # (2) Random pairs of one group, visited or not: expected from the definition itself.
    rng = np.random.default_rng(seed)
    for t in rng.integers(0, tm.num_q_tiles, size=64):
        u = int(rng.choice(np.flatnonzero(tm.kv_group == tm.group[t])))
        q_idx.append(np.array([t]))
        kv_idx.append(np.array([u]))
        want.append(np.array([brute_force_interior(
            int(tm.group_len[t]), kernel_size, stride, causal, int(tm.q_start[t]),
            int(tm.q_end[t]), int(tm.kv_tile_start[u]), int(tm.kv_tile_end[u]), kv_tile)]))
    q_idx, kv_idx, want = (np.concatenate(x) for x in (q_idx, kv_idx, want))
    # One call for all pairs: each distinct attribute set costs an XLA compile.
    got = cpp_tile_interior(tm.group[q_idx], tm.q_start[q_idx], tm.kv_tile_start[kv_idx],
                            *cfg, q_tile, kv_tile)
    bad = np.flatnonzero(got != want)
    if bad.size:
        b = bad[0]
        pytest.fail(f"cfg={cfg}, tiles={q_tile}/{kv_tile}: {bad.size} pairs differ; first: "
                    f"Q tile {q_idx[b]}, KV tile {kv_idx[b]}: C++ {bool(got[b])}, "
                    f"expected {bool(want[b])}")


@SETTINGS
@given(dims(), tile_sizes, tile_sizes, st.integers(0, 2**32 - 1))
@example((10, 5, 1, 1, False), 2, 2, 0)
@example((64, 16, 16, 1, False), 16, 16, 0)  # blocked + aligned: perfectly block-sparse
@example((10, 2, 1, 3, True), 1, 1, 0)
def test_tile_interior_matches_semantics(cfg, q_tile, kv_tile, seed):
    check_tile_interior(cfg, q_tile, kv_tile, seed)


def test_tile_interior_blocked_is_perfectly_block_sparse():
    # s == k, tiles equal to the block, k divides L: every visited tile is interior.
    got = cpp_tile_interior([0, 0, 0], [0, 16, 32], [0, 16, 32], 64, 16, 16, 1, False, 16, 16)
    assert got.tolist() == [True, True, True]
    # ... and a KV tile of another block is not.
    assert cpp_tile_interior([0], [0], [16], 64, 16, 16, 1, False, 16, 16).tolist() == [False]


# ---- the module itself ----------------------------------------------------------------------


def test_extension_reports_targets():
    assert {"gna_window_bounds", "gna_tile_map", "gna_tile_interior"} <= set(
        _extension.cpu_targets())
    assert _extension.load_error("cpu") is None
    assert isinstance(_extension.extension_version(), str)
    assert isinstance(_extension.compiled_kernels(), list)
