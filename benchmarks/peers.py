"""jax_gna next to two peer implementations on a CUDA GPU.

    python benchmarks/peers.py --out peers_out                # both parts (an H100: ~4 min)
    python benchmarks/peers.py --parts flux --flux-stride 16 16 --out peers_out
    python benchmarks/peers.py --tiny --out /tmp/peers        # scaled down; runs on a CPU

Part ``flux``: the suite case ``flux`` (256x256 tokens, 24 heads, window 80x80, head dim 128,
batch 1, bf16; stride 1 unless ``--flux-stride``). ``jax_gna.attention`` against PyTorch's
``flex_attention`` under ``torch.compile`` (compiled once per mask), whose block mask comes
from a ``mask_mod`` that evaluates ``jax_gna.semantics``' window rule in torch ops. The
tokens are pre-permuted into tiles (``--flex-tile``, default 8x16) so that each 128-token block
of the flattened sequence is a compact patch of the grid: FlexAttention's best case, where
its block mask skips the most blocks (``--flex-tile 1 128`` is the plain row-major order).
The torch output is checked once against jax_gna's on the same inputs (a relative error above
2e-2 fails the run). Skipped, with the reason, without torch, FlexAttention or a CUDA device.

Part ``lm``: 1-D causal sliding window with GQA (32 query / 8 KV heads, head dim 128, bf16) at
lengths 8192 (batch 1 and 4) and 32768 (batch 1), windows 1024 and 4096:
``jax_gna.attention(q, k, v, kernel_size=(w,), is_causal=(True,))`` against cuDNN through
``jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=(w - 1, 0),
implementation="cudnn")``. With stride 1 and dilation 1 a causal GNA window of size w is
exactly that band: query i sees keys max(0, i - w + 1) .. i, also near the start (query
i < w - 1 sees keys 0 .. i). A stride or dilation above 1 makes it no band, so this part uses
neither. tests/test_peers_equivalence.py proves the equality on a CPU (XLA implementation
against the reference backend); here a probe reads cuDNN's mask off its output before any
timing, and each case compares cuDNN's forward output with jax_gna's (2e-2 again).

Timing. JAX functions: ``jax_gna.profile.measure`` (warm-up, rotating input sets, then on a
CUDA GPU, after ``--settle-s`` of back-to-back calls, the median device time of 10 profiled
calls); cuDNN and jax_gna are also timed interleaved in one trace (rows "(interleaved)": both
at the same clocks). FlexAttention, another framework, is not interleaved: CUDA events around
each call after warm-up and the same settling, median of at least 10 calls over rotating
input sets. TF/s are effective: every impl is credited with GNA's attended pairs
(``profile.flops``), so they compare; "ratio vs jax_gna" is ms / jax_gna's ms (above 1:
jax_gna is faster).

GPU memory: when torch is installed, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` defaults to 0.5 (set
below, before jax is imported), so JAX preallocates half the card and PyTorch's caching
allocator has the rest (flux takes a few GiB on the torch side; the cache is emptied after).

The parts run lm first (pure JAX), then flux. Progress goes to stderr; the Markdown table to
stdout, and results.json / results.md to ``--out`` (rewritten after each part). Exit status 1
if any measurement errored or a correctness check failed.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Before jax is imported: jax preallocates 75% of the GPU by default, leaving torch too little.
if importlib.util.find_spec("torch") is not None:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

try:   # prefer the installed package (it carries the compiled kernels) ...
    import jax_gna
except ImportError:   # ... else the source tree next to this folder (CPU/reference only)
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    import jax_gna

import jax   # noqa: E402
import jax.numpy as jnp   # noqa: E402
import numpy as np   # noqa: E402

from jax_gna import _device_trace, _timing, profile, semantics   # noqa: E402
from jax_gna.simulator.suite import get_suite   # noqa: E402

DIRECTIONS = ("fwd", "fwd+bwd")
MAX_REL_ERR = 2e-2
# (heads, kv heads, head dim, "SEQxBATCH" cases, windows): full size, and tiny for a CPU.
LM = {False: (32, 8, 128, ("8192x1", "8192x4", "32768x1"), (1024, 4096)),
      True: (4, 2, 32, ("256x1", "256x2", "1024x1"), (32, 128))}
RATIO_NOTE = ("ratio vs jax_gna: ms / jax_gna's ms for the same case and direction "
              "(interleaved rows: against jax_gna interleaved); above 1, jax_gna is faster. "
              "TF/s count GNA's attended pairs for every impl.")
_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f} s] {msg}", file=sys.stderr, flush=True)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _row(case, impl, direction, m=None, error=None, note=""):
    m = m or {}
    error = error or m.get("error") or (m.get("skipped") and f"skipped: {m['skipped']}")
    return {"case": case, "impl": impl, "direction": direction, "ms": m.get("median_ms"),
            "tflops": m.get("tflops"), "error": error, "note": note, "measurement": m}


# ----------------------------------------------------------------------------------------
# The GNA neighborhood as a FlexAttention mask_mod, on tokens in tile order
# ----------------------------------------------------------------------------------------


def tile_order(shape, tile) -> np.ndarray:
    """``perm[p]``: row-major index of the token at position ``p`` of the tiled order (tiles
    in row-major order, tokens row-major inside a tile)."""
    (h, w), (th, tw) = shape, tile
    if h % th or w % tw:
        raise ValueError(f"tile {tile} does not divide the grid {shape}")
    return np.arange(h * w).reshape(h // th, th, w // tw, tw).transpose(0, 2, 1, 3).ravel()


def torch_ops(torch):
    """The numpy functions ``jax_gna.semantics`` evaluates its window rule with, for torch
    tensors, so FlexAttention's ``mask_mod`` computes the rule arithmetically inside its
    kernel (its best case: no table lookups per element)."""
    class Ops:
        where = staticmethod(torch.where)

        @staticmethod
        def asarray(x):
            return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)

        @staticmethod
        def minimum(a, b):
            return torch.clamp(a, max=b)

        @staticmethod
        def maximum(a, b):
            return torch.clamp(a, min=b)

        @staticmethod
        def clip(a, lo, hi):   # torch.clamp takes two numbers or two tensors
            return torch.clamp(torch.clamp(a, min=lo), max=hi)
    return Ops


def gna_mask_mod(shape, tile, kernel_size, stride, dilation, is_causal, xp=np):
    """``mask_mod(b, h, q_idx, kv_idx)`` of the GNA neighborhood on a 2-D grid whose tokens
    are in ``tile_order``: ``jax_gna.semantics.attends_1d`` per dim at the tokens' grid
    coordinates, with the array functions of ``xp`` (numpy, or ``torch_ops(torch)``)."""
    width, (th, tw) = shape[1], tile
    per_row, volume = width // tw, th * tw

    def coords(p):   # tiled position -> (row, col)
        t, r = p // volume, p % volume
        return (t // per_row) * th + r // tw, (t % per_row) * tw + r % tw

    def mask_mod(b, h, q_idx, kv_idx):
        (qr, qc), (kr, kc) = coords(q_idx), coords(kv_idx)
        rows, cols = (semantics.attends_1d(i, j, n, k, s, d, bool(c), xp)
                      for i, j, n, k, s, d, c in zip((qr, qc), (kr, kc), shape, kernel_size,
                                                     stride, dilation, is_causal))
        return rows & cols
    return mask_mod


# ----------------------------------------------------------------------------------------
# FlexAttention (PyTorch)
# ----------------------------------------------------------------------------------------


def torch_unavailable() -> str | None:
    """Why the FlexAttention peer cannot run here, or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch
    try:
        import torch.nn.attention.flex_attention   # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no FlexAttention"
    return None if torch.cuda.is_available() else "torch sees no CUDA device"


def time_torch(fn, arg_sets, *, warmup, repeats, settle_s, cuda) -> dict:
    """Median per-call time of ``fn``: CUDA events around each call on a GPU (wall clock
    elsewhere), after warm-up and ``settle_s`` of back-to-back calls (as profile.measure
    settles the GPU clock before its traced calls), cycling through ``arg_sets``."""
    import torch
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    call = lambda i: fn(*arg_sets[i % len(arg_sets)])   # noqa: E731

    def stamp():   # a CUDA event on the stream, or the host clock (CPU: calls are synchronous)
        if not cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    for i in range(max(2, warmup)):
        call(i)
        sync()
    start, i = time.perf_counter(), 0
    while time.perf_counter() - start < settle_s:
        call(i)
        sync()   # one call in flight: the settling ends when the clock says so
        i += 1
    marks = []
    for i in range(repeats):   # back to back: no sync between the timed calls
        before = stamp()
        call(i)
        marks.append((before, stamp()))
    sync()
    ms = [s.elapsed_time(e) if cuda else 1e3 * (e - s) for s, e in marks]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "calls": len(ms),
            "timing": "cuda events" if cuda else "wall"}


def run_flex(case, cfgs, tile, args, device="cuda") -> list[dict]:
    """FlexAttention rows of one flux configuration (``cfgs``: direction -> ProfileConfig),
    after checking its output against jax_gna's."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    cfg = next(iter(cfgs.values()))
    impl = f"flex (tiles {tile[0]}x{tile[1]})"
    n, b, h, hk, d = cfg.num_tokens, cfg.batch, cfg.heads, cfg.heads_kv, cfg.head_dim
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.dtype]
    perm = tile_order(cfg.shape, tile)
    log(f"{case} {impl}: block mask (BLOCK_SIZE 128)")
    mask_mod = gna_mask_mod(cfg.shape, tile, cfg.kernel_size, cfg.stride, cfg.dilation,
                            cfg.is_causal, torch_ops(torch))
    # Compiled mask creation: the eager path materialises N x N index tensors.
    block_mask = create_block_mask(mask_mod, None, None, n, n, device=device, BLOCK_SIZE=128,
                                   _compile=device != "cpu")
    attend = torch.compile(flex_attention, dynamic=False)   # once per mask
    gqa = hk != h

    def make(seed):
        g = torch.Generator(device=device).manual_seed(seed)
        shapes = ((b, h, n, d), (b, hk, n, d), (b, hk, n, d), (b, h, n, d))
        return [torch.randn(s, generator=g, device=device, dtype=dtype) for s in shapes]
    sets = [make(i) for i in range(args.input_sets)]

    # Correctness: the same inputs through jax_gna (numpy in between, tokens un-permuted).
    inv = np.argsort(perm)
    to_grid = lambda t: (t.float().cpu().numpy()[:, :, inv].transpose(0, 2, 1, 3)   # noqa: E731
                         .reshape(b, *cfg.shape, t.shape[1], d))
    with torch.no_grad():
        out = attend(*sets[0][:3], block_mask=block_mask, enable_gqa=gqa)
    gna = jax.jit(functools.partial(jax_gna.attention, kernel_size=cfg.kernel_size,
                                    stride=cfg.stride, dilation=cfg.dilation,
                                    is_causal=cfg.is_causal))
    ref = gna(*(jnp.asarray(to_grid(t), cfg.jnp_dtype) for t in sets[0][:3]))
    note = check_close(to_grid(out), ref, f"{case} {impl}")
    del out

    def fwd(q, k, v, do):
        with torch.no_grad():
            return attend(q, k, v, block_mask=block_mask, enable_gqa=gqa)

    def fwd_bwd(q, k, v, do):
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        o = attend(q, k, v, block_mask=block_mask, enable_gqa=gqa)
        return torch.autograd.grad(o, (q, k, v), do)   # the backward of sum(o * do)

    rows, note = [], f"{note}; block sparsity {block_mask.sparsity():.1f}%"
    for direction, dcfg in cfgs.items():
        log(f"{case} {impl} {direction}: compile, warm-up, timed calls")
        m = time_torch(fwd if direction == "fwd" else fwd_bwd, sets, warmup=args.warmup,
                       repeats=max(10, args.repeats), settle_s=args.settle_s,
                       cuda=device != "cpu")
        m["tflops"] = profile.flops(dcfg, "gna") / (m["median_ms"] * 1e-3) / 1e12
        log(f"{case} {impl} {direction}: median {m['median_ms']:.3f} ms")
        rows.append(_row(case, impl, direction, m, note=note))
    del sets
    if device != "cpu":
        torch.cuda.empty_cache()   # give the memory back before JAX runs on
    return rows


# ----------------------------------------------------------------------------------------
# JAX: jax_gna and cuDNN's sliding window
# ----------------------------------------------------------------------------------------


def window_attention(implementation):
    """cuDNN's (or XLA's) causal band with ``jax_gna.attention``'s signature, for
    ``profile.measure``'s ``attention_fn``: equal to GNA for stride 1, dilation 1, causal."""
    def attend(q, k, v, kernel_size, stride, dilation, is_causal, **_):
        if tuple(stride) != (1,) or tuple(dilation) != (1,) or tuple(is_causal) != (True,):
            raise ValueError("the band equals GNA only for stride 1, dilation 1, causal")
        return jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                            local_window_size=(kernel_size[0] - 1, 0),
                                            implementation=implementation)
    return attend


def check_window_mask(attend, dtype, length=128, windows=(2, 33, 128)) -> None:
    """Reads the keys each query sees off ``attend``'s output (q = k = 0: equal weights on
    the attended keys; v = identity: key j's weight lands in column j) and compares them
    with GNA's causal window; raises on a difference."""
    q = jnp.zeros((1, length, 1, length), dtype)
    v = jnp.eye(length, dtype=dtype)[None, :, None, :]
    for w in windows:
        seen = np.asarray(attend(q, q, v, (w,), (1,), (1,), (True,)), np.float32)[0, :, 0] > 0
        want = semantics.neighborhood_mask_1d(length, w, 1, 1, True)
        if not np.array_equal(seen, want):
            raise AssertionError(f"window {w}: the peer's mask differs from GNA's on "
                                 f"{int((seen != want).sum())} (query, key) pairs")


def measure(cfg, attention_fn, label, args):
    return profile.measure(cfg, "auto", attention_fn=attention_fn, warmup=args.warmup,
                           repeats=args.repeats, input_sets=args.input_sets,
                           settle_s=args.settle_s, progress=lambda p: log(f"{label}: {p}"))


def check_close(out, ref, what) -> str:
    """The relative error of ``out`` against ``ref`` as a note; raises above MAX_REL_ERR."""
    out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
    rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    log(f"{what}: output vs jax_gna, relative error {rel:.2e}")
    if not rel <= MAX_REL_ERR:   # NaN fails too
        raise AssertionError(f"{what}: output differs from jax_gna's, relative error "
                             f"{rel:.3g} > {MAX_REL_ERR}")
    return f"rel err {rel:.1e}"


def interleaved(cfg, peer_fn, gna_ms, peer_ms, settle_s):
    """Per-call device times of the peer and jax_gna, run interleaved in one trace
    (profile.measure_interleaved's method, with the peer in cuDNN dense's place): both see
    the same clock and power states. None where the trace cannot tell the calls apart."""
    wrap = lambda fn: profile._with_direction(cfg, profile._gna_fn(cfg, fn, None))   # noqa: E731
    peer, gna = wrap(peer_fn), wrap(jax_gna.attention)
    pattern = [max(1, min(64, round(gna_ms / peer_ms))), max(1, min(64, round(peer_ms / gna_ms)))]
    sets = profile._input_sets(cfg, 2, 0)
    profile._settle(lambda *a: [peer(*a) for _ in range(pattern[0])]
                    + [gna(*a) for _ in range(pattern[1])], sets, settle_s)
    times = _device_trace.trace_interleaved([(peer, sets), (gna, sets)], pattern, rounds=6)
    return None if times is None else tuple(statistics.median(t) for t in times)


def lm_rows(case, cfg, peer_name, peer_fn, args, peer_error=None) -> list[dict]:
    """jax_gna and the peer on one 1-D configuration (and the two interleaved)."""
    direction = cfg.direction
    g = measure(cfg, None, f"{case} {direction} jax_gna", args)
    rows, note = [_row(case, "jax_gna", direction, g)], ""
    if peer_error:
        return rows + [_row(case, peer_name, direction, error=peer_error)]
    try:
        if direction == "fwd":   # the same inputs through both: the outputs must agree
            q, k, v = profile._input_sets(cfg, 1, 7)[0][:3]
            static = (cfg.kernel_size, cfg.stride, cfg.dilation, cfg.is_causal)
            gna = functools.partial(jax_gna.attention, kernel_size=cfg.kernel_size,
                                    is_causal=cfg.is_causal)
            note = check_close(jax.jit(lambda *a: peer_fn(*a, *static))(q, k, v),
                               jax.jit(gna)(q, k, v), f"{case} {peer_name}")
    except Exception as e:   # noqa: BLE001  (a failed check is reported, not timed)
        return rows + [_row(case, peer_name, direction, error=_err(e))]
    p = measure(cfg, peer_fn, f"{case} {direction} {peer_name}", args)
    rows.append(_row(case, peer_name, direction, p, note=note))
    if args.interleaved and g.get("median_ms") and p.get("median_ms"):
        try:
            t = interleaved(cfg, peer_fn, g["median_ms"], p["median_ms"], args.settle_s)
        except Exception as e:   # noqa: BLE001
            t = _err(e)
        if t is None:
            t = "no device events, or the calls could not be told apart"
        if not isinstance(t, tuple):
            log(f"{case} {direction}: no interleaved timing ({t})")
            return rows
        gflop = profile.flops(cfg, "gna") / 1e9
        rows += [_row(case, f"{impl} (interleaved)", direction,
                      {"median_ms": ms, "tflops": gflop / ms})
                 for impl, ms in ((peer_name, t[0]), ("jax_gna", t[1]))]
    return rows


def run_lm(args, on_cuda) -> list[dict]:
    heads, kv_heads, head_dim, cases, windows = LM[args.tiny]
    peer_name = "cudnn-window" if on_cuda else "xla-window"
    if not on_cuda:
        log("lm: no CUDA GPU, so the peer is the same band through implementation='xla'")
    peer_fn = window_attention("cudnn" if on_cuda else "xla")
    try:
        check_window_mask(peer_fn, jnp.dtype(profile.DTYPES[args.dtype]))
        log(f"lm: {peer_name}'s mask (probed) is GNA's causal window")
        probe_error = None
    except Exception as e:   # noqa: BLE001  (the jax_gna rows still run)
        probe_error = f"mask probe: {_err(e)}"
        log(f"lm: {peer_name} {probe_error}")
    rows = []
    for spec in args.lm_cases or cases:
        seq, batch = (int(x) for x in spec.split("x"))
        for w in args.windows or windows:
            case = f"lm n{seq} b{batch} w{w}"
            for direction in args.directions:
                cfg = profile.ProfileConfig.create(
                    (seq,), (w,), 1, 1, (True,), batch=batch, heads=heads, kv_heads=kv_heads,
                    head_dim=head_dim, dtype=args.dtype, backprop=direction == "fwd+bwd")
                rows += lm_rows(case, cfg, peer_name, peer_fn, args, probe_error)
    return rows


def run_flux(args, on_cuda) -> list[dict]:
    suite_case = get_suite(args.tiny, ["flux"])[0]
    stride = tuple(args.flux_stride)
    case = f"flux s{'x'.join(map(str, stride))}"
    cfgs = {direction: profile.ProfileConfig.create(
        suite_case.shape, suite_case.kernel_size, stride, 1, False, batch=suite_case.batch,
        heads=suite_case.heads, head_dim=suite_case.head_dim, dtype=args.dtype,
        backprop=direction == "fwd+bwd") for direction in args.directions}
    rows = [_row(case, "jax_gna", direction, measure(cfg, None, f"{case} {direction} jax_gna",
                                                      args)) for direction, cfg in cfgs.items()]
    why = "--no-torch" if args.no_torch else torch_unavailable()
    if why:
        log(f"{case}: FlexAttention skipped: {why}")
        return rows + [_row(case, "flex", d, error=f"skipped: {why}") for d in cfgs]
    try:
        return rows + run_flex(case, cfgs, tuple(args.flex_tile), args)
    except Exception as e:   # noqa: BLE001  (report it; the other part still runs)
        log(f"{case}: FlexAttention failed: {_err(e)}")
        return rows + [_row(case, "flex", d, error=_err(e)) for d in cfgs]


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def markdown(rows) -> str:
    ref = {(r["case"], r["direction"]): r["ms"] for r in rows if r["impl"] == "jax_gna"}
    ref.update({(r["case"], r["direction"], "il"): r["ms"] for r in rows
                if r["impl"] == "jax_gna (interleaved)"})
    lines = ["| case | impl | direction | ms (median) | TF/s (eff.) | ratio vs jax_gna |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        key = (r["case"], r["direction"]) + (("il",) if "interleaved" in r["impl"] else ())
        base = ref.get(key)
        if r["ms"] is None:
            ms, tf, ratio = str(r["error"] or "no result")[:80].replace("|", "/"), "-", "-"
        else:
            ms, tf = f"{r['ms']:.3f}", f"{r['tflops']:.4g}" if r["tflops"] else "-"
            ratio = f"{r['ms'] / base:.2f}" if base else "-"
        lines.append(f"| {r['case']} | {r['impl']} | {r['direction']} | {ms} | {tf} | {ratio} |")
    notes = [f"- {r['case']} {r['impl']} {r['direction']}: {r['note']}" for r in rows
             if r["note"]]
    return "\n".join(lines + ["", RATIO_NOTE] + notes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=("lm", "flux"), default=["lm", "flux"],
                   help="lm runs first (pure JAX), then flux (JAX and torch)")
    p.add_argument("--out", default="peers_out", help="directory for results.json/.md")
    p.add_argument("--tiny", action="store_true", help="small shapes (fp32), for a CPU")
    p.add_argument("--directions", nargs="+", choices=DIRECTIONS, default=list(DIRECTIONS))
    p.add_argument("--dtype", choices=sorted(profile.DTYPES), help="default bf16 (tiny: fp32)")
    p.add_argument("--flux-stride", type=int, nargs=2, default=[1, 1])
    p.add_argument("--flex-tile", type=int, nargs=2, default=[8, 16],
                   help="tile of the token order; its volume should be 128 (1 128: row-major)")
    p.add_argument("--no-torch", action="store_true", help="skip FlexAttention")
    p.add_argument("--lm-cases", nargs="+", help="SEQxBATCH, e.g. 8192x1 8192x4 32768x1")
    p.add_argument("--windows", type=int, nargs="+", help="lm windows, e.g. 1024 4096")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--input-sets", type=int, default=3)
    p.add_argument("--settle-s", type=float, help="back-to-back seconds before the timed "
                   "calls (default: 1 on a CUDA GPU, else 0)")
    p.add_argument("--interleaved", default=None, action=argparse.BooleanOptionalAction,
                   help="also time cuDNN and jax_gna interleaved (default: on a CUDA GPU)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    on_cuda = _timing.is_cuda_gpu()
    args.dtype = args.dtype or ("fp32" if args.tiny else "bf16")
    args.settle_s = args.settle_s if args.settle_s is not None else (1.0 if on_cuda else 0.0)
    args.interleaved = on_cuda if args.interleaved is None else args.interleaved
    device = _timing.platform_description()
    log(f"device: {device['device_kind']} ({device['platform']}), jax {jax.__version__}, "
        f"jax_gna backends {list(profile.available_backends())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    # The pure-JAX part first, and the results saved after each part: a hard crash in the
    # torch part (a native error no except catches) loses only its own rows.
    for part, run in (("lm", run_lm), ("flux", run_flux)):
        if part not in args.parts:
            continue
        try:
            rows += run(args, on_cuda)
        except Exception as e:   # noqa: BLE001  (report it; the other part still runs)
            log(f"{part}: failed: {_err(e)}")
            rows.append(_row(part, "-", "-", error=_err(e)))
        table = markdown(rows)
        torch_version = getattr(sys.modules.get("torch"), "__version__", None)
        (out / "results.json").write_text(json.dumps(
            {"device": device, "torch": torch_version, "settings": vars(args), "rows": rows},
            indent=1, default=str))
        (out / "results.md").write_text(table + "\n")
    print(table)
    failed = [r for r in rows if r["error"] and not str(r["error"]).startswith("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
