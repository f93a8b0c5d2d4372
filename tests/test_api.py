"""The public API under JAX transformations, its validation errors, and merge_attentions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gna
from jax_gna import backends

import oracle
from jax_gna.semantics import make_params

KS, ST, DL, CA = (3, 4), (2, 3), (2, 1), (False, True)
SPATIAL = (7, 6)


def _inputs(seed=0, b=2, hq=4, hkv=2, d=8, dv=8, spatial=SPATIAL, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    mk = lambda *s: jnp.asarray(rng.standard_normal(s), dtype)  # noqa: E731
    return mk(b, *spatial, hq, d), mk(b, *spatial, hkv, d), mk(b, *spatial, hkv, dv)


def gna(q, k, v, **kw):
    return jax_gna.attention(q, k, v, KS, ST, DL, CA, **kw)


def _oracle(q, k, v):
    p = make_params(SPATIAL, KS, ST, DL, CA)
    return oracle.forward(np.asarray(q), np.asarray(k), np.asarray(v), SPATIAL, p,
                          q.shape[-1] ** -0.5)[0]


def test_jit_matches_eager_and_oracle():
    q, k, v = _inputs()
    a = gna(q, k, v)
    b = jax.jit(gna)(q, k, v)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert oracle.rel_err(b, _oracle(q, k, v)) < 1e-5


def test_eval_shape():
    q, k, v = _inputs(dv=5)
    out, lse = jax.eval_shape(lambda q, k, v: gna(q, k, v, return_lse=True), q, k, v)
    assert out.shape == q.shape[:-1] + (5,) and out.dtype == q.dtype
    assert lse.shape == q.shape[:-1] and lse.dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs(dtype):
    q, k, v = _inputs(dtype=dtype)
    out, lse = jax.jit(lambda q, k, v: gna(q, k, v, return_lse=True))(q, k, v)
    assert out.dtype == dtype and lse.dtype == jnp.float32
    ref = _oracle(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    assert oracle.rel_err(out, ref) < 1e-2
    g = jax.grad(lambda q: gna(q, k, v).astype(jnp.float32).sum())(q)
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g)))


def _vmapped(in_axes, batched):
    q, k, v = _inputs(b=1)
    rng = np.random.default_rng(1)
    stack = lambda x: jnp.stack([x * (1 + 0.1 * i) + 0.01 * rng.standard_normal(x.shape)  # noqa
                                 for i in range(3)]).astype(x.dtype)
    args = [stack(x) if b else x for x, b in zip((q, k, v), batched)]
    got = jax.vmap(gna, in_axes=in_axes)(*args)
    for i in range(3):
        sl = [x[i] if b else x for x, b in zip(args, batched)]
        np.testing.assert_allclose(got[i], gna(*sl), rtol=2e-5, atol=2e-5)


def test_vmap_over_query_only():
    _vmapped((0, None, None), (True, False, False))


def test_vmap_over_key_value_only():
    _vmapped((None, 0, 0), (False, True, True))


def test_vmap_over_all():
    _vmapped((0, 0, 0), (True, True, True))


def test_vmap_nonzero_axis_and_nested():
    q, k, v = _inputs(b=2)
    qs = jnp.stack([q, q * 0.5], axis=2)          # vmapped axis in the middle
    got = jax.vmap(gna, in_axes=(2, None, None))(qs, k, v)
    np.testing.assert_allclose(got[1], gna(q * 0.5, k, v), rtol=2e-5, atol=2e-5)
    qq = jnp.stack([qs, qs])
    got2 = jax.vmap(jax.vmap(gna, in_axes=(2, None, None)), in_axes=(0, None, None))(qq, k, v)
    np.testing.assert_allclose(got2[1, 0], gna(q, k, v), rtol=2e-5, atol=2e-5)


def test_grad_matches_finite_differences_of_oracle():
    with jax.enable_x64(True):
        q, k, v = _inputs(b=1, hq=2, hkv=1, d=4, dv=4, dtype=jnp.float64)
        f = lambda q, k, v: jnp.sum(jnp.sin(gna(q, k, v)))  # noqa: E731
        grads = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
        p = make_params(SPATIAL, KS, ST, DL, CA)
        out = oracle.forward(np.asarray(q), np.asarray(k), np.asarray(v), SPATIAL, p,
                             0.5)[0]
        ref = oracle.backward(np.asarray(q), np.asarray(k), np.asarray(v), SPATIAL, p, 0.5,
                              np.cos(out))
        for g, r in zip(grads, ref):
            assert oracle.rel_err(g, r) < 1e-10


def test_vmap_of_grad():
    q, k, v = _inputs(b=1)
    qs = jnp.stack([q, 2 * q])
    f = lambda q, k, v: jnp.sum(gna(q, k, v) ** 2)  # noqa: E731
    got = jax.vmap(jax.grad(f, argnums=(0, 1)), in_axes=(0, None, None))(qs, k, v)
    for i in range(2):
        want = jax.grad(f, argnums=(0, 1))(qs[i], k, v)
        np.testing.assert_allclose(got[0][i], want[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1][i], want[1], rtol=1e-4, atol=1e-5)


def test_jacrev_tiny():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        q = jnp.asarray(rng.standard_normal((1, 5, 1, 2)))
        k = jnp.asarray(rng.standard_normal((1, 5, 1, 2)))
        v = jnp.asarray(rng.standard_normal((1, 5, 1, 2)))
        f = lambda q: jax_gna.attention(q, k, v, 3)  # noqa: E731
        jac = jax.jacrev(f)(q)
        assert jac.shape == (1, 5, 1, 2, 1, 5, 1, 2)
        eps = 1e-6
        dq = np.zeros(q.shape)
        dq[0, 2, 0, 1] = eps
        fd = (f(q + dq) - f(q - dq)) / (2 * eps)
        np.testing.assert_allclose(jac[..., 0, 2, 0, 1], fd, rtol=1e-6, atol=1e-8)


def test_lse_gradient():
    with jax.enable_x64(True):
        q, k, v = _inputs(b=1, d=4, dv=4, dtype=jnp.float64)
        f = lambda q: jnp.sum(jnp.cos(gna(q, k, v, return_lse=True)[1]))  # noqa: E731
        g = jax.grad(f)(q)
        eps = 1e-6
        dq = np.zeros(q.shape)
        dq[0, 3, 2, 1, 0] = eps
        fd = (f(q + dq) - f(q - dq)) / (2 * eps)
        np.testing.assert_allclose(g[0, 3, 2, 1, 0], fd, rtol=1e-6)


def test_merge_attentions_equals_additional_kv():
    with jax.enable_x64(True):
        q, k, v = _inputs(b=1, dtype=jnp.float64)
        rng = np.random.default_rng(5)
        ek = jnp.asarray(rng.standard_normal((1, 4, 2, 8)))
        ev = jnp.asarray(rng.standard_normal((1, 4, 2, 8)))
        full, full_lse = gna(q, k, v, additional_keys=ek, additional_values=ev,
                             return_lse=True)
        local, local_lse = gna(q, k, v, return_lse=True)
        # Dense attention of every query over the extra tokens alone.
        qg = q.reshape(1, -1, 2, 2, 8)
        s = jnp.einsum("bqhgd,bkhd->bqhgk", qg, ek) * 8 ** -0.5
        lse_e = jax.nn.logsumexp(s, -1)
        out_e = jnp.einsum("bqhgk,bkhd->bqhgd", jax.nn.softmax(s, -1), ev)
        out_e = out_e.reshape(q.shape)
        lse_e = lse_e.reshape(q.shape[:-1])
        merged, merged_lse = jax_gna.merge_attentions([local, out_e], [local_lse, lse_e])
        np.testing.assert_allclose(merged, full, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(merged_lse, full_lse, rtol=1e-10, atol=1e-12)


def test_na_aliases_check_rank():
    q, k, v = _inputs()
    np.testing.assert_allclose(jax_gna.na2d(q, k, v, KS, ST, DL, CA), gna(q, k, v))
    with pytest.raises(ValueError, match="na1d expects query"):
        jax_gna.na1d(q, k, v, 3)
    with pytest.raises(ValueError, match="na3d expects query"):
        jax_gna.na3d(q, k, v, 3)


# ---- validation --------------------------------------------------------------------------

def _bad(**overrides):
    q, k, v = _inputs()
    args = dict(query=q, key=k, value=v, kernel_size=3)
    args.update(overrides)
    return args


@pytest.mark.parametrize("overrides, error, message", [
    (dict(query=jnp.zeros((2, 7, 4, 8))), ValueError, "key must have the same number of axes"),
    (dict(query=jnp.zeros((2, 4, 8))), ValueError, "query must be \\[batch, \\*spatial"),
    (dict(key=jnp.zeros((2, 7, 5, 2, 8))), ValueError, "key batch and spatial dims"),
    (dict(key=jnp.zeros((2, 7, 6, 3, 8)), value=jnp.zeros((2, 7, 6, 3, 8))), ValueError,
     "multiple of key/value heads"),
    (dict(value=jnp.zeros((2, 7, 6, 1, 8))), ValueError, "same number of heads"),
    (dict(key=jnp.zeros((2, 7, 6, 2, 4))), ValueError, "key head_dim 4 must equal"),
    (dict(value=jnp.zeros((2, 7, 6, 2, 8), jnp.bfloat16)), TypeError, "share one dtype"),
    (dict(kernel_size=(3, 7)), ValueError,
     "kernel_size\\[1\\]=7 times dilation\\[1\\]=1 exceeds spatial size 6 along dim 1"),
    (dict(stride=5), ValueError, "stride\\[0\\]=5"),
    (dict(scale="big"), TypeError, "scale must be a Python float"),
    (dict(backend="tpu9000"), ValueError, "backend must be one of"),
    (dict(additional_keys=jnp.zeros((2, 3, 2, 8))), ValueError, "given together"),
    (dict(additional_keys=jnp.zeros((2, 3, 2, 8)), additional_values=jnp.zeros((2, 4, 2, 8))),
     ValueError, "additional_keys has 3 tokens"),
    (dict(additional_keys=jnp.zeros((2, 3, 1, 8)), additional_values=jnp.zeros((2, 3, 1, 8))),
     ValueError, "additional_keys must be \\[batch, n_extra, heads_kv"),
    (dict(q_tile=(0, 4)), ValueError, "q_tile\\[0\\]=0 must be >= 1"),
])
def test_validation_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        jax_gna.attention(**_bad(**overrides))


def test_integer_inputs_rejected():
    q = jnp.zeros((1, 8, 1, 4), jnp.int32)
    with pytest.raises(TypeError, match="query dtype must be"):
        jax_gna.attention(q, q, q, 3)


def test_requesting_a_kernel_without_gpu_is_an_error():
    if backends.cuda_arch() is not None:
        pytest.skip("this machine has a GPU")
    q, k, v = _inputs()
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        gna(q, k, v, backend="sm80")


def test_explain_says_reference_on_cpu():
    q, k, v = _inputs()
    if backends.cuda_arch() is not None:
        pytest.skip("this machine has a GPU")
    choice = jax_gna.explain(q, k, v, KS, ST, DL, CA)
    assert choice["fwd"].startswith("reference") and "no GNA kernels" in choice["fwd"]
