"""The profiler (jax_gna.profile), its timing helper (jax_gna._timing) and the benchmark
suite runner (benchmarks/run.py), on CPU with tiny shapes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jax_gna import _device_trace, _timing, profile, semantics

REPO = Path(__file__).resolve().parent.parent


def _has_attention() -> bool:
    try:
        profile.resolve_attention()
        return True
    except ImportError:
        return False


needs_attention = pytest.mark.skipif(
    not _has_attention(), reason="jax_gna.attention is not importable yet (lead's "
                                 "jax_gna/attention.py); the CLI is covered by the stand-in")


def masked_dense_standin(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False,
                         scale=None, *, additional_keys=None, additional_values=None,
                         return_lse=False, backend=None):
    """Test double with jax_gna.attention's signature: dense attention under the mask."""
    spatial = q.shape[1:-2]
    b, n = q.shape[0], math.prod(spatial)
    params = semantics.make_params(spatial, kernel_size, stride, dilation, is_causal)
    mask = jnp.asarray(semantics.neighborhood_mask(spatial, params))
    flat = lambda x: x.reshape(b, n, x.shape[-2], x.shape[-1])
    qf, kf, vf = flat(q), flat(k), flat(v)
    if additional_keys is not None:
        kf = jnp.concatenate([kf, additional_keys], 1)
        vf = jnp.concatenate([vf, additional_values], 1)
        mask = jnp.concatenate([mask, jnp.ones((n, additional_keys.shape[1]), bool)], 1)
    out = jax.nn.dot_product_attention(qf, kf, vf, mask=mask[None, None], scale=scale,
                                       implementation="xla")
    return out.reshape(q.shape[:-1] + (v.shape[-1],))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# ----------------------------------------------------------------------------------------
# FLOPs, memory, timing
# ----------------------------------------------------------------------------------------


def test_flops_count_attended_pairs():
    cfg = profile.ProfileConfig.create((10, 6), (5, 3), (4, 1), 1, (True, False), batch=2,
                                       heads=3, head_dim=8, extra_tokens=2)
    pairs = int(semantics.neighborhood_mask(cfg.shape, semantics.make_params(
        cfg.shape, cfg.kernel_size, cfg.stride, cfg.dilation, cfg.is_causal)).sum())
    assert profile.flops(cfg) == 4 * 2 * 3 * 8 * (pairs + 60 * 2)
    assert profile.flops(cfg, "dense") == 4 * 2 * 3 * 8 * (60 * 60 + 60 * 2)
    bwd = profile.ProfileConfig.create((10, 6), (5, 3), backprop=True)
    fwd = profile.ProfileConfig.create((10, 6), (5, 3))
    assert profile.flops(bwd) == pytest.approx(3.5 * profile.flops(fwd))


def test_bytes_moved_hand_computed():
    # 4x6 grid (24 tokens), batch 2, 3 query heads, 1 K/V head (GQA), head dim 8, bf16, 2
    # additional tokens: q and o are 2*24*3*8 = 1152 elements (2304 bytes), k and v
    # 2*(24+2)*1*8 = 416 elements (832 bytes), the LSE 2*24*3 fp32 (576 bytes).
    kw = dict(batch=2, heads=3, kv_heads=1, head_dim=8, dtype="bf16", extra_tokens=2)
    fwd = profile.ProfileConfig.create((4, 6), (3, 3), **kw)
    both = profile.ProfileConfig.create((4, 6), (3, 3), backprop=True, **kw)
    q = o = 2304
    k = v = 832
    lse = 576
    fwd_bytes = q + k + v + o + lse                              # read q k v, write o lse
    bwd_bytes = (q + k + v + o + o + lse) + (q + k + v)   # in: q k v o dO lse; out: dq dk dv
    assert fwd_bytes == 6848 and bwd_bytes == 13120
    assert profile.bytes_moved(fwd) == fwd_bytes
    assert profile.bytes_moved(both) == fwd_bytes + bwd_bytes == 19968
    assert profile.bytes_moved(both, "fwd") == fwd_bytes
    assert profile.bytes_moved(fwd, "bwd") == bwd_bytes
    # The window, stride, dilation and causality do not change what is moved once; fp32
    # doubles the token tensors, not the (always fp32) LSE.
    other = profile.ProfileConfig.create((4, 6), (2, 5), (2, 1), 1, (True, False), **kw)
    assert profile.bytes_moved(other) == fwd_bytes
    wide = profile.ProfileConfig.create((4, 6), (3, 3), **{**kw, "dtype": "fp32"})
    assert profile.bytes_moved(wide) == 2 * (q + k + v + o) + lse
    with pytest.raises(ValueError, match="direction"):
        profile.bytes_moved(fwd, "backward")
    # The memory footprint estimate shares the tensor sizes: dO, three gradients and the
    # backward's fp32 row statistic on top of the forward's tensors.
    assert profile._tensor_bytes(fwd) == fwd_bytes
    assert profile._tensor_bytes(both) == fwd_bytes + o + (q + k + v) + lse


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 SXM5 80GB", 3.35e12),
    ("NVIDIA H200", 4.8e12), ("NVIDIA H200 NVL", 4.8e12), ("NVIDIA H100 PCIe", None),
    ("NVIDIA H100 NVL", None), ("NVIDIA GH200 480GB", None), ("cpu", None)])
def test_hbm_peak_by_device_kind(kind, peak):
    assert profile.hbm_peak_bytes_per_s(kind) == peak


def test_memory_estimates_order():
    cfg = profile.ProfileConfig.create((256, 256), (80, 80))
    dense = profile.estimate_memory_bytes(cfg, profile.XLA_DENSE)
    assert dense > 24 * 65536**2 * 4            # materialised logits
    assert profile.estimate_memory_bytes(cfg, "sm90") < 2**31
    assert profile.device_memory_bytes() > 0
    with pytest.raises(ValueError, match="dtype"):
        profile.ProfileConfig.create((8,), 2, dtype="int8")


def test_time_function_rotates_inputs_and_reports_median():
    seen = []

    def fn(x):
        seen.append(int(x[0]))
        return x + 1

    sets = [(jnp.full((4,), i),) for i in range(3)]
    t = _timing.time_function(fn, sets, warmup=2, repeats=4, calls_per_group=5)
    assert len(t.per_call_s) == 4 and t.calls_per_group == 5 and t.input_sets == 3
    assert seen[:6] == [0, 1, 2, 0, 1, 2]               # cycled, not one set reused
    assert t.min_s <= t.median_s and t.median_ms == pytest.approx(1e3 * t.median_s)
    d = t.to_dict()
    assert {"median_ms", "min_ms", "calls_per_group", "method"} <= set(d)
    auto = _timing.time_function(jax.jit(lambda x: x * 2), sets, warmup=1, repeats=2,
                                 max_calls_per_group=7)
    assert 1 <= auto.calls_per_group <= 7
    assert not _timing.is_cuda_gpu() or jax.default_backend() == "gpu"


def test_device_trace_call_split_and_union():
    # Two calls, each a memset and a kernel; the second call's kernel starts late (a host
    # gap) and overlaps nothing: busy time excludes the gap, the union counts overlap once.
    ns = 1_000_000
    events = [(0, 1 * ns), (1 * ns, 3 * ns), (10 * ns, 11 * ns), (15 * ns, 17 * ns)]
    assert _device_trace._call_times_ms(events, 2) == (3.0, 3.0)
    assert _device_trace._call_times_ms(events, 3) == ()            # does not divide
    assert _device_trace._union_ns([(0, 4), (2, 6), (8, 9), (8, 9)]) == 7


def test_trace_interleaved_splits_calls_by_event_counts(monkeypatch):
    # Function A launches 2 events per call, B one; pattern [1, 2] over 2 rounds: A B B A B B.
    # Traces come back in this order: A alone (2 calls), B alone (2 calls), the run.
    ns = 1_000_000
    a_call = lambda t: [("a1", t, 1 * ns), ("a2", t + 1 * ns, 3 * ns)]   # 4 ms per call
    b_call = lambda t, ms: [("b", t, ms * ns)]
    run = (a_call(0) + b_call(10 * ns, 1) + b_call(20 * ns, 2)
           + a_call(30 * ns)[::-1] + b_call(40 * ns, 3) + b_call(50 * ns, 4))
    traces = iter([[("/device:GPU:0", a_call(0) + a_call(9 * ns))],
                   [("/device:GPU:0", b_call(0, 1) + b_call(5 * ns, 1))],
                   [("/device:GPU:0", run)]])
    monkeypatch.setattr(_device_trace, "_profiled_events", lambda fn: next(traces))
    f = lambda x: x
    times = _device_trace.trace_interleaved([(f, [(1.0,)]), (f, [(1.0,)])], [1, 2], rounds=2)
    assert times == ((4.0, 4.0), (1.0, 2.0, 3.0, 4.0))
    # An event count that does not add up (a call launched something unexpected): None.
    traces = iter([[("/device:GPU:0", a_call(0) + a_call(9 * ns))],
                   [("/device:GPU:0", b_call(0, 1) + b_call(5 * ns, 1))],
                   [("/device:GPU:0", run[:-1])]])
    assert _device_trace.trace_interleaved([(f, [(1.0,)]), (f, [(1.0,)])], [1, 2],
                                           rounds=2) is None


@pytest.mark.parametrize("call_s, calls", [(0.5, 4), (0.001, 2001)])
def test_settle_runs_about_the_time_asked(monkeypatch, call_s, calls):
    # A fake clock that each call advances by call_s: 2 s of 0.5 s calls is 4 single calls
    # (no 4-call burst overshooting by seconds); 2 s of 1 ms calls, 1 + 500 bursts of 4.
    import time
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    n = [0]

    def fn(x):
        now[0] += call_s
        n[0] += 1
        return x
    profile._settle(fn, [(1.0,)], 2.0)
    assert n[0] == calls


def test_measure_interleaved_needs_a_cuda_gpu():
    if _timing.is_cuda_gpu():
        pytest.skip("on a CUDA GPU this times for real (benchmarks)")
    cfg = profile.ProfileConfig.create((8,), 3, heads=1, head_dim=4, dtype="fp32")
    m = profile.measure_interleaved(cfg, "auto", gna_ms=1.0, dense_ms=2.0,
                                    attention_fn=masked_dense_standin)
    assert "CUDA GPU" in m["skipped"] and "speedup" not in m


def test_device_trace_without_device_events_falls_back_to_wall_time():
    sets = [(jnp.arange(8.0),)]
    t = _device_trace.trace_device(jax.jit(lambda x: x * 2), sets, calls=2)
    if jax.default_backend() == "cpu":
        assert t.devices == () and "no device events" in t.note
        assert "no device events" in t.summary()
    cfg = profile.ProfileConfig.create((8,), 3, heads=1, head_dim=4, dtype="fp32")
    m = profile.measure(cfg, "auto", attention_fn=masked_dense_standin, warmup=1,
                        repeats=1, input_sets=1, device_trace=True)
    assert m["timing"] in ("wall", "device") and m["median_ms"] > 0
    if m["timing"] == "wall":
        assert "wall_median_ms" not in m and m["device_trace"]["devices"] == []
    else:
        assert m["wall_median_ms"] > 0 and m["device_trace"]["devices"]


# ----------------------------------------------------------------------------------------
# The profiler
# ----------------------------------------------------------------------------------------


ARGS = ["-i", "8", "12", "-w", "4", "6", "-s", "2", "3", "--heads", "2", "--head-dim", "16",
        "--warmup", "1", "--repeats", "2", "--input-sets", "2"]


@pytest.mark.parametrize("extra", [[], ["--backprop", "--dtype", "fp32"],
                                   ["--extra-tokens", "3", "-c", "1", "0"]])
def test_profile_main_with_standin(extra, capsys):
    assert profile.main(ARGS + extra + ["--dense", "--json"],
                        attention_fn=masked_dense_standin) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["gna"]["median_ms"] > 0 and rep["gna"]["tflops"] > 0
    assert rep["xla-dense"]["median_ms"] > 0
    assert rep["speedup_vs_xla-dense"] > 0
    if not _timing.is_cuda_gpu():
        assert "skipped" in rep["cudnn-dense"]
    sim = rep["simulator"]
    assert {"flop_speedup", "worst_tile_speedup", "mean_tile_speedup"} <= set(sim)
    assert rep["config"]["direction"] == ("fwd+bwd" if "--backprop" in extra else "fwd")


def test_profile_table_output_and_bad_args(capsys):
    assert profile.main(ARGS + ["--q-tile", "4", "4", "--kv-tile", "4", "2"],
                        attention_fn=masked_dense_standin) == 0
    text = capsys.readouterr().out
    assert "median" in text and "simulator bounds (Q [4, 4] / KV [4, 2])" in text
    assert profile.main(["-i", "8", "-w", "9"], attention_fn=masked_dense_standin) == 2
    assert "exceeds" in capsys.readouterr().err


def test_profile_reports_a_failing_backend(capsys):
    def broken(*a, **k):
        raise ValueError("backend='sm90' cannot serve this fwd call: no CUDA device")
    assert profile.main(ARGS + ["--json"], attention_fn=broken) == 1
    rep = json.loads(capsys.readouterr().out)
    assert "cannot serve" in rep["gna"]["error"]


@needs_attention
def test_profile_cli_subprocess_reference_backend():
    cmd = [sys.executable, "-m", "jax_gna.profile", *ARGS, "--backend", "reference",
           "--dtype", "fp32", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert rep["gna"]["median_ms"] > 0, rep["gna"]
    assert "reference" in rep["backends_available"]


@needs_attention
def test_measure_reference_backend_backprop_in_process():
    cfg = profile.ProfileConfig.create((16,), 5, 2, heads=2, head_dim=8, dtype="fp32",
                                       backprop=True)
    m = profile.measure(cfg, "reference", warmup=1, repeats=2, input_sets=2)
    assert m["median_ms"] > 0 and m["tflops"] > 0


# ----------------------------------------------------------------------------------------
# The benchmark suite runner
# ----------------------------------------------------------------------------------------


@needs_attention
def test_benchmark_suite_tiny(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--tiny", "--cases",
           "seq32k", "--directions", "fwd", "--backends", "reference", "xla-dense",
           "--warmup", "1", "--repeats", "1", "--input-sets", "1", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("| seq32k | 64 ")   # table last
    res = json.loads((tmp_path / "results.json").read_text())
    gna = [r for r in res["rows"] if r["backend"] == "reference"]
    assert len(gna) == 3 and all(r["median_ms"] for r in gna)
    assert all(r["worst_tile_bound"] >= 1 and r["speedup_vs_dense"] for r in gna)
    # The baseline is bracketed: measured before and after the case's GNA rows, averaged.
    base = next(r for r in res["rows"] if r["backend"] == "xla-dense")
    before, after = base["measurement"]["bracket_ms"]
    assert base["median_ms"] == pytest.approx((before + after) / 2)
    assert gna[0]["speedup_vs_dense"] == pytest.approx(base["median_ms"] / gna[0]["median_ms"])
    assert (tmp_path / "results.md").read_text().count("| reference |") == 3
    assert (tmp_path / "speedups.png").stat().st_size > 1000


def _bench_module():
    """benchmarks/run.py as a module (it imports its neighbours chart.py and report.py)."""
    import importlib.util
    path = REPO / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_run", path)
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(path.parent))
    return bench


def test_benchmark_backward_rows_are_fwd_bwd_minus_fwd():
    """benchmarks/run.py derives backward-only rows from the two directions of one run."""
    bench = _bench_module()

    def row(stride, backend, direction, ms, tflops):
        return dict(case="c", shape=[8], kernel_size=[4], stride=stride, backend=backend,
                    direction=direction, median_ms=ms, tflops=tflops)
    rows = [row(None, "dense", "fwd", 10.0, 100.0), row(None, "dense", "fwd+bwd", 40.0, 87.5),
            row([2], "k", "fwd", 2.0, 50.0), row([2], "k", "fwd+bwd", 7.0, 50.0),
            row([4], "k", "fwd", 1.0, 50.0)]            # no fwd+bwd: no derived row
    derived = bench.backward_rows(rows)
    assert [(r["backend"], r["stride"]) for r in derived] == [("dense", None), ("k", [2])]
    dense, kern = derived
    assert dense["median_ms"] == 30.0
    assert math.isclose(dense["tflops"], 2.5 * 100.0 * 10.0 / 30.0)
    assert kern["median_ms"] == 5.0
    assert math.isclose(kern["tflops"], 2.5 * 50.0 * 2.0 / 5.0)     # 2.5x forward FLOPs / time
    assert math.isclose(kern["speedup_vs_dense"], 30.0 / 5.0)


def test_benchmark_bandwidth_columns():
    """Derived backward rows move fwd+bwd minus fwd bytes; GB/s = bytes / ms; % HBM only
    with a known peak."""
    bench = _bench_module()

    def row(backend, stride, direction, ms, nbytes):
        return dict(case="c", shape=[8], kernel_size=[4], stride=stride, backend=backend,
                    direction=direction, median_ms=ms, tflops=1.0, bytes_moved=nbytes)
    rows = [row("dense", None, "fwd", 4.0, 1000), row("dense", None, "fwd+bwd", 10.0, 3500),
            row("k", [1], "fwd", 1.0, 1000), row("k", [1], "fwd+bwd", 3.0, 3500),
            row("k", [2], "fwd", 0.0, 1000)]            # not timed: no bandwidth
    derived = bench.backward_rows(rows)
    kern = next(r for r in derived if r["backend"] == "k")
    assert kern["bytes_moved"] == 2500 and kern["median_ms"] == 2.0
    assert kern["dense_ms"] == 6.0 and kern["speedup_vs_dense"] == 3.0
    rows += derived
    bench.add_bandwidth(rows, 1e9)                      # a 1 GB/s card
    assert rows[2]["gb_per_s"] == pytest.approx(1000 / 1e-3 / 1e9)      # 1e-3 GB/s
    assert rows[2]["hbm_percent"] == pytest.approx(0.1)
    assert kern["gb_per_s"] == pytest.approx(2500 / 2e-3 / 1e9)
    assert "gb_per_s" not in rows[4]
    bench.add_bandwidth(rows[:1], None)
    assert "gb_per_s" in rows[0] and rows[0]["hbm_percent"] == pytest.approx(25e-3)
    fresh = [row("k", [1], "fwd", 2.0, 4000)]
    bench.add_bandwidth(fresh, None)
    assert fresh[0]["gb_per_s"] == pytest.approx(2e-3) and "hbm_percent" not in fresh[0]


def test_small_window_suite_cases():
    from jax_gna.simulator import simulate
    from jax_gna.simulator.suite import get_suite
    full, tiny = get_suite(regime="small"), get_suite(True, regime="small")
    assert [c.name for c in full] == [c.name for c in tiny]
    assert get_suite(regime="default") == get_suite() and get_suite() != full
    assert [c.name for c in get_suite(regime="small", names=["hdit128"])] == ["hdit128"]
    with pytest.raises(ValueError, match="unknown suite"):
        get_suite(regime="large")
    for case in full:
        p = case.params()
        assert case.strides == ((1,) * len(case.shape),)
        assert all(3 <= k <= 13 for k in p.kernel_size)
        assert case.head_dim in (32, 64) and 16 <= case.batch <= 128
    for a, b in zip(full, tiny):       # the twins keep rank, dilation and causality
        pa, pb = a.params(), b.params()
        assert len(a.shape) == len(b.shape) and pa.is_causal == pb.is_causal
        assert (max(pa.dilation) > 1) == (max(pb.dilation) > 1)
    for case in full + tiny:
        r = simulate(case.shape, case.kernel_size, 1, case.dilation, case.is_causal,
                     q_tile=case.q_tile, kv_tile=case.kv_tile)
        assert r.flop_speedup > 1
    ranks = [len(c.shape) for c in full]
    assert ranks.count(2) == 5 and ranks.count(3) == 3
    assert any(max(c.params().dilation) > 1 for c in full if len(c.shape) == 2)
    assert any(any(c.params().is_causal) for c in full)


@needs_attention
def test_benchmark_small_suite_tiny(tmp_path):
    bench = _bench_module()
    from jax_gna.simulator.suite import get_suite
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--suite", "small", "--tiny",
           "--cases", "dinat14", "video16causal", "--backends", "reference", "xla-dense",
           "--warmup", "1", "--repeats", "1", "--input-sets", "1", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["settings"]["suite"] == "small"
    cases = {c.name: c for c in get_suite(True, regime="small")}
    timed = [r for r in res["rows"] if not r["direction"].startswith("bwd")]
    # 2 cases x 2 directions x (xla-dense, reference)
    assert len(timed) == 8 and all(r["median_ms"] for r in timed)
    for r in timed:
        case = cases[r["case"]]
        cfg = bench.case_config(case, r["stride"] or 1, "fp32", r["direction"])
        assert r["batch"] == case.batch == 2
        assert r["bytes_moved"] == profile.bytes_moved(cfg)
        assert r["gb_per_s"] == pytest.approx(r["bytes_moved"] / r["median_ms"] / 1e6)
        if r["backend"] == "reference":
            assert r["dense_ms"] and r["speedup_vs_dense"] == pytest.approx(
                r["dense_ms"] / r["median_ms"])
    causal = [r for r in timed if r["case"] == "video16causal"]
    assert all(r["is_causal"] == [True, False, False] for r in causal)
    assert all(r["dilation"] == [2, 2] for r in timed if r["case"] == "dinat14")
    # The GNA rows' FLOPs are the case's own (dilation and causality included).
    ref = next(r for r in causal if r["backend"] == "reference" and r["direction"] == "fwd")
    cfg = bench.case_config(cases["video16causal"], 1, "fp32", "fwd")
    assert ref["tflops"] == pytest.approx(profile.flops(cfg) / ref["median_ms"] / 1e9)
    derived = [r for r in res["rows"] if r["direction"].startswith("bwd")]
    assert len(derived) == 4 and all(r["bytes_moved"] and r["gb_per_s"] for r in derived)
    table = (tmp_path / "results.md").read_text()
    assert "| GB/s | % HBM |" in table and "| XLA dense ms |" in table
    assert table.count("| video16causal | 1x1x1 | reference |") == 3
