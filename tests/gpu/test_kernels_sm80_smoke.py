"""Smoke test of the sm80 CUDA kernels, straight through their XLA FFI targets.

Run on a GPU machine after ``pip install .`` (builds libjax_gna_cuda.so); the kernel family
is ``JAX_GNA_SMOKE_BACKEND`` (default sm80; sm90 runs the Hopper kernels the same way; halo
runs the small-window kernels on their own cases, ``_halo_cases``; its backward, head dims
32/64, refuses additional tokens):

    python tests/gpu/test_kernels_sm80_smoke.py            # PASS/FAIL table, exit code 1 on failure
    python tests/gpu/test_kernels_sm80_smoke.py -k causal  # only cases whose name contains "causal"
    pytest tests/gpu/test_kernels_sm80_smoke.py            # same, as one test (skipped without GPU)

Every case calls ``jax.ffi.ffi_call`` on the targets registered by ``jax_gna._extension``
(``JaxGnaFwd`` / ``JaxGnaBwd``) with explicit tile boxes, and compares against a dense float64
numpy reference built from ``jax_gna.semantics.neighborhood_mask`` (plus the additional
tokens): forward out + LSE, backward dq, dk, dv, dextra_k, dextra_v (with a nonzero LSE
cotangent, which the kernels fold into delta). Output buffers are poisoned first: just before
each kernel call, device buffers of the outputs' sizes are filled with NaN and freed, so the
allocator hands the same memory to the kernel's outputs and an element the kernel never
writes shows up as NaN (NaN never passes). Deterministic mode is also checked for bitwise
reproducibility, and a bad tile box must be rejected with an error.

Tolerances (docs/semantics.md): half precision relative error < 1e-2 for out, max |LSE error| < 1e-3,
relative error < 2e-2 for gradients.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
import traceback

import numpy as np

BACKEND = os.environ.get("JAX_GNA_SMOKE_BACKEND", "sm80")
OUT_TOL, LSE_TOL, GRAD_TOL = 1e-2, 1e-3, 2e-2


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    spatial: tuple
    kernel_size: tuple
    stride: tuple = None
    dilation: tuple = None
    causal: tuple = None
    batch: int = 2
    heads_q: int = 2
    heads_kv: int = 2
    head_dim: int = 64
    num_extra: int = 0
    dtype: str = "bf16"
    bwd: bool = True
    # Tile boxes (per dim) by direction; None: a box of the kernel's token count is derived.
    q_tile: tuple = None
    kv_tile: tuple = None
    # Queries to compute ((lo, hi) per dim; the kernels' query_begin/query_end): only these
    # rows are compared (others may be unwritten); the backward gets LSE +inf and zero
    # cotangents outside, as jax_gna.attention_in_boxes passes them.
    query_box: tuple = None
    # Keys scaled by 1 + key_ramp * (flat position / tokens): later KV tiles raise the row
    # max again and again (the forward's lazy rescaling: skipped below its threshold,
    # taken above).
    key_ramp: float = 0.0
    # Environment variables set around the kernel calls ((name, value) pairs; test hooks of
    # the launchers, e.g. JAX_GNA_HALO_HEADS_PER_CTA).
    env: tuple = ()
    # The forward must refuse the call ("cannot serve ..."): the row passes when it does.
    refused: bool = False


def _halo_cases() -> list[Case]:
    """The halo forward's cases: windows of 3-13 (and the edges of its rule), 2-D/3-D grids,
    partial tiles, dilation up to length / kernel_size, stride, causal dims, GQA with one
    head per CTA and with heads sharing a resident halo (JAX_GNA_HALO_HEADS_PER_CTA),
    CTAs of several (batch, KV head) units (JAX_GNA_HALO_UNITS_PER_CTA), additional tokens, key lists longer than the shared-memory ring (streamed), head dims
    32/64/128 in bf16 and fp16. The backward (head dims 32/64) runs on every case; with
    additional tokens it must refuse (a SKIP row with the reason)."""
    f = dict(bwd=False)
    share = lambda n: (("JAX_GNA_HALO_HEADS_PER_CTA", str(n)),)  # noqa: E731
    units = lambda n: (("JAX_GNA_HALO_UNITS_PER_CTA", str(n)),)  # noqa: E731
    c = [
        Case("halo_2d_7x7", (56, 56), (7, 7), batch=1, **f),
        Case("halo_2d_7x7_partial", (30, 27), (7, 7), **f),
        Case("halo_2d_even_k", (20, 22), (4, 6), **f),
        Case("halo_2d_dilation", (48, 40), (5, 7), dilation=(2, 3), **f),
        Case("halo_2d_dinat_max", (42, 42), (7, 7), dilation=(6, 6), **f),
        Case("halo_2d_stride", (30, 30), (7, 7), stride=(2, 3), **f),
        Case("halo_2d_blocked", (32, 32), (8, 8), stride=(8, 8), **f),
        Case("halo_2d_causal", (20, 24), (5, 7), causal=(True, True), **f),
        Case("halo_2d_causal_dil", (33, 30), (3, 5), dilation=(3, 2), causal=(True, False), **f),
        Case("halo_3d_3x3x3", (8, 12, 10), (3, 3, 3), **f),
        Case("halo_3d_causal_t", (8, 14, 14), (3, 5, 5), causal=(True, False, False), **f),
        Case("halo_3d_dilation", (12, 12, 12), (3, 3, 3), dilation=(1, 2, 4), **f),
        Case("halo_1d", (300,), (13,), **f),
        Case("halo_1d_causal", (257,), (31,), causal=(True,), **f),
        # GQA: one query head per CTA, then query heads sharing the CTA's halo.
        Case("halo_2d_gqa", (28, 28), (7, 7), heads_q=8, heads_kv=2, **f),
        Case("halo_2d_gqa_shared", (28, 28), (7, 7), heads_q=8, heads_kv=2, env=share(4), **f),
        Case("halo_2d_gqa_shared_extra", (20, 20), (5, 5), heads_q=6, heads_kv=2,
             num_extra=37, env=share(3), **f),
        # Additional tokens after the halo in the key list (sharing its last chunk), over
        # several chunks.
        Case("halo_2d_extra", (24, 24), (5, 5), num_extra=70, **f),
        Case("halo_1d_extra_causal", (150,), (9,), num_extra=5, causal=(True,), heads_q=4,
             heads_kv=2, **f),
        # Key lists longer than the ring (head dim 32/64/128: 8/4/2 chunks of 64 keys) stream
        # through it; the head-sharing hook does not apply to them.
        Case("halo_2d_13x13_stream", (40, 40), (13, 13), **f),
        Case("halo_2d_13x13_stream_extra", (40, 40), (13, 13), num_extra=100, heads_q=4,
             heads_kv=1, env=share(4), **f),
        Case("halo_2d_7x7_hdim128_stream", (28, 28), (7, 7), head_dim=128, **f),
        Case("halo_2d_hdim32_stream_extra", (40, 40), (13, 13), num_extra=200, head_dim=32,
             **f),
        Case("halo_2d_explicit_box", (33, 17), (5, 5), q_tile=(4, 16), **f),
        Case("halo_2d_query_range", (24, 30), (7, 9), stride=(2, 3), dilation=(1, 2),
             causal=(False, True), query_box=((5, 17), (0, 30)), **f),
        Case("halo_3d_query_range", (12, 8, 8), (5, 3, 3), heads_q=4, heads_kv=2, num_extra=5,
             query_box=((3, 9), (0, 8), (1, 7)), **f),
        Case("halo_2d_rising_keys", (32, 32), (13, 13), key_ramp=12.0, dtype="fp16", batch=1,
             **f),
        Case("halo_2d_many_heads", (14, 14), (3, 3), batch=16, heads_q=8, heads_kv=8, **f),
        # Forward CTAs of several (batch, KV head) units (JAX_GNA_HALO_UNITS_PER_CTA): the
        # next unit's Q tile and chunks load while one computes; a last CTA of fewer units;
        # key lists of one chunk, resident and streamed; GQA and additional tokens.
        Case("halo_2d_units", (30, 27), (7, 7), batch=3, heads_q=4, heads_kv=2, env=units(4),
             **f),
        Case("halo_2d_units_stream", (40, 40), (13, 13), batch=2, heads_q=3, heads_kv=3,
             env=units(4), **f),
        Case("halo_3d_units_gqa_extra", (6, 10, 12), (3, 5, 5), batch=2, heads_q=6,
             heads_kv=2, num_extra=20, causal=(True, False, False), env=units(3), **f),
        Case("halo_1d_units_one_chunk", (200,), (5,), dilation=(4,), batch=5, heads_q=2,
             heads_kv=2, env=units(8), **f),
        # Enough (batch, KV head) units that the plan itself gives a CTA several (132 SMs).
        Case("halo_2d_units_auto", (28, 28), (7, 7), batch=34, heads_q=4, heads_kv=4, **f),
        Case("halo_2d_units_dilation", (28, 28), (5, 5), dilation=(2, 2), batch=4,
             heads_q=2, heads_kv=1, env=units(3), **f),
        # Past the rule's halo limit: refused with the reason.
        Case("halo_2d_large_window_refused", (64, 64), (31, 31), refused=True, **f),
    ]
    for d in (32, 64, 128):
        for dt in ("bf16", "fp16"):
            c.append(Case(f"halo_2d_{dt}_hdim{d}", (20, 22), (5, 7), dilation=(1, 2),
                          num_extra=9, head_dim=d, dtype=dt, heads_q=4, heads_kv=2, **f))
    # The backward without additional tokens: dtypes x head dims, GQA (dK/dV summed over the
    # group inside a CTA), causal with dilation, a KV box other than the Q box.
    for d in (32, 64):
        for dt in ("bf16", "fp16"):
            c.append(Case(f"halo_2d_bwd_{dt}_hdim{d}", (20, 22), (5, 7), dilation=(1, 2),
                          causal=(True, False), head_dim=d, dtype=dt, heads_q=4, heads_kv=2,
                          **f))
    c.append(Case("halo_2d_bwd_kv_box", (30, 27), (7, 7), q_tile=(8, 8), kv_tile=(4, 16),
                  heads_q=6, heads_kv=2, **f))
    return [dataclasses.replace(x, bwd=not x.refused) for x in c]


def _cases() -> list[Case]:
    if BACKEND == "halo":
        return _with_head_dim_override(_halo_cases())
    c = []
    # 1-D: partial tiles (L not a multiple of any tile), odd/even kernels, stride, dilation
    # (groups of different lengths), causal.
    c.append(Case("1d_na", (200,), (13,)))
    c.append(Case("1d_even_k_stride", (157,), (10,), stride=(3,)))
    c.append(Case("1d_causal_stride_dil", (301,), (17,), stride=(4,), dilation=(3,),
                  causal=(True,)))
    c.append(Case("1d_blocked", (256,), (32,), stride=(32,)))
    # 2-D / 3-D boxes.
    c.append(Case("2d_mixed", (24, 30), (7, 9), stride=(2, 3), dilation=(1, 2),
                  causal=(False, True)))
    c.append(Case("2d_self_attention", (16, 16), (16, 16)))
    c.append(Case("3d_mixed", (6, 10, 12), (3, 5, 4), stride=(1, 2, 4), dilation=(2, 1, 1)))
    c.append(Case("3d_causal_t", (8, 8, 8), (4, 3, 5), causal=(True, False, False)))
    # GQA, additional tokens (partial last extra tile), both.
    c.append(Case("2d_gqa", (20, 18), (5, 7), heads_q=4, heads_kv=1))
    c.append(Case("2d_extra", (12, 20), (5, 5), num_extra=37))
    c.append(Case("1d_gqa_extra_causal", (150,), (21,), heads_q=6, heads_kv=2, num_extra=70,
                  causal=(True,)))
    # Head dims (forward 32/64/128/256, backward 32/64/128) and fp16.
    for d in (32, 128, 256):
        c.append(Case(f"2d_hdim{d}", (14, 22), (5, 7), dilation=(1, 2), num_extra=9,
                      head_dim=d, bwd=d != 256))
    for d in (32, 64, 128, 256):
        c.append(Case(f"2d_fp16_hdim{d}", (18, 12), (7, 5), stride=(2, 1), dtype="fp16",
                      heads_q=4, heads_kv=2, head_dim=d, bwd=d != 256))
    # An explicit non-default box.
    c.append(Case("2d_explicit_tiles", (33, 17), (9, 5), q_tile=(4, 32), kv_tile=(8, 8)))
    # Query ranges (context parallelism's local step), with dilation, causal, GQA, extras.
    c.append(Case("2d_query_range", (24, 30), (7, 9), stride=(2, 3), dilation=(1, 2),
                  causal=(False, True), query_box=((5, 17), (0, 30))))
    c.append(Case("3d_query_range", (12, 8, 8), (5, 3, 3), heads_q=4, heads_kv=2,
                  num_extra=5, query_box=((3, 9), (0, 8), (1, 7))))
    # Rising scores along the visit order (row maxima move by more and less than the
    # rescale threshold, many times per row).
    c.append(Case("1d_rising_keys", (1024,), (512,), key_ramp=12.0, head_dim=128, batch=1))
    c.append(Case("2d_fp16_rising_keys", (32, 32), (17, 17), key_ramp=12.0, dtype="fp16",
                  batch=1))
    # Head dim 128 with an odd number of work items, and causal GQA with additional tokens
    # (Q tiles of different lengths next to each other).
    c.append(Case("1d_hdim128_odd_items", (300,), (33,), head_dim=128, heads_q=1, heads_kv=1,
                  batch=3, bwd=False))
    c.append(Case("1d_hdim128_causal_gqa", (700,), (257,), causal=(True,), heads_q=6,
                  heads_kv=2, head_dim=128, num_extra=40, dtype="fp16"))
    return _with_head_dim_override(c)


def _with_head_dim_override(c: list[Case]) -> list[Case]:
    # JAX_GNA_SMOKE_HEAD_DIM=D: every case at head dim D (e.g. 128: every shape through that
    # instantiation's tiles); forward only where the backend has no backward at D.
    override = os.environ.get("JAX_GNA_SMOKE_HEAD_DIM")
    if override:
        d = int(override)
        c = [dataclasses.replace(x, head_dim=d, bwd=x.bwd and d <= 128) for x in c]
    return c


# ----------------------------------------------------------------------------------------
# Reference (float64 numpy)
# ----------------------------------------------------------------------------------------


def _mask(case: Case, params):
    from jax_gna import semantics
    return np.asarray(semantics.neighborhood_mask(case.spatial, params))


def reference(case, params, q, k, v, ek, ev, scale, dout=None, dlse=None, out_used=None):
    """Dense attention in float64: (out, lse) and, with dout, the gradients."""
    b, hq, d = q.shape[0], q.shape[-2], q.shape[-1]
    hkv = k.shape[-2]
    g = hq // hkv
    n = math.prod(case.spatial)
    e = ek.shape[1]
    qf = q.astype(np.float64).reshape(b, n, hkv, g, d)
    kf = np.concatenate([k.astype(np.float64).reshape(b, n, hkv, d), ek.astype(np.float64)], 1)
    vf = np.concatenate([v.astype(np.float64).reshape(b, n, hkv, d), ev.astype(np.float64)], 1)
    mask = np.concatenate([_mask(case, params), np.ones((n, e), bool)], axis=1)
    logits = np.einsum("bnhgd,bmhd->bhgnm", qf, kf) * scale
    logits = np.where(mask, logits, -np.inf)
    mx = logits.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(logits - mx).sum(-1, keepdims=True)))[..., 0]   # b h g n
    p = np.exp(logits - lse[..., None])
    out = np.einsum("bhgnm,bmhd->bnhgd", p, vf)
    res = {"out": out.reshape(q.shape), "lse": np.moveaxis(lse.reshape(b, hq, n), 1, 2)
           .reshape(q.shape[:-1])}
    if dout is None:
        return res
    do = dout.astype(np.float64).reshape(b, n, hkv, g, d)
    o_used = (out if out_used is None else out_used.astype(np.float64).reshape(out.shape))
    delta = np.einsum("bnhgd,bnhgd->bhgn", do, o_used)
    dl = np.moveaxis(dlse.astype(np.float64).reshape(b, n, hkv, g), 1, 3)     # b h g n
    dp = np.einsum("bnhgd,bmhd->bhgnm", do, vf)
    ds = p * (dp - delta[..., None] + dl[..., None])
    dq = scale * np.einsum("bhgnm,bmhd->bnhgd", ds, kf)
    dkf = scale * np.einsum("bhgnm,bnhgd->bmhd", ds, qf)
    dvf = np.einsum("bhgnm,bnhgd->bmhd", p, do)
    res.update(dq=dq.reshape(q.shape), dk=dkf[:, :n].reshape(k.shape),
               dv=dvf[:, :n].reshape(v.shape), dek=dkf[:, n:], dev=dvf[:, n:])
    return res


# ----------------------------------------------------------------------------------------
# FFI calls
# ----------------------------------------------------------------------------------------


def _jax():
    import jax
    import jax.numpy as jnp
    return jax, jnp


def _targets():
    from jax_gna import _extension
    names = {sym: name for name, sym in _extension.CUDA_TARGETS.items()}
    return names["JaxGnaFwd"], names["JaxGnaBwd"]


def _tile_tokens():
    """{(direction, dtype, head_dim): (q_tokens, kv_tokens)} of the BACKEND kernels."""
    from jax_gna import _extension
    table = {}
    for line in _extension.compiled_kernels():
        parts = line.split()
        if len(parts) == 7 and parts[1] == BACKEND and parts[3] == parts[4]:
            table[(parts[0], parts[2], int(parts[3]))] = (int(parts[5]), int(parts[6]))
    return table


def _box(tokens, spatial, kernel_size):
    """A power-of-two box of ``tokens`` tokens shaped like the window: the dim whose window
    is longest relative to the box (last dim on ties) doubles until the box holds them."""
    rank = len(spatial)
    box = [1] * rank
    caps = [1 << max(0, (int(n) - 1).bit_length()) for n in spatial]
    left = tokens
    while left > 1:
        growable = [a for a in range(rank) if box[a] * 2 <= caps[a]] or list(range(rank))
        a = max(growable, key=lambda i: (kernel_size[i] / box[i], i))
        box[a] *= 2
        left //= 2
    return tuple(box)


def _q_box(case: Case, params, tokens):
    """The Q box of a case: its own when it has the kernel's token count, else the halo rule's
    (halo: jax_gna.tiles.best_halo_box, what the lowering passes) or a window-shaped one."""
    if case.q_tile and math.prod(case.q_tile) == tokens:
        return case.q_tile
    if BACKEND == "halo":
        from jax_gna import kernel_manifest, tiles
        return tiles.best_halo_box(case.spatial, params, tokens,
                                   tuple(256 // d for d in params.dilation), case.num_extra,
                                   64, kernel_manifest.FAMILIES["halo"].max_halo_tokens, 256,
                                   case.query_box)
    return _box(tokens, case.spatial, params.kernel_size)


class _Env:
    """Sets (name, value) pairs in os.environ for the duration of a with-block."""

    def __init__(self, pairs):
        self.pairs = pairs
        self.saved = {}

    def __enter__(self):
        for name, value in self.pairs:
            self.saved[name] = os.environ.get(name)
            os.environ[name] = value

    def __exit__(self, *exc):
        for name, old in self.saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _attrs(params, scale, q_box, kv_box, spatial, query_box=None):
    ranges = query_box or tuple((0, int(n)) for n in spatial)
    return dict(backend=BACKEND,
                kernel_size=np.asarray(params.kernel_size, np.int64),
                stride=np.asarray(params.stride, np.int64),
                dilation=np.asarray(params.dilation, np.int64),
                is_causal=np.asarray([int(x) for x in params.is_causal], np.int64),
                q_tile=np.asarray(q_box, np.int64), kv_tile=np.asarray(kv_box, np.int64),
                query_begin=np.asarray([lo for lo, _ in ranges], np.int64),
                query_end=np.asarray([hi for _, hi in ranges], np.int64),
                scale=np.float32(scale))


def _poison(structs):
    """Fill and free device buffers of these shapes with NaN (see the module docstring)."""
    jax, jnp = _jax()
    bufs = []
    for s in structs:
        if math.prod(s.shape) == 0:
            continue
        fill = np.nan if jnp.issubdtype(s.dtype, jnp.floating) else 0xFF
        bufs.append(jnp.full(s.shape, fill, s.dtype))
    for x in bufs:
        x.block_until_ready()
    del bufs


def _run(fn, args, out_structs):
    """Compile, poison, run (the compiled executable allocates its outputs afresh)."""
    jax, _ = _jax()
    compiled = jax.jit(fn).lower(*args).compile()
    _poison(out_structs)
    t0 = time.perf_counter()
    outs = compiled(*args)
    jax.block_until_ready(outs)
    return outs, (time.perf_counter() - t0) * 1e3


def fwd_kernel(q, k, v, ek, ev, params, scale, q_box, kv_box, query_box=None):
    jax, jnp = _jax()
    fwd_name, _ = _targets()
    structs = (jax.ShapeDtypeStruct(q.shape[:-1] + (v.shape[-1],), q.dtype),
               jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32),
               jax.ShapeDtypeStruct((0,), jnp.uint8))
    attrs = _attrs(params, scale, q_box, kv_box, q.shape[1:1 + params.rank], query_box)

    def fn(*a):
        return jax.ffi.ffi_call(fwd_name, structs)(*a, **attrs)[:2]
    return _run(fn, (q, k, v, ek, ev), structs[:2])


def bwd_kernel(q, k, v, ek, ev, out, lse, dout, dlse, params, scale, q_box, kv_box,
               deterministic, splits=3, query_box=None):
    jax, jnp = _jax()
    _, bwd_name = _targets()
    f32 = jnp.float32
    e = ek.shape[1]
    structs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v, ek, ev)) + (
        # dq_accum: unused by the halo backward (dQ written directly), as the lowering passes
        jax.ShapeDtypeStruct((0,) if deterministic or BACKEND == "halo" else q.shape, f32),
        jax.ShapeDtypeStruct(lse.shape, f32),
        jax.ShapeDtypeStruct((2, splits) + tuple(ek.shape) if e else (0,), f32))
    attrs = _attrs(params, scale, q_box, kv_box, q.shape[1:1 + params.rank], query_box)
    attrs["deterministic"] = bool(deterministic)

    def fn(*a):
        return jax.ffi.ffi_call(bwd_name, structs)(*a, **attrs)[:5]
    return _run(fn, (q, k, v, ek, ev, out, lse, dout, dlse), structs[:5])


# ----------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------


def _rel(x, ref):
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return 0.0
    if not np.all(np.isfinite(x)):
        return float("nan")
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(x - ref) / (den if den > 0 else 1.0))


def _ok(v, tol):
    return v == v and v < tol   # NaN never passes


def run_case(case: Case, tokens, rng):
    """-> list of result rows (dicts)."""
    jax, jnp = _jax()
    from jax_gna import semantics
    rank = len(case.spatial)
    params = semantics.make_params(case.spatial, case.kernel_size, case.stride or 1,
                                   case.dilation or 1, case.causal or False)
    dt = jnp.bfloat16 if case.dtype == "bf16" else jnp.float16
    b, hq, hkv, d, e = case.batch, case.heads_q, case.heads_kv, case.head_dim, case.num_extra
    scale = d ** -0.5

    def rand(*shape):
        return rng.standard_normal(shape).astype(dt)

    q = rand(b, *case.spatial, hq, d)
    k = rand(b, *case.spatial, hkv, d)
    if case.key_ramp:
        ramp = 1 + case.key_ramp * np.linspace(0, 1, math.prod(case.spatial))
        k = (k.astype(np.float32) * ramp.reshape(1, *case.spatial, 1, 1)).astype(dt)
    v = rand(b, *case.spatial, hkv, d)
    ek, ev = rand(b, e, hkv, d), rand(b, e, hkv, d)
    rows = []
    # Rows compared: the query box (all rows without one); [b, *spatial, h] broadcastable.
    inside = np.ones((1, *case.spatial, 1), bool)
    for ax, (lo, hi) in enumerate(case.query_box or ()):
        i = np.arange(case.spatial[ax]).reshape((1,) * (1 + ax) + (-1,) + (1,) * (rank - ax))
        inside = inside & (i >= lo) & (i < hi)
    pick = np.broadcast_to(inside, (b, *case.spatial, hq))  # rows of out / lse / dq

    def row(direction, status, ms=0.0, **errs):
        rows.append(dict(case=case.name, dir=direction, dtype=case.dtype, D=d, status=status,
                         ms=ms, **errs))

    # Forward.
    key = ("fwd", case.dtype, d)
    if key not in tokens:
        row("fwd", "SKIP (not compiled)")
    else:
        qt, kt = tokens[key]
        q_box = _q_box(case, params, qt)
        kv_box = case.kv_tile if case.kv_tile and math.prod(case.kv_tile) == kt else \
            _box(kt, case.spatial, params.kernel_size)
        ref = None if case.refused else reference(case, params, q, k, v, ek, ev, scale)
        try:
            with _Env(case.env):
                (out, lse), ms = fwd_kernel(q, k, v, ek, ev, params, scale, q_box, kv_box,
                                            case.query_box)
            if case.refused:
                row("fwd", "FAIL (accepted a call it must refuse)", ms)
                return rows
            out_rel = _rel(np.asarray(out)[pick], ref["out"][pick])
            lse_in = np.asarray(lse, np.float64)[pick]
            lse_abs = float(np.max(np.abs(lse_in - ref["lse"][pick]))) \
                if np.all(np.isfinite(lse_in)) else float("nan")
            ok = _ok(out_rel, OUT_TOL) and _ok(lse_abs, LSE_TOL)
            row("fwd", "PASS" if ok else "FAIL", ms, out=out_rel, lse=lse_abs,
                tiles=f"{q_box}/{kv_box}")
        except Exception as ex:  # noqa: BLE001 - the table reports every failure
            if case.refused and "cannot serve" in str(ex):
                row("fwd", "PASS", note="refused: " + _reason(str(ex)))
            elif _refusal_expected(str(ex), False, 0, forward=True):
                row("fwd", "SKIP (refused: " + _reason(str(ex)) + ")")
            else:
                row("fwd", f"ERROR {type(ex).__name__}: {str(ex).splitlines()[0][:120]}")
                traceback.print_exc(file=sys.stderr)

    # Backward (deterministic and not).
    key = ("bwd", case.dtype, d)
    if not case.bwd:
        return rows
    if key not in tokens:
        row("bwd", "SKIP (not compiled)")
        return rows
    qt, kt = tokens[key]
    if BACKEND == "halo":  # the lowering's boxes: the halo rule's Q box, KV box = Q box
        q_box = _q_box(case, params, qt)
        kv_box = case.kv_tile if case.kv_tile and math.prod(case.kv_tile) == kt else q_box
    else:
        q_box = case.q_tile if case.q_tile and math.prod(case.q_tile) == qt else \
            _box(qt, case.spatial, params.kernel_size)
        kv_box = case.kv_tile if case.kv_tile and math.prod(case.kv_tile) == kt else \
            _box(kt, case.spatial, params.kernel_size)
    ref0 = reference(case, params, q, k, v, ek, ev, scale)
    out_used = ref0["out"].astype(dt)
    lse_used = ref0["lse"].astype(np.float32)
    dout = rand(*out_used.shape)
    dlse = (0.1 * rng.standard_normal(lse_used.shape)).astype(np.float32)
    if case.query_box is not None:   # what attention_in_boxes passes outside the box
        lse_used = np.where(pick, lse_used, np.float32(np.inf))
        dout = np.where(pick[..., None], dout, np.zeros((), dt)).astype(dt)
        dlse = np.where(pick, dlse, np.float32(0))
    ref = reference(case, params, q, k, v, ek, ev, scale, dout=dout, dlse=dlse,
                    out_used=out_used)
    first = None
    for det in (False, True):
        name = "bwd_det" if det else "bwd"
        try:
            grads, ms = bwd_kernel(q, k, v, ek, ev, out_used, lse_used, dout, dlse, params,
                                   scale, q_box, kv_box, det, query_box=case.query_box)
            errs = dict(dq=_rel(np.asarray(grads[0])[pick], ref["dq"][pick]),
                        dk=_rel(grads[1], ref["dk"]),
                        dv=_rel(grads[2], ref["dv"]))
            if e:
                errs.update(dek=_rel(grads[3], ref["dek"]), dev=_rel(grads[4], ref["dev"]))
            ok = all(_ok(x, GRAD_TOL) for x in errs.values())
            note = ""
            if det:
                again, _ = bwd_kernel(q, k, v, ek, ev, out_used, lse_used, dout, dlse, params,
                                      scale, q_box, kv_box, det, query_box=case.query_box)
                rows_of = [pick] + [Ellipsis] * 4     # dq: rows of the box only
                same = all(np.array_equal(np.asarray(a)[r].view(np.uint16),
                                          np.asarray(c)[r].view(np.uint16))
                           for a, c, r in zip(grads, again, rows_of))
                ok = ok and same
                note = "reproducible" if same else "NOT REPRODUCIBLE"
            elif first is None:
                first = grads
            row(name, "PASS" if ok else "FAIL", ms, tiles=f"{q_box}/{kv_box}", note=note,
                **errs)
        except Exception as ex:  # noqa: BLE001
            msg = str(ex)
            if _refusal_expected(msg, det, e):
                row(name, "SKIP (refused: " + _reason(msg) + ")")
                continue
            row(name, f"ERROR {type(ex).__name__}: {msg.splitlines()[0][:120]}")
            traceback.print_exc(file=sys.stderr)
    return rows


def _refusal_expected(msg: str, deterministic: bool, num_extra: int,
                      forward: bool = False) -> bool:
    """A refusal BACKEND's documented rule makes (backends.py, sm90/support.h), a SKIP row:
    the sm90 kernels' TMA box limit (tile side x dilation <= 256; the selection rule picks
    other boxes or sm80), and the halo backward, which does not compute additional
    keys/values. With additional keys/values or deterministic=True the sm90 backward runs
    (the FFI handler first launches the sm80 backward for that part): no refusal there."""
    del deterministic
    if BACKEND == "halo" and "cannot serve" in msg:
        return not forward and num_extra > 0 and "additional" in msg
    if BACKEND != "sm90" or "cannot serve" not in msg:
        return False
    return "TMA box limit" in msg


def _reason(msg: str) -> str:
    return msg.split("cannot serve this call: ")[-1].split(" [executable")[0][:100]


def run_rejects(tokens) -> list[dict]:
    """A tile box with the wrong token count must come back as an error, not a launch."""
    jax, jnp = _jax()
    from jax_gna import semantics
    key = ("fwd", "bf16", 64)
    if key not in tokens:
        return [dict(case="reject_bad_tile", dir="fwd", dtype="bf16", D=64,
                     status="SKIP (not compiled)", ms=0.0)]
    spatial = (16, 16)
    params = semantics.make_params(spatial, 5)
    x = np.zeros((1, *spatial, 1, 64), np.float32).astype(jnp.bfloat16)
    ex = np.zeros((1, 0, 1, 64), np.float32).astype(jnp.bfloat16)
    qt, kt = tokens[key]
    try:
        fwd_kernel(x, x, x, ex, ex, params, 0.125, (2, qt), (1, kt))
        status = "FAIL (accepted a q_tile box of the wrong size)"
    except Exception as err:  # noqa: BLE001
        msg = str(err)
        status = "PASS" if "q_tile" in msg else f"FAIL (unexpected error: {msg[:100]})"
    return [dict(case="reject_bad_tile", dir="fwd", dtype="bf16", D=64, status=status, ms=0.0)]


def _fmt(v):
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.2e}"
    return str(v)


def print_table(rows):
    cols = ["case", "dir", "dtype", "D", "status", "out", "lse", "dq", "dk", "dv", "dek", "dev",
            "ms", "tiles", "note"]
    table = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))


def run_all(filter_text: str | None = None) -> list[dict]:
    from jax_gna import _extension
    if not _extension.cuda_library_available():
        raise RuntimeError(f"CUDA library not available: {_extension.load_error()}")
    tokens = _tile_tokens()
    print(f"backend {BACKEND}: compiled {sorted(tokens.items())}")
    rng = np.random.default_rng(0)
    rows = []
    for case in _cases():
        if filter_text and filter_text not in case.name:
            continue
        rows.extend(run_case(case, tokens, rng))
    if not filter_text or filter_text in "reject_bad_tile":
        rows.extend(run_rejects(tokens))
    return rows


def _has_gpu() -> bool:
    try:
        import jax
        return bool(jax.devices("cuda"))
    except Exception:  # noqa: BLE001
        return False


def test_sm80_kernels_smoke():
    import pytest
    if not _has_gpu():
        pytest.skip("no CUDA device")
    from jax_gna import _extension
    if not _extension.cuda_library_available():
        pytest.skip(f"CUDA library not available: {_extension.load_error()}")
    rows = run_all()
    print_table(rows)
    bad = [r for r in rows if not (r["status"] == "PASS" or r["status"].startswith("SKIP"))]
    assert not bad, f"{len(bad)} failing rows: " + "; ".join(
        f"{r['case']}/{r['dir']}: {r['status']}" for r in bad)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="filter", default=None, help="only cases containing this")
    args = parser.parse_args(argv)
    rows = run_all(args.filter)
    print_table(rows)
    n_pass = sum(r["status"] == "PASS" for r in rows)
    n_skip = sum(r["status"].startswith("SKIP") for r in rows)
    n_bad = len(rows) - n_pass - n_skip
    print(f"\n{n_pass} PASS, {n_bad} FAIL/ERROR, {n_skip} SKIP")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
