#!/usr/bin/env bash
# HTTP ingest with durable acks: a generated governor (cost-guard-governor,
# file ledger, group commit) against a bare axum handler answering 204, both
# loaded by wrk over loopback in the same run; then the RSS of 100k idle
# tenants.
#
#   bench/http.sh            (DURATION=10s CONNECTIONS=64 THREADS=2 TENANTS=100000)
#
# Prints signals/s, p50 and p99 for both, the ratio, and the idle-tenant RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
TENANTS="${TENANTS:-100000}"
GOV_PORT="${GOV_PORT:-18080}"
BARE_PORT="${BARE_PORT:-18081}"

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

# Varied tenants (t0..t999 per wrk thread), values below `warn` so the load
# is steady-state decisions, every request authenticated.
cat >"$work/signals.lua" <<'LUA'
local token = os.getenv("GOVERNOR_AUTH_TOKEN")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
request = function()
  n = n + 1
  local body = string.format('{"tenant":"t%d","signal":"spend_rate","value":%d}', n % 1000, n % 45)
  return wrk.format(nil, "/v1/signals", nil, body)
end
LUA

wait_port() {
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "nothing listening on port $1" >&2
  exit 2
}

# load NAME PORT: runs wrk, prints "NAME rps p50 p99 non2xx".
load() {
  local out
  out="$(GOVERNOR_AUTH_TOKEN=bench-token wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s "$work/signals.lua" "http://127.0.0.1:$2")"
  echo "$out" >"$work/$1.wrk"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  errors=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  echo "$1 ${rps:-0} ${p50:-?} ${p99:-?} ${errors:-0}"
}

GOVERNOR_AUTH_TOKEN=bench-token RUST_LOG=warn "$BIN/cost-guard-governor" serve \
  --listen "127.0.0.1:$GOV_PORT" --ledger "$work/ledger" --actions log 2>"$work/governor.log" &
pids+=($!)
"$BIN/examples/bare" "127.0.0.1:$BARE_PORT" 2>/dev/null &
pids+=($!)
wait_port "$GOV_PORT"
wait_port "$BARE_PORT"

read -r _ gov_rps gov_p50 gov_p99 gov_err < <(load governor "$GOV_PORT")
read -r _ bare_rps bare_p50 bare_p99 bare_err < <(load bare "$BARE_PORT")
receipts=$(curl -s -H "Authorization: Bearer bench-token" "http://127.0.0.1:$GOV_PORT/v1/ledger/verify")

printf '%-10s %12s %10s %10s %10s\n' target "signals/s" p50 p99 non-2xx
printf '%-10s %12.0f %10s %10s %10s\n' governor "$gov_rps" "$gov_p50" "$gov_p99" "$gov_err"
printf '%-10s %12.0f %10s %10s %10s\n' bare "$bare_rps" "$bare_p50" "$bare_p99" "$bare_err"
awk -v g="$gov_rps" -v b="$bare_rps" 'BEGIN { printf "ratio      %11.0f%% of the bare handler\n", 100 * g / b }'
echo "ledger     $receipts"

"$BIN/examples/idle_tenants" "$TENANTS"
