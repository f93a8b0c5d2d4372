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
   backward at head dim 256, or the ``halo`` backward with additional keys), the backward uses
   the best other kernel, else the reference (logged with the reason).
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
import math
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


def _sm80_first_part(case: Case) -> kernel_manifest.Kernel | None:
    """The sm80 backward that computes what the sm90 backward leaves (the additional tokens;
    dQ with deterministic=True), launched first by the FFI handler (ffi_handlers.cu BwdImpl,
    params.h BwdParams::parts): same dtype and head dim, the same Q tile tokens, and KV tile
    tokens that the sm90 KV box halves to."""
    def find(family):
        return next((k for k in kernel_manifest.kernels_of(family, BACKWARD)
                     if k.dtype == case.dtype and k.head_dim == case.head_dim), None)
    sm80, sm90 = find("sm80"), find("sm90")
    if sm80 is None or sm90 is None or sm80.q_tile_tokens != sm90.q_tile_tokens:
        return None
    ratio = sm90.kv_tile_tokens // sm80.kv_tile_tokens
    if sm90.kv_tile_tokens % sm80.kv_tile_tokens or ratio & (ratio - 1):
        return None
    return sm80


# Small windows: where the halo family serves a call and its Q tiles' halos fit one 64-key
# chunk, it precedes sm90. Measured on an H100 (bf16, head dim 64, benchmarks/run.py --suite
# small): DiNAT 14x14, dilation 2 (halo 49 keys): halo fwd 0.169 ms vs sm90 0.368, fwd+bwd
# 0.836 vs 1.199; NAT 28x28 (196 keys) and HDiT 128x128 13x13 (400 keys) are faster on sm90
# (fwd 0.229 vs 0.331 ms and 0.856 vs 1.215). Between one chunk and 196 keys nothing was
# measured at head dims sm90 serves, so the bound stays at one chunk.
SMALL_HALO_TOKENS = 64


def _sm90_rule(case: Case, direction: str) -> str | None:
    """Small halos go to the halo family (``SMALL_HALO_TOKENS``). What the Hopper backward
    does not compute (xla_ffi/cuda/sm90/support.h admit_bwd): the TMA limits are the
    manifest's (box extent, dilation); additional keys/values and deterministic=True are
    served with the sm80 backward computing their part first."""
    if case.config.backend is None and \
            kernel_family("halo").unsupported_reason(case, direction, 90) is None:
        tokens = halo_box_for(case.config, case)[1].max_tokens
        if tokens <= SMALL_HALO_TOKENS:
            return (f"small window: the halo kernel's Q tiles see at most {tokens} keys "
                    f"(<= {SMALL_HALO_TOKENS}, one key chunk), where it is faster")
    if direction == BACKWARD and (case.num_extra > 0 or case.config.deterministic):
        if _sm80_first_part(case) is None:
            what = "deterministic=True" if case.config.deterministic else \
                f"additional keys/values ({case.num_extra})"
            return (f"{what} needs the sm80 backward of dtype {case.dtype}, head dim "
                    f"{case.head_dim} with the same Q tile (it computes that part)")
    return None


def halo_box_for(config: AttentionConfig, case: Case):
    """(Q box, ``tiles.HaloStats``) of the halo forward for this call: ``config.q_tile`` when
    it has the instantiation's Q tokens, else ``tiles.best_halo_box`` (the lowering passes
    the same box, ``jax_gna._cuda_lowering.tile_boxes``)."""
    from jax_gna import tiles
    line = next(k for k in kernel_manifest.kernels_of("halo", FORWARD)
                if (k.dtype, k.head_dim) == (case.dtype, case.head_dim))
    q_tokens, chunk = line.q_tile_tokens, line.kv_tile_tokens
    shape = tuple(config.spatial_shape)
    if config.q_tile is not None and math.prod(config.q_tile) == q_tokens:
        box = tuple(int(t) for t in config.q_tile)
    else:
        family = kernel_family("halo")
        box = tiles.best_halo_box(shape, config.params, q_tokens,
                                  family.max_tile_sides(config), case.num_extra, chunk,
                                  kernel_manifest.FAMILIES["halo"].max_halo_tokens,
                                  kernel_manifest.MAX_TILE_SIDE, config.query_box)
    return box, tiles.halo_stats(shape, config.params, box, case.num_extra, chunk)


def halo_kv_box_for(config: AttentionConfig, q_box: tuple) -> tuple[int, ...]:
    """KV box of the halo family for this call: ``config.kv_tile`` when it has the
    instantiation's KV tokens (the key chunk, 64), else the Q box. The halo backward's dK/dV
    kernel works per KV box (the lowering passes the same box,
    ``jax_gna._cuda_lowering.tile_boxes``); the forward only states the chunk size with it."""
    tokens = next(iter(kernel_manifest.kernels_of("halo", FORWARD))).kv_tile_tokens
    if config.kv_tile is not None and math.prod(config.kv_tile) == tokens:
        return tuple(int(t) for t in config.kv_tile)
    if math.prod(q_box) == tokens:
        return tuple(q_box)
    from jax_gna import tiles
    return tiles.power_of_two_boxes(tokens, config.spatial_shape)[0]


def _halo_rule(case: Case, direction: str) -> str | None:
    """What the halo kernels do not serve (xla_ffi/cuda/halo/halo_plan.h plan_call /
    plan_bwd_call are the C++ statement of the same rule): a halo (the keys one 64-query tile
    loads) of more than the manifest's max_halo_tokens, or longer than MAX_TILE_SIDE along a
    dim, over any Q tile of the box it would use (both directions: the backward's dQ kernel
    loads the forward's halos). The backward also refuses additional keys (the sm80 backward
    serves them) and an inverse halo (the queries that see one KV box, the dK/dV kernel's
    work per query head) over the same limits. It is deterministic (no atomics)."""
    limit = kernel_manifest.FAMILIES["halo"].max_halo_tokens
    if direction == BACKWARD and case.num_extra > 0:
        return (f"{case.num_extra} additional keys/values: the halo backward has no key list "
                f"for them (the sm80 backward serves them)")
    box, stats = halo_box_for(case.config, case)
    side = max(stats.max_extent)
    if side > kernel_manifest.MAX_TILE_SIDE:
        return (f"the halo of a {box} Q tile spans up to {side} keys along a dim, above "
                f"{kernel_manifest.MAX_TILE_SIDE}")
    if stats.max_tokens > limit:
        return (f"the halo of a {box} Q tile holds up to {stats.max_tokens} keys "
                f"({'x'.join(map(str, stats.max_extent))}), above the limit of {limit} "
                f"(windows this large go to the kernels with KV tiles)")
    if direction == BACKWARD:
        from jax_gna import tiles
        kv_box = halo_kv_box_for(case.config, box)
        extent = tiles.inverse_halo_extents(tuple(case.config.spatial_shape),
                                            case.config.params, kv_box)
        if max(extent) > kernel_manifest.MAX_TILE_SIDE:
            return (f"the queries seeing a {kv_box} KV box span up to {max(extent)} along a "
                    f"dim, above {kernel_manifest.MAX_TILE_SIDE}")
        if math.prod(extent) > limit:
            return (f"up to {math.prod(extent)} queries ({'x'.join(map(str, extent))}) see a "
                    f"{kv_box} KV box, above the limit of {limit}")
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
    # Small windows (halo rule above): a 64-query tile and the box of keys it sees, loaded
    # once; before sm80, whose 128-query tiles and 64-key KV tiles visit about three times
    # the keys of such a halo (H100, head dim 32: NAT 56x56 fwd 0.178 vs 0.273 ms, fwd+bwd
    # 0.847 vs 1.400). After sm90 except for halos of one key chunk (SMALL_HALO_TOKENS).
    _from_manifest("halo", extra_rule=_halo_rule,
                   verified_on="H100 (sm90a), jax 0.11.2: scripts/gpu_check.sh smokehalo "
                               "(head dims 32, 64, 128), suite; compute-sanitizer not run"),
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
