"""``python -m jax_gna.simulator``: the simulator from the command line.

Examples::

    python -m jax_gna.simulator --shape 30 48 80 --window 18 24 24 --stride 16 8 8 \\
        --q-tile 4 8 8 --kv-tile 2 8 8
    python -m jax_gna.simulator --shape 256 256 --window 80 80 --json
    python -m jax_gna.simulator --shape 16 44 80 --window 16 24 16 --best --q-tokens 256 \\
        --kv-tokens 128
    python -m jax_gna.simulator --suite            # every case/stride of the benchmark suite
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from jax_gna.simulator.core import SimulationResult, simulate
from jax_gna.simulator.search import OBJECTIVES, best_tiles
from jax_gna.simulator.suite import get_suite

__all__ = ["main", "build_parser", "format_result", "suite_rows", "format_rows"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jax_gna.simulator",
        description="Tile simulator for Generalized Neighborhood Attention: KV tiles per Q "
                    "tile and speedup bounds over self attention.")
    p.add_argument("--shape", type=int, nargs="+", help="spatial shape, e.g. 30 48 80")
    p.add_argument("--window", "--kernel-size", dest="window", type=int, nargs="+",
                   help="kernel size per dim (one value: all dims)")
    p.add_argument("--stride", type=int, nargs="+", default=[1])
    p.add_argument("--dilation", type=int, nargs="+", default=[1])
    p.add_argument("--causal", type=int, nargs="+", default=[0], choices=[0, 1],
                   help="0/1 per dim")
    p.add_argument("--q-tile", type=int, nargs="+",
                   help="Q tile per dim (default: the paper's tile for the rank)")
    p.add_argument("--kv-tile", type=int, nargs="+", help="KV tile per dim")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--arrays", action="store_true",
                   help="with --json: include per-Q-tile visited/interior/boundary arrays")
    p.add_argument("--plot", metavar="PNG",
                   help="write the neighborhood + heat-map figure (needs matplotlib: the "
                        "'plot' extra)")
    p.add_argument("--query", type=int, nargs="+",
                   help="query coordinate for --plot (default: the centre)")
    p.add_argument("--best", action="store_true",
                   help="rank default candidate tiles (power-of-two boxes) and use the best")
    p.add_argument("--q-tokens", type=int, default=128, help="--best: tokens per Q tile")
    p.add_argument("--kv-tokens", type=int, nargs="+", default=[128, 64],
                   help="--best: tokens per KV tile (several allowed)")
    p.add_argument("--objective", choices=OBJECTIVES, default=OBJECTIVES[0])
    p.add_argument("--top", type=int, default=10, help="--best: rows of the ranking shown")
    p.add_argument("--suite", action="store_true",
                   help="simulate every case and stride of the benchmark suite "
                        "(docs/semantics.md)")
    p.add_argument("--tiny", action="store_true", help="--suite: the scaled-down twins")
    return p


def _per_dim(values: Sequence[int] | None, rank: int, name: str, parser) -> tuple | None:
    if values is None:
        return None
    if len(values) == 1:
        return tuple(values) * rank
    if len(values) != rank:
        parser.error(f"--{name} needs 1 or {rank} values; got {len(values)}")
    return tuple(values)


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (tuple, list)):
        return "x".join(str(int(v)) for v in x)
    return str(x)


def format_result(r: SimulationResult) -> str:
    """Readable two-column table of one simulation."""
    rows = [
        ("shape", r.shape), ("kernel_size", r.kernel_size), ("stride", r.stride),
        ("dilation", r.dilation), ("is_causal", tuple(int(c) for c in r.is_causal)),
        ("q_tile", r.q_tile), ("kv_tile", r.kv_tile),
        ("Q tiles (grid)", f"{r.num_q_tiles} ({_fmt(r.q_tile_grid)})"),
        ("self-attention KV tiles", r.self_attention_kv_tiles),
        ("KV tiles visited: max / mean", f"{r.max_visited} / {r.mean_visited:.2f}"),
        ("flop_speedup", r.flop_speedup),
        ("  (simple bound N/prod(k))", r.simple_flop_bound),
        ("worst_tile_speedup", r.worst_tile_speedup),
        ("mean_tile_speedup", r.mean_tile_speedup),
        ("tile_work_speedup", r.tile_work_speedup),
        ("boundary_tile_fraction", r.boundary_tile_fraction),
        ("perfectly_block_sparse", r.perfectly_block_sparse),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)


def suite_rows(tiny: bool = False) -> list[dict]:
    """One row per (case, stride) of the suite, with that case's tiles."""
    rows = []
    for case in get_suite(tiny):
        for stride in case.strides:
            r = simulate(case.shape, case.kernel_size, stride, case.dilation, case.is_causal,
                         q_tile=case.q_tile, kv_tile=case.kv_tile)
            rows.append({"case": case.name, **r.to_dict()})
    return rows


def format_rows(rows: list[dict], columns: Sequence[str]) -> str:
    """Markdown table of dict rows."""
    head = "| " + " | ".join(columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


_SUITE_COLUMNS = ("case", "shape", "kernel_size", "stride", "q_tile", "kv_tile",
                  "flop_speedup", "worst_tile_speedup", "mean_tile_speedup",
                  "boundary_tile_fraction", "perfectly_block_sparse")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.suite:
        rows = suite_rows(args.tiny)
        print(json.dumps(rows, indent=1) if args.json else format_rows(rows, _SUITE_COLUMNS))
        return 0

    if not args.shape or not args.window:
        parser.error("--shape and --window are required (or use --suite)")
    rank = len(args.shape)
    window = _per_dim(args.window, rank, "window", parser)
    stride = _per_dim(args.stride, rank, "stride", parser)
    dilation = _per_dim(args.dilation, rank, "dilation", parser)
    causal = tuple(bool(c) for c in _per_dim(args.causal, rank, "causal", parser))
    q_tile = _per_dim(args.q_tile, rank, "q-tile", parser)
    kv_tile = _per_dim(args.kv_tile, rank, "kv-tile", parser)
    query = _per_dim(args.query, rank, "query", parser)

    try:
        ranking = None
        if args.best:
            ranking = best_tiles(args.shape, window, stride, dilation, causal,
                                 objective=args.objective, q_tokens=args.q_tokens,
                                 kv_tokens=args.kv_tokens)
            result = ranking.best
        else:
            result = simulate(args.shape, window, stride, dilation, causal, q_tile, kv_tile)
        if args.plot:
            from jax_gna.simulator.plot import plot_simulation
            plot_simulation(result, args.plot, query)
    except (ValueError, TypeError) as e:   # bad parameters: say so, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:       # --plot without matplotlib: the install hint
        print(f"error: {e}", file=sys.stderr)
        return 1

    if args.json:
        out = result.to_dict(arrays=args.arrays)
        if ranking is not None:
            out["ranking"] = ranking.table()[:args.top]
            out["objective"] = args.objective
        if args.plot:
            out["plot"] = args.plot
        print(json.dumps(out))
        return 0

    print(format_result(result))
    if ranking is not None:
        print(f"\nbest of {len(ranking.ranked)} candidates by {args.objective} "
              f"(Q {args.q_tokens} tokens, KV {args.kv_tokens} tokens):")
        print(format_rows(ranking.table()[:args.top],
                          ("q_tile", "kv_tile", "mean_tile_speedup", "worst_tile_speedup",
                           "boundary_tile_fraction", "perfectly_block_sparse")))
    if args.plot:
        print(f"\nplot written to {args.plot}")
    return 0
