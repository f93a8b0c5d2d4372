"""A GNA call on tensors of more than 2^31 elements (int64 offsets in every kernel).

1-D, 1.1 M tokens x 16 heads x 128 dims = 2.25e9 elements per tensor (bf16, 4.5 GB each).
Forward (out, LSE) and backward (dq, dk, dv) are checked on sampled rows at the start, the
middle and the end (past element 2^31) against float64 numpy computed from
``jax_gna.semantics`` for just those rows. Runs on each kernel family that serves it.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jax_gna
from jax_gna import backends, semantics

L, H, D, K = 1_100_000, 16, 128, 63
pytestmark = pytest.mark.gpu


def _rows(n):
    return np.unique(np.concatenate([np.arange(8), np.arange(n // 2, n // 2 + 8),
                                     np.arange(n - 8, n)]))


def _window(i):
    start, end = semantics.window_1d(np.asarray(i), L, K, 1, 1, False)
    return np.arange(int(start), int(end))


@pytest.mark.parametrize("fwd_backend", ["sm80", "sm90"])
def test_more_than_2_31_elements(fwd_backend):
    if fwd_backend not in jax_gna.available_backends():
        pytest.skip(f"{fwd_backend} not available here")
    assert L * H * D > 2**31
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    shape = (1, L, H, D)
    q, k, v, do = (jax.random.normal(kk, shape, jnp.bfloat16) for kk in keys)

    def loss(q, k, v):
        out, lse = jax_gna.attention(q, k, v, K, backend=fwd_backend, return_lse=True)
        return out, lse

    (out, lse), vjp = jax.vjp(loss, q, k, v)
    dq, dk, dv = vjp((do, jnp.zeros_like(lse)))
    rows = _rows(L)
    take = lambda x: np.asarray(x[0, rows].astype(jnp.float32), np.float64)  # noqa: E731
    scale = D ** -0.5
    qn, don = take(q), take(do)
    kn = np.asarray(k[0].astype(jnp.float32))   # host copies for window gathers
    vn = np.asarray(v[0].astype(jnp.float32))
    outn = take(out)
    lsen = np.asarray(lse[0, rows], np.float64)
    ref_out, ref_lse, ref_dq = [], [], []
    for r, i in enumerate(rows):
        w = _window(i)
        s = np.einsum("hd,khd->hk", qn[r], kn[w].astype(np.float64)) * scale
        m = s.max(-1, keepdims=True)
        p = np.exp(s - m)
        lsum = p.sum(-1, keepdims=True)
        p /= lsum
        o = np.einsum("hk,khd->hd", p, vn[w])
        ref_out.append(o)
        ref_lse.append((m + np.log(lsum))[:, 0])
        dp = np.einsum("hd,khd->hk", don[r], vn[w])
        delta = (don[r] * outn[r]).sum(-1, keepdims=True)
        ref_dq.append(np.einsum("hk,khd->hd", p * (dp - delta), kn[w]) * scale)
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert rel(outn, np.stack(ref_out)) < 1e-2
    assert np.abs(lsen - np.stack(ref_lse)).max() < 1e-3
    assert rel(take(dq), np.stack(ref_dq)) < 2e-2
    # dk/dv of sampled keys: over the queries that see them (inverse window).
    dkn, dvn = take(dk), take(dv)
    ref_dk, ref_dv = [], []
    for r, j in enumerate(rows):
        first, last = semantics.inverse_window_1d(np.asarray(j), L, K, 1, False)
        qi = np.arange(int(first), int(last))
        qq = np.asarray(q[0, qi].astype(jnp.float32), np.float64)
        dd = np.asarray(do[0, qi].astype(jnp.float32), np.float64)
        ll = np.asarray(lse[0, qi], np.float64)
        oo = np.asarray(out[0, qi].astype(jnp.float32), np.float64)
        s = np.einsum("qhd,hd->qh", qq, kn[j].astype(np.float64)) * scale
        p = np.exp(s - ll)
        dp = np.einsum("qhd,hd->qh", dd, vn[j])
        delta = (dd * oo).sum(-1)
        ref_dv.append(np.einsum("qh,qhd->hd", p, dd))
        ref_dk.append(np.einsum("qh,qhd->hd", p * (dp - delta), qq) * scale)
    assert rel(dvn, np.stack(ref_dv)) < 2e-2
    assert rel(dkn, np.stack(ref_dk)) < 2e-2
    assert backends.cuda_arch() is not None
