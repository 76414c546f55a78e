#!/usr/bin/env bash
# Where a request's CPU goes: `perf record --call-graph dwarf` of one
# server while wrk sends the calm mix of bench/http.sh, each sample filed
# under a part of the request's path by bench/profile-parts.py (response
# write, request read, hyper, axum and the layers, the handler's parts, the
# ledger writer thread's fdatasync / pwrite / hashes, ...), in µs of CPU per
# request. The profiler slows the server: compare parts and servers within
# one run, not with bench/http.sh's rates.
#
#   bench/profile.sh BIN|strict|durable     (CONNECTIONS=128 DURATION=4 THREADS=2)
#
# BIN: a cost-guard governor (served as bench/lib.sh's start_governor
# does); `strict`: the strict baseline example of bench/http.sh. Needs
# perf with permission to record the server.
set -euo pipefail
TARGET="$1"
CONNECTIONS="${CONNECTIONS:-128}"
SECONDS_RECORDED="${DURATION:-4}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18095}"
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
work="$(mktemp -d)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'stop_target; rm -rf "$work"' EXIT
export GOVERNOR_AUTH_TOKEN=bench-token

start_target "$TARGET" "$PORT"
pid=$target_pid
warm_up "$PORT" "$CONNECTIONS" "$work/signals.lua"
perf record -F 999 --call-graph dwarf,16384 -o "$work/perf.data" -p "$pid" -- sleep "$SECONDS_RECORDED" \
  >/dev/null 2>&1 &
perf_pid=$!
out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_RECORDED}s" -s "$work/signals.lua" "http://127.0.0.1:$PORT")"
wait "$perf_pid"
requests=$(awk '/requests in/ { print $1 }' <<<"$out")
perf script -i "$work/perf.data" -F comm,tid,ip,sym 2>/dev/null >"$work/stacks"
# One sample per 1/999 s of CPU.
samples=$(grep -c '^[^[:space:]]' "$work/stacks" || true)
echo "$TARGET: $requests requests in ${SECONDS_RECORDED} s under the profiler"
bench/profile-parts.py "$requests" "$(awk -v s="$samples" 'BEGIN { print s * 1e6 / 999 }')" <"$work/stacks"
