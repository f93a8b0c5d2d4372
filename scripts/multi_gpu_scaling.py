"""Multi-GPU scaling of jax_gna: batch / head sharding and spatial context parallelism.

For each mode, the SAME global problem runs on 1 device and on 2, 4, 8 devices; the table gives
the median per-call time, the speedup over one device and the scaling efficiency
``t1 / (n * tn)``, plus the collectives XLA put in the compiled program.

Modes (Hunyuan-size layer, bf16, head_dim 128, window 18x24x24, stride 1):
  batch    B=8, 30x48x80 tokens, 24 heads; batch split over the devices (jax.jit + shardings)
  heads    B=1, 30x48x80, 24 heads; heads split over the devices
  context  B=1, 120x48x80 (time 120 divides 2, 4 and 8), 24 heads; the time axis split over
           the devices with jax_gna.context_parallel_attention (halo exchange, ppermute)
Directions: fwd, and fwdbwd (forward + jax.vjp with a fixed output cotangent: no loss
reduction in the program).

GPU (2/4/8 x H200):
  python scripts/multi_gpu_scaling.py                       # all modes, directions, 1..N GPUs
  python scripts/multi_gpu_scaling.py --modes context --directions fwd --json out.json
CPU smoke test (tiny shapes, float32, 8 host devices):
  python scripts/multi_gpu_scaling.py --tiny --cpu-devices 8

Timing: jax_gna._timing.time_function (warm-up calls, then the median over groups of
back-to-back calls between block_until_ready synchronisations). NVLink multicast (NVLS) is left
off: nothing here enables it, and NCCL_NVLS_ENABLE defaults to 0 for this process.
"""

from __future__ import annotations

import os

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")   # keep NCCL's NVLink multicast off

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

MODES = ("batch", "heads", "context")
DIRECTIONS = ("fwd", "fwdbwd")


@dataclasses.dataclass(frozen=True)
class Layer:
    batch: int
    spatial: tuple[int, ...]
    heads: int
    head_dim: int
    window: tuple[int, ...]
    dtype: str

    def shape(self):
        return (self.batch, *self.spatial, self.heads, self.head_dim)


def layers(tiny: bool) -> dict[str, Layer]:
    if tiny:
        return {"batch": Layer(8, (6, 8, 10), 8, 16, (3, 4, 4), "float32"),
                "heads": Layer(1, (6, 8, 10), 8, 16, (3, 4, 4), "float32"),
                "context": Layer(1, (16, 8, 10), 8, 16, (3, 4, 4), "float32")}
    return {"batch": Layer(8, (30, 48, 80), 24, 128, (18, 24, 24), "bfloat16"),
            "heads": Layer(1, (30, 48, 80), 24, 128, (18, 24, 24), "bfloat16"),
            "context": Layer(1, (120, 48, 80), 24, 128, (18, 24, 24), "bfloat16")}


# ----------------------------------------------------------------------------------------
# Programs
# ----------------------------------------------------------------------------------------


def attend_fn(mode: str, layer: Layer, mesh: Mesh | None, backend):
    """``(q, k, v) -> out`` for the mode on ``mesh`` (None: one device, no sharding)."""
    import jax_gna
    from jax_gna.context_parallel import context_parallel_attention_on_mesh

    if mode == "context" and mesh is not None:
        def attend(q, k, v):
            return context_parallel_attention_on_mesh(q, k, v, layer.window, mesh=mesh,
                                                      axis_name="x", spatial_axis=0,
                                                      backend=backend)
    else:
        def attend(q, k, v):
            return jax_gna.attention(q, k, v, layer.window, backend=backend)
    return attend


def program(attend, direction: str):
    if direction == "fwd":
        return lambda q, k, v, dout: attend(q, k, v)

    def fwdbwd(q, k, v, dout):
        out, vjp = jax.vjp(attend, q, k, v)
        return (out,) + tuple(vjp(dout))
    return fwdbwd


def spec_for(mode: str, rank: int):
    if mode == "batch":
        return P("x")
    if mode == "heads":
        return P(None, *(None,) * rank, "x", None)
    return P(None, "x")          # context: the first spatial dim


_COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")


def collective_summary(hlo: str) -> str:
    counts: dict[str, int] = {}
    for m in _COLLECTIVE.finditer(hlo):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"


def effective_flops(layer: Layer, direction: str) -> float:
    """docs/semantics.md: forward 4 * B * H * sum_q(keys(q)) * D; forward+backward 3.5x that."""
    from jax_gna import semantics
    params = semantics.make_params(layer.spatial, layer.window)
    pairs = float(semantics.keys_per_query(layer.spatial, params).sum())
    fwd = 4.0 * layer.batch * layer.heads * pairs * layer.head_dim
    return fwd * (3.5 if direction == "fwdbwd" else 1.0)


# ----------------------------------------------------------------------------------------
# One measurement
# ----------------------------------------------------------------------------------------


def measure(mode: str, layer: Layer, direction: str, devices, args) -> dict:
    from jax_gna._timing import time_function
    n = len(devices)
    mesh = None
    if n > 1:
        mesh = Mesh(np.array(devices), ("x",), axis_types=(AxisType.Auto,))
    dtype = jnp.dtype(layer.dtype)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    arrays = [jax.random.normal(kk, layer.shape(), dtype) for kk in keys]
    if mesh is not None:
        sharding = NamedSharding(mesh, spec_for(mode, len(layer.spatial)))
        arrays = [jax.device_put(a, sharding) for a in arrays]
    else:
        arrays = [jax.device_put(a, devices[0]) for a in arrays]
    fn = jax.jit(program(attend_fn(mode, layer, mesh, args.backend), direction))
    hlo = fn.lower(*arrays).compile().as_text()
    timing = time_function(fn, [arrays], warmup=args.warmup, repeats=args.repeats)
    row = {"mode": mode, "direction": direction, "devices": n, "median_ms": timing.median_ms,
           "min_ms": timing.min_ms, "collectives": collective_summary(hlo),
           "tflops": effective_flops(layer, direction) / timing.median_s / 1e12}
    if args.trace:   # device time: the slowest device's median busy time per call
        from jax_gna._device_trace import trace_device
        trace = trace_device(fn, [arrays], calls=5, warmup=0)
        print(f"# trace {mode} {direction} x{n}:\n" + trace.summary(top=6), flush=True)
        busy = [d.median_call_ms for d in trace.devices if d.call_ms]
        if len(busy) == n:
            row["device_ms"] = max(busy)
    # Same inputs on every device count: the sharded results must equal the one-device ones
    # (to bf16 rounding of the kernels' different tilings).
    results = [np.asarray(x, np.float32) for x in jax.tree.leaves(fn(*arrays))]
    if n == 1:
        _ONE_DEVICE[(mode, direction)] = results
    elif (mode, direction) in _ONE_DEVICE:
        row["rel_err"] = max(_rel_err(x, y) for x, y in zip(results,
                                                            _ONE_DEVICE[(mode, direction)]))
    if mode == "context" and n > 1:
        from jax_gna.context_parallel import plan_for_slabs
        plan = plan_for_slabs(layer.spatial[0], n, layer.window[0], 1, 1, False)
        row["notes"] = (f"slab {plan.slab}, local problem {plan.window} (computed: the "
                        f"slab's Q tiles; slab offsets {sorted(set(plan.query_offsets))}), "
                        f"halo {plan.left}+{plan.right}")
    del arrays
    return row


_ONE_DEVICE: dict = {}   # (mode, direction) -> results on one device, for the comparison


def _rel_err(x, ref) -> float:
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(x - ref)) / (den if den > 0 else 1.0)


def backend_note(layer: Layer, backend) -> str:
    import jax_gna
    x = jax.ShapeDtypeStruct(layer.shape(), jnp.dtype(layer.dtype))
    try:
        return str(jax_gna.explain(x, x, x, layer.window, backend=backend))
    except Exception as e:  # noqa: BLE001  (a note only)
        return f"explain failed: {e}"


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def print_table(rows):
    base = {(r["mode"], r["direction"]): r["median_ms"] for r in rows if r["devices"] == 1}
    dbase = {(r["mode"], r["direction"]): r["device_ms"] for r in rows
             if r["devices"] == 1 and "device_ms" in r}
    head = (f"{'mode':8} {'dir':7} {'dev':>3} {'median ms':>10} {'speedup':>8} {'eff':>6} "
            f"{'TFLOP/s':>8}  collectives / notes")
    print(head)
    print("-" * len(head))
    for r in rows:
        t1 = base.get((r["mode"], r["direction"]))
        if t1 is not None:
            r["speedup"] = t1 / r["median_ms"]
            r["efficiency"] = r["speedup"] / r["devices"]
            sp, eff = f"{r['speedup']:8.2f}", f"{r['efficiency']:6.2f}"
        else:
            sp, eff = f"{'-':>8}", f"{'-':>6}"
        note = r["collectives"] + (f"; {r['notes']}" if r.get("notes") else "")
        d1 = dbase.get((r["mode"], r["direction"]))
        if d1 is not None and "device_ms" in r:
            r["device_efficiency"] = d1 / r["device_ms"] / r["devices"]
            note += (f"; device busy {r['device_ms']:.3f} ms (slowest device), efficiency "
                     f"{r['device_efficiency']:.2f}")
        if "rel_err" in r:
            note += f"; max rel err vs 1 device {r['rel_err']:.1e}"
        print(f"{r['mode']:8} {r['direction']:7} {r['devices']:3d} {r['median_ms']:10.3f} "
              f"{sp} {eff} {r['tflops']:8.3g}  {note}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--directions", default=",".join(DIRECTIONS))
    ap.add_argument("--devices", default=None,
                    help="comma-separated device counts (default: 1 and powers of 2 up to "
                         "all devices)")
    ap.add_argument("--tiny", action="store_true", help="tiny float32 shapes (CPU test)")
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="run on this many host CPU devices (sets jax_num_cpu_devices)")
    ap.add_argument("--backend", default=None, help="jax_gna backend (default: best)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--trace", action="store_true",
                    help="also trace 5 calls: each device's top ops, and the device-time "
                         "efficiency (slowest device's median busy time per call)")
    ap.add_argument("--partitioner", choices=("shardy", "gspmd"), default="shardy",
                    help="XLA partitioner (sets jax_use_shardy_partitioner)")
    a = ap.parse_args(argv)
    jax.config.update("jax_use_shardy_partitioner", a.partitioner == "shardy")

    if a.cpu_devices:
        jax.config.update("jax_num_cpu_devices", a.cpu_devices)
    all_devices = jax.devices("cpu") if a.cpu_devices else jax.devices()
    if a.devices:
        counts = [int(x) for x in a.devices.split(",")]
    else:
        counts = [1] + [2 ** i for i in range(1, 8) if 2 ** i <= len(all_devices)]
    modes = [m for m in a.modes.split(",") if m]
    directions = [d for d in a.directions.split(",") if d]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; choose from {MODES}")
    for d in directions:
        if d not in DIRECTIONS:
            ap.error(f"unknown direction {d!r}; choose from {DIRECTIONS}")

    import jax_gna  # noqa: F401  (after the device configuration above)
    import jax_gna.partitioning  # noqa: F401  (sharding rules active before the first jit)

    dev0 = all_devices[0]
    print(f"# jax {jax.__version__}, {len(all_devices)} x {dev0.device_kind} "
          f"({dev0.platform}); NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE')}; "
          f"partitioner {a.partitioner}")
    shapes = layers(a.tiny)
    rows = []
    for mode in modes:
        layer = shapes[mode]
        print(f"# {mode}: {layer}; backend: {backend_note(layer, a.backend)}", flush=True)
        for direction in directions:
            for n in counts:
                if n > len(all_devices):
                    print(f"# skip {mode} {direction} x{n}: only {len(all_devices)} devices")
                    continue
                try:
                    row = measure(mode, layer, direction, all_devices[:n], a)
                except Exception as e:  # noqa: BLE001  (report and go on with the next)
                    print(f"# {mode} {direction} x{n} failed: {type(e).__name__}: {e}",
                          flush=True)
                    continue
                rows.append(row)
                print(f"#   {mode} {direction} x{n}: {row['median_ms']:.3f} ms "
                      f"({row['collectives']})", flush=True)
    print()
    print_table(rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"jax": jax.__version__, "device_kind": dev0.device_kind,
                       "tiny": a.tiny, "rows": rows}, f, indent=1)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
