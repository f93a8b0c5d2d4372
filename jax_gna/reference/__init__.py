"""jnp references: the dense definition (examples, small problems) and the memory-efficient
tiled reference (the CPU backend and the fallback on every platform)."""

from jax_gna.reference.dense import dense_attention
from jax_gna.reference.tiled import tiled_attention_bwd, tiled_attention_fwd

__all__ = ["dense_attention", "tiled_attention_fwd", "tiled_attention_bwd"]
