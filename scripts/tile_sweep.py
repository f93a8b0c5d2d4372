"""Measure the forward kernel on the top tile candidates of the simulator's ranking.

    python scripts/tile_sweep.py --case hunyuan --stride 1 1 1 [--backend sm90] [--top 8]

For one suite case (bf16, head dim 128) it ranks (Q box, KV box) pairs with
``jax_gna.simulator.best_tiles`` (the candidates the lowering would consider for this kernel),
times the best ``--top`` of them through ``jax_gna.attention(q_tile=..., kv_tile=...)`` and
prints predicted vs measured, so the tile objective can be checked against the hardware.
Timing: ``jax_gna._timing.time_function`` (warm-up, rotating inputs, median of groups).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jax_gna  # noqa: E402
from jax_gna import _timing, backends  # noqa: E402
from jax_gna.simulator.search import best_tiles, default_candidates  # noqa: E402
from jax_gna.simulator.suite import get_suite  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True)
    ap.add_argument("--stride", type=int, nargs="+", required=True)
    ap.add_argument("--backend", default="sm90")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)

    case = get_suite(False, [a.case])[0]
    shape, window, stride = case.shape, case.kernel_size, tuple(a.stride)
    sds = jax.ShapeDtypeStruct((1, *shape, case.heads, case.head_dim), jnp.bfloat16)
    kcase = backends.case_for(sds, sds, sds, window, stride, backend=a.backend)
    config = kcase.config
    q_tokens, kv_tokens = backends.kernel_tiles(a.backend, kcase, backends.FORWARD)
    sides = backends.kernel_family(a.backend).max_tile_sides(config)
    fits = lambda box: all(t <= m for t, m in zip(box, sides))  # noqa: E731
    cands = [(q, kv) for q, kv in default_candidates(shape, q_tokens, kv_tokens)
             if fits(q) and fits(kv)]
    ranking = best_tiles(shape, window, stride, candidates=cands, q_tokens=q_tokens,
                         kv_tokens=kv_tokens,
                         boundary_cost=backends.kernel_family(a.backend).boundary_tile_cost)

    keys = jax.random.split(jax.random.PRNGKey(0), 9)
    sets = [tuple(jax.random.normal(keys[3 * i + j], sds.shape, jnp.bfloat16)
                  for j in range(3)) for i in range(3)]
    print(f"# {a.case} {shape} window {window} stride {stride}, {a.backend}: "
          f"{len(cands)} candidates, timing the top {a.top}")
    print(f"{'q_tile':>10} {'kv_tile':>10} {'tile-work':>9} {'mean-tile':>9} {'worst':>7} "
          f"{'boundary':>8} {'ms':>8}")
    for r in ranking.ranked[:a.top]:
        fn = jax.jit(lambda q, k, v, qt=tuple(r.q_tile), kt=tuple(r.kv_tile):
                     jax_gna.attention(q, k, v, window, stride, backend=a.backend,
                                       q_tile=qt, kv_tile=kt))
        t = _timing.time_function(fn, sets, warmup=2, repeats=a.repeats)
        print(f"{'x'.join(map(str, r.q_tile)):>10} {'x'.join(map(str, r.kv_tile)):>10} "
              f"{r.tile_work_speedup:9.3f} {r.mean_tile_speedup:9.3f} {r.worst_tile_speedup:7.3f} "
              f"{r.boundary_tile_fraction:8.3f} {t.median_s * 1e3:8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
