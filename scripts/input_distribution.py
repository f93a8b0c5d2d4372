"""Does the input distribution change kernel speed? Device time of the sm90 forward and of
cuDNN dense attention on the same problem with standard-normal inputs (the benchmark's) and
with uniform(-2.5, 2.5) q/k, uniform(-1, 1) v inputs (the sm90 self-test's).

    python scripts/input_distribution.py [--case seq32k] [--calls 20]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import jax_gna
from jax_gna import _device_trace
from jax_gna.simulator.suite import SUITE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs="+", default=["seq32k"])
    ap.add_argument("--calls", type=int, default=20)
    a = ap.parse_args()
    for name in a.case:
        case = next(c for c in SUITE if c.name == name)
        stride = case.strides[-1]
        shape = (1, *case.shape, case.heads, 128)
        n = 1
        for s in case.shape:
            n *= s

        def gna(q, k, v):
            return jax_gna.attention(q, k, v, case.kernel_size, stride, backend="sm90")

        def dense(q, k, v):
            f = lambda x: x.reshape(1, n, case.heads, 128)
            return jax.nn.dot_product_attention(f(q), f(k), f(v), implementation="cudnn")

        def inputs(kind, seed):
            ks = jax.random.split(jax.random.PRNGKey(seed), 3)
            if kind == "normal":
                return tuple(jax.random.normal(k, shape, jnp.bfloat16) for k in ks)
            amp = (2.5, 2.5, 1.0)
            return tuple(jax.random.uniform(k, shape, jnp.float32, -m, m).astype(jnp.bfloat16)
                         for k, m in zip(ks, amp))

        for kind in ("normal", "uniform", "normal"):
            sets = [inputs(kind, i) for i in range(3)]
            for label, fn in (("sm90", gna), ("cudnn", dense)):
                tr = _device_trace.trace_device(jax.jit(fn), sets, calls=a.calls, warmup=3)
                print(f"{name} stride {stride} {kind:8s} {label:6s} "
                      f"{tr.devices[0].median_call_ms:.3f} ms", flush=True)
            del sets


if __name__ == "__main__":
    main()
