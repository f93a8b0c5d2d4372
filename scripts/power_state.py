"""Does the GPU's power state explain timing differences between short and sustained runs?

Times the sm90 forward on seq32k (window = stride = 2048), cuDNN dense attention on the same
tokens, and the sm90 kernel on the dense-equivalent problem (window = the whole sequence), from
the profiler's per-kernel device records, in several regimes, while ``nvidia-smi`` samples the
SM clock, power and the clock-event reasons every 50 ms:

  cold        after 3 s idle, a short burst of each
  heated      right after ~3 s of back-to-back cuDNN dense calls
  sustained   after ~3 s of back-to-back calls of the kernel itself
  interleaved rounds of [cuDNN x1, sm90 seq32k x16, sm90 dense x1] in one trace: every kernel
              sees the same clocks (a kernel that draws less than cuDNN gets no credit
              for the higher clock it reaches alone)

    python scripts/power_state.py [--heads 24] [--seconds 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time

import jax
import jax.numpy as jnp

import jax_gna
from jax_gna import _device_trace, profile

N, D = 32768, 128
FIELDS = "clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active"


class SmiLog:
    """nvidia-smi samples, each stamped with the host time it was read."""

    def __init__(self):
        self.rows: list[tuple[float, list[str]]] = []
        fields = FIELDS
        probe = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv"],
                               capture_output=True, text=True)
        if probe.returncode:   # older drivers name the reasons "clocks_throttle_reasons"
            fields = fields.replace("clocks_event_reasons", "clocks_throttle_reasons")
        self.proc = subprocess.Popen(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits",
             "-lms", "50"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.rows.append((time.time(), [f.strip() for f in line.split(",")]))

    def summary(self, t0: float, t1: float) -> str:
        rows = [r for t, r in self.rows if t0 <= t <= t1 and len(r) == 5]
        if not rows:
            return "no nvidia-smi samples"
        try:
            sm = [float(r[0]) for r in rows]
            pw = [float(r[2]) for r in rows]
        except ValueError:
            return f"nvidia-smi: {rows[0]}"
        reasons = sorted({r[4] for r in rows})
        return (f"SM clock {min(sm):.0f}-{max(sm):.0f} (mean {statistics.mean(sm):.0f}) MHz, "
                f"mem {rows[-1][1]} MHz, power {statistics.mean(pw):.0f} W (max {max(pw):.0f}), "
                f"temp {rows[-1][3]} C, event reasons {','.join(reasons)}")

    def close(self):
        self.proc.terminate()


def classify(events) -> dict[str, list[float]]:
    """Kernel times (ms) from (name, start_ns, duration_ns) events, by kind: sm90 kernels split by length (seq32k ~1.3 ms, dense ~20 ms),
    other kernels over 5 ms are cuDNN's attention; short others (memsets) are left out."""
    out: dict[str, list[float]] = {"sm90 seq32k": [], "sm90 dense": [], "cudnn dense": []}
    for name, _, dur in events:
        ms = dur / 1e6
        if "gna" in name:
            out["sm90 dense" if ms > 5 else "sm90 seq32k"].append(ms)
        elif ms > 5:
            out["cudnn dense"].append(ms)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    h = a.heads
    shape = (1, N, h, D)
    flops_seq = 4.0 * N * 2048 * h * D
    flops_dense = 4.0 * N * N * h * D

    sets = []
    for s in range(3):
        ks = jax.random.split(jax.random.PRNGKey(s), 3)
        sets.append(tuple(jax.random.normal(k, shape, jnp.bfloat16) for k in ks))
    seq = jax.jit(lambda q, k, v: jax_gna.attention(q, k, v, 2048, 2048, backend="sm90"))
    gdense = jax.jit(lambda q, k, v: jax_gna.attention(q, k, v, N, 1, backend="sm90"))
    cudnn = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v,
                                                                 implementation="cudnn"))
    for f in (seq, gdense, cudnn):
        for i in range(3):
            jax.block_until_ready(f(*sets[i]))

    def calls(f, n):
        outs = [f(*sets[i % 3]) for i in range(n)]
        jax.block_until_ready(outs)

    smi = SmiLog()
    rows = []

    def phase(name, prepare, run):
        prepare()
        t0 = time.time()
        planes = _device_trace._profiled_events(run)
        ev = classify(planes[0][1] if planes else [])
        t1 = time.time()
        figs = []
        for kind, ms in ev.items():
            if not ms:
                continue
            fl = flops_seq if kind == "sm90 seq32k" else flops_dense
            med = statistics.median(ms)
            figs.append(f"{kind} {med:.3f} ms ({fl / med / 1e9:.0f} TF/s, n={len(ms)}, "
                        f"min {min(ms):.3f} max {max(ms):.3f})")
        rows.append((name, ev))
        print(f"[{name}] " + "; ".join(figs), flush=True)
        print(f"[{name}] {smi.summary(t0, t1)}", flush=True)

    idle = lambda: time.sleep(a.seconds)
    phase("cold seq32k", idle, lambda: calls(seq, 20))
    phase("cold cudnn", idle, lambda: calls(cudnn, 5))
    phase("cold gna-dense", idle, lambda: calls(gdense, 5))
    phase("after cudnn load: seq32k", lambda: profile._settle(cudnn, sets, a.seconds),
          lambda: calls(seq, 20))
    phase("after seq32k load: seq32k", lambda: profile._settle(seq, sets, a.seconds),
          lambda: calls(seq, 40))
    phase("after gna-dense load: gna-dense", lambda: profile._settle(gdense, sets, a.seconds),
          lambda: calls(gdense, 5))

    def interleaved():
        for r in range(8):
            jax.block_until_ready(cudnn(*sets[r % 3]))
            calls(seq, 16)
            jax.block_until_ready(gdense(*sets[r % 3]))
    phase("interleaved (hot)", lambda: profile._settle(cudnn, sets, a.seconds), interleaved)
    phase("interleaved (after idle)", idle, interleaved)
    t = time.time()
    time.sleep(1.0)
    print(f"[idle] {smi.summary(t, time.time())}")
    smi.close()

    # The fair ratios: same power state (interleaved rounds).
    for name, ev in rows:
        if ev["cudnn dense"] and ev["sm90 seq32k"]:
            c = statistics.median(ev["cudnn dense"])
            s = statistics.median(ev["sm90 seq32k"])
            g = statistics.median(ev["sm90 dense"]) if ev["sm90 dense"] else float("nan")
            print(f"RATIO [{name}] seq32k/cuDNN TF/s {(flops_seq / s) / (flops_dense / c):.3f}, "
                  f"gna-dense/cuDNN {c / g:.3f}")


if __name__ == "__main__":
    main()
