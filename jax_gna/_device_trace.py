"""Device-side time of a jitted function, from the profiler's per-kernel records.

``jax_gna._timing`` measures host wall time around groups of back-to-back calls: right for
"what does a call cost", but it cannot say whether a slow call is a slow kernel, several
kernels, or idle gaps between them. This module runs ``calls`` calls under
``jax.profiler.trace`` and reads the trace back (``jax.profiler.ProfileData``): on a GPU the
device planes hold one event per kernel / memcpy with its device start and duration (CUPTI
activity records), tagged with the HLO op that launched it.

Reported per device plane, per call: the device time of each call (the busy time of that
call's events: the union of their intervals, so concurrent streams count once and idle gaps,
e.g. while the host launches the next kernel, not at all; the calls run one after another,
so the plane's events, in time order, split into ``calls`` equal runs), the sum of kernel
durations and busy time averaged over the calls, and each HLO op's share. Where the
trace has no device events (CPU, or a profiler without CUPTI), ``trace_device`` returns an
empty result and says why; nothing here is needed for correctness.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import statistics
import tempfile
from typing import Any, Callable, Sequence

import jax

__all__ = ["DeviceTrace", "DeviceOps", "trace_device", "trace_interleaved"]


@dataclasses.dataclass(frozen=True)
class DeviceOps:
    """One device plane's events, per call."""

    plane: str
    kernel_ms: float                               # sum of event durations / calls
    busy_ms: float                                 # union of event intervals / calls
    ops: tuple[tuple[str, int, float], ...]        # (op, events per call, ms per call)
    call_ms: tuple[float, ...] = ()                # each call's device time (see above)

    @property
    def median_call_ms(self) -> float | None:
        return statistics.median(self.call_ms) if self.call_ms else None

    def to_dict(self, top: int = 8) -> dict[str, Any]:
        return {"plane": self.plane, "kernel_ms": self.kernel_ms, "busy_ms": self.busy_ms,
                "call_ms": list(self.call_ms), "median_call_ms": self.median_call_ms,
                "ops": [{"op": o, "events_per_call": n, "ms_per_call": t}
                        for o, n, t in self.ops[:top]]}


@dataclasses.dataclass(frozen=True)
class DeviceTrace:
    calls: int
    devices: tuple[DeviceOps, ...]
    note: str = ""

    def to_dict(self, top: int = 8) -> dict[str, Any]:
        return {"calls": self.calls, "note": self.note,
                "devices": [d.to_dict(top) for d in self.devices]}

    def summary(self, top: int = 4) -> str:
        if not self.devices:
            return f"device trace: {self.note or 'no device events'}"
        lines = []
        for d in self.devices:
            ops = ", ".join(f"{o} {t:.3f}" for o, _, t in d.ops[:top])
            call = (f"median call {d.median_call_ms:.3f} ms, " if d.call_ms else "")
            lines.append(f"{d.plane}: {call}kernels {d.kernel_ms:.3f} ms/call, busy "
                         f"{d.busy_ms:.3f} ms/call; top ops (ms/call): {ops}")
        return "\n".join(lines)


def _union_ns(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def _call_times_ms(intervals: list[tuple[float, float]], calls: int) -> tuple[float, ...]:
    """Per-call device (busy) times: every call launches the same events, one call after
    the other, so the events sorted by start split into ``calls`` equal runs. Empty when
    the count does not divide (then only the per-call averages are meaningful)."""
    if len(intervals) % calls:
        return ()
    ordered = sorted(intervals)
    n = len(ordered) // calls
    return tuple(_union_ns(ordered[i * n:(i + 1) * n]) / 1e6 for i in range(calls))


def _op_name(event) -> str:
    stats = dict((k, v) for k, v in event.stats)
    op = stats.get("hlo_op")
    name = event.name
    short = name if len(name) <= 60 else name[:57] + "..."
    return f"{op} [{short}]" if op else short


def _is_device_plane(name: str) -> bool:
    return name.startswith("/device:") and "CPU" not in name


def trace_device(fn: Callable[..., Any], arg_sets: Sequence[Sequence[Any]], *,
                 calls: int = 10, warmup: int = 2) -> DeviceTrace:
    """Run ``fn(*arg_sets[i % len])`` ``calls`` times under the profiler (after ``warmup``
    untraced calls) and return the device planes' per-call figures."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1; got {calls}")
    for i in range(max(0, warmup)):
        jax.block_until_ready(fn(*arg_sets[i % len(arg_sets)]))

    def run():
        outs = [fn(*arg_sets[i % len(arg_sets)]) for i in range(calls)]
        jax.block_until_ready(outs)

    planes = _profiled_events(run)
    if planes is None:
        return DeviceTrace(calls, (), "the profiler wrote no trace")
    devices = []
    for name, events in planes:
        per_op: dict[str, list[float]] = collections.defaultdict(list)
        intervals = []
        for op, start, dur in events:
            per_op[op].append(dur)
            intervals.append((start, start + dur))
        if not intervals:
            continue
        ops = sorted(((op, round(len(d) / calls, 2), sum(d) / calls / 1e6)
                      for op, d in per_op.items()), key=lambda t: -t[2])
        devices.append(DeviceOps(name,
                                 sum(e - s for s, e in intervals) / calls / 1e6,
                                 _union_ns(intervals) / calls / 1e6, tuple(ops),
                                 _call_times_ms(intervals, calls)))
    note = "" if devices else "no device events in the trace (CPU, or no CUPTI)"
    return DeviceTrace(calls, tuple(devices), note)


def _profiled_events(run: Callable[[], Any]
                     ) -> list[tuple[str, list[tuple[str, float, float]]]] | None:
    """Runs ``run()`` under the profiler; per device plane, its (op, start_ns, duration_ns)
    events. None when the profiler wrote no trace."""
    from jax.profiler import ProfileData
    with tempfile.TemporaryDirectory(prefix="jax_gna_trace_") as tmp:
        with jax.profiler.trace(tmp):
            run()
        paths = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            return None
        data = ProfileData.from_file(paths[0])
    planes = []
    for plane in data.planes:
        if not _is_device_plane(plane.name):
            continue
        events = []
        for line in plane.lines:
            # Derived lines ("XLA Ops", "XLA Modules", ...) repeat the stream events.
            if line.name.startswith("XLA") or "Name Scope" in line.name:
                continue
            for ev in line.events:
                if ev.duration_ns > 0:
                    events.append((_op_name(ev), ev.start_ns, ev.duration_ns))
        planes.append((plane.name, events))
    return planes


def trace_interleaved(fns: Sequence[tuple[Callable[..., Any], Sequence[Sequence[Any]]]],
                      pattern: Sequence[int], *, rounds: int = 6,
                      warmup: int = 1) -> tuple[tuple[float, ...], ...] | None:
    """Device time of each call of several functions run in one trace, interleaved:
    ``rounds`` times, ``fns[i]`` is called ``pattern[i]`` times in turn (a device sync after
    each function's calls, none between them). A GPU's clocks follow its power draw (on
    the H200 a sustained cuDNN attention holds it at its power cap, ~1.6 GHz, where a short
    burst runs at 1.98 GHz), so kernels timed one after the other in separate runs are
    timed at different clocks; interleaved, every function sees the same mix of states, so
    the ratio of their times compares them at equal clocks.

    The events of the first device plane are split into calls in launch order, each call
    taking as many events as that function launches per call (counted in a short trace of
    the function alone); returns per function the device (busy) time of each of its calls,
    in ms, or None without device events or when the counts do not add up."""
    if len(fns) != len(pattern) or not fns:
        raise ValueError("fns and pattern must have the same non-zero length")
    for fn, args in fns:
        for i in range(max(1, warmup)):
            jax.block_until_ready(fn(*args[i % len(args)]))
    counts = []
    for fn, args in fns:
        single = _profiled_events(lambda: jax.block_until_ready(
            [fn(*args[i % len(args)]) for i in range(2)]))
        if not single or not single[0][1] or len(single[0][1]) % 2:
            return None
        counts.append(len(single[0][1]) // 2)

    def run():
        for _ in range(rounds):
            for (fn, args), n in zip(fns, pattern):
                jax.block_until_ready([fn(*args[i % len(args)]) for i in range(n)])

    planes = _profiled_events(run)
    if not planes:
        return None
    events = sorted((start, start + dur) for _, start, dur in planes[0][1])
    order = [f for _ in range(rounds) for f, n in enumerate(pattern) for _ in range(n)]
    if len(events) != sum(counts[f] for f in order):
        return None
    times: list[list[float]] = [[] for _ in fns]
    pos = 0
    for f in order:
        times[f].append(_union_ns(events[pos:pos + counts[f]]) / 1e6)
        pos += counts[f]
    return tuple(tuple(t) for t in times)
