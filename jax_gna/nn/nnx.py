"""Flax NNX neighborhood-attention layers: ``NeighborhoodAttention1D/2D/3D``.

Each layer is multi-head self-attention over a ``[batch, *spatial, features]`` grid in which
every token attends to its GNA neighborhood (``jax_gna.attention``) instead of to every other
token. The projections are built exactly like ``flax.nnx.MultiHeadAttention``'s -- same
submodule names (``query``, ``key``, ``value``, ``out``, and ``query_ln``/``key_ln`` with
``normalize_qk``), same kernel shapes (``(in, heads, head_dim)`` and ``(heads, head_dim,
out)``), created in the same order from the same ``rngs`` -- so a checkpoint of one loads into
the other, and with the same seed both initialise to identical parameters.

Differences from ``nnx.MultiHeadAttention``, on purpose:
  * self-attention only: keys and values come from the same grid as the queries (GNA needs a
    shared spatial layout), so there are no ``inputs_k``/``inputs_v``/``in_kv_features``;
  * no attention dropout (the GNA kernels have none; apply dropout to the layer's output
    if needed) -- ``deterministic`` is accepted for drop-in call compatibility and ignored;
  * no ``mask`` (the neighborhood *is* the mask) and no decode cache;
  * ``inputs_kv_extra`` adds tokens (e.g. text in a DiT) that every query attends to.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jax_gna import _checks
from jax_gna.nn import _common

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]

# nnx.MultiHeadAttention stores its optional LayerNorms as ``nnx.data(None)`` (Flax >= 0.12
# distinguishes pytree data from static attributes); older Flax has no ``nnx.data``.
_data = getattr(nnx, "data", lambda value: value)

_default_kernel_init = nnx.initializers.lecun_normal()
_default_bias_init = nnx.initializers.zeros_init()


class _NeighborhoodAttention(nnx.Module):
    """Shared implementation; subclasses only fix the spatial rank."""

    rank: int = 0  # set by the subclasses

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        num_kv_heads: int | None = None,
        *,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        dilation: int | tuple[int, ...] = 1,
        is_causal: bool | tuple[bool, ...] = False,
        in_extra_features: int | None = None,
        backend: str | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable = _default_kernel_init,
        out_kernel_init: Callable | None = None,
        bias_init: Callable = _default_bias_init,
        out_bias_init: Callable | None = None,
        use_bias: bool = True,
        normalize_qk: bool = False,
        rngs: nnx.Rngs,
    ):
        name = type(self).__name__
        _checks.check_layer_sizes(name, num_heads=num_heads, in_features=in_features,
                                  qkv_features=qkv_features, out_features=out_features,
                                  num_kv_heads=num_kv_heads,
                                  in_extra_features=in_extra_features)
        self.num_heads = num_heads
        self.in_features = in_features
        self.qkv_features = qkv_features if qkv_features is not None else in_features
        self.out_features = out_features if out_features is not None else in_features
        self.num_kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
        self.head_dim = _checks.check_head_layout(name, self.num_heads, self.num_kv_heads,
                                                  self.qkv_features)
        (self.kernel_size, self.stride, self.dilation,
         self.is_causal) = _common.normalize_gna_args(self.rank, kernel_size, stride,
                                                      dilation, is_causal)
        self.in_extra_features = in_extra_features
        self.backend = backend
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.use_bias = use_bias
        self.normalize_qk = normalize_qk

        def projection(in_feat, heads, init=kernel_init, b_init=bias_init):
            return nnx.LinearGeneral(in_feat, (heads, self.head_dim), dtype=dtype,
                                     param_dtype=param_dtype, kernel_init=init,
                                     bias_init=b_init, use_bias=use_bias,
                                     precision=precision, rngs=rngs)

        # Same creation order as nnx.MultiHeadAttention (query, key, value, *_ln, out): the
        # rng stream is consumed identically, so equal seeds give equal parameters.
        self.query = projection(in_features, self.num_heads)
        self.key = projection(in_features, self.num_kv_heads)
        self.value = projection(in_features, self.num_kv_heads)
        if normalize_qk:
            ln = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            self.query_ln = nnx.LayerNorm(self.head_dim, **ln)
            self.key_ln = nnx.LayerNorm(self.head_dim, **ln)
        else:
            self.query_ln = _data(None)
            self.key_ln = _data(None)
        self.out = nnx.LinearGeneral(
            (self.num_heads, self.head_dim), self.out_features, axis=(-2, -1),
            dtype=dtype, param_dtype=param_dtype, kernel_init=out_kernel_init or kernel_init,
            bias_init=out_bias_init or bias_init, use_bias=use_bias, precision=precision,
            rngs=rngs)
        # Extra tokens share `key`/`value` by default (what Flax DiTs with joint text/latent
        # attention do; it keeps the parameter tree identical to MultiHeadAttention's).
        # Text embeddings of another width get their own projections, created last so the
        # shared ones above still match MultiHeadAttention's for the same seed.
        if in_extra_features is not None:
            self.extra_key = projection(in_extra_features, self.num_kv_heads)
            self.extra_value = projection(in_extra_features, self.num_kv_heads)
        else:
            self.extra_key = _data(None)
            self.extra_value = _data(None)

    def __call__(self, inputs: jax.Array, *, inputs_kv_extra: jax.Array | None = None,
                 deterministic: bool | None = None) -> jax.Array:
        """``[batch, *spatial, in_features]`` -> ``[batch, *spatial, out_features]``.

        Args:
          inputs: the token grid; its spatial rank must be the layer's (1, 2 or 3).
          inputs_kv_extra: optional ``[batch, n_extra, features]`` tokens every query also
            attends to (projected by ``key``/``value``, or ``extra_key``/``extra_value`` when
            the layer was built with ``in_extra_features``).
          deterministic: Flax's dropout flag; ignored (there is no attention dropout) and
            accepted so callers that pass it to every layer keep working. (Unrelated to
            ``jax_gna.attention(deterministic=...)``, which picks atomic-free backward kernels.)
        """
        del deterministic
        extra_features = (self.in_extra_features if self.in_extra_features is not None
                          else self.in_features)
        _common.check_inputs(type(self).__name__, self.rank, self.in_features, inputs,
                             inputs_kv_extra, extra_features)
        query = self.query(inputs)
        key = self.key(inputs)
        value = self.value(inputs)
        extra_key = extra_value = None
        if inputs_kv_extra is not None:
            key_proj = self.extra_key if self.extra_key is not None else self.key
            value_proj = self.extra_value if self.extra_value is not None else self.value
            extra_key = key_proj(inputs_kv_extra)
            extra_value = value_proj(inputs_kv_extra)
        if self.normalize_qk:
            query = self.query_ln(query)
            key = self.key_ln(key)
            if extra_key is not None:
                extra_key = self.key_ln(extra_key)
        x = _common.gna(query, key, value, extra_key, extra_value, self.kernel_size,
                        self.stride, self.dilation, self.is_causal, self.backend)
        return self.out(x)


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, length, features]`` (see module docstring)."""

    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, height, width, features]``."""

    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, time, height, width, features]``."""

    rank = 3
