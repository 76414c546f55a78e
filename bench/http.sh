#!/usr/bin/env bash
# HTTP ingest with durable acks: a generated governor (cost-guard-governor,
# file ledger, group commit) against two axum baselines on the same stack,
# all loaded by wrk over loopback in the same run, under each load mix;
# then the RSS of 100k idle tenants.
#
#   bench/http.sh   (DURATION=5s ROUNDS=3 CONNECTIONS="64 128 256" THREADS=2
#                    TENANTS=100000 MIXES="calm heavy" ACTIONS=live)
#
# Targets (all on `POST /v1/signals`):
# - governor: `cost-guard-governor serve`, a fresh one on a fresh ledger
#   directory for each mix, so one mix's tenant states never reach another;
# - strict: runtime/examples/strict.rs answers 204 without reading the
#   body, the physical ceiling of an HTTP ingest on this stack: the
#   reference of the ratios;
# - durable: runtime/examples/durable.rs reads the body, appends it to a
#   file and answers 204 once a group commit (the file ledger's 200 µs
#   delay, one `fdatasync` for all the requests gathered) made it durable,
#   and does nothing else: the ceiling of an ingest that acknowledges only
#   durable input, as the governor must. governor/durable is what the
#   governor's own work costs; durable/strict is what durability costs;
# - bare: runtime/examples/bare.rs parses the body as JSON, then 204: the
#   older, looser baseline, kept for continuity with earlier runs.
#
# Mixes (MIXES picks them, in order):
# - calm: bench/lib.sh's signals.lua, the load of earlier runs: tenants
#   t0..t999, spend_rate 0..44 (below `warn`). These tenants are not
#   entitled and the spec requires an entitlement, so every signal is a
#   receipted steady-state decision of a refusing tenant; no action runs.
# - heavy: tenants t0..t99 are entitled first (signed marketplace events
#   `created` then `approved`; the script stops unless `GET /v1/tenants/t7`
#   then shows the entitlement active), then bench/lib.sh's heavy.lua:
#   each tenant cycles through 20 readings of spend_rate and spend_spike
#   that warn, intervene, refuse, lift the refusal and clear again (9 of
#   20 at `warn` or above), so tenants dispatch throttle, pause_jobs and
#   unthrottle, then hit their 300 s cooldowns. After the load, lines sum
#   the governor's /metrics (decisions by level, actions dispatched and
#   their results, states entered) and t7's first 1000 receipts by reason
#   and by what blocked an intervention (a cooldown or the budget).
#
# Actions: ACTIONS=live (the default) runs the spec's adapters: webhooks
# (throttle, unthrottle) POST to a third strict process on RECV_PORT
# (`GOVERNOR_WEBHOOK_URL`), and the `pause_jobs` command runs a stub
# `jobctl` (exit 0) put first on the governor's PATH. ACTIONS=log runs
# `--actions log` as earlier runs did (every action goes through the log
# adapter: recorded, no side effects).
#
# This machine's speed drifts by ±15% over minutes, so the targets are
# measured alternately (governor, strict, durable, bare, governor, ...) for ROUNDS
# rounds at every connection count, and each figure is the median of its
# rounds. While wrk runs, `perf stat -e task-clock -p PID` counts the
# target's CPU time over the same DURATION; divided by the requests wrk
# completed, it is the CPU µs per request of the server alone (wrk runs on
# the same cores).
#
# Prints, per mix and connection count, each target's signals/s, p50/p99,
# non-2xx answers and CPU µs per request, and on each baseline's row the
# governor's rate as a share of that baseline's at that equal connection
# count (`gov/this`); then each
# target's peak rate over the connection counts at which its median p99
# stayed within 10 ms and the governor's peak against each baseline's
# peak (and durable's against strict's); then the mix's `ledger verify`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64 128 256}"
THREADS="${THREADS:-2}"
TENANTS="${TENANTS:-100000}"
MIXES="${MIXES:-calm heavy}"
ACTIONS="${ACTIONS:-live}"
GOV_PORT="${GOV_PORT:-18080}"
BARE_PORT="${BARE_PORT:-18081}"
STRICT_PORT="${STRICT_PORT:-18082}"
RECV_PORT="${RECV_PORT:-18083}"
DURABLE_PORT="${DURABLE_PORT:-18084}"
P99_LIMIT_MS=10
MARKETPLACE_SECRET=bench-marketplace-secret

for mix in $MIXES; do
  case "$mix" in
    calm | heavy) ;;
    *) echo "unknown mix \`$mix\` in MIXES: expected calm and/or heavy" >&2; exit 2 ;;
  esac
done
case "$ACTIONS" in
  live | log) ;;
  *) echo "ACTIONS is \`$ACTIONS\`: expected live or log" >&2; exit 2 ;;
esac
if ! command -v perf >/dev/null; then
  echo "perf is needed to measure CPU per request" >&2
  exit 2
fi
cargo build --release --locked -p cost-guard-governor --quiet
cargo build --release --locked -p ggen-runtime --example bare --example strict --example durable \
  --example idle_tenants --quiet
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
pids=()
gov_pid=
cleanup() {
  for pid in "${pids[@]}" ${gov_pid:+"$gov_pid"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

"$BIN/examples/strict" "127.0.0.1:$STRICT_PORT" 2>/dev/null &
strict_pid=$!
pids+=("$strict_pid")
"$BIN/examples/bare" "127.0.0.1:$BARE_PORT" 2>/dev/null &
bare_pid=$!
pids+=("$bare_pid")
mkdir "$work/durable"
"$BIN/examples/durable" "127.0.0.1:$DURABLE_PORT" "$work/durable" 2>/dev/null &
durable_pid=$!
pids+=("$durable_pid")
gov_env=(GOVERNOR_AUTH_TOKEN=bench-token GOVERNOR_MARKETPLACE_SECRET="$MARKETPLACE_SECRET" RUST_LOG=warn)
if [ "$ACTIONS" = live ]; then
  "$BIN/examples/strict" "127.0.0.1:$RECV_PORT" 2>/dev/null &
  pids+=($!)
  mkdir "$work/bin"
  printf '#!/bin/sh\nexit 0\n' >"$work/bin/jobctl"
  chmod +x "$work/bin/jobctl"
  gov_env+=(GOVERNOR_WEBHOOK_URL="http://127.0.0.1:$RECV_PORT/v1/signals" PATH="$work/bin:$PATH")
  wait_port "$RECV_PORT"
fi
wait_port "$STRICT_PORT"
wait_port "$BARE_PORT"
wait_port "$DURABLE_PORT"

api() {
  curl -s -H "Authorization: Bearer bench-token" "http://127.0.0.1:$GOV_PORT$1"
}

# by_label FAMILY LABEL: the /metrics text on stdin's FAMILY series summed
# by the value of LABEL, as "value count, value count" (first seen first).
by_label() {
  sed -n "s/^$1{\(.*,\)\{0,1\}$2=\"\([^\"]*\)\"[^}]*} \([0-9.e+]*\)\$/\2 \3/p" |
    awk '!($1 in s) { order[++k] = $1 } { s[$1] += $2 }
      END { for (i = 1; i <= k; i++) printf "%s%s %.0f", (i > 1 ? ", " : ""), order[i], s[order[i]] }'
}

# counts: the lines on stdin counted, most frequent first, as "line count, line count".
counts() {
  sort | uniq -c | sort -rn | awk '{ printf "%s%s %d", (NR > 1 ? ", " : ""), $2, $1 }'
}

# row CONNS TARGET SUMMARY CPU RATIO: one line of the table.
row() {
  local rps p50 p99 err
  read -r rps p50 p99 err <<<"$3"
  printf '%-6s %-9s %12.0f %9.2f %9.2f %8s %11.2f %9s\n' "$1" "$2" "$rps" "$p50" "$p99" "$err" "$4" "$5"
}

# best PEAK SUMMARY: PEAK, or SUMMARY's rate if higher and its p99 within the limit.
best() {
  local rps p99
  read -r rps _ p99 _ <<<"$2"
  awk -v p="$1" -v r="$rps" -v l="$p99" -v m=$P99_LIMIT_MS 'BEGIN { print (l <= m && r > p) ? r : p }'
}

# percent A B: A as a share of B; "n/a" when either is 0 (no peak).
percent() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.0f%%", 100 * a / b; else printf "n/a" }'
}

for mix in $MIXES; do
  mkdir "$work/$mix"
  env "${gov_env[@]}" "$BIN/cost-guard-governor" serve --listen "127.0.0.1:$GOV_PORT" \
    --ledger "$work/$mix/ledger" --actions "$ACTIONS" --no-pubsub 2>"$work/$mix/governor.log" &
  gov_pid=$!
  if ! (wait_port "$GOV_PORT"); then
    cat "$work/$mix/governor.log" >&2
    exit 2
  fi
  script="$work/signals.lua"
  if [ "$mix" = heavy ]; then
    script="$work/heavy.lua"
    entitle "$GOV_PORT" "$MARKETPLACE_SECRET" 0 $((HEAVY_TENANTS - 1))
    t7="$(api /v1/tenants/t7)"
    if ! grep -q '"entitlement":"active"' <<<"$t7"; then
      echo "tenant t7 is not entitled after the marketplace events: $t7" >&2
      exit 2
    fi
  fi

  for c in $CONNECTIONS; do
    for _ in $(seq "$ROUNDS"); do
      load_cpu "$gov_pid" "$GOV_PORT" "$c" "$script" >>"$work/$mix/governor.$c"
      load_cpu "$strict_pid" "$STRICT_PORT" "$c" "$script" >>"$work/$mix/strict.$c"
      load_cpu "$durable_pid" "$DURABLE_PORT" "$c" "$script" >>"$work/$mix/durable.$c"
      load_cpu "$bare_pid" "$BARE_PORT" "$c" "$script" >>"$work/$mix/bare.$c"
    done
  done
  receipts="$(api /v1/ledger/verify)"
  if [ "$mix" = heavy ]; then
    metrics="$(curl -s "http://127.0.0.1:$GOV_PORT/metrics")"
    page="$(api "/v1/tenants/t7/receipts?limit=1000")"
    reasons="$({ grep -o '"reason":"[a-z_]*"' <<<"$page" || true; } | cut -d'"' -f4 | counts)"
    blocks="$({ grep -o '"block":{[^}]*}' <<<"$page" || true; } | { grep -o '"kind":"[a-z_]*"' || true; } |
      cut -d'"' -f4 | counts)"
  fi
  kill "$gov_pid"
  wait "$gov_pid" || true
  gov_pid=

  echo
  case "$mix" in
    calm) echo "mix calm: tenants t0..t999 (not entitled), spend_rate 0..44; actions $ACTIONS" ;;
    heavy) echo "mix heavy: $HEAVY_TENANTS entitled tenants cycling warn/intervene/refuse/clear; actions $ACTIONS" ;;
  esac
  printf '%-6s %-9s %12s %9s %9s %8s %11s %9s\n' conns target "signals/s" "p50 ms" "p99 ms" non-2xx "cpu us/req" "gov/this"
  gov_peak=0
  strict_peak=0
  durable_peak=0
  bare_peak=0
  for c in $CONNECTIONS; do
    g="$(summary "$mix/governor" "$c")"
    s="$(summary "$mix/strict" "$c")"
    d="$(summary "$mix/durable" "$c")"
    b="$(summary "$mix/bare" "$c")"
    row "$c" governor "$g" "$(cpu_summary "$mix/governor" "$c")" ""
    row "$c" strict "$s" "$(cpu_summary "$mix/strict" "$c")" "$(percent "${g%% *}" "${s%% *}")"
    row "$c" durable "$d" "$(cpu_summary "$mix/durable" "$c")" "$(percent "${g%% *}" "${d%% *}")"
    row "$c" bare "$b" "$(cpu_summary "$mix/bare" "$c")" "$(percent "${g%% *}" "${b%% *}")"
    gov_peak=$(best "$gov_peak" "$g")
    strict_peak=$(best "$strict_peak" "$s")
    durable_peak=$(best "$durable_peak" "$d")
    bare_peak=$(best "$bare_peak" "$b")
  done
  # A target with no connection count within the p99 limit has no peak: 0, ratio n/a.
  printf 'peak (p99 <= %d ms): governor %.0f signals/s, strict %.0f req/s, durable %.0f req/s, bare %.0f req/s: %s of the strict peak (%s of the durable one, %s of the bare one); durable %s of strict\n' \
    "$P99_LIMIT_MS" "$gov_peak" "$strict_peak" "$durable_peak" "$bare_peak" "$(percent "$gov_peak" "$strict_peak")" \
    "$(percent "$gov_peak" "$durable_peak")" "$(percent "$gov_peak" "$bare_peak")" "$(percent "$durable_peak" "$strict_peak")"
  echo "ledger     $receipts"
  if [ "$mix" = heavy ]; then
    echo "decisions  $(by_label governor_decisions_total level <<<"$metrics")"
    echo "actions    dispatched: $(by_label governor_actions_total action <<<"$metrics"); results: $(by_label governor_action_results_total outcome <<<"$metrics")"
    echo "entered    $(by_label governor_transitions_total to <<<"$metrics")"
    echo "t7 reasons $reasons; blocked by: ${blocks:-nothing}"
  fi
done

echo
"$BIN/examples/idle_tenants" "$TENANTS"
