"""GNA on arrays whose sharding is part of their type (mesh axes of ``AxisType.Explicit``).

With explicit axes jax carries the sharding in every aval and the program itself says where
data moves; ``custom_partitioning`` (``jax_gna.partitioning``, the rule for ``Auto`` axes) is
not the mechanism there, and on jax 0.11 its lowering fails under explicit axes ("No
registered implementation for untyped custom call to Sharding"). So ``attention`` runs the
GNA call inside ``jax.shard_map`` over the explicit axes, with the same plan as the Auto
rule:

* batch: kept as the query shards it;
* heads: kept as the query shards them when the shard count divides ``Hkv`` (each shard holds
  whole GQA groups with their KV heads), else gathered;
* spatial dims, head dims and additional tokens: gathered (``jax.sharding.reshard``), logged
  at debug level on logger ``jax_gna``. For a sharded spatial dim use
  ``jax_gna.context_parallel_attention`` (halo exchange) instead.

Every operand is resharded to the plan (a no-op where it already matches); the results come
back sharded as ``P(batch, *None, heads, None)``.
"""

from __future__ import annotations

import logging
import math

import jax
from jax.sharding import AxisType, PartitionSpec as P

__all__ = ["explicit_axes", "shard_explicit"]

logger = logging.getLogger("jax_gna")


def _entry_axes(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def explicit_axes(x) -> tuple:
    """(mesh, names of the Explicit mesh axes that shard ``x``), or (None, ()) if none."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not getattr(mesh, "axis_names", ()):
        return None, ()
    explicit = {n for n, t in zip(mesh.axis_names, mesh.axis_types) if t == AxisType.Explicit}
    used = tuple(a for e in sharding.spec for a in _entry_axes(e) if a in explicit)
    return mesh, used


def shard_explicit(fn, q, k, v, ek, ev):
    """``fn(q, k, v, ek, ev) -> (out, lse)`` run per shard over the explicit axes of the
    operands, or None when no operand is sharded over an explicit axis."""
    meshes = [explicit_axes(x) for x in (q, k, v, ek, ev)]
    if not any(axes for _, axes in meshes):
        return None
    mesh = next(m for m, axes in meshes if axes)
    spec = tuple(jax.typeof(q).sharding.spec) + (None,) * q.ndim
    batch_axes = _entry_axes(spec[0])
    head_axes = _entry_axes(spec[q.ndim - 2])
    heads_kv = k.shape[-2]
    n_heads = math.prod(mesh.shape[a] for a in head_axes)
    if head_axes and heads_kv % n_heads:
        logger.debug("jax_gna: query heads sharded over %s (%d shards) do not divide %d KV "
                     "heads: heads gathered", head_axes, n_heads, heads_kv)
        head_axes = ()
    b = batch_axes or None
    h = head_axes or None
    rank = q.ndim - 3
    tok = P(b, *(None,) * rank, h, None)
    lse = P(b, *(None,) * rank, h)
    extra = P(b, None, h, None)
    targets = (tok, tok, tok, extra, extra)
    for name, x, want in zip(("query", "key", "value", "additional_keys", "additional_values"),
                             (q, k, v, ek, ev), targets):
        have = tuple(jax.typeof(x).sharding.spec) + (None,) * x.ndim
        if tuple(have[:x.ndim]) != tuple(want) + (None,) * (x.ndim - len(want)):
            logger.debug("jax_gna: %s resharded from %s to %s for the GNA call", name,
                         P(*have[:x.ndim]), want)
    operands = tuple(jax.sharding.reshard(x, s) for x, s in zip((q, k, v, ek, ev), targets))
    if not (batch_axes or head_axes):   # everything gathered: one call on whole arrays
        return jax.shard_map(fn, mesh=mesh, in_specs=targets, out_specs=(tok, lse))(*operands)
    return jax.shard_map(fn, mesh=mesh, in_specs=targets, out_specs=(tok, lse),
                         axis_names=set(batch_axes) | set(head_axes))(*operands)
