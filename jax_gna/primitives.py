"""GNA forward and backward primitives: abstract evaluation, batching and lowering.

Two layers, as in ``jax/_src/cudnn/fused_attention_stablehlo.py``:

* ``gna_fwd_p`` / ``gna_bwd_p`` (this module): what traced programs contain. They have
  abstract evaluation and batching rules (vmap), and lower through ``jax_gna.partitioning``
  (the sharding rules).
* ``gna_fwd_platform_p`` / ``gna_bwd_platform_p`` (``jax_gna.platform_primitives``): what the
  partitioner places per device. Their lowering is per platform: on CUDA, the XLA FFI kernel
  chosen by ``jax_gna.backends.choose``; everywhere else (and where no kernel serves the
  case) the memory-efficient jnp reference.

Operands always include the additional keys/values (``[B, 0, Hkv, D]`` when there are none),
so every layer sees one signature. The backward also takes the LSE cotangent (zeros unless
the caller differentiates the returned LSE), folded into the softmax correction term.

``jax_gna.attention`` differentiates through a ``custom_vjp`` whose backward is ``gna_bwd_p``;
the primitives themselves have no derivatives, so their JVP rules only raise a clear error
(reached by second-order differentiation).
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
from jax.interpreters import ad, batching, mlir

from jax_gna import partitioning
from jax_gna.platform_primitives import (bwd_abstract, fwd_abstract, gna_bwd_platform_p,
                                         gna_fwd_platform_p, lse_dtype, new_primitive)
from jax_gna.platform_primitives import varying_axes as _varying_axes  # noqa: F401 (attention)

__all__ = ["gna_fwd_p", "gna_bwd_p", "gna_fwd_platform_p", "gna_bwd_platform_p",
           "lse_dtype"]

logger = logging.getLogger("jax_gna")

gna_fwd_p = new_primitive("gna_fwd")
gna_bwd_p = new_primitive("gna_bwd")
gna_fwd_p.def_abstract_eval(fwd_abstract)
gna_bwd_p.def_abstract_eval(bwd_abstract)


def _register_device_lowering():
    """The outer primitives lower to ``custom_partitioning``, whose lowering needs the device
    assignment; tell jit to keep devices around while lowering programs that contain them
    (as jax does for its own cuDNN attention primitives)."""
    try:
        from jax._src import dispatch
        dispatch.prim_requires_devices_during_lowering.update({gna_fwd_p, gna_bwd_p})
    except (ImportError, AttributeError):  # private API moved: sharded programs then lower
        # unpartitioned (see partitioning._needs_partitioning), which is correct but
        # replicated.
        logger.warning("jax_gna: could not mark GNA primitives as device-requiring; "
                       "sharding rules are inactive")


_register_device_lowering()


# ----------------------------------------------------------------------------------------
# Batching: vmapped dims fold into the batch dim (or, for a query-only vmap of the forward,
# into the query heads as extra GQA groups, so K/V are never copied).
# ----------------------------------------------------------------------------------------


_NOT_MAPPED = None  # how batching rules mark an operand that is not vmapped


def _size(args, dims):
    return next(x.shape[d] for x, d in zip(args, dims) if d is not _NOT_MAPPED)


def _to_front(x, d, size):
    if d is _NOT_MAPPED:
        return jnp.broadcast_to(x, (size,) + x.shape)
    return jnp.moveaxis(x, d, 0)


def _fold(x):
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _unfold(x, size):
    return x.reshape((size, x.shape[0] // size) + x.shape[1:])  # no -1: arrays may be empty


def _fwd_batch(args, dims, *, config):
    q, k, v, ek, ev = args
    size = _size(args, dims)
    if all(d is _NOT_MAPPED for d in dims[1:]):
        return _fwd_batch_query_only(q, dims[0], k, v, ek, ev, size, config)
    args = [_fold(_to_front(x, d, size)) for x, d in zip(args, dims)]
    out, lse = gna_fwd_p.bind(*args, config=config)
    return (_unfold(out, size), _unfold(lse, size)), (0, 0)


def _fwd_batch_query_only(q, qdim, k, v, ek, ev, size, config):
    # Query head h of instance i becomes head (h // G) * (size * G) + i * G + h % G, so it
    # still reads KV head h // G: the vmapped axis is just more query heads per KV head.
    hkv = k.shape[-2]
    q = jnp.moveaxis(q, qdim, 0)                       # [V, B, *S, Hq, D]
    g = q.shape[-2] // hkv
    lead = q.shape[1:-2]
    q = q.reshape((size,) + lead + (hkv, g, q.shape[-1]))
    q = jnp.moveaxis(q, 0, -3).reshape(lead + (hkv * size * g, q.shape[-1]))
    out, lse = gna_fwd_p.bind(q, k, v, ek, ev, config=config)
    out = out.reshape(lead + (hkv, size, g, out.shape[-1]))
    out = jnp.moveaxis(out, -3, 0).reshape((size,) + lead + (hkv * g, out.shape[-1]))
    lse = lse.reshape(lead + (hkv, size, g))
    lse = jnp.moveaxis(lse, -2, 0).reshape((size,) + lead + (hkv * g,))
    return (out, lse), (0, 0)


def _bwd_batch(args, dims, *, config):
    # dK/dV are per vmapped instance, so nothing may be summed across instances: fold into
    # the batch dim, broadcasting operands that are not mapped.
    size = _size(args, dims)
    args = [_fold(_to_front(x, d, size)) for x, d in zip(args, dims)]
    grads = gna_bwd_p.bind(*args, config=config)
    return tuple(_unfold(x, size) for x in grads), (0,) * len(grads)


batching.primitive_batchers[gna_fwd_p] = _fwd_batch
batching.primitive_batchers[gna_bwd_p] = _bwd_batch


# ----------------------------------------------------------------------------------------
# Differentiation: first order goes through the custom_vjp of jax_gna.attention; anything
# that differentiates the primitives themselves (grad of grad, hessian) is refused here.
# ----------------------------------------------------------------------------------------


SECOND_ORDER_ERROR = (
    "jax_gna.attention supports first-order reverse-mode differentiation only (jax.grad, "
    "jax.vjp, jax.value_and_grad, also under vmap): its gradient is computed by a fused "
    "backward kernel (or the tiled reference backward) that has no derivative rule of its "
    "own, so second-order derivatives (grad of grad, jax.hessian, jvp of grad) are not "
    "supported")


def _no_derivative(primals, tangents, **params):
    del primals, tangents, params
    raise NotImplementedError(SECOND_ORDER_ERROR)


ad.primitive_jvps[gna_fwd_p] = _no_derivative
ad.primitive_jvps[gna_bwd_p] = _no_derivative


# ----------------------------------------------------------------------------------------
# Lowering: outer primitives go through the partitioning layer to the platform primitives.
# ----------------------------------------------------------------------------------------


def _outer_fwd_lowering(ctx, *args, config):
    return mlir.lower_fun(partitioning.partitioned_fwd(config), multiple_results=True)(
        ctx, *args)


def _outer_bwd_lowering(ctx, *args, config):
    return mlir.lower_fun(partitioning.partitioned_bwd(config), multiple_results=True)(
        ctx, *args)


mlir.register_lowering(gna_fwd_p, _outer_fwd_lowering)
mlir.register_lowering(gna_bwd_p, _outer_bwd_lowering)
