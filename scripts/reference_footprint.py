"""Time and peak memory of the memory-efficient jnp reference on one configuration.

CPU: python scripts/reference_footprint.py --shape 128 128 --heads 24 \
    --head-dim 64 --window 13 13 --backward
GPU: python scripts/reference_footprint.py --shape 30 48 80 --heads 24 --head-dim 128 \
    --window 18 24 24 --dtype bf16
Prints the median wall time over --repeats (after one warm-up) and the peak memory: the
process's peak RSS on CPU, the device allocator's peak bytes on GPU. The dense N x N logits
of the same problem are printed for scale.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gna


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", required=True)
    ap.add_argument("--window", type=int, nargs="+", required=True)
    ap.add_argument("--stride", type=int, nargs="+", default=None)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}[a.dtype]
    shape = (a.batch, *a.shape, a.heads, a.head_dim)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(kk, shape, dtype) for kk in keys)
    stride = a.stride or 1

    def fwd(q, k, v):
        return jax_gna.attention(q, k, v, tuple(a.window), stride, backend="reference")

    if a.backward:
        fn = jax.jit(jax.value_and_grad(lambda q, k, v: fwd(q, k, v).astype(jnp.float32)
                                        .sum(), argnums=(0, 1, 2)))
    else:
        fn = jax.jit(fwd)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(q, k, v))
    first = time.perf_counter() - t0
    times = []
    for i in range(a.repeats):
        qi = q * (1 + 0.01 * (i + 1))   # fresh inputs each run
        jax.block_until_ready(qi)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(qi, k, v))
        times.append(time.perf_counter() - t0)
    dev = jax.devices()[0]
    n = int(np.prod(a.shape))
    dense_logits = a.batch * a.heads * n * n * 4
    print(f"device: {dev.device_kind} ({dev.platform})")
    print(f"problem: {shape} {a.dtype} window {a.window} stride {stride} "
          f"{'fwd+bwd' if a.backward else 'fwd'}")
    print(f"first call (compile + run): {first:.2f} s; median of {a.repeats}: "
          f"{statistics.median(times):.3f} s")
    if dev.platform == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak RSS: {peak:.2f} GiB")
    else:
        stats = dev.memory_stats() or {}
        print(f"peak device memory: {stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB")
    print(f"(dense fp32 logits of this problem alone: {dense_logits / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
