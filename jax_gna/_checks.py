"""Validation of the tensors handed to ``jax_gna.attention``: clear errors, before any trace
or launch. Window parameters are validated in ``jax_gna.semantics.make_params``."""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np

_FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


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
    if ks[-2] != vs[-2]:
        raise ValueError(f"key and value must have the same number of heads; got "
                         f"{ks[-2]} and {vs[-2]}")
    if ks[-1] != qs[-1]:
        raise ValueError(f"key head_dim {ks[-1]} must equal query head_dim {qs[-1]}")
    if ks[-2] < 1 or qs[-2] % ks[-2]:
        raise ValueError(f"query heads ({qs[-2]}) must be a multiple of key/value heads "
                         f"({ks[-2]}) (GQA/MQA)")
    if min(qs) < 1 or vs[-1] < 1:
        raise ValueError(f"query has an empty axis: shape {qs}")
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
