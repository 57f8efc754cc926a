#!/usr/bin/env python3
"""Turns criterion's output into the README's performance tables and docs/contention.svg.

    cargo bench --bench contention --bench token_check --bench waiting --bench end_to_end
    python3 scripts/plot_contention.py [--criterion target/criterion] [--svg docs/contention.svg]

Reads every `<bench>/new/benchmark.json` + `new/estimates.json` under the criterion
directory (every bench ever run there: clear it first for a clean table) (medians only: criterion's `median.point_estimate`, nanoseconds per iteration),
plus `end_to_end/latency.json` written by benches/end_to_end.rs. Prints markdown tables
(medians and the ratio of this crate's pool against each peer measured in the same run) and
the verdict on each target of issues 2 and 5, and writes the SVG plot of throughput against
threads for both pool sizes. Python 3 standard library only.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

# Display names and colours, in legend order.
IMPLS = [
    ("tokenpool_token", "tokenpool (token)", "#d62728"),
    ("tokenpool_lease", "tokenpool (Lease)", "#ff7f0e"),
    ("crossbeam_arrayqueue", "crossbeam ArrayQueue", "#1f77b4"),
    ("parking_lot_mutex_vec", "parking_lot Mutex<Vec>", "#2ca02c"),
    ("std_mutex_vec", "std Mutex<Vec>", "#9467bd"),
    ("deadpool_unmanaged", "deadpool unmanaged", "#7f7f7f"),
]
NAME = {k: n for k, n, _ in IMPLS}
COLOUR = {k: c for k, _, c in IMPLS}
GROUPS = [("contention64", "64 slots, threads spread over them"),
          ("contention4", "4 slots fought over")]
OURS = "tokenpool_token"


def load(criterion_dir):
    """{group: {function: {value: median ns per iteration}}}"""
    out = defaultdict(lambda: defaultdict(dict))
    for root, _dirs, files in os.walk(criterion_dir):
        if os.path.basename(root) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(root, "estimates.json")) as f:
            est = json.load(f)
        group = bench["group_id"]
        func = bench.get("function_id") or ""
        value = bench.get("value_str") or ""
        out[group][func][value] = est["median"]["point_estimate"]
    return out


def mops(ns):
    """Million iterations per second from ns per iteration."""
    return 1e3 / ns


def threads_of(data, group):
    ts = set()
    for vals in data.get(group, {}).values():
        ts.update(int(v) for v in vals)
    return sorted(ts)


def contention_tables(data):
    lines = []
    for group, title in GROUPS:
        if group not in data:
            continue
        ts = threads_of(data, group)
        lines.append(f"**{group}** ({title}): median M pairs/s, and tokenpool (token) "
                     f"as a multiple of each")
        lines.append("")
        lines.append("| implementation | " + " | ".join(f"{t} thr" for t in ts) + " |")
        lines.append("|---|" + "---|" * len(ts))
        ours = data[group].get(OURS, {})
        for key, name, _ in IMPLS:
            vals = data[group].get(key)
            if not vals:
                continue
            cells = []
            for t in ts:
                ns = vals.get(str(t))
                if ns is None:
                    cells.append("")
                    continue
                cell = f"{mops(ns):.1f}"
                if key != OURS and str(t) in ours:
                    cell += f" (×{ns / ours[str(t)]:.2f})"
                cells.append(cell)
            label = f"**{name}**" if key == OURS else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def simple_table(data, group, unit, scale, title):
    if group not in data:
        return []
    lines = [f"**{group}**: {title}", "", f"| bench | median ({unit}) |", "|---|---|"]
    for func, vals in sorted(data[group].items()):
        for value, ns in sorted(vals.items()):
            name = func + (f"/{value}" if value else "")
            lines.append(f"| {name} | {ns / scale:.2f} |")
    lines.append("")
    return lines


def end_to_end_table(data, criterion_dir):
    group = data.get("end_to_end")
    if not group:
        return [], {}
    lat = {}
    path = os.path.join(criterion_dir, "end_to_end", "latency.json")
    if os.path.exists(path):
        with open(path) as f:
            lat = json.load(f)
    flights = sorted({int(v) for vals in group.values() for v in vals})
    order = ["h2pool", "hyper_util", "raw_h2_1conn", "raw_h2_4conn"]
    clients = [c for c in order if c in group] + [c for c in group if c not in order]
    lines = ["**end_to_end**: k requests/s (p50 / p99 µs); h2pool as a multiple of each", "",
             "| client | " + " | ".join(f"{n} in flight" for n in flights) + " |",
             "|---|" + "---|" * len(flights)]
    krps = {c: {n: 1e6 / group[c][str(n)] for n in flights if str(n) in group[c]}
            for c in clients}
    for c in clients:
        cells = []
        for n in flights:
            if n not in krps[c]:
                cells.append("")
                continue
            cell = f"{krps[c][n]:.1f}"
            l = lat.get(f"{c}/{n}")
            if l:
                cell += f" ({l['p50_ns'] / 1e3:.0f} / {l['p99_ns'] / 1e3:.0f})"
            if c != "h2pool" and n in krps.get("h2pool", {}):
                cell += f" ×{krps['h2pool'][n] / krps[c][n]:.2f}"
            cells.append(cell)
        label = "**h2pool**" if c == "h2pool" else c
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines, krps


def verdicts(data, krps):
    """The targets of issues 2 and 5, each met or missed, from this run's medians."""
    lines = ["| target | ratio of medians | verdict |", "|---|---|---|"]
    for name, r, need in target_ratios(data, krps):
        lines.append(f"| {name} | ×{r:.2f} | {'met' if r >= need else '**missed**'} |")
    lines.append("")
    return lines


def target_ratios(data, krps):
    """[(target, ratio, ratio needed)]"""
    out = []

    def ratio(group, a, b, t):
        try:
            return data[group][b][str(t)] / data[group][a][str(t)]
        except KeyError:
            return None

    r = ratio("contention64", OURS, "crossbeam_arrayqueue", 1)
    if r is not None:
        out.append(("1 thread >= ArrayQueue (64 slots)", r, 1.0))
    for t in threads_of(data, "contention64"):
        if t < 2:
            continue
        r = ratio("contention64", OURS, "crossbeam_arrayqueue", t)
        if r is not None:
            out.append((f"{t} threads >= 10× ArrayQueue (64 slots)", r, 10.0))
    r = ratio("contention4", OURS, "parking_lot_mutex_vec", 8)
    if r is not None:
        out.append(("4 slots / 8 threads >= parking_lot Mutex<Vec>", r, 1.0))
    ours = krps.get("h2pool", {})
    raws = [c for c in krps if c.startswith("raw_h2")]
    for n in (16, 128):
        if n in ours and n in krps.get("hyper_util", {}):
            r = ours[n] / krps["hyper_util"][n]
            out.append((f"end to end, {n} in flight: h2pool >= hyper-util", r, 1.0))
        best = max((krps[c][n] for c in raws if n in krps[c]), default=None)
        if n in ours and best:
            r = ours[n] / best
            out.append((f"end to end, {n} in flight: h2pool within 10% of raw h2 (better of "
                        f"1 and 4 connections)", r, 0.9))
    return out


def spread(dirs):
    """Each target's ratio of medians in each run, side by side."""
    runs = []
    for d in dirs:
        data = load(d)
        _, krps = end_to_end_table(data, d)
        runs.append(target_ratios(data, krps))
    names = [name for name, _, _ in runs[0]] if runs else []
    labels = [os.path.basename(os.path.normpath(d)) for d in dirs]
    lines = ["| target | " + " | ".join(labels) + " | met in |",
             "|---|" + "---|" * (len(runs) + 1)]
    for name in names:
        cells, met = [], 0
        for run in runs:
            r = next(((r, need) for n, r, need in run if n == name), None)
            if r is None:
                cells.append("")
                continue
            cells.append(f"×{r[0]:.2f}")
            met += r[0] >= r[1]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {met} of {len(runs)} |")
    lines.append("")
    return lines


def svg(data, path, caption=""):
    """Two panels side by side: throughput (M pairs/s) against threads (log2 axis)."""
    panels = [(g, t) for g, t in GROUPS if g in data]
    if not panels:
        return False
    pw, ph = 430, 330          # panel size
    ml, mr, mt, mb = 58, 14, 44, 46  # margins inside a panel
    legend_h = 26 * ((len(IMPLS) + 2) // 3) + 10 + (22 if caption else 0)
    width, height = pw * len(panels), ph + legend_h
    ymax = 0.0
    for g, _ in panels:
        for vals in data[g].values():
            for ns in vals.values():
                ymax = max(ymax, mops(ns))
    ymax = nice_ceiling(ymax)
    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">')
    e.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    for p, (group, title) in enumerate(panels):
        x0 = p * pw
        ts = threads_of(data, group)
        lo, hi = log2(ts[0]), log2(ts[-1])
        span = hi - lo or 1.0
        ix0, ix1 = x0 + ml, x0 + pw - mr
        iy0, iy1 = mt, ph - mb

        def px(t, ix0=ix0, ix1=ix1, lo=lo, span=span):
            return ix0 + (log2(t) - lo) / span * (ix1 - ix0)

        def py(v, iy0=iy0, iy1=iy1):
            return iy1 - v / ymax * (iy1 - iy0)

        e.append(f'<text x="{x0 + pw / 2}" y="18" text-anchor="middle" font-size="14" '
                 f'font-weight="bold">{group}: {esc(title)}</text>')
        for k in range(6):
            v = ymax * k / 5
            y = py(v)
            e.append(f'<line x1="{ix0}" y1="{y:.1f}" x2="{ix1}" y2="{y:.1f}" stroke="#ddd"/>')
            e.append(f'<text x="{ix0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        for t in ts:
            x = px(t)
            e.append(f'<line x1="{x:.1f}" y1="{iy0}" x2="{x:.1f}" y2="{iy1}" stroke="#eee"/>')
            e.append(f'<text x="{x:.1f}" y="{iy1 + 16}" text-anchor="middle">{t}</text>')
        e.append(f'<rect x="{ix0}" y="{iy0}" width="{ix1 - ix0}" height="{iy1 - iy0}" '
                 f'fill="none" stroke="#444"/>')
        e.append(f'<text x="{(ix0 + ix1) / 2}" y="{ph - 12}" text-anchor="middle">threads</text>')
        e.append(f'<text transform="translate({x0 + 16},{(iy0 + iy1) / 2}) rotate(-90)" '
                 f'text-anchor="middle">M checkout+return pairs/s (median)</text>')
        for key, _name, colour in IMPLS:
            vals = data[group].get(key)
            if not vals:
                continue
            pts = [(px(int(t)), py(mops(ns))) for t, ns in sorted(vals.items(), key=lambda kv: int(kv[0]))]
            w = 3 if key.startswith("tokenpool") else 1.6
            e.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{w}" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            for x, y in pts:
                e.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
    for i, (key, name, colour) in enumerate(IMPLS):
        col, row = i % 3, i // 3
        lx, ly = 20 + col * (width - 40) / 3, ph + 14 + row * 26
        e.append(f'<line x1="{lx:.1f}" y1="{ly:.1f}" x2="{lx + 24:.1f}" y2="{ly:.1f}" '
                 f'stroke="{colour}" stroke-width="3"/>')
        e.append(f'<text x="{lx + 30:.1f}" y="{ly + 4:.1f}">{esc(name)}</text>')
    if caption:
        e.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" fill="#555" '
                 f'font-size="11">{esc(caption)}</text>')
    e.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(e) + "\n")
    return True


def log2(x):
    import math
    return math.log2(x)


def nice_ceiling(v):
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1.0
    import math
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", default="target/criterion", help="criterion output directory")
    ap.add_argument("--svg", default="docs/contention.svg", help="where to write the plot")
    ap.add_argument("--caption", default="", help="a line under the plot (machine, conditions)")
    ap.add_argument("--spread", nargs="+", metavar="DIR",
                    help="instead: each target's ratio in each of several saved criterion "
                         "directories (one per run, named for the column), to show how much a "
                         "noisy machine moves it")
    args = ap.parse_args()
    if args.spread:
        print("\n".join(spread(args.spread)))
        return
    data = load(args.criterion)
    if not data:
        sys.exit(f"no criterion results under {args.criterion}; run the benches first")
    lines = contention_tables(data)
    lines += simple_table(data, "token_check", "ns", 1.0, "`Pool::get` per call")
    lines += simple_table(data, "waiting", "µs", 1e3, "release → waiter holds the connection")
    e2e, krps = end_to_end_table(data, args.criterion)
    lines += e2e
    lines += ["**Targets** (issues 2 and 5), from the medians above:", ""]
    lines += verdicts(data, krps)
    print("\n".join(lines))
    if svg(data, args.svg, args.caption):
        print(f"wrote {args.svg}", file=sys.stderr)


if __name__ == "__main__":
    main()
