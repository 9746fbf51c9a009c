#!/bin/sh
# Usage: fuzz/run.sh TARGET SECONDS [extra libFuzzer flags]
# Runs one cargo-fuzz target with the limits sluice's fuzzing uses: one job, debug assertions
# and overflow checks (-a), 2 GiB RSS, 512 MiB per allocation, 10 s per input.
set -eu
cd "$(dirname "$0")"
target=$1
seconds=$2
shift 2
mkdir -p logs
exec nice -n 10 cargo +nightly fuzz run -a "$target" -- \
    -jobs=1 -workers=1 -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -max_total_time="$seconds" -print_final_stats=1 "$@"
