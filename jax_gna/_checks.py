"""Validation of the public API's arguments: clear errors naming the argument, the value and
the rule, before any trace or launch. Window parameters are validated in
``jax_gna.semantics.make_params``."""

from __future__ import annotations

import math
import numbers

import jax.numpy as jnp
import numpy as np

_FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


# The jnp reference gathers tokens with int32 flat indices (jnp indices are int32 unless
# jax_enable_x64 is on), so a batch item may hold at most this many tokens there.
MAX_REFERENCE_TOKENS = 2**31 - 1


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _shape(x, name):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array with .shape and .dtype; got {type(x).__name__}")
    return tuple(x.shape)


def check_tensors(query, key, value, additional_keys, additional_values) -> int:
    """Check layouts, dtypes and head counts; return the spatial rank."""
    qs, ks, vs = _shape(query, "query"), _shape(key, "key"), _shape(value, "value")
    if len(qs) not in (4, 5, 6):
        raise ValueError(f"query must be [batch, *spatial, heads, head_dim] with 1-3 spatial "
                         f"dims (4-6 axes); got shape {qs}")
    rank = len(qs) - 3
    for name, s in (("key", ks), ("value", vs)):
        if len(s) != len(qs):
            raise ValueError(f"{name} must have the same number of axes as query ({len(qs)}); "
                             f"got shape {s}")
        if s[:-2] != qs[:-2]:
            raise ValueError(f"{name} batch and spatial dims {s[:-2]} must equal query's "
                             f"{qs[:-2]}")
    for name, s in (("query", qs), ("key", ks), ("value", vs)):
        if min(s) < 1:
            raise ValueError(f"{name} has an empty axis: shape {s}; every axis must have "
                             f"size >= 1")
    if ks[-2] != vs[-2]:
        raise ValueError(f"key and value must have the same number of heads; got "
                         f"{ks[-2]} and {vs[-2]}")
    if ks[-1] != qs[-1]:
        raise ValueError(f"key head_dim {ks[-1]} must equal query head_dim {qs[-1]}")
    if ks[-2] < 1 or qs[-2] % ks[-2]:
        raise ValueError(f"query heads ({qs[-2]}) must be a multiple of key/value heads "
                         f"({ks[-2]}) (GQA/MQA)")
    dtypes = {query.dtype, key.dtype, value.dtype}
    if len(dtypes) != 1:
        raise TypeError(f"query, key and value must share one dtype; got {query.dtype}, "
                        f"{key.dtype}, {value.dtype}")
    if not any(query.dtype == d for d in _FLOAT_DTYPES):
        raise TypeError(f"query dtype must be float16, bfloat16, float32 or float64; "
                        f"got {query.dtype}")
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if additional_keys is not None:
        aks = _shape(additional_keys, "additional_keys")
        avs = _shape(additional_values, "additional_values")
        want_k = (qs[0], None, ks[-2], ks[-1])
        want_v = (qs[0], None, vs[-2], vs[-1])
        for name, s, want in (("additional_keys", aks, want_k),
                              ("additional_values", avs, want_v)):
            if len(s) != 4 or any(w is not None and a != w for a, w in zip(s, want)):
                raise ValueError(f"{name} must be [batch, n_extra, heads_kv, head_dim] = "
                                 f"[{qs[0]}, n, {want[2]}, {want[3]}]; got {s}")
        if aks[1] != avs[1]:
            raise ValueError(f"additional_keys has {aks[1]} tokens but additional_values "
                             f"has {avs[1]}")
        if additional_keys.dtype != query.dtype or additional_values.dtype != query.dtype:
            raise TypeError(f"additional_keys/values must have query's dtype {query.dtype}; "
                            f"got {additional_keys.dtype}, {additional_values.dtype}")
    return rank


def check_scale(scale, head_dim: int) -> float:
    if scale is None:
        return float(head_dim) ** -0.5
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a Python float (a static value) or None; got "
                        f"{type(scale).__name__}")
    scale = float(scale)
    if not np.isfinite(scale):
        raise ValueError(f"scale must be finite; got {scale}")
    return scale


def check_tile(tile, rank: int, name: str):
    if tile is None:
        return None
    from jax_gna.semantics import normalize_per_dim
    tile = normalize_per_dim(tile, rank, name)
    for ax, t in enumerate(tile):
        if t < 1:
            raise ValueError(f"{name}[{ax}]={t} must be >= 1")
    return tile


def check_query_boxes(boxes, spatial: tuple[int, ...]) -> tuple:
    """One or more query boxes ``((lo, hi), ...)`` per spatial dim, each non-empty inside the
    grid; returned as a tuple of tuples of int pairs (hashable, for the config)."""
    if not isinstance(boxes, (tuple, list)) or not boxes:
        raise ValueError(f"query_boxes must be a non-empty sequence of boxes; got {boxes!r}")
    out = []
    for i, box in enumerate(boxes):
        try:
            pairs = tuple((int(lo), int(hi)) for lo, hi in box)
        except (TypeError, ValueError) as e:
            raise TypeError(f"query_boxes[{i}] must be ((lo, hi), ...) per spatial dim; got "
                            f"{box!r}") from e
        if len(pairs) != len(spatial):
            raise ValueError(f"query_boxes[{i}] has {len(pairs)} ranges for {len(spatial)} "
                             f"spatial dim(s)")
        for d, ((lo, hi), n) in enumerate(zip(pairs, spatial)):
            if not 0 <= lo < hi <= n:
                raise ValueError(f"query_boxes[{i}][{d}] = ({lo}, {hi}) must satisfy "
                                 f"0 <= lo < hi <= {n} (spatial size along dim {d})")
        out.append(pairs)
    return tuple(out)


def check_flag(value, name: str) -> bool:
    """A static Python bool (``numpy.bool_`` too); anything else is a TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False, a static value); got "
                        f"{value!r} of type {type(value).__name__}")
    return bool(value)


def check_reference_token_count(spatial_shape) -> None:
    """The jnp reference indexes the tokens of one batch item with int32."""
    tokens = math.prod(int(n) for n in spatial_shape)
    if tokens > MAX_REFERENCE_TOKENS:
        raise ValueError(f"the jnp reference backend supports at most {MAX_REFERENCE_TOKENS} "
                         f"(2**31 - 1) tokens per batch item (it gathers tokens with int32 "
                         f"indices); got spatial shape {tuple(spatial_shape)} = {tokens} "
                         f"tokens. Split the grid over devices (context parallelism) or run "
                         f"a CUDA kernel backend, whose offsets are 64-bit")


# ----------------------------------------------------------------------------------------
# merge_attentions
# ----------------------------------------------------------------------------------------


def _describe(x) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_merge_inputs(outputs, lses) -> tuple[list, list]:
    """Lists of partial outputs ``[..., heads, head_dim]`` and their LSEs ``[..., heads]``:
    one entry per partial attention, alike in shape, each group in one floating dtype."""
    for name, xs in (("outputs", outputs), ("lses", lses)):
        if not isinstance(xs, (list, tuple)):
            raise TypeError(f"merge_attentions: {name} must be a list or tuple with one array "
                            f"per partial attention; got {_describe(xs)}. A stacked array is "
                            f"not split along an axis: pass [{name[:-1]}_a, {name[:-1]}_b, ...]")
    outputs, lses = list(outputs), list(lses)
    if not outputs or len(outputs) != len(lses):
        raise ValueError(f"merge_attentions needs as many outputs as lses (>= 1); got "
                         f"{len(outputs)} and {len(lses)}")
    for name, xs in (("outputs", outputs), ("lses", lses)):
        for i, x in enumerate(xs):
            _shape(x, f"merge_attentions: {name}[{i}]")
            if not jnp.issubdtype(x.dtype, jnp.floating):
                raise TypeError(f"merge_attentions: {name}[{i}] must have a floating dtype; "
                                f"got {x.dtype}")
            if x.dtype != xs[0].dtype:
                raise TypeError(f"merge_attentions: {name} must share one dtype; got "
                                f"{xs[0].dtype} ({name}[0]) and {x.dtype} ({name}[{i}])")
    for i, (o, l) in enumerate(zip(outputs, lses)):
        if o.ndim < 2 or o.shape[:-1] != l.shape or o.shape != outputs[0].shape:
            raise ValueError(f"outputs[{i}] shape {o.shape} and lses[{i}] shape {l.shape} "
                             f"must be [..., heads, head_dim] and [..., heads], alike for all")
    return outputs, lses


# ----------------------------------------------------------------------------------------
# Context parallelism and the Flax layers
# ----------------------------------------------------------------------------------------


def check_spatial_axis(spatial_axis, rank: int) -> int:
    """The split spatial dim, in [-rank, rank); returned non-negative."""
    if not _is_int(spatial_axis) or not -rank <= spatial_axis < rank:
        raise ValueError(f"spatial_axis must be an int in [{-rank}, {rank}) for {rank} "
                         f"spatial dim(s); got {spatial_axis!r}")
    return int(spatial_axis) % rank


def check_mesh_axes(mesh, axis_name, batch_axis) -> None:
    """``axis_name`` (and ``batch_axis`` unless None) name distinct axes of ``mesh``."""
    axes = dict(mesh.shape)
    named = [("axis_name", axis_name)] + ([("batch_axis", batch_axis)]
                                          if batch_axis is not None else [])
    for name, axis in named:
        if axis not in axes:
            raise ValueError(f"{name} {axis!r} is not an axis of the mesh {axes}")
    if batch_axis == axis_name:
        raise ValueError(f"batch_axis {batch_axis!r} must differ from axis_name "
                         f"{axis_name!r}: one mesh axis cannot split both the batch and the "
                         f"spatial dim")


def check_layer_sizes(module_name: str, **sizes) -> None:
    """Each size (``num_heads=8``, ...) must be a positive int; None means not given."""
    for name, n in sizes.items():
        if n is None:
            continue
        if not _is_int(n):
            raise TypeError(f"{module_name}: {name} must be a positive int; got {n!r} of type "
                            f"{type(n).__name__}")
        if n < 1:
            raise ValueError(f"{module_name}: {name} must be a positive int (>= 1); got {n}")


def check_head_layout(module_name: str, num_heads: int, num_kv_heads: int,
                      qkv_features: int) -> int:
    """Heads of a layer (sizes already checked positive); returns the head dim."""
    if num_heads % num_kv_heads:
        raise ValueError(f"{module_name}: num_heads ({num_heads}) must be divisible by "
                         f"num_kv_heads ({num_kv_heads})")
    if qkv_features % num_heads:
        raise ValueError(f"{module_name}: qkv_features ({qkv_features}) must be divisible by "
                         f"num_heads ({num_heads})")
    return qkv_features // num_heads
