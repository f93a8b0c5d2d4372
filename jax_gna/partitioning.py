"""Sharding rules for the GNA primitives.

``partitioned_fwd(config)`` / ``partitioned_bwd(config)`` return the callables the outer
primitives lower to. They bind the platform primitives; the partitioning rules that let XLA
shard batch and heads without gathering q/k/v live here.
"""

from __future__ import annotations

import functools

from jax_gna._config import AttentionConfig
from jax_gna.primitives import gna_bwd_platform_p, gna_fwd_platform_p


@functools.lru_cache(maxsize=None)
def partitioned_fwd(config: AttentionConfig):
    def fwd(q, k, v, ek, ev):
        return gna_fwd_platform_p.bind(q, k, v, ek, ev, config=config)
    return fwd


@functools.lru_cache(maxsize=None)
def partitioned_bwd(config: AttentionConfig):
    def bwd(q, k, v, ek, ev, out, lse, dout, dlse):
        return gna_bwd_platform_p.bind(q, k, v, ek, ev, out, lse, dout, dlse, config=config)
    return bwd
