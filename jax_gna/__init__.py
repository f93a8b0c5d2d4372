"""jax_gna: Generalized Neighborhood Attention for JAX.

``jax_gna.attention(query, key, value, kernel_size, stride, dilation, is_causal)`` runs GNA
(neighborhood, strided and blocked attention over 1-3-D token grids) inside any jitted
function: fused CUDA kernels where they serve the case, a memory-efficient jnp reference
everywhere else. See README.md and docs/semantics.md.
"""

from jax_gna.attention import (attention, attention_in_boxes, merge_attentions, na1d, na2d,
                               na3d)
from jax_gna.backends import available_backends, explain
from jax_gna import partitioning as _partitioning  # noqa: F401  (sharding rules, before any jit)
from jax_gna.context_parallel import (context_parallel_attention,
                                      context_parallel_attention_on_mesh)
from jax_gna.semantics import GNAParams, make_params

__version__ = "0.1.0"

__all__ = ["attention", "attention_in_boxes", "na1d", "na2d", "na3d", "merge_attentions", "available_backends",
           "explain", "context_parallel_attention",
           "context_parallel_attention_on_mesh", "GNAParams", "make_params", "__version__"]
