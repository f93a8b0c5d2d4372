#!/usr/bin/env python3
"""Split an Nsight Compute SASS page of the sm90 forward kernel into the KV-tile loop and the
once-per-item code, with source lines.

Input: the page `scripts/gpu_check.sh ncu` writes with NCU_SOURCE=1
(`ncu_<case>_sass.csv.xz`: per-instruction stall samples and executions, no source lines)
and the binary that ran (the standalone self-test, built with -lineinfo). The script
disassembles the binary with line info (cuobjdump + nvdisasm: the CUDA toolkit's, or the
`nvidia-cuda-cuobjdump` / `nvidia-cuda-nvdisasm` wheels on a machine without one), joins the
two by instruction offset and classifies the consumers' instructions by how often they ran:
at least 0.9 x items x consumer warps x (tiles - 1) is the KV-tile loop, the rest is the
code outside it (the boundary turn, tile 0's softmax, the epilogue, the next item's set-up).
The consumers' samples are proportional to elapsed cycles (their 8 warps are always
resident), so "samples per loop iteration" and "samples per item outside the loop" compare
directly: an item of n tiles costs (n - 1) iterations plus the code outside the loop.

    python scripts/ncu_sass_split.py ncu_seq32k_k2048_s2048_sass.csv.xz \\
        --binary xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest --items 6144 --tiles 16

(seq32k: 24 heads x 256 Q tiles = 6144 items of 16 KV tiles.)
"""
from __future__ import annotations

import argparse
import collections
import csv
import glob
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile

CONSUMER_WARPS = 8  # two consumer warpgroups


def find_tool(name: str, given: str | None) -> str:
    if given:
        return given
    path = shutil.which(name)
    if path:
        return path
    for site in sys.path:  # the nvidia-cuda-* wheels install nvidia/cu*/bin/<tool>
        hits = glob.glob(os.path.join(site, "nvidia", "cu*", "bin", name))
        if hits:
            return hits[0]
    sys.exit(f"{name} not found: pass --{name} or install the nvidia-cuda-{name} wheel")


def read_sass_page(path: str):
    raw = lzma.open(path, "rt") if path.endswith(".xz") else open(path)
    rows = list(csv.reader(raw))
    kernel = rows[0][1] if len(rows[0]) > 1 else ""
    header, data = rows[1], rows[2:]
    col = {h: i for i, h in enumerate(header)}
    stall_cols = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    base = int(data[0][col["Address"]], 16)
    out = []
    for r in data:
        out.append(dict(
            off=int(r[col["Address"]], 16) - base,
            sass=r[col["Source"]].strip(),
            samples=int(r[col["Warp Stall Sampling (All Samples)"]] or 0),
            executed=int(r[col["Instructions Executed"]] or 0),
            stalls={h[6:]: int(r[col[h]] or 0) for h in stall_cols},
        ))
    return kernel, out


def mangled_traits(kernel: str) -> str:
    """'FwdTraits<cutlass::bfloat16_t, (int)128, (int)128, (int)2>' -> its mangled arguments."""
    m = re.search(r"FwdTraits<cutlass::(\w+), \(int\)(\d+), \(int\)(\d+), \(int\)(\d+)>", kernel)
    if not m:
        sys.exit(f"cannot read the FwdTraits arguments from the kernel name: {kernel!r}")
    t, a, b, c = m.groups()
    return f"FwdTraitsIN7cutlass{len(t)}{t}ELi{a}ELi{b}ELi{c}E"


def disassemble(binary: str, traits: str, cuobjdump: str, nvdisasm: str) -> dict[int, tuple]:
    """Offset -> (innermost 'file:line', SASS text) for the kernel whose name contains traits."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([cuobjdump, "-xelf", "all", os.path.abspath(binary)], cwd=tmp,
                       check=True, capture_output=True)
        text = ""
        for cubin in glob.glob(os.path.join(tmp, "*.cubin")):
            text += subprocess.run([nvdisasm, "-g", "-c", cubin], check=True,
                                   capture_output=True, text=True).stdout
    lines, where, inside, src = {}, None, False, "?"
    for ln in io.StringIO(text):
        if ln.startswith("//---------------------"):
            inside = ".text." in ln and traits in ln and "gna_fwd_sm90_kernel" in ln
            continue
        if not inside:
            continue
        m = re.search(r'//## File "([^"]+)", line (\d+)', ln)
        if m:
            src = f"{os.path.basename(m.group(1))}:{m.group(2)}"
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;", ln)
        if m:
            lines[int(m.group(1), 16)] = (src, m.group(2))
    if not lines:
        sys.exit(f"no kernel matching {traits} in {binary}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sass_csv", help="ncu --page source --csv --print-source sass output (.xz ok)")
    p.add_argument("--binary", required=True, help="the binary that was profiled (-lineinfo)")
    p.add_argument("--items", type=int, required=True, help="work items of the launch")
    p.add_argument("--tiles", type=int, required=True, help="KV tiles per item")
    p.add_argument("--top", type=int, default=25, help="source lines to list (outside the loop)")
    p.add_argument("--cuobjdump")
    p.add_argument("--nvdisasm")
    args = p.parse_args()

    kernel, page = read_sass_page(args.sass_csv)
    lines = disassemble(args.binary, mangled_traits(kernel), find_tool("cuobjdump", args.cuobjdump),
                        find_tool("nvdisasm", args.nvdisasm))
    # The page and the disassembly must be the same code.
    mismatch = [x["off"] for x in page
                if x["off"] in lines and x["sass"].split()[0] != lines[x["off"]][1].split()[0]]
    if len(mismatch) > len(page) // 100 or not any(x["off"] in lines for x in page):
        sys.exit(f"{len(mismatch)} instructions differ: was {args.binary} the profiled binary?")

    # Roles by code layout: consumers from their setmaxnreg.inc to the producers' dec.
    alloc = min(o for o, (_, s) in lines.items() if "USETMAXREG.TRY_ALLOC" in s)
    dealloc = min(o for o, (_, s) in lines.items() if "USETMAXREG.DEALLOC" in s)
    if not alloc < dealloc:
        sys.exit("unexpected layout: consumer code does not precede producer code")
    per_warp_item = args.items * CONSUMER_WARPS
    loop_execs = 0.9 * per_warp_item * (args.tiles - 1)

    total = sum(x["samples"] for x in page)
    consumer = [x for x in page if alloc <= x["off"] < dealloc]
    loop = [x for x in consumer if x["executed"] >= loop_execs]
    outside = [x for x in consumer if x["executed"] < loop_execs]
    s_loop = sum(x["samples"] for x in loop)
    s_out = sum(x["samples"] for x in outside)
    iters = args.items * (args.tiles - 1)
    per_iter = s_loop / iters
    print(f"kernel: {kernel}")
    print(f"samples: {total} in all, {sum(x['samples'] for x in consumer)} in consumer code")
    print(f"KV-tile loop: {per_iter:.4f} samples per iteration, "
          f"{sum(x['executed'] for x in loop) / (per_warp_item * (args.tiles - 1)):.1f} "
          f"instructions per consumer warp and iteration")
    print(f"outside the loop: {s_out / args.items:.3f} samples per item "
          f"(= {s_out / args.items / per_iter:.2f} iterations), "
          f"{sum(x['executed'] for x in outside) / per_warp_item:.1f} instructions per "
          f"consumer warp and item")
    ideal = args.tiles * per_iter
    actual = (args.tiles - 1) * per_iter + s_out / args.items
    print(f"item cost over {args.tiles} loop iterations: {actual / ideal:.3f}x")

    by_line = collections.Counter()
    stalls = collections.defaultdict(collections.Counter)
    for x in outside:
        src = lines.get(x["off"], ("?", ""))[0]
        by_line[src] += x["samples"]
        stalls[src].update(x["stalls"])
    print("\noutside the loop, by source line (share of its samples; top stall reasons):")
    for src, n in by_line.most_common(args.top):
        top = ", ".join(f"{k} {v}" for k, v in stalls[src].most_common(2) if v)
        print(f"  {src:32s} {n:7d} {100 * n / max(s_out, 1):5.1f}%  {top}")


if __name__ == "__main__":
    main()
