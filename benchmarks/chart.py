"""PNG bar chart: achieved speedup over dense per backend, next to the simulator bounds."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["speedup_chart"]

_BOUNDS = (("flop_bound", "FLOP bound", "#bdbdbd"),
           ("mean_tile_bound", "mean-tile bound", "#969696"),
           ("worst_tile_bound", "worst-tile bound", "#636363"))


def speedup_chart(rows: Sequence[dict], path: str, baseline: str) -> str | None:
    """One panel per direction; groups are (case, stride). Returns ``path``, or None when
    no row has a measured speedup (e.g. no dense baseline ran)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gna = [r for r in rows if r.get("speedup_vs_dense") is not None and r.get("flop_bound")]
    if not gna:
        return None
    directions = sorted({r["direction"] for r in gna}, key=["fwd", "fwd+bwd"].index)
    backends = sorted({r["backend"] for r in gna})
    fig, axes = plt.subplots(len(directions), 1, squeeze=False,
                             figsize=(max(8, 1.4 * len({(r['case'], tuple(r['stride']))
                                                        for r in gna})), 4.5 * len(directions)))
    for ax, direction in zip(axes[:, 0], directions):
        sel = [r for r in gna if r["direction"] == direction]
        groups = list(dict.fromkeys((r["case"], tuple(r["stride"])) for r in sel))
        series = [(b, None) for b in backends] + [(None, key) for key, _, _ in _BOUNDS]
        width = 0.8 / len(series)
        x = np.arange(len(groups))
        for s, (backend, bound) in enumerate(series):
            vals = []
            for g in groups:
                match = [r for r in sel if (r["case"], tuple(r["stride"])) == g
                         and (backend is None or r["backend"] == backend)]
                key = bound or "speedup_vs_dense"
                vals.append(match[0][key] if match else np.nan)
            if bound:
                label, color = next((lab, c) for k, lab, c in _BOUNDS if k == bound)
                ax.bar(x + s * width, vals, width, label=label, color=color)
            else:
                ax.bar(x + s * width, vals, width, label=f"{backend} (achieved)")
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels([f"{c}\n" + "x".join(map(str, st)) for c, st in groups],
                           fontsize=8)
        ax.set_ylabel(f"speedup over {baseline}")
        ax.set_title(f"GNA {direction}: achieved vs simulator bounds")
        ax.axhline(1.0, color="k", lw=0.6)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
