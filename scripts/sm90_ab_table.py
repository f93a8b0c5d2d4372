#!/usr/bin/env python3
"""Markdown table of an interleaved A/B run (`scripts/sm90_ab.sh` output): per benchmark case,
every binary's times in run order and the change of its mean against the first binary's.

    bash scripts/sm90_ab.sh | tee ab.txt; python scripts/sm90_ab_table.py ab.txt

sm90_ab.sh prints this table after the raw lines itself.
"""
from __future__ import annotations

import collections
import re
import sys

LINE = re.compile(r"^(\S+) \[(.+?)\s*\]\s+([\d.]+) ms")


def table(lines) -> str:
    times = collections.defaultdict(list)
    cases, binaries = [], []
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        binary, case, ms = m.group(1), m.group(2), float(m.group(3))
        if case not in cases:
            cases.append(case)
        if binary not in binaries:
            binaries.append(binary)
        times[(binary, case)].append(ms)
    if not binaries:
        return "no benchmark lines"
    out = ["| case (ms) | " + " | ".join(binaries) + " |", "|---" * (len(binaries) + 1) + "|"]
    for case in cases:
        base = times[(binaries[0], case)]
        cells = []
        for binary in binaries:
            t = times[(binary, case)]
            cell = ", ".join(f"{x:.3f}" for x in t)
            if binary != binaries[0] and t and base:
                change = (sum(t) / len(t)) / (sum(base) / len(base)) - 1
                cell += f" ({100 * change:+.1f}%)"
            cells.append(cell)
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin as f:
        print(table(f))
