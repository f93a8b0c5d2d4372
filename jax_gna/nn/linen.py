"""Flax Linen twins of the NNX layers: ``NeighborhoodAttention1D/2D/3D``.

Same behaviour and parameter tree as ``jax_gna.nn.nnx`` (``query``/``key``/``value``/``out``
``DenseGeneral`` kernels of shape ``(in, heads, head_dim)`` and ``(heads, head_dim, out)``, as
in ``flax.linen.MultiHeadDotProductAttention``); the input feature count is inferred from the
input, as Linen does. See ``jax_gna.nn.nnx`` for what differs from Flax's attention on purpose
(self-attention only, no dropout, no mask, no decode cache, optional extra K/V tokens).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from jax_gna import _checks
from jax_gna.nn import _common

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]


class _NeighborhoodAttention(nn.Module):
    """Shared implementation; subclasses only fix the spatial rank (class attribute)."""

    num_heads: int
    kernel_size: Any  # int or one int per spatial dim
    stride: Any = 1
    dilation: Any = 1
    is_causal: Any = False
    qkv_features: int | None = None
    out_features: int | None = None
    num_kv_heads: int | None = None
    in_extra_features: int | None = None  # None: extra tokens share `key`/`value`
    backend: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    out_kernel_init: Callable | None = None
    bias_init: Callable = nn.initializers.zeros_init()
    out_bias_init: Callable | None = None
    use_bias: bool = True
    normalize_qk: bool = False

    rank = 0  # unannotated: a class constant, not a dataclass field

    @nn.compact
    def __call__(self, inputs: jax.Array, *, inputs_kv_extra: jax.Array | None = None,
                 deterministic: bool | None = None) -> jax.Array:
        """``[batch, *spatial, features]`` -> ``[batch, *spatial, out_features]``.

        ``deterministic`` is ignored (no attention dropout) and accepted for call
        compatibility; ``inputs_kv_extra`` ``[batch, n_extra, features]`` are tokens every
        query also attends to.
        """
        del deterministic
        name = type(self).__name__
        _checks.check_layer_sizes(name, num_heads=self.num_heads,
                                  qkv_features=self.qkv_features,
                                  out_features=self.out_features,
                                  num_kv_heads=self.num_kv_heads,
                                  in_extra_features=self.in_extra_features)
        ks, st, dl, ca = _common.normalize_gna_args(self.rank, self.kernel_size, self.stride,
                                                    self.dilation, self.is_causal)
        in_features = inputs.shape[-1]
        extra_features = (self.in_extra_features if self.in_extra_features is not None
                          else in_features)
        _common.check_inputs(name, self.rank, None, inputs, inputs_kv_extra, extra_features)
        qkv_features = self.qkv_features or in_features
        out_features = self.out_features or in_features
        num_kv_heads = self.num_kv_heads or self.num_heads
        head_dim = _checks.check_head_layout(name, self.num_heads, num_kv_heads, qkv_features)

        def projection(heads, name):
            return nn.DenseGeneral(features=(heads, head_dim), axis=-1, dtype=self.dtype,
                                   param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                                   bias_init=self.bias_init, use_bias=self.use_bias,
                                   precision=self.precision, name=name)

        query = projection(self.num_heads, "query")(inputs)
        key_proj = projection(num_kv_heads, "key")
        value_proj = projection(num_kv_heads, "value")
        key, value = key_proj(inputs), value_proj(inputs)
        extra_key = extra_value = None
        if inputs_kv_extra is not None:
            if self.in_extra_features is not None:
                key_proj = projection(num_kv_heads, "extra_key")
                value_proj = projection(num_kv_heads, "extra_value")
            extra_key = key_proj(inputs_kv_extra)
            extra_value = value_proj(inputs_kv_extra)
        if self.normalize_qk:
            ln = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
            query = nn.LayerNorm(name="query_ln", **ln)(query)
            key_ln = nn.LayerNorm(name="key_ln", **ln)
            key = key_ln(key)
            if extra_key is not None:
                extra_key = key_ln(extra_key)
        x = _common.gna(query, key, value, extra_key, extra_value, ks, st, dl, ca,
                        self.backend)
        return nn.DenseGeneral(features=out_features, axis=(-2, -1), dtype=self.dtype,
                               param_dtype=self.param_dtype,
                               kernel_init=self.out_kernel_init or self.kernel_init,
                               bias_init=self.out_bias_init or self.bias_init,
                               use_bias=self.use_bias, precision=self.precision,
                               name="out")(x)


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, length, features]``."""

    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, height, width, features]``."""

    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, time, height, width, features]``."""

    rank = 3
