"""benchmarks/peers.py on a CPU: the JAX side end to end at tiny sizes, the FlexAttention
mask (numpy in place of torch) and the token tiling, and the mask probe."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jax_gna import semantics

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "peers.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


peers = _load()


def test_tile_order_makes_each_block_a_compact_tile():
    shape, tile = (32, 48), (8, 16)
    perm = peers.tile_order(shape, tile)
    assert sorted(perm) == list(range(32 * 48))
    for block in perm.reshape(-1, 128):
        rows, cols = block // 48, block % 48
        assert np.ptp(rows) == 7 and np.ptp(cols) == 15
    # A 1 x width tile is the row-major order itself.
    np.testing.assert_array_equal(peers.tile_order(shape, (1, 48)), np.arange(32 * 48))
    with pytest.raises(ValueError):
        peers.tile_order(shape, (5, 16))


@pytest.mark.parametrize("shape, tile, kernel, stride, dilation, causal", [
    ((32, 32), (8, 16), (10, 10), (1, 1), (1, 1), (False, False)),
    ((32, 32), (8, 16), (10, 10), (4, 4), (1, 1), (False, False)),
    ((32, 32), (16, 8), (9, 4), (3, 2), (1, 1), (False, False)),
    ((24, 32), (8, 16), (5, 6), (2, 1), (2, 3), (True, False)),
    ((32, 24), (1, 24), (7, 5), (1, 5), (3, 1), (False, True)),
])
def test_flex_mask_mod_is_the_gna_neighborhood(shape, tile, kernel, stride, dilation, causal):
    params = semantics.make_params(shape, kernel, stride, dilation, causal)
    mask_mod = peers.gna_mask_mod(shape, tile, params.kernel_size, params.stride,
                                  params.dilation, params.is_causal, np)
    n = shape[0] * shape[1]
    got = mask_mod(None, None, np.arange(n)[:, None], np.arange(n)[None, :])
    perm = peers.tile_order(shape, tile)
    want = semantics.neighborhood_mask(shape, params).reshape(n, n)[perm][:, perm]
    np.testing.assert_array_equal(got, want)


def test_window_mask_probe():
    attend = peers.window_attention("xla")
    peers.check_window_mask(attend, jnp.float32, length=32, windows=(2, 9, 32))

    def off_by_one(q, k, v, kernel_size, *rest):
        return attend(q, k, v, (kernel_size[0] + 1,), *rest)
    with pytest.raises(AssertionError, match="differs"):
        peers.check_window_mask(off_by_one, jnp.float32, length=32, windows=(9,))
    with pytest.raises(ValueError, match="stride 1"):
        attend(None, None, None, (4,), (2,), (1,), (True,))


def test_markdown_ratios_against_the_matching_jax_gna_row():
    row = peers._row
    rows = [row("c", "jax_gna", "fwd", {"median_ms": 2.0, "tflops": 10.0}),
            row("c", "peer", "fwd", {"median_ms": 3.0, "tflops": 6.0}, note="rel err 1e-3"),
            row("c", "peer (interleaved)", "fwd", {"median_ms": 5.0, "tflops": 4.0}),
            row("c", "jax_gna (interleaved)", "fwd", {"median_ms": 4.0, "tflops": 5.0}),
            row("c", "flex", "fwd+bwd", error="skipped: torch is not installed")]
    lines = peers.markdown(rows).splitlines()
    assert lines[3] == "| c | peer | fwd | 3.000 | 6 | 1.50 |"
    assert lines[4] == "| c | peer (interleaved) | fwd | 5.000 | 4 | 1.25 |"
    assert lines[6] == "| c | flex | fwd+bwd | skipped: torch is not installed | - | - |"
    assert "- c peer fwd: rel err 1e-3" in lines


def test_peers_tiny_jax_side(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--no-torch", "--lm-cases", "256x2",
           "--windows", "32", "--warmup", "1", "--repeats", "2", "--input-sets", "2",
           "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.splitlines()
    assert table[0].startswith("| case | impl | direction | ms (median) | TF/s")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    got = {(r["case"], r["impl"], r["direction"]) for r in rows}
    for direction in ("fwd", "fwd+bwd"):
        assert ("flux s1x1", "jax_gna", direction) in got
        assert ("lm n256 b2 w32", "jax_gna", direction) in got
        assert ("lm n256 b2 w32", "xla-window", direction) in got
    flex = [r for r in rows if r["impl"] == "flex"]
    assert len(flex) == 2 and all(r["error"] == "skipped: --no-torch" for r in flex)
    timed = [r for r in rows if r["impl"] != "flex"]
    assert all(r["ms"] > 0 and r["tflops"] > 0 and not r["error"] for r in timed)
    peer = next(r for r in rows if r["impl"] == "xla-window" and r["direction"] == "fwd")
    assert peer["note"].startswith("rel err")
    assert (tmp_path / "results.md").read_text().strip() == out.stdout.strip()
