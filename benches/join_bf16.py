#!/usr/bin/env python3
"""Joins the bf16 suite runs into one table (joined.md, joined.jsonl).

Usage: python3 benches/join_bf16.py benches/results/<machine>/bf16-<commit>

Reads torch-bf16-{1,2}t.jsonl (benches/torch_suite_bf16.py), normkit-bf16-{1,2}t.jsonl
(norm-bench --dtype bf16) and normkit-f32-{1,2}t.jsonl (norm-bench --json) from the folder,
or, where the folder has a `runs/` subfolder of rounds (`<name>-run<r>.jsonl`, as
benches/bf16_rounds.sh writes), the median over the rounds of each file's medians; and writes, per (case, pass, threads): the three medians, normkit bf16's speed-up over
PyTorch bf16 (torch median / normkit median) and over normkit f32 (f32 median / bf16 median).
"""
import json
import statistics
import sys
from pathlib import Path


def load(path):
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            out[(r["case"], r["pass"], r["threads"])] = r
    return out


def load_rounds(d, name):
    """`name`.jsonl of the folder, or the medians over runs/`name`-run*.jsonl."""
    runs = sorted((d / "runs").glob(f"{name}-run*.jsonl"))
    if not runs:
        return load(d / f"{name}.jsonl")
    out = {}
    for key in load(runs[0]):
        ms = [r[key]["median_ms"] for r in map(load, runs) if key in r]
        out[key] = dict(load(runs[0])[key], median_ms=statistics.median(ms))
    return out


def main():
    d = Path(sys.argv[1])
    torch, nk, f32 = {}, {}, {}
    for t in (1, 2):
        torch.update(load_rounds(d, f"torch-bf16-{t}t"))
        nk.update(load_rounds(d, f"normkit-bf16-{t}t"))
        f32.update(load_rounds(d, f"normkit-f32-{t}t"))
    rows = []
    for key in sorted(nk, key=lambda k: (k[2], list(nk).index(k))):
        c, p, t = key
        r = {"case": c, "pass": p, "threads": t, "normkit_bf16_ms": nk[key]["median_ms"]}
        if key in torch:
            r["torch_bf16_ms"] = torch[key]["median_ms"]
            r["vs_torch_bf16"] = round(torch[key]["median_ms"] / nk[key]["median_ms"], 2)
        if key in f32:
            r["normkit_f32_ms"] = f32[key]["median_ms"]
            r["vs_normkit_f32"] = round(f32[key]["median_ms"] / nk[key]["median_ms"], 2)
        rows.append(r)
    (d / "joined.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [
        f"# bf16 suite, {d.name} (medians in ms; speed-up = other median / normkit bf16 median)",
        "",
        "| case | pass | T | normkit bf16 | torch bf16 | normkit f32 | vs torch bf16 | vs normkit f32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = lambda k: "-" if k not in r else (f"{r[k]:.2f}x" if k.startswith("vs") else f"{r[k]:.3f}")  # noqa: E731
        lines.append(f"| {r['case']} | {r['pass']} | {r['threads']} | {g('normkit_bf16_ms')} | "
                     f"{g('torch_bf16_ms')} | {g('normkit_f32_ms')} | {g('vs_torch_bf16')} | {g('vs_normkit_f32')} |")
    (d / "joined.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
