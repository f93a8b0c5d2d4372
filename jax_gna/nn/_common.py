"""Helpers shared by the NNX modules, the Linen twins and the ``attention_fn`` adapter.

Kept free of any Flax import so both front ends (and the adapter) use one copy of the
shape checks and of the call into ``jax_gna.attention``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import jax_gna
from jax_gna import semantics

# Human names of the spatial axes per rank, used in error messages and docstrings.
SPATIAL_AXES = {1: ("length",), 2: ("height", "width"), 3: ("time", "height", "width")}


def normalize_gna_args(rank: int, kernel_size: Any, stride: Any, dilation: Any,
                       is_causal: Any) -> tuple[tuple, tuple, tuple, tuple]:
    """Per-dim tuples of the GNA parameters, checked for type and length at construction.

    The checks against the actual spatial size (``kernel_size * dilation <= L`` ...) need the
    input, so they happen inside ``jax_gna.attention``; catching a wrong tuple length here
    reports the mistake where the module is built rather than at its first call.
    """
    return (semantics.normalize_per_dim(kernel_size, rank, "kernel_size"),
            semantics.normalize_per_dim(stride, rank, "stride"),
            semantics.normalize_per_dim(dilation, rank, "dilation"),
            semantics.normalize_per_dim(is_causal, rank, "is_causal", kind="bool"))


def check_inputs(module_name: str, rank: int, in_features: int | None, inputs: jax.Array,
                 inputs_kv_extra: jax.Array | None, extra_features: int | None) -> None:
    """ValueError naming the argument when ``inputs``/``inputs_kv_extra`` have a wrong shape."""
    axes = ", ".join(SPATIAL_AXES[rank])
    if inputs.ndim != rank + 2:
        raise ValueError(
            f"{module_name} expects `inputs` of shape [batch, {axes}, features] ({rank} "
            f"spatial dim(s)); got shape {tuple(inputs.shape)} with {inputs.ndim - 2} spatial "
            f"dim(s). Use NeighborhoodAttention{max(inputs.ndim - 2, 0)}D for that input, or "
            f"reshape it.")
    if in_features is not None and inputs.shape[-1] != in_features:
        raise ValueError(f"{module_name}: `inputs` has {inputs.shape[-1]} features but the "
                         f"module was built with in_features={in_features}")
    if inputs_kv_extra is None:
        return
    if inputs_kv_extra.ndim != 3:
        raise ValueError(f"{module_name} expects `inputs_kv_extra` of shape [batch, n_extra, "
                         f"features]; got shape {tuple(inputs_kv_extra.shape)}")
    if inputs_kv_extra.shape[0] != inputs.shape[0]:
        raise ValueError(f"{module_name}: `inputs_kv_extra` batch {inputs_kv_extra.shape[0]} "
                         f"differs from `inputs` batch {inputs.shape[0]}")
    if extra_features is not None and inputs_kv_extra.shape[-1] != extra_features:
        raise ValueError(
            f"{module_name}: `inputs_kv_extra` has {inputs_kv_extra.shape[-1]} features but "
            f"its key/value projections take {extra_features} (the extra tokens share the "
            f"`key`/`value` projections unless the module is built with in_extra_features)")


def gna(query, key, value, extra_key, extra_value, kernel_size, stride, dilation, is_causal,
        backend):
    """``jax_gna.attention`` on projected heads; the extra K/V (if any) join every window.

    Resolved through the package attribute at call time, so importing ``jax_gna.nn`` never
    depends on the import order inside ``jax_gna/__init__.py``.
    """
    # jax_gna.attention takes one dtype for all operands; the projections can disagree when
    # only some of them went through a LayerNorm (normalize_qk) with other parameter dtypes.
    arrays = [a for a in (query, key, value, extra_key, extra_value) if a is not None]
    dtype = jnp.result_type(*arrays)
    query, key, value = (a.astype(dtype) for a in (query, key, value))
    if extra_key is not None:
        extra_key, extra_value = extra_key.astype(dtype), extra_value.astype(dtype)
    return jax_gna.attention(query, key, value, kernel_size, stride, dilation, is_causal,
                             additional_keys=extra_key, additional_values=extra_value,
                             backend=backend)
