"""GNA forward and backward primitives: abstract evaluation, batching and platform lowering.

Two layers, as in ``jax/_src/cudnn/fused_attention_stablehlo.py``:

* ``gna_fwd_p`` / ``gna_bwd_p``: what traced programs contain. They have abstract evaluation
  and batching rules (vmap), and lower through ``jax_gna.partitioning`` (the sharding rules).
* ``gna_fwd_platform_p`` / ``gna_bwd_platform_p``: what the partitioner places per device.
  Their lowering is per platform: on CUDA, the XLA FFI kernel chosen by
  ``jax_gna.backends.choose``; everywhere else (and where no kernel serves the case) the
  memory-efficient jnp reference.

Operands always include the additional keys/values (``[B, 0, Hkv, D]`` when there are none),
so every layer sees one signature. The backward also takes the LSE cotangent (zeros unless
the caller differentiates the returned LSE), folded into the softmax correction term.

``jax_gna.attention`` differentiates through a ``custom_vjp`` whose backward is ``gna_bwd_p``;
the primitives themselves have no derivatives, so their JVP rules only raise a clear error
(reached by second-order differentiation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jax_gna import backends
from jax_gna._config import AttentionConfig
from jax_gna.reference.tiled import tiled_attention_bwd, tiled_attention_fwd

__all__ = ["gna_fwd_p", "gna_bwd_p", "gna_fwd_platform_p", "gna_bwd_platform_p",
           "lse_dtype"]


def lse_dtype(dtype):
    """LSE is float32 for half/single inputs, float64 for float64 inputs (docs/semantics.md)."""
    return jnp.promote_types(dtype, jnp.float32)


def _new_primitive(name: str) -> Primitive:
    p = Primitive(name)
    p.multiple_results = True
    # Eager calls run the primitive under jit, which takes the lowering below.
    p.def_impl(lambda *args, **params: jax.jit(functools.partial(p.bind, **params))(*args))
    return p


gna_fwd_p = _new_primitive("gna_fwd")
gna_bwd_p = _new_primitive("gna_bwd")
gna_fwd_platform_p = _new_primitive("gna_fwd_platform")
gna_bwd_platform_p = _new_primitive("gna_bwd_platform")


# ----------------------------------------------------------------------------------------
# Abstract evaluation
# ----------------------------------------------------------------------------------------


def _varying_axes(aval) -> frozenset:
    """Manual mesh axes ``aval`` varies over inside ``shard_map`` (check_vma typing)."""
    mat = getattr(aval, "mat", None)                      # jax >= 0.10
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", frozenset()))   # older jax


def _result(avals, like, shape, dtype, spec=None):
    """A result aval: shape/dtype given; mesh sharding like ``like`` (``spec`` overrides its
    PartitionSpec; explicit-sharding meshes type results with it); varying over the union of
    the operands' manual axes inside ``shard_map``, so results and the custom_vjp's gradients
    keep their type (as jax's own cuDNN attention does, jax issue #36008)."""
    from jax._src import core  # noqa: PLC0415
    vma = frozenset().union(*(_varying_axes(a) for a in avals))
    sharding = getattr(like, "sharding", None)
    if sharding is None or sharding.mesh.empty:
        if not vma:
            return core.ShapedArray(shape, dtype)
        sharding = next(a.sharding for a in avals if _varying_axes(a))
        spec = jax.sharding.PartitionSpec()
    if spec is not None:
        sharding = sharding.update(spec=spec)
    if not vma:
        return core.ShapedArray(shape, dtype, sharding=sharding)
    if hasattr(core, "ManualAxisType"):
        return core.ShapedArray(shape, dtype, sharding=sharding,
                                manual_axis_type=core.ManualAxisType(varying=vma))
    return core.ShapedArray(shape, dtype, sharding=sharding, vma=vma)


def _fwd_abstract(q, k, v, ek, ev, *, config: AttentionConfig):
    del config
    ins = (q, k, v, ek, ev)
    spec = tuple(q.sharding.spec) if getattr(q, "sharding", None) is not None else None
    out = _result(ins, q, q.shape[:-1] + (v.shape[-1],), q.dtype,
                  None if spec is None else jax.sharding.PartitionSpec(*spec[:-1], None))
    lse = _result(ins, q, q.shape[:-1], lse_dtype(q.dtype),
                  None if spec is None else jax.sharding.PartitionSpec(*spec[:-1]))
    return out, lse


def _bwd_abstract(q, k, v, ek, ev, out, lse, dout, dlse, *, config: AttentionConfig):
    del config
    ins = (q, k, v, ek, ev, out, lse, dout, dlse)
    return tuple(_result(ins, x, x.shape, x.dtype) for x in (q, k, v, ek, ev))


for _p in (gna_fwd_p, gna_fwd_platform_p):
    _p.def_abstract_eval(_fwd_abstract)
for _p in (gna_bwd_p, gna_bwd_platform_p):
    _p.def_abstract_eval(_bwd_abstract)


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
    from jax_gna import partitioning
    return mlir.lower_fun(partitioning.partitioned_fwd(config), multiple_results=True)(
        ctx, *args)


def _outer_bwd_lowering(ctx, *args, config):
    from jax_gna import partitioning
    return mlir.lower_fun(partitioning.partitioned_bwd(config), multiple_results=True)(
        ctx, *args)


mlir.register_lowering(gna_fwd_p, _outer_fwd_lowering)
mlir.register_lowering(gna_bwd_p, _outer_bwd_lowering)


def _platform(ctx) -> str:
    platforms = ctx.module_context.platforms
    return platforms[0] if platforms else "cpu"


def _reference_fwd_lowering(ctx, q, k, v, ek, ev, *, config):
    platform = _platform(ctx)
    fn = functools.partial(tiled_attention_fwd, config=config, platform=platform)
    return mlir.lower_fun(lambda *a: fn(*a), multiple_results=True)(ctx, q, k, v, ek, ev)


def _reference_bwd(q, k, v, ek, ev, out, lse, dout, dlse, *, config, platform):
    return tiled_attention_bwd(q, k, v, ek, ev, out, lse, dout, config, platform=platform,
                               dlse=dlse)


def _reference_bwd_lowering(ctx, *args, config):
    fn = functools.partial(_reference_bwd, config=config, platform=_platform(ctx))
    return mlir.lower_fun(lambda *a: fn(*a), multiple_results=True)(ctx, *args)


def _case(ctx, config):
    q, k, v, ek = ctx.avals_in[:4]
    return backends.make_case(config, q, k, v, ek)


def _cuda_fwd_lowering(ctx, q, k, v, ek, ev, *, config):
    case = _case(ctx, config)
    choice = backends.choose(case, backends.FORWARD, "cuda")
    if not choice.is_kernel:
        return _reference_fwd_lowering(ctx, q, k, v, ek, ev, config=config)
    from jax_gna import _cuda_lowering
    return _cuda_lowering.lower_fwd(ctx, q, k, v, ek, ev, config=config,
                                    kernel_name=choice.backend, case=case)


def _cuda_bwd_lowering(ctx, *args, config):
    case = _case(ctx, config)
    choice = backends.choose(case, backends.BACKWARD, "cuda")
    if not choice.is_kernel:
        return _reference_bwd_lowering(ctx, *args, config=config)
    from jax_gna import _cuda_lowering
    return _cuda_lowering.lower_bwd(ctx, *args, config=config, kernel_name=choice.backend,
                                    case=case)


mlir.register_lowering(gna_fwd_platform_p, _reference_fwd_lowering)
mlir.register_lowering(gna_bwd_platform_p, _reference_bwd_lowering)
mlir.register_lowering(gna_fwd_platform_p, _cuda_fwd_lowering, platform="cuda")
mlir.register_lowering(gna_bwd_platform_p, _cuda_bwd_lowering, platform="cuda")
