"""Which backend runs a GNA call: the one support table and the selection rule.

The table (``KERNELS``) says what each kernel family supports: architectures, dtypes, head
dims, direction and limits, all derived from the kernel manifest
(``jax_gna.kernel_manifest``, which also generates the instantiations); this module adds the
preference order and what was measured (``boundary_tile_cost``, ``verified_on``). The native
library says what this build compiled (``jax_gna._extension.compiled_kernels()``). A kernel
serves a case only if both agree and its own rule (``unsupported_reason``) has no objection.

Selection rule (per direction, forward and backward chosen separately):

1. ``backend="reference"``: the jnp reference (``jax_gna.reference.tiled``), everywhere.
2. ``backend="<kernel>"`` (e.g. ``"sm80"``): that kernel, or a ``ValueError`` saying why it
   cannot serve the case's forward. If it has no backward for the case (e.g. the sm90
   backward with additional keys or ``deterministic=True``), the backward uses the best
   other kernel, else the reference (logged with the reason).
3. ``backend=None``: on a CUDA device, the first kernel in ``KERNELS`` order that serves the
   case; otherwise (other platforms, or no kernel serves it) the reference. Each fallback is
   logged at debug level on logger ``jax_gna`` with the reasons; with the environment variable
   ``JAX_GNA_REQUIRE_KERNEL=1`` a fallback on a CUDA device raises instead.

``explain(...)`` returns the decision and the reasons without running anything.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable

import jax.numpy as jnp

from jax_gna import kernel_manifest
from jax_gna._config import AttentionConfig

logger = logging.getLogger("jax_gna")

REFERENCE = "reference"
FORWARD, BACKWARD = kernel_manifest.FORWARD, kernel_manifest.BACKWARD
_DTYPE_NAMES = {jnp.dtype(jnp.float16): "fp16", jnp.dtype(jnp.bfloat16): "bf16",
                jnp.dtype(jnp.float32): "fp32", jnp.dtype(jnp.float64): "fp64"}


@dataclasses.dataclass(frozen=True)
class Case:
    """What a kernel must know to decide whether it serves a call (all static)."""

    config: AttentionConfig
    dtype: str          # "bf16", "fp16", "fp32", "fp64"
    head_dim: int
    head_dim_v: int
    heads_q: int
    heads_kv: int
    num_extra: int


@dataclasses.dataclass(frozen=True)
class KernelFamily:
    name: str
    # Compute capabilities (major * 10 + minor) it runs on; None: no upper bound.
    min_arch: int
    max_arch: int | None
    dtypes: frozenset[str]
    head_dims: dict  # direction -> frozenset of head dims (head_dim == head_dim_v)
    # Family-specific objections beyond the manifest's limits, per direction; None when it
    # serves.
    extra_rule: Callable[[Case, str], str | None] | None = None
    # Largest tile side times dilation along a dim (TMA box extent), or None: no limit
    # beyond the handler's kernel_manifest.MAX_TILE_SIDE tokens per side.
    box_extent_limit: int | None = None
    # Largest dilation along any dim (TMA traversal stride), or None: any.
    max_dilation: int | None = None
    # The (direction, dtype, head_dim) triples with an instantiation in the manifest.
    instances: frozenset = frozenset()
    # What a boundary KV tile (element mask) costs over an unmasked one, as a fraction of an
    # unmasked tile's time: tile choice weighs masking against visiting more tiles with it
    # (jax_gna.tiles.best_boxes). Measured per family, see KERNELS.
    boundary_tile_cost: float = 0.0
    verified_on: str = ""

    def unsupported_reason(self, case: Case, direction: str, arch: int | None) -> str | None:
        if arch is None:
            return "no CUDA device"
        if arch < self.min_arch or (self.max_arch is not None and arch > self.max_arch):
            hi = f"sm{self.max_arch}" if self.max_arch else "newer"
            return f"runs on sm{self.min_arch}..{hi}, device is sm{arch}"
        if case.dtype not in self.dtypes:
            return f"dtype {case.dtype} not in {sorted(self.dtypes)}"
        dims = self.head_dims.get(direction, frozenset())
        if not dims:
            return f"no {direction} kernel"
        if case.head_dim != case.head_dim_v:
            return f"head_dim {case.head_dim} != value head_dim {case.head_dim_v}"
        if case.head_dim not in dims:
            return f"head_dim {case.head_dim} not in {sorted(dims)} ({direction})"
        if self.instances and (direction, case.dtype, case.head_dim) not in self.instances:
            return (f"no {direction} {case.dtype} head_dim {case.head_dim} instantiation in "
                    f"the kernel manifest")
        if (direction, self.name, case.dtype, case.head_dim) not in compiled_kernels():
            return (f"{direction} {self.name} {case.dtype} head_dim {case.head_dim} not "
                    f"compiled in this build ({_extension_state()})")
        if not case.config.scale > 0:
            return f"scale {case.config.scale} must be > 0 for kernels"
        if self.box_extent_limit is not None:
            why = _box_feasibility(self, case, direction)
            if why is not None:
                return why
        if self.max_dilation is not None and max(case.config.params.dilation) > self.max_dilation:
            return (f"dilation {case.config.params.dilation}: TMA traversal stride is at most "
                    f"{self.max_dilation}")
        if self.extra_rule is not None:
            return self.extra_rule(case, direction)
        return None

    def max_tile_sides(self, config: AttentionConfig) -> tuple[int, ...]:
        """Largest tile side per spatial dim this family accepts for ``config``."""
        limit = self.box_extent_limit or kernel_manifest.MAX_TILE_SIDE
        return tuple(max(1, limit // d) for d in config.params.dilation)


def _box_feasibility(family: "KernelFamily", case: Case, direction: str) -> str | None:
    """Can power-of-two boxes of the kernel's token counts respect the side limits?"""
    sides = family.max_tile_sides(case.config)
    room = 1
    for side in sides:
        room *= 1 << (side.bit_length() - 1)     # largest power of two <= side
    tokens = compiled_kernels().get((direction, family.name, case.dtype, case.head_dim))
    if tokens and max(tokens) > room:
        return (f"tile boxes of {max(tokens)} tokens cannot keep side x dilation <= "
                f"{family.box_extent_limit} with dilation {case.config.params.dilation}")
    return None


def _sm90_rule(case: Case, direction: str) -> str | None:
    """What the Hopper backward does not compute (xla_ffi/cuda/sm90/support.h admit_bwd).
    The TMA limits are the manifest's (box extent, dilation)."""
    if direction == BACKWARD:
        if case.config.deterministic:
            return ("deterministic=True: this backward adds dQ by TMA reductions in arrival "
                    "order (no fixed summation order)")
        if case.num_extra > 0:
            return f"additional keys/values ({case.num_extra}) are not supported by its backward"
    return None


def _from_manifest(name: str, **measured) -> KernelFamily:
    """A family's support facts from the kernel manifest, plus what was measured of it."""
    family = kernel_manifest.FAMILIES[name]
    kernels = kernel_manifest.kernels_of(name)
    head_dims = {}
    for k in kernels:
        head_dims.setdefault(k.direction, set()).add(k.head_dim)
    return KernelFamily(
        name, family.min_arch, family.max_arch, frozenset(k.dtype for k in kernels),
        {direction: frozenset(dims) for direction, dims in head_dims.items()},
        box_extent_limit=family.box_extent_limit, max_dilation=family.max_dilation,
        instances=frozenset((k.direction, k.dtype, k.head_dim) for k in kernels), **measured)


# The support table, in preference order.
# boundary_tile_cost: the time per visited tile pair of each stride-1 (masked) suite case
# over that of the same problem's block-sparse stride, divided by its boundary-tile share
# (H200, bf16, D 128, forward): sm90 0.04-0.27 (median 0.14; 1-D seq32k 0.74), sm80
# 0.17-0.37 (median 0.25); sm90 with the TMA-store epilogue: FLUX 1x1 0.17, FLUX 16x1
# 0.16, Hunyuan 1x1x1 0.08.
KERNELS: tuple[KernelFamily, ...] = (
    _from_manifest("sm90", boundary_tile_cost=0.15, extra_rule=_sm90_rule,
                   verified_on="H100 (sm90a), jax 0.11.2: scripts/gpu_check.sh smoke90, "
                               "sanitize90bwd, suite; the forward also on H200"),
    _from_manifest("sm80", boundary_tile_cost=0.25,
                   verified_on="Hopper only (H100, H200), jax 0.11.2: scripts/gpu_check.sh; "
                               "not run on an sm80/sm86/sm89/sm100 device"),
)
KERNEL_NAMES = tuple(k.name for k in KERNELS)
BACKEND_NAMES = (REFERENCE,) + KERNEL_NAMES


def kernel_family(name: str) -> KernelFamily:
    for k in KERNELS:
        if k.name == name:
            return k
    raise ValueError(f"backend must be one of {BACKEND_NAMES} or None; got {name!r}")


# ----------------------------------------------------------------------------------------
# What this build compiled and what device we are on
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def compiled_kernels() -> dict:
    """{(direction, backend, dtype, head_dim): (q_tile_tokens, kv_tile_tokens)}."""
    from jax_gna import _extension
    table = {}
    for line in _extension.compiled_kernels():
        parts = line.split()
        if len(parts) != 7:
            continue
        direction, backend, dtype, d, dv, qt, kt = parts
        if d == dv:
            table[(direction, backend, dtype, int(d))] = (int(qt), int(kt))
    return table


def _extension_state() -> str:
    from jax_gna import _extension
    if _extension.cuda_library_available():
        return "CUDA library loaded"
    return f"CUDA library not loaded: {_extension.load_error() or 'not built'}"


@functools.lru_cache(maxsize=1)
def cuda_arch() -> int | None:
    """Compute capability of the first CUDA device (e.g. 90), or None without one."""
    import jax
    try:
        devices = jax.devices("cuda")
    except RuntimeError:
        return None
    if not devices:
        return None
    cc = getattr(devices[0], "compute_capability", None)
    if cc is None:
        return None
    major, minor = str(cc).split(".")
    return int(major) * 10 + int(minor)


def available_backends() -> tuple[str, ...]:
    """Backends usable in this process: the reference, plus kernels built for this GPU."""
    arch = cuda_arch()
    names = [REFERENCE]
    for k in KERNELS:
        if arch is not None and arch >= k.min_arch and (k.max_arch is None or arch <= k.max_arch)\
                and any(key[1] == k.name for key in compiled_kernels()):
            names.append(k.name)
    return tuple(names)


# ----------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Choice:
    backend: str                 # "reference" or a kernel family name
    reasons: tuple[str, ...]     # why kernels before it were passed over

    @property
    def is_kernel(self) -> bool:
        return self.backend != REFERENCE

    def __str__(self):
        why = "; ".join(self.reasons)
        return self.backend + (f" ({why})" if why else "")


def make_case(config: AttentionConfig, query_aval, key_aval, value_aval, extra_aval) -> Case:
    return Case(config=config, dtype=_DTYPE_NAMES.get(jnp.dtype(query_aval.dtype), "?"),
                head_dim=int(query_aval.shape[-1]), head_dim_v=int(value_aval.shape[-1]),
                heads_q=int(query_aval.shape[-2]), heads_kv=int(key_aval.shape[-2]),
                num_extra=int(extra_aval.shape[1]))


def kernel_tiles(family: str, case: Case, direction: str) -> tuple[int, int]:
    """(q_tile_tokens, kv_tile_tokens) of the compiled instantiation."""
    return compiled_kernels()[(direction, family, case.dtype, case.head_dim)]


def choose(case: Case, direction: str, platform: str, *, arch: int | None = None,
           enforce: bool = True) -> Choice:
    """Apply the selection rule (module docstring) for one direction on one platform.

    ``enforce=False`` only reports: JAX_GNA_REQUIRE_KERNEL does not turn a fallback into an
    error (``explain`` uses it)."""
    requested = case.config.backend
    if requested == REFERENCE:
        return Choice(REFERENCE, ())
    on_cuda = platform == "cuda"
    arch = (cuda_arch() if arch is None else arch) if on_cuda else None
    if requested is not None:
        family = kernel_family(requested)
        reason = family.unsupported_reason(case, direction, arch) if on_cuda else \
            f"platform {platform!r} is not CUDA"
        if reason is None:
            return Choice(family.name, ())
        if direction == BACKWARD:
            # The requested family's forward serves the call (it was chosen for it); a
            # backward it does not compute comes from the best other kernel (logged).
            return _best(case, direction, arch, on_cuda, platform,
                         (f"{family.name}: {reason}",), enforce)
        raise ValueError(f"backend={requested!r} cannot serve this {direction} call: {reason}")
    return _best(case, direction, arch, on_cuda, platform, (), enforce)


def _best(case, direction, arch, on_cuda, platform, reasons, enforce) -> Choice:
    reasons = list(reasons)
    if on_cuda:
        for family in KERNELS:
            why = family.unsupported_reason(case, direction, arch)
            if why is None:
                return Choice(family.name, tuple(reasons))
            reasons.append(f"{family.name}: {why}")
    else:
        reasons.append(f"platform {platform!r} has no GNA kernels")
    choice = Choice(REFERENCE, tuple(reasons))
    if enforce and on_cuda and os.environ.get("JAX_GNA_REQUIRE_KERNEL", "0") not in ("", "0"):
        raise ValueError(f"JAX_GNA_REQUIRE_KERNEL is set but no kernel serves this {direction} "
                         f"call: {'; '.join(reasons)}")
    logger.debug("jax_gna %s on %s -> %s", direction, platform, choice)
    return choice


def case_for(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, *,
             additional_keys=None, backend=None, scale=None) -> Case:
    """The selection ``Case`` of a call with these (abstract or concrete) inputs, validated
    like ``jax_gna.attention`` would (``scale=None``: 1/sqrt(head_dim))."""
    import jax
    from jax_gna import _checks, semantics
    rank = _checks.check_tensors(query, key, value, additional_keys,
                                 None if additional_keys is None else additional_keys)
    spatial = tuple(query.shape[1:1 + rank])
    params = semantics.make_params(spatial, kernel_size, stride, dilation, is_causal)
    scale = float(query.shape[-1]) ** -0.5 if scale is None else float(scale)
    config = AttentionConfig(spatial, params, scale, backend)
    extra = additional_keys if additional_keys is not None else \
        jax.ShapeDtypeStruct((query.shape[0], 0) + tuple(key.shape[-2:]), key.dtype)
    return make_case(config, query, key, value, extra)


def explain(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, *,
            additional_keys=None, backend=None, platform: str | None = None) -> dict:
    """Which backend each direction would use for these inputs, and why (runs nothing).

    Returns ``{"fwd": ..., "bwd": ...}``, each ``"<backend> (<reasons>)"``. It never raises
    for a backend that cannot serve the call, on any platform: where ``jax_gna.attention``
    would raise (a requested kernel that cannot serve that direction), the entry is
    ``"error (<why>; backend=None would use <choice>)"``."""
    import jax
    case = case_for(query, key, value, kernel_size, stride, dilation, is_causal,
                    additional_keys=additional_keys, backend=backend)
    platform = platform or jax.default_backend()
    platform = "cuda" if platform == "gpu" else platform

    def explain_one(direction: str) -> str:
        try:
            return str(choose(case, direction, platform, enforce=False))
        except ValueError as err:
            if case.config.backend not in KERNEL_NAMES:
                raise
            best = choose(dataclasses.replace(case, config=case.config.replace(backend=None)),
                          direction, platform, enforce=False)
            return f"error ({err}; backend=None would use {best})"
    return {d: explain_one(d) for d in (FORWARD, BACKWARD)}
