#!/usr/bin/env bash
# Idle benchmark of the two framework bridges (issues 14 and 17), for the lead's quiet window.
#
#   benches/bridges-idle.sh            # run the prebuilt binaries (< 8 minutes on 2 cores)
#   benches/bridges-idle.sh --build    # build them first (release; 10+ minutes each when loaded)
#
# Runs candle-bench and burn-bench at 1 and 2 threads, with the huge-page advice on (default)
# and off (NORMKIT_NO_HUGEPAGES=1), and writes
#   benches/results/candle/candle-bench-idle[-nohugepages]-<commit>.md
#   benches/results/burn/flex-autodiff-f32-idle[-nohugepages]-<commit>.md
# plus cpu.txt (lscpu) in both directories. <commit> is the commit the binaries were built
# from (target/release/bridges-build-commit, written by --build), else HEAD.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
stamp=$bin/bridges-build-commit
if [[ "${1:-}" == "--build" ]]; then
    cargo build --release -p normkit-candle --bin candle-bench
    cargo build --release -p normkit-burn --bin burn-bench
    git rev-parse --short HEAD > "$stamp"
    [[ -z "$(git status --porcelain -- normkit-candle normkit-burn norm-runtime norm-macros norm-spec src)" ]] \
        || echo "dirty" >> "$stamp"
fi
for b in candle-bench burn-bench; do
    [[ -x $bin/$b ]] || { echo "missing $bin/$b: run $0 --build" >&2; exit 1; }
done
head=$(git rev-parse --short HEAD)
commit=$(head -n1 "$stamp" 2>/dev/null || echo "$head")
[[ "$commit" == "$head" ]] || echo "note: binaries built at $commit, HEAD is $head" >&2
note="<!-- $(date -u +%FT%TZ): benches/bridges-idle.sh, binaries built at $commit ($(cat "$stamp" 2>/dev/null | tr '\n' ' ')), load average $(cut -d' ' -f1-3 /proc/loadavg) -->"
mkdir -p benches/results/candle benches/results/burn
lscpu > benches/results/candle/cpu.txt
cp benches/results/candle/cpu.txt benches/results/burn/cpu.txt
for hp in on off; do
    if [[ $hp == on ]]; then suffix=""; env=(); slow=3; else suffix="-nohugepages"; env=(NORMKIT_NO_HUGEPAGES=1); slow=0; fi
    out=benches/results/candle/candle-bench-idle$suffix-$commit.md
    { echo "$note"; echo "<!-- huge-page advice $hp; command: ${env[*]} $bin/candle-bench --threads 1,2 --reps 21 --slow-reps $slow -->"; echo
      env "${env[@]}" "$bin/candle-bench" --threads 1,2 --reps 21 --slow-reps "$slow"; } > "$out.tmp"
    mv "$out.tmp" "$out"; echo "wrote $out"
    out=benches/results/burn/flex-autodiff-f32-idle$suffix-$commit.md
    env "${env[@]}" "$bin/burn-bench" --threads 1,2 --reps 21 --slow-reps "$slow" --out "$out.tmp" > /dev/null
    { echo "$note"; echo "<!-- huge-page advice $hp; command: ${env[*]} $bin/burn-bench --threads 1,2 --reps 21 --slow-reps $slow -->"; echo; cat "$out.tmp"; } > "$out"
    rm -f "$out.tmp"; echo "wrote $out"
done
