#!/usr/bin/env bash
# HTTP ingest with durable acks: a generated governor (cost-guard-governor,
# file ledger, group commit) against a bare axum handler answering 204, both
# loaded by wrk over loopback in the same run; then the RSS of 100k idle
# tenants.
#
#   bench/http.sh   (DURATION=5s ROUNDS=3 CONNECTIONS="64 128 256" THREADS=2 TENANTS=100000)
#
# This machine's speed drifts by ±15% over minutes, so the two targets are
# measured alternately (governor, bare, governor, bare, ...) for ROUNDS
# rounds at every connection count, and each figure is the median of its
# rounds. Prints, per connection count, signals/s with p50/p99 for both and
# their ratio; then each target's peak rate over the connection counts at
# which its median p99 stayed within 10 ms, and the ratio of the peaks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64 128 256}"
THREADS="${THREADS:-2}"
TENANTS="${TENANTS:-100000}"
GOV_PORT="${GOV_PORT:-18080}"
BARE_PORT="${BARE_PORT:-18081}"
P99_LIMIT_MS=10

if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null
fi
cargo build --release --locked -p cost-guard-governor --quiet
cargo build --release --locked -p ggen-runtime --example bare --example idle_tenants --quiet
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

GOVERNOR_AUTH_TOKEN=bench-token RUST_LOG=warn "$BIN/cost-guard-governor" serve \
  --listen "127.0.0.1:$GOV_PORT" --ledger "$work/ledger" --actions log --no-pubsub 2>"$work/governor.log" &
pids+=($!)
"$BIN/examples/bare" "127.0.0.1:$BARE_PORT" 2>/dev/null &
pids+=($!)
wait_port "$GOV_PORT"
wait_port "$BARE_PORT"

for c in $CONNECTIONS; do
  for _ in $(seq "$ROUNDS"); do
    load "$GOV_PORT" "$c" >>"$work/governor.$c"
    load "$BARE_PORT" "$c" >>"$work/bare.$c"
  done
done
receipts=$(curl -s -H "Authorization: Bearer bench-token" "http://127.0.0.1:$GOV_PORT/v1/ledger/verify")


printf '%-6s %-9s %12s %9s %9s %8s %7s\n' conns target "signals/s" "p50 ms" "p99 ms" non-2xx ratio
gov_peak=0
bare_peak=0
for c in $CONNECTIONS; do
  read -r g_rps g_p50 g_p99 g_err < <(summary governor "$c")
  read -r b_rps b_p50 b_p99 b_err < <(summary bare "$c")
  ratio=$(awk -v g="$g_rps" -v b="$b_rps" 'BEGIN { printf "%.0f%%", 100 * g / b }')
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s\n' "$c" governor "$g_rps" "$g_p50" "$g_p99" "$g_err"
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s %7s\n' "$c" bare "$b_rps" "$b_p50" "$b_p99" "$b_err" "$ratio"
  gov_peak=$(awk -v p="$gov_peak" -v r="$g_rps" -v l="$g_p99" -v m=$P99_LIMIT_MS 'BEGIN { print (l <= m && r > p) ? r : p }')
  bare_peak=$(awk -v p="$bare_peak" -v r="$b_rps" -v l="$b_p99" -v m=$P99_LIMIT_MS 'BEGIN { print (l <= m && r > p) ? r : p }')
done
awk -v g="$gov_peak" -v b="$bare_peak" -v m=$P99_LIMIT_MS 'BEGIN {
  printf "peak (p99 <= %d ms): governor %.0f signals/s, bare %.0f req/s: %.0f%% of the bare handler\n", m, g, b, (b > 0 ? 100 * g / b : 0) }'
echo "ledger     $receipts"

"$BIN/examples/idle_tenants" "$TENANTS"
