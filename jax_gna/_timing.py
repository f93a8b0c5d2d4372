"""Device-synchronised timing of jitted functions (shared by the profiler and benchmarks/).

Method (JAX has no public CUDA-event API):

1. Warm-up: ``warmup`` calls (at least 2), each waited on with ``jax.block_until_ready``
   (the first one compiles; the rest settle clocks, allocator pools and autotuning caches).
2. Calibration: from the last warm-up call's wall time, choose ``calls_per_group`` so one
   group lasts about ``target_group_s`` (at least 1 call, at most ``max_calls_per_group``).
3. Measurement: ``repeats`` groups. A group starts after everything before it has finished
   (``block_until_ready``), enqueues ``calls_per_group`` calls back to back and waits for
   them, so the device runs them without host gaps and the host's launch latency is paid
   once per group instead of once per call; per-call time = group time / calls. We report
   the median (robust to a stray slow group) and the minimum over groups.
4. Rotating inputs: calls cycle through several distinct input sets, so no call reuses the
   previous call's operands while they are still hot in L2 (a 50 MB L2 holds a small
   problem's K/V entirely and would flatter it).

On a GPU all calls of a group run in order on one stream, so waiting on the last output
waits for all; elsewhere (CPU: executions may overlap) we wait on every output of the group.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Sequence

import jax

__all__ = ["Timing", "time_function", "is_cuda_gpu", "platform_description"]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-call times in seconds, one per measured group."""

    per_call_s: tuple[float, ...]
    calls_per_group: int
    warmup: int
    input_sets: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.per_call_s)

    @property
    def min_s(self) -> float:
        return min(self.per_call_s)

    @property
    def median_ms(self) -> float:
        return 1e3 * self.median_s

    @property
    def min_ms(self) -> float:
        return 1e3 * self.min_s

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms,
                "groups": len(self.per_call_s), "calls_per_group": self.calls_per_group,
                "warmup": self.warmup, "input_sets": self.input_sets,
                "method": "median over groups of back-to-back calls between "
                          "block_until_ready syncs, rotating input sets"}


def is_cuda_gpu(device: jax.Device | None = None) -> bool:
    """True when ``device`` (default: the first default device) is an NVIDIA CUDA GPU."""
    device = device or jax.devices()[0]
    if device.platform not in ("gpu", "cuda"):
        return False
    version = str(getattr(device.client, "platform_version", "")).lower()
    return "cuda" in version or "nvidia" in device.device_kind.lower()


def platform_description(device: jax.Device | None = None) -> dict[str, str]:
    device = device or jax.devices()[0]
    return {"platform": device.platform, "device_kind": device.device_kind,
            "jax_version": jax.__version__}


def time_function(fn: Callable[..., Any], arg_sets: Sequence[Sequence[Any]], *,
                  warmup: int = 3, repeats: int = 10, calls_per_group: int | None = None,
                  target_group_s: float = 0.05, max_calls_per_group: int = 32) -> Timing:
    """Time ``fn(*arg_sets[i])`` (a jitted function), cycling through ``arg_sets``.

    ``calls_per_group=None`` calibrates it (see the module docstring); pass 1 to time each
    call on its own.
    """
    if not arg_sets:
        raise ValueError("time_function needs at least one input set")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    n_sets = len(arg_sets)
    wait_on_last_only = is_cuda_gpu()
    counter = 0

    def call():
        nonlocal counter
        out = fn(*arg_sets[counter % n_sets])
        counter += 1
        return out

    # At least two warm-up calls: the first compiles, so only a later one may calibrate.
    last = 0.0
    for _ in range(max(2, warmup)):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        last = time.perf_counter() - t0

    if calls_per_group is None:
        calls_per_group = int(min(max_calls_per_group,
                                  max(1, math.ceil(target_group_s / max(last, 1e-9)))))

    per_call = []
    for _ in range(repeats):
        outs = []
        t0 = time.perf_counter()
        for _ in range(calls_per_group):
            out = call()
            if wait_on_last_only:
                outs = [out]   # drop earlier outputs: their buffers are freed once done
            else:
                outs.append(out)
        jax.block_until_ready(outs)
        per_call.append((time.perf_counter() - t0) / calls_per_group)
    return Timing(tuple(per_call), calls_per_group, max(2, warmup), n_sets)
