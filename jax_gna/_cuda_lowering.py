"""XLA FFI calls of the CUDA GNA kernels (``libjax_gna_cuda.so``, handlers in
``xla_ffi/cuda/common/ffi_handlers.cu``).

``lower_fwd`` / ``lower_bwd`` are lowering rules for the platform primitives
(``jax_gna.primitives``): they pick the tile boxes, build the custom call with its
attributes and scratch results, and return only the primitive's results (scratch buffers are
dropped; XLA allocates them, handlers never allocate).

Forward call: operands ``q, k, v, extra_k, extra_v``; results ``out, lse`` and ``workspace``
(uint8 ``[W]``: the family's ``fwd_workspace_bytes`` in ``jax_gna.kernel_manifest``; 0 for
sm80, the sm90 kernels keep their dynamic scheduler counter there). Backward call: operands
``q, k, v, extra_k, extra_v, out, lse, dout, dlse``; results ``dq, dk, dv, dextra_k,
dextra_v`` and the fp32 workspaces ``dq_accum`` (q's shape; ``[0]`` in deterministic mode,
where dQ is computed without atomics), ``delta`` (lse's shape) and ``dextra_accum`` (``[2,
splits, B, E, Hkv, D]`` partial dK/dV of the additional tokens per split of the Q tiles;
``[0]`` without additional tokens).

Attributes: ``backend`` (str), ``kernel_size``, ``stride``, ``dilation``, ``is_causal``,
``q_tile``, ``kv_tile`` (int64 ``[rank]``), ``query_begin``, ``query_end`` (int64 ``[rank]``:
``config.query_box``, the queries the kernels compute; ``[0, L)`` per dim by default),
``scale`` (f32), and ``deterministic`` (bool, backward).

Tile boxes: ``config.q_tile`` / ``config.kv_tile`` when given and their token counts match
the kernel instantiation of that direction (forward and backward kernels may use different
counts, e.g. sm80 128/64 forward and 64/64 backward for head dim 128: a box given for one
direction is not applied to the other when its count differs); otherwise the box with
power-of-two sides ranked best by ``jax_gna.tiles.best_boxes`` (``tile_work_speedup``,
boundary tiles weighted by the family's ``boundary_tile_cost`` from
``jax_gna.backends.KERNELS``, measured on the forward and used for both directions); for a
call with a query box, ranked first by the tile pairs visited for the box (a Q tile that
divides the box wastes no rows at its edges). The halo family's Q box is ``jax_gna.backends.halo_box_for``'s (the fewest halo key chunks)
and its ``kv_tile`` ``jax_gna.backends.halo_kv_box_for``'s (the Q box unless given): the
forward's key-chunk size, the backward's dK/dV KV box.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_gna import backends, kernel_manifest, semantics, tiles
from jax_gna._config import AttentionConfig

__all__ = ["lower_fwd", "lower_bwd", "tile_boxes", "extra_splits", "fwd_target",
           "bwd_target", "FWD_WORKSPACE_BYTES"]

# Forward scratch bytes per kernel family (FwdParams::workspace).
FWD_WORKSPACE_BYTES = {name: family.fwd_workspace_bytes
                       for name, family in kernel_manifest.FAMILIES.items()}
_FWD_SYMBOL, _BWD_SYMBOL = "JaxGnaFwd", "JaxGnaBwd"


def _target(symbol: str) -> str:
    from jax_gna import _extension
    for name, sym in _extension.CUDA_TARGETS.items():
        if sym == symbol:
            return name
    raise RuntimeError(f"jax_gna._extension.CUDA_TARGETS has no target for {symbol}")


def fwd_target() -> str:
    """The XLA custom-call target name of the forward handler (``JaxGnaFwd``)."""
    return _target(_FWD_SYMBOL)


def bwd_target() -> str:
    """The XLA custom-call target name of the backward handler (``JaxGnaBwd``)."""
    return _target(_BWD_SYMBOL)


# ----------------------------------------------------------------------------------------
# Tile boxes
# ----------------------------------------------------------------------------------------


def tile_boxes(config: AttentionConfig, kernel_name: str, case: backends.Case,
               direction: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(Q box, KV box) for a kernel call (see the module docstring)."""
    q_tokens, kv_tokens = backends.kernel_tiles(kernel_name, case, direction)
    q_box = kv_box = None
    if config.q_tile is not None and math.prod(config.q_tile) == q_tokens:
        q_box = tuple(int(t) for t in config.q_tile)
    if config.kv_tile is not None and math.prod(config.kv_tile) == kv_tokens:
        kv_box = tuple(int(t) for t in config.kv_tile)
    if direction == backends.FORWARD:
        # The forward is what the caller tuned the boxes for: a mismatch is an error there.
        for name, box, tokens in (("q_tile", config.q_tile, q_tokens),
                                  ("kv_tile", config.kv_tile, kv_tokens)):
            if box is not None and math.prod(box) != tokens:
                raise ValueError(
                    f"{name}={tuple(box)} has {math.prod(box)} tokens but the {kernel_name} "
                    f"forward kernel for {case.dtype} head_dim {case.head_dim} takes "
                    f"{tokens} tokens per tile")
    if kernel_name == "halo":
        # No KV tiles: the Q box is the halo rule's (backends.halo_box_for), kv_tile only
        # states the key-chunk size (any box of that many tokens).
        q_box = q_box or backends.halo_box_for(config, case)[0]
        kv_box = kv_box or backends.halo_kv_box_for(config, q_box)
    if q_box is None or kv_box is None:
        family = backends.kernel_family(kernel_name)
        best_q, best_kv = tiles.best_boxes(tuple(config.spatial_shape), config.params,
                                           q_tokens, kv_tokens, family.max_tile_sides(config),
                                           config.query_box, family.boundary_tile_cost)
        q_box = q_box or best_q
        kv_box = kv_box or best_kv
    limit = kernel_manifest.MAX_TILE_SIDE
    for name, box in (("q_tile", q_box), ("kv_tile", kv_box)):
        if any(t < 1 or t > limit for t in box):
            raise ValueError(f"{name}={box}: every side must be in [1, {limit}]")
    return q_box, kv_box


# ----------------------------------------------------------------------------------------
# Backward scratch: splits of the additional-token dK/dV
# ----------------------------------------------------------------------------------------


def extra_splits(config: AttentionConfig, q_box: Sequence[int], kv_box: Sequence[int]) -> int:
    """How many CTAs share the Q tiles of one additional-KV tile in the backward.

    Each split covers about as many Q tiles as a spatial KV tile's inverse neighborhood, so
    the extra-token CTAs (issued first) take about as long as the others.
    """
    p = config.params
    total = per_kv = 1
    for n, k, d, qt, kt in zip(config.spatial_shape, p.kernel_size, p.dilation, q_box, kv_box):
        q_tiles = semantics.num_tiles_1d(n, d, qt)
        total *= q_tiles
        per_kv *= min(q_tiles, -(-(k + kt - 1) // qt) + 1)
    return int(max(1, min(1024, -(-total // max(1, per_kv)))))


# ----------------------------------------------------------------------------------------
# Lowering rules
# ----------------------------------------------------------------------------------------


def _attributes(config: AttentionConfig, kernel_name: str, q_box, kv_box) -> dict:
    p = config.params
    return dict(
        backend=str(kernel_name),
        kernel_size=np.asarray(p.kernel_size, np.int64),
        stride=np.asarray(p.stride, np.int64),
        dilation=np.asarray(p.dilation, np.int64),
        is_causal=np.asarray([int(c) for c in p.is_causal], np.int64),
        q_tile=np.asarray(q_box, np.int64),
        kv_tile=np.asarray(kv_box, np.int64),
        query_begin=np.asarray([lo for lo, _ in config.query_ranges], np.int64),
        query_end=np.asarray([hi for _, hi in config.query_ranges], np.int64),
        scale=np.float32(config.scale),
    )


def _aval(shape, dtype):
    return jax.core.ShapedArray(tuple(int(s) for s in shape), jnp.dtype(dtype))


def _case_from_ctx(ctx, config: AttentionConfig) -> backends.Case:
    q, k, v, ek = ctx.avals_in[:4]
    return backends.make_case(config, q, k, v, ek)


def lower_fwd(ctx, q, k, v, extra_k, extra_v, *, config: AttentionConfig, kernel_name: str,
              case: backends.Case | None = None, q_tile=None, kv_tile=None) -> list:
    """Lower the forward platform primitive to the ``JaxGnaFwd`` custom call: [out, lse]."""
    if case is None:
        case = _case_from_ctx(ctx, config)
    if q_tile is not None or kv_tile is not None:
        config = config.replace(q_tile=q_tile if q_tile is not None else config.q_tile,
                                kv_tile=kv_tile if kv_tile is not None else config.kv_tile)
    q_box, kv_box = tile_boxes(config, kernel_name, case, backends.FORWARD)
    q_aval, _, v_aval = ctx.avals_in[:3]
    out_aval = _aval(q_aval.shape[:-1] + (v_aval.shape[-1],), q_aval.dtype)
    lse_aval = _aval(q_aval.shape[:-1], jnp.float32)
    ws_aval = _aval((FWD_WORKSPACE_BYTES.get(kernel_name, 0),), jnp.uint8)
    sub_ctx = ctx.replace(avals_in=list(ctx.avals_in[:5]),
                          avals_out=[out_aval, lse_aval, ws_aval])
    rule = jax.ffi.ffi_lowering(fwd_target())
    results = rule(sub_ctx, q, k, v, extra_k, extra_v,
                   **_attributes(config, kernel_name, q_box, kv_box))
    return list(results[:2])


def lower_bwd(ctx, q, k, v, extra_k, extra_v, out, lse, dout, dlse=None, *,
              config: AttentionConfig, kernel_name: str, case: backends.Case | None = None,
              q_tile=None, kv_tile=None) -> list:
    """Lower the backward platform primitive to the ``JaxGnaBwd`` custom call:
    [dq, dk, dv, dextra_k, dextra_v]. ``dlse`` (the LSE cotangent, f32 like lse) may be None
    when the primitive has none: zeros are passed."""
    if case is None:
        case = _case_from_ctx(ctx, config)
    if q_tile is not None or kv_tile is not None:
        config = config.replace(q_tile=q_tile if q_tile is not None else config.q_tile,
                                kv_tile=kv_tile if kv_tile is not None else config.kv_tile)
    q_box, kv_box = tile_boxes(config, kernel_name, case, backends.BACKWARD)
    avals_in = list(ctx.avals_in[:8])
    q_aval, k_aval, v_aval, ek_aval, ev_aval, _, lse_aval, _ = avals_in
    if dlse is None:
        from jax.interpreters import mlir
        dlse_aval = _aval(lse_aval.shape, jnp.float32)
        dlse = mlir.full_like_aval(ctx, 0.0, dlse_aval)
    else:
        dlse_aval = ctx.avals_in[8]
    avals_in.append(dlse_aval)

    num_extra = int(ek_aval.shape[1])
    deterministic = bool(config.deterministic)
    # dq_accum: the sm80 backward's dQ atomics (not in deterministic mode); the halo backward
    # writes dQ directly and never uses it.
    no_dq_accum = deterministic or kernel_name == "halo"
    dq_accum_aval = _aval((0,) if no_dq_accum else q_aval.shape, jnp.float32)
    delta_aval = _aval(lse_aval.shape, jnp.float32)
    if num_extra > 0:
        splits = extra_splits(config, q_box, kv_box)
        b, e, hkv, d = ek_aval.shape
        dextra_aval = _aval((2, splits, b, e, hkv, d), jnp.float32)
    else:
        dextra_aval = _aval((0,), jnp.float32)
    grads = [_aval(a.shape, a.dtype) for a in (q_aval, k_aval, v_aval, ek_aval, ev_aval)]
    sub_ctx = ctx.replace(avals_in=avals_in,
                          avals_out=grads + [dq_accum_aval, delta_aval, dextra_aval])
    rule = jax.ffi.ffi_lowering(bwd_target())
    attrs = _attributes(config, kernel_name, q_box, kv_box)
    attrs["deterministic"] = np.bool_(deterministic)
    results = rule(sub_ctx, q, k, v, extra_k, extra_v, out, lse, dout, dlse, **attrs)
    return list(results[:5])
