"""The benchmark suite of docs/semantics.md as data, shared by the simulator CLI and benchmarks/.

Each case has the paper's tiles (Q / KV). The paper gives none for cosmos: it keeps the
paper's Hopper tile volumes (256 query / 128 key tokens) and takes the winner of
``best_tiles(..., stride=1, q_tokens=256, kv_tokens=128)``, Q 16x4x4 / KV 8x4x4; it is also
perfectly block-sparse at stride 1x8x16, where it reaches the FLOP bound (9.17x), so one
kernel tile serves both strides (and its 4-row Q tiles do not pad the 44 rows).

``tiny`` variants scale every case down (shape, window, strides, tiles) so the whole suite
runs through the jnp reference on a CPU in seconds; they keep each case's flavour
(stride 1, partial strides, blocked) but not its numbers.
"""

from __future__ import annotations

import dataclasses

__all__ = ["SuiteCase", "SUITE", "TINY_SUITE", "get_suite"]


@dataclasses.dataclass(frozen=True)
class SuiteCase:
    name: str
    shape: tuple[int, ...]
    heads: int
    kernel_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    q_tile: tuple[int, ...]
    kv_tile: tuple[int, ...]
    head_dim: int = 128
    batch: int = 1

    @property
    def num_tokens(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


SUITE: tuple[SuiteCase, ...] = (
    SuiteCase("flux", (256, 256), 24, (80, 80), ((1, 1), (16, 1), (16, 16)),
              (16, 16), (16, 8)),
    SuiteCase("hunyuan", (30, 48, 80), 24, (18, 24, 24),
              ((1, 1, 1), (2, 8, 8), (16, 8, 8)), (4, 8, 8), (2, 8, 8)),
    SuiteCase("hunyuan58", (30, 48, 80), 24, (30, 40, 40), ((1, 1, 1), (1, 32, 8)),
              (4, 8, 8), (2, 8, 8)),
    SuiteCase("cosmos", (16, 44, 80), 32, (16, 24, 16), ((1, 1, 1), (1, 8, 16)),
              (16, 4, 4), (8, 4, 4)),
    SuiteCase("seq32k", (32768,), 24, (2048,), ((1,), (256,), (2048,)), (128,), (128,)),
    # Not a GNA workload: the dense-equivalent check (window = whole grid, i.e. self
    # attention through the GNA kernel), compared with cuDNN on the same tokens.
    SuiteCase("dense32k", (32768,), 24, (32768,), ((1,),), (128,), (128,)),
)

# Scaled-down twins for CPU runs and tests (same names, so tables line up).
TINY_SUITE: tuple[SuiteCase, ...] = (
    SuiteCase("flux", (32, 32), 2, (10, 10), ((1, 1), (2, 1), (2, 2)), (4, 4), (4, 2),
              head_dim=32),
    SuiteCase("hunyuan", (8, 12, 16), 2, (4, 6, 6), ((1, 1, 1), (2, 2, 2), (4, 2, 2)),
              (2, 2, 2), (1, 2, 2), head_dim=32),
    SuiteCase("hunyuan58", (8, 12, 16), 2, (8, 10, 10), ((1, 1, 1), (1, 8, 2)),
              (2, 2, 2), (1, 2, 2), head_dim=32),
    SuiteCase("cosmos", (4, 11, 20), 2, (4, 6, 4), ((1, 1, 1), (1, 2, 4)), (4, 2, 2),
              (4, 2, 1), head_dim=32),
    SuiteCase("seq32k", (1024,), 2, (64,), ((1,), (8,), (64,)), (16,), (16,), head_dim=32),
    SuiteCase("dense32k", (1024,), 2, (1024,), ((1,),), (16,), (16,), head_dim=32),
)


def get_suite(tiny: bool = False, names=None) -> tuple[SuiteCase, ...]:
    """The suite (or its tiny twin), optionally restricted to the named cases."""
    suite = TINY_SUITE if tiny else SUITE
    if not names:
        return suite
    known = {c.name for c in suite}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown suite case(s) {unknown}; known: {sorted(known)}")
    return tuple(c for c in suite if c.name in names)
