"""Benchmark rows -> markdown table (and the columns it shows)."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["COLUMNS", "markdown_table"]

# (header, row key, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("case", "case", "s"),
    ("stride", "stride", "dims"),
    ("backend", "backend", "s"),
    ("direction", "direction", "s"),
    ("ms", "median_ms", ".3f"),
    ("TF/s (eff.)", "tflops", ".4g"),
    ("GB/s", "gb_per_s", ".4g"),
    ("% HBM", "hbm_percent", ".1f"),
    ("wall ms", "wall_ms", ".3f"),
    ("dense ms", "dense_ms", ".3f"),
    ("speedup vs dense", "speedup_vs_dense", ".2f"),
    ("interleaved: speedup", "speedup_interleaved", ".2f"),
    ("interleaved: TF/s / dense TF/s", "tflops_ratio_interleaved", ".3f"),
    ("FLOP bound", "flop_bound", ".2f"),
    ("mean-tile bound", "mean_tile_bound", ".2f"),
    ("worst-tile bound", "worst_tile_bound", ".2f"),
    ("achieved/worst-tile", "achieved_over_bound", ".2f"),
    ("kernel tiles (Q/KV)", "kernel_tiles", "s"),
    ("tile-work bound, kernel tiles", "kernel_tile_work_bound", ".2f"),
    ("achieved/that", "achieved_over_kernel_bound", ".2f"),
    ("note", "note", "s"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    if fmt == "dims":
        return "x".join(str(v) for v in value)
    if fmt == "s":
        return str(value).replace("|", "/")
    return format(value, fmt)


def markdown_table(rows: Sequence[dict], baseline: str) -> str:
    """One line per (case, stride, backend, direction); ``baseline`` names the dense
    implementation the speedups are relative to (its time of the same run is the
    "<baseline> ms" column of each GNA row). GB/s and % HBM: bytes moved once
    (``jax_gna.profile.bytes_moved``) over the median time."""
    named = {"dense_ms": f"{baseline} ms", "speedup_vs_dense": f"speedup vs {baseline}"}
    heads = [named.get(key, h) for h, key, _ in COLUMNS]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), fmt) for _, key, fmt in COLUMNS)
                     + " |")
    return "\n".join(lines)
