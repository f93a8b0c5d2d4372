"""Flax layers for Generalized Neighborhood Attention.

* ``NeighborhoodAttention1D/2D/3D``: NNX layers (Flax's recommended API), a drop-in for
  ``flax.nnx.MultiHeadAttention`` over a token grid, with the same parameter tree.
* ``jax_gna.nn.linen``: Linen twins with the same names.
* ``make_attention_fn``: an ``attention_fn`` that makes an existing Flax
  ``MultiHeadAttention`` run GNA over a known grid shape.
"""

from jax_gna.nn import linen, nnx
from jax_gna.nn.adapter import make_attention_fn
from jax_gna.nn.nnx import (NeighborhoodAttention1D, NeighborhoodAttention2D,
                            NeighborhoodAttention3D)

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D",
           "make_attention_fn", "linen", "nnx"]
