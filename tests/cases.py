"""Random and fixed GNA cases, and the one check every backend must pass.

``check_case`` runs forward and backward of ``jax_gna.attention`` in one jitted program (so a
configuration costs one compile), with fresh random inputs and random cotangents for both
the output and the LSE, and compares everything with the float64 oracle
(``tests/oracle.py``) under the tolerances of docs/semantics.md.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import jax_gna
from jax_gna import backends
from jax_gna.semantics import make_params

import oracle

HALF = ("bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Case:
    spatial: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    causal: tuple[bool, ...]
    batch: int = 1
    heads_kv: int = 1
    groups: int = 1           # query heads per KV head
    head_dim: int = 8
    head_dim_v: int = 8
    n_extra: int = 0
    dtype: str = "float32"
    seed: int = 0
    # Compute only these queries ((lo, hi) per dim; jax_gna.attention_in_boxes), or all.
    query_box: tuple[tuple[int, int], ...] | None = None
    # Keys (and additional keys) of every 29th token scaled by this: row maxima then jump by
    # many log2 units from one KV tile to the next (make_inputs).
    key_spike: float = 1.0
    # jax_gna.attention(..., deterministic=...): backward kernels with a fixed summation order.
    deterministic: bool = False

    @property
    def heads_q(self):
        return self.heads_kv * self.groups

    def short(self) -> str:
        return (f"{'x'.join(map(str, self.spatial))} k{self.kernel_size} s{self.stride} "
                f"d{self.dilation} c{tuple(int(c) for c in self.causal)} b{self.batch} "
                f"h{self.heads_q}/{self.heads_kv} D{self.head_dim}/{self.head_dim_v} "
                f"E{self.n_extra} {self.dtype}"
                + (f" box{self.query_box}" if self.query_box else "")
                + (f" spike{self.key_spike:g}" if self.key_spike != 1.0 else "")
                + (" deterministic" if self.deterministic else ""))


def _dim(draw, max_len):
    length = draw(st.integers(2, max_len))
    dil = draw(st.sampled_from([1, 1, 1, 2, 3])) if length >= 4 else 1
    dil = min(dil, length // 2)
    k = draw(st.integers(2, length // dil))
    s = draw(st.sampled_from(sorted({1, 1, 2, k // 2 or 1, k, draw(st.integers(1, k))})))
    return length, k, max(1, min(s, k)), dil, draw(st.booleans())


@st.composite
def random_cases(draw, kernel: str | None = None, query_box: bool = False):
    """Configurations for the reference (kernel=None) or a kernel family; with
    ``query_box``, each with a random box of queries to compute."""
    rank = draw(st.integers(1, 3))
    if kernel is None:
        max_len = {1: 40, 2: 12, 3: 7}[rank]
    else:
        max_len = {1: 300, 2: 24, 3: 10}[rank]
    dims = [_dim(draw, max_len) for _ in range(rank)]
    if kernel is None:
        dtype = draw(st.sampled_from(["float32", "float32", "float64", "bfloat16", "float16"]))
        d = draw(st.sampled_from([4, 8, 16]))
        dv = draw(st.sampled_from([d, d, 6]))
    else:
        fam = backends.kernel_family(kernel)
        dtype = draw(st.sampled_from(HALF))
        dims_ok = sorted(fam.head_dims[backends.FORWARD] & fam.head_dims.get(
            backends.BACKWARD, fam.head_dims[backends.FORWARD]))
        d = dv = draw(st.sampled_from(dims_ok))
    box = None
    if query_box:
        box = []
        for length, *_ in dims:
            lo = draw(st.integers(0, length - 1))
            box.append((lo, draw(st.integers(lo + 1, length))))
        box = tuple(box)
    return Case(spatial=tuple(x[0] for x in dims), kernel_size=tuple(x[1] for x in dims),
                stride=tuple(x[2] for x in dims), dilation=tuple(x[3] for x in dims),
                causal=tuple(x[4] for x in dims), batch=draw(st.integers(1, 2)),
                heads_kv=draw(st.integers(1, 2)), groups=draw(st.sampled_from([1, 1, 2, 3])),
                head_dim=d, head_dim_v=dv, n_extra=draw(st.sampled_from([0, 0, 1, 5])),
                dtype=dtype, seed=draw(st.integers(0, 2**31 - 1)), query_box=box)


# Edge shapes in the spirit of NATTEN's tests: tiny grids, window == grid, blocked, even
# kernels, dilation that does not divide the size, causal along some or all dims.
EDGE_CASES = [
    Case((5, 7), (2, 3), (1, 1), (1, 1), (False, False)),
    Case((5, 7), (5, 7), (1, 1), (1, 1), (False, False)),          # self attention
    Case((5, 7), (5, 7), (1, 1), (1, 1), (True, True)),            # fully causal
    Case((8, 8), (4, 4), (4, 4), (1, 1), (False, False)),          # blocked
    Case((9, 10), (4, 3), (4, 3), (2, 3), (False, False)),         # blocked + dilation
    Case((10,), (5,), (4,), (1,), (True,)),                        # spec's causal example
    Case((10,), (5,), (1,), (1,), (False,)),                       # spec's sliding example
    Case((11,), (2,), (2,), (5,), (False,)),                       # dilation 5 of 11
    Case((13, 6, 5), (3, 2, 5), (3, 1, 2), (4, 3, 1), (True, False, True)),
    Case((4, 4, 4), (4, 4, 4), (4, 4, 4), (1, 1, 1), (False, False, False)),
    Case((7, 9, 6), (6, 8, 2), (5, 1, 2), (1, 1, 3), (False, True, False), groups=3),
    Case((2,), (2,), (1,), (1,), (True,), n_extra=3),
    Case((33,), (8,), (8,), (4,), (True,), n_extra=1, heads_kv=2, groups=2),
]


# Logit jumps (key_spike): keys of every 29th token scaled up 16x (maxima move by tens of
# log2 units between KV tiles) or 64x (by hundreds: past fp32's exp2 range from a stale
# max). The online softmax's rescale paths, and the sm90 kernel's fallback when its
# max-free fast step is rejected (that step serves head dim 128 only: test_logit_jumps runs
# these at 64 and 128). bfloat16 for every backend (float32 would hold the reference to
# 1e-5 on logits of ~500).
LOGIT_JUMP_CASES = [
    Case((640,), (640,), (1,), (1,), (False,), heads_kv=2, head_dim=64, head_dim_v=64,
         dtype="bfloat16", seed=11),
    Case((700,), (384,), (128,), (1,), (True,), groups=2, head_dim=64, head_dim_v=64,
         n_extra=5, dtype="bfloat16", seed=12),
    Case((24, 40), (17, 33), (1, 1), (1, 1), (False, False), head_dim=64, head_dim_v=64,
         dtype="bfloat16", seed=13),
]


def make_inputs(case: Case):
    rng = np.random.default_rng(case.seed)
    b, hq, hkv = case.batch, case.heads_q, case.heads_kv

    def rnd(*shape):
        return rng.standard_normal(shape).astype(np.float64)

    q = rnd(b, *case.spatial, hq, case.head_dim)
    k = rnd(b, *case.spatial, hkv, case.head_dim)
    v = rnd(b, *case.spatial, hkv, case.head_dim_v)
    ek = rnd(b, case.n_extra, hkv, case.head_dim) if case.n_extra else None
    ev = rnd(b, case.n_extra, hkv, case.head_dim_v) if case.n_extra else None
    if case.key_spike != 1.0:
        k.reshape(b, -1, hkv, case.head_dim)[:, 5::29] *= case.key_spike
        if ek is not None:
            ek[:, 5::29] *= case.key_spike
    dout = rnd(b, *case.spatial, hq, case.head_dim_v)
    dlse = rnd(b, *case.spatial, hq)
    return q, k, v, ek, ev, dout, dlse


def tolerances(dtype: str) -> dict:
    if dtype in HALF:
        return dict(out=1e-2, lse_abs=1e-3, grad=2e-2)
    if dtype == "float32":
        return dict(out=1e-5, lse_abs=1e-5, grad=1e-5)
    return dict(out=1e-10, lse_abs=1e-10, grad=1e-10)


def run_backend(case: Case, backend: str, inputs):
    """Forward and all gradients of jax_gna.attention in one jitted program (float64 cases
    run with x64 enabled), as float64 numpy arrays."""
    with jax.enable_x64(case.dtype == "float64"):
        out, lse, grads = _run_backend(case, backend, inputs)
        return (np.asarray(out, np.float64), np.asarray(lse, np.float64),
                [np.asarray(g, np.float64) for g in grads])


def _run_backend(case: Case, backend: str, inputs):
    q, k, v, ek, ev, dout, dlse = inputs
    dt = jnp.dtype(case.dtype)
    cast = lambda x: None if x is None else jnp.asarray(x, dt)  # noqa: E731
    args = [cast(x) for x in (q, k, v, ek, ev)]
    has_extra = ek is not None

    def f(q, k, v, ek, ev, dout, dlse):
        def fwd(q, k, v, ek, ev):
            extras = dict(additional_keys=ek if has_extra else None,
                          additional_values=ev if has_extra else None, backend=backend)
            if case.query_box is not None:
                return jax_gna.attention_in_boxes(
                    q, k, v, case.kernel_size, case.stride, case.dilation, case.causal,
                    query_boxes=(case.query_box,), **extras)
            return jax_gna.attention(q, k, v, case.kernel_size, case.stride, case.dilation,
                                     case.causal, return_lse=True,
                                     deterministic=case.deterministic, **extras)
        (out, lse), vjp = jax.vjp(fwd, q, k, v, ek, ev)
        return out, lse, vjp((dout, dlse))

    if not has_extra:  # vjp needs arrays: use empty extras that attention never sees
        args[3] = jnp.zeros((case.batch, 0, case.heads_kv, case.head_dim), dt)
        args[4] = jnp.zeros((case.batch, 0, case.heads_kv, case.head_dim_v), dt)
    out, lse, grads = jax.jit(f)(*args, jnp.asarray(dout, dt),
                                 jnp.asarray(dlse, jnp.promote_types(dt, jnp.float32)))
    return out, lse, grads


def kernel_refusal(case: Case, backend: str) -> str | None:
    """Why kernel family ``backend`` would refuse ``case``'s forward (None: it serves it)."""
    if backend in (None, "reference"):
        return None
    sds = jax.ShapeDtypeStruct
    dt = jnp.dtype(case.dtype)
    q = sds((case.batch, *case.spatial, case.heads_q, case.head_dim), dt)
    k = sds((case.batch, *case.spatial, case.heads_kv, case.head_dim), dt)
    v = sds((case.batch, *case.spatial, case.heads_kv, case.head_dim_v), dt)
    e = sds((case.batch, case.n_extra, case.heads_kv, case.head_dim), dt)
    c = backends.case_for(q, k, v, case.kernel_size, case.stride, case.dilation, case.causal,
                          additional_keys=e, backend=backend)
    return backends.kernel_family(backend).unsupported_reason(c, backends.FORWARD,
                                                              backends.cuda_arch())


def check_case(case: Case, backend: str) -> dict | None:
    """Run one case on ``backend``; return the errors; raise AssertionError past tolerance.

    A kernel family that does not serve the case must refuse it with a ValueError naming the
    reason (checked), and the case then runs with ``backend=None`` (the selection rule's
    choice); returns None in that case."""
    refusal = kernel_refusal(case, backend)
    if refusal is not None:
        import pytest
        with pytest.raises(ValueError, match="cannot serve"):
            run_backend(case, backend, make_inputs(case))
        check_case(case, "reference" if backends.cuda_arch() is None else None)
        return None
    inputs = make_inputs(case)
    out, lse, grads = run_backend(case, backend, inputs)
    q, k, v, ek, ev, dout, dlse = inputs
    # The oracle sees exactly the values the backend saw (inputs rounded to its dtype).
    rounded = [None if x is None else _round(x, case.dtype) for x in (q, k, v, ek, ev, dout)]
    q, k, v, ek, ev, dout = rounded
    params = make_params(case.spatial, case.kernel_size, case.stride, case.dilation,
                         case.causal)
    scale = case.head_dim ** -0.5
    ref_out, ref_lse = oracle.forward(q, k, v, case.spatial, params, scale, ek, ev)
    inside = np.ones(ref_lse.shape, bool)
    if case.query_box is not None:
        # Outside the box: output 0, LSE -inf, and no gradient flows from there.
        for d, (lo, hi) in enumerate(case.query_box):
            i = np.arange(case.spatial[d]).reshape((1,) * (1 + d) + (-1,)
                                                   + (1,) * (len(case.spatial) - d))
            inside = inside & (i >= lo) & (i < hi)
        ref_out = np.where(inside[..., None], ref_out, 0.0)
        dout = np.where(inside[..., None], dout, 0.0)
        dlse = np.where(inside, dlse, 0.0)
    # Gradients against the float64 gradient given the output the backend returned (its
    # backward consumes that output; the output itself is checked against the exact one).
    ref_grads = list(oracle.backward(q, k, v, case.spatial, params, scale, dout, dlse, ek,
                                     ev, out=out))
    if case.query_box is not None:
        ref_grads[0] = np.where(inside[..., None], ref_grads[0], 0.0)
    tol = tolerances(case.dtype)
    lse_in, lse_out = lse[inside], lse[~inside]
    errs = {"out": oracle.rel_err(out, ref_out),
            "lse": float(np.max(np.abs(lse_in - ref_lse[inside])))
            if np.all(np.isfinite(lse_in)) and np.all(lse_out == -np.inf) else math.inf}
    names = ("dq", "dk", "dv", "dek", "dev") if ek is not None else ("dq", "dk", "dv")
    for name, g, r in zip(names, grads, ref_grads):
        errs[name] = oracle.rel_err(g, r)
    bad = {n: e for n, e in errs.items()
           if not e <= (tol["lse_abs"] if n == "lse" else tol["out" if n == "out" else "grad"])}
    assert not bad, f"{backend} {case.short()}: errors past tolerance {bad} (all: {errs})"
    return errs


def _round(x, dtype: str) -> np.ndarray:
    if dtype == "float64":
        return np.asarray(x, np.float64)
    return np.asarray(jnp.asarray(x, dtype), np.float64)
