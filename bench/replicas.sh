#!/usr/bin/env bash
# Several replicas on one PostgreSQL schema: HTTP ingest with durable acks
# on the same 100 tenants, one cost-guard-governor alone against two
# sharing the schema, in the same run (a throwaway server started by
# scripts/postgres, synchronous_commit on); server, governors and wrk
# share this machine's cores.
#
#   bench/replicas.sh   (DURATION=5s ROUNDS=3 CONNECTIONS="64 128 256"
#                        TENANTS=shared)
#
# At every connection count C, alternately for ROUNDS rounds: "one" is
# one wrk (2 threads, C connections) on replica A alone; "two" is two wrk
# processes at once (1 thread, C/2 connections each), one on A and one on
# B. Each figure is the median of its rounds (for "two": the sum of the two
# wrk processes per round), with two/one at each count and the best of
# each over the counts against the other (issue 11's target: two at least
# as fast as one). Then it checks the ledger: `ledger verify` (no fork, no
# gap), and every acknowledged signal is a receipt (0 lost).
#
# TENANTS=disjoint is the same run without contention, as a bound: "one"
# loads t0..t199, and in "two" A gets t0..t99 and B t100..t199, so the
# replicas never touch each other's tenants. They still share the
# receipt counter (one gapless log) and the machine's cores.
#
# TENANTS=separate bounds any design of replicas on this machine: the
# loads of disjoint, but B writes to a database of its own, so the two
# share nothing but the PostgreSQL server and the cores (two independent
# governors, not replicas).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64 128 256}"
THREADS=2
A_PORT="${A_PORT:-18092}"
B_PORT="${B_PORT:-18093}"

# shellcheck source=bench/postgres.sh
source bench/postgres.sh
TENANTS="${TENANTS:-shared}"
case "$TENANTS" in
  shared)
    # The same load on 100 tenants, so the replicas contend for every tenant.
    sed 's/n % 1000/n % 100/' "$work/signals.lua" >"$work/hundred.lua"
    cp "$work/hundred.lua" "$work/one.lua"
    cp "$work/hundred.lua" "$work/b.lua"
    ;;
  disjoint | separate)
    sed 's/n % 1000/n % 100/' "$work/signals.lua" >"$work/hundred.lua"
    sed 's/n % 1000/n % 200/' "$work/signals.lua" >"$work/one.lua"
    sed 's/n % 1000/100 + n % 100/' "$work/signals.lua" >"$work/b.lua"
    ;;
  *) echo "TENANTS is \`$TENANTS\`: expected shared, disjoint or separate" >&2; exit 2 ;;
esac

urls=("$url")
if [ "$TENANTS" = separate ]; then
  b_url="${url%/*}/ggen_b"
  psql="$(cat "$work/pg/bindir")/psql"
  [ -x "$psql" ] || psql="$(command -v psql)"
  "$psql" -X -q "$url" -v ON_ERROR_STOP=1 -c 'CREATE DATABASE ggen_b'
  urls+=("$b_url")
else
  b_url="$url"
fi
for target in "$A_PORT $url" "$B_PORT $b_url"; do
  read -r port db <<<"$target"
  GOVERNOR_AUTH_TOKEN=bench-token GOVERNOR_DATABASE_URL="$db" RUST_LOG=warn "$BIN/cost-guard-governor" serve \
    --listen "127.0.0.1:$port" --actions log --no-pubsub 2>>"$work/governors.log" &
  pids+=($!)
  wait_port "$port"
done

for c in $CONNECTIONS; do
  half=$((c / 2))
  for _ in $(seq "$ROUNDS"); do
    load "$A_PORT" "$c" 2 "$work/one.lua" >>"$work/one.$c"
    load "$A_PORT" "$half" 1 "$work/hundred.lua" >"$work/a" &
    a=$!
    load "$B_PORT" "$half" 1 "$work/b.lua" >"$work/b"
    wait "$a"
    # Sum of the two: rps, the worse p50/p99, errors and requests summed.
    paste -d' ' "$work/a" "$work/b" |
      awk '{ printf "%f %f %f %d %d\n", $1 + $6, ($2 > $7 ? $2 : $7), ($3 > $8 ? $3 : $8), $4 + $9, $5 + $10 }' \
        >>"$work/two.$c"
  done
done

printf '%-6s %-9s %12s %9s %9s %8s %9s\n' conns replicas "signals/s" "p50 ms" "p99 ms" non-2xx "two/one"
acked=0
best_one=0 best_two=0
for c in $CONNECTIONS; do
  read -r one_rps p50 p99 err < <(summary one "$c")
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s\n' "$c" one "$one_rps" "$p50" "$p99" "$err"
  read -r two_rps p50 p99 err < <(summary two "$c")
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s %8.0f%%\n' "$c" two "$two_rps" "$p50" "$p99" "$err" \
    "$(awk -v a="$two_rps" -v b="$one_rps" 'BEGIN { print (b > 0 ? 100 * a / b : 0) }')"
  best_one=$(awk -v a="$one_rps" -v b="$best_one" 'BEGIN { print (a > b ? a : b) }')
  best_two=$(awk -v a="$two_rps" -v b="$best_two" 'BEGIN { print (a > b ? a : b) }')
  acked=$((acked + $(awk '{ s += $5 - $4 } END { print s + 0 }' "$work/one.$c" "$work/two.$c")))
done
awk -v a="$best_two" -v b="$best_one" \
  'BEGIN { printf "best: two replicas %.0f signals/s, one %.0f: %.0f%% (target: at least 100%%)\n", a, b, (b > 0 ? 100 * a / b : 0) }'

receipts=0
for db in "${urls[@]}"; do
  receipts=$((receipts + $("$BIN/cost-guard-governor" ledger show --database-url "$db" | grep -c '"kind":"signal"')))
done
echo "acknowledged signals (2xx): $acked; signal receipts: $receipts"
if [ "$receipts" -lt "$acked" ]; then
  echo "LOST: $((acked - receipts)) acknowledged signals are not in the ledger" >&2
  exit 1
fi
for db in "${urls[@]}"; do
  echo "postgres ledger: $("$BIN/cost-guard-governor" ledger verify --database-url "$db")"
done
