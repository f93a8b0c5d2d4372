"""Memory-efficient GNA in jnp: the CPU backend and the fallback on every platform.

It never builds an ``N x N`` array. The forward tiles the queries into n-D boxes (one
dilation group per dim, group-local coordinates, as the kernels do) and, for each Q tile,
gathers only the span of keys its neighborhood can reach (``semantics.tile_map_1d``), so
memory is O(N * window). The backward recomputes probabilities from the saved LSE: dQ
query-tile-major over the same spans, dK/dV key-tile-major over the inverse neighborhood
(the queries that can see a KV tile), so nothing is scattered and nothing depends on order.

Tiles are processed in chunks by a ``lax.scan`` over ``vmap``-ed tiles; the chunk size keeps
the live logits under a memory budget (``JAX_GNA_REFERENCE_MEMORY_MB``, default by platform).

A tile computes every (own token, partner token) pair of its span; pairs that do not attend
contribute exactly nothing, even when an operand is NaN or inf: their scores and score
gradients are selected away (``jnp.where``), and each product that sums over the span goes
through ``_masked_einsum``, so a non-finite value reaches only the results of the tokens
that attend to it (docs/numerics.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jax_gna import _checks
from jax_gna._config import AttentionConfig
from jax_gna.semantics import attends_1d, coordinate, group_length, tile_map_1d

__all__ = ["tiled_attention_fwd", "tiled_attention_bwd", "memory_budget_bytes"]

_RANK = 3  # lower ranks are padded with length-1 dims whose window is always [0, 1)
_HIGHEST = jax.lax.Precision.HIGHEST


def memory_budget_bytes(platform: str | None) -> int:
    """Bytes of live per-chunk intermediates the reference may use (env overrides)."""
    env = os.environ.get("JAX_GNA_REFERENCE_MEMORY_MB")
    if env:
        return int(float(env) * 2**20)
    return (2048 if platform in ("cuda", "rocm", "gpu") else 256) * 2**20


# ----------------------------------------------------------------------------------------
# Static gather plans (numpy, built at trace time from the tile map)
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _DimPlan:
    """Gather tables of one spatial dim: for every tile (rows) the coordinates of its own
    tokens, of the span of partner tokens it needs, and which (own, partner) pairs attend.

    In the forward a tile is a Q tile and partners are keys; in the backward's dK/dV pass a
    tile is a KV tile and partners are the queries that can see it.
    """

    own: np.ndarray       # [tiles, T] token coordinate (clipped into range where padded)
    own_ok: np.ndarray    # [tiles, T] bool: False on padding past the group's end
    partner: np.ndarray   # [tiles, S] token coordinate (clipped into range where padded)
    pairs: np.ndarray     # [tiles, T, S] bool: does the pair attend (False on padding)
    slot: np.ndarray      # [L] position of each token in the stacked [tiles * T] order

    @property
    def tile(self) -> int:
        return self.own.shape[1]

    @property
    def span(self) -> int:
        return self.partner.shape[1]

    @property
    def num_tiles(self) -> int:
        return self.own.shape[0]


def _coords(group, group_len, dilation, begin, count):
    """Coordinates ``g + d * (begin + x)`` for x < count, and whether each is in its group."""
    local = begin[:, None] + np.arange(count)[None, :]
    valid = (local >= 0) & (local < group_len[:, None])
    coords = coordinate(group[:, None], np.clip(local, 0, group_len[:, None] - 1), dilation)
    return coords.astype(np.int32), valid


def _span_begin(begin, end, group_len, span):
    """Fixed-size span start covering [begin, end), kept inside the group where possible."""
    return np.clip(begin, 0, np.maximum(group_len - span, 0))


def _forward_plan(length, k, s, d, causal, tile) -> _DimPlan:
    tm = tile_map_1d(length, k, s, d, causal, tile, 1)
    span = int(np.max(tm.kv_end - tm.kv_start))
    q, q_ok = _coords(tm.group, tm.group_len, d, tm.q_start, tile)
    kv_begin = _span_begin(tm.kv_start, tm.kv_end, tm.group_len, span)
    kv, kv_ok = _coords(tm.group, tm.group_len, d, kv_begin, span)
    pairs = (q_ok[:, :, None] & kv_ok[:, None, :]
             & attends_1d(q[:, :, None], kv[:, None, :], length, k, s, d, causal))
    return _DimPlan(q, q_ok, kv, pairs, _slots(q, q_ok, length))


def _dkdv_plan(length, k, s, d, causal, tile) -> _DimPlan:
    tm = tile_map_1d(length, k, s, d, causal, 1, tile)
    span = int(np.max(tm.kv_q_end - tm.kv_q_start))
    glen = group_length(tm.kv_group, length, d)
    kv, kv_ok = _coords(tm.kv_group, glen, d, tm.kv_tile_start, tile)
    q_begin = _span_begin(tm.kv_q_start, tm.kv_q_end, glen, span)
    q, q_ok = _coords(tm.kv_group, glen, d, q_begin, span)
    pairs = (kv_ok[:, :, None] & q_ok[:, None, :]
             & attends_1d(q[:, None, :], kv[:, :, None], length, k, s, d, causal))
    return _DimPlan(kv, kv_ok, q, pairs, _slots(kv, kv_ok, length))


def _slots(coords, valid, length):
    """Where each token lands in the flattened ``[tiles * T]`` stacking of tile outputs."""
    slot = np.full(length, -1, np.int64)
    flat = np.arange(coords.size).reshape(coords.shape)
    slot[coords[valid]] = flat[valid]
    assert (slot >= 0).all(), "every token belongs to exactly one tile"
    return slot.astype(np.int32)


def _tile_sizes(spatial, params, tokens_target=128):
    """Per-dim tile extents: about half the window per dim (less redundant span), capped so a
    tile holds about ``tokens_target`` tokens and never exceeds the longest group."""
    sizes = []
    for n, k, d in zip(spatial, params.kernel_size, params.dilation):
        longest = int(group_length(0, n, d))   # group 0 is a longest group
        sizes.append(max(1, min(longest, 1 << max(0, (k // 2).bit_length() - 0), 64)))
    while math.prod(sizes) > tokens_target and max(sizes) > 1:
        big = int(np.argmax(sizes))
        sizes[big] = max(1, sizes[big] // 2)
    return tuple(sizes)


def _padded(config: AttentionConfig):
    """Spatial shape and per-dim (k, s, d, causal) padded to rank 3 (leading length-1 dims)."""
    pad = _RANK - config.rank
    shape = (1,) * pad + tuple(config.spatial_shape)
    p = config.params
    dims = [(1, 1, 1, False)] * pad + [p.dim(a) for a in range(config.rank)]
    return shape, dims


@functools.lru_cache(maxsize=64)
def _plans(config: AttentionConfig, backward_kv: bool, tile: tuple[int, ...] | None):
    shape, dims = _padded(config)
    if tile is None:
        tile = (1,) * (_RANK - config.rank) + _tile_sizes(config.spatial_shape, config.params)
    build = _dkdv_plan if backward_kv else _forward_plan
    return tuple(build(n, *dim, t) for n, dim, t in zip(shape, dims, tile))


# ----------------------------------------------------------------------------------------
# The tile loop
# ----------------------------------------------------------------------------------------


def _tile_loop(body, num_tiles: int, chunk: int, carry_init):
    """Run ``body(tile_id) -> (stacked_outputs, summed_outputs)`` over all tiles, ``chunk``
    tiles at a time (vmapped), scanning over chunks. Returns (sums, stacked [num_tiles...])."""
    chunk = max(1, min(chunk, num_tiles))
    n_chunks = -(-num_tiles // chunk)
    ids = np.arange(n_chunks * chunk)
    valid = ids < num_tiles
    ids = np.minimum(ids, num_tiles - 1).astype(np.int32).reshape(n_chunks, chunk)
    valid = valid.reshape(n_chunks, chunk)

    def step(carry, xs):
        tid, ok = xs
        stacked, summed = jax.vmap(body)(tid)
        summed = jax.tree.map(
            lambda c: jnp.sum(jnp.where(ok.reshape((-1,) + (1,) * (c.ndim - 1)), c, 0), 0),
            summed)
        return jax.tree.map(jnp.add, carry, summed), stacked

    if n_chunks == 1:  # small problems: no loop at all (much faster to compile)
        carry, stacked = step(carry_init, (jnp.asarray(ids[0]), jnp.asarray(valid[0])))
        return carry, jax.tree.map(lambda o: o[:num_tiles], stacked)
    carry, stacked = jax.lax.scan(step, carry_init, (jnp.asarray(ids), jnp.asarray(valid)))
    stacked = jax.tree.map(
        lambda o: o.reshape((n_chunks * chunk,) + o.shape[2:])[:num_tiles], stacked)
    return carry, stacked


def _unravel(tile_id, plans):
    n1, n2 = plans[1].num_tiles, plans[2].num_tiles
    return tile_id // (n1 * n2), (tile_id // n2) % n1, tile_id % n2


def _flat_index(rows, shape):
    """Row-major flat token index of the n-D box given by per-dim coordinate rows."""
    a, b, c = rows
    return ((a[:, None, None] * shape[1] + b[None, :, None]) * shape[2]
            + c[None, None, :]).reshape(-1)


def _pair_mask(masks):
    a, b, c = masks  # [T0, S0], [T1, S1], [T2, S2]
    m = a[:, None, None, :, None, None] & b[None, :, None, None, :, None] \
        & c[None, None, :, None, None, :]
    t = a.shape[0] * b.shape[0] * c.shape[0]
    return m.reshape(t, -1)


def _tile_tables(plans, tid):
    """Per-tile gather indices (flat own tokens, flat partner tokens), the pair mask and
    which own tokens are real (not padding)."""
    shape = tuple(int(p.slot.shape[0]) for p in plans)
    t = _unravel(tid, plans)
    own = _flat_index([jnp.asarray(p.own)[i] for p, i in zip(plans, t)], shape)
    partner = _flat_index([jnp.asarray(p.partner)[i] for p, i in zip(plans, t)], shape)
    mask = _pair_mask([jnp.asarray(p.pairs)[i] for p, i in zip(plans, t)])
    a, b, c = (jnp.asarray(p.own_ok)[i] for p, i in zip(plans, t))
    own_ok = (a[:, None, None] & b[None, :, None] & c[None, None, :]).reshape(-1)
    return own, partner, mask, own_ok


def _untile(stacked, plans, trailing: int):
    """[tiles, B, T, *rest] stacked per-tile results -> [B, L0, L1, L2, *rest] by token."""
    n = [p.num_tiles for p in plans]
    t = [p.tile for p in plans]
    b = stacked.shape[1]
    rest = stacked.shape[3:]
    x = stacked.reshape(n[0], n[1], n[2], b, t[0], t[1], t[2], *rest)
    x = jnp.transpose(x, (3, 0, 4, 1, 5, 2, 6) + tuple(range(7, 7 + trailing)))
    x = x.reshape(b, n[0] * t[0], n[1] * t[1], n[2] * t[2], *rest)
    for axis, p in enumerate(plans):
        x = jnp.take(x, jnp.asarray(p.slot), axis=axis + 1)
    return x


def _chunk_for(bytes_per_tile: int, budget: int) -> int:
    return max(1, budget // max(1, bytes_per_tile))


def _masked_einsum(spec: str, weights, values, mask, mask_letters: str):
    """``einsum(spec, weights, values)`` where the (own, partner) pairs outside ``mask``
    contribute exactly nothing, even where ``values`` is NaN or inf (a plain product would
    add 0 * nan = nan to every result that sums over such a pair).

    ``weights`` is already 0 outside the mask; ``mask`` is boolean over the two pair letters
    ``mask_letters`` of ``spec``'s first operand. The product runs on the values with
    non-finite entries zeroed; a result row that an attending pair brings a non-finite value
    into is NaN as a whole (the rows are ``values``' tokens summed over: one finite check per
    token, then a product of the size of the scores, not of the output).
    """
    inputs, out = spec.split("->")
    weight_letters, value_letters = inputs.split(",")
    finite = jnp.isfinite(values)
    result = jnp.einsum(spec, weights, jnp.where(finite, values, 0), precision=_HIGHEST)
    # The token's own feature letters (head dim): one flag per token and head.
    feature_axes = tuple(i for i, c in enumerate(value_letters) if c not in weight_letters)
    token_letters = "".join(c for c in value_letters if c in weight_letters)
    token_bad = jnp.logical_not(jnp.all(finite, axis=feature_axes))
    kept = "".join(c for c in out if c in mask_letters + token_letters)
    hits = jnp.einsum(f"{mask_letters},{token_letters}->{kept}", mask.astype(jnp.float32),
                      token_bad.astype(jnp.float32))
    hits = hits.reshape([hits.shape[kept.index(c)] if c in kept else 1 for c in out])
    return jnp.where(hits > 0, jnp.asarray(jnp.nan, result.dtype), result)


# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------


def _flatten_tokens(x, b):
    return x.reshape(b, -1, *x.shape[-2:])


def tiled_attention_fwd(query, key, value, additional_keys, additional_values,
                        config: AttentionConfig, *, platform: str | None = None,
                        tile: tuple[int, ...] | None = None):
    """GNA forward -> (out [B, *spatial, Hq, Dv] in query's dtype, lse [B, *spatial, Hq])."""
    _checks.check_reference_token_count(config.spatial_shape)
    plans = _plans(config, False, tile)
    b, hq, d = query.shape[0], query.shape[-2], query.shape[-1]
    hkv, dv = key.shape[-2], value.shape[-1]
    g = hq // hkv
    compute = jnp.promote_types(query.dtype, jnp.float32)
    q = _flatten_tokens(query, b)
    k = _flatten_tokens(key, b)
    v = _flatten_tokens(value, b)
    ek, ev = additional_keys.astype(compute), additional_values.astype(compute)
    n_extra = ek.shape[1]
    t = math.prod(p.tile for p in plans)
    span = math.prod(p.span for p in plans)
    itemsize = jnp.dtype(compute).itemsize
    per_tile = itemsize * b * (3 * hq * t * (span + n_extra) + hkv * span * (d + dv)
                               + hq * t * (d + dv))

    def body(tid):
        own, partner, mask, _ = _tile_tables(plans, tid)
        qb = q[:, own].astype(compute).reshape(b, t, hkv, g, d)
        kb = k[:, partner].astype(compute)
        vb = v[:, partner].astype(compute)
        s = jnp.einsum("bqhgd,bkhd->bhgqk", qb, kb, precision=_HIGHEST) * config.scale
        s = jnp.where(mask, s, -jnp.inf)
        if n_extra:
            se = jnp.einsum("bqhgd,bkhd->bhgqk", qb, ek, precision=_HIGHEST) * config.scale
            s = jnp.concatenate([s, se], axis=-1)
            vb = jnp.concatenate([vb, ev], axis=1)
            mask = jnp.concatenate([mask, jnp.ones((t, n_extra), bool)], axis=1)
        m = jnp.max(s, axis=-1, keepdims=True)
        m = jnp.where(jnp.isfinite(m), m, 0.0)   # padded query rows see nothing
        p = jnp.exp(s - m)
        l = jnp.sum(p, axis=-1, keepdims=True)
        out = _masked_einsum("bhgqk,bkhd->bqhgd", p / jnp.where(l > 0, l, 1.0), vb, mask,
                             "qk")
        lse = (m + jnp.log(l))[..., 0]                       # [b, h, g, q]
        lse = jnp.moveaxis(lse, 3, 1).reshape(b, t, hq)
        return (out.reshape(b, t, hq, dv).astype(query.dtype), lse), ()

    num_tiles = math.prod(p.num_tiles for p in plans)
    chunk = _chunk_for(per_tile, memory_budget_bytes(platform))
    _, (out_t, lse_t) = _tile_loop(body, num_tiles, chunk, ())
    out = _untile(out_t, plans, 2).reshape(query.shape[:-1] + (dv,))
    lse = _untile(lse_t, plans, 1).reshape(query.shape[:-1])
    return out, lse


# ----------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------


def tiled_attention_bwd(query, key, value, additional_keys, additional_values, out, lse,
                        dout, config: AttentionConfig, *, dlse=None,
                        platform: str | None = None, tile: tuple[int, ...] | None = None):
    """GNA backward -> (dq, dk, dv, d_additional_keys, d_additional_values), input dtypes.

    ``dlse`` is the cotangent of the returned LSE (None: zero). Since d(lse)/d(logits) = P,
    it only shifts the softmax correction: dS = P * (dP - (rowsum(dO * O) - dLSE)).
    """
    _checks.check_reference_token_count(config.spatial_shape)
    b, hq, d = query.shape[0], query.shape[-2], query.shape[-1]
    hkv, dv = key.shape[-2], value.shape[-1]
    g = hq // hkv
    compute = jnp.promote_types(query.dtype, jnp.float32)
    itemsize = jnp.dtype(compute).itemsize
    budget = memory_budget_bytes(platform)
    scale = config.scale
    q = _flatten_tokens(query, b)
    k = _flatten_tokens(key, b)
    v = _flatten_tokens(value, b)
    do = _flatten_tokens(dout, b)
    lse_f = lse.reshape(b, -1, hq).astype(compute)
    # delta = rowsum(dO * O): the softmax-gradient correction, once for all tokens.
    delta = jnp.sum(dout.astype(compute) * out.astype(compute), axis=-1).reshape(b, -1, hq)
    if dlse is not None:
        delta = delta - dlse.astype(compute).reshape(b, -1, hq)
    ek, ev = additional_keys.astype(compute), additional_values.astype(compute)
    n_extra = ek.shape[1]

    # dQ (and the additional K/V gradients), query-tile-major over the forward's spans.
    plans = _plans(config, False, tile)
    t = math.prod(p.tile for p in plans)
    span = math.prod(p.span for p in plans)
    per_tile = itemsize * b * (4 * hq * t * (span + n_extra) + hkv * span * (d + dv)
                               + hq * t * (2 * d + dv))

    def dq_body(tid):
        own, partner, mask, own_ok = _tile_tables(plans, tid)
        qb = q[:, own].astype(compute).reshape(b, t, hkv, g, d)
        dob = do[:, own].astype(compute).reshape(b, t, hkv, g, dv)
        lb = jnp.moveaxis(lse_f[:, own].reshape(b, t, hkv, g), 1, 3)[..., None]
        db = jnp.moveaxis(delta[:, own].reshape(b, t, hkv, g), 1, 3)[..., None]
        kb = k[:, partner].astype(compute)
        vb = v[:, partner].astype(compute)
        if n_extra:
            kb = jnp.concatenate([kb, ek], axis=1)
            vb = jnp.concatenate([vb, ev], axis=1)
            # Padding rows repeat real queries: they must not add to the extra gradients.
            mask = jnp.concatenate(
                [mask, jnp.broadcast_to(own_ok[:, None], (t, n_extra))], axis=1)
        s = jnp.einsum("bqhgd,bkhd->bhgqk", qb, kb, precision=_HIGHEST) * scale
        p = jnp.where(mask, jnp.exp(s - lb), 0.0)
        dp = jnp.einsum("bqhgd,bkhd->bhgqk", dob, vb, precision=_HIGHEST)
        ds = jnp.where(mask, p * (dp - db), 0.0)
        dqb = _masked_einsum("bhgqk,bkhd->bqhgd", ds, kb, mask, "qk") * scale
        extra = ()
        if n_extra:
            dse, pe = ds[..., -n_extra:], p[..., -n_extra:]
            dke = jnp.einsum("bhgqk,bqhgd->bkhd", dse, qb, precision=_HIGHEST) * scale
            dve = jnp.einsum("bhgqk,bqhgd->bkhd", pe, dob, precision=_HIGHEST)
            extra = (dke, dve)
        return dqb.reshape(b, t, hq, d), extra

    extra_init = ()
    if n_extra:
        extra_init = (jnp.zeros(ek.shape, compute), jnp.zeros(ev.shape, compute))
    num_tiles = math.prod(p.num_tiles for p in plans)
    extra_sum, dq_t = _tile_loop(dq_body, num_tiles, _chunk_for(per_tile, budget), extra_init)
    dq = _untile(dq_t, plans, 2).reshape(query.shape).astype(query.dtype)
    if n_extra:
        dek = extra_sum[0].astype(additional_keys.dtype)
        dev = extra_sum[1].astype(additional_values.dtype)
    else:
        dek, dev = jnp.zeros_like(additional_keys), jnp.zeros_like(additional_values)

    # dK, dV key-tile-major over the inverse neighborhood: no scatter, no atomics.
    kplans = _plans(config, True, tile)
    tk = math.prod(p.tile for p in kplans)
    qspan = math.prod(p.span for p in kplans)
    per_tile = itemsize * b * (4 * hq * tk * qspan + hq * qspan * (d + dv + 2)
                               + hkv * tk * (d + dv))

    def dkdv_body(tid):
        own, partner, mask, _ = _tile_tables(kplans, tid)   # own: keys, partner: queries
        kb = k[:, own].astype(compute)
        vb = v[:, own].astype(compute)
        qb = q[:, partner].astype(compute).reshape(b, qspan, hkv, g, d)
        dob = do[:, partner].astype(compute).reshape(b, qspan, hkv, g, dv)
        lb = jnp.moveaxis(lse_f[:, partner].reshape(b, qspan, hkv, g), 1, 3)[..., None]
        db = jnp.moveaxis(delta[:, partner].reshape(b, qspan, hkv, g), 1, 3)[..., None]
        s = jnp.einsum("bqhgd,bkhd->bhgqk", qb, kb, precision=_HIGHEST) * scale
        p = jnp.where(mask.T, jnp.exp(s - lb), 0.0)
        dvb = _masked_einsum("bhgqk,bqhgd->bkhd", p, dob, mask.T, "qk")
        dp = jnp.einsum("bqhgd,bkhd->bhgqk", dob, vb, precision=_HIGHEST)
        ds = jnp.where(mask.T, p * (dp - db), 0.0)
        dkb = _masked_einsum("bhgqk,bqhgd->bkhd", ds, qb, mask.T, "qk") * scale
        return (dkb.astype(key.dtype), dvb.astype(value.dtype)), ()

    num_tiles = math.prod(p.num_tiles for p in kplans)
    _, (dk_t, dv_t) = _tile_loop(dkdv_body, num_tiles, _chunk_for(per_tile, budget), ())
    dk = _untile(dk_t, kplans, 2).reshape(key.shape)
    dvv = _untile(dv_t, kplans, 2).reshape(value.shape)
    return dq, dk, dvv, dek, dev
