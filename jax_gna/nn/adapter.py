"""``make_attention_fn``: switch an existing Flax ``MultiHeadAttention`` to GNA.

Flax's attention layers (``flax.nnx.MultiHeadAttention``,
``flax.linen.MultiHeadDotProductAttention``) take an ``attention_fn`` that receives projected
heads ``[batch..., tokens, heads, head_dim]``.
For a model whose tokens are a row-major flattened grid of known shape, the function built
here views the token axis as that grid, runs ``jax_gna.attention`` and flattens back, so the
layer (and its checkpoint) stays unchanged::

    attn = nnx.MultiHeadAttention(num_heads=8, in_features=256, decode=False, rngs=rngs,
                                  attention_fn=jax_gna.nn.make_attention_fn((32, 32), 7))
    y = attn(x.reshape(batch, 32 * 32, 256))
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax

from jax_gna import semantics
from jax_gna.nn import _common

__all__ = ["make_attention_fn"]


def make_attention_fn(spatial_shape: Sequence[int], kernel_size: Any, stride: Any = 1,
                      dilation: Any = 1, is_causal: Any = False,
                      backend: str | None = None) -> Callable[..., jax.Array]:
    """An ``attention_fn`` for Flax attention layers that runs GNA over ``spatial_shape``.

    Args:
      spatial_shape: the grid the token axis flattens (row-major), e.g. ``(H, W)``.
      kernel_size, stride, dilation, is_causal: GNA parameters (``jax_gna.attention``);
        validated here against ``spatial_shape``.
      backend: passed to ``jax_gna.attention`` (None: best available).

    The returned function accepts every argument Flax passes. What GNA cannot honour raises
    ``ValueError`` rather than being silently dropped: ``mask``/``bias`` (the neighborhood is
    the mask), attention dropout that is active (``dropout_rate > 0`` and not deterministic),
    ``module`` (``sow_weights=True``: the attention matrix never exists), a call-time
    ``is_causal=True`` (causality is per spatial dim: pass it here instead) and AQT einsum
    overrides. ``dtype`` casts q/k/v like Flax's ``dot_product_attention``; ``precision`` is
    not forwarded (GNA accumulates in float32, float64 for float64 inputs);
    ``force_fp32_for_softmax`` is already what GNA does.
    """
    spatial_shape = tuple(int(n) for n in spatial_shape)
    params = semantics.make_params(spatial_shape, kernel_size, stride, dilation, is_causal)
    num_tokens = math.prod(spatial_shape)

    # Keyword names must be spelled out (not only **kwargs): Linen filters the arguments it
    # passes by inspect.signature(attention_fn).parameters.
    def gna_attention_fn(query, key, value, bias=None, mask=None, broadcast_dropout=True,
                         dropout_rng=None, dropout_rate=0.0, deterministic=False, dtype=None,
                         precision=None, module=None, is_causal=False,
                         force_fp32_for_softmax=False, qk_attn_weights_einsum=None,
                         attn_weights_value_einsum=None, promote_dtype=None, **unknown):
        del broadcast_dropout, dropout_rng, precision, force_fp32_for_softmax
        unsupported = {
            "bias": bias is not None,
            "mask": mask is not None,
            "dropout_rate": dropout_rate > 0.0 and not deterministic,
            "module (sow_weights=True)": module is not None,
            "is_causal": bool(is_causal),
            "qk_attn_weights_einsum": qk_attn_weights_einsum is not None,
            "attn_weights_value_einsum": attn_weights_value_einsum is not None,
        }
        unsupported.update({name: arg is not None for name, arg in unknown.items()})
        bad = [name for name, is_bad in unsupported.items() if is_bad]
        if bad:
            raise ValueError(
                f"GNA attention_fn cannot honour {', '.join(bad)}: the neighborhood replaces "
                "any mask or bias, there is no attention dropout or weight sowing, and "
                "causality is set per spatial dim with make_attention_fn(is_causal=...)")
        if query.ndim < 3 or query.shape[-3] != num_tokens:
            raise ValueError(f"GNA attention_fn built for spatial_shape={spatial_shape} "
                             f"({num_tokens} tokens) got query of shape {tuple(query.shape)}")
        if key.shape[-3] != num_tokens or value.shape[-3] != num_tokens:
            raise ValueError("GNA attention_fn needs self-attention over the grid: key/value "
                             f"shapes {tuple(key.shape)}/{tuple(value.shape)} do not have "
                             f"{num_tokens} tokens")
        if promote_dtype is not None:  # flax's dot_product_attention hook, if passed
            query, key, value = promote_dtype((query, key, value), dtype=dtype)
        elif dtype is not None:  # what flax's default promote_dtype does
            query, key, value = (x.astype(dtype) for x in (query, key, value))
        batch_dims = query.shape[:-3]

        def to_grid(x):  # [batch..., N, heads, dim] -> [B, *spatial, heads, dim]
            return x.reshape((math.prod(batch_dims), *spatial_shape, *x.shape[-2:]))

        out = _common.gna(to_grid(query), to_grid(key), to_grid(value), None, None,
                          params.kernel_size, params.stride, params.dilation,
                          params.is_causal, backend)
        return out.reshape((*batch_dims, num_tokens, *out.shape[-2:]))

    return gna_attention_fn
