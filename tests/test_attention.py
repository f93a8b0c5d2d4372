"""The shared correctness suite: every backend against the float64 oracle.

Runs on the reference everywhere (CI) and on each kernel family where a GPU serves it.
``JAX_GNA_TEST_EXAMPLES`` overrides the number of random configurations (default: 500 for
the reference, 200 for a kernel family).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cases import (EDGE_CASES, LOGIT_JUMP_CASES, check_case, make_inputs, random_cases,
                   run_backend)

REFERENCE_EXAMPLES = int(os.environ.get("JAX_GNA_TEST_EXAMPLES", 500))
KERNEL_EXAMPLES = int(os.environ.get("JAX_GNA_TEST_EXAMPLES", 200))


def _for_backend(case, backend):
    """Edge cases are written for the reference; kernels get their dtype and head dim."""
    if backend == "reference":
        return case
    return dataclasses.replace(case, dtype="bfloat16", head_dim=64, head_dim_v=64)


@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: c.short())
def test_edge_cases(backend, case):
    check_case(_for_backend(case, backend), backend)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_edge_cases_half(backend, dtype):
    for case in EDGE_CASES[:6]:
        check_case(dataclasses.replace(_for_backend(case, backend), dtype=dtype,
                                       seed=case.seed + 1), backend)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("spike", [16.0, 64.0])
@pytest.mark.parametrize("case", LOGIT_JUMP_CASES, ids=lambda c: c.short())
def test_logit_jumps(backend, case, spike, head_dim):
    check_case(dataclasses.replace(case, key_spike=spike, head_dim=head_dim,
                                   head_dim_v=head_dim), backend)


def test_random_configurations(backend):
    """>= 500 (reference) / 200 (kernels) random configurations: forward, LSE and all
    gradients, rank 1-3, even/odd k, stride, dilation not dividing the size, per-dim
    causal, GQA, additional KV, every dtype the backend supports."""
    kernel = None if backend == "reference" else backend
    count = REFERENCE_EXAMPLES if kernel is None else KERNEL_EXAMPLES
    seen, refused = [], []

    @settings(max_examples=count, database=None)
    @given(random_cases(kernel))
    def run(case):
        (seen if check_case(case, backend) is not None else refused).append(case)

    run()
    # Every example ran (on the backend or, refused, through the selection rule) and most
    # on the backend itself: a backend refusing most random cases fails here.
    want = min(count, 50)
    assert len(seen) + len(refused) >= want, f"only {len(seen) + len(refused)} of {want} ran"
    assert len(seen) >= want * 3 // 4, f"only {len(seen)} of {want} configurations ran on {backend}"
    print(f"\n{backend}: {len(seen)} random configurations passed on {backend}, "
          f"{len(refused)} refused by it (checked, and passed with the selection rule)")


def test_query_boxes(backend):
    """Computing only a box of queries (context parallelism's local step): inside the box
    exactly the full result, outside output 0 / LSE -inf / no gradient; the kernels skip
    the Q tiles outside the box (their unwritten rows are masked)."""
    kernel = None if backend == "reference" else backend
    count = max(10, REFERENCE_EXAMPLES // 10 if kernel is None else KERNEL_EXAMPLES // 5)
    seen, refused = [], []

    @settings(max_examples=count, database=None)
    @given(random_cases(kernel, query_box=True))
    def run(case):
        (seen if check_case(case, backend) is not None else refused).append(case)

    run()
    want = min(count, 10)
    assert len(seen) + len(refused) >= want, f"only {len(seen) + len(refused)} of {want} ran"
    assert len(seen) >= want * 3 // 4, f"only {len(seen)} of {want} query boxes ran on {backend}"
    print(f"\n{backend}: {len(seen)} random query boxes passed")


def test_deterministic_gradients(backend):
    """deterministic=True: random configurations (additional KV included) within tolerance
    of the oracle, and two runs of the same inputs give bitwise-identical gradients. (A
    kernel family without a deterministic backward hands the gradient to one that has one:
    jax_gna.backends, rule 2.)"""
    import numpy as np
    kernel = None if backend == "reference" else backend
    count = max(5, REFERENCE_EXAMPLES // 50 if kernel is None else KERNEL_EXAMPLES // 25)
    seen = []

    @settings(max_examples=count, database=None)
    @given(random_cases(kernel))
    def run(case):
        case = dataclasses.replace(case, deterministic=True)
        if check_case(case, backend) is None:
            return
        inputs = make_inputs(case)
        first, again = run_backend(case, backend, inputs), run_backend(case, backend, inputs)
        for name, x, y in zip(("dq", "dk", "dv", "dek", "dev"), first[2], again[2]):
            np.testing.assert_array_equal(x, y, err_msg=f"{name} differs between two runs")
        seen.append(case)

    run()
    assert len(seen) >= min(count, 5), f"only {len(seen)} configurations ran"


@given(st.data())
@settings(max_examples=3, database=None)
def test_reference_is_deterministic(data):
    case = data.draw(random_cases(None))
    import numpy as np
    from cases import make_inputs, run_backend
    inputs = make_inputs(case)
    a = run_backend(case, "reference", inputs)
    b = run_backend(case, "reference", inputs)
    for x, y in zip([*a[:2], *a[2]], [*b[:2], *b[2]]):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
