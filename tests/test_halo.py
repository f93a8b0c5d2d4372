"""The halo forward's Python side on the CPU: its box rule and halo figures
(``jax_gna.tiles.halo_stats`` / ``best_halo_box``) against a brute force over
``jax_gna.semantics`` windows and against the C++ plan (``xla_ffi/cuda/halo/halo_plan.h``,
through the host check's ``plan`` mode), its admission rule (``jax_gna.backends``), the
selection order and the tile boxes the lowering passes it. The kernel itself runs in
``tests/gpu/test_kernels_sm80_smoke.py`` (``JAX_GNA_SMOKE_BACKEND=halo``) and the shared
suite (``tests/test_attention.py``, backend ``halo``)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_gna import _cuda_lowering, backends, kernel_manifest, semantics, tiles

REPO = pathlib.Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")
LIMIT = kernel_manifest.FAMILIES["halo"].max_halo_tokens


def _case(shape, kernel_size, stride=1, dilation=1, causal=False, head_dim=64, extra=0,
          heads=(4, 4), dtype=jnp.bfloat16):
    hq, hkv = heads
    q = jax.ShapeDtypeStruct((2, *shape, hq, head_dim), dtype)
    k = jax.ShapeDtypeStruct((2, *shape, hkv, head_dim), dtype)
    e = jax.ShapeDtypeStruct((2, extra, hkv, head_dim), dtype) if extra else None
    return backends.case_for(q, k, k, kernel_size, stride, dilation, causal, additional_keys=e)


def _brute_stats(shape, params, q_box, num_extra, chunk=64):
    """Per Q tile (all groups, every dim): the hull of its queries' windows, by brute force
    over semantics.window_1d; -> (max extent per dim, total halo tokens, total chunks)."""
    per_dim = []
    for axis, n in enumerate(shape):
        k, s, d, c = params.dim(axis)
        extents = []
        for g in range(d):
            lg = int(semantics.group_length(g, n, d))
            for q0 in range(0, lg, q_box[axis]):
                coords = g + d * np.arange(q0, min(q0 + q_box[axis], lg))
                start, end = semantics.window_1d(coords, n, k, s, d, c)
                extents.append(int(np.max(end) - np.min(start)))
        per_dim.append(np.array(extents))
    tokens = np.ones((), np.int64)
    for e in per_dim:
        tokens = np.multiply.outer(tokens, e)
    chunks = -(-(tokens + num_extra) // chunk)
    return tuple(int(e.max()) for e in per_dim), int(tokens.sum()), int(chunks.sum())


def _random_problem(rng):
    rank = int(rng.integers(1, 4))
    max_len = {1: 300, 2: 40, 3: 14}[rank]
    shape, ks, ss, ds, cs = [], [], [], [], []
    for _ in range(rank):
        n = int(rng.integers(2, max_len + 1))
        k = int(rng.integers(2, min(n, 13) + 1))
        d = int(rng.integers(1, n // k + 1)) if rng.random() < 0.3 else 1
        s = int(rng.integers(1, k + 1)) if rng.random() < 0.3 else 1
        shape.append(n), ks.append(k), ss.append(s), ds.append(d)
        cs.append(bool(rng.random() < 0.25))
    params = semantics.make_params(tuple(shape), tuple(ks), tuple(ss), tuple(ds), tuple(cs))
    box = tiles.power_of_two_boxes(64, shape)
    return tuple(shape), params, box[int(rng.integers(len(box)))]


def test_halo_stats_match_a_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(60):
        shape, params, box = _random_problem(rng)
        extra = int(rng.choice([0, 0, 5, 70]))
        got = tiles.halo_stats(shape, params, box, extra)
        max_extent, total, chunks = _brute_stats(shape, params, box, extra)
        assert got.max_extent == max_extent, (shape, params, box)
        assert got.max_tokens == math.prod(max_extent)
        assert (got.total_tokens, got.total_chunks) == (total, chunks), (shape, params, box)


@pytest.mark.parametrize("shape, kernel_size, box, halo", [
    ((56, 56), 7, (8, 8), 14 * 14),
    ((128, 128), 7, (8, 8), 14 * 14),
    ((56, 56), 13, (8, 8), 20 * 20),
    ((32, 32, 32), 3, (4, 4, 4), 6 * 6 * 6),
    ((4096,), 13, (64,), 64 + 12),
])
def test_box_rule_minimises_the_halo(shape, kernel_size, box, halo):
    case = _case(shape, kernel_size)
    got, stats = backends.halo_box_for(case.config, case)
    assert got == box and stats.max_tokens == halo
    assert backends._halo_rule(case, backends.FORWARD) is None
    # No other 64-token box loads fewer halo keys.
    for other in tiles.power_of_two_boxes(64, shape):
        assert tiles.halo_stats(shape, case.config.params, other).total_tokens >= \
            stats.total_tokens


def test_a_given_q_tile_is_used_and_judged():
    case = _case((56, 56), 7)
    config = case.config.replace(q_tile=(2, 32))
    box, stats = backends.halo_box_for(config, case)
    assert box == (2, 32) and stats.max_extent == (8, 35)   # [0, 35) for queries 0-31


@pytest.mark.parametrize("shape, kernel_size, words", [
    ((64, 64), 31, ["1444 keys", f"limit of {LIMIT}"]),
    ((16, 32, 32), 7, ["1000 keys", "10x10x10"]),
    ((4096,), 300, ["363 keys along a dim"]),
])
def test_rule_refuses_large_halos_with_the_reason(shape, kernel_size, words):
    why = backends._halo_rule(_case(shape, kernel_size), backends.FORWARD)
    assert why is not None and all(w in why for w in words), why


def _all_compiled():
    """compiled_kernels() of a build that has every manifest line."""
    return {(k.direction, k.family, k.dtype, k.head_dim): (k.q_tile_tokens, k.kv_tile_tokens)
            for k in kernel_manifest.KERNELS}


def test_selection_prefers_halo_for_small_windows(monkeypatch):
    monkeypatch.setattr(backends, "compiled_kernels", _all_compiled)
    assert backends.KERNEL_NAMES.index("sm90") < backends.KERNEL_NAMES.index("halo") < \
        backends.KERNEL_NAMES.index("sm80")
    small = _case((56, 56), 7, dilation=4, heads=(8, 2))
    assert backends.choose(small, backends.FORWARD, "cuda", arch=80).backend == "halo"
    assert backends.choose(small, backends.BACKWARD, "cuda", arch=80).backend == "halo"
    # Its backward refuses additional keys: those go to sm80, with the reason.
    extra = _case((56, 56), 7, extra=5)
    bwd = backends.choose(extra, backends.BACKWARD, "cuda", arch=80)
    assert bwd.backend == "sm80" and any("additional" in r for r in bwd.reasons)
    # On Hopper the sm90 forward comes first where it serves; head dim 32 is not its.
    assert backends.choose(small, backends.FORWARD, "cuda", arch=90).backend == "sm90"
    small32 = _case((56, 56), 7, head_dim=32)
    assert backends.choose(small32, backends.FORWARD, "cuda", arch=90).backend == "halo"
    # ... except for small halos (<= SMALL_HALO_TOKENS keys), where halo precedes it in both
    # directions (DiNAT at 14x14: 49 keys); asked for by name, sm90 still serves them.
    tiny = _case((14, 14), 7, dilation=2)
    assert backends.halo_box_for(tiny.config, tiny)[1].max_tokens <= backends.SMALL_HALO_TOKENS
    for direction in (backends.FORWARD, backends.BACKWARD):
        choice = backends.choose(tiny, direction, "cuda", arch=90)
        assert choice.backend == "halo" and any("small window" in r for r in choice.reasons)
    named90 = dataclasses.replace(tiny, config=tiny.config.replace(backend="sm90"))
    assert backends.choose(named90, backends.FORWARD, "cuda", arch=90).backend == "sm90"
    assert backends.halo_box_for(small.config, small)[1].max_tokens > backends.SMALL_HALO_TOKENS
    large = _case((64, 64), 31)
    choice = backends.choose(large, backends.FORWARD, "cuda", arch=80)
    assert choice.backend == "sm80" and any("limit of" in r for r in choice.reasons)
    # Asked for by name: the halo backward where it serves (deterministic too: no atomics),
    # else the next kernel that has one.
    named = _case((28, 28), 5)
    named = dataclasses.replace(named, config=named.config.replace(backend="halo"))
    assert backends.choose(named, backends.FORWARD, "cuda", arch=80).backend == "halo"
    assert backends.choose(named, backends.BACKWARD, "cuda", arch=80).backend == "halo"
    det = dataclasses.replace(named, config=named.config.replace(deterministic=True))
    assert backends.choose(det, backends.BACKWARD, "cuda", arch=80).backend == "halo"
    named128 = _case((28, 28), 5, head_dim=128)
    named128 = dataclasses.replace(named128, config=named128.config.replace(backend="halo"))
    assert backends.choose(named128, backends.BACKWARD, "cuda", arch=80).backend == "sm80"
    with pytest.raises(ValueError, match="cannot serve"):
        backends.choose(dataclasses.replace(large, config=large.config.replace(backend="halo")),
                        backends.FORWARD, "cuda", arch=80)


def test_lowering_passes_the_halo_box(monkeypatch):
    monkeypatch.setattr(backends, "compiled_kernels", _all_compiled)
    case = _case((3, 40, 40), (3, 5, 5), causal=(True, False, False), extra=9)
    q_box, kv_box = _cuda_lowering.tile_boxes(case.config, "halo", case, backends.FORWARD)
    assert q_box == backends.halo_box_for(case.config, case)[0]
    assert math.prod(q_box) == 64 and math.prod(kv_box) == 64
    given = case.config.replace(q_tile=(1, 8, 8))
    assert _cuda_lowering.tile_boxes(given, "halo", case, backends.FORWARD)[0] == (1, 8, 8)
    with pytest.raises(ValueError, match="64 tokens per tile"):
        _cuda_lowering.tile_boxes(case.config.replace(q_tile=(1, 16, 8)), "halo", case,
                                  backends.FORWARD)


@pytest.fixture(scope="module")
def plan_binary(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("halo_plan")
    gen = subprocess.run([sys.executable, str(REPO / "xla_ffi" / "generate_kernels.py"),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    exe = out / "halo_host_check"
    build = subprocess.run([CXX, "-std=c++17", "-O2", f"-I{REPO / 'xla_ffi' / 'include'}",
                            f"-I{REPO / 'xla_ffi' / 'cuda'}", f"-I{out}",
                            str(REPO / "xla_ffi" / "cuda" / "halo" / "test" / "host_check.cc"),
                            "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    return exe


def test_cpp_plan_agrees_with_python(plan_binary):
    """The C++ admission (plan_call) and the Python rule judge the same halos."""
    rng = np.random.default_rng(11)
    problems = [_random_problem(rng) for _ in range(40)]
    problems.append(((64, 64), semantics.make_params((64, 64), 31), (8, 8)))
    problems.append(((4096,), semantics.make_params((4096,), 300), (64,)))
    for shape, params, box in problems:
        argv = [str(plan_binary), "plan", str(len(shape))]
        for axis, n in enumerate(shape):
            k, s, d, c = params.dim(axis)
            argv += [str(n), str(k), str(s), str(d), str(int(c)), str(box[axis])]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        fields = dict(line.split(" ", 1) if " " in line else (line, "")
                      for line in run.stdout.splitlines())
        stats = tiles.halo_stats(shape, params, box)
        assert tuple(int(x) for x in fields["extents"].split()) == stats.max_extent
        assert int(fields["tokens"]) == stats.max_tokens
        py_serves = (stats.max_tokens <= LIMIT
                     and max(stats.max_extent) <= kernel_manifest.MAX_TILE_SIDE)
        assert bool(int(fields["serves"])) == py_serves, (shape, params, box, fields)


@pytest.mark.parametrize("shape, kernel_size, stride, dilation, causal, kv_box", [
    ((56, 56), 7, 1, 1, False, (8, 8)),
    ((30, 27), (7, 5), (2, 1), (1, 3), (True, False), (4, 16)),
    ((8, 12, 10), 3, 1, (1, 2, 1), (True, False, False), (4, 4, 4)),
    ((300,), 13, 3, 2, False, (64,)),
])
def test_inverse_halo_extents_match_brute_force(shape, kernel_size, stride, dilation, causal,
                                                 kv_box):
    """tiles.inverse_halo_extents (the backward rule's figure): per dim, over every KV box of
    every dilation group, the hull of the queries whose window holds a key of the box."""
    params = semantics.make_params(shape, kernel_size, stride, dilation, causal)
    want = []
    for axis, n in enumerate(shape):
        k, s, d, c = params.dim(axis)
        best = 0
        for g in range(d):
            lg = int(semantics.group_length(g, n, d))
            coords = g + d * np.arange(lg)
            start, end = semantics.window_1d(coords, n, k, s, d, c)
            for k0 in range(0, lg, kv_box[axis]):
                k1 = min(k0 + kv_box[axis], lg)
                sees = np.nonzero((start < k1) & (end > k0))[0]
                if sees.size:
                    best = max(best, int(sees.max() - sees.min() + 1))
        want.append(best)
    assert tiles.inverse_halo_extents(shape, params, kv_box) == tuple(want)


def test_backward_rule_refuses_large_inverse_halos_and_extras():
    why = backends._halo_rule(_case((56, 56), 7, extra=3), backends.BACKWARD)
    assert why is not None and "additional" in why
    assert backends._halo_rule(_case((56, 56), 7), backends.BACKWARD) is None
    assert backends._halo_rule(_case((4096,), 300), backends.BACKWARD) is not None
