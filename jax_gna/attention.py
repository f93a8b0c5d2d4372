"""The public GNA functions: ``attention``, the rank-checked ``na1d``/``na2d``/``na3d``, and
``merge_attentions``.

``attention`` validates everything (raising ``ValueError``/``TypeError`` that name the
argument) and hands a static ``AttentionConfig`` to ``_gna``, a ``jax.custom_vjp`` whose
forward and backward are the primitives of ``jax_gna.primitives``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jax_gna import _checks, backends, explicit_sharding, semantics
from jax_gna._config import AttentionConfig
from jax_gna.primitives import gna_bwd_p, gna_fwd_p

__all__ = ["attention", "attention_in_boxes", "na1d", "na2d", "na3d", "merge_attentions"]


def attention(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
              scale=None, *, additional_keys=None, additional_values=None,
              return_lse: bool = False, backend: str | None = None, q_tile=None,
              kv_tile=None, deterministic: bool = False):
    """Generalized neighborhood attention over a 1-D, 2-D or 3-D token grid.

    Args:
      query: ``[batch, *spatial, heads_q, head_dim]``; the spatial rank (1-3) is
        ``query.ndim - 3``.
      key: ``[batch, *spatial, heads_kv, head_dim]`` with ``heads_q % heads_kv == 0``.
      value: ``[batch, *spatial, heads_kv, head_dim_v]``.
      kernel_size, stride, dilation, is_causal: an int (bool) or one per spatial dim, with
        the semantics and rules of docs/semantics.md (NATTEN 0.21).
      scale: softmax scale; default ``head_dim ** -0.5``.
      additional_keys, additional_values: ``[batch, n_extra, heads_kv, head_dim(_v)]``
        tokens every query also attends to (softmax over the union).
      return_lse: also return the log-sum-exp ``[batch, *spatial, heads_q]``: float32 for
        float16/bfloat16/float32 inputs, float64 for float64 inputs.
      backend: None (best available, see ``jax_gna.backends``), ``"reference"`` or a kernel
        family (``"sm80"``, ``"sm90"``, ``"halo"``), which raises if it cannot serve the case.
      q_tile, kv_tile: kernel tile boxes (tokens per spatial dim); default: chosen per case.
      deterministic: backward kernels without order-dependent atomics.

    Returns:
      ``out`` ``[batch, *spatial, heads_q, head_dim_v]`` in query's dtype, and the LSE when
      ``return_lse``.

    Differentiable once in reverse mode (``jax.grad``, ``jax.vjp``; all inputs and the
    LSE); second-order derivatives raise ``NotImplementedError``. Non-finite inputs: see
    docs/numerics.md.
    """
    return_lse = _checks.check_flag(return_lse, "return_lse")
    config, operands = _prepare(query, key, value, kernel_size, stride, dilation, is_causal,
                                scale, additional_keys, additional_values, backend, q_tile,
                                kv_tile, deterministic)
    # Explicit mesh axes: the call runs per shard inside shard_map (jax_gna.explicit_sharding);
    # Auto axes: jax_gna.partitioning's rule partitions the custom call.
    result = explicit_sharding.shard_explicit(functools.partial(_call, config=config), *operands)
    out, lse = _call(*operands, config=config) if result is None else result
    return (out, lse) if return_lse else out


def _prepare(query, key, value, kernel_size, stride, dilation, is_causal, scale,
             additional_keys, additional_values, backend, q_tile=None, kv_tile=None,
             deterministic=False):
    """Validate a call (errors name the argument); return its config and the five operands
    (empty additional keys/values when there are none)."""
    rank = _checks.check_tensors(query, key, value, additional_keys, additional_values)
    spatial = tuple(int(n) for n in query.shape[1:1 + rank])
    params = semantics.make_params(spatial, kernel_size, stride, dilation, is_causal)
    scale = _checks.check_scale(scale, int(query.shape[-1]))
    if backend is not None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string or None; got {backend!r}")
        if backend != backends.REFERENCE:
            backends.kernel_family(backend)   # raises ValueError for an unknown name
    config = AttentionConfig(
        spatial_shape=spatial, params=params, scale=scale, backend=backend,
        q_tile=_checks.check_tile(q_tile, rank, "q_tile"),
        kv_tile=_checks.check_tile(kv_tile, rank, "kv_tile"),
        deterministic=_checks.check_flag(deterministic, "deterministic"))
    if additional_keys is None:
        b, hkv = query.shape[0], key.shape[-2]
        additional_keys = jnp.zeros((b, 0, hkv, key.shape[-1]), key.dtype)
        additional_values = jnp.zeros((b, 0, hkv, value.shape[-1]), value.dtype)
    if backend is not None and backend != backends.REFERENCE:
        _check_requested_kernel(config, query, key, value, additional_keys)
    return config, (query, key, value, additional_keys, additional_values)


def attention_in_boxes(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
                       scale=None, *, query_boxes, box_index=0, additional_keys=None,
                       additional_values=None, backend=None):
    """``attention`` computing only the queries of one box; returns ``(out, lse)``.

    ``query_boxes``: one or more boxes, each ``((lo, hi), ...)`` per spatial dim (static);
    ``box_index`` (an int32 scalar, may be traced, e.g. a device's ``axis_index``) picks the
    box of this call. Outside the box the output is 0 and the LSE ``-inf``, and no gradient
    flows from there; the kernels skip Q tiles that hold no query of the box, so the cost
    follows the box, not the grid. Several boxes compile to one ``lax.switch`` over the
    branches (static boxes keep the kernels' launch grids static). Context parallelism's
    local step (``jax_gna.context_parallel``) is the user: each device computes its slab.
    """
    config, operands = _prepare(query, key, value, kernel_size, stride, dilation, is_causal,
                                scale, additional_keys, additional_values, backend)
    boxes = _checks.check_query_boxes(query_boxes, config.spatial_shape)
    configs = tuple(config.replace(query_box=box) for box in boxes)
    if len(configs) == 1:
        return _call(*operands, config=configs[0])
    index = jnp.asarray(box_index, jnp.int32)
    if index.shape != ():
        raise ValueError(f"box_index must be an int32 scalar; got shape {index.shape}")
    xs = _match_varying_axes(*operands, index)
    out, lse = _gna_switch(*xs, configs)
    return out, lse


def _call(q, k, v, ek, ev, *, config):
    out, lse = _gna(*_match_varying_axes(q, k, v, ek, ev), config)
    return out, lse


def _match_varying_axes(*xs):
    """Inside ``shard_map`` (check_vma), make every operand vary over the union of the
    operands' manual axes (what jax does for its own primitives), so results and gradients
    are typed correctly; the transpose of this cast sums the gradients of replicated
    operands (e.g. extra tokens) over those axes."""
    from jax_gna.primitives import _varying_axes
    union = frozenset().union(*(_varying_axes(jax.typeof(x)) for x in xs))
    if not union:
        return xs
    out = []
    for x in xs:
        missing = tuple(a for a in union if a not in _varying_axes(jax.typeof(x)))
        if missing:
            x = (jax.lax.pcast(x, missing, to="varying") if hasattr(jax.lax, "pcast")
                 else jax.lax.pvary(x, missing))
        out.append(x)
    return tuple(out)


def _check_requested_kernel(config, query, key, value, extra):
    """Fail at call time, not at lowering, when an explicitly requested kernel cannot serve
    the forward (the backward may fall back, see ``jax_gna.backends``)."""
    if jax.default_backend() != "gpu":
        raise ValueError(f"backend={config.backend!r} needs a CUDA GPU; the default JAX "
                         f"backend is {jax.default_backend()!r}")
    case = backends.make_case(config, query, key, value, extra)
    backends.choose(case, backends.FORWARD, "cuda")


def _rank_checked(rank: int, name: str):
    def fn(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
           **kwargs):
        if getattr(query, "ndim", None) != rank + 3:
            raise ValueError(f"{name} expects query [batch, {rank} spatial dims, heads, "
                             f"head_dim] ({rank + 3} axes); got shape "
                             f"{getattr(query, 'shape', None)}")
        return attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                         **kwargs)
    fn.__name__ = name
    fn.__doc__ = f"``attention`` restricted to {rank} spatial dim(s)."
    return fn


na1d = _rank_checked(1, "na1d")
na2d = _rank_checked(2, "na2d")
na3d = _rank_checked(3, "na3d")


# ----------------------------------------------------------------------------------------
# custom_vjp: forward saves out and LSE; backward recomputes probabilities from them.
# ----------------------------------------------------------------------------------------


def _in_box(config, trailing: int):
    """Boolean ``[1, *spatial, 1 x trailing]``: inside ``config.query_box``."""
    shape = (1,) + config.spatial_shape + (1,) * trailing
    inside = None
    for d, (lo, hi) in enumerate(config.query_box):
        i = jax.lax.broadcasted_iota(jnp.int32, shape, 1 + d)
        m = (i >= lo) & (i < hi)
        inside = m if inside is None else inside & m
    return inside


def _forward(q, k, v, ek, ev, config):
    out, lse = gna_fwd_p.bind(q, k, v, ek, ev, config=config)
    if config.query_box is not None:   # kernels leave rows outside the box unwritten
        out = jnp.where(_in_box(config, 2), out, jnp.zeros((), out.dtype))
        lse = jnp.where(_in_box(config, 1), lse, jnp.asarray(-jnp.inf, lse.dtype))
    return out, lse


def _backward(config, q, k, v, ek, ev, out, lse, dout, dlse):
    dout, dlse = dout.astype(out.dtype), dlse.astype(lse.dtype)
    if config.query_box is not None:
        # Rows outside the box: LSE +inf makes their probabilities exactly 0 (so they add
        # nothing to dK/dV even where a kernel computes them), and their cotangents are 0.
        lse = jnp.where(_in_box(config, 1), lse, jnp.asarray(jnp.inf, lse.dtype))
        dout = jnp.where(_in_box(config, 2), dout, jnp.zeros((), dout.dtype))
        dlse = jnp.where(_in_box(config, 1), dlse, jnp.zeros((), dlse.dtype))
    grads = tuple(gna_bwd_p.bind(q, k, v, ek, ev, out, lse, dout, dlse, config=config))
    if config.query_box is not None:
        grads = (jnp.where(_in_box(config, 2), grads[0], jnp.zeros((), grads[0].dtype)),
                 *grads[1:])
    return grads


def _residuals(q, k, v, ek, ev, out, lse):
    # No additional tokens: save no (empty) residuals for them; the backward rebuilds the
    # empty arrays from K/V's shapes (_checks makes them share the query's dtype). Empty
    # residuals crossing a shard_map boundary are unused inputs of the backward's manual
    # computation, which Shardy's unused-input rewrite then has to remove.
    extra = (ek, ev) if ek.shape[1] else None
    return q, k, v, extra, out, lse


def _unpack(residuals):
    q, k, v, extra, out, lse = residuals
    if extra is None:
        ek = jnp.zeros((k.shape[0], 0) + k.shape[-2:], k.dtype)
        ev = jnp.zeros((v.shape[0], 0) + v.shape[-2:], v.dtype)
        ek, ev = _match_varying_axes(q, ek, ev)[1:]
    else:
        ek, ev = extra
    return q, k, v, ek, ev, out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gna(q, k, v, ek, ev, config):
    return _forward(q, k, v, ek, ev, config)


def _gna_fwd(q, k, v, ek, ev, config):
    out, lse = _forward(q, k, v, ek, ev, config)
    return (out, lse), _residuals(q, k, v, ek, ev, out, lse)


def _gna_bwd(config, residuals, cotangents):
    return _backward(config, *_unpack(residuals), *cotangents)


_gna.defvjp(_gna_fwd, _gna_bwd)


# One of several query boxes, chosen at run time: a lax.switch inside the custom_vjp (not
# autodiff through a switch), so residuals are saved once, outside the branches.
@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _gna_switch(q, k, v, ek, ev, index, configs):
    branches = [functools.partial(_forward, config=c) for c in configs]
    return tuple(jax.lax.switch(index, branches, q, k, v, ek, ev))


def _gna_switch_fwd(q, k, v, ek, ev, index, configs):
    out, lse = _gna_switch(q, k, v, ek, ev, index, configs)
    return (out, lse), (_residuals(q, k, v, ek, ev, out, lse), index)


def _gna_switch_bwd(configs, residuals, cotangents):
    residuals, index = residuals
    branches = [functools.partial(_backward, c) for c in configs]
    grads = jax.lax.switch(index, branches, *_unpack(residuals), *cotangents)
    return (*grads, None)


_gna_switch.defvjp(_gna_switch_fwd, _gna_switch_bwd)


# ----------------------------------------------------------------------------------------
# Merging partial attentions
# ----------------------------------------------------------------------------------------


def merge_attentions(outputs, lses):
    """Combine attentions over disjoint key sets into attention over their union.

    ``outputs`` and ``lses`` are lists (or tuples) with one entry per partial attention:
    ``outputs[i]`` is ``[batch, *spatial, heads, head_dim]`` and ``lses[i]`` its LSE
    ``[batch, *spatial, heads]``; the outputs share one dtype, the LSEs another. Returns
    ``(out, lse)``, differentiable in all inputs: ``out`` in the outputs' dtype, ``lse``
    float64 when the LSEs are float64, else float32.
    """
    outputs, lses = _checks.check_merge_inputs(outputs, lses)
    lse = jnp.stack([l.astype(jnp.float32) if l.dtype != jnp.float64 else l for l in lses])
    total = jax.nn.logsumexp(lse, axis=0)
    # A row whose every part saw nothing has total = -inf; keep its weights at zero.
    safe = jnp.where(jnp.isfinite(total), total, 0.0)
    weights = jnp.exp(lse - safe)
    out = sum(w[..., None] * o.astype(w.dtype) for w, o in zip(weights, outputs))
    return out.astype(outputs[0].dtype), total
