"""Quickstart: 2-D neighborhood attention inside jax.jit.

Runs on whatever JAX finds: on a CUDA GPU the fused kernel (when one serves the case), else
the jnp reference. It checks the result against the reference backend, then times GNA
against dense attention over the same tokens.

    python examples/quickstart.py            # size picked for the device
    python examples/quickstart.py --size 64 --heads 8
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gna


def median_time(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))            # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    on_gpu = jax.default_backend() == "gpu"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128 if on_gpu else 32)
    ap.add_argument("--heads", type=int, default=24 if on_gpu else 4)
    ap.add_argument("--head-dim", type=int, default=128 if on_gpu else 64)
    ap.add_argument("--window", type=int, default=13)
    args = ap.parse_args()

    dtype = jnp.bfloat16 if on_gpu else jnp.float32
    shape = (1, args.size, args.size, args.heads, args.head_dim)   # [batch, H, W, heads, dim]
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(x, shape, dtype) for x in (kq, kk, kv))

    @jax.jit
    def gna(q, k, v):
        return jax_gna.attention(q, k, v, kernel_size=(args.window, args.window))

    @jax.jit
    def dense(q, k, v):
        flat = lambda x: x.reshape(x.shape[0], -1, *x.shape[-2:])  # noqa: E731
        impl = "cudnn" if on_gpu else "xla"
        return jax.nn.dot_product_attention(flat(q), flat(k), flat(v), implementation=impl)

    out = gna(q, k, v)
    if on_gpu:   # the kernel against the jnp reference backend
        check = "reference backend"
        ref = jax.jit(lambda q, k, v: jax_gna.attention(
            q, k, v, (args.window, args.window), backend="reference"))(q, k, v)
    else:        # the reference backend against the dense masked oracle
        check = "dense masked oracle"
        from jax_gna._config import AttentionConfig
        from jax_gna.reference import dense_attention
        config = AttentionConfig((args.size, args.size),
                                 jax_gna.make_params((args.size,) * 2, args.window),
                                 args.head_dim ** -0.5)
        ref = dense_attention(q, k, v, config)[0]
    err = float(jnp.linalg.norm((out - ref).astype(jnp.float32))
                / jnp.linalg.norm(ref.astype(jnp.float32)))
    choice = jax_gna.explain(q, k, v, (args.window, args.window))
    t_gna = median_time(gna, q, k, v)
    t_dense = median_time(dense, q, k, v)
    print(f"device: {jax.devices()[0].device_kind}; input {shape} {jnp.dtype(dtype).name}; "
          f"window {args.window}x{args.window}")
    print(f"backend: forward -> {choice['fwd']}")
    print(f"relative error vs {check}: {err:.2e}")
    print(f"GNA   {t_gna * 1e3:8.2f} ms")
    print(f"dense {t_dense * 1e3:8.2f} ms   ({t_dense / t_gna:.2f}x)")
    tol = 1e-2 if dtype != jnp.float32 else 1e-5
    if not err < tol:
        raise SystemExit(f"FAILED: error {err:.2e} above {tol:.0e}")


if __name__ == "__main__":
    main()
