"""The static description of one GNA call, carried as a primitive parameter.

It is hashable (primitives key their lowering cache on it) and holds everything that is not
an array: the validated window parameters, the spatial shape they were validated against,
the softmax scale, which backend was asked for and the kernel tile boxes, if any were given.
"""

from __future__ import annotations

import dataclasses

from jax_gna.semantics import GNAParams


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    spatial_shape: tuple[int, ...]
    params: GNAParams
    scale: float
    # None: pick the best backend that serves the case; "reference": the jnp path; a kernel
    # backend name ("sm80", "sm90"): that kernel or a clear error.
    backend: str | None = None
    # Kernel tile boxes (tokens per spatial dim), or None for the backend's own choice.
    q_tile: tuple[int, ...] | None = None
    kv_tile: tuple[int, ...] | None = None
    # Backward without order-dependent atomics (kernels only; the reference always is).
    deterministic: bool = False

    @property
    def rank(self) -> int:
        return len(self.spatial_shape)

    def replace(self, **changes) -> "AttentionConfig":
        return dataclasses.replace(self, **changes)
