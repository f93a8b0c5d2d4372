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
    # backend name ("sm80", "sm90", "halo"): that kernel or a clear error.
    backend: str | None = None
    # Kernel tile boxes (tokens per spatial dim), or None for the backend's own choice.
    q_tile: tuple[int, ...] | None = None
    kv_tile: tuple[int, ...] | None = None
    # Backward without order-dependent atomics (kernels only; the reference always is).
    deterministic: bool = False
    # Queries to compute: [lo, hi) per spatial dim, or None for all. Outside the box the
    # output is 0 and the LSE -inf (no gradient flows from there); kernels skip the Q tiles
    # that hold no query of the box. Internal: context parallelism's local step computes its
    # slab's queries only (jax_gna/context_parallel.py).
    query_box: tuple[tuple[int, int], ...] | None = None

    @property
    def rank(self) -> int:
        return len(self.spatial_shape)

    @property
    def query_ranges(self) -> tuple[tuple[int, int], ...]:
        """The query box, or the whole grid when there is none."""
        if self.query_box is None:
            return tuple((0, n) for n in self.spatial_shape)
        return self.query_box

    def replace(self, **changes) -> "AttentionConfig":
        return dataclasses.replace(self, **changes)
