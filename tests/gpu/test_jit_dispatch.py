"""Under ``jax.jit`` with ``backend=None`` on a CUDA GPU, every supported case runs a kernel.

For each configuration: the selection rule (``jax_gna.explain``) names the expected kernel
family (on sm90: the halo kernels where their rule admits the call and a Q tile's halo holds
at most ``backends.SMALL_HALO_TOKENS`` keys, else the Hopper forward for head dims 64/128/256
and the Hopper backward for head dims 64/128 (with additional keys, the portable one's
extra-token part first); elsewhere the halo kernels where their rule admits the call; the
portable kernel for the rest), the compiled HLO holds the GNA custom call for the forward and for the backward, no fallback happens (``JAX_GNA_REQUIRE_KERNEL=1``), and the jitted result
equals the reference's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jax_gna
from jax_gna import _cuda_lowering, backends

pytestmark = pytest.mark.gpu


@dataclasses.dataclass(frozen=True)
class JitCase:
    name: str
    spatial: tuple
    kernel_size: tuple
    stride: tuple = 1
    dilation: tuple = 1
    causal: tuple = False
    heads: tuple = (4, 4)          # (query heads, kv heads)
    head_dim: int = 128
    dtype: str = "bfloat16"
    extra: int = 0
    backward: bool = True          # a backward kernel serves head dims 32/64/128
    sm90_backward: bool = True     # on sm90, the Hopper backward serves it


CASES = [
    JitCase("2d_gqa", (24, 40), (7, 9), heads=(4, 2)),
    JitCase("3d_stride_causal", (10, 12, 16), (4, 6, 8), stride=(2, 2, 4),
            causal=(True, False, False), head_dim=64),
    # 1-D dilation 2: a 128-token TMA box spans 128 x 2 = 256 positions, the TMA limit (larger
    # dilations go to the portable kernel: jax_gna/backends.py, sm90 rule).
    JitCase("1d_dilation_extra_fp16", (1000,), (129,), dilation=(2,), dtype="float16",
            extra=17),
    JitCase("2d_dilation3", (30, 36), (5, 7), dilation=(3, 2), head_dim=64),
    JitCase("2d_blocked", (32, 32), (16, 16), stride=(16, 16)),
    JitCase("2d_hdim32_fp16", (20, 28), (5, 7), head_dim=32, dtype="float16",
             sm90_backward=False),
    JitCase("3d_hdim256_fwd", (6, 8, 10), (3, 4, 5), head_dim=256, backward=False),
    # DiNAT-like: dilation 2 over 14x14, 7x7 windows: halos of 49 keys (the halo kernels,
    # also on sm90).
    JitCase("2d_small_halo", (14, 14), (7, 7), dilation=(2, 2), head_dim=64),
]


def _halo_serves(case: JitCase, arch: int, inputs, direction: str, *, small: bool) -> bool:
    """Does the halo family's rule admit the call (and, with ``small``, are its Q tiles'
    halos within ``backends.SMALL_HALO_TOKENS``, where it precedes sm90)?"""
    q, k, v, ek, _ = inputs
    kcase = backends.case_for(q, k, v, case.kernel_size, case.stride, case.dilation,
                              case.causal, additional_keys=ek)
    if backends.kernel_family("halo").unsupported_reason(kcase, direction, arch) is not None:
        return False
    return not small or \
        backends.halo_box_for(kcase.config, kcase)[1].max_tokens <= backends.SMALL_HALO_TOKENS


def _expected_fwd_family(case: JitCase, arch: int, inputs) -> str:
    # The support table (jax_gna/backends.py): sm90 first on Hopper for these head dims,
    # unless the halo kernels serve the call with small halos; then halo where its rule
    # admits the call; everything else goes to the portable sm80 family.
    if arch >= 90 and case.head_dim in (64, 128, 256):
        small = _halo_serves(case, arch, inputs, backends.FORWARD, small=True)
        return "halo" if small else "sm90"
    return "halo" if _halo_serves(case, arch, inputs, backends.FORWARD, small=False) else "sm80"


def _expected_bwd_family(case: JitCase, arch: int, inputs) -> str:
    if arch >= 90 and case.sm90_backward:
        small = _halo_serves(case, arch, inputs, backends.BACKWARD, small=True)
        return "halo" if small else "sm90"
    return "halo" if _halo_serves(case, arch, inputs, backends.BACKWARD, small=False) else "sm80"


def _inputs(case: JitCase):
    keys = jax.random.split(jax.random.PRNGKey(hash(case.name) % 2**31), 6)
    hq, hkv = case.heads
    dt = jnp.dtype(case.dtype)
    shape = (2, *case.spatial)
    q = jax.random.normal(keys[0], (*shape, hq, case.head_dim), dt)
    k = jax.random.normal(keys[1], (*shape, hkv, case.head_dim), dt)
    v = jax.random.normal(keys[2], (*shape, hkv, case.head_dim), dt)
    if not case.extra:
        return q, k, v, None, None
    ek = jax.random.normal(keys[3], (2, case.extra, hkv, case.head_dim), dt)
    ev = jax.random.normal(keys[4], (2, case.extra, hkv, case.head_dim), dt)
    return q, k, v, ek, ev


def _attention(case: JitCase, backend=None):
    def f(q, k, v, ek, ev):
        return jax_gna.attention(q, k, v, case.kernel_size, case.stride, case.dilation,
                                 case.causal, additional_keys=ek, additional_values=ev,
                                 backend=backend)
    return f


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jit_uses_the_kernel(case, monkeypatch):
    arch = backends.cuda_arch()
    if arch is None or not ({"sm80", "sm90"} & set(jax_gna.available_backends())):
        pytest.skip("needs a CUDA GPU with the jax_gna kernels built")
    monkeypatch.setenv("JAX_GNA_REQUIRE_KERNEL", "1")   # any fallback raises
    inputs = _inputs(case)
    q, k, v, ek, ev = inputs

    choice = jax_gna.explain(q, k, v, case.kernel_size, case.stride, case.dilation,
                             case.causal, additional_keys=ek)
    assert choice["fwd"].startswith(_expected_fwd_family(case, arch, inputs)), choice
    if case.backward:
        # The Hopper backward serves head dims 64/128 (additional keys included); then the
        # halo backward where its rule admits the call; the portable one for the rest.
        assert choice["bwd"].startswith(_expected_bwd_family(case, arch, inputs)), choice

    fwd = jax.jit(_attention(case))
    hlo = fwd.lower(*inputs).compile().as_text()
    assert f'custom_call_target="{_cuda_lowering.fwd_target()}"' in hlo
    out = fwd(*inputs)
    ref = _attention(case, "reference")(*inputs)
    assert _rel(out, ref) < 1e-2

    if not case.backward:
        return

    def loss(fn):
        def scalar(q, k, v, ek, ev):
            o = fn(q, k, v, ek, ev).astype(jnp.float32)
            return jnp.sum(o * jnp.cos(o))     # a non-trivial cotangent
        return scalar

    argnums = (0, 1, 2) if ek is None else (0, 1, 2, 3, 4)
    grad = jax.jit(jax.grad(loss(_attention(case)), argnums=argnums))
    hlo = grad.lower(*inputs).compile().as_text()
    assert f'custom_call_target="{_cuda_lowering.bwd_target()}"' in hlo
    got = grad(*inputs)
    want = jax.jit(jax.grad(loss(_attention(case, "reference")), argnums=argnums))(*inputs)
    for name, g, w in zip(("dq", "dk", "dv", "dek", "dev"), got, want):
        assert _rel(g, w) < 2e-2, name
