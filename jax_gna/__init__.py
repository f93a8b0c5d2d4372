"""jax_gna: Generalized Neighborhood Attention for JAX.

``jax_gna.attention(query, key, value, kernel_size, stride, dilation, is_causal)`` runs GNA
(neighborhood, strided and blocked attention over 1-3-D token grids) inside any jitted
function: fused CUDA kernels where they serve the case, a memory-efficient jnp reference
everywhere else. See README.md and docs/semantics.md.
"""

import importlib.util as _importlib_util
import os as _os
import warnings as _warnings

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


# ----------------------------------------------------------------------------------------
# A machine with an NVIDIA GPU but a CPU-only JAX runs everything on the CPU without a word
# from JAX: say so once, with the fix. Only file and module-spec lookups (no device query, no
# subprocess), so importing stays fast.
# ----------------------------------------------------------------------------------------

_NVIDIA_GPU_PATHS = ("/proc/driver/nvidia/gpus", "/dev/nvidia0")
_JAX_CUDA_MODULES = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda13",
                     "jax_plugins.xla_cuda12")
CUDA_JAX_HINT = 'pip install -U "jax[cuda13]" (or "jax[cuda12]" for a CUDA 12 driver)'


def _cpu_only_jax_on_gpu_machine(gpu_paths=_NVIDIA_GPU_PATHS,
                                 cuda_modules=_JAX_CUDA_MODULES) -> str | None:
    """The warning to give when this machine has an NVIDIA GPU (a driver's device files)
    but the installed JAX has no CUDA plugin; None otherwise, or when ``JAX_PLATFORMS``
    chooses platforms without CUDA on purpose."""
    platforms = _os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu")):
        return None
    def present(path):   # a device file, or a driver directory that lists a GPU
        try:
            return bool(_os.listdir(path)) if _os.path.isdir(path) else _os.path.exists(path)
        except OSError:
            return False
    if not any(present(p) for p in gpu_paths):
        return None
    for name in cuda_modules:
        try:
            if _importlib_util.find_spec(name) is not None:
                return None
        except (ImportError, ValueError):
            continue
    return ("jax_gna: this machine has an NVIDIA GPU but the installed JAX is CPU-only (no "
            "CUDA plugin), so everything runs on the CPU; for GPU support: " + CUDA_JAX_HINT)


_message = _cpu_only_jax_on_gpu_machine()
if _message is not None:
    _warnings.warn(_message, stacklevel=2)
del _message
