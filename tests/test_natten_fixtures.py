"""jax_gna against NATTEN, the library whose semantics docs/semantics.md adopts: outputs and LSEs
NATTEN 0.21 computed (flex backend, CPU, float32) for small random problems with strides,
dilations, causal dims, even kernels and additional tokens (``tests/fixtures/natten_*.npz``,
written by ``scripts/make_natten_fixtures.py``)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import jax_gna
import oracle

FIXTURES = sorted((pathlib.Path(__file__).parent / "fixtures").glob("natten_*.npz"))


def _load(path):
    with np.load(path) as f:
        data = {name: f[name] for name in f.files}
    params = {name: tuple(data[name].tolist()) for name in
              ("kernel_size", "stride", "dilation", "is_causal")}
    return data, params


def test_fixtures_exist():
    assert len(FIXTURES) >= 10, "tests/fixtures/natten_*.npz missing"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_reference_matches_natten(path):
    data, params = _load(path)
    out, lse = jax_gna.attention(
        data["query"], data["key"], data["value"], **params, backend="reference",
        additional_keys=data.get("additional_keys"),
        additional_values=data.get("additional_values"), return_lse=True)
    np.testing.assert_allclose(np.asarray(out), data["out"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lse), data["lse"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_oracle_matches_natten(path):
    """The float64 oracle of the suite (its mask written independently of jax_gna)."""
    data, params = _load(path)
    spatial = data["query"].shape[1:-2]
    p = type("Params", (), params)
    out, lse = oracle.forward(data["query"], data["key"], data["value"], spatial, p,
                              data["query"].shape[-1] ** -0.5, data.get("additional_keys"),
                              data.get("additional_values"))
    np.testing.assert_allclose(out, data["out"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, data["lse"], rtol=1e-5, atol=1e-5)
