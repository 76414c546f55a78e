#!/usr/bin/env bash
# HTTP ingest of two governor binaries, paired: OLD and NEW (each a
# `cost-guard-governor` release build, e.g. from `git worktree`s at two
# commits) serve the calm mix of bench/http.sh in turn, a fresh ledger
# each, PAIRS times, which one goes first alternating; each run is 2 s of
# warm-up then DURATION of wrk, with `perf stat` counting the server's CPU.
# This machine's speed drifts by ±15% over minutes, so only a pair's ratio
# says anything; print the pairs, then read their median.
#
#   bench/http-ab.sh OLD NEW      (PAIRS=8 CONNECTIONS=128 DURATION=5s THREADS=2)
#
# Prints one line per run: which, signals/s, p50/p99 ms, non-2xx, CPU µs
# per request; then per pair NEW/OLD of signals/s and of CPU per request,
# and the medians of both.
set -euo pipefail
OLD="$(realpath "$1")"
NEW="$(realpath "$2")"
PAIRS="${PAIRS:-8}"
CONNECTIONS="${CONNECTIONS:-128}"
DURATION="${DURATION:-5s}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18090}"
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'stop_governor; rm -rf "$work"' EXIT
export GOVERNOR_AUTH_TOKEN=bench-token

# run BIN: one run on a fresh ledger; prints "rps p50 p99 non2xx requests cpu_us".
run() {
  start_governor "$1" "$PORT"
  warm_up "$PORT" "$CONNECTIONS" "$work/signals.lua"
  load_cpu "$gov_pid" "$PORT" "$CONNECTIONS"
  stop_governor
}

ratios="$work/ratios"
for pair in $(seq "$PAIRS"); do
  order="old new"
  [ $((pair % 2)) = 0 ] && order="new old"
  for which in $order; do
    bin="$OLD"
    [ "$which" = new ] && bin="$NEW"
    result="$(run "$bin")"
    read -r rps p50 p99 err _ cpu <<<"$result"
    printf 'pair %-3s %-4s %9.0f signals/s  p50 %6.2f  p99 %6.2f ms  non-2xx %s  %6.2f µs/req\n' \
      "$pair" "$which" "$rps" "$p50" "$p99" "$err" "$cpu"
    eval "${which}_rps=$rps ${which}_cpu=$cpu"
  done
  # shellcheck disable=SC2154 # set by the eval above
  awk -v a="$new_rps" -v b="$old_rps" -v c="$new_cpu" -v d="$old_cpu" \
    'BEGIN { printf "%.3f %.3f\n", a / b, c / d }' >>"$ratios"
done
echo "new/old signals/s by pair: $(cut -d' ' -f1 "$ratios" | paste -sd' ')  median $(cut -d' ' -f1 "$ratios" | median)"
echo "new/old CPU per request:   $(cut -d' ' -f2 "$ratios" | paste -sd' ')  median $(cut -d' ' -f2 "$ratios" | median)"
