"""The kernel manifest: every CUDA kernel instantiation the library compiles, one per line,
and the limits of each kernel family.

It is the one statement of these facts. Readers:

* ``xla_ffi/generate_kernels.py`` (run by CMake at configure time) writes one instantiation
  ``.cu`` file per line of ``KERNELS`` and ``jax_gna/kernel_manifest.h``, the same facts for
  C++ (family limits, lookup of an instantiation's tile tokens, per-family X-macro lists);
* ``jax_gna.backends`` derives the support table (dtypes, head dims, architectures, limits);
* ``jax_gna._cuda_lowering`` takes the forward workspace size and the tile-side limit;
* ``tests/test_kernel_manifest.py`` checks that a built library registered exactly these.

Standard library only, no package imports: the generator loads this file by path, without
importing jax_gna or jax.

Adding an instantiation: one line in ``KERNELS``. Its family and direction must have a
template in ``xla_ffi/generate_kernels.py`` (``TEMPLATES``); ``params`` are the template's
family-specific parameters (``validate`` checks they are the ones it names).
"""

from __future__ import annotations

import dataclasses
from typing import Any

FORWARD, BACKWARD = "fwd", "bwd"
DTYPES = ("bf16", "fp16")

# Largest tile box side along one dim, in tokens, for every family: the sm80 kernels pack box
# coordinates into 9-bit fields (sm80/index_math.h kMaxBoxDim), the sm90 kernels' TMA boxes
# hold at most 256 rows per dim. The FFI handlers refuse larger boxes.
MAX_TILE_SIDE = 256


@dataclasses.dataclass(frozen=True)
class Family:
    """Limits shared by every instantiation of a kernel family."""

    name: str                    # backend name, and the directory under xla_ffi/cuda/
    min_arch: int                # compute capability (major * 10 + minor) it runs on ...
    max_arch: int | None         # ... up to this one; None: no upper bound (PTX JIT)
    box_extent_limit: int | None = None  # largest tile side x dilation (TMA box), None: none
    max_dilation: int | None = None      # largest dilation (TMA traversal stride), None: any
    fwd_workspace_bytes: int = 0  # forward scratch (FwdParams::workspace), allocated by XLA
    # Largest halo (keys a Q tile's queries see together: the union of their windows, a box
    # per Q tile) a halo-loading family serves; None: the family does not load halos.
    max_halo_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One instantiation: a family's template for one direction, dtype and head dim."""

    family: str
    direction: str          # FORWARD or BACKWARD
    dtype: str              # one of DTYPES
    head_dim: int           # query/key head dim; the value head dim is the same
    q_tile_tokens: int      # tokens per Q tile (the product of the Q box's sides)
    kv_tile_tokens: int     # tokens per KV tile
    params: tuple[tuple[str, Any], ...] = ()   # the family template's own parameters

    @property
    def stem(self) -> str:
        """File name (without .cu) of the generated instantiation."""
        return f"{self.direction}_{self.dtype}_hdim{self.head_dim}"

    def param(self, name: str) -> Any:
        return dict(self.params)[name]


def kernel(family: str, direction: str, dtype: str, head_dim: int, q_tile_tokens: int,
           kv_tile_tokens: int, **params: Any) -> Kernel:
    return Kernel(family, direction, dtype, head_dim, q_tile_tokens, kv_tile_tokens,
                  tuple(params.items()))


FAMILIES: dict[str, Family] = {
    # Hopper (sm_90a only: TMA, WGMMA). A TMA box holds at most 256 elements per dim and
    # steps at most 8 elements (cuTensorMapEncodeTiled); dilation folds into both. The
    # forward's dynamic scheduler keeps one int counter in a 256-byte workspace.
    "sm90": Family("sm90", 90, 90, box_extent_limit=256, max_dilation=8,
                   fwd_workspace_bytes=256),
    # Portable (mma.sync, cp.async): sm80 native, newer GPUs through PTX.
    "sm80": Family("sm80", 80, None),
    # Portable small-window forward (mma.sync, cp.async; built with the sm80 family): each
    # 64-query tile loads the box of keys its queries see (its halo) into shared memory once.
    # Calls whose halo exceeds max_halo_tokens go to the sm80 forward (jax_gna.backends);
    # the backward's inverse halo (queries seeing a 64-key box) has the same limit.
    "halo": Family("halo", 80, None, max_halo_tokens=512),
}

# sm90 forward: Q tiles of 128 tokens (two consumer warpgroups x 64 rows); KV tiles of 128
# tokens, 64 for head dim 256; K/V pipeline `stages` from the shared-memory budget.
# sm90 backward: Q tiles of 64 tokens (the columns of S^T = K Q^T), KV tiles of 128 tokens
# (two consumer warpgroups x 64 keys); no template parameters.
# sm80 forward: `warps`, K/V buffers `stages` (kernel_traits.h kStages: one for head dim 128
# keeps 64-token tiles within 99 KiB), `prefetch`: the GEMMs that prefetch their ldmatrix
# fragments ("s": S = Q K^T, "pv": O += P V, joined with "+").
# sm80 backward: dK/dV kernel `warps` and their split (S/dP `warps_m_sdp` along queries,
# dK/dV/dQ `warps_m_dkv` along rows); the deterministic dQ kernel uses 4 warps.
# halo forward: Q tiles of 64 tokens (4 warps x 16 queries); the "KV tile" is the chunk of 64
# keys of the flattened halo (then the additional tokens) that one S = Q K^T step covers;
# `ring`: the most chunks of K and V in shared memory at once (a halo of up to ring x 64
# keys is loaded once; a larger one streams through the ring), 64 KiB of K/V at each head dim.
# halo backward: the dQ kernel is the forward's CTA (Q tiles of 64, chunks of 64 keys, `ring`
# as above); the dK/dV kernel takes KV boxes of 64 keys (the "KV tile" of the line) and the
# queries that see them in steps of 64. Head dims 32 and 64.
KERNELS: tuple[Kernel, ...] = (
    #      family  direction dtype head_dim Q tokens KV tokens  template parameters
    kernel("sm90", FORWARD, "bf16", 64, 128, 128, stages=4),
    kernel("sm90", FORWARD, "bf16", 128, 128, 128, stages=2),
    kernel("sm90", FORWARD, "bf16", 256, 128, 64, stages=2),
    kernel("sm90", FORWARD, "fp16", 64, 128, 128, stages=4),
    kernel("sm90", FORWARD, "fp16", 128, 128, 128, stages=2),
    kernel("sm90", FORWARD, "fp16", 256, 128, 64, stages=2),
    kernel("sm90", BACKWARD, "bf16", 64, 64, 128),
    kernel("sm90", BACKWARD, "bf16", 128, 64, 128),
    kernel("sm90", BACKWARD, "fp16", 64, 64, 128),
    kernel("sm90", BACKWARD, "fp16", 128, 64, 128),
    kernel("sm80", FORWARD, "bf16", 32, 128, 64, warps=4, stages=2, prefetch="s+pv"),
    kernel("sm80", FORWARD, "bf16", 64, 128, 64, warps=4, stages=2, prefetch="s+pv"),
    kernel("sm80", FORWARD, "bf16", 128, 128, 64, warps=4, stages=1, prefetch="s+pv"),
    kernel("sm80", FORWARD, "bf16", 256, 64, 16, warps=4, stages=2, prefetch="s"),
    kernel("sm80", FORWARD, "fp16", 32, 128, 64, warps=4, stages=2, prefetch="s+pv"),
    kernel("sm80", FORWARD, "fp16", 64, 128, 64, warps=4, stages=2, prefetch="s+pv"),
    kernel("sm80", FORWARD, "fp16", 128, 128, 64, warps=4, stages=1, prefetch="s+pv"),
    kernel("sm80", FORWARD, "fp16", 256, 64, 16, warps=4, stages=2, prefetch="s"),
    kernel("sm80", BACKWARD, "bf16", 32, 64, 64, warps=4, warps_m_sdp=2, warps_m_dkv=4),
    kernel("sm80", BACKWARD, "bf16", 64, 64, 64, warps=4, warps_m_sdp=2, warps_m_dkv=4),
    kernel("sm80", BACKWARD, "bf16", 128, 64, 64, warps=8, warps_m_sdp=2, warps_m_dkv=4),
    kernel("sm80", BACKWARD, "fp16", 32, 64, 64, warps=4, warps_m_sdp=2, warps_m_dkv=4),
    kernel("sm80", BACKWARD, "fp16", 64, 64, 64, warps=4, warps_m_sdp=2, warps_m_dkv=4),
    kernel("sm80", BACKWARD, "fp16", 128, 64, 64, warps=8, warps_m_sdp=2, warps_m_dkv=4),
    kernel("halo", FORWARD, "bf16", 32, 64, 64, ring=8),
    kernel("halo", FORWARD, "bf16", 64, 64, 64, ring=4),
    kernel("halo", FORWARD, "bf16", 128, 64, 64, ring=2),
    kernel("halo", FORWARD, "fp16", 32, 64, 64, ring=8),
    kernel("halo", FORWARD, "fp16", 64, 64, 64, ring=4),
    kernel("halo", FORWARD, "fp16", 128, 64, 64, ring=2),
    kernel("halo", BACKWARD, "bf16", 32, 64, 64, ring=8),
    kernel("halo", BACKWARD, "bf16", 64, 64, 64, ring=4),
    kernel("halo", BACKWARD, "fp16", 32, 64, 64, ring=8),
    kernel("halo", BACKWARD, "fp16", 64, 64, 64, ring=4),
)


def kernels_of(family: str, direction: str | None = None) -> tuple[Kernel, ...]:
    return tuple(k for k in KERNELS if k.family == family
                 and (direction is None or k.direction == direction))


def validate(template_params: dict[tuple[str, str], tuple[str, ...]] | None = None) -> None:
    """Raise ValueError if the manifest is inconsistent. ``template_params``: the parameter
    names each (family, direction) template takes (the generator passes its own)."""
    seen = set()
    for k in KERNELS:
        where = f"kernel manifest line {k}"
        if k.family not in FAMILIES:
            raise ValueError(f"{where}: unknown family {k.family!r}")
        if k.direction not in (FORWARD, BACKWARD) or k.dtype not in DTYPES:
            raise ValueError(f"{where}: direction must be fwd/bwd and dtype one of {DTYPES}")
        for tokens in (k.q_tile_tokens, k.kv_tile_tokens):
            # Tile boxes have power-of-two sides (jax_gna.tiles), so token counts must be too.
            if tokens < 1 or tokens & (tokens - 1):
                raise ValueError(f"{where}: tile token counts must be powers of two")
        key = (k.family, k.direction, k.dtype, k.head_dim)
        if key in seen:
            raise ValueError(f"{where}: duplicate of an earlier line (the registry keeps one "
                             f"kernel per family, direction, dtype and head dim)")
        seen.add(key)
        if template_params is not None:
            names = template_params.get((k.family, k.direction))
            if names is None:
                raise ValueError(f"{where}: no template for {k.family} {k.direction} in "
                                 f"xla_ffi/generate_kernels.py TEMPLATES")
            if tuple(sorted(dict(k.params))) != tuple(sorted(names)):
                raise ValueError(f"{where}: params {sorted(dict(k.params))} but the "
                                 f"{k.family} {k.direction} template takes {sorted(names)}")
