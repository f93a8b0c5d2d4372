"""``python -m jax_gna.profile``: time one GNA configuration on the default device.

    python -m jax_gna.profile -i 30 48 80 -w 18 24 24 -s 16 8 8 --backprop --json

It times ``jax_gna.attention`` (and, where it applies, cuDNN dense attention and XLA dense
attention on the same tokens) with :mod:`jax_gna._timing` (warm-up, median over groups of
back-to-back calls between device syncs, rotating input sets), and prints the achieved
speedup next to the simulator's bounds for a default tile choice.

Progress (one line per implementation and phase, with the elapsed time) goes to stderr; the
report to stdout. The default sizes of GNA workloads are GPU-sized: on a CPU a problem above
``CPU_FLOP_BUDGET`` FLOPs per call is refused, with a scaled-down problem to try instead,
unless ``--force``.

The building blocks (``ProfileConfig``, ``flops``, ``estimate_memory_bytes``, ``measure``)
are reused by ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import re
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jax_gna import _device_trace, _timing, semantics

__all__ = ["ProfileConfig", "flops", "bytes_moved", "hbm_peak_bytes_per_s",
           "estimate_memory_bytes", "device_memory_bytes",
           "resolve_attention", "available_backends", "measure", "measure_interleaved",
           "simulator_bounds", "cpu_size_refusal", "scaled_down", "stderr_progress",
           "profile", "main", "DENSE_IMPLS", "CPU_FLOP_BUDGET"]

DTYPES = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}
# Names of the dense baselines, as they appear in reports.
CUDNN_DENSE, XLA_DENSE = "cudnn-dense", "xla-dense"
DENSE_IMPLS = {CUDNN_DENSE: "cudnn", XLA_DENSE: "xla"}
# FLOPs of forward+backward relative to forward (2.5x backward + 1x forward).
BACKWARD_FLOP_FACTOR = 3.5
# On a CPU, the most FLOPs one timed call may take before a problem is refused (without
# --force). The jnp reference runs at roughly CPU_FLOPS_PER_S on 2 cores (fp32: 8.6 GFLOP/s
# for examples/quickstart.py's 32x32 case, XLA dense ~30), and a measurement makes at least
# 13 calls, so this bounds one measurement to about half a minute.
CPU_FLOP_BUDGET = 2e10
CPU_FLOPS_PER_S = 1e10


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    """One problem: shapes, window parameters, dtype and direction."""

    shape: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]
    batch: int = 1
    heads: int = 24
    kv_heads: int | None = None
    head_dim: int = 128
    dtype: str = "bf16"
    backprop: bool = False
    extra_tokens: int = 0

    @classmethod
    def create(cls, shape, kernel_size, stride=1, dilation=1, is_causal=False, **kw):
        """Normalise per-dim parameters (an int or one per dim) and validate them."""
        shape = tuple(int(n) for n in shape)
        p = semantics.make_params(shape, kernel_size, stride, dilation, is_causal)
        if kw.get("dtype", "bf16") not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {kw['dtype']!r}")
        return cls(shape, p.kernel_size, p.stride, p.dilation, p.is_causal, **kw)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.shape)

    @property
    def heads_kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def direction(self) -> str:
        return "fwd+bwd" if self.backprop else "fwd"

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kv_heads"] = self.heads_kv
        d["direction"] = self.direction
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ----------------------------------------------------------------------------------------
# FLOPs and memory
# ----------------------------------------------------------------------------------------


def attended_pairs(cfg: ProfileConfig) -> int:
    """Sum over queries of keys seen (neighborhood only), from the semantics module."""
    params = semantics.make_params(cfg.shape, cfg.kernel_size, cfg.stride, cfg.dilation,
                                   cfg.is_causal)
    return int(semantics.keys_per_query(cfg.shape, params).sum())


def flops(cfg: ProfileConfig, which: str = "gna") -> float:
    """FLOPs counted for effective TF/s (docs/semantics.md): ``4 * B * H * pairs * D``, pairs being
    attended (query, key) pairs including the additional tokens; dense counts every pair;
    forward+backward is 3.5x the forward."""
    n = cfg.num_tokens
    pairs = (attended_pairs(cfg) if which == "gna" else n * n) + n * cfg.extra_tokens
    f = 4.0 * cfg.batch * cfg.heads * pairs * cfg.head_dim
    return f * (BACKWARD_FLOP_FACTOR if cfg.backprop else 1.0)


def _tensor_sizes(cfg: ProfileConfig) -> dict[str, int]:
    """Bytes of each tensor of one call: ``q``, ``k``, ``v`` (K and V with the additional
    tokens), ``o`` (q's shape and dtype; so are dO and dq, while dk and dv are k's and v's)
    and ``lse`` (fp32, one per query token and head: the forward kernels always write it,
    the backward reads it)."""
    item = jnp.dtype(cfg.jnp_dtype).itemsize
    n, b, d = cfg.num_tokens, cfg.batch, cfg.head_dim
    q = b * n * cfg.heads * d * item
    kv = b * (n + cfg.extra_tokens) * cfg.heads_kv * d * item
    return {"q": q, "k": kv, "v": kv, "o": q, "lse": b * n * cfg.heads * 4}


def _tensor_bytes(cfg: ProfileConfig) -> int:
    """Footprint of one call's tensors: q, k, v, extras, output and LSE (+ cotangent, three
    gradients and the backward's fp32 row statistic when backprop)."""
    t = _tensor_sizes(cfg)
    total = t["q"] + t["k"] + t["v"] + t["o"] + t["lse"]
    if cfg.backprop:
        total += t["o"] + (t["q"] + t["k"] + t["v"]) + t["lse"]   # dO; dq, dk, dv; delta
    return total


def bytes_moved(cfg: ProfileConfig, direction: str | None = None) -> int:
    """Bytes of the tensors one call moves between the device's memory and the chip, each
    counted once: the least traffic any implementation needs, so achieved bandwidth is
    ``bytes_moved / time`` (the small-window regime is bound by it, not by FLOPs).

    * ``"fwd"``: reads q, k, v; writes o and the LSE (the forward kernels write the LSE in
      every call, also when only o is used).
    * ``"bwd"``: reads q, k, v, o, dO and the LSE; writes dq, dk, dv.
    * ``"fwd+bwd"``: the sum.

    ``direction`` defaults to ``cfg.direction``. Not counted: K/V halos read by several Q
    tiles, the backward's fp32 scratch (dQ accumulator, delta = rowsum(dO * O)), and the
    LSE cotangent; additional keys/values count with K/V."""
    direction = direction or cfg.direction
    if direction not in ("fwd", "bwd", "fwd+bwd"):
        raise ValueError(f"direction must be 'fwd', 'bwd' or 'fwd+bwd'; got {direction!r}")
    t = _tensor_sizes(cfg)
    qkv = t["q"] + t["k"] + t["v"]
    fwd = qkv + t["o"] + t["lse"]
    bwd = qkv + t["o"] + t["o"] + t["lse"] + qkv         # q k v o dO lse in; dq dk dv out
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


# Peak HBM bandwidth (bytes/s) for the "% HBM" figures: (pattern matched against jax's
# device_kind, bytes/s). H100 SXM reports "NVIDIA H100 80GB HBM3"; the PCIe and NVL cards
# (other peaks) and GH200 match none, so they get GB/s only.
HBM_PEAK_BYTES_PER_S: tuple[tuple[str, float], ...] = (
    (r"\bH200\b", 4.8e12),
    (r"\bH100\b.*\b(HBM3|SXM\d?)\b", 3.35e12),
)


def hbm_peak_bytes_per_s(device_kind: str | None = None) -> float | None:
    """The HBM peak of ``device_kind`` (default: the first device's) from
    ``HBM_PEAK_BYTES_PER_S``, or None when the device is not listed."""
    if device_kind is None:
        device_kind = jax.devices()[0].device_kind
    for pattern, peak in HBM_PEAK_BYTES_PER_S:
        if re.search(pattern, device_kind or ""):
            return peak
    return None


def estimate_memory_bytes(cfg: ProfileConfig, impl: str) -> int:
    """Rough peak device bytes of one call of ``impl`` (a GNA backend name or a dense
    baseline), used to skip what cannot fit before trying it.

    Kernels and cuDNN are flash-style (O(N) memory). The jnp reference bounds its live
    intermediates by its own memory budget (``reference.tiled.memory_budget_bytes``); XLA
    dense materialises ``B*H*N*M`` logits: scores, fp32 softmax and probabilities, and
    their gradients in backward.
    """
    base = _tensor_bytes(cfg)
    if impl == XLA_DENSE:
        n, m = cfg.num_tokens, cfg.num_tokens + cfg.extra_tokens
        logits = cfg.batch * cfg.heads * n * m
        per_elem = 4 + 4 + jnp.dtype(cfg.jnp_dtype).itemsize
        return base + logits * per_elem * (3 if cfg.backprop else 1)
    if impl == "reference":
        try:
            from jax_gna.reference.tiled import memory_budget_bytes
            budget = memory_budget_bytes(jax.default_backend())
        except (ImportError, AttributeError):
            budget = 2 << 30
        return base + 2 * budget * (2 if cfg.backprop else 1)
    return base


def device_memory_bytes(device: jax.Device | None = None) -> int:
    """Usable memory of the device (GPU: XLA's limit; CPU: physical RAM)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:   # some platforms do not implement memory_stats
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


# ----------------------------------------------------------------------------------------
# What to time
# ----------------------------------------------------------------------------------------


def resolve_attention() -> Callable[..., Any]:
    """``jax_gna.attention`` or an ImportError saying it is not there."""
    mod = importlib.import_module("jax_gna")
    fn = getattr(mod, "attention", None)
    if fn is not None and not callable(fn):   # the submodule, not the function
        fn = getattr(fn, "attention", None)
    if fn is None:
        raise ImportError("jax_gna.attention is not available in this build")
    return fn


def available_backends() -> tuple[str, ...]:
    """GNA backends usable here (``jax_gna.backends.available_backends``, else reference)."""
    try:
        from jax_gna import backends
        return tuple(backends.available_backends())
    except Exception:   # module missing or its native part failed to load
        return ("reference",)


@functools.partial(jax.jit, static_argnums=(1,))
def _random_arrays(key, specs):
    """Standard-normal arrays for ``specs`` ((shape, dtype), ...): one compiled program per
    configuration instead of one eager compile per array."""
    keys = jax.random.split(key, len(specs))
    return tuple(jax.random.normal(k, shape, dtype) for k, (shape, dtype) in zip(keys, specs))


def _input_sets(cfg: ProfileConfig, count: int, seed: int) -> list[tuple]:
    """``count`` distinct random input tuples: (q, k, v, extra_k, extra_v[, cotangent])."""
    b, h, hk, d = cfg.batch, cfg.heads, cfg.heads_kv, cfg.head_dim
    dt = jnp.dtype(cfg.jnp_dtype)
    q_shape, kv_shape = (b, *cfg.shape, h, d), (b, *cfg.shape, hk, d)
    extra_shape = (b, cfg.extra_tokens, hk, d)
    specs = ((q_shape, dt), (kv_shape, dt), (kv_shape, dt), (extra_shape, dt),
             (extra_shape, dt)) + (((q_shape, dt),) if cfg.backprop else ())
    sets = [_random_arrays(jax.random.PRNGKey(seed + i), specs) for i in range(count)]
    jax.block_until_ready(sets)
    return sets


def _gna_fn(cfg: ProfileConfig, attention_fn: Callable, backend: str | None):
    extra = cfg.extra_tokens > 0

    def attend(q, k, v, ek, ev):
        return attention_fn(q, k, v, cfg.kernel_size, cfg.stride, cfg.dilation,
                            cfg.is_causal, additional_keys=ek if extra else None,
                            additional_values=ev if extra else None, backend=backend)
    return attend


def _dense_fn(cfg: ProfileConfig, implementation: str):
    """Self attention on the same tokens flattened to [B, N, H, D] (extras appended as keys)."""
    b, n = cfg.batch, cfg.num_tokens

    def attend(q, k, v, ek, ev):
        flat = lambda x, heads: x.reshape(b, n, heads, x.shape[-1])
        kf = jnp.concatenate([flat(k, cfg.heads_kv), ek], axis=1)
        vf = jnp.concatenate([flat(v, cfg.heads_kv), ev], axis=1)
        out = jax.nn.dot_product_attention(flat(q, cfg.heads), kf, vf,
                                           implementation=implementation)
        return out.reshape(q.shape[:-1] + (out.shape[-1],))
    return attend


def _with_direction(cfg: ProfileConfig, attend: Callable):
    """Jitted forward, or forward+backward (vjp w.r.t. every input) when ``backprop``."""
    if not cfg.backprop:
        return jax.jit(attend)

    def fwd_bwd(q, k, v, ek, ev, dout):
        _, pullback = jax.vjp(attend, q, k, v, ek, ev)
        return pullback(dout)
    return jax.jit(fwd_bwd)


def _settle(fn: Callable, arg_sets: Sequence[Sequence[Any]], seconds: float) -> None:
    """Calls ``fn`` back to back for about ``seconds``: in bursts of 4 calls while a call
    takes under 20 ms (each burst waited on, so memory stays flat while the device stays
    busy), one at a time for longer calls (a burst must not overshoot by seconds)."""
    import time
    start = time.perf_counter()
    i, burst = 0, 1
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        jax.block_until_ready([fn(*arg_sets[(i + j) % len(arg_sets)]) for j in range(burst)])
        i += burst
        burst = 4 if (time.perf_counter() - t) / burst < 0.02 else 1


def measure(cfg: ProfileConfig, impl: str, *, attention_fn: Callable | None = None,
            warmup: int = 3, repeats: int = 10, input_sets: int = 3, seed: int = 0,
            memory_fraction: float = 0.9, force: bool = False,
            device_trace: bool | None = None, settle_s: float | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time one implementation: a GNA backend ("reference", "sm80", "auto", ...) or a dense
    baseline (``CUDNN_DENSE``, ``XLA_DENSE``). Returns a dict with ``median_ms``, ``min_ms``,
    ``tflops`` (effective, as in docs/semantics.md), or ``skipped``/``error`` with the reason.

    Timing. On a CUDA GPU (``device_trace=None``) or with ``device_trace=True``, after the
    wall-clock groups of ``jax_gna._timing`` two untraced calls and then 10 calls run under
    the profiler (``jax_gna._device_trace``); ``median_ms``/``min_ms``/``tflops`` then come
    from each call's device time (the union of its kernels' device intervals: no launch latency, no
    host gaps) and the wall-clock figures move to ``wall_median_ms``/``wall_min_ms``;
    ``timing`` says which ("device" or "wall"); ``device_trace`` holds the per-op
    breakdown.

    Before the traced calls the function runs back to back for ``settle_s`` seconds
    (default: 2 on a CUDA GPU, else 0), so the GPU's clock has settled where this
    function's own sustained power draw puts it: on the H200 a kernel's clock moves from
    1.98 GHz (after idle) to ~1.6-1.7 GHz (at the power cap) within about a second of
    sustained load, and a short kernel traced after only the wall-clock groups (~0.15 s)
    was timed anywhere between the two (seq32k sm90: 1.30-1.44 ms between runs).

    ``progress``, when given, receives one line per phase (what starts next, and the result
    or skip reason at the end)."""
    say = progress or (lambda phase: None)
    result: dict[str, Any] = {"impl": impl, "direction": cfg.direction}
    if impl == CUDNN_DENSE and not _timing.is_cuda_gpu():
        say("skipped: cuDNN needs a CUDA GPU")
        return {**result, "skipped": "cuDNN needs a CUDA GPU"}
    need = estimate_memory_bytes(cfg, impl)
    have = int(device_memory_bytes() * memory_fraction)
    # Input sets beyond the first cost memory; use fewer rather than skip the case.
    per_set = _tensor_bytes(cfg)
    sets = max(1, min(input_sets, (have - need) // max(per_set, 1) + 1))
    result["memory_estimate_gb"] = round(need / 2**30, 3)
    if need > have and not force:
        why = f"needs ~{need / 2**30:.1f} GiB, device has {have / 2**30:.1f} GiB usable"
        say(f"skipped: {why}")
        return {**result, "skipped": why}
    try:
        if impl in DENSE_IMPLS:
            attend = _dense_fn(cfg, DENSE_IMPLS[impl])
            which = "dense"
        else:
            fn = attention_fn or resolve_attention()
            attend = _gna_fn(cfg, fn, None if impl == "auto" else impl)
            which = "gna"
        say(f"{cfg.direction}, {sets} random input set(s)")
        fn, arg_sets = _with_direction(cfg, attend), _input_sets(cfg, sets, seed)
        say(f"compile and {max(2, warmup)} warm-up calls, then {repeats} timed groups")
        timed = _timing.time_function(fn, arg_sets, warmup=warmup, repeats=repeats)
        if device_trace is None:
            device_trace = _timing.is_cuda_gpu()
        if settle_s is None:
            settle_s = 2.0 if _timing.is_cuda_gpu() else 0.0
        if settle_s > 0:
            say(f"{settle_s:g} s of back-to-back calls (clock settling)")
        _settle(fn, arg_sets, settle_s)
        # Two untraced calls first (an ordinary warm-up: the wall-clock groups end with a
        # host sync). One run each on one H200, seq32k sm90: 1.44 ms per traced call without
        # them (wall-clock groups 1.30), 1.37 with them (wall 1.37); longer kernels agreed
        # with their wall-clock figures either way.
        if device_trace:
            say("traced calls (device time)")
        trace = _device_trace.trace_device(fn, arg_sets, warmup=2) if device_trace else None
    except Exception as e:   # report and carry on: one failing impl must not end a suite
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        say(f"error: {msg}")
        return {**result, "error": msg}
    result.update(timed.to_dict())
    result["timing"] = "wall"
    if trace is not None:
        result["device_trace"] = trace.to_dict()
        calls = trace.devices[0].call_ms if trace.devices else ()
        if calls:
            result.update(wall_median_ms=result["median_ms"], wall_min_ms=result["min_ms"],
                          median_ms=trace.devices[0].median_call_ms, min_ms=min(calls),
                          timing="device")
    result["tflops"] = flops(cfg, which) / (result["median_ms"] / 1e3) / 1e12
    say(f"median {result['median_ms']:.3f} ms ({result['timing']} time)")
    return result


def measure_interleaved(cfg: ProfileConfig, impl: str, dense_impl: str = CUDNN_DENSE, *,
                        gna_ms: float, dense_ms: float, attention_fn: Callable | None = None,
                        rounds: int = 6, seed: int = 0, settle_s: float = 2.0
                        ) -> dict[str, Any]:
    """GNA backend ``impl`` and dense baseline ``dense_impl`` on the same tokens, timed in
    ONE profiler trace, interleaved (``_device_trace.trace_interleaved``): per round one
    dense call and ``k ~ dense_ms / gna_ms`` GNA calls, so both get about the same device
    time; the clock then follows the mix of the two and the ratio compares the kernels at
    equal clocks. ``measure`` times each kernel settled at the clock its own power draw
    allows; the two ratios differ where the draws do: on the H200 the sm80 kernel
    (mma.sync, half cuDNN's tensor rate) ran seq32k at 0.47-0.48 of cuDNN's TF/s timed
    separately and 0.39-0.40 interleaved, cuDNN itself running faster in the mix (19.1 vs
    21.4 ms); the sm90 kernel agreed within 1-4% on FLUX, Hunyuan and dense, but read 1.04
    vs 0.92 on seq32k (its tensor cores idle ~10% of the time at work-item boundaries, so
    alone it draws less and settles at a higher clock). ``gna_ms`` and
    ``dense_ms`` (e.g. from ``measure``) only set the pattern. Returns medians, the
    speedup and the effective-TF/s ratio, or ``skipped``/``error``."""
    out: dict[str, Any] = {"impl": impl, "dense": dense_impl}
    if not _timing.is_cuda_gpu():
        return {**out, "skipped": "interleaved timing needs a CUDA GPU's kernel records"}
    k = max(1, min(64, round(dense_ms / gna_ms)))
    try:
        fn = resolve_attention() if attention_fn is None else attention_fn
        gna = _with_direction(cfg, _gna_fn(cfg, fn, None if impl == "auto" else impl))
        dense = _with_direction(cfg, _dense_fn(cfg, DENSE_IMPLS[dense_impl]))
        sets = _input_sets(cfg, 2, seed)
        # The pattern untraced first, so the clocks have settled to its mix.
        _settle(lambda *a: [dense(*a)] + [gna(*a) for _ in range(k)], sets, settle_s)
        times = _device_trace.trace_interleaved([(dense, sets), (gna, sets)], [1, k],
                                                rounds=rounds)
    except Exception as e:   # noqa: BLE001  (report and carry on, as measure does)
        return {**out, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    if times is None:
        return {**out, "skipped": "no device events, or calls could not be told apart"}
    d, g = statistics.median(times[0]), statistics.median(times[1])
    speedup = d / g
    return {**out, "pattern": [1, k], "rounds": rounds, "dense_ms": d, "gna_ms": g,
            "speedup": speedup,
            "tflops_ratio": speedup * flops(cfg, "gna") / flops(cfg, "dense")}


def simulator_bounds(cfg: ProfileConfig, q_tile=None, kv_tile=None) -> dict[str, Any]:
    """Simulator figures for the problem: given tiles, else the suite case's tiles when the
    problem is a suite case, else the paper's tiles for the rank."""
    from jax_gna.simulator import simulate
    from jax_gna.simulator.suite import REGIMES
    if q_tile is None and kv_tile is None:
        cases = [case for suites in REGIMES.values() for suite in suites for case in suite]
        for case in cases:
            p = case.params()
            if case.shape == cfg.shape and p.kernel_size == cfg.kernel_size \
                    and p.dilation == cfg.dilation and p.is_causal == cfg.is_causal:
                q_tile, kv_tile = case.q_tile, case.kv_tile
                break
    r = simulate(cfg.shape, cfg.kernel_size, cfg.stride, cfg.dilation, cfg.is_causal,
                 q_tile, kv_tile)
    return {"q_tile": list(r.q_tile), "kv_tile": list(r.kv_tile), **r.figures()}


# ----------------------------------------------------------------------------------------
# GPU-sized problems on a CPU
# ----------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def cpu_size_refusal(cfg: ProfileConfig, impls: Sequence[str], platform: str | None = None,
                     budget: float = CPU_FLOP_BUDGET) -> str | None:
    """Why timing ``impls`` (GNA backends and/or dense baselines) on ``cfg`` is refused on
    this platform, or None. Only CPUs refuse: a call above ``budget`` FLOPs would make one
    measurement (13+ calls) take minutes to hours."""
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return None
    runs = [impl for impl in impls if impl != CUDNN_DENSE]   # cuDNN is skipped on a CPU
    if not runs:
        return None
    worst = max(flops(cfg, "dense" if impl in DENSE_IMPLS else "gna") for impl in runs)
    if worst <= budget:
        return None
    return (f"~{worst:.1e} FLOP per call (about {_duration(worst / CPU_FLOPS_PER_S)} per call "
            f"on a CPU, 13+ calls per measurement) is GPU-sized")


def scaled_down(cfg: ProfileConfig, budget: float = CPU_FLOP_BUDGET / 4) -> ProfileConfig | None:
    """A smaller problem of the same kind (rank, direction, dtype, causality; shape, window
    and stride divided by a common factor, at most 4 heads of dim 64) under ``budget`` FLOPs
    per call, or None if no such problem is found."""
    heads = min(cfg.heads, 4)
    kv_heads = cfg.kv_heads if cfg.kv_heads and heads % min(cfg.kv_heads, heads) == 0 else None
    kv_heads = min(kv_heads, heads) if kv_heads else None
    for r in range(1, 257):
        shape = tuple(max(1, -(-n // r)) for n in cfg.shape)
        dil = tuple(max(1, round(d / r)) for d in cfg.dilation)
        ks = tuple(max(2, min(n // d, round(k / r))) for n, k, d in zip(shape, cfg.kernel_size, dil))
        st = tuple(max(1, min(k, round(s / r))) for k, s in zip(ks, cfg.stride))
        try:
            small = ProfileConfig.create(shape, ks, st, dil, cfg.is_causal, batch=1,
                                         heads=heads, kv_heads=kv_heads,
                                         head_dim=min(cfg.head_dim, 64), dtype=cfg.dtype,
                                         backprop=cfg.backprop,
                                         extra_tokens=min(cfg.extra_tokens, 16))
        except (ValueError, TypeError):
            continue
        if flops(small, "dense") <= budget:
            return small
    return None


def _cli_args(cfg: ProfileConfig) -> str:
    """The profile CLI's geometry arguments for ``cfg``."""
    j = lambda xs: " ".join(str(int(x)) for x in xs)   # noqa: E731
    args = f"-i {j(cfg.shape)} -w {j(cfg.kernel_size)} -s {j(cfg.stride)}"
    if any(d != 1 for d in cfg.dilation):
        args += f" -d {j(cfg.dilation)}"
    if any(cfg.is_causal):
        args += f" -c {j(cfg.is_causal)}"
    args += f" --heads {cfg.heads} --head-dim {cfg.head_dim}"
    if cfg.kv_heads:
        args += f" --kv-heads {cfg.kv_heads}"
    return args


def stderr_progress(prefix: str = "") -> Callable[[str], None]:
    """A progress sink: each message on its own stderr line, with the seconds elapsed."""
    start = time.perf_counter()

    def report(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {prefix}{message}", file=sys.stderr,
              flush=True)
    return report


def profile(cfg: ProfileConfig, backend: str = "auto", *, dense: bool = False,
            attention_fn: Callable | None = None, q_tile=None, kv_tile=None,
            progress: Callable[[str], None] | None = None,
            **measure_kw) -> dict[str, Any]:
    """Everything the CLI prints, as one dict (``progress``: see ``measure``)."""
    out: dict[str, Any] = {
        "config": cfg.to_dict(), "backend": backend, "device": _timing.platform_description(),
        "backends_available": list(available_backends()),
        "flops": {"gna": flops(cfg, "gna"), "dense": flops(cfg, "dense")},
    }
    def labelled(label):
        return (lambda phase: progress(f"{label}: {phase}")) if progress else None
    out["gna"] = measure(cfg, backend, attention_fn=attention_fn,
                         progress=labelled(f"gna[{backend}]"), **measure_kw)
    out[CUDNN_DENSE] = measure(cfg, CUDNN_DENSE, progress=labelled(CUDNN_DENSE), **measure_kw)
    if dense:
        out[XLA_DENSE] = measure(cfg, XLA_DENSE, progress=labelled(XLA_DENSE), **measure_kw)
    g = out["gna"].get("median_ms")
    for name in (CUDNN_DENSE, XLA_DENSE):
        t = out.get(name, {}).get("median_ms")
        out[f"speedup_vs_{name}"] = (t / g) if (g and t) else None
    out["simulator"] = simulator_bounds(cfg, q_tile, kv_tile)
    return out


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jax_gna.profile",
        description="Time one GNA configuration on the default device (progress on stderr, "
                    "the report on stdout). Workload sizes such as -i 30 48 80 -w 18 24 24 "
                    "are GPU-sized: on a CPU, a problem above "
                    f"{CPU_FLOP_BUDGET:.0e} FLOP per call is refused (with a smaller one to "
                    "try) unless --force. For the whole benchmark suite scaled down for a "
                    "CPU: python benchmarks/run.py --tiny.")
    p.add_argument("-i", "--input-size", type=int, nargs="+", required=True,
                   help="spatial shape, e.g. 30 48 80")
    p.add_argument("-w", "--window", type=int, nargs="+", required=True,
                   help="kernel size per dim (one value: all dims)")
    p.add_argument("-s", "--stride", type=int, nargs="+", default=[1])
    p.add_argument("-d", "--dilation", type=int, nargs="+", default=[1])
    p.add_argument("-c", "--causal", type=int, nargs="+", default=[0], choices=[0, 1])
    p.add_argument("--backprop", action="store_true", help="time forward+backward")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--kv-heads", type=int, default=None, help="GQA: K/V heads")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--extra-tokens", type=int, default=0,
                   help="additional keys/values every query attends to")
    p.add_argument("--backend", default="auto",
                   help="reference | sm80 | sm90 | halo | auto (best available)")
    p.add_argument("--dense", action="store_true", help="also time XLA dense attention")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--input-sets", type=int, default=3,
                   help="distinct random input sets cycled through while timing")
    p.add_argument("--q-tile", type=int, nargs="+", help="simulator: Q tile per dim")
    p.add_argument("--kv-tile", type=int, nargs="+", help="simulator: KV tile per dim")
    p.add_argument("--force", action="store_true",
                   help="run even if memory looks short or the problem is GPU-sized for "
                        "this CPU")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--settle-s", type=float, default=None,
                   help="seconds of back-to-back calls before the traced ones, so the GPU's "
                        "clock settles under this function's own power draw; default: 2 on "
                        "a CUDA GPU, else 0")
    p.add_argument("--device-trace", default=None, action=argparse.BooleanOptionalAction,
                   help="time from the device's kernel records (profiler trace); default: "
                        "on for CUDA GPUs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _per_dim(values, rank, name, parser):
    if values is None:
        return None
    if len(values) == 1:
        return tuple(values) * rank
    if len(values) != rank:
        parser.error(f"--{name} needs 1 or {rank} values; got {len(values)}")
    return tuple(values)


def _fmt_entry(name: str, e: dict) -> str:
    if "skipped" in e:
        return f"{name:<14} skipped: {e['skipped']}"
    if "error" in e:
        return f"{name:<14} error: {e['error']}"
    if e.get("timing") == "device":
        t = e["device_trace"]
        d = t["devices"][0]
        ops = "; ".join(f"{o['op']} {o['ms_per_call']:.3f}" for o in d["ops"][:3])
        return (f"{name:<14} median {e['median_ms']:9.3f} ms  min {e['min_ms']:9.3f} ms  "
                f"{e['tflops']:8.4g} TF/s  (device time, {t['calls']} traced calls; wall "
                f"median {e['wall_median_ms']:.3f} ms)\n{'':<14} ops (ms/call): {ops}")
    line = (f"{name:<14} median {e['median_ms']:9.3f} ms  min {e['min_ms']:9.3f} ms  "
            f"{e['tflops']:8.4g} TF/s  (wall time, {e['groups']} groups x "
            f"{e['calls_per_group']} calls)")
    if "device_trace" in e:
        line += f"\n{'':<14} device trace: {e['device_trace']['note']}"
    return line


def format_report(rep: dict) -> str:
    c, s = rep["config"], rep["simulator"]
    lines = [
        f"device: {rep['device']['device_kind']} ({rep['device']['platform']}), jax "
        f"{rep['device']['jax_version']}; backends available: "
        f"{', '.join(rep['backends_available'])}",
        f"problem: shape {c['shape']} kernel {c['kernel_size']} stride {c['stride']} dilation "
        f"{c['dilation']} causal {c['is_causal']}; B={c['batch']} H={c['heads']} "
        f"Hkv={c['kv_heads']} D={c['head_dim']} {c['dtype']} {c['direction']}"
        + (f" +{c['extra_tokens']} extra tokens" if c["extra_tokens"] else ""),
        _fmt_entry(f"gna[{rep['backend']}]", rep["gna"]),
        _fmt_entry(CUDNN_DENSE, rep[CUDNN_DENSE]),
    ]
    if XLA_DENSE in rep:
        lines.append(_fmt_entry(XLA_DENSE, rep[XLA_DENSE]))
    for name in (CUDNN_DENSE, XLA_DENSE):
        if rep.get(f"speedup_vs_{name}") is not None:
            lines.append(f"speedup vs {name}: {rep[f'speedup_vs_{name}']:.2f}x")
    flop = s["flop_speedup"]
    lines.append(f"simulator bounds (Q {s['q_tile']} / KV {s['kv_tile']}): FLOP {flop:.2f}x, "
                 f"mean-tile {s['mean_tile_speedup']:.2f}x, tile-work "
                 f"{s['tile_work_speedup']:.2f}x, worst-tile "
                 f"{s['worst_tile_speedup']:.2f}x, boundary tiles "
                 f"{100 * s['boundary_tile_fraction']:.1f}%")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, attention_fn: Callable | None = None) -> int:
    """CLI entry point. ``attention_fn`` replaces ``jax_gna.attention`` (tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = len(args.input_size)
    try:
        cfg = ProfileConfig.create(
            args.input_size, _per_dim(args.window, rank, "window", parser),
            _per_dim(args.stride, rank, "stride", parser),
            _per_dim(args.dilation, rank, "dilation", parser),
            tuple(bool(c) for c in _per_dim(args.causal, rank, "causal", parser)),
            batch=args.batch, heads=args.heads, kv_heads=args.kv_heads,
            head_dim=args.head_dim, dtype=args.dtype, backprop=args.backprop,
            extra_tokens=args.extra_tokens)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    impls = [args.backend, CUDNN_DENSE] + ([XLA_DENSE] if args.dense else [])
    why = None if args.force else cpu_size_refusal(cfg, impls)
    if why is not None:
        small = scaled_down(cfg)
        try_this = (f"try a smaller problem (python -m jax_gna.profile {_cli_args(small)}), "
                    if small is not None else "")
        print(f"error: {why}; run it on a GPU, {try_this}or pass --force "
              "(the suite scaled down for a CPU: python benchmarks/run.py --tiny)",
              file=sys.stderr)
        return 2
    rep = profile(cfg, args.backend, dense=args.dense, attention_fn=attention_fn,
                  q_tile=_per_dim(args.q_tile, rank, "q-tile", parser),
                  kv_tile=_per_dim(args.kv_tile, rank, "kv-tile", parser),
                  progress=None if args.quiet else stderr_progress(),
                  warmup=args.warmup, repeats=args.repeats, input_sets=args.input_sets,
                  force=args.force, device_trace=args.device_trace, settle_s=args.settle_s)
    print(json.dumps(rep) if args.json else format_report(rep))
    return 1 if "error" in rep["gna"] else 0


if __name__ == "__main__":
    sys.exit(main())
