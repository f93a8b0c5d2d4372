"""The tile simulator (jax_gna.simulator): paper figures, hand counts, brute force against
the dense neighborhood mask, tile search and the command line. Pure numpy; seconds on CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jax_gna import semantics
from jax_gna.simulator import (best_tiles, box_visited, default_candidates,
                               power_of_two_boxes, simulate)
from jax_gna.simulator.cli import main as cli_main
from jax_gna.simulator.suite import SUITE, TINY_SUITE

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("flop_speedup", "worst_tile_speedup", "mean_tile_speedup", "tile_work_speedup",
           "boundary_tile_fraction", "perfectly_block_sparse")

HUNYUAN = dict(shape=(30, 48, 80), kernel_size=(18, 24, 24), q_tile=(4, 8, 8),
               kv_tile=(2, 8, 8))
FLUX = dict(shape=(256, 256), kernel_size=(80, 80), q_tile=(16, 16), kv_tile=(16, 8))


# ----------------------------------------------------------------------------------------
# The GNA paper's figures (arXiv 2504.16922)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, stride, worst, max_visited, sa_tiles", [
    (HUNYUAN, (1, 1, 1), 3.27, 275, 900),
    (HUNYUAN, (16, 8, 8), 11.11, 81, 900),
    (FLUX, (1, 1), 6.095, 84, 512),
    (FLUX, (16, 16), 10.24, 50, 512),
])
def test_paper_worst_tile_figures(case, stride, worst, max_visited, sa_tiles):
    r = simulate(case["shape"], case["kernel_size"], stride, q_tile=case["q_tile"],
                 kv_tile=case["kv_tile"])
    assert r.max_visited == max_visited
    assert r.self_attention_kv_tiles == sa_tiles
    assert r.worst_tile_speedup == pytest.approx(worst, abs=0.005)


def test_paper_block_sparse_cases_reach_the_flop_bound():
    for case, stride in ((HUNYUAN, (16, 8, 8)), (FLUX, (16, 16))):
        r = simulate(case["shape"], case["kernel_size"], stride, q_tile=case["q_tile"],
                     kv_tile=case["kv_tile"])
        assert r.perfectly_block_sparse and r.boundary_tile_fraction == 0
        assert r.worst_tile_speedup == pytest.approx(r.flop_speedup)
        assert r.mean_tile_speedup == pytest.approx(r.flop_speedup)
    # Stride 1 needs element masks on most tiles.
    r = simulate(FLUX["shape"], FLUX["kernel_size"], 1, q_tile=FLUX["q_tile"],
                 kv_tile=FLUX["kv_tile"])
    assert not r.perfectly_block_sparse and 0 < r.boundary_tile_fraction < 1
    assert r.flop_speedup == pytest.approx(65536 / 6400)   # N / prod(k), no causal


def test_default_tiles_are_the_papers():
    r = simulate(HUNYUAN["shape"], HUNYUAN["kernel_size"], (16, 8, 8))
    assert (r.q_tile, r.kv_tile) == (HUNYUAN["q_tile"], HUNYUAN["kv_tile"])
    assert round(r.worst_tile_speedup, 2) == 11.11


def test_large_3d_problem_is_fast():
    t0 = time.perf_counter()
    r = simulate((64, 96, 160), (18, 24, 24), 1, q_tile=(1, 8, 8), kv_tile=(1, 8, 8))
    assert r.num_q_tiles == 64 * 12 * 20
    assert time.perf_counter() - t0 < 2.0


# ----------------------------------------------------------------------------------------
# Hand-counted small cases (windows from docs/semantics.md's worked examples, L=10, k=5)
# ----------------------------------------------------------------------------------------


def test_hand_counted_1d_non_causal():
    # Windows: q0-2 [0,5) q3 [1,6) q4 [2,7) q5 [3,8) q6 [4,9) q7-9 [5,10).
    # Q tiles of 4: {0-3} spans [0,6) -> KV tiles (of 2) 0..2, interior only [2,4);
    # {4-7} spans [2,10) -> tiles 1..4, none interior; {8,9} spans [5,10) -> 2..4,
    # interior [6,8) and [8,10).
    r = simulate((10,), 5, 1, q_tile=4, kv_tile=2)
    assert r.visited.tolist() == [3, 4, 3]
    assert r.interior.tolist() == [1, 0, 2]
    assert r.boundary.tolist() == [2, 4, 1]
    assert r.self_attention_kv_tiles == 5 and r.self_attention_q_tiles == 3
    assert r.worst_tile_speedup == pytest.approx(5 / 4)
    assert r.mean_tile_speedup == pytest.approx(3 * 5 / 10)
    assert r.boundary_tile_fraction == pytest.approx(7 / 10)
    assert r.flop_speedup == pytest.approx(100 / 50)
    assert not r.perfectly_block_sparse


def test_hand_counted_1d_causal_strided():
    # s=4 causal: q0 [0,1) q1 [0,2) q2 [0,3) q3 [0,4) q4 [3,5) q5 [3,6) q6 [3,7) q7 [3,8)
    # q8 [5,9) q9 [5,10): 33 pairs. Q/KV tiles of 4: visited 1, 2, 2 (the last partial),
    # none interior (causal ends differ inside every tile).
    r = simulate((10,), 5, 4, is_causal=True, q_tile=4, kv_tile=4)
    assert r.attended_pairs == 33
    assert r.flop_speedup == pytest.approx(100 / 33)
    assert r.visited.tolist() == [1, 2, 2]
    assert r.interior.tolist() == [0, 0, 0]
    assert r.worst_tile_speedup == pytest.approx(3 / 2)
    assert r.mean_tile_speedup == pytest.approx(9 / 5)
    assert r.boundary_tile_fraction == 1.0


def test_hand_counted_2d_is_the_product_of_the_1d_cases():
    r = simulate((10, 10), (5, 5), (1, 4), is_causal=(False, True), q_tile=(4, 4),
                 kv_tile=(2, 4))
    assert r.visited.tolist() == np.outer([3, 4, 3], [1, 2, 2]).tolist()
    assert r.total_boundary == r.total_visited            # dim 1 has no interior tile
    assert r.worst_tile_speedup == pytest.approx(15 / 8)
    assert r.mean_tile_speedup == pytest.approx(9 * 15 / 50)
    assert r.flop_speedup == pytest.approx(10000 / (50 * 33))


def test_self_attention_and_blocked_attention():
    r = simulate((12, 16), (12, 16), 1, q_tile=(4, 4), kv_tile=(4, 8))
    assert r.flop_speedup == 1.0 and r.worst_tile_speedup == 1.0
    assert r.perfectly_block_sparse
    # Blocked attention with tiles dividing the blocks: block-sparse, bound = blocks.
    r = simulate((32,), 8, 8, q_tile=4, kv_tile=4)
    assert r.perfectly_block_sparse
    assert r.worst_tile_speedup == pytest.approx(4.0) == r.flop_speedup


def test_dilation_counts_partial_q_tiles_in_the_mean():
    # d=3 over L=64: groups of 22, 21, 21 tokens, tiled separately -> 3 Q tiles per group.
    r = simulate((64,), 9, 1, 3, True, q_tile=8, kv_tile=8)
    assert r.num_q_tiles == 9 and r.self_attention_q_tiles == 8
    assert r.mean_tile_speedup == pytest.approx(8 * 8 / r.total_visited)


# ----------------------------------------------------------------------------------------
# Brute force against the dense mask (semantics.neighborhood_mask)
# ----------------------------------------------------------------------------------------


def _tile_ids_1d(length: int, dilation: int, tile: int) -> np.ndarray:
    """Per coordinate: index of its tile along the dim, tiles counted group by group
    (groups in order), each group's group-local coordinates cut into chunks of ``tile``."""
    ids = np.empty(length, np.int64)
    base = 0
    for g in range(dilation):
        coords = np.arange(g, length, dilation)          # the group's tokens, in order
        ids[coords] = base + np.arange(coords.size) // tile
        base += -(-coords.size // tile)
    return ids


def _token_tiles(shape, dilation, tile):
    """Flat n-D tile id of every token (row-major) and the per-dim tile counts."""
    per_dim = [_tile_ids_1d(n, d, t) for n, d, t in zip(shape, dilation, tile)]
    counts = tuple(int(ids.max()) + 1 for ids in per_dim)
    grids = np.meshgrid(*per_dim, indexing="ij")
    return np.ravel_multi_index([g.ravel() for g in grids], counts), counts


def _brute_force(shape, params, q_tile, kv_tile):
    mask = semantics.neighborhood_mask(shape, params).astype(np.int64)
    q_ids, q_counts = _token_tiles(shape, params.dilation, q_tile)
    kv_ids, kv_counts = _token_tiles(shape, params.dilation, kv_tile)
    onehot_q = np.eye(math.prod(q_counts), dtype=np.int64)[q_ids]      # [N, Q tiles]
    onehot_kv = np.eye(math.prod(kv_counts), dtype=np.int64)[kv_ids]   # [N, KV tiles]
    pairs = onehot_q.T @ mask @ onehot_kv             # attended pairs per tile pair
    q_size, kv_size = onehot_q.sum(0), onehot_kv.sum(0)
    return mask, pairs, q_size, kv_size, q_counts, kv_counts


@st.composite
def problems(draw):
    rank = draw(st.integers(1, 3))
    max_len = {1: 40, 2: 14, 3: 7}[rank]
    shape, ks, ss, ds, cs, qt, kt = [], [], [], [], [], [], []
    for _ in range(rank):
        n = draw(st.integers(2, max_len))
        d = draw(st.integers(1, max(1, n // 2)))
        k = draw(st.integers(2, n // d))
        shape.append(n)
        ds.append(d)
        ks.append(k)
        ss.append(draw(st.integers(1, k)))
        cs.append(draw(st.booleans()))
        qt.append(draw(st.integers(1, 6)))
        kt.append(draw(st.integers(1, 6)))
    return tuple(shape), tuple(ks), tuple(ss), tuple(ds), tuple(cs), tuple(qt), tuple(kt)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_tile_classification_matches_dense_mask(problem):
    shape, ks, ss, ds, cs, q_tile, kv_tile = problem
    params = semantics.make_params(shape, ks, ss, ds, cs)
    r = simulate(shape, ks, ss, ds, cs, q_tile, kv_tile)
    mask, pairs, q_size, kv_size, q_counts, kv_counts = _brute_force(shape, params, q_tile,
                                                                     kv_tile)
    assert r.q_tile_grid == q_counts
    assert r.attended_pairs == mask.sum()
    assert r.flop_speedup == pytest.approx(mask.size / mask.sum())

    visited = np.zeros_like(pairs, bool)
    interior = np.zeros_like(pairs, bool)
    for qi, q_index in enumerate(np.ndindex(*q_counts)):
        idx, inner = r.visited_kv_tiles(q_index)
        flat = np.ravel_multi_index(idx.T, kv_counts)
        assert len(set(flat.tolist())) == len(flat)
        visited[qi, flat] = True
        interior[qi, flat] = inner
        assert len(flat) == r.visited[q_index]
        assert inner.sum() == r.interior[q_index]

    full_tile = np.broadcast_to(kv_size[None, :] == math.prod(kv_tile), pairs.shape)
    fully_attended = pairs == q_size[:, None] * kv_size[None, :]
    # (a) every attended pair lies in a visited tile
    assert not np.any((pairs > 0) & ~visited)
    # (e) the visited box is tight: every visited tile holds an attended pair
    assert np.all(pairs[visited] > 0)
    # (b) interior tiles are full and fully attended
    assert np.all(fully_attended[interior] & full_tile[interior])
    # (c) boundary tiles are partial or not fully attended; (d) so the split is exact
    boundary = visited & ~interior
    assert np.all(~fully_attended[boundary] | ~full_tile[boundary])
    assert r.total_boundary == boundary.sum()
    assert r.boundary_tile_fraction == pytest.approx(boundary.sum() / visited.sum())
    assert r.perfectly_block_sparse == (boundary.sum() == 0)


def test_tile_coordinates_and_q_tile_lookup_agree():
    r = simulate((13, 9), (4, 3), (2, 1), (3, 2), (False, True), q_tile=(2, 3),
                 kv_tile=(3, 2))
    for query in [(0, 0), (5, 4), (12, 8), (7, 1)]:
        q_index = r.q_tile_of(query)
        for axis, t in enumerate(q_index):
            assert query[axis] in r.tile_coordinates(axis, t, "q").tolist()
    with pytest.raises(ValueError, match="outside"):
        r.q_tile_of((13, 0))


# ----------------------------------------------------------------------------------------
# Tile search
# ----------------------------------------------------------------------------------------


def test_power_of_two_boxes():
    boxes = power_of_two_boxes(128, (30, 48, 80))
    assert boxes and all(math.prod(b) == 128 for b in boxes)
    assert all(s & (s - 1) == 0 for b in boxes for s in b)
    assert all(b[0] <= 32 for b in boxes)            # no side beyond next pow2 of 30
    assert len(boxes) == len(set(boxes))
    assert power_of_two_boxes(64, (4,)) == [(64,)]    # nothing fits: allow overhang
    with pytest.raises(ValueError):
        power_of_two_boxes(96, (30,))
    cands = default_candidates((16, 16), 128, (128, 64))
    assert ((16, 8), (8, 8)) in cands and ((8, 16), (16, 8)) in cands


def test_best_tiles_ranks_by_objective():
    cands = [((4, 8, 8), (2, 8, 8)), ((1, 16, 16), (1, 16, 16)), ((2, 8, 16), (2, 8, 8))]
    ranking = best_tiles((30, 48, 80), (18, 24, 24), (16, 8, 8), candidates=cands,
                         objective="worst_tile_speedup")
    worst = [r.worst_tile_speedup for r in ranking.ranked]
    assert worst == sorted(worst, reverse=True)
    assert ranking.best.worst_tile_speedup == max(worst)
    assert ranking.best.flop_speedup is not None
    assert len(ranking.table()) == len(cands)
    with pytest.raises(ValueError, match="objective"):
        best_tiles((30,), 5, candidates=cands[:1], objective="speed")


def test_best_tiles_for_a_query_box():
    # A context-parallel local problem: 30 slab rows at offset 9 of a 47-row window. Q
    # tiles straddling the slab edges cost whole tiles, so the box ranking may pick a tile
    # the grid ranking would not, and never one that visits more pairs for the box.
    shape, box = (47, 48, 80), ((9, 39), (0, 48), (0, 80))
    grid = best_tiles(shape, (18, 24, 24), q_tokens=64, kv_tokens=64)
    boxed = best_tiles(shape, (18, 24, 24), q_tokens=64, kv_tokens=64, query_box=box)
    assert box_visited(boxed.best, box) < box_visited(grid.best, box)
    assert boxed.best.q_tile[0] == 1                       # 30 rows at 9: tiles of 1 row fit
    costs = [box_visited(r, box) for r in boxed.ranked]
    assert costs == sorted(costs)
    # box_visited over the whole grid is every visited pair
    assert box_visited(grid.best, ((0, 47), (0, 48), (0, 80))) == grid.best.total_visited
    with pytest.raises(ValueError, match="query_box"):
        best_tiles(shape, (18, 24, 24), query_box=((0, 48), (0, 48), (0, 80)))


def test_best_tiles_default_candidates_for_cosmos():
    t0 = time.perf_counter()
    ranking = best_tiles((16, 44, 80), (16, 24, 16), 1, q_tokens=256, kv_tokens=128)
    assert time.perf_counter() - t0 < 10
    best = ranking.best
    assert math.prod(best.q_tile) == 256 and math.prod(best.kv_tile) == 128
    assert best.tile_work_speedup == max(r.tile_work_speedup for r in ranking.ranked)
    # The suite's cosmos tiles are this winner.
    cosmos = next(c for c in SUITE if c.name == "cosmos")
    assert (best.q_tile, best.kv_tile) == (cosmos.q_tile, cosmos.kv_tile)


def test_tile_work_counts_padding_and_ranks_by_it():
    # Cosmos 16x44x80, stride 1x8x16: Q 1x8x16 pads 44 rows to 48 (6 tiles), Q 2x4x16 does
    # not (11 tiles). mean_tile_speedup counts self attention on the same padded grid, so
    # both reach the FLOP bound there; the tile work tells them apart, and the ranking
    # follows it.
    shape, k, s = (16, 44, 80), (16, 24, 16), (1, 8, 16)
    padded = simulate(shape, k, s, q_tile=(1, 8, 16), kv_tile=(2, 4, 16))
    exact = simulate(shape, k, s, q_tile=(2, 4, 16), kv_tile=(2, 4, 16))
    assert padded.mean_tile_speedup == pytest.approx(exact.mean_tile_speedup)
    assert padded.total_visited * 44 == exact.total_visited * 48
    assert exact.tile_work_speedup == pytest.approx(exact.flop_speedup)
    assert padded.tile_work_speedup == pytest.approx(exact.tile_work_speedup * 44 / 48)
    best = best_tiles(shape, k, s, q_tokens=128, kv_tokens=128).best
    assert best.tile_work_speedup == pytest.approx(exact.tile_work_speedup)
    # Whole tiles count: N^2 over visited pairs times tile volumes.
    assert exact.tile_work_speedup == pytest.approx(
        math.prod(shape) ** 2 / (exact.total_visited * 128 * 128))


def test_boundary_cost_trades_masking_for_tiles():
    # Hunyuan58 stride 1 with 128/128-token tiles: the fewest tile pairs (Q 32x4x1 / KV
    # 32x4x1) need a mask on every tile; a few percent more pairs need it on few, and a
    # boundary cost picks those.
    shape, k = (30, 48, 80), (30, 40, 40)
    free = best_tiles(shape, k, q_tokens=128, kv_tokens=128).best
    costly = best_tiles(shape, k, q_tokens=128, kv_tokens=128, boundary_cost=0.15).best
    assert free.boundary_tile_fraction == 1.0
    assert costly.boundary_tile_fraction < 0.5
    assert costly.modeled_speedup(0.15) >= free.modeled_speedup(0.15)
    assert free.tile_work_speedup >= costly.tile_work_speedup
    assert free.modeled_speedup(0.0) == pytest.approx(free.tile_work_speedup)


@pytest.mark.parametrize("suite", [SUITE, TINY_SUITE])
def test_suite_cases_are_valid(suite):
    names = [c.name for c in suite]
    # The benchmark suite, then the dense-equivalent check (window = whole grid: bounds all 1).
    assert names == ["flux", "hunyuan", "hunyuan58", "cosmos", "seq32k", "dense32k"]
    dense = suite[-1]
    assert dense.kernel_size == dense.shape and dense.strides == ((1,),)
    r = simulate(dense.shape, dense.kernel_size, 1, q_tile=dense.q_tile, kv_tile=dense.kv_tile)
    assert r.flop_speedup == r.worst_tile_speedup == r.mean_tile_speedup == 1
    for case in suite:
        for stride in case.strides:
            r = simulate(case.shape, case.kernel_size, stride, q_tile=case.q_tile,
                         kv_tile=case.kv_tile)
            assert 1 <= r.worst_tile_speedup <= r.mean_tile_speedup + 1e-9


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="q_tile"):
        simulate((10,), 5, q_tile=0, kv_tile=2)
    with pytest.raises(ValueError, match="kernel_size"):
        simulate((10,), 11)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_json_subprocess():
    cmd = [sys.executable, "-m", "jax_gna.simulator", "--shape", "30", "48", "80",
           "--window", "18", "24", "24", "--stride", "16", "8", "8", "--q-tile", "4", "8",
           "8", "--kv-tile", "2", "8", "8", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                         check=True, timeout=120)
    data = json.loads(out.stdout)
    for key in FIGURES + ("shape", "kernel_size", "stride", "dilation", "is_causal",
                          "q_tile", "kv_tile"):
        assert key in data
    assert round(data["worst_tile_speedup"], 2) == 11.11
    assert data["perfectly_block_sparse"] is True


def test_cli_table_plot_best_and_errors(tmp_path, capsys):
    png = tmp_path / "n.png"
    assert cli_main(["--shape", "16", "20", "12", "--window", "5", "--dilation", "1", "2",
                     "1", "--causal", "1", "0", "0", "--q-tile", "2", "4", "4", "--kv-tile",
                     "2", "4", "2", "--plot", str(png), "--query", "3", "5", "7"]) == 0
    text = capsys.readouterr().out
    assert "worst_tile_speedup" in text and png.stat().st_size > 1000

    png2 = tmp_path / "b.png"
    assert cli_main(["--shape", "64", "--window", "9", "--best", "--q-tokens", "16",
                     "--kv-tokens", "16", "8", "--json", "--plot", str(png2)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ranking"] and set(FIGURES) <= set(data) and png2.exists()

    assert cli_main(["--shape", "10", "10", "--window", "5", "--json", "--arrays"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert np.array(data["visited"]).shape == tuple(data["q_tile_grid"])

    assert cli_main(["--suite", "--tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == sum(len(c.strides) for c in TINY_SUITE)

    assert cli_main(["--shape", "10", "--window", "11"]) == 2
    assert "exceeds" in capsys.readouterr().err
