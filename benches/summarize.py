#!/usr/bin/env python3
"""Median-of-runs table for the README from `norm-bench --compare` outputs.

    python3 benches/summarize.py benches/results/compare-1t-run*.txt benches/results/compare-2t-run*.txt

Each input is the text `cargo run --release -p norm-bench -- --compare torch.jsonl` prints
(one torch_suite.py run and one normkit run, side by side). Per (case, pass, threads) the
table gives normkit's median over the runs with its spread, PyTorch's median, the ratio of
the two medians, and both as a fraction of the copy bandwidth measured in the same runs.
Standard library only.
"""

import re
import statistics
import sys
from collections import defaultdict

ROW = re.compile(
    r"^(\w+)\s+(fwd|bwd)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
)


def main(paths):
    rows = defaultdict(lambda: {"nk": [], "pt": [], "nk_gbps": [], "pt_gbps": [], "copy": []})
    order = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = ROW.match(line)
                if not m:
                    continue
                case, pas, threads = m.group(1), m.group(2), int(m.group(3))
                key = (threads, case, pas)
                if key not in rows:
                    order.append(key)
                r = rows[key]
                r["nk"].append(float(m.group(4)))
                r["pt"].append(float(m.group(5)))
                r["nk_gbps"].append(float(m.group(7)))
                r["pt_gbps"].append(float(m.group(8)))
                r["copy"].append(float(m.group(9)))
    if not rows:
        sys.exit("no comparison rows found")
    print("| case | pass | threads | normkit ms (median; spread) | PyTorch ms (median) | ratio | normkit % of copy | PyTorch % of copy |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = defaultdict(list)
    for key in sorted(order, key=lambda k: (k[0], order.index(k))):
        threads, case, pas = key
        r = rows[key]
        nk, pt = statistics.median(r["nk"]), statistics.median(r["pt"])
        # GB/s scale inversely with time: the traffic of the pass is nk_ms * nk_gbps.
        traffic = r["nk"][0] * r["nk_gbps"][0]
        copy = statistics.median(r["copy"])
        ratio = pt / nk
        ratios[threads].append(ratio)
        print(
            f"| {case} | {pas} | {threads} | {nk:.3f} ({min(r['nk']):.3f}–{max(r['nk']):.3f}) "
            f"| {pt:.3f} | {ratio:.2f}× | {100 * traffic / nk / copy:.0f} % | {100 * traffic / pt / copy:.0f} % |"
        )
    print()
    for threads, rs in sorted(ratios.items()):
        geo = statistics.geometric_mean(rs)
        below = sum(1 for r in rs if r < 1.0)
        print(f"threads {threads}: geometric mean {geo:.2f}× over {len(rs)} rows, {below} below 1.0×, runs per row {len(rows[(threads, order[0][1], order[0][2])]['nk'])}")


if __name__ == "__main__":
    main(sys.argv[1:])
