"""Flax front ends (jax_gna.nn): NNX layers, Linen twins and the attention_fn adapter.

Each layer must equal "project with the layer's own kernels, jax_gna.attention, project
out", share Flax MultiHeadAttention's parameter tree, and survive jit/grad/split/merge.

Kept fast on a small CPU: inputs come from numpy (no PRNG compiles), every layer has the
same feature sizes (so eager parameter initialisers compile once per process) and layers are
called through one jitted program per test rather than op by op.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen
from flax import nnx

import jax_gna
import jax_gna.nn as gnn

C = 16  # features in and out of every layer; 4 heads of 4
# (NNX class, Linen class, spatial shape, kernel_size, stride, dilation, is_causal, kv heads)
CASES = {
    1: (gnn.NeighborhoodAttention1D, gnn.linen.NeighborhoodAttention1D, (11,), 4, 2, 2,
        True, None),
    2: (gnn.NeighborhoodAttention2D, gnn.linen.NeighborhoodAttention2D, (6, 7), (3, 4), 1,
        (2, 1), (False, True), 2),
    3: (gnn.NeighborhoodAttention3D, gnn.linen.NeighborhoodAttention3D, (3, 4, 5), (2, 3, 3),
        (1, 2, 1), 1, False, 1),
}


def _rand(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)), "NaN/inf in output"
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _project(p, x):
    """DenseGeneral by hand: features -> (heads, head_dim)."""
    return jnp.einsum("...c,chd->...hd", x, p["kernel"], precision="highest") + p["bias"]


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5), static_argnames=("extra_proj",))
def _manual(params, x, ks, st, dl, ca, extra=None, extra_proj=("key", "value")):
    """The layer's definition, written out: projections, jax_gna.attention, out projection."""
    q, k, v = (_project(params[n], x) for n in ("query", "key", "value"))
    ek = ev = None
    if extra is not None:
        ek, ev = (_project(params[n], extra) for n in extra_proj)
    o = jax_gna.attention(q, k, v, ks, st, dl, ca, additional_keys=ek, additional_values=ev)
    y = jnp.einsum("...hd,hdo->...o", o, params["out"]["kernel"], precision="highest")
    return y + params["out"]["bias"]


@nnx.jit
def _call(module, *args, **kwargs):
    return module(*args, **kwargs)


def _nnx_params(module):
    """{'query': {'kernel': array, 'bias': array}, ...} from an NNX layer."""
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _shapes(tree):
    return jax.tree.map(lambda x: tuple(x.shape), tree)


# ----------------------------------------------------------------------------------------
# NNX layers
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 2, 3])  # MHA, GQA and MQA respectively
def test_nnx_matches_manual(rank):
    cls, _, spatial, ks, st, dl, ca, kv_heads = CASES[rank]
    layer = cls(4, C, num_kv_heads=kv_heads, kernel_size=ks, stride=st, dilation=dl,
                is_causal=ca, rngs=nnx.Rngs(0))
    x = _rand(1, (2, *spatial, C))
    y = _call(layer, x)
    assert y.shape == (2, *spatial, C)
    assert _rel_err(y, _manual(_nnx_params(layer), x, ks, st, dl, ca)) < 1e-5


@pytest.mark.parametrize("num_kv_heads,normalize_qk", [(None, False), (2, True)])
def test_param_tree_equals_multi_head_attention(num_kv_heads, normalize_qk):
    args = dict(num_heads=4, in_features=C, num_kv_heads=num_kv_heads,
                normalize_qk=normalize_qk)
    layer = gnn.NeighborhoodAttention2D(**args, kernel_size=3, rngs=nnx.Rngs(0))
    mha = nnx.MultiHeadAttention(**args, decode=False, rngs=nnx.Rngs(0))
    ours, theirs = _nnx_params(layer), _nnx_params(mha)
    assert _shapes(ours) == _shapes(theirs)
    # Same creation order from the same rngs: identical values, so checkpoints map 1:1.
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    # Feature sizes that differ from in_features give the same shapes as well.
    sized = dict(num_heads=2, in_features=6, qkv_features=8, out_features=10)
    assert (_shapes(_nnx_params(nnx.eval_shape(lambda: gnn.NeighborhoodAttention1D(
        **sized, kernel_size=2, rngs=nnx.Rngs(0)))))
        == _shapes(_nnx_params(nnx.eval_shape(lambda: nnx.MultiHeadAttention(
            **sized, decode=False, rngs=nnx.Rngs(0))))))


def test_jit_grad_split_merge():
    layer = gnn.NeighborhoodAttention2D(4, C, kernel_size=3, rngs=nnx.Rngs(0))
    x = _rand(1, (1, 5, 6, C))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    @jax.jit
    def loss_and_grad(params, x):
        def loss(params, x):
            return jnp.sum(nnx.merge(graphdef, params, rest)(x) ** 2)
        return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

    value, (g_params, g_x) = loss_and_grad(params, x)
    eager = layer(x)  # op by op, once
    assert np.allclose(value, jnp.sum(eager ** 2), rtol=1e-5)
    assert g_x.shape == x.shape and np.all(np.isfinite(g_x)) and np.any(g_x != 0)
    for leaf in jax.tree.leaves(g_params):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
    # Round trip through split/merge gives the same layer.
    again = nnx.merge(*nnx.split(layer))
    np.testing.assert_allclose(_call(again, x), eager, rtol=1e-5, atol=1e-6)


def test_bf16_compute_fp32_params():
    half = gnn.NeighborhoodAttention2D(4, C, dtype=jnp.bfloat16, kernel_size=(3, 3),
                                       rngs=nnx.Rngs(0))
    full = gnn.NeighborhoodAttention2D(4, C, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(_nnx_params(half)))
    x = _rand(1, (2, 6, 6, C))
    y = _call(half, x)
    assert y.dtype == jnp.bfloat16
    assert _rel_err(y, _call(full, x)) < 2e-2


@pytest.mark.parametrize("separate", [False, True])
def test_extra_tokens(separate):
    ks = (2, 3, 3)
    text_features = 24 if separate else C
    layer = gnn.NeighborhoodAttention3D(
        4, C, num_kv_heads=2, kernel_size=ks,
        in_extra_features=text_features if separate else None, rngs=nnx.Rngs(0))
    x = _rand(1, (2, 3, 4, 5, C))
    text = _rand(2, (2, 7, text_features))
    y = _call(layer, x, inputs_kv_extra=text)
    proj = ("extra_key", "extra_value") if separate else ("key", "value")
    ref = _manual(_nnx_params(layer), x, ks, 1, 1, False, extra=text, extra_proj=proj)
    assert _rel_err(y, ref) < 1e-5
    assert _rel_err(y, _manual(_nnx_params(layer), x, ks, 1, 1, False)) > 1e-3


def test_full_window_with_text_equals_dense_multi_head_attention():
    """kernel_size == grid: GNA + extra tokens is dense attention over grid + text keys."""
    spatial = (3, 4, 5)
    layer = gnn.NeighborhoodAttention3D(4, C, kernel_size=spatial, normalize_qk=True,
                                        rngs=nnx.Rngs(3))
    mha = nnx.MultiHeadAttention(4, C, normalize_qk=True, decode=False, rngs=nnx.Rngs(3))
    x = _rand(1, (2, *spatial, C))
    text = _rand(2, (2, 6, C))
    y = _call(layer, x, inputs_kv_extra=text)
    tokens = x.reshape(2, -1, C)
    ref = _call(mha, tokens, jnp.concatenate([tokens, text], axis=1))
    assert _rel_err(y, ref.reshape(y.shape)) < 1e-5


def test_errors_name_the_argument():
    layer = gnn.NeighborhoodAttention2D(4, C, kernel_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`inputs`.*\[batch, height, width, features\]"):
        layer(jnp.zeros((1, 4, 5, 6, C)))
    with pytest.raises(ValueError, match="`inputs` has 6 features"):
        layer(jnp.zeros((1, 5, 5, 6)))
    with pytest.raises(ValueError, match="inputs_kv_extra"):
        layer(jnp.zeros((1, 5, 5, C)), inputs_kv_extra=jnp.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match="kernel_size"):
        gnn.NeighborhoodAttention3D(4, C, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_kv_heads"):
        gnn.NeighborhoodAttention1D(4, C, num_kv_heads=3, kernel_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="backend must be one of"):  # forwarded as is
        gnn.NeighborhoodAttention1D(4, C, kernel_size=3, backend="nonexistent",
                                    rngs=nnx.Rngs(0))(jnp.zeros((1, 5, C)))
    with pytest.raises(ValueError, match=r"`inputs`.*\[batch, time, height, width"):
        gnn.linen.NeighborhoodAttention3D(num_heads=4, kernel_size=3).init(
            jax.random.key(0), jnp.zeros((1, 5, 5, C)))


# ----------------------------------------------------------------------------------------
# Linen twins
# ----------------------------------------------------------------------------------------


def test_linen_matches_manual_and_loads_into_nnx():
    nnx_cls, cls, spatial, ks, st, dl, ca, kv_heads = CASES[2]
    layer = cls(num_heads=4, kernel_size=ks, stride=st, dilation=dl, is_causal=ca,
                num_kv_heads=kv_heads)
    x = _rand(1, (2, *spatial, C))
    variables = jax.jit(layer.init)(jax.random.key(0), x)
    y = jax.jit(layer.apply)(variables, x)
    params = variables["params"]
    assert _rel_err(y, _manual(params, x, ks, st, dl, ca)) < 1e-5
    # The Linen checkpoint loads into the NNX layer unchanged.
    twin = nnx_cls(4, C, num_kv_heads=kv_heads, kernel_size=ks, stride=st, dilation=dl,
                   is_causal=ca, rngs=nnx.Rngs(5))
    state = nnx.state(twin, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(twin, state)
    assert _rel_err(_call(twin, x), y) < 1e-6


def test_linen_param_tree_equals_multi_head_dot_product_attention():
    x = _rand(1, (2, 5, 6, 12))
    kw = dict(num_heads=4, qkv_features=16, out_features=8, normalize_qk=True)
    ours = jax.eval_shape(gnn.linen.NeighborhoodAttention2D(kernel_size=3, **kw).init,
                          jax.random.key(0), x)
    theirs = jax.eval_shape(linen.MultiHeadDotProductAttention(**kw).init,
                            jax.random.key(0), x.reshape(2, 30, 12))
    assert _shapes(ours) == _shapes(theirs)


def test_linen_extra_tokens_and_bf16():
    layer = gnn.linen.NeighborhoodAttention2D(num_heads=4, kernel_size=3, in_extra_features=6,
                                              dtype=jnp.bfloat16)
    x, text = _rand(1, (1, 5, 5, C)), _rand(2, (1, 4, 6))
    variables = jax.jit(layer.init)(jax.random.key(0), x, inputs_kv_extra=text)
    assert set(variables["params"]) == {"query", "key", "value", "out", "extra_key",
                                        "extra_value"}
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
    y = jax.jit(layer.apply)(variables, x, inputs_kv_extra=text)
    assert y.dtype == jnp.bfloat16
    ref = _manual(variables["params"], x, 3, 1, 1, False, extra=text,
                  extra_proj=("extra_key", "extra_value"))
    assert _rel_err(y, ref) < 2e-2


# ----------------------------------------------------------------------------------------
# attention_fn adapter
# ----------------------------------------------------------------------------------------


def test_adapter_in_nnx_multi_head_attention_matches_layer():
    spatial, ks, st, ca = (6, 7), (3, 5), (1, 2), (True, False)
    layer = gnn.NeighborhoodAttention2D(4, C, num_kv_heads=2, kernel_size=ks, stride=st,
                                        is_causal=ca, rngs=nnx.Rngs(0))
    mha = nnx.MultiHeadAttention(
        4, C, num_kv_heads=2, decode=False, rngs=nnx.Rngs(0),
        attention_fn=gnn.make_attention_fn(spatial, ks, stride=st, is_causal=ca))
    x = _rand(1, (2, *spatial, C))
    y = _call(mha, x.reshape(2, -1, C)).reshape(x.shape)
    assert _rel_err(y, _call(layer, x)) < 1e-6


def test_adapter_in_linen_multi_head_attention_matches_layer():
    spatial, ks, dl = (3, 4, 5), (2, 3, 2), (1, 1, 2)
    x = _rand(1, (2, *spatial, C))
    layer = gnn.linen.NeighborhoodAttention3D(num_heads=4, kernel_size=ks, dilation=dl)
    variables = jax.jit(layer.init)(jax.random.key(0), x)
    mha = linen.MultiHeadDotProductAttention(
        num_heads=4, attention_fn=gnn.make_attention_fn(spatial, ks, dilation=dl))
    y = jax.jit(mha.apply)(variables, x.reshape(2, -1, C)).reshape(x.shape)
    assert _rel_err(y, jax.jit(layer.apply)(variables, x)) < 1e-6


def test_adapter_refuses_what_it_cannot_honour():
    fn = gnn.make_attention_fn((4, 4), 3)
    q = jnp.zeros((1, 16, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        fn(q, q, q, mask=jnp.ones((1, 4, 16, 16), bool))
    with pytest.raises(ValueError, match="bias"):
        fn(q, q, q, bias=jnp.zeros((1, 4, 16, 16)))
    with pytest.raises(ValueError, match="dropout_rate"):
        fn(q, q, q, dropout_rate=0.1, deterministic=False, dropout_rng=jax.random.key(0))
    inactive = functools.partial(fn, dropout_rate=0.1, deterministic=True)
    assert jax.eval_shape(inactive, q, q, q).shape == q.shape  # inactive dropout is fine
    with pytest.raises(ValueError, match="is_causal"):
        fn(q, q, q, is_causal=True)
    with pytest.raises(ValueError, match=r"spatial_shape=\(4, 4\)"):
        fn(q[:, :15], q[:, :15], q[:, :15])
    with pytest.raises(ValueError, match="kernel_size"):
        gnn.make_attention_fn((4, 4), 5)
    mha = nnx.MultiHeadAttention(4, C, decode=False, rngs=nnx.Rngs(0), attention_fn=fn)
    with pytest.raises(ValueError, match="sow_weights"):
        jax.eval_shape(lambda x: mha(x, sow_weights=True), jnp.zeros((1, 16, C)))
