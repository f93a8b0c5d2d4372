#!/usr/bin/env python3
"""Summarise a consumer cycle trace of the sm90 self-test (built with -DJAX_GNA_SM90_TRACE,
`GNA_TRACE_OUT=dir sm90_fwd_selftest bench <case>`; xla_ffi/cuda/sm90/test/trace.h): the item
period and a warpgroup's turn period (loop:sync to its next loop:sync), the median cycles
between consecutive trace points (j1 / jmid / jlast: first, middle, last KV tile of the
loop), and the gaps between consecutive turns of either warpgroup (an even ping-pong has
gaps of about half a turn; warpgroups in lockstep have one short and one long gap).

  python scripts/sm90_trace.py file.trace [more.trace ...]
"""
import struct
import sys
from collections import defaultdict
from statistics import median

# xla_ffi/cuda/sm90/test/trace.h TraceEvent
NAMES = {1: "loop:top", 2: "loop:sync", 3: "loop:S", 4: "loop:softmax", 5: "loop:PV",
         6: "loop:end", 10: "bnd:top", 11: "bnd:sync", 13: "epilogue:end", 14: "t0:S",
         15: "t0:softmax", 16: "t0:end", 17: "t0:PV"}


def load(path):
    data = open(path, "rb").read()
    ctas, nev = struct.unpack_from("ii", data, 0)
    off = 8
    cnt = struct.unpack_from(f"{ctas * 2}I", data, off)
    off += 4 * ctas * 2
    ev = struct.unpack_from(f"{ctas * 2 * nev}Q", data, off)
    out = {}
    for c in range(ctas):
        for w in range(2):
            n = cnt[c * 2 + w]
            base = (c * 2 + w) * nev
            rows, t, last = [], 0, None
            for k in range(n):
                v = ev[base + k]
                clk = v & 0xffffffff
                if last is not None:
                    t += (clk - last) & 0xffffffff
                last = clk
                rows.append(((v >> 56) & 0xff, (v >> 44) & 0xfff, (v >> 32) & 0xfff, t))
            out[(c, w)] = rows
    return out


def jclass(code, j, nmax):
    if code in (1, 2, 3, 4, 5, 6):
        return "j1" if j == 1 else ("jlast" if j == nmax else "jmid")
    return ""


def summarise(path):
    tr = load(path)
    seg = defaultdict(list)
    item_period, turn_period = [], []
    syncs_all = []
    for (c, w), rows in tr.items():
        if not rows:
            continue
        nmax = max((r[2] for r in rows if r[0] == 2), default=0)
        for a, b in zip(rows, rows[1:]):
            key = (NAMES.get(a[0], a[0]) + jclass(a[0], a[2], nmax),
                   NAMES.get(b[0], b[0]) + jclass(b[0], b[2], nmax))
            seg[key].append(b[3] - a[3])
        bs = [r[3] for r in rows if r[0] == 11]
        item_period += [y - x for x, y in zip(bs, bs[1:])]
        ls = [r for r in rows if r[0] in (2, 11)]
        for a, b in zip(ls, ls[1:]):
            if a[0] == 2 and b[0] == 2 and b[2] == a[2] + 1:
                turn_period.append(b[3] - a[3])
        syncs_all.append((c, w, [(r[3], r[0], r[1], r[2]) for r in rows if r[0] in (2, 11)]))
    print(f"== {path}")
    if item_period:
        print(f"item period (bnd:sync -> bnd:sync): median {median(item_period):.0f} cycles "
              f"over {len(item_period)}; steady turn (loop:sync -> next loop:sync) median "
              f"{median(turn_period):.0f} over {len(turn_period)}")
        print(f"  item period / steady turn = {median(item_period) / median(turn_period):.2f}")
    print(f"{'segment':40s} {'n':>6s} {'median':>8s} {'p10':>7s} {'p90':>7s}")
    order = sorted(seg.items(), key=lambda kv: -len(kv[1]))
    for (a, b), v in order:
        if len(v) < 8:
            continue
        v = sorted(v)
        print(f"{a + ' -> ' + b:40s} {len(v):6d} {median(v):8.0f} {v[len(v) // 10]:7.0f} "
              f"{v[(9 * len(v)) // 10]:7.0f}")
    # The two warpgroups' turn issue times in one CTA (same SM clock): the gaps between
    # consecutive turns of either warpgroup.
    by_cta = defaultdict(list)
    for c, w, s in syncs_all:
        by_cta[c] += [(t, w, code, item, j) for t, code, item, j in s]
    gaps = defaultdict(list)
    for c, s in by_cta.items():
        s.sort()
        for a, b in zip(s, s[1:]):
            kind = ("B" if a[2] == 11 else "L") + ("B" if b[2] == 11 else "L")
            gaps[kind].append(b[0] - a[0])
    for k, v in sorted(gaps.items()):
        v = sorted(v)
        print(f"turn gap {k} (prev turn kind -> next; either warpgroup): n {len(v)} median "
              f"{median(v):.0f} p10 {v[len(v) // 10]} p90 {v[(9 * len(v)) // 10]}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        summarise(p)
