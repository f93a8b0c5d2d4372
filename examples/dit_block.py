"""A video DiT block with 3-D neighborhood attention, timed against the same block with dense
attention.

Block (adaLN-free, pre-norm): ``x + Attn(LN(x), text) -> x + MLP(LN(x))`` over a
``[batch, T, H, W, dim]`` latent grid. The attention is either

* ``gna``: ``jax_gna.nn.NeighborhoodAttention3D`` -- each latent token attends to its 3-D
  neighborhood plus every text token (the text enters as additional keys/values through the
  same key/value projections), or
* ``dense``: ``flax.nnx.MultiHeadAttention`` over the flattened grid with keys/values
  ``concat(grid, text)``, running ``jax.nn.dot_product_attention`` (cuDNN on GPU, XLA on CPU).

Both blocks have the same parameter tree and are initialised from the same seed, so they hold
identical weights; the script first checks that with a full-size window (kernel = grid) the
two agree, then times forward and forward+backward of the whole block (jit, warm-up, median
of ``block_until_ready``-synchronised runs) and prints a table.

    python examples/dit_block.py           # small grid on CPU (the jnp reference path)
    python examples/dit_block.py --full    # 30x48x80, 24 heads x 128 (default on GPU)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

try:
    import jax_gna
    import jax_gna.nn as gnn
    from jax_gna import semantics
except ImportError:  # running from a source checkout without `pip install .`
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import jax_gna
    import jax_gna.nn as gnn
    from jax_gna import semantics

SMALL = dict(grid=(8, 12, 16), heads=4, head_dim=32, text=16, batch=1,
             configs=[("GNA k=4x6x6", (4, 6, 6), 1),
                      ("GNA k=4x6x6 s=2x3x3", (4, 6, 6), (2, 3, 3))],
             dtype=jnp.float32)
# The HunyuanVideo shapes of the benchmark suite (docs/semantics.md).
FULL = dict(grid=(30, 48, 80), heads=24, head_dim=128, text=256, batch=1,
            configs=[("GNA k=18x24x24", (18, 24, 24), 1),
                     ("GNA k=18x24x24 s=2x8x8", (18, 24, 24), (2, 8, 8)),
                     ("GNA k=18x24x24 s=16x8x8", (18, 24, 24), (16, 8, 8))],
            dtype=jnp.bfloat16)


def dense_attention_fn(implementation):
    """An attention_fn for nnx.MultiHeadAttention that calls jax.nn.dot_product_attention.

    MultiHeadAttention passes mask/dropout/... keywords; this block uses none of them.
    """
    def attention_fn(query, key, value, **unused):
        return jax.nn.dot_product_attention(query, key, value, implementation=implementation)
    return attention_fn


class DiTBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, *, attention: str, kernel_size=None, stride=1,
                 dense_implementation=None, mlp_ratio: int = 4, dtype=None,
                 rngs: nnx.Rngs):
        self.attention = attention
        self.norm1 = nnx.LayerNorm(dim, use_scale=False, use_bias=False, dtype=dtype,
                                   rngs=rngs)
        # QK-norm, as in current video DiTs; the parameter trees of the two choices match.
        common = dict(normalize_qk=True, dtype=dtype, rngs=rngs)
        if attention == "gna":
            self.attn = gnn.NeighborhoodAttention3D(heads, dim, kernel_size=kernel_size,
                                                    stride=stride, **common)
        else:
            self.attn = nnx.MultiHeadAttention(
                heads, dim, decode=False,
                attention_fn=dense_attention_fn(dense_implementation), **common)
        self.norm2 = nnx.LayerNorm(dim, use_scale=False, use_bias=False, dtype=dtype,
                                   rngs=rngs)
        self.fc1 = nnx.Linear(dim, mlp_ratio * dim, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_ratio * dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, text):
        h = self.norm1(x)
        if self.attention == "gna":
            h = self.attn(h, inputs_kv_extra=text)
        else:  # dense: flatten the grid; keys/values are grid tokens followed by text
            tokens = h.reshape(h.shape[0], -1, h.shape[-1])
            h = self.attn(tokens, jnp.concatenate([tokens, text.astype(tokens.dtype)], 1))
            h = h.reshape(x.shape)
        x = x + h
        return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x)), approximate=True))


def make_fns(block):
    """jitted forward and forward+backward (grads w.r.t. params, latents and text)."""
    graphdef, params, rest = nnx.split(block, nnx.Param, ...)

    def forward(params, x, text):
        return nnx.merge(graphdef, params, rest)(x, text)

    def loss(params, x, text):
        return jnp.mean(jnp.square(forward(params, x, text).astype(jnp.float32)))

    fwd = jax.jit(forward)
    fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return params, fwd, fwd_bwd


def median_ms(fn, *args, warmup: int, iters: int) -> float:
    for _ in range(warmup):  # the first call compiles
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def check_equivalence():
    """Kernel = grid: GNA with text tokens must equal dense attention over grid + text."""
    grid, dim, heads = (3, 4, 6), 64, 4
    kx, kt = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (2, *grid, dim))
    text = jax.random.normal(kt, (2, 5, dim))
    gna = DiTBlock(dim, heads, attention="gna", kernel_size=grid, rngs=nnx.Rngs(0))
    dense = DiTBlock(dim, heads, attention="dense", rngs=nnx.Rngs(0))
    with jax.default_matmul_precision("highest"):  # no TF32 on GPU: compare exactly
        diff = float(jnp.max(jnp.abs(gna(x, text) - dense(x, text))))
    print(f"check: full-window GNA block vs dense block (same weights), max |diff| = "
          f"{diff:.2e}")
    assert diff < 1e-4, diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="30x48x80 grid, 24 heads x 128 (default when a GPU is present)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    full = args.full or on_gpu
    cfg = FULL if full else SMALL
    if full and not on_gpu:
        print("warning: the full size on CPU takes very long (jnp reference path)")
    grid, heads, head_dim = cfg["grid"], cfg["heads"], cfg["head_dim"]
    dim, dtype = heads * head_dim, cfg["dtype"]
    # cuDNN's fused attention is the dense baseline on GPU (bf16); XLA's on CPU.
    implementation = "cudnn" if on_gpu else None
    print(f"JAX backend: {jax.default_backend()}; jax_gna backends: "
          f"{jax_gna.available_backends()}")
    check_equivalence()

    kx, kt = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (cfg["batch"], *grid, dim), dtype)
    text = jax.random.normal(kt, (cfg["batch"], cfg["text"], dim), dtype)
    n = math.prod(grid)
    print(f"\nDiT block: grid {'x'.join(map(str, grid))} = {n} tokens + {cfg['text']} text "
          f"tokens, {heads} heads x {head_dim}, dim {dim}, MLP {4 * dim}, "
          f"{jnp.dtype(dtype).name}, batch {cfg['batch']}; median of {args.iters} runs\n")

    rows = [("dense (" + (implementation or "xla") + ")", "dense", None, 1)]
    rows += [(name, "gna", ks, st) for name, ks, st in cfg["configs"]]
    header = (f"{'attention':28s} {'keys/query':>10s} {'fwd ms':>10s} {'fwd+bwd ms':>11s} "
              f"{'fwd x':>6s} {'fwd+bwd x':>9s}")
    print(header)
    print("-" * len(header))
    base = None
    for name, kind, ks, st in rows:
        block = DiTBlock(dim, heads, attention=kind, kernel_size=ks, stride=st,
                         dense_implementation=implementation, dtype=dtype, rngs=nnx.Rngs(0))
        params, fwd, fwd_bwd = make_fns(block)
        del block
        if kind == "dense":
            keys = n + cfg["text"]
        else:
            window = semantics.keys_per_query(grid, semantics.make_params(grid, ks, st))
            keys = float(window.mean()) + cfg["text"]
        try:
            t_fwd = median_ms(fwd, params, x, text, warmup=args.warmup, iters=args.iters)
            t_all = median_ms(fwd_bwd, params, x, text, warmup=args.warmup, iters=args.iters)
        except Exception as err:  # e.g. no cuDNN attention for this shape: report, go on
            print(f"{name:28s} {keys:10.0f}   failed: {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:120]}", flush=True)
            continue
        finally:
            del params, fwd, fwd_bwd
        base = base or (t_fwd, t_all)  # the first row that ran (dense, normally)
        print(f"{name:28s} {keys:10.0f} {t_fwd:10.2f} {t_all:11.2f} "
              f"{base[0] / t_fwd:6.2f} {base[1] / t_all:9.2f}", flush=True)
    if not on_gpu:
        print("\n(on CPU jax_gna runs its jnp reference; the speedups that matter are the "
              "CUDA kernels' on GPU)")


if __name__ == "__main__":
    main()
