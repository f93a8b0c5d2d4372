"""The oracle's mask (``tests/independent_mask.py``, written from docs/semantics.md without
jax_gna) against the contract's worked examples and against ``jax_gna.semantics``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import independent_mask
from jax_gna import semantics

EXAMPLES = int(os.environ.get("JAX_GNA_TEST_EXAMPLES", "200"))


@pytest.mark.parametrize("query, stride, causal, keys", [
    # docs/semantics.md, "Worked examples" (L=10, k=5).
    (0, 1, False, range(0, 5)), (5, 1, False, range(3, 8)), (9, 1, False, range(5, 10)),
    (4, 4, True, (3, 4)), (8, 4, True, range(5, 9)), (9, 4, True, range(5, 10)),
])
def test_contract_worked_examples(query, stride, causal, keys):
    assert independent_mask.keys_of_query(query, 10, 5, stride, 1, causal) == list(keys)


def test_dilation_keeps_keys_in_the_group():
    # L=11, d=3: group 1 holds coordinates 1, 4, 7, 10 (Lg=4); k=3 around position 1 of 4.
    assert independent_mask.keys_of_query(4, 11, 3, 1, 3, False) == [1, 4, 7]
    assert independent_mask.keys_of_query(10, 11, 3, 1, 3, False) == [4, 7, 10]


@st.composite
def _problems(draw):
    rank = draw(st.integers(1, 3))
    max_len = {1: 40, 2: 12, 3: 6}[rank]
    spatial, ks, ss, ds, cs = [], [], [], [], []
    for _ in range(rank):
        length = draw(st.integers(2, max_len))
        d = draw(st.integers(1, length // 2))
        k = draw(st.integers(2, length // d))
        spatial.append(length)
        ks.append(k)
        ss.append(draw(st.integers(1, k)))
        ds.append(d)
        cs.append(draw(st.booleans()))
    return tuple(spatial), tuple(ks), tuple(ss), tuple(ds), tuple(cs)


@settings(max_examples=EXAMPLES)
@given(_problems())
def test_matches_semantics(problem):
    spatial, ks, ss, ds, cs = problem
    params = semantics.make_params(spatial, ks, ss, ds, cs)
    expect = semantics.neighborhood_mask(spatial, params)
    got = independent_mask.neighborhood_mask(spatial, ks, ss, ds, cs)
    assert got.shape == expect.shape
    mismatch = np.argwhere(got != expect)
    assert mismatch.size == 0, f"{len(mismatch)} pairs differ, first (query, key) {mismatch[0]}"
    assert got.any(axis=1).all(), "every query sees at least one key"
