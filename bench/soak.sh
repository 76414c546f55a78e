#!/usr/bin/env bash
# A soak with retention: a release cost-guard-governor on a file ledger with
# `--retain SIZE --archive DIR` under a steady, rate-limited load for
# MINUTES minutes; RSS sampled every second (each minute's mean, lowest
# and highest) and the ledger's local size every minute.
# At the end: SIGTERM, `ledger verify --archive` (archive + local from
# genesis), and every acknowledged signal counted against the receipts.
#
#   bench/soak.sh   (MINUTES=30 CONNECTIONS=50 DELAY_MS=5 RETAIN=256MiB TENANTS=1000)
#
# LEDGER=postgres soaks a PostgreSQL ledger instead (a throwaway server in
# the work folder, partitions of PARTITION=100000 receipts): "local" is then
# the size of the receipts' partitions still in the database.
#
# The load: wrk with CONNECTIONS connections, each waiting DELAY_MS before
# every request (50 × 1000/5 = 10k requests/s at most), in one-minute runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
MINUTES="${MINUTES:-30}"
CONNECTIONS="${CONNECTIONS:-50}"
DELAY_MS="${DELAY_MS:-5}"
RETAIN="${RETAIN:-256MiB}"
TENANTS="${TENANTS:-1000}"
PORT="${PORT:-18095}"
THREADS=2
DURATION=60s

LEDGER="${LEDGER:-file}"
PARTITION="${PARTITION:-100000}"

if [ "$LEDGER" = postgres ]; then
  # shellcheck source=bench/postgres.sh
  source bench/postgres.sh
  store=(--database-url "$url" --partition-receipts "$PARTITION")
else
  # shellcheck source=bench/governor.sh
  source bench/governor.sh
  store=(--ledger "$work/ledger")
fi
sed -e "s/n % 1000/n % $TENANTS/" "$work/signals.lua" >"$work/soak.lua"
printf 'delay = function()\n  return %s\nend\n' "$DELAY_MS" >>"$work/soak.lua"

GOVERNOR_AUTH_TOKEN=bench-token RUST_LOG=warn "$BIN/cost-guard-governor" serve \
  --listen "127.0.0.1:$PORT" "${store[@]}" --actions log --no-pubsub \
  --retain "$RETAIN" --archive "$work/archive" --archive-every 10 2>"$work/governor.log" &
gov=$!
pids+=("$gov")
wait_port "$PORT"

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$gov/status"; }
local_mb() {
  if [ "$LEDGER" = postgres ]; then
    psql "$url" -Atc "SELECT (coalesce(sum(pg_total_relation_size(inhrelid)), 0) / 1048576)::bigint
                      FROM pg_inherits WHERE inhparent = 'ggen_receipts'::regclass"
  else
    du -sm "$work/ledger" | cut -f1
  fi
}
# rss_sampler FILE: the governor's RSS in MiB, once a second, until killed.
rss_sampler() {
  while sleep 1; do rss_mb >>"$1"; echo >>"$1"; done
}
acked=0
printf '%-6s %12s %9s %19s %9s %11s\n' minute "signals/s" "p99 ms" "RSS MiB mean (min-max)" "local MiB" "archive MiB"
for minute in $(seq "$MINUTES"); do
  : >"$work/rss.$minute"
  rss_sampler "$work/rss.$minute" &
  sampler=$!
  read -r rps _ p99 errors requests < <(load "$PORT" "$CONNECTIONS" "$THREADS" "$work/soak.lua")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  acked=$((acked + requests - errors))
  rss=$(awk 'NF { n++; s += $1; if (n == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 }
             END { if (n) printf "%.1f (%.1f-%.1f)", s / n, lo, hi; else print "?" }' "$work/rss.$minute")
  printf '%-6s %12.0f %9.2f %22s %9s %11s\n' "$minute" "$rps" "$p99" "$rss" "$(local_mb)" \
    "$(du -sm "$work/archive" | cut -f1)"
done
kill -TERM "$gov"
wait "$gov" || true
echo "acknowledged signals: $acked"
[ "$LEDGER" = postgres ] && store=(--database-url "$url")
echo "verify --archive: $("$BIN/cost-guard-governor" ledger verify "${store[@]}" --archive "$work/archive" | tr '\n' ' ')"
receipts=$("$BIN/cost-guard-governor" ledger verify "${store[@]}" --archive "$work/archive" |
  sed -n 's/^ok: \([0-9]*\) receipts.*/\1/p')
echo "receipts (archive + local): ${receipts:-?}"
if [ -n "$receipts" ] && [ "$receipts" -lt "$acked" ]; then
  echo "LOST: $((acked - receipts)) acknowledged signals are not in the ledger" >&2
  exit 1
fi
if [ "$LEDGER" = postgres ]; then
  echo "partitions archived: $(find "$work/archive" -name '*.seg' | wc -l); local partitions: $(psql "$url" -Atc "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ggen_receipts'::regclass")"
else
  echo "segments archived: $(find "$work/archive" -name '*.seg' | wc -l); local segments: $(find "$work/ledger" -name '*.seg' | wc -l)"
fi
