"""A causal GNA window of size w (stride 1, dilation 1) is the band that
``jax.nn.dot_product_attention(..., is_causal=True, local_window_size=(w - 1, 0))`` attends:
query i sees keys max(0, i - w + 1) .. i, also near the start of the sequence. The 1-D part of
benchmarks/peers.py times cuDNN's implementation of that band against jax_gna; here the XLA
implementation of the same call is compared with jax_gna's reference backend on a CPU, with
grouped heads (GQA) as in the benchmark.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_gna


def band_attention(q, k, v, w):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=(w - 1, 0),
                                        implementation="xla")


def gna_attention(q, k, v, w, stride=1, dilation=1):
    return jax_gna.attention(q, k, v, (w,), stride, dilation, (True,), backend="reference")


def seen_keys(attend, length, heads=4, kv_heads=2):
    """Boolean [heads, query, key]: which keys each query attends, read off the output.
    With q = k = 0 every attended key gets the same positive weight and every other key
    none; v = identity puts key j's weight in output column j."""
    q = jnp.zeros((1, length, heads, length), jnp.float32)
    k = jnp.zeros((1, length, kv_heads, length), jnp.float32)
    v = jnp.broadcast_to(jnp.eye(length)[None, :, None, :], k.shape)
    return np.asarray(attend(q, k, v))[0].transpose(1, 0, 2) > 0


@pytest.mark.parametrize("length, w", [(16, 2), (16, 5), (16, 16), (37, 8), (37, 36)])
def test_causal_window_and_band_attend_the_same_keys(length, w):
    gna = seen_keys(lambda q, k, v: gna_attention(q, k, v, w), length)
    band = seen_keys(lambda q, k, v: band_attention(q, k, v, w), length)
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    expected = (j <= i) & (j >= i - w + 1)       # near the start: keys 0 .. i
    for h in range(gna.shape[0]):
        np.testing.assert_array_equal(gna[h], expected, err_msg=f"GNA, head {h}")
        np.testing.assert_array_equal(band[h], expected, err_msg=f"band, head {h}")


@pytest.mark.parametrize("stride, dilation", [(2, 1), (4, 1), (1, 2)])
def test_strided_or_dilated_causal_window_is_not_the_band(stride, dilation):
    """Why the benchmark keeps stride and dilation at 1 (and proof that the probe above
    sees differences): the strided window starts at its stride group's leader, the
    dilated one skips keys."""
    length, w = 24, 6
    gna = seen_keys(lambda q, k, v: gna_attention(q, k, v, w, stride, dilation), length)
    band = seen_keys(lambda q, k, v: band_attention(q, k, v, w), length)
    assert not np.array_equal(gna, band)


@pytest.mark.parametrize("length, w, batch", [(33, 2, 1), (64, 7, 2), (50, 50, 1)])
def test_causal_window_and_band_agree_on_random_inputs(length, w, batch):
    """Outputs and all three gradients, float32, grouped heads (8 query / 2 KV heads),
    fresh inputs on every run (the seed is in the failure message)."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], (batch, length, 8, 16))
    k, v = (jax.random.normal(kk, (batch, length, 2, 16)) for kk in ks[1:3])
    dout = jax.random.normal(ks[3], q.shape)
    results = []
    for attend in (gna_attention, band_attention):
        out, pullback = jax.vjp(lambda q, k, v, attend=attend: attend(q, k, v, w), q, k, v)
        results.append((out, *pullback(dout)))
    for name, a, b in zip(("out", "dq", "dk", "dv"), *results):
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        assert rel < 1e-5, f"{name}: relative error {rel:.3g} (seed {seed})"
