"""Misuse of the public API gets a clear error naming the argument, the value and the rule;
non-finite inputs stay local on the reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gna
import jax_gna.nn
from jax_gna import semantics


def _qkv(shape=(1, 8, 2, 4), dtype=jnp.float32, seed=0):
    x = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)
    return x, x, x


def _out_lse():
    q, k, v = _qkv()
    return jax_gna.attention(q, k, v, 3, return_lse=True)


# ---- merge_attentions --------------------------------------------------------------------


def test_merge_attentions_rejects_bare_arrays():
    o, l = _out_lse()
    with pytest.raises(TypeError, match=r"outputs must be a list or tuple with one array per "
                                        r"partial attention; got an array of shape "
                                        r"\(1, 8, 2, 4\)"):
        jax_gna.merge_attentions(o, l)
    with pytest.raises(TypeError, match=r"lses must be a list or tuple"):
        jax_gna.merge_attentions([o], l)


def test_merge_attentions_rejects_nested_lists():
    o, l = _out_lse()
    with pytest.raises(TypeError, match=r"outputs\[0\] must be an array with \.shape and "
                                        r"\.dtype; got list"):
        jax_gna.merge_attentions([np.asarray(o).tolist()], [np.asarray(l).tolist()])


def test_merge_attentions_rejects_mixed_dtypes():
    o, l = _out_lse()
    with pytest.raises(TypeError, match=r"outputs must share one dtype; got float32 "
                                        r"\(outputs\[0\]\) and bfloat16 \(outputs\[1\]\)"):
        jax_gna.merge_attentions([o, o.astype(jnp.bfloat16)], [l, l])
    with pytest.raises(TypeError, match=r"lses must share one dtype"):
        jax_gna.merge_attentions([o, o], [l, l.astype(jnp.bfloat16)])


# ---- attention arguments -----------------------------------------------------------------


@pytest.mark.parametrize("name, empty", [
    ("value", lambda q, k, v: dict(query=q, key=k, value=v[..., :0])),
    ("key", lambda q, k, v: dict(query=q, key=k[..., :0, :], value=v[..., :0, :])),
    ("query", lambda q, k, v: dict(query=q[:0], key=k[:0], value=v[:0])),
])
def test_empty_axis_names_the_tensor(name, empty):
    args = empty(*_qkv())
    shape = str(tuple(args[name].shape)).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"^{name} has an empty axis: shape {shape}; every "
                                         rf"axis must have size >= 1$"):
        jax_gna.attention(**args, kernel_size=3)


@pytest.mark.parametrize("name, value", [("deterministic", "no"), ("return_lse", "x"),
                                         ("return_lse", 1), ("deterministic", None)])
def test_flags_must_be_bools(name, value):
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=rf"{name} must be a bool \(True or False, a static "
                                        rf"value\); got {value!r}"):
        jax_gna.attention(q, k, v, 3, **{name: value})


def test_context_parallel_return_lse_must_be_bool():
    q, k, v = _qkv()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("ctx",))
    with pytest.raises(TypeError, match=r"return_lse must be a bool"):
        jax_gna.context_parallel_attention_on_mesh(q, k, v, 3, mesh=mesh, axis_name="ctx",
                                                   return_lse="yes")


# ---- context parallelism -----------------------------------------------------------------


def test_context_parallel_on_mesh_checks_batch_axis():
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices")
    q, k, v = _qkv()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("ctx",))
    with pytest.raises(ValueError, match=r"batch_axis 'data' is not an axis of the mesh "
                                         r"\{'ctx': 2\}"):
        jax_gna.context_parallel_attention_on_mesh(q, k, v, 3, mesh=mesh, axis_name="ctx",
                                                   batch_axis="data")
    with pytest.raises(ValueError, match=r"batch_axis 'ctx' must differ from axis_name"):
        jax_gna.context_parallel_attention_on_mesh(q, k, v, 3, mesh=mesh, axis_name="ctx",
                                                   batch_axis="ctx")


# ---- Flax layers -------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_heads=0), ValueError, "num_heads must be a positive int \\(>= 1\\); got 0"),
    (dict(num_kv_heads=0), ValueError, "num_kv_heads must be a positive int"),
    (dict(qkv_features=0), ValueError, "qkv_features must be a positive int"),
    (dict(in_features=-8), ValueError, "in_features must be a positive int"),
    (dict(num_heads=2.0), TypeError, "num_heads must be a positive int; got 2.0 of type "
                                     "float"),
])
def test_nnx_layer_sizes(kwargs, error, message):
    from flax import nnx
    args = dict(num_heads=2, in_features=8)
    args.update(kwargs)
    num_heads, in_features = args.pop("num_heads"), args.pop("in_features")
    with pytest.raises(error, match=f"NeighborhoodAttention2D: {message}"):
        jax_gna.nn.NeighborhoodAttention2D(num_heads, in_features, kernel_size=3,
                                           rngs=nnx.Rngs(0), **args)


def test_linen_layer_sizes():
    layer = jax_gna.nn.linen.NeighborhoodAttention1D(num_heads=0, kernel_size=3)
    with pytest.raises(ValueError, match="NeighborhoodAttention1D: num_heads must be a "
                                         "positive int"):
        layer.init(jax.random.key(0), jnp.zeros((1, 8, 4)))


# ---- limits ------------------------------------------------------------------------------


def test_reference_refuses_more_than_2_31_tokens():
    shape = (1, 2048, 1024, 1024, 1, 1)    # 2**31 tokens per batch item
    x = jax.ShapeDtypeStruct(shape, jnp.bfloat16)
    fn = jax.jit(lambda q, k, v: jax_gna.attention(q, k, v, 64, backend="reference"))
    with pytest.raises(ValueError, match=r"at most 2147483647 \(2\*\*31 - 1\) tokens per "
                                         r"batch item .* got spatial shape "
                                         r"\(2048, 1024, 1024\) = 2147483648 tokens"):
        fn.lower(x, x, x)


def test_second_order_derivatives_are_refused():
    q, k, v = _qkv()

    def f(scale):
        return jnp.sum(jax_gna.attention(q * scale, k, v, 3) ** 2)

    assert np.isfinite(jax.grad(f)(1.0))
    message = r"first-order reverse-mode differentiation only .* second-order derivatives"
    with pytest.raises(NotImplementedError, match=message):
        jax.grad(jax.grad(f))(1.0)
    with pytest.raises(NotImplementedError, match=message):
        jax.hessian(f)(1.0)


def test_lse_dtype_follows_the_inputs():
    with jax.enable_x64(True):
        for dtype, want in ((jnp.bfloat16, jnp.float32), (jnp.float32, jnp.float32),
                            (jnp.float64, jnp.float64)):
            q, k, v = _qkv(dtype=dtype)
            out, lse = jax_gna.attention(q, k, v, 3, return_lse=True)
            assert out.dtype == dtype and lse.dtype == want
            merged, merged_lse = jax_gna.merge_attentions([out, out], [lse, lse])
            assert merged.dtype == dtype and merged_lse.dtype == want


# ---- non-finite inputs on the reference --------------------------------------------------


def _neighborhood(spatial, kernel_size):
    params = semantics.make_params(spatial, kernel_size)
    return semantics.neighborhood_mask(spatial, params)   # [query, key] over flat tokens


@pytest.mark.parametrize("spatial, kernel_size, token, heads, extra", [
    ((40,), 5, 20, (1, 1), 0),
    ((9, 10), (3, 5), 47, (4, 2), 3),
])
@pytest.mark.parametrize("poisoned", ["query", "key", "value"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_stays_local(spatial, kernel_size, token, heads, extra, poisoned,
                                      bad):
    rng = np.random.default_rng(1)
    n = int(np.prod(spatial))
    hq, hkv = heads
    mk = lambda h, t=spatial: rng.standard_normal((1, *t, h, 8)).astype(np.float32)  # noqa
    x = dict(query=mk(hq), key=mk(hkv), value=mk(hkv))
    clean = {name: jnp.asarray(a) for name, a in x.items()}
    x[poisoned].reshape(n, -1)[token] = bad
    x = {name: jnp.asarray(a) for name, a in x.items()}
    kw = dict(backend="reference")
    if extra:
        kw.update(additional_keys=jnp.asarray(mk(hkv, (extra,))),
                  additional_values=jnp.asarray(mk(hkv, (extra,))))
    w = jnp.asarray(rng.standard_normal((1, *spatial, hq, 8)), jnp.float32)

    def attend(query, key, value):
        return jax_gna.attention(query, key, value, kernel_size, **kw)

    def loss(*qkv):   # dO = w + O: the cotangent is non-finite where the output is
        out = attend(*qkv)
        return jnp.sum(w * out + 0.5 * out * out)

    mask = _neighborhood(spatial, kernel_size)
    rows = mask[:, token] if poisoned != "query" else np.arange(n) == token
    keys = mask[rows].any(axis=0)         # keys that a poisoned row attends to
    flat = lambda a: np.asarray(a).reshape(n, -1)  # noqa: E731
    out = flat(attend(**x))
    assert np.isfinite(out[~rows]).all(), np.flatnonzero(~np.isfinite(out).all(1))
    np.testing.assert_allclose(out[~rows], flat(attend(**clean))[~rows], rtol=1e-6,
                               atol=1e-6)
    if np.isnan(bad):
        assert not np.isfinite(out[rows]).any()
    dq, dk, dv = jax.grad(loss, argnums=(0, 1, 2))(x["query"], x["key"], x["value"])
    assert np.isfinite(flat(dq)[~rows]).all(), np.flatnonzero(~np.isfinite(flat(dq)).all(1))
    for g in (dk, dv):
        assert np.isfinite(flat(g)[~keys]).all(), np.flatnonzero(~np.isfinite(flat(g)).all(1))
