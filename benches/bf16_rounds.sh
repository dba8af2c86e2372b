#!/usr/bin/env bash
# The bf16 suite against PyTorch bf16 and normkit's own f32, alternating (torch bf16,
# normkit bf16, normkit f32) for ROUNDS rounds at 1 and 2 threads, on an idle machine.
#
# usage, from the repository root:
#   bash benches/bf16_rounds.sh OUT [ROUNDS]       # e.g. benches/results/<cpu>/bf16-<commit>
# Uses target/release/norm-bench (built here first; or BIN) and python3 with torch; writes
# OUT/runs/*.jsonl (with the load average per round in runs/load.txt), OUT/cpu.txt and the
# joined table OUT/joined.md (benches/join_bf16.py: medians over the rounds).
set -eu
out=${1:?usage: bf16_rounds.sh OUT [ROUNDS]}
rounds=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
# BIN=<norm-bench binary> skips the build and times that binary.
if [ -z "${BIN:-}" ]; then
  cargo build --release -p norm-bench
fi
bin=${BIN:-$PWD/target/release/norm-bench}
mkdir -p "$out/runs"
{
  lscpu | grep 'Model name'
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +dirty)"
  echo "date: $(date -u)"
} > "$out/cpu.txt"
: > "$out/runs/load.txt"
for r in $(seq 1 "$rounds"); do
  echo "round $r: $(uptime)" >> "$out/runs/load.txt"
  for t in 1 2; do
    python3 "$here/torch_suite_bf16.py" --threads "$t" > "$out/runs/torch-bf16-${t}t-run$r.jsonl"
    "$bin" --dtype bf16 --threads "$t" > "$out/runs/normkit-bf16-${t}t-run$r.jsonl"
    "$bin" --json --threads "$t" > "$out/runs/normkit-f32-${t}t-run$r.jsonl"
  done
done
python3 "$here/join_bf16.py" "$out"
