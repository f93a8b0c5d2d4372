"""Spatial context parallelism: GNA on inputs split along one spatial dim, by halo exchange.

``context_parallel_attention`` runs inside ``jax.shard_map``. Device ``p`` of the mesh axis
``axis_name`` (``P`` devices) holds the contiguous slab ``[p * Ll, (p + 1) * Ll)`` of the
sharded spatial dim (``L = P * Ll`` globally); every other dim is whole on every device.

Why the local step is not "attention on slab + halo with the same parameters": a query's
window depends on its GLOBAL coordinate (windows shift at the borders of the whole grid, stride
groups and dilation groups are anchored at global 0), so a slab that forgot where it sits would
get the borders wrong. What this module does instead, per sharded dim:

1. Plan (static, numpy, from ``semantics.window_1d`` on global coordinates): one length ``Le``
   and, per device, a window ``[lo_p, lo_p + Le)`` of the global dim such that the STANDARD
   GNA problem of length ``Le`` (same kernel size, stride, dilation, causality) gives every
   local query exactly its global neighborhood, shifted by ``lo_p``. Such a window exists:
   with ``lo_p`` a multiple of ``dilation * stride`` (so dilation groups and stride groups
   line up) and covering every key the slab's queries see, the clamps of the local problem
   bind exactly where the global ones do; the plan verifies this query by query and grows
   ``Le`` if a check fails (``Le = L``, ``lo = 0`` is the global problem: always exact).
2. Exchange: the keys the slab's queries see left and right of the slab (static sizes: the
   max over devices, e.g. ``(k // 2) * d`` each side for a sliding window) are fetched from
   the neighbours with ``jax.lax.ppermute`` (several hops when a halo is longer than a
   slab); window positions no real query sees are zeros, not fetched. Nothing else moves: no
   all-gather of K/V. The backward of ``ppermute`` is the reverse ``ppermute``, so halo
   gradients flow back to their owners through JAX autodiff.
3. Local step: queries are placed at offset ``p * Ll - lo_p`` of a query buffer of length
   ``Le`` and ``jax_gna.attention_in_boxes`` runs the standard problem on ``(query buffer,
   keys of the window)`` computing only the slab's queries (the box ``[offset, offset + Ll)``
   along the dim: the kernels skip every Q tile that holds no slab query, so a device
   computes about ``Ll`` rows, rounded out to its Q tiles, not ``Le``); the slab's rows of
   the output/LSE are sliced back out. Devices whose offsets differ take different static
   boxes through one ``lax.switch``. The padding queries never touch real results: outside
   the box the output is 0, the LSE ``-inf`` and no gradient flows, so they add nothing to
   dK/dV.

Because step 3 is an ordinary ``jax_gna`` attention call, the local step uses the same
backend choice as any call (``jax_gna.backends``): the CUDA kernels where they serve the case
(dtype, head dim, architecture), the jnp reference otherwise. Nothing about context
parallelism forces the reference.

Cost model. Communication: the halos, about ``(k - 1) * d`` positions per device for a
sliding window (half each side; causal: left only), of K and V. Compute: the slab's queries
rounded out to whole Q tiles of the kernel; without the query box the local problem would
compute all ``Le`` rows (``HaloPlan.efficiency = Ll / Le`` is the useful fraction of those,
what context parallelism scaled at before the box). The reference computes every row and
masks. Blocked attention with slab boundaries on block boundaries (``s == k``, ``Ll % k == 0``,
``L % k == 0``) needs no halo and no padding.

Additional keys/values are not split: every device needs all of them (pass them replicated
over ``axis_name``). Their gradient is a sum over devices, which ``shard_map``'s transpose
inserts (one all-reduce of their size).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np

from jax_gna import _checks, semantics
from jax_gna.attention import attention, attention_in_boxes

__all__ = ["context_parallel_attention", "context_parallel_attention_on_mesh", "HaloPlan",
           "plan_halo", "plan_for_slabs"]

logger = logging.getLogger("jax_gna")


# ----------------------------------------------------------------------------------------
# The plan (static): window length, per-device window start, halo sizes
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HaloPlan:
    """How one sharded dim is computed. Coordinates are global along that dim."""

    length: int                 # L: global length
    devices: int                # P
    window: int                 # Le: length of every device's local standard problem
    starts: tuple[int, ...]     # lo_p: global start of device p's window
    left: int                   # positions fetched from the left neighbours (max over p of
    right: int                  # what real queries see left/right of the slab)

    @property
    def slab(self) -> int:
        return self.length // self.devices

    @property
    def query_offsets(self) -> tuple[int, ...]:
        """Where device p's slab sits inside its window (``p * Ll - lo_p``)."""
        return tuple(p * self.slab - lo for p, lo in enumerate(self.starts))

    @property
    def pads(self) -> tuple[int, int]:
        """Zeros around the fetched range so every window fits in it: window positions that
        no real query sees are not fetched (only padding queries, whose results are dropped,
        read them)."""
        offs = self.query_offsets
        return (max(0, max(offs) - self.left),
                max(0, max(self.window - self.slab - o for o in offs) - self.right))

    @property
    def efficiency(self) -> float:
        """Fraction of the local problem's queries that are real (``Ll / Le``)."""
        return self.slab / self.window

    def hops(self) -> tuple[int, int]:
        """(left, right) number of ppermute hops."""
        return (-(-self.left // self.slab), -(-self.right // self.slab))


def _global_keys(length, k, s, d, c):
    """First and last key coordinate of every query along the dim (numpy)."""
    first, step, count = semantics.window_keys_1d(np.arange(length), length, k, s, d, c)
    return first, first + step * (count - 1), count


def _window_reproduces(lo, window, queries, first, count, k, s, d, c) -> bool:
    """Does the standard problem of length ``window`` give the queries at global coordinates
    ``queries`` (window starting at ``lo``) exactly their global keys?"""
    if k * d > window or lo < 0:
        return False
    local_first, _, local_count = semantics.window_keys_1d(queries - lo, window, k, s, d, c)
    return bool(np.array_equal(local_first + lo, first[queries])
                and np.array_equal(local_count, count[queries]))


@functools.lru_cache(maxsize=256)
def plan_halo(length: int, devices: int, kernel_size: int, stride: int, dilation: int,
              causal: bool, query_align: int = 1) -> HaloPlan:
    """The plan of one sharded dim (see the module docstring). ``length % devices == 0``.

    ``query_align``: where possible (a window a few positions longer, starts that still
    reproduce every global window), place each slab at a multiple of it inside its window,
    so Q tiles whose extent along the dim divides it hold no rows outside the slab (the
    kernels compute whole Q tiles; see ``_aligned``). Falls back to the unaligned plan.
    """
    base = _plan(length, devices, kernel_size, stride, dilation, causal)
    if query_align > 1:
        aligned = _aligned(base, query_align, kernel_size, stride, dilation, causal)
        if aligned is not None:
            return aligned
    return base


def plan_for_slabs(length: int, devices: int, kernel_size: int, stride: int, dilation: int,
                   causal: bool) -> HaloPlan:
    """The plan ``context_parallel_attention`` uses: slabs at offsets aligned to the largest
    power of two <= 8 dividing the slab, so a Q tile of that extent along the dim covers
    the slab exactly (the tile choice ranks tiles for the slab's query box)."""
    return plan_halo(length, devices, kernel_size, stride, dilation, causal,
                     query_align=math.gcd(length // devices, 8))


def _plan(length, devices, kernel_size, stride, dilation, causal) -> HaloPlan:
    k, s, d, c = kernel_size, stride, dilation, causal
    if length % devices:
        raise ValueError(f"sharded spatial size {length} is not divisible by the {devices} "
                         f"devices of the context-parallel axis")
    slab = length // devices
    first, last, count = _global_keys(length, k, s, d, c)
    align = d * s
    slabs = [np.arange(p * slab, (p + 1) * slab) for p in range(devices)]
    need_lo = [int(first[q].min()) for q in slabs]
    need_hi = [int(last[q].max()) + 1 for q in slabs]
    window = max(max(hi - (lo // align) * align for lo, hi in zip(need_lo, need_hi)),
                 slab, k * d)
    window = min(window, length)
    while True:
        starts = []
        for q, lo_need, hi_need in zip(slabs, need_lo, need_hi):
            lo = _place(q, lo_need, hi_need, window, length, align, first, count, k, s, d, c)
            if lo is None:
                break
            starts.append(lo)
        if len(starts) == devices:
            left = max(0, max(p * slab - lo for p, lo in enumerate(need_lo)))
            right = max(0, max(hi - (p + 1) * slab for p, hi in enumerate(need_hi)))
            return HaloPlan(length, devices, window, tuple(starts), left, right)
        if window >= length:  # unreachable: window = L, lo = 0 is the global problem
            raise AssertionError(f"no context-parallel plan for L={length}, P={devices}, "
                                 f"k={k}, s={s}, d={d}, causal={c}")
        window += 1


def _aligned(plan: HaloPlan, query_align: int, k, s, d, c) -> HaloPlan | None:
    """``plan`` with every query offset a multiple of ``query_align``: the shortest window
    where each device has such a start that covers its keys and reproduces its global
    windows, at most ``min(query_align - 1, window // 8)`` positions longer (the reference
    computes every window row, and the K/V window is copied: alignment may cost 1/8 more
    of those, never more). The extra positions are padding (zeros no real query sees): the
    exchanged halo does not grow."""
    length, slab = plan.length, plan.slab
    first, last, count = _global_keys(length, k, s, d, c)
    slabs = [np.arange(p * slab, (p + 1) * slab) for p in range(plan.devices)]
    need = [(int(first[q].min()), int(last[q].max()) + 1) for q in slabs]
    longest = min(length, plan.window + min(query_align - 1, plan.window // 8))
    for window in range(plan.window, longest + 1):
        starts = []
        for p, (q, (lo_need, hi_need)) in enumerate(zip(slabs, need)):
            low, high = max(0, hi_need - window), min(lo_need, length - window)
            top = p * slab - (-(-(p * slab - high) // query_align)) * query_align
            lo = next((lo for lo in range(top, low - 1, -query_align)
                       if _window_reproduces(lo, window, q, first, count, k, s, d, c)), None)
            if lo is None:
                break
            starts.append(lo)
        if len(starts) == plan.devices:
            return dataclasses.replace(plan, window=window, starts=tuple(starts))
    return None


def _place(queries, lo_need, hi_need, window, length, align, first, count, k, s, d, c):
    """The largest aligned window start (smallest left halo) that covers the needed keys and
    reproduces the global windows; then unaligned fallbacks; None if none works."""
    low, high = max(0, hi_need - window), min(lo_need, length - window)
    if low > high:
        return None
    aligned = range((high // align) * align, low - 1, -align)
    for lo in (*aligned, high, low):
        if low <= lo <= high and _window_reproduces(lo, window, queries, first, count,
                                                    k, s, d, c):
            return lo
    return None


# ----------------------------------------------------------------------------------------
# The exchange
# ----------------------------------------------------------------------------------------


def _axis_size(axis_name) -> int:
    size = getattr(jax.lax, "axis_size", None)
    if size is not None:
        return int(size(axis_name))
    return int(jax.lax.psum(1, axis_name))


def _from_left(x, size, axis, axis_name, devices, slab):
    """Positions ``[p * Ll - size, p * Ll)`` of the global dim, from the left neighbours
    (zeros where there is no neighbour: those positions are outside the grid)."""
    pieces, hop = [], 1
    while size > 0:
        m = min(slab, size)
        tail = jax.lax.slice_in_dim(x, slab - m, slab, axis=axis)
        pieces.append(jax.lax.ppermute(tail, axis_name,
                                       [(j, j + hop) for j in range(devices - hop)]))
        size, hop = size - m, hop + 1
    return pieces[::-1]


def _from_right(x, size, axis, axis_name, devices, slab):
    """Positions ``[(p + 1) * Ll, (p + 1) * Ll + size)``, from the right neighbours."""
    pieces, hop = [], 1
    while size > 0:
        m = min(slab, size)
        head = jax.lax.slice_in_dim(x, 0, m, axis=axis)
        pieces.append(jax.lax.ppermute(head, axis_name,
                                       [(j, j - hop) for j in range(hop, devices)]))
        size, hop = size - m, hop + 1
    return pieces


def _window_of(x, plan: HaloPlan, axis, axis_name, offset):
    """Device p's window ``[lo_p, lo_p + Le)`` of ``x`` (its slab), via the halo exchange."""
    pad_left, pad_right = plan.pads
    parts = (_from_left(x, plan.left, axis, axis_name, plan.devices, plan.slab) + [x]
             + _from_right(x, plan.right, axis, axis_name, plan.devices, plan.slab))
    ext = jnp.concatenate(parts, axis=axis)     # global [p*Ll - left, (p+1)*Ll + right)
    if pad_left or pad_right:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (pad_left, pad_right)
        ext = jnp.pad(ext, widths)
    return jax.lax.dynamic_slice_in_dim(ext, pad_left + plan.left - offset, plan.window,
                                        axis=axis)


# ----------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------


def context_parallel_attention(query, key, value, kernel_size, stride=1, dilation=1,
                               is_causal=False, scale=None, *, axis_name, spatial_axis=0,
                               additional_keys=None, additional_values=None,
                               return_lse=False, backend=None):
    """GNA for inputs split along one spatial dim over a mesh axis; call inside shard_map.

    Args:
      query, key, value: this device's slab, ``[batch, *spatial_local, heads, head_dim]``,
        where ``spatial_local[spatial_axis] = L / P`` (``P`` = size of ``axis_name``) and every
        other spatial dim is whole. Device ``p`` holds positions ``[p * L/P, (p+1) * L/P)``
        (what ``shard_map`` gives for a ``PartitionSpec`` naming ``axis_name`` on that dim).
      kernel_size, stride, dilation, is_causal, scale: as ``jax_gna.attention``, validated
        against the GLOBAL spatial shape.
      axis_name: the mesh axis the spatial dim is split over.
      spatial_axis: which spatial dim (0-based among the spatial dims; negative counts from
        the last) is split.
      additional_keys, additional_values: ``[batch, n_extra, heads_kv, head_dim]``, the same
        on every device of ``axis_name`` (replicated, not split).
      return_lse, backend: as ``jax_gna.attention`` (the backend of the local step).

    Returns:
      This device's slab of the output (and of the LSE): exactly what ``jax_gna.attention``
      on the whole grid returns for these positions, to rounding.
    """
    rank = _checks.check_tensors(query, key, value, additional_keys, additional_values)
    spatial_axis = _checks.check_spatial_axis(spatial_axis, rank)
    return_lse = _checks.check_flag(return_lse, "return_lse")
    try:
        devices = _axis_size(axis_name)
    except (NameError, KeyError, ValueError) as e:
        raise ValueError(f"context_parallel_attention must run inside jax.shard_map with "
                         f"mesh axis {axis_name!r} bound ({e})") from e
    local = tuple(int(n) for n in query.shape[1:1 + rank])
    slab = local[spatial_axis]
    global_shape = local[:spatial_axis] + (slab * devices,) + local[spatial_axis + 1:]
    params = semantics.make_params(global_shape, kernel_size, stride, dilation, is_causal)
    plan = plan_for_slabs(slab * devices, devices, *params.dim(spatial_axis))
    _log_plan(plan, spatial_axis, axis_name)

    kwargs = dict(additional_keys=additional_keys, additional_values=additional_values,
                  return_lse=True, backend=backend)
    if plan.window == slab and not any(plan.query_offsets):   # windows are the slabs:
        # no halo, no padding (e.g. blocked attention with slabs on block boundaries)
        out, lse = attention(query, key, value, params.kernel_size, params.stride,
                             params.dilation, params.is_causal, scale, **kwargs)
        return (out, lse) if return_lse else out

    axis = 1 + spatial_axis
    device = jax.lax.axis_index(axis_name)
    offset = jnp.asarray(np.asarray(plan.query_offsets, np.int32))[device]
    k_win = _window_of(key, plan, axis, axis_name, offset)
    v_win = _window_of(value, plan, axis, axis_name, offset)
    q_shape = query.shape[:axis] + (plan.window,) + query.shape[axis + 1:]
    q_win = jax.lax.dynamic_update_slice_in_dim(jnp.zeros(q_shape, query.dtype), query,
                                                offset, axis=axis)
    # Only the slab's queries are computed (one static box per distinct offset; the kernels
    # skip the Q tiles of the padding queries): the compute follows the slab, not Le.
    boxes, branch = _query_boxes(plan, spatial_axis, global_shape)
    del kwargs["return_lse"]
    out, lse = attention_in_boxes(
        q_win, k_win, v_win, params.kernel_size, params.stride, params.dilation,
        params.is_causal, scale, query_boxes=boxes,
        box_index=jnp.asarray(np.asarray(branch, np.int32))[device], **kwargs)
    out = jax.lax.dynamic_slice_in_dim(out, offset, slab, axis=axis)
    lse = jax.lax.dynamic_slice_in_dim(lse, offset, slab, axis=axis)
    return (out, lse) if return_lse else out


def _query_boxes(plan: HaloPlan, spatial_axis: int, global_shape) -> tuple[tuple, list]:
    """The local problem's query boxes (the slab inside the window, whole along the other
    dims): one per distinct offset, and which one each device takes."""
    offsets = sorted(set(plan.query_offsets))
    boxes = []
    for off in offsets:
        box = [(0, n) for n in global_shape]
        box[spatial_axis] = (off, off + plan.slab)
        boxes.append(tuple(box))
    return tuple(boxes), [offsets.index(o) for o in plan.query_offsets]


def _log_plan(plan: HaloPlan, spatial_axis: int, axis_name) -> None:
    left_hops, right_hops = plan.hops()
    logger.debug(
        "jax_gna context parallel: spatial dim %d (L=%d) over axis %r (%d devices, slab %d): "
        "local problem length %d (slab rows %.2f of it; only their Q tiles run), halo left %d (%d hop(s)), right %d "
        "(%d hop(s)); the local step is a standard jax_gna.attention call (kernel where one "
        "serves it, else the reference)", spatial_axis, plan.length, axis_name, plan.devices,
        plan.slab, plan.window, plan.efficiency, plan.left, left_hops, plan.right,
        right_hops)


def context_parallel_attention_on_mesh(query, key, value, kernel_size, stride=1, dilation=1,
                                       is_causal=False, scale=None, *, mesh, axis_name,
                                       spatial_axis=0, batch_axis=None,
                                       additional_keys=None, additional_values=None,
                                       return_lse=False, backend=None):
    """``context_parallel_attention`` on global arrays: wraps it in ``jax.shard_map``.

    The spatial dim ``spatial_axis`` is split over ``axis_name`` (its size must be divisible
    by the axis size) and, optionally, the batch over ``batch_axis``; everything else is
    replicated over the remaining mesh axes. For other layouts (heads split too, ...), call
    ``context_parallel_attention`` inside your own ``shard_map``.
    """
    rank = _checks.check_tensors(query, key, value, additional_keys, additional_values)
    spatial_axis = _checks.check_spatial_axis(spatial_axis, rank)
    return_lse = _checks.check_flag(return_lse, "return_lse")
    _checks.check_mesh_axes(mesh, axis_name, batch_axis)
    devices = int(mesh.shape[axis_name])
    length = int(query.shape[1 + spatial_axis])
    if length % devices:
        raise ValueError(f"spatial dim {spatial_axis} has size {length}, which is not "
                         f"divisible by the {devices} devices of mesh axis {axis_name!r}; "
                         f"context parallelism needs equal contiguous slabs")
    if batch_axis is not None and int(query.shape[0]) % int(mesh.shape[batch_axis]):
        raise ValueError(f"batch {query.shape[0]} is not divisible by mesh axis "
                         f"{batch_axis!r} ({mesh.shape[batch_axis]})")
    spec = [batch_axis] + [None] * rank + [None, None]
    spec[1 + spatial_axis] = axis_name
    grid = jax.sharding.PartitionSpec(*spec)
    lse_spec = jax.sharding.PartitionSpec(*spec[:-1])
    extra = jax.sharding.PartitionSpec(batch_axis)
    has_extra = additional_keys is not None

    def body(q, k, v, *extras):
        ek, ev = extras if has_extra else (None, None)
        return context_parallel_attention(
            q, k, v, kernel_size, stride, dilation, is_causal, scale, axis_name=axis_name,
            spatial_axis=spatial_axis, additional_keys=ek, additional_values=ev,
            return_lse=True, backend=backend)

    extras = (additional_keys, additional_values) if has_extra else ()
    # check_vma=False: the body needs no varying-axes typing from the GNA primitives, and
    # shard_map's transpose still sums the cotangents of the replicated extra tokens.
    fn = jax.shard_map(body, mesh=mesh, in_specs=(grid, grid, grid) + (extra,) * len(extras),
                       out_specs=(grid, lse_spec), check_vma=False)
    out, lse = fn(query, key, value, *extras)
    return (out, lse) if return_lse else out

