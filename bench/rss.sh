#!/usr/bin/env bash
# Memory against ledger length: the RSS a release cost-guard-governor (file
# ledger, 64 MiB segments) gains per receipt under a steady calm load, and
# how fast a tenant's receipts read back once the log is long.
#
#   bench/rss.sh   (RECEIPTS=10000000 CONNECTIONS=128 TENANTS=1000 CHUNK=10s)
#
# Warm-up first (two chunks of load: every tenant exists, allocator pools
# are filled), then RSS is sampled; the load runs in CHUNK-long wrk runs
# until RECEIPTS more signals were acknowledged (at most 400 chunks), and
# RSS is sampled again: growth per receipt = (after - warm) / receipts.
# Then `GET /v1/tenants/{t}/receipts` is timed with wrk (1 thread, 8
# connections, 5 s): the 20 newest receipts of a tenant, and 20 from its
# first segment (a walk back through every segment's index).
#
# LEDGER=postgres measures the PostgreSQL ledger instead (a throwaway
# server in the work folder; partitions of the default 1M receipts).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
RECEIPTS="${RECEIPTS:-10000000}"
CONNECTIONS="${CONNECTIONS:-128}"
TENANTS="${TENANTS:-1000}"
CHUNK="${CHUNK:-10s}"
PORT="${PORT:-18094}"
THREADS=2
DURATION="$CHUNK"

LEDGER="${LEDGER:-file}"
if [ "$LEDGER" = postgres ]; then
  # shellcheck source=bench/postgres.sh
  source bench/postgres.sh
  store=(--database-url "$url")
else
  # shellcheck source=bench/governor.sh
  source bench/governor.sh
  store=(--ledger "$work/ledger")
fi
sed "s/n % 1000/n % $TENANTS/" "$work/signals.lua" >"$work/load.lua"

GOVERNOR_AUTH_TOKEN=bench-token RUST_LOG=warn "$BIN/cost-guard-governor" serve \
  --listen "127.0.0.1:$PORT" "${store[@]}" --actions log --no-pubsub 2>"$work/governor.log" &
gov=$!
pids+=("$gov")
wait_port "$PORT"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$gov/status"; }
acked() { awk '{ print $5 - $4 }' <<<"$1"; }

warm=0
for _ in 1 2; do
  warm=$((warm + $(acked "$(load "$PORT" "$CONNECTIONS" "$THREADS" "$work/load.lua")")))
done
rss_warm=$(rss_kb)
done_receipts=0
chunks=0
started=$(date +%s)
while [ "$done_receipts" -lt "$RECEIPTS" ] && [ "$chunks" -lt 400 ]; do
  out=$(load "$PORT" "$CONNECTIONS" "$THREADS" "$work/load.lua")
  done_receipts=$((done_receipts + $(acked "$out")))
  chunks=$((chunks + 1))
done
elapsed=$(($(date +%s) - started))
rss_after=$(rss_kb)
echo "warm-up: $warm receipts, RSS $((rss_warm / 1024)) MiB"
echo "load: $done_receipts receipts in ${elapsed} s ($((done_receipts / (elapsed > 0 ? elapsed : 1))) signals/s), RSS $((rss_after / 1024)) MiB"
awk -v a="$rss_after" -v w="$rss_warm" -v n="$done_receipts" \
  'BEGIN { printf "RSS growth: %.3f bytes per receipt\n", (a - w) * 1024 / n }'
if [ "$LEDGER" = postgres ]; then
  echo "ledger: $(psql "$url" -Atc "SELECT pg_size_pretty(sum(pg_total_relation_size(oid))) FROM pg_class
    WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' AND relname LIKE 'ggen%'") in $(psql "$url" -Atc "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ggen_receipts'::regclass") partitions, $(psql "$url" -Atc "SELECT records FROM ggen_log") receipts"
else
  echo "ledger: $(du -sh "$work/ledger" | cut -f1) in $(find "$work/ledger" -name '*.seg' | wc -l) segments, $(find "$work/ledger" -name '*.idx' | wc -l) index files"
fi

# Read latency, newest and oldest pages of tenant t7.
head=$(curl -s -H "Authorization: Bearer bench-token" "http://127.0.0.1:$PORT/v1/tenants/t7" |
  sed -n 's/.*"seq":\([0-9]*\).*/\1/p' | head -1)
for page in "newest:$((head > 20 ? head - 20 : 0))" "oldest:0"; do
  name=${page%%:*}
  after=${page#*:}
  out=$(wrk -t1 -c8 -d5s --latency -H "Authorization: Bearer bench-token" \
    "http://127.0.0.1:$PORT/v1/tenants/t7/receipts?after=$after&limit=20")
  printf 'read %s 20 (after %s): %s reads/s, p50 %s, p99 %s, non-2xx %s\n' "$name" "$after" \
    "$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")" \
    "$(awk '$1 == "50%" { print $2 }' <<<"$out")" "$(awk '$1 == "99%" { print $2 }' <<<"$out")" \
    "$(awk '/Non-2xx/ { print $NF }' <<<"$out" | grep . || echo 0)"
done
