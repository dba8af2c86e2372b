#!/usr/bin/env bash
# Idle timing A/B of two commits on the norm-bench suite, f32: base and new alternate
# (A/B/A/B per case), ROUNDS rounds, 1 and 2 threads, at the default level (AVX-512 where detected)
# and NORMKIT_SIMD=avx2; then the joined ratio table (benches/ab_table.py).
#
# usage, from the repository root, on an idle machine:
#   BASE_REV=<commit> OUT=benches/results/<cpu>/<folder> bash benches/ab.sh [ROUNDS] [-- norm-bench flags]
# The base is built from `git archive $BASE_REV` into $BASE_DIR (unless $A is an existing
# binary), the new binary with `cargo build --release -p norm-bench` here (unless $B is
# given). Writes $OUT/ab/*.jsonl, $OUT/ab-timing.md and $OUT/cpu.txt; removes $BASE_DIR at
# the end unless KEEP_BASE=1.
set -eu
rounds=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
: "${BASE_REV:?set BASE_REV to the base commit}"
: "${OUT:?set OUT to the results folder}"
BASE_DIR=${BASE_DIR:-/tmp/ab-base-$BASE_REV}
A=${A:-$BASE_DIR/target/release/norm-bench}
B=${B:-$PWD/target/release/norm-bench}
if [ ! -x "$A" ]; then
  mkdir -p "$BASE_DIR"
  git archive "$BASE_REV" | tar -x -C "$BASE_DIR"
  (cd "$BASE_DIR" && cargo build --release -p norm-bench)
fi
[ "$B" = "$PWD/target/release/norm-bench" ] && cargo build --release -p norm-bench
mkdir -p "$OUT/ab"
{
  lscpu | grep 'Model name'
  echo "base: $BASE_REV ($A)"
  echo "new: $(git rev-parse --short HEAD) ($B)"
  echo "date: $(date -u)"
} > "$OUT/cpu.txt"
# One (case, level, threads) at a time, base and new back to back (the order alternating
# by round), so a burst of load on this kind of shared VM hits both sides of a pair;
# ab_table.py also gives the median of the per-round paired ratios. CASES: the suite cases both commits have (override to narrow);
# LEVELS: the levels to time (e.g. LEVELS=default on a CPU without AVX-512, where both are AVX2).
cases=${CASES:-bn_train,bn_eval,bn_train_nhwc,ln,rms,gn,gn_big,in,ws,bcn}
levels=${LEVELS:-default avx2}
rm -f "$OUT"/ab/*.jsonl
for r in $(seq 1 "$rounds"); do
  for c in ${cases//,/ }; do
    for lv in $levels; do
      for t in 1 2; do
        # Base first in odd rounds, new first in even ones: whatever the first run of a
        # pair pays (a cold page cache, the other process's frequency ramp) hits both.
        sides="base new"
        [ $((r % 2)) = 0 ] && sides="new base"
        for side in $sides; do
          bin=$A; [ $side = new ] && bin=$B
          f="$OUT/ab/$side-$lv-${t}t-run$r.jsonl"
          if [ $lv = default ]; then
            "$bin" --json --threads $t --cases "$c" "$@" >> "$f"
          else
            NORMKIT_SIMD=$lv "$bin" --json --threads $t --cases "$c" "$@" >> "$f"
          fi
        done
      done
    done
  done
done
python3 "$(dirname "$0")/ab_table.py" "$OUT/ab" > "$OUT/ab-timing.md"
cat "$OUT/ab-timing.md"
[ "${KEEP_BASE:-0}" = 1 ] || rm -rf "$BASE_DIR"
