"""Spatial context parallelism: halo exchange results equal the unsharded call, exactly.

Every test runs forward + backward (output, LSE and the gradients of q, k, v and the extra
tokens) of ``context_parallel_attention`` inside ``jax.shard_map`` on 2-8 CPU devices and
compares with ``jax_gna.attention`` on the whole grid (one device); the compiled HLO must
contain only collective-permutes (plus the all-reduce that sums extra-token gradients).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jax_gna
from jax_gna import semantics
from jax_gna.context_parallel import (context_parallel_attention,
                                      context_parallel_attention_on_mesh, plan_for_slabs,
                                      plan_halo)

from test_sharding import CPU, N_DEVICES, collectives, make_mesh, rel_err

pytestmark = pytest.mark.skipif(
    len(CPU) < N_DEVICES,
    reason="needs 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8, set "
           "by tests/conftest.py before jax starts)")


@dataclasses.dataclass(frozen=True)
class CPCase:
    spatial: tuple[int, ...]          # global
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    causal: tuple[bool, ...]
    axis: int                         # sharded spatial dim
    devices: int
    batch: int = 1
    heads_kv: int = 1
    groups: int = 1
    n_extra: int = 0
    head_dim: int = 4
    seed: int = 0

    def inputs(self):
        rng = np.random.default_rng(self.seed)
        b, s, d = self.batch, self.spatial, self.head_dim
        hq, hkv = self.heads_kv * self.groups, self.heads_kv

        def rnd(*shape):
            return rng.standard_normal(shape).astype(np.float32)

        return (rnd(b, *s, hq, d), rnd(b, *s, hkv, d), rnd(b, *s, hkv, d),
                rnd(b, self.n_extra, hkv, d), rnd(b, self.n_extra, hkv, d),
                rnd(b, *s, hq, d), rnd(b, *s, hq))

    def params(self):
        return (self.kernel_size, self.stride, self.dilation, self.causal)


def _program(attend):
    def program(q, k, v, ek, ev, dout, dlse):
        (out, lse), vjp = jax.vjp(attend, q, k, v, ek, ev)
        return (out, lse) + tuple(vjp((dout, dlse)))
    return program


def run_case(case: CPCase, check_vma: bool = False):
    """(context-parallel results, their compiled HLO, unsharded results)."""
    mesh = make_mesh((case.devices,), ("ctx",))
    rank = len(case.spatial)
    grid = [None] * (rank + 3)
    grid[1 + case.axis] = "ctx"
    grid, lse_spec = P(*grid), P(*grid[:-1])
    has_extra = case.n_extra > 0

    def local(q, k, v, ek, ev):
        return context_parallel_attention(
            q, k, v, *case.params(), axis_name="ctx", spatial_axis=case.axis,
            additional_keys=ek if has_extra else None,
            additional_values=ev if has_extra else None, return_lse=True)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(grid, grid, grid, P(), P()),
                            out_specs=(grid, lse_spec), check_vma=check_vma)

    def whole(q, k, v, ek, ev):
        return jax_gna.attention(q, k, v, *case.params(),
                                 additional_keys=ek if has_extra else None,
                                 additional_values=ev if has_extra else None,
                                 return_lse=True)

    args = case.inputs()
    shardings = tuple(NamedSharding(mesh, s) for s in (grid, grid, grid, P(), P(), grid,
                                                       lse_spec))
    fn = jax.jit(_program(sharded), in_shardings=shardings)
    hlo = fn.lower(*args).compile().as_text()
    got = fn(*args)
    with jax.default_device(CPU[0]):
        want = jax.jit(_program(whole))(*args)
    return got, hlo, want


def assert_equal_to_rounding(case, got, want, tol=2e-6):
    names = ("out", "lse", "dq", "dk", "dv", "dek", "dev")
    errs = {n: rel_err(g, w) for n, g, w in zip(names, got, want)}
    bad = {n: e for n, e in errs.items() if not e <= tol}
    assert not bad, f"{case}: context parallel != unsharded {bad} (all: {errs})"


_SHAPE = re.compile(r"=\s*\w+\[([\d,]*)\]")


def assert_only_halo_permutes(case, hlo):
    """Collectives: collective-permutes of at most the halo along the sharded dim (and, with
    extra tokens, the all-reduce of their gradients); never an all-gather."""
    found = collectives(hlo)
    allowed = {"collective-permute"} | ({"all-reduce"} if case.n_extra else set())
    assert set(found) <= allowed, found
    plan = plan_halo(case.spatial[case.axis], case.devices,
                     *[x[case.axis] for x in case.params()])
    for line in found.get("collective-permute", []):
        m = _SHAPE.search(line)
        if m and m.group(1):
            dims = [int(x) for x in m.group(1).split(",")]
            if len(dims) == len(case.spatial) + 3:   # a K/V (or dK/dV) piece
                assert dims[1 + case.axis] <= min(plan.slab, max(plan.left, plan.right)), line


# ----------------------------------------------------------------------------------------
# Fixed cases: halo shapes the plan must get right
# ----------------------------------------------------------------------------------------


FIXED = [
    # sliding window, one hop each side
    CPCase((32,), (5,), (1,), (1,), (False,), axis=0, devices=8, batch=2),
    # causal: left halo only
    CPCase((24,), (5,), (1,), (1,), (True,), axis=0, devices=4, heads_kv=2, groups=2),
    # halo longer than a slab: multi-hop (slab 2, window 7 with dilation 2)
    CPCase((16,), (4,), (1,), (2,), (False,), axis=0, devices=8, n_extra=2),
    # strided + causal + dilation on the sharded dim of a 2-D grid, GQA, extra tokens
    CPCase((16, 6), (5, 3), (2, 1), (2, 1), (True, False), axis=0, devices=4,
           heads_kv=2, groups=3, n_extra=3),
    # the second spatial dim sharded; even kernel; stride == kernel on the other dim
    CPCase((6, 24), (3, 6), (3, 2), (1, 1), (False, False), axis=1, devices=8),
    # 3-D video-like grid split along time
    CPCase((16, 4, 5), (5, 3, 3), (1, 1, 2), (1, 1, 1), (False, False, True), axis=0,
           devices=8, batch=2, n_extra=1),
    # blocked attention with slab boundaries on block boundaries: no halo at all
    CPCase((32, 4), (4, 2), (4, 2), (1, 1), (False, False), axis=0, devices=8),
    # window as long as the grid along the sharded dim (self attention there)
    CPCase((8, 3), (8, 2), (1, 1), (1, 1), (False, True), axis=0, devices=4),
    # dilation not dividing L, stride, 2 devices
    CPCase((22,), (3,), (2,), (3,), (False,), axis=0, devices=2, heads_kv=1, groups=2),
]


@pytest.mark.parametrize("case", FIXED, ids=lambda c: f"{c.spatial}-ax{c.axis}-P{c.devices}")
def test_fixed_cases(case):
    got, hlo, want = run_case(case)
    assert_equal_to_rounding(case, got, want)
    assert "all-gather" not in collectives(hlo)
    assert_only_halo_permutes(case, hlo)


def test_blocked_aligned_needs_no_communication():
    case = FIXED[6]
    plan = plan_halo(32, 8, 4, 4, 1, False)
    assert (plan.window, plan.left, plan.right) == (4, 0, 0)
    _, hlo, _ = run_case(case)
    assert collectives(hlo) == {}


# ----------------------------------------------------------------------------------------
# Random configurations
# ----------------------------------------------------------------------------------------


def _random_case(seed: int) -> CPCase:
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    axis = int(rng.integers(0, rank))
    devices = int(rng.choice([2, 4, 8]))
    spatial, ks, st, dl, ca = [], [], [], [], []
    for ax in range(rank):
        if ax == axis:
            n = devices * int(rng.integers(1, {1: 7, 2: 4, 3: 3}[rank]))
            n = max(n, 2)
        else:
            n = int(rng.integers(2, {1: 9, 2: 7, 3: 5}[rank]))
        d = int(rng.choice([1, 1, 2, 3])) if n >= 4 else 1
        d = max(1, min(d, n // 2))
        k = int(rng.integers(2, n // d + 1))
        s = int(rng.choice(sorted({1, 2, max(1, k // 2), k})))
        spatial.append(n), ks.append(k), st.append(max(1, min(s, k))), dl.append(d)
        ca.append(bool(rng.integers(0, 2)))
    return CPCase(tuple(spatial), tuple(ks), tuple(st), tuple(dl), tuple(ca), axis=axis,
                  devices=devices, batch=int(rng.integers(1, 3)),
                  heads_kv=int(rng.integers(1, 3)), groups=int(rng.choice([1, 2])),
                  n_extra=int(rng.choice([0, 0, 2])), seed=seed)


@pytest.mark.parametrize("seed", range(12))
def test_random_configs(seed):
    case = _random_case(seed)
    got, hlo, want = run_case(case)
    assert_equal_to_rounding(case, got, want)
    assert_only_halo_permutes(case, hlo)


# ----------------------------------------------------------------------------------------
# The plan, checked against the neighborhood mask (independently of the plan's own check)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length,devices,k,s,d,causal", [
    (800, 8, 7, 1, 1, False), (800, 8, 7, 1, 1, True), (96, 8, 8, 8, 1, False),
    (120, 8, 18, 16, 1, False), (30, 2, 18, 1, 1, False), (24, 8, 3, 2, 3, True),
    (21, 3, 4, 3, 2, False), (16, 8, 5, 1, 2, False), (64, 4, 9, 4, 3, True),
])
@pytest.mark.parametrize("query_align", [1, 2, 8])
def test_plan_reproduces_global_mask(length, devices, k, s, d, causal, query_align):
    plan = plan_halo(length, devices, k, s, d, causal, query_align=query_align)
    base = plan_halo(length, devices, k, s, d, causal)
    if plan != base:   # aligned: every slab at a multiple of query_align, same halo
        assert all(o % query_align == 0 for o in plan.query_offsets)
        assert (plan.left, plan.right) == (base.left, base.right)
        assert base.window <= plan.window <= base.window + min(query_align - 1,
                                                                base.window // 8)
    glob = semantics.neighborhood_mask_1d(length, k, s, d, causal)
    local = semantics.neighborhood_mask_1d(plan.window, k, s, d, causal)
    for p, (lo, off) in enumerate(zip(plan.starts, plan.query_offsets)):
        rows = np.arange(plan.slab)
        want = glob[p * plan.slab + rows]                      # [Ll, L]
        got = np.zeros_like(want)
        got[:, lo:lo + plan.window] = local[off + rows]
        np.testing.assert_array_equal(got, want, err_msg=f"device {p}: {plan}")
        # every key a real query sees lies in the fetched range
        seen = np.nonzero(want.any(axis=0))[0]
        assert seen.min() >= p * plan.slab - plan.left
        assert seen.max() < (p + 1) * plan.slab + plan.right


def test_plan_halo_sizes():
    plan = plan_halo(800, 8, 7, 1, 1, False)      # sliding window: k // 2 each side
    assert (plan.window, plan.left, plan.right) == (106, 3, 3)
    # The measured layer (120 rows over 4 devices, window 18): slabs of 30 at even offsets
    # with one more window row, so Q tiles of extent 2 cover each slab exactly.
    assert plan_halo(120, 4, 18, 1, 1, False).query_offsets == (0, 9, 9, 17)
    plan = plan_halo(120, 4, 18, 1, 1, False, query_align=2)
    assert (plan.window, plan.query_offsets, plan.left, plan.right) == (48, (0, 10, 10, 18), 9, 8)
    assert plan_for_slabs(120, 4, 18, 1, 1, False) == plan      # slab 30: align 2
    plan = plan_halo(800, 8, 7, 1, 1, True)       # causal: left only
    assert (plan.left, plan.right) == (6, 0)
    # dilated window: the border devices' windows shift inward by up to (k - 1) * d = 6 > slab 2
    plan = plan_halo(16, 8, 4, 1, 2, False)
    assert (plan.left, plan.right, plan.hops()) == (6, 6, (3, 3))


# ----------------------------------------------------------------------------------------
# Composition and errors
# ----------------------------------------------------------------------------------------


def test_on_mesh_with_batch_axis():
    """2 x 4 mesh: batch over "data", time over "ctx" (the wrapper builds the shard_map)."""
    mesh = make_mesh((2, 4), ("data", "ctx"))
    case = CPCase((12, 5), (5, 3), (1, 1), (1, 1), (True, False), axis=0, devices=4,
                  batch=2, heads_kv=2, n_extra=2, seed=3)
    q, k, v, ek, ev, dout, dlse = case.inputs()

    def attend(api):
        def f(q, k, v, ek, ev):
            if api == "cp":
                return context_parallel_attention_on_mesh(
                    q, k, v, *case.params(), mesh=mesh, axis_name="ctx", spatial_axis=0,
                    batch_axis="data", additional_keys=ek, additional_values=ev,
                    return_lse=True)
            return jax_gna.attention(q, k, v, *case.params(), additional_keys=ek,
                                     additional_values=ev, return_lse=True)
        return f

    fn = jax.jit(_program(attend("cp")))
    hlo = fn.lower(q, k, v, ek, ev, dout, dlse).compile().as_text()
    assert "all-gather" not in collectives(hlo)
    got = fn(q, k, v, ek, ev, dout, dlse)
    with jax.default_device(CPU[0]):
        want = jax.jit(_program(attend("whole")))(q, k, v, ek, ev, dout, dlse)
    assert_equal_to_rounding(case, got, want)


def test_check_vma_true():
    """Inside shard_map with check_vma=True (the default) gradients need the GNA primitives
    to keep shard_map's varying-axes typing (see docs/SHARDING.md)."""
    case = FIXED[3]
    try:
        got, _, want = run_case(case, check_vma=True)
    except ValueError as e:
        if "manual axis" in str(e) or "vma" in str(e):
            pytest.xfail(f"GNA primitives drop shard_map varying-axes types: {e}")
        raise
    assert_equal_to_rounding(case, got, want)


def test_errors():
    x = jnp.zeros((1, 12, 1, 4))
    mesh = make_mesh((8,), ("ctx",))
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        context_parallel_attention_on_mesh(x, x, x, 3, mesh=mesh, axis_name="ctx")
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        context_parallel_attention_on_mesh(x, x, x, 3, mesh=mesh, axis_name="time")
    with pytest.raises(ValueError, match="spatial_axis"):
        context_parallel_attention(x, x, x, 3, axis_name="ctx", spatial_axis=1)
    with pytest.raises(ValueError, match="inside jax.shard_map"):
        context_parallel_attention(x, x, x, 3, axis_name="ctx")
    y = jnp.zeros((1, 16, 1, 4))
    with pytest.raises(ValueError, match="kernel_size"):   # validated on the GLOBAL shape
        context_parallel_attention_on_mesh(y, y, y, 17, mesh=mesh, axis_name="ctx")


def test_backward_manual_computation_has_no_unused_inputs():
    """Regression: with no additional tokens the custom_vjp saved empty K/V residuals, which
    became unused inputs of the backward's shard_map; Shardy's rewrite that drops unused
    inputs then segfaulted XLA on GPUs (jax 0.11.2, docs/SHARDING.md). Every block argument
    of every ``sdy.manual_computation`` must be used."""
    mesh = make_mesh((2,), ("x",))
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    q, k, v, do = (jax.random.normal(kk, (1, 16, 6, 8, 2, 16)) for kk in keys)

    def program(q, k, v, do):
        attend = lambda q, k, v: context_parallel_attention_on_mesh(  # noqa: E731
            q, k, v, (5, 3, 3), mesh=mesh, axis_name="x", spatial_axis=0)
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(do)

    sharding = NamedSharding(mesh, P(None, "x"))
    args = [jax.device_put(a, sharding) for a in (q, k, v, do)]
    text = jax.jit(program).lower(*args).as_text()
    regions = text.split("sdy.manual_computation")[1:]
    if not regions:
        pytest.skip("program lowered without Shardy manual computations")
    for n, region in enumerate(regions):
        header = re.search(r"manual_axes=\{[^}]*\}\s*\((.*?)\)\s*\{", region, re.S)
        assert header, f"manual computation {n}: block arguments not found"
        body = region[header.end():region.find("sdy.return")]
        names = re.findall(r"(%arg\d+):", header.group(1))
        unused = [a for a in names if not re.search(re.escape(a) + r"\b", body)]
        assert not unused, f"manual computation {n}: unused inputs {unused}"
