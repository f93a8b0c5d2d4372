"""The platform primitives: what the partitioner (``jax_gna.partitioning``) places on each
device, with the abstract evaluation they share with the outer primitives
(``jax_gna.primitives``) and their lowering per platform.

``gna_fwd_platform_p`` / ``gna_bwd_platform_p`` lower on CUDA to the XLA FFI kernel chosen by
``jax_gna.backends.choose`` (``jax_gna._cuda_lowering``); everywhere else, and where no kernel
serves the case, to the memory-efficient jnp reference (``jax_gna.reference.tiled``).

Layers, each importing only those below it: ``attention`` -> ``primitives`` ->
``partitioning`` -> ``platform_primitives`` -> ``_cuda_lowering`` -> the FFI targets.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import mlir

from jax_gna import backends
from jax_gna._config import AttentionConfig
from jax_gna.reference.tiled import tiled_attention_bwd, tiled_attention_fwd

__all__ = ["gna_fwd_platform_p", "gna_bwd_platform_p", "new_primitive", "fwd_abstract",
           "bwd_abstract", "varying_axes", "lse_dtype"]


def lse_dtype(dtype):
    """LSE is float32 for half/single inputs, float64 for float64 inputs (docs/semantics.md)."""
    return jnp.promote_types(dtype, jnp.float32)


def new_primitive(name: str) -> Primitive:
    p = Primitive(name)
    p.multiple_results = True
    # Eager calls run the primitive under jit, which takes the lowering below.
    p.def_impl(lambda *args, **params: jax.jit(functools.partial(p.bind, **params))(*args))
    return p


gna_fwd_platform_p = new_primitive("gna_fwd_platform")
gna_bwd_platform_p = new_primitive("gna_bwd_platform")


# ----------------------------------------------------------------------------------------
# Abstract evaluation (shared with the outer primitives)
# ----------------------------------------------------------------------------------------


def varying_axes(aval) -> frozenset:
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
    vma = frozenset().union(*(varying_axes(a) for a in avals))
    sharding = getattr(like, "sharding", None)
    if sharding is None or sharding.mesh.empty:
        if not vma:
            return core.ShapedArray(shape, dtype)
        sharding = next(a.sharding for a in avals if varying_axes(a))
        spec = jax.sharding.PartitionSpec()
    if spec is not None:
        sharding = sharding.update(spec=spec)
    if not vma:
        return core.ShapedArray(shape, dtype, sharding=sharding)
    if hasattr(core, "ManualAxisType"):
        return core.ShapedArray(shape, dtype, sharding=sharding,
                                manual_axis_type=core.ManualAxisType(varying=vma))
    return core.ShapedArray(shape, dtype, sharding=sharding, vma=vma)


def fwd_abstract(q, k, v, ek, ev, *, config: AttentionConfig):
    del config
    ins = (q, k, v, ek, ev)
    spec = tuple(q.sharding.spec) if getattr(q, "sharding", None) is not None else None
    out = _result(ins, q, q.shape[:-1] + (v.shape[-1],), q.dtype,
                  None if spec is None else jax.sharding.PartitionSpec(*spec[:-1], None))
    lse = _result(ins, q, q.shape[:-1], lse_dtype(q.dtype),
                  None if spec is None else jax.sharding.PartitionSpec(*spec[:-1]))
    return out, lse


def bwd_abstract(q, k, v, ek, ev, out, lse, dout, dlse, *, config: AttentionConfig):
    del config
    ins = (q, k, v, ek, ev, out, lse, dout, dlse)
    return tuple(_result(ins, x, x.shape, x.dtype) for x in (q, k, v, ek, ev))


gna_fwd_platform_p.def_abstract_eval(fwd_abstract)
gna_bwd_platform_p.def_abstract_eval(bwd_abstract)


# ----------------------------------------------------------------------------------------
# Lowering per platform: a CUDA kernel where one serves the case, else the jnp reference.
# ----------------------------------------------------------------------------------------


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
