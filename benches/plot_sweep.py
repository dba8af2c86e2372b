#!/usr/bin/env python3
"""Plots `norm-bench --sweep`'s output: the ratio torch ms / normkit ms at every point.

    python3 benches/plot_sweep.py benches/results/<cpu-slug>/   # writes sweep.png there

Reads sweep-normkit-{T}t.jsonl and sweep-torch-{T}t.jsonl from the folder; one panel per
family of points (row lengths, spatial sizes, batch sizes, ...), forward and backward at
every thread count, a line at 1.0 (above it normkit is faster). Needs matplotlib.
"""

import glob
import json
import os
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(folder, impl):
    out = {}
    for path in glob.glob(os.path.join(folder, f"sweep-{impl}-*t.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    o = json.loads(line)
                    out[(o["family"], o["case"], tuple(o["shape"]), o["pass"], o["threads"])] = o["median_ms"]
    return out


def label(family, shape):
    """The x value of a point within its family: the varying dimension."""
    if "rows" in family:
        return shape[1]
    if "spatial" in family:
        return shape[2]
    if "channels" in family:
        return shape[1]
    if family == "ln batch":
        return f"{shape[0]}x{shape[1]}"
    return shape[0]


def main(folder):
    nk, pt = load(folder, "normkit"), load(folder, "torch")
    fams = defaultdict(list)
    for key in nk:
        if key in pt:
            fams[key[0]].append(key)
    if not fams:
        sys.exit(f"no joined sweep points in {folder}")
    names = list(dict.fromkeys(k[0] for k in nk))
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    cpu = ""
    cpu_path = os.path.join(folder, "cpu.txt")
    if os.path.exists(cpu_path):
        with open(cpu_path, encoding="utf-8") as f:
            m = re.search(r"^cpuinfo: (.*)$", f.read(), re.M)
            cpu = m.group(1) if m else ""
    for ax, fam in zip(axes.flat, names):
        keys = fams[fam]
        xs = list(dict.fromkeys(label(fam, k[2]) for k in keys))
        for (pas, t), style in (
            (("fwd", 1), "o-"), (("bwd", 1), "s-"), (("fwd", 2), "o--"), (("bwd", 2), "s--")
        ):
            pts = [(label(fam, k[2]), pt[k] / nk[k]) for k in keys if k[3] == pas and k[4] == t]
            if not pts:
                continue
            pts.sort(key=lambda p: xs.index(p[0]))
            ax.plot([xs.index(p[0]) for p in pts], [p[1] for p in pts], style, label=f"{pas} {t}T", ms=4)
        ax.axhline(1.0, color="grey", lw=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([str(x) for x in xs], rotation=45, fontsize=7)
        ax.set_title(f"{fam} ({keys[0][1]})", fontsize=9)
        ax.set_ylabel("torch ms / normkit ms", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"normkit vs PyTorch beyond the suite — {cpu} (above 1: normkit faster)", fontsize=10)
    fig.tight_layout()
    out = os.path.join(folder, "sweep.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
