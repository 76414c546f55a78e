#!/usr/bin/env bash
# HTTP ingest with durable acks on the two ledgers: one cost-guard-governor
# on a file ledger and one on PostgreSQL (a throwaway server started by
# scripts/postgres, synchronous_commit on), both loaded by wrk over loopback
# in the same run; server, governors and wrk share this machine's cores.
#
#   bench/pg.sh   (DURATION=5s ROUNDS=3 CONNECTIONS="64 128 256" THREADS=2)
#
# The targets are measured alternately (file, postgres, file, …) for ROUNDS
# rounds at every connection count; each figure is the median of its
# rounds. Prints signals/s with p50/p99 per target and connection count,
# each target's peak over the counts whose median p99 stayed within 20 ms,
# and the ratio postgres / file of the peaks; then `ledger verify` of the
# database.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64 128 256}"
THREADS="${THREADS:-2}"
FILE_PORT="${FILE_PORT:-18090}"
PG_PORT="${PG_PORT:-18091}"
P99_LIMIT_MS=20

# shellcheck source=bench/postgres.sh
source bench/postgres.sh

GOVERNOR_AUTH_TOKEN=bench-token RUST_LOG=warn "$BIN/cost-guard-governor" serve \
  --listen "127.0.0.1:$FILE_PORT" --ledger "$work/ledger" --actions log --no-pubsub 2>"$work/file.log" &
pids+=($!)
GOVERNOR_AUTH_TOKEN=bench-token GOVERNOR_DATABASE_URL="$url" RUST_LOG=warn "$BIN/cost-guard-governor" serve \
  --listen "127.0.0.1:$PG_PORT" --actions log --no-pubsub 2>"$work/postgres.log" &
pids+=($!)
wait_port "$FILE_PORT"
wait_port "$PG_PORT"

for c in $CONNECTIONS; do
  for _ in $(seq "$ROUNDS"); do
    load "$FILE_PORT" "$c" >>"$work/file.$c"
    load "$PG_PORT" "$c" >>"$work/postgres.$c"
  done
done


printf '%-6s %-9s %12s %9s %9s %8s\n' conns ledger "signals/s" "p50 ms" "p99 ms" non-2xx
file_peak=0
pg_peak=0
for c in $CONNECTIONS; do
  read -r f_rps f_p50 f_p99 f_err < <(summary file "$c")
  read -r p_rps p_p50 p_p99 p_err < <(summary postgres "$c")
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s\n' "$c" file "$f_rps" "$f_p50" "$f_p99" "$f_err"
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s\n' "$c" postgres "$p_rps" "$p_p50" "$p_p99" "$p_err"
  file_peak=$(awk -v p="$file_peak" -v r="$f_rps" -v l="$f_p99" -v m=$P99_LIMIT_MS 'BEGIN { print (l <= m && r > p) ? r : p }')
  pg_peak=$(awk -v p="$pg_peak" -v r="$p_rps" -v l="$p_p99" -v m=$P99_LIMIT_MS 'BEGIN { print (l <= m && r > p) ? r : p }')
done
awk -v f="$file_peak" -v p="$pg_peak" -v m=$P99_LIMIT_MS 'BEGIN {
  printf "peak (p99 <= %d ms): postgres %.0f signals/s, file %.0f signals/s: postgres at %.0f%% of the file ledger\n", m, p, f, (f > 0 ? 100 * p / f : 0) }'

# Restart on the database the load filled: ready (GET /readyz 200) after a
# SIGTERM, then after a kill -9 (a replica loads no tenant at start: each
# is loaded, one row, on its first input).
# restart: starts the governor on the database and sets `ready` to the
# milliseconds until it answers /readyz (called in this shell, not in $(…),
# so its pid is kept).
restart() {
  local started
  started=$(date +%s%N)
  GOVERNOR_AUTH_TOKEN=bench-token GOVERNOR_DATABASE_URL="$url" RUST_LOG=warn "$BIN/cost-guard-governor" serve \
    --listen "127.0.0.1:$PG_PORT" --actions log --no-pubsub >/dev/null 2>>"$work/postgres.log" &
  pids+=($!)
  for _ in $(seq 3000); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PG_PORT/readyz"; then
      ready="$((($(date +%s%N) - started) / 1000000)) ms"
      return
    fi
    sleep 0.01
  done
  ready="never"
}
receipts=$("$BIN/cost-guard-governor" ledger show --database-url "$url" | wc -l)
kill -TERM "${pids[1]}"
wait "${pids[1]}" 2>/dev/null || true
restart
echo "restart on $receipts receipts after SIGTERM: ready in $ready"
kill -KILL "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
restart
echo "restart on $receipts receipts after kill -9: ready in $ready"
kill -TERM "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
echo "postgres ledger: $("$BIN/cost-guard-governor" ledger verify --database-url "$url")"
