"""Dense masked GNA in jnp: the plain definition, for examples and small problems.

Builds the full ``[N, N]`` neighborhood mask from ``jax_gna.semantics`` and runs ordinary
softmax attention over it, in float64 when the inputs are float64 (enable ``jax_enable_x64``)
and float32 otherwise. O(N^2) memory: for tests and small problems only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jax_gna._config import AttentionConfig
from jax_gna.semantics import neighborhood_mask

__all__ = ["dense_attention"]


def dense_attention(query, key, value, config: AttentionConfig, additional_keys=None,
                    additional_values=None):
    """Return ``(out, lse)`` for GNA over ``[B, *spatial, H, D]`` tensors, computed densely."""
    spatial = config.spatial_shape
    b, hq, d = query.shape[0], query.shape[-2], query.shape[-1]
    hkv, dv = key.shape[-2], value.shape[-1]
    n = math.prod(spatial)
    compute = jnp.promote_types(query.dtype, jnp.float32)
    q = query.reshape(b, n, hkv, hq // hkv, d).astype(compute)
    k = key.reshape(b, n, hkv, d).astype(compute)
    v = value.reshape(b, n, hkv, dv).astype(compute)
    mask = neighborhood_mask(spatial, config.params)
    if additional_keys is not None and additional_keys.shape[1] > 0:
        k = jnp.concatenate([k, additional_keys.astype(compute)], axis=1)
        v = jnp.concatenate([v, additional_values.astype(compute)], axis=1)
        mask = np.concatenate([mask, np.ones((n, additional_keys.shape[1]), bool)], axis=1)
    hi = jax.lax.Precision.HIGHEST
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", q, k, precision=hi) * config.scale
    logits = jnp.where(mask, logits, -jnp.inf)
    lse = jax.nn.logsumexp(logits, axis=-1)
    probs = jnp.exp(logits - lse[..., None])
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v, precision=hi)
    out = out.reshape(b, *spatial, hq, dv).astype(query.dtype)
    lse = jnp.moveaxis(lse, 3, 1).reshape(b, *spatial, hq)
    return out, lse
