"""Dense float64 numpy GNA with analytic gradients: the fast oracle of the shared suite.

It needs no XLA compile, so hundreds of random configurations stay cheap on any backend.
Its neighborhood mask comes from ``tests/independent_mask.py`` (the contract written again,
without jax_gna), so a bug in ``jax_gna.semantics`` cannot pass the suite; its gradients are
checked against finite differences (``test_api.py``).
"""

from __future__ import annotations

import math

import numpy as np

import independent_mask


def _mask(spatial, params, n_extra: int) -> np.ndarray:
    m = independent_mask.params_mask(spatial, params)
    return np.concatenate([m, np.ones((m.shape[0], n_extra), bool)], axis=1)


def _flat(x, b, hkv=None, g=None):
    x = np.asarray(x, np.float64)
    x = x.reshape(b, -1, *x.shape[-2:])
    if g is not None:
        x = x.reshape(x.shape[0], x.shape[1], hkv, g, x.shape[-1])
    return x


def forward(q, k, v, spatial, params, scale, ek=None, ev=None):
    """(out [B, *spatial, Hq, Dv], lse [B, *spatial, Hq]) in float64."""
    b, hq, hkv = q.shape[0], q.shape[-2], k.shape[-2]
    g = hq // hkv
    qf = _flat(q, b, hkv, g)
    kf, vf = _flat(k, b), _flat(v, b)
    n_extra = 0 if ek is None else ek.shape[1]
    if n_extra:
        kf = np.concatenate([kf, np.asarray(ek, np.float64)], axis=1)
        vf = np.concatenate([vf, np.asarray(ev, np.float64)], axis=1)
    mask = _mask(spatial, params, n_extra)
    s = np.einsum("bqhgd,bkhd->bhgqk", qf, kf) * scale
    s = np.where(mask, s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    out = np.einsum("bhgqk,bkhd->bqhgd", p / l, vf)
    lse = (m + np.log(l))[..., 0]
    n = math.prod(spatial)
    out = out.reshape(b, *spatial, hq, vf.shape[-1])
    lse = np.moveaxis(lse, 3, 1).reshape(b, *spatial, hq)
    assert lse.shape[1:-1] == tuple(spatial) and n == qf.shape[1]
    return out, lse


def backward(q, k, v, spatial, params, scale, dout, dlse=None, ek=None, ev=None, out=None):
    """(dq, dk, dv, dek, dev) in float64 for cotangents dout (and dlse) of (out, lse).

    ``out``: the forward output the backward consumes (FlashAttention-style backwards, ours
    included, form delta = rowsum(dout * out) from the *stored*, e.g. bf16-rounded, output);
    None: the exact float64 output. With a half-precision output and few keys per query,
    delta's rounding can dominate a small gradient through the cancellation in dp - delta
    (a 2-token causal bf16 case: 6% relative error on an extra key's gradient against the
    exact output, 0.17% against the stored one)."""
    b, hq, hkv = q.shape[0], q.shape[-2], k.shape[-2]
    g = hq // hkv
    exact_out, lse = forward(q, k, v, spatial, params, scale, ek, ev)
    out = exact_out if out is None else np.asarray(out, np.float64)
    qf = _flat(q, b, hkv, g)
    kf, vf = _flat(k, b), _flat(v, b)
    n = kf.shape[1]
    n_extra = 0 if ek is None else ek.shape[1]
    if n_extra:
        kf = np.concatenate([kf, np.asarray(ek, np.float64)], axis=1)
        vf = np.concatenate([vf, np.asarray(ev, np.float64)], axis=1)
    mask = _mask(spatial, params, n_extra)
    do = _flat(dout, b, hkv, g)
    of = _flat(out, b, hkv, g)
    lsef = np.moveaxis(lse.reshape(b, -1, hkv, g), 1, 3)[..., None]
    delta = np.moveaxis((do * of).sum(-1), 1, 3)[..., None]
    if dlse is not None:
        delta = delta - np.moveaxis(np.asarray(dlse, np.float64).reshape(b, -1, hkv, g),
                                    1, 3)[..., None]
    s = np.einsum("bqhgd,bkhd->bhgqk", qf, kf) * scale
    p = np.where(mask, np.exp(s - lsef), 0.0)
    dp = np.einsum("bqhgd,bkhd->bhgqk", do, vf)
    ds = p * (dp - delta)
    dq = np.einsum("bhgqk,bkhd->bqhgd", ds, kf) * scale
    dk = np.einsum("bhgqk,bqhgd->bkhd", ds, qf) * scale
    dv = np.einsum("bhgqk,bqhgd->bkhd", p, do)
    dq = dq.reshape(q.shape)
    dek, dev = dk[:, n:], dv[:, n:]
    return dq, dk[:, :n].reshape(k.shape), dv[:, :n].reshape(v.shape), dek, dev


def rel_err(x, ref) -> float:
    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    if not np.all(np.isfinite(x)):
        return float("inf")
    denom = np.linalg.norm(ref)
    num = np.linalg.norm(x - ref)
    return float(num / denom) if denom > 0 else float(num)
