"""The benchmark suite of docs/semantics.md as data, shared by the simulator CLI and benchmarks/.

Each case has the paper's tiles (Q / KV). The paper gives none for cosmos: it keeps the
paper's Hopper tile volumes (256 query / 128 key tokens) and takes the winner of
``best_tiles(..., stride=1, q_tokens=256, kv_tokens=128)``, Q 16x4x4 / KV 8x4x4; it is also
perfectly block-sparse at stride 1x8x16, where it reaches the FLOP bound (9.17x), so one
kernel tile serves both strides (and its 4-row Q tiles do not pad the 44 rows).

``tiny`` variants scale every case down (shape, window, strides, tiles) so the whole suite
runs through the jnp reference on a CPU in seconds; they keep each case's flavour
(stride 1, partial strides, blocked) but not its numbers.

``SMALL_WINDOW_SUITE`` (``get_suite(regime="small")``) is the small-window regime of vision
backbones and hourglass diffusion models: windows of 3-13 per dim on grids of 14x14 to
128x128 (and short videos), batches of 16-128, head dims 32 and 64, dilation up to grid /
window, stride 1. Each call does little arithmetic per byte of its tensors, so these rows
are read for their achieved bandwidth (``jax_gna.profile.bytes_moved``). Its tiles are the
winners of ``best_tiles(..., q_tokens=128, kv_tokens=64)`` (the sm80 forward's token counts
for head dims 32 and 64); the tiny twins' are those of ``q_tokens=32, kv_tokens=16``.
"""

from __future__ import annotations

import dataclasses

from jax_gna import semantics

__all__ = ["SuiteCase", "SUITE", "TINY_SUITE", "SMALL_WINDOW_SUITE",
           "TINY_SMALL_WINDOW_SUITE", "REGIMES", "get_suite"]


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
    dilation: int | tuple[int, ...] = 1          # one value or one per dim
    is_causal: bool | tuple[bool, ...] = False   # one value or one per dim

    @property
    def num_tokens(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def params(self, stride=1):
        """The case's ``semantics.GNAParams`` at ``stride`` (per-dim tuples, validated)."""
        return semantics.make_params(self.shape, self.kernel_size, stride, self.dilation,
                                     self.is_causal)


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


# The small-window regime: stride 1, bf16 on a GPU; batch, heads and head dim per case.
SMALL_WINDOW_SUITE: tuple[SuiteCase, ...] = (
    # NAT-Tiny stage 1 (224x224 images, 4x4 patches).
    SuiteCase("nat56", (56, 56), 2, (7, 7), ((1, 1),), (2, 64), (1, 64), head_dim=32,
              batch=64),
    # A 28x28 stage with 8 heads of dim 64: the shape compared with cuDNN dense.
    SuiteCase("nat28", (28, 28), 8, (7, 7), ((1, 1),), (4, 32), (2, 32), head_dim=64,
              batch=64),
    # DiNAT stage 1: the dilated window spans 28 of the 56 rows and columns.
    SuiteCase("dinat56", (56, 56), 4, (7, 7), ((1, 1),), (8, 16), (4, 16), head_dim=32,
              batch=64, dilation=4),
    # DiNAT at 14x14: dilation 2 spans the whole grid.
    SuiteCase("dinat14", (14, 14), 16, (7, 7), ((1, 1),), (8, 16), (8, 8), head_dim=64,
              batch=128, dilation=2),
    # An hourglass diffusion transformer's high-resolution level (HDiT: 13x13 windows).
    SuiteCase("hdit128", (128, 128), 4, (13, 13), ((1, 1),), (8, 16), (8, 8), head_dim=64,
              batch=16),
    # Video, frames x height x width.
    SuiteCase("video16", (16, 28, 28), 4, (3, 7, 7), ((1, 1, 1),), (1, 4, 32), (1, 2, 32),
              head_dim=64, batch=16),
    SuiteCase("video8dil", (8, 14, 14), 8, (3, 3, 3), ((1, 1, 1),), (2, 8, 8), (1, 8, 8),
              head_dim=32, batch=32, dilation=(1, 2, 2)),
    # Causal in time: each frame attends to itself and the two before it.
    SuiteCase("video16causal", (16, 28, 28), 4, (3, 7, 7), ((1, 1, 1),), (2, 2, 32),
              (2, 1, 32), head_dim=64, batch=16, is_causal=(True, False, False)),
)

# Scaled-down twins (same names, dilation and causality; about 1k tokens per batch entry,
# batch 2, 2 heads of dim 32).
TINY_SMALL_WINDOW_SUITE: tuple[SuiteCase, ...] = (
    SuiteCase("nat56", (28, 28), 2, (7, 7), ((1, 1),), (4, 8), (4, 4), head_dim=32, batch=2),
    SuiteCase("nat28", (14, 14), 2, (7, 7), ((1, 1),), (2, 16), (1, 16), head_dim=32,
              batch=2),
    SuiteCase("dinat56", (28, 28), 2, (7, 7), ((1, 1),), (4, 8), (2, 8), head_dim=32,
              batch=2, dilation=4),
    SuiteCase("dinat14", (14, 14), 2, (7, 7), ((1, 1),), (4, 8), (4, 4), head_dim=32,
              batch=2, dilation=2),
    SuiteCase("hdit128", (32, 32), 2, (13, 13), ((1, 1),), (4, 8), (2, 8), head_dim=32,
              batch=2),
    SuiteCase("video16", (4, 14, 14), 2, (3, 7, 7), ((1, 1, 1),), (4, 2, 4), (4, 1, 4),
              head_dim=32, batch=2),
    SuiteCase("video8dil", (4, 8, 8), 2, (3, 3, 3), ((1, 1, 1),), (2, 4, 4), (1, 4, 4),
              head_dim=32, batch=2, dilation=(1, 2, 2)),
    SuiteCase("video16causal", (4, 14, 14), 2, (3, 7, 7), ((1, 1, 1),), (1, 2, 16),
              (1, 1, 16), head_dim=32, batch=2, is_causal=(True, False, False)),
)

# regime -> (suite, tiny twin)
REGIMES = {"default": (SUITE, TINY_SUITE),
           "small": (SMALL_WINDOW_SUITE, TINY_SMALL_WINDOW_SUITE)}


def get_suite(tiny: bool = False, names=None, regime: str = "default"
              ) -> tuple[SuiteCase, ...]:
    """The suite of ``regime`` ("default": the GNA workloads above; "small": the
    small-window regime) or its tiny twin, optionally restricted to the named cases."""
    if regime not in REGIMES:
        raise ValueError(f"unknown suite {regime!r}; known: {sorted(REGIMES)}")
    suite = REGIMES[regime][1 if tiny else 0]
    if not names:
        return suite
    known = {c.name for c in suite}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown suite case(s) {unknown}; known: {sorted(known)}")
    return tuple(c for c in suite if c.name in names)
