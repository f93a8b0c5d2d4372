"""The GNA benchmark suite (jax_gna/simulator/suite.py): every case and stride, forward and
forward+backward, each available backend next to dense baselines and the simulator bounds.

    python benchmarks/run.py --out bench_out                 # full suite (GPU)
    python benchmarks/run.py --subset --out bench_out        # < 3 min on an H200
    python benchmarks/run.py --tiny --out /tmp/b             # scaled-down, runs on a CPU
    python benchmarks/run.py --suite small --out bench_small # the small-window regime

The suite's sizes are GPU-sized: on a CPU, without ``--tiny``, a run whose calls exceed
``jax_gna.profile.CPU_FLOP_BUDGET`` FLOPs is refused with a pointer to ``--tiny`` (``--force``
runs it anyway). Progress (one line per measurement and phase) goes to stderr.

One run writes ``results.json`` (every measurement, skip reason and simulator figure),
``results.md`` (the table printed last) and ``speedups.png`` (achieved vs bound speedups).
Timing is ``jax_gna.profile.measure``: warm-up, rotating input sets, then on a CUDA GPU (after
2 s of back-to-back calls, so the clock has settled where the function's own power draw puts
it) the median of 10 calls' DEVICE times (each call's busy time in the profiler's kernel records,
so launch latency and host gaps are out; the wall-clock median over groups of back-to-back
calls, ``jax_gna._timing``, stays in the "wall ms" column), elsewhere the wall-clock median.
The speedup baseline is measured before and after each case's GNA measurements and
averaged (``_bracket``: clocks drift under sustained load). On a CUDA GPU each kernel row is
also timed interleaved with cuDNN dense in one trace (``profile.measure_interleaved``: both at
the same clock and power states; the "interleaved" columns): a comparison at equal clocks,
where a kernel that draws less power than cuDNN gets no credit for the higher clock it
settles to alone.
Anything whose estimated memory exceeds the device is skipped with the reason printed.

Every row also reports its achieved bandwidth: ``jax_gna.profile.bytes_moved`` (the bytes of
the tensors the call moves, each once: forward q, k, v, o, LSE; backward q, k, v, o, dO,
LSE, dq, dk, dv) over its time, in GB/s and, where ``profile.hbm_peak_bytes_per_s`` knows
the card, as a percentage of its HBM peak. ``--suite small`` selects the small-window
regime (``jax_gna.simulator.suite.SMALL_WINDOW_SUITE``: windows of 3-13 per dim, batches of
16-128, head dims 32 and 64), where that figure, not the FLOP rate, is the one to read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

if __package__:                  # python -m benchmarks.run
    from .chart import speedup_chart
    from .report import markdown_table
else:                            # python benchmarks/run.py: this folder is sys.path[0]
    from chart import speedup_chart
    from report import markdown_table

try:   # prefer the installed package (it carries the compiled kernels) ...
    import jax_gna  # noqa: F401
except ImportError:   # ... else the source tree next to this folder (CPU/reference only)
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from jax_gna import _timing, profile   # noqa: E402
from jax_gna.simulator import simulate   # noqa: E402
from jax_gna.simulator.suite import REGIMES, get_suite   # noqa: E402

DIRECTIONS = ("fwd", "fwd+bwd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="The GNA benchmark suite: every case and stride, each available backend "
                    "next to dense baselines and the simulator's bounds. The suite's sizes "
                    "are GPU-sized; on a CPU use --tiny (without it the run is refused unless "
                    "--force). Progress goes to stderr, the table to stdout.")
    p.add_argument("--out", default="bench_out", help="output directory")
    p.add_argument("--suite", choices=sorted(REGIMES), default="default",
                   help="which case set: 'default' (the GNA workloads of docs/semantics.md) "
                        "or 'small' (the small-window regime: vision backbones and "
                        "hourglass diffusion, batches of 16-128; read for GB/s)")
    p.add_argument("--subset", action="store_true",
                   help="quick run: last stride of each case, forward only, few repeats")
    p.add_argument("--tiny", action="store_true",
                   help="the suite scaled down for a CPU: same cases and kinds of stride, "
                        "shapes of about 1k tokens, 2 heads of dim 32, default dtype fp32 "
                        "(on 2 CPU cores: about 2 min, with --subset 15 s)")
    p.add_argument("--cases", nargs="+", help="suite case names (default: all)")
    p.add_argument("--backends", nargs="+",
                   help="GNA backends and/or baselines (cudnn-dense, xla-dense); default: "
                        "every available GNA backend plus both baselines (cuDNN only on a "
                        "CUDA GPU)")
    p.add_argument("--directions", nargs="+", choices=DIRECTIONS,
                   help="default: both (subset: fwd)")
    p.add_argument("--dtype", choices=sorted(profile.DTYPES),
                   help="default bf16 (tiny: fp32)")
    p.add_argument("--warmup", type=int, help="default 3 (subset: 1)")
    p.add_argument("--repeats", type=int, help="default 10 (subset: 3)")
    p.add_argument("--input-sets", type=int, default=3)
    p.add_argument("--force", action="store_true",
                   help="run even if memory looks short or the sizes are GPU-sized for this "
                        "CPU")
    p.add_argument("--device-trace", default=None, action=argparse.BooleanOptionalAction,
                   help="time from the device's kernel records (10 traced calls per "
                        "measurement; wall time stays in the JSON); default: on for CUDA GPUs")
    p.add_argument("--settle-s", type=float, default=None,
                   help="seconds of back-to-back calls before each traced measurement "
                        "(default: 2 on a CUDA GPU, else 0)")
    p.add_argument("--interleaved", default=None, action=argparse.BooleanOptionalAction,
                   help="also time each GNA row and cuDNN dense interleaved in one trace "
                        "(same clock/power states: profile.measure_interleaved); default: "
                        "on for CUDA GPUs")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def case_config(case, stride, dtype: str, direction: str) -> profile.ProfileConfig:
    """The ``ProfileConfig`` of one suite case at ``stride``: its shape, window, dilation,
    causality, batch, heads and head dim."""
    return profile.ProfileConfig.create(
        case.shape, case.kernel_size, stride, case.dilation, case.is_causal,
        batch=case.batch, heads=case.heads, head_dim=case.head_dim, dtype=dtype,
        backprop=direction == "fwd+bwd")


def _label(stride) -> str:
    return "x".join(map(str, stride))


def _default_backends(subset: bool) -> list[str]:
    gna = list(profile.available_backends())
    kernels = [b for b in gna if b != "reference"]
    if subset and kernels:   # the jnp reference is the slow path: leave it to full runs
        gna = kernels
    if not _timing.is_cuda_gpu():
        _log(f"{profile.CUDNN_DENSE}: not run (no CUDA GPU); speedups are over XLA dense")
        return gna + [profile.XLA_DENSE]
    return gna + [profile.CUDNN_DENSE, profile.XLA_DENSE]


class Refused(Exception):
    """The run would take hours on this platform (GPU-sized problems on a CPU)."""


def _cpu_refusal(suite, subset, directions, dtype, impls) -> str | None:
    """On a CPU: which selected cases are GPU-sized (``profile.cpu_size_refusal``), as one
    line, or None."""
    import jax
    if jax.default_backend() != "cpu":
        return None
    big = {}
    for case in suite:
        for direction in directions:
            for stride in (case.strides[-1:] if subset else case.strides):
                cfg = case_config(case, stride, dtype, direction)
                if profile.cpu_size_refusal(cfg, impls) is not None:
                    worst = max(profile.flops(cfg, "dense" if i in profile.DENSE_IMPLS
                                              else "gna") for i in impls
                                if i != profile.CUDNN_DENSE)
                    big[case.name] = max(big.get(case.name, 0.0), worst)
    if not big:
        return None
    cases = ", ".join(f"{name} ~{f:.0e}" for name, f in big.items())
    return (f"the suite's sizes are GPU-sized for a CPU (FLOP per call: {cases}; the budget "
            f"is {profile.CPU_FLOP_BUDGET:.0e}); on a CPU run python benchmarks/run.py --tiny "
            "[--subset] (the suite scaled down), or pass --force")


def _describe(m: dict) -> str:
    if "skipped" in m:
        return f"skipped ({m['skipped']})"
    if "error" in m:
        return f"error ({m['error']})"
    return f"{m['median_ms']:.3f} ms, {m['tflops']:.1f} TF/s"


def run(args) -> dict:
    subset, tiny = args.subset, args.tiny
    directions = args.directions or (["fwd"] if subset else list(DIRECTIONS))
    warmup = args.warmup if args.warmup is not None else (1 if subset else 3)
    repeats = args.repeats if args.repeats is not None else (3 if subset else 10)
    dtype = args.dtype or ("fp32" if tiny else "bf16")
    impls = args.backends or _default_backends(subset)
    dense_impls = [b for b in impls if b in profile.DENSE_IMPLS]
    gna_impls = [b for b in impls if b not in profile.DENSE_IMPLS]
    on_cuda = _timing.is_cuda_gpu()
    baseline = profile.CUDNN_DENSE if (on_cuda and profile.CUDNN_DENSE in dense_impls) \
        else profile.XLA_DENSE
    mkw = dict(warmup=warmup, repeats=repeats, input_sets=args.input_sets, force=args.force,
               device_trace=args.device_trace, settle_s=args.settle_s)
    interleaved = on_cuda if args.interleaved is None else args.interleaved

    suite = get_suite(tiny, args.cases, regime=args.suite)
    if not tiny and not args.force:
        why = _cpu_refusal(suite, subset, directions, dtype, impls)
        if why is not None:
            raise Refused(why)

    def count(case):
        strides = case.strides[-1:] if subset else case.strides
        bracket = 1 if baseline in dense_impls and gna_impls else 0
        return len(directions) * (len(dense_impls) + len(strides) * len(gna_impls) + bracket)
    total, done = sum(count(case) for case in suite), [0]

    def timed(cfg, impl, label):
        """``profile.measure`` with a numbered progress line per phase."""
        done[0] += 1
        step = f"[{done[0]}/{total}] {label} {impl}: "
        return profile.measure(cfg, impl, progress=lambda phase: _log(step + phase), **mkw)

    _log(f"{total} measurements ({len(suite)} cases, {', '.join(directions)}; "
         f"{', '.join(impls)}) on {_timing.platform_description()['device_kind']}")
    rows, sims = [], []
    for case in suite:
        strides = case.strides[-1:] if subset else case.strides
        for direction in directions:
            base_cfg = case_config(case, 1, dtype, direction)
            # Dense attention ignores the window: one measurement per (case, direction),
            # and the baseline once more after the GNA ones (bracketing; see _bracket).
            dense = {}
            for impl in dense_impls:
                m = timed(base_cfg, impl, f"{case.name} {direction}")
                _log(f"[{case.name} {direction}] {impl}: {_describe(m)}")
                dense[impl] = m
            gna_rows = []
            for stride in strides:
                cfg = dataclasses.replace(base_cfg, stride=tuple(stride))
                sim = simulate(case.shape, case.kernel_size, stride, case.dilation,
                               case.is_causal, q_tile=case.q_tile, kv_tile=case.kv_tile)
                if direction == directions[0]:
                    sims.append({"case": case.name, **sim.to_dict()})
                for impl in gna_impls:
                    m = timed(cfg, impl, f"{case.name} {direction} stride {_label(stride)}")
                    _log(f"[{case.name} {direction} stride {_label(stride)}] "
                         f"{impl}: {_describe(m)}")
                    gna_rows.append((cfg, stride, impl, m, sim))
            if baseline in dense and gna_rows:
                again = timed(base_cfg, baseline, f"{case.name} {direction} (again)")
                _log(f"[{case.name} {direction}] {baseline} again: {_describe(again)}")
                dense[baseline] = _bracket(dense[baseline], again)
            ref_ms = dense.get(baseline, {}).get("median_ms")
            for impl, m in dense.items():
                rows.append(_row(case, base_cfg, None, impl, m, ref_ms, None))
            for cfg, stride, impl, m, sim in gna_rows:
                row = _row(case, cfg, stride, impl, m, ref_ms, sim)
                if interleaved and baseline == profile.CUDNN_DENSE and ref_ms \
                        and m.get("median_ms") and impl != "reference":
                    il = profile.measure_interleaved(cfg, impl, baseline, gna_ms=m["median_ms"],
                                                     dense_ms=ref_ms)
                    _log(f"[{case.name} {direction} stride {_label(stride)}] "
                         f"{impl} interleaved with {baseline}: {il}")
                    row.update(interleaved=il, speedup_interleaved=il.get("speedup"),
                               tflops_ratio_interleaved=il.get("tflops_ratio"))
                row.update(_kernel_tile_bound(case, stride, impl, dtype, row))
                if direction == "fwd+bwd" and impl != "reference" and not row["note"]:
                    row["note"] = _backward_note(case, stride, impl, dtype)
                rows.append(row)
    rows.extend(backward_rows(rows))
    device = _timing.platform_description()
    peak = profile.hbm_peak_bytes_per_s(device["device_kind"])
    add_bandwidth(rows, peak)
    return {"device": device, "baseline": baseline, "hbm_peak_bytes_per_s": peak,
            "settings": {"suite": args.suite, "subset": subset, "tiny": tiny, "dtype": dtype,
                         "warmup": warmup,
                         "repeats": repeats, "input_sets": args.input_sets,
                         "interleaved": interleaved,
                         "directions": directions, "backends": impls},
            "rows": rows, "simulator": sims}


def _bracket(before: dict, after: dict) -> dict:
    """The baseline measured before and after a case's GNA measurements, as one: the mean
    of the two medians. A GPU's clocks drift under sustained load (cuDNN's own calls were
    seen slowing 8% within one measurement on the H200), so a baseline measured only
    before favours it over whatever runs later; bracketing gives both the same average
    state. Either measurement failing leaves the other as it was."""
    if "median_ms" not in before or "median_ms" not in after:
        return before if "median_ms" in before else after
    out = dict(before)
    out["median_ms"] = (before["median_ms"] + after["median_ms"]) / 2
    out["min_ms"] = min(before["min_ms"], after["min_ms"])
    out["tflops"] = before["tflops"] * before["median_ms"] / out["median_ms"]
    if "wall_median_ms" in before and "wall_median_ms" in after:
        out["wall_median_ms"] = (before["wall_median_ms"] + after["wall_median_ms"]) / 2
    out["bracket_ms"] = [before["median_ms"], after["median_ms"]]
    return out


def _backward_note(case, stride, impl, dtype) -> str:
    """Which backend the backward of a ``backend=impl`` call runs on (a forward-only family
    hands its backward to the next kernel: say so next to its fwd+bwd time)."""
    import jax
    import jax.numpy as jnp
    import jax_gna
    sds = jax.ShapeDtypeStruct((case.batch, *case.shape, case.heads, case.head_dim),
                               jnp.dtype(profile.DTYPES[dtype]))
    try:
        choice = jax_gna.explain(sds, sds, sds, case.kernel_size, tuple(stride),
                                 case.dilation, case.is_causal, backend=impl)["bwd"]
    except Exception as err:  # noqa: BLE001
        return f"bwd backend unknown ({type(err).__name__})"
    family = choice.split(" ")[0]
    return "" if family == impl else f"bwd on {family}"


def _kernel_tile_bound(case, stride, impl, dtype, row) -> dict:
    """The tiles the forward kernel of ``impl`` picks for this case (what the lowering
    passes it) and the simulator's mean-tile bound for THOSE tiles; empty for the reference
    or when no kernel serves the case here."""
    if impl not in ("sm80", "sm90", "halo"):
        return {}
    try:
        import jax
        import jax.numpy as jnp
        from jax_gna import _cuda_lowering, backends
        q = jax.ShapeDtypeStruct((case.batch, *case.shape, case.heads, case.head_dim),
                                 jnp.dtype(profile.DTYPES[dtype]))
        kcase = backends.case_for(q, q, q, case.kernel_size, tuple(stride), case.dilation,
                                  case.is_causal, backend=impl)
        q_box, kv_box = _cuda_lowering.tile_boxes(kcase.config, impl, kcase, backends.FORWARD)
    except Exception as err:  # noqa: BLE001  (no kernel here: leave the columns empty)
        _log(f"[{case.name}] {impl}: kernel tiles unknown ({type(err).__name__}: {err})")
        return {}
    if impl == "halo":   # no KV tiles: the Q box and its largest halo (keys per Q tile)
        _, stats = backends.halo_box_for(kcase.config, kcase)
        return {"kernel_tiles": "x".join(map(str, q_box)) + f"/halo {stats.max_tokens}"}
    sim = simulate(case.shape, case.kernel_size, stride, case.dilation, case.is_causal,
                   q_tile=tuple(q_box), kv_tile=tuple(kv_box))
    out = {"kernel_tiles": "x".join(map(str, q_box)) + "/" + "x".join(map(str, kv_box)),
           "kernel_tile_work_bound": sim.tile_work_speedup,
           "kernel_mean_tile_bound": sim.mean_tile_speedup}
    if row.get("speedup_vs_dense") is not None:
        out["achieved_over_kernel_bound"] = row["speedup_vs_dense"] / sim.tile_work_speedup
    return out


def backward_rows(rows: list[dict]) -> list[dict]:
    """Backward-only rows, derived where one run measured both directions of a (case,
    stride, backend): device time = fwd+bwd minus fwd (both medians of the same run), its
    FLOPs 2.5x the forward's (so TF/s = 2.5 x forward FLOPs / time), its bytes moved the
    fwd+bwd figure minus the forward's, and the speedup over the dense baseline's backward
    derived the same way."""
    by_key = {(r["case"], None if r["stride"] is None else tuple(r["stride"]), r["backend"],
               r["direction"]): r for r in rows}
    dense = {r["case"]: r for r in rows if r["stride"] is None
             and r["direction"] == "fwd" and (r["case"], None, r["backend"], "fwd+bwd") in by_key}
    out = []
    for (case, stride, impl, direction), fwd in by_key.items():
        both = by_key.get((case, stride, impl, "fwd+bwd"))
        if direction != "fwd" or both is None or not fwd.get("median_ms") \
                or not both.get("median_ms") or both["median_ms"] <= fwd["median_ms"]:
            continue
        ms = both["median_ms"] - fwd["median_ms"]
        fwd_flop = (fwd.get("tflops") or 0.0) * 1e12 * fwd["median_ms"] * 1e-3
        row = {k: fwd.get(k) for k in ("case", "shape", "kernel_size", "stride", "backend")}
        row.update(direction="bwd (fwd+bwd - fwd)", median_ms=ms,
                   tflops=(profile.BACKWARD_FLOP_FACTOR - 1.0) * fwd_flop / (ms * 1e-3) / 1e12,
                   note="derived: fwd+bwd minus fwd of this run")
        if fwd.get("bytes_moved") and both.get("bytes_moved"):
            row["bytes_moved"] = both["bytes_moved"] - fwd["bytes_moved"]
        base = dense.get(case)
        if stride is not None and base is not None:
            base_both = by_key[(case, None, base["backend"], "fwd+bwd")]
            base_ms = base_both["median_ms"] - base["median_ms"] \
                if base_both.get("median_ms") and base.get("median_ms") else None
            if base_ms and base_ms > 0:
                row["speedup_vs_dense"] = base_ms / ms
                row["dense_ms"] = base_ms
        out.append(row)
    return out


def add_bandwidth(rows: list[dict], peak_bytes_per_s: float | None) -> None:
    """Achieved bandwidth of every timed row with a ``bytes_moved`` figure: ``gb_per_s``
    (bytes moved once / median time, 1 GB = 1e9 bytes) and, given the card's HBM peak,
    ``hbm_percent``."""
    for row in rows:
        ms, nbytes = row.get("median_ms"), row.get("bytes_moved")
        if not ms or not nbytes:
            continue
        rate = nbytes / (ms * 1e-3)
        row["gb_per_s"] = rate / 1e9
        if peak_bytes_per_s:
            row["hbm_percent"] = 100.0 * rate / peak_bytes_per_s


def _row(case, cfg, stride, impl, m, ref_ms, sim) -> dict:
    """One table row; ``stride`` None for a dense baseline (the window does not apply)."""
    ms = m.get("median_ms")
    row = {"case": case.name, "shape": list(case.shape), "kernel_size": list(case.kernel_size),
           "dilation": list(cfg.dilation), "is_causal": list(cfg.is_causal),
           "batch": cfg.batch, "heads": cfg.heads, "head_dim": cfg.head_dim,
           "stride": list(stride) if stride is not None else None, "backend": impl,
           "direction": cfg.direction, "median_ms": ms, "min_ms": m.get("min_ms"),
           "tflops": m.get("tflops"), "bytes_moved": profile.bytes_moved(cfg),
           "wall_ms": m.get("wall_median_ms"), "timing": m.get("timing"),
           "dense_ms": ref_ms if stride is not None else None,
           "speedup_vs_dense": (ref_ms / ms) if (ms and ref_ms) else None,
           "note": m.get("skipped") or m.get("error") or "", "measurement": m}
    if sim is not None:
        row.update(flop_bound=sim.flop_speedup, mean_tile_bound=sim.mean_tile_speedup,
                   worst_tile_bound=sim.worst_tile_speedup,
                   q_tile=list(sim.q_tile), kv_tile=list(sim.kv_tile))
        if row["speedup_vs_dense"] is not None:
            row["achieved_over_bound"] = row["speedup_vs_dense"] / sim.worst_tile_speedup
    return row


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        results = run(args)
    except Refused as why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    results["wall_s"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))
    base_name = "cuDNN dense" if results["baseline"] == profile.CUDNN_DENSE else "XLA dense"
    table = markdown_table(results["rows"], base_name)
    device = results["device"]
    timings = sorted({r.get("timing") for r in results["rows"] if r.get("timing")})
    how = {"device": "device time per call (median of 10 traced calls)",
           "wall": "wall time per call (median of groups)"}
    peak = results["hbm_peak_bytes_per_s"]
    hbm = (f"% HBM of its {peak / 1e12:g} TB/s peak" if peak else
           "% HBM: no peak known for this device")
    header = (f"GNA benchmark ({results['settings']['suite']} suite) on "
              f"{device['device_kind']} ({device['platform']}), jax "
              f"{device['jax_version']}, {results['settings']['dtype']}; ms = "
              f"{' / '.join(how[t] for t in timings) or '-'}; speedups over "
              f"{base_name}; GB/s = bytes of the tensors moved once / ms "
              f"(jax_gna.profile.bytes_moved), {hbm}; bounds from the simulator with the "
              f"suite's tiles.\n\n")
    (out / "results.md").write_text(header + table + "\n")
    try:
        chart = speedup_chart(results["rows"], str(out / "speedups.png"), base_name)
        no_chart = " (no chart: no dense baseline measured)"
    except ModuleNotFoundError as err:   # matplotlib is the `plot` extra
        chart = None
        no_chart = (f" (no chart: needs {err.name}: pip install matplotlib, or pip install "
                    "'.[plot]' in the jax_gna checkout)")
    _log(f"wrote {out / 'results.json'}, {out / 'results.md'}"
         + (f", {chart}" if chart else no_chart)
         + f" in {results['wall_s']:.1f} s")
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
