"""Test configuration: backends, markers, hypothesis profiles.

The suite is written once and parametrised by backend (``backend`` fixture): the reference
runs everywhere; kernel backends run where this process has a GPU that they serve and are
skipped with the reason otherwise (``JAX_GNA_REQUIRE_BACKENDS=sm80,sm90`` turns those skips
into failures, for the GPU script).
"""

from __future__ import annotations

import os

# XLA's CPU compiler dominates the runtime of hundreds of small random configurations; the
# backend optimisation level changes speed only, never results.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# The sharding and context-parallel tests need 8 CPU devices (single-device tests still run on
# the default device, unaffected).
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from jax_gna import kernel_manifest  # noqa: E402  (imports jax: after XLA_FLAGS)

settings.register_profile(
    "default", deadline=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.load_profile("default")

BACKENDS = ("reference",) + tuple(sorted(kernel_manifest.FAMILIES))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running")


def _kernel_available(name: str) -> str | None:
    """None if backend ``name`` can run here, else why not."""
    import jax_gna
    from jax_gna import backends
    if name == "reference":
        return None
    if backends.cuda_arch() is None:
        return "no CUDA GPU"
    if name not in jax_gna.available_backends():
        fam = backends.kernel_family(name)
        return (f"{name} not available on sm{backends.cuda_arch()} "
                f"(needs sm{fam.min_arch}..{fam.max_arch or ''}; "
                f"{backends._extension_state()})")
    return None


@pytest.fixture(params=BACKENDS)
def backend(request):
    why = _kernel_available(request.param)
    if why is not None:
        required = os.environ.get("JAX_GNA_REQUIRE_BACKENDS", "").split(",")
        if request.param in required:
            pytest.fail(f"backend {request.param} required but unavailable: {why}")
        pytest.skip(why)
    return request.param


def pytest_collection_modifyitems(config, items):
    # GPU-marked tests skip cleanly on machines without a CUDA GPU.
    from jax_gna import backends
    if backends.cuda_arch() is not None:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
