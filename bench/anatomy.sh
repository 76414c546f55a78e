#!/usr/bin/env bash
# What a request costs besides CPU time in the server's own code: per
# thread group, context switches and the system calls that park, wake and
# move bytes, per request; the machine's idle, iowait and steal shares while the
# load runs; and, for a governor, the ledger writer's `fdatasync`s (how
# many per second, how many requests each covers, their latency). One
# server, a load mix of bench/http.sh (MIX=calm, or heavy: a governor's
# 100 tenants entitled first, actions through the log adapter), after 2 s
# of warm-up.
#
#   bench/anatomy.sh BIN|strict|durable     (CONNECTIONS=128 DURATION=4 THREADS=2 MIX=calm)
#
# BIN: a cost-guard governor (served as bench/lib.sh's start_governor
# does); `strict`: the strict baseline example of bench/http.sh. Needs
# perf with permission to trace the server (syscall tracepoints).
set -euo pipefail
TARGET="$1"
CONNECTIONS="${CONNECTIONS:-128}"
SECONDS_TRACED="${DURATION:-4}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18096}"
MIX="${MIX:-calm}"
case "$MIX" in
  calm | heavy) ;;
  *) echo "MIX is \`$MIX\`: expected calm or heavy" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
work="$(mktemp -d)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'stop_target; rm -rf "$work"' EXIT
export GOVERNOR_AUTH_TOKEN=bench-token

start_target "$TARGET" "$PORT"
pid=$target_pid
script="$work/signals.lua"
if [ "$MIX" = heavy ]; then
  script="$work/heavy.lua"
  # start_governor's marketplace secret.
  [ "$TARGET" = strict ] || entitle "$PORT" bench 0 $((HEAVY_TENANTS - 1))
fi
warm_up "$PORT" "$CONNECTIONS" "$script"

events=task-clock,context-switches
for call in futex epoll_wait recvfrom writev pwrite64 fdatasync; do
  events="$events,syscalls:sys_enter_$call"
done
perf stat --per-thread -e "$events" -x, -o "$work/stat" -p "$pid" -- sleep "$SECONDS_TRACED" &
stat_pid=$!
perf record -q -e syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync -o "$work/syncs" \
  -p "$pid" -- sleep "$SECONDS_TRACED" >/dev/null 2>&1 &
record_pid=$!
before=$(head -1 /proc/stat)
out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_TRACED}s" -s "$script" "http://127.0.0.1:$PORT")"
after=$(head -1 /proc/stat)
wait "$stat_pid" "$record_pid"
requests=$(awk '/requests in/ { print $1 }' <<<"$out")
rate=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
echo "$TARGET: $requests requests in ${SECONDS_TRACED} s ($rate/s), $CONNECTIONS connections, $MIX mix"
# The machine, from /proc/stat's first line (user nice system idle iowait
# irq softirq steal ...).
awk -v a="$before" -v b="$after" 'BEGIN {
  split(a, x); split(b, y); t = 0
  for (i = 2; i <= 11; i++) t += y[i] - x[i]
  printf "machine: idle %.1f%%, iowait %.1f%%, stolen by the host %.1f%%\n",
    100 * (y[5] - x[5]) / t, 100 * (y[6] - x[6]) / t, 100 * (y[9] - x[9]) / t }'
# Per thread group (the thread name's first word), each counter per request.
echo "per request, by thread group:"
awk -F, -v n="$requests" '$1 !~ /^#/ && NF > 3 {
    split($1, name, "-"); group = name[1]; event = $4
    sub(/^syscalls:sys_enter_/, "", event)
    v[group " " event] += $2; seen[group] = 1 }
  END {
    split("context-switches futex epoll_wait recvfrom writev pwrite64 fdatasync", order, " ")
    for (g in seen) {
      if (v[g " task-clock"] == 0) continue
      line = sprintf("  %-10s CPU %5.2f µs", g, 1000 * v[g " task-clock"] / n)
      for (i = 1; i <= 7; i++) line = line sprintf("  %s %.3f", order[i], v[g " " order[i]] / n)
      print line
    } }' "$work/stat" | sort
# The writer's syncs: each enter paired with the next exit of its thread,
# their latencies (µs) sorted, then summarised.
perf script -i "$work/syncs" -F tid,time,event 2>/dev/null | awk '
  { t = $2; sub(/:$/, "", t) }
  $3 ~ /enter/ { start[$1] = t; next }
  ($1 in start) { printf "%.1f\n", (t - start[$1]) * 1e6; delete start[$1] }' |
  sort -g | awk -v n="$requests" -v s="$SECONDS_TRACED" '
  { d[NR] = $1; sum += $1 }
  END {
    if (NR == 0) { print "fdatasync: none"; exit }
    printf "fdatasync: %.0f/s, %.1f requests each, latency mean %.0f µs, p50 %.0f, p90 %.0f, p99 %.0f, max %.0f\n",
      NR / s, n / NR, sum / NR, d[int(NR * 0.5) + 1], d[int(NR * 0.9) + 1], d[int(NR * 0.99) + 1], d[NR] }'
