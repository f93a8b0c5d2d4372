"""Sharding rules for the GNA primitives: batch and heads shard, spatial dims are gathered.

``partitioned_fwd(config)`` / ``partitioned_bwd(config)`` return what the outer primitives
(``gna_fwd_p``/``gna_bwd_p``) lower to: a ``jax.experimental.custom_partitioning`` wrapper of
the platform primitive. Without it XLA would treat the custom call as opaque and replicate
it (all-gather every operand, run the whole problem on every device). With it:

* Shardy (the default partitioner) reads an einsum-like ``sharding_rule``; GSPMD (Shardy off)
  calls ``infer_sharding_from_operands``. Both end in ``partition``, which picks the final
  operand shardings (XLA reshards what differs) and places the platform primitive, with the
  SAME config, on every device: spatial dims are never split, so nothing in the config changes.
* Batch: free. Every operand and result is split the same way along it.
* Heads: free, within GQA. The query's head sharding (over ``n`` shards) decides:
  - ``n | Hkv``: K/V (and additional K/V) heads are split over the same mesh axes, so each
    shard keeps whole groups of ``Hq/Hkv`` query heads with their KV heads. No communication,
    forward or backward.
  - else, if the ``Hq/n`` query heads of a shard fall in one group (``(Hq/n) | (Hq/Hkv)``,
    e.g. MQA on 8 devices): K/V stay whole on those axes (replicated) and every shard slices
    the one KV head its queries read. Forward: no communication. Backward: the KV-head
    gradients of the shards that share a KV head are summed (one all-reduce of dK/dV-sized
    arrays over the head axes).
  - else: the head dim is gathered (replicated), logged.
  The query's sharding is the authority: K/V shardings that disagree are resharded to it.
* Spatial dims and head dims: never split. If the user shards one, the rule drops that mesh
  axis from the operand shardings, so XLA all-gathers exactly those dims (batch and head
  sharding are kept) and every device of that axis computes the whole spatial extent. This is
  logged at debug level on logger ``jax_gna``. The scalable answer for a sharded spatial dim is
  ``jax_gna.context_parallel_attention`` (halo exchange instead of a gather).

Shardy rule: factors ``b`` (batch), ``s0..s2`` (spatial), ``e`` (additional tokens), ``d``/``dv``
(head dims) and heads. Spatial, ``e``, ``d``, ``dv`` are ``need_replication``. Heads: with
``G = Hq/Hkv == 1`` query and KV heads share one factor ``h``; with ``G > 1`` the query head
dim is the compound factor ``(h g)`` when every mesh axis can split ``h`` without sub-axes
(``mesh.size | Hkv``), otherwise query heads ``hq`` and KV heads ``h`` are independent
factors (``partition`` then makes them consistent). Why not always compound: for a mesh axis
that does not divide ``Hkv``, Shardy splits it into sub-axes (e.g. ``"x":(1)2``), and
``custom_partitioning`` cannot decode sub-axis shardings back into a ``NamedSharding``
(``IndivisibleError`` at compile time) -- verified on jax 0.10.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import mlir
from jax.sharding import NamedSharding, PartitionSpec

from jax_gna._config import AttentionConfig
from jax_gna.platform_primitives import gna_bwd_platform_p, gna_fwd_platform_p

__all__ = ["partitioned_fwd", "partitioned_bwd", "HeadPlan", "plan_heads",
           "sharding_rule_string"]

logger = logging.getLogger("jax_gna")


# ----------------------------------------------------------------------------------------
# The plan: which mesh axes split batch and heads (pure function of shapes and q's spec)
# ----------------------------------------------------------------------------------------


def _axes(entry) -> tuple[str, ...]:
    """A PartitionSpec entry (None, an axis name, or a tuple of them) as a tuple."""
    if entry is None:
        return ()
    if isinstance(entry, (tuple, list)):
        return tuple(entry)
    return (entry,)


def _entry(axes: tuple[str, ...]):
    return None if not axes else axes[0] if len(axes) == 1 else tuple(axes)


def _size(mesh, axes) -> int:
    return math.prod(int(mesh.shape[a]) for a in axes)


@dataclasses.dataclass(frozen=True)
class HeadPlan:
    """How one GNA call is split. ``batch``/``heads`` are mesh axes (major to minor)."""

    batch: tuple[str, ...]
    heads: tuple[str, ...]       # axes splitting the query heads
    kv_heads: tuple[str, ...]    # axes splitting the K/V heads: ``heads`` or ()
    kv_slice: bool               # K/V replicated over ``heads``; each shard slices 1 KV head
    local_q_heads: int           # query heads per shard
    groups: int                  # Hq // Hkv (global)
    gathered: tuple[str, ...]    # notes on what the rule gathers (for logs and tests)


def plan_heads(mesh, q_spec, q_shape, heads_kv: int) -> HeadPlan:
    """Decide batch/head sharding from the query's PartitionSpec (see module docstring)."""
    ndim = len(q_shape)
    spec = tuple(q_spec) + (None,) * (ndim - len(tuple(q_spec)))
    batch, heads = _axes(spec[0]), _axes(spec[ndim - 2])
    hq = int(q_shape[ndim - 2])
    groups = hq // heads_kv
    notes = []
    for dim in range(1, ndim - 2):
        if spec[dim] is not None:
            notes.append(f"spatial dim {dim - 1} over {_axes(spec[dim])}")
    if spec[ndim - 1] is not None:
        notes.append(f"head_dim over {_axes(spec[ndim - 1])}")
    if batch and int(q_shape[0]) % _size(mesh, batch):
        notes.append(f"batch {q_shape[0]} not divisible by {batch} ({_size(mesh, batch)})")
        batch = ()
    kv_heads, kv_slice = (), False
    n = _size(mesh, heads)
    if heads and hq % n:
        notes.append(f"query heads {hq} not divisible by {heads} ({n})")
        heads = ()
    elif heads and heads_kv % n == 0:
        kv_heads = heads                      # whole groups per shard
    elif heads and groups % (hq // n) == 0:
        kv_slice = True                       # a part of one group per shard
    elif heads:
        notes.append(f"query heads split {n} ways would cut GQA groups across shards "
                     f"(Hq={hq}, Hkv={heads_kv})")
        heads = ()
    local = hq // _size(mesh, heads)
    return HeadPlan(batch, heads, kv_heads, kv_slice, local, groups, tuple(notes))


def _named(mesh, *entries) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(*entries))


def _shardings(mesh, plan: HeadPlan, rank: int):
    """(query-like, lse-like, kv-like, extra-kv-like) shardings for a plan."""
    b, h, kvh = _entry(plan.batch), _entry(plan.heads), _entry(plan.kv_heads)
    sp = (None,) * rank
    return (_named(mesh, b, *sp, h, None), _named(mesh, b, *sp, h),
            _named(mesh, b, *sp, kvh, None), _named(mesh, b, None, kvh, None))


def _plan_from_args(mesh, arg_shapes, config: AttentionConfig, what: str):
    q, k = arg_shapes[0], arg_shapes[1]
    sharding = q.sharding
    spec = sharding.spec if isinstance(sharding, NamedSharding) else PartitionSpec()
    if sharding is not None and not isinstance(sharding, NamedSharding):
        logger.debug("GNA %s: query sharding %s is not a NamedSharding; running "
                     "replicated", what, sharding)
    plan = plan_heads(mesh, spec, q.shape, int(k.shape[-2]))
    if plan.gathered:
        logger.debug("GNA %s: gathering %s (GNA splits only batch and heads; for a "
                     "sharded spatial dim use jax_gna.context_parallel_attention); "
                     "plan: batch over %s, query heads over %s, KV heads over %s%s",
                     what, "; ".join(plan.gathered), plan.batch or "-", plan.heads or "-",
                     plan.kv_heads or "-", " (per-shard KV head slice)" if plan.kv_slice
                     else "")
    return plan


# ----------------------------------------------------------------------------------------
# Per-shard computations (bound inside ``partition``; same config as the global call)
# ----------------------------------------------------------------------------------------


def _kv_head_index(plan: HeadPlan):
    """The KV head read by this shard's query heads (kv_slice plans only)."""
    shard = jax.lax.axis_index(plan.heads if len(plan.heads) > 1 else plan.heads[0])
    return (shard * plan.local_q_heads) // plan.groups


def _slice_head(x, index):
    return jax.lax.dynamic_slice_in_dim(x, index, 1, axis=x.ndim - 2)


def _local_fwd(config: AttentionConfig, plan: HeadPlan):
    def fwd(q, k, v, ek, ev):
        if plan.kv_slice:
            i = _kv_head_index(plan)
            k, v, ek, ev = (_slice_head(x, i) for x in (k, v, ek, ev))
        return tuple(gna_fwd_platform_p.bind(q, k, v, ek, ev, config=config))
    return fwd


def _local_bwd(config: AttentionConfig, plan: HeadPlan):
    def bwd(q, k, v, ek, ev, out, lse, dout, dlse):
        if not plan.kv_slice:
            return tuple(gna_bwd_platform_p.bind(q, k, v, ek, ev, out, lse, dout, dlse,
                                                 config=config))
        i = _kv_head_index(plan)
        full = (k, v, ek, ev)
        dq, *dkv = gna_bwd_platform_p.bind(q, *(_slice_head(x, i) for x in full), out, lse,
                                           dout, dlse, config=config)
        # Shards sharing a KV head each hold part of its gradient: place it and sum (in
        # float32 at least, so half-precision parts do not lose bits in the sum).
        axes = plan.heads if len(plan.heads) > 1 else plan.heads[0]

        def total(x, g):
            acc = jnp.promote_types(g.dtype, jnp.float32)
            placed = jax.lax.dynamic_update_slice_in_dim(jnp.zeros(x.shape, acc),
                                                         g.astype(acc), i, axis=x.ndim - 2)
            return jax.lax.psum(placed, axes).astype(g.dtype)

        return (dq, *(total(x, g) for x, g in zip(full, dkv)))
    return bwd


# ----------------------------------------------------------------------------------------
# Shardy rule
# ----------------------------------------------------------------------------------------


def sharding_rule_string(rank: int, heads_q: int, heads_kv: int, mesh_size: int,
                         backward: bool) -> tuple[str, dict]:
    """The einsum-like Shardy rule and its keyword arguments (factor sizes, replication)."""
    groups = heads_q // heads_kv
    sp = " ".join(f"s{i}" for i in range(rank))
    if groups == 1:
        qh = kh = "h"
    elif heads_kv > 1 and mesh_size > 1 and heads_kv % mesh_size == 0:
        qh, kh = "(h g)", "h"
    else:
        qh, kh = "hq", "h"
    q, lse = f"b {sp} {qh} d", f"b {sp} {qh}"
    k, v = f"b {sp} {kh} d", f"b {sp} {kh} dv"
    ek, ev = f"b e {kh} d", f"b e {kh} dv"
    out = f"b {sp} {qh} dv"
    if backward:
        operands = f"{q}, {k}, {v}, {ek}, {ev}, {out}, {lse}, {out}, {lse}"
        rule = f"{operands} -> {q}, {k}, {v}, {ek}, {ev}"
    else:
        rule = f"{q}, {k}, {v}, {ek}, {ev} -> {out}, {lse}"
    # Shardy wants special factors listed in order of first appearance in the rule.
    order = list(dict.fromkeys(rule.replace("(", " ").replace(")", " ").replace(",", " ")
                               .replace("->", " ").split()))
    replicated = {f"s{i}" for i in range(rank)} | {"e", "d", "dv"}
    kwargs = {"need_replication_factors": tuple(f for f in order if f in replicated)}
    if "(h g)" in qh:
        kwargs["g"] = groups
    return rule, kwargs


def _shardy_rule(config: AttentionConfig, backward: bool):
    from jax._src.lib.mlir import ir  # noqa: PLC0415  (types handed to the rule callable)

    def rule(mesh, value_types, result_types):
        del result_types
        q_shape = ir.RankedTensorType(value_types[0]).shape
        k_shape = ir.RankedTensorType(value_types[1]).shape
        size = 1 if mesh is None or mesh.empty else int(mesh.size)
        text, kwargs = sharding_rule_string(config.rank, int(q_shape[-2]),
                                            int(k_shape[-2]), size, backward)
        return text, kwargs
    return rule


# ----------------------------------------------------------------------------------------
# GSPMD callbacks and partition
# ----------------------------------------------------------------------------------------


def _fwd_infer(config):
    def infer(mesh, arg_shapes, result_shape):
        del result_shape
        plan = _plan_from_args(mesh, arg_shapes, config, "forward")
        q_like, lse_like, _, _ = _shardings(mesh, plan, config.rank)
        return (q_like, lse_like)
    return infer


def _fwd_partition(config):
    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        plan = _plan_from_args(mesh, arg_shapes, config, "forward")
        q_like, lse_like, kv_like, extra_like = _shardings(mesh, plan, config.rank)
        args = (q_like, kv_like, kv_like, extra_like, extra_like)
        return mesh, _local_fwd(config, plan), (q_like, lse_like), args
    return partition


def _bwd_infer(config):
    def infer(mesh, arg_shapes, result_shape):
        del result_shape
        plan = _plan_from_args(mesh, arg_shapes, config, "backward")
        q_like, _, kv_like, extra_like = _shardings(mesh, plan, config.rank)
        return (q_like, kv_like, kv_like, extra_like, extra_like)
    return infer


def _bwd_partition(config):
    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        plan = _plan_from_args(mesh, arg_shapes, config, "backward")
        q_like, lse_like, kv_like, extra_like = _shardings(mesh, plan, config.rank)
        grads = (q_like, kv_like, kv_like, extra_like, extra_like)
        args = grads + (q_like, lse_like, q_like, lse_like)
        return mesh, _local_bwd(config, plan), grads, args
    return partition


@functools.lru_cache(maxsize=None)
def _partitioned_fwd(config: AttentionConfig):
    def fwd(q, k, v, ek, ev):
        return tuple(gna_fwd_platform_p.bind(q, k, v, ek, ev, config=config))
    fn = custom_partitioning(fwd)
    fn.def_partition(partition=_fwd_partition(config),
                     infer_sharding_from_operands=_fwd_infer(config),
                     sharding_rule=_shardy_rule(config, backward=False))
    return fn


@functools.lru_cache(maxsize=None)
def _partitioned_bwd(config: AttentionConfig):
    def bwd(q, k, v, ek, ev, out, lse, dout, dlse):
        return tuple(gna_bwd_platform_p.bind(q, k, v, ek, ev, out, lse, dout, dlse,
                                             config=config))
    fn = custom_partitioning(bwd)
    fn.def_partition(partition=_bwd_partition(config),
                     infer_sharding_from_operands=_bwd_infer(config),
                     sharding_rule=_shardy_rule(config, backward=True))
    return fn


# ----------------------------------------------------------------------------------------
# Entry points. The decision "partition or not" needs the lowering context (how many devices,
# whether they are known, whether we are inside a fully manual shard_map), which a traced
# function cannot see; a private primitive whose lowering rule reads it makes the choice.
# ----------------------------------------------------------------------------------------


def _needs_partitioning(ctx) -> bool:
    """Partition with custom_partitioning only where XLA's partitioner will run over more
    than one device and the devices are known at lowering; everywhere else (one device,
    fully manual shard_map, pmap) the platform primitive lowers directly."""
    from jax._src import sharding_impls  # noqa: PLC0415  (axis-context classes)
    axis_context = ctx.module_context.axis_context
    if isinstance(axis_context, sharding_impls.ShardingContext):
        if axis_context.num_devices <= 1:
            return False
        if axis_context.device_assignment is None:
            # The primitives are not marked device-requiring (jax_gna.primitives could not
            # reach jax's private registry): lowering unpartitioned stays correct.
            logger.warning("jax_gna: sharding rules not active for this program (the GNA "
                           "primitives are not marked device-requiring); XLA may replicate "
                           "GNA")
            return False
        return True
    if isinstance(axis_context, sharding_impls.SPMDAxisContext):
        return set(axis_context.manual_axes) != set(axis_context.mesh.axis_names)
    return False


def _switch_primitive(name, platform_p, partitioned):
    p = Primitive(name)
    p.multiple_results = True
    p.def_effectful_abstract_eval(lambda *avals, config: platform_p.abstract_eval(
        *avals, config=config))

    def lowering(ctx, *args, config):
        if _needs_partitioning(ctx):
            fn = partitioned(config)
        else:
            def fn(*a):
                return tuple(platform_p.bind(*a, config=config))
        return mlir.lower_fun(fn, multiple_results=True)(ctx, *args)

    mlir.register_lowering(p, lowering)
    return p


_fwd_switch_p = _switch_primitive("gna_fwd_partitioned", gna_fwd_platform_p,
                                  _partitioned_fwd)
_bwd_switch_p = _switch_primitive("gna_bwd_partitioned", gna_bwd_platform_p,
                                  _partitioned_bwd)


@functools.lru_cache(maxsize=None)
def partitioned_fwd(config: AttentionConfig):
    """``(q, k, v, ek, ev) -> (out, lse)`` with sharding rules (see module docstring)."""
    def fwd(q, k, v, ek, ev):
        return tuple(_fwd_switch_p.bind(q, k, v, ek, ev, config=config))
    return fwd


@functools.lru_cache(maxsize=None)
def partitioned_bwd(config: AttentionConfig):
    """``(q, k, v, ek, ev, out, lse, dout, dlse) -> (dq, dk, dv, dek, dev)`` with sharding
    rules: gradients are sharded like their primals; nothing is reduced except in the
    per-shard KV-head-slice case (see module docstring)."""
    def bwd(q, k, v, ek, ev, out, lse, dout, dlse):
        return tuple(_bwd_switch_p.bind(q, k, v, ek, ev, out, lse, dout, dlse,
                                        config=config))
    return bwd
