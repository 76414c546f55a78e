# shellcheck shell=bash
# Shared by the benchmarks that load a server with wrk (sourced from the
# project root, after `work`, `THREADS` and `DURATION` are set; through
# bench/governor.sh for the PostgreSQL ones): wrk itself (installed when
# missing), the wrk scripts of authenticated signals (the calm mix,
# signals.lua, and the decision-heavy mix, heavy.lua), entitling tenants
# through signed marketplace events, starting and stopping the server
# under test, and the helpers that run wrk (optionally under `perf stat`)
# and summarise rounds.

if ! command -v wrk >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=600 install -y wrk >/dev/null
fi

# Varied tenants (t0..t999 per wrk thread), values below `warn` so the load
# is steady-state decisions, every request authenticated.
# shellcheck disable=SC2154 # work is set by the sourcing script
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

# The decision-heavy mix: HEAVY_TENANTS tenants (t0..t99, which must be
# entitled first: see `entitle`), split between wrk's THREADS threads so
# each tenant's readings come from one thread, in order (up to a few
# requests of one tenant in flight at once at high connection counts).
# Every tenant runs through the same 20-reading cycle over both signals of
# specs/cost_guard.json (spend_rate: warn 50, intervene 100, refuse 500,
# clear 40, dwell 2; spend_spike: warn 30, intervene 80): calm, warn,
# intervene (throttle; then throttle + pause_jobs on the spike), refuse,
# refusal lifted, not yet clear (45), then three clear readings (recovered:
# stable, unthrottle dispatched) and calm again. 9 readings of 20 are at
# warn or above. Once a tenant's throttle and pause_jobs ran, their 300 s
# cooldown blocks every later intervention of the run (receipted as
# blocked), so dispatches are a few per tenant and decisions the bulk; the
# 6-per-hour budget cannot be reached within one cooldown.
HEAVY_TENANTS=100
cat >"$work/heavy.lua" <<LUA
local threads = ${THREADS}
local tenants = ${HEAVY_TENANTS}
LUA
cat >>"$work/heavy.lua" <<'LUA'
local token = os.getenv("GOVERNOR_AUTH_TOKEN")
local cycle = {
  { "spend_rate", 10 }, { "spend_spike", 5 }, { "spend_rate", 30 },
  { "spend_rate", 55 }, { "spend_spike", 35 }, { "spend_rate", 75 },
  { "spend_rate", 110 }, { "spend_spike", 85 }, { "spend_rate", 140 },
  { "spend_rate", 260 }, { "spend_rate", 520 }, { "spend_rate", 180 },
  { "spend_spike", 20 }, { "spend_rate", 45 }, { "spend_rate", 35 },
  { "spend_rate", 20 }, { "spend_spike", 10 }, { "spend_rate", 5 },
  { "spend_spike", 0 }, { "spend_rate", 0 },
}
local created = 0
function setup(thread)
  thread:set("id", created)
  created = created + 1
end
local share, n = 0, 0
function init(args)
  -- This thread's tenants: id, id + threads, id + 2 * threads, ...
  share = math.floor((tenants - id + threads - 1) / threads)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
request = function()
  local k = n % share
  local step = cycle[math.floor(n / share) % #cycle + 1]
  n = n + 1
  local body = string.format('{"tenant":"t%d","signal":"%s","value":%d}', id + k * threads, step[1], step[2])
  return wrk.format(nil, "/v1/signals", nil, body)
end
LUA

# entitle PORT SECRET FIRST LAST: entitles tenants tFIRST..tLAST of the
# governor on PORT with marketplace events `created` then `approved`, each
# signed `X-Ggen-Signature: t=<unix secs>,v1=<hex HMAC-SHA256 of "<t>." ‖
# body>` keyed by SECRET (its GOVERNOR_MARKETPLACE_SECRET); exits on any
# answer but 204.
entitle() {
  local i event body t sig status
  for i in $(seq "$3" "$4"); do
    for event in created approved; do
      body=$(printf '{"tenant":"t%d","event":"%s","id":"bench-%s-t%d"}' "$i" "$event" "$event" "$i")
      t=$(date +%s)
      sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$2" | awk '{ print $NF }')
      status=$(curl -s -o "$work/entitle.out" -w '%{http_code}' -X POST \
        -H "Content-Type: application/json" -H "X-Ggen-Signature: t=$t,v1=$sig" \
        --data-binary "$body" "http://127.0.0.1:$1/v1/marketplace/events")
      if [ "$status" != 204 ]; then
        echo "entitling t$i ($event) failed: HTTP $status $(cat "$work/entitle.out")" >&2
        exit 2
      fi
    done
  done
}

# wait_port PORT: until something answers HTTP there (10 s at most).
wait_port() {
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "nothing listening on port $1" >&2
  exit 2
}

# to_ms LATENCY: wrk's "812.00us" / "1.21ms" / "1.02s" in milliseconds.
to_ms() {
  awk -v t="$1" 'BEGIN {
    if (t ~ /us$/) { sub(/us$/, "", t); print t / 1000 }
    else if (t ~ /ms$/) { sub(/ms$/, "", t); print t + 0 }
    else if (t ~ /s$/) { sub(/s$/, "", t); print t * 1000 }
    else print "nan" }'
}

# load PORT CONNECTIONS [WRK_THREADS [SCRIPT]]: runs wrk (THREADS threads
# and signals.lua unless given), prints "rps p50_ms p99_ms non2xx requests".
load() {
  local out rps p50 p99 errors requests
  out="$(GOVERNOR_AUTH_TOKEN=bench-token wrk -t"${3:-$THREADS}" -c"$2" -d"$DURATION" --latency \
    -s "${4:-$work/signals.lua}" "http://127.0.0.1:$1")"
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  errors=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  echo "${rps:-0} $(to_ms "${p50:-?}") $(to_ms "${p99:-?}") ${errors:-0} ${requests:-0}"
}

# warm_up PORT CONNECTIONS SCRIPT: 2 s of wrk (THREADS threads) running
# SCRIPT, its output dropped, before a measured load.
warm_up() {
  wrk -t"$THREADS" -c"$2" -d2s -s "$3" "http://127.0.0.1:$1" >/dev/null
}

# load_cpu PID PORT CONNECTIONS [SCRIPT]: `load` (THREADS threads) while
# `perf stat` counts the task-clock of process PID (all its threads) over
# DURATION; prints load's five fields, then PID's CPU time per completed
# request in µs (wrk runs on the same cores: this is the server's own cost).
load_cpu() {
  local out ms
  perf stat -e task-clock -x, -o "$work/perf.out" -p "$1" -- sleep "$DURATION" &
  local perf_pid=$!
  out="$(load "$2" "$3" "$THREADS" "${4:-$work/signals.lua}")"
  if ! wait "$perf_pid"; then
    echo "perf stat -p $1 failed: $(cat "$work/perf.out")" >&2
    exit 2
  fi
  ms=$(awk -F, '$3 ~ /^task-clock/ { print $1 }' "$work/perf.out")
  echo "$out $(awk -v ms="${ms:-0}" -v n="${out##* }" 'BEGIN { printf "%.2f", (n > 0 ? 1000 * ms / n : 0) }')"
}

# start_governor BIN PORT: BIN (a cost-guard governor) serving on PORT
# over a fresh ledger in $work/ledger, actions through the log adapter, no
# Pub/Sub; its pid in gov_pid. Exits with its log if it never answers.
start_governor() {
  rm -rf "$work/ledger"
  GOVERNOR_MARKETPLACE_SECRET=bench RUST_LOG=warn "$1" serve --listen "127.0.0.1:$2" \
    --ledger "$work/ledger" --actions log --no-pubsub >/dev/null 2>"$work/governor.log" &
  gov_pid=$!
  if ! (wait_port "$2"); then
    cat "$work/governor.log" >&2
    exit 2
  fi
}

# stop_governor: stops the governor start_governor started, if any.
stop_governor() {
  if [ -n "${gov_pid:-}" ]; then
    kill "$gov_pid" 2>/dev/null || true
    wait "$gov_pid" 2>/dev/null || true
  fi
  gov_pid=
}

# start_target BIN|strict|durable PORT: start_governor BIN PORT, or one of
# the baseline examples of bench/http.sh (built first) on PORT (durable's
# file in $work); the server's pid in target_pid either way. stop_target
# stops it.
strict_pid=
start_target() {
  if [ "$1" = strict ] || [ "$1" = durable ]; then
    cargo build --release --locked -p ggen-runtime --example "$1" --quiet
    "${CARGO_TARGET_DIR:-target}/release/examples/$1" "127.0.0.1:$2" "$work" >/dev/null 2>&1 &
    strict_pid=$!
    target_pid=$strict_pid
    wait_port "$2"
  else
    start_governor "$(realpath "$1")" "$2"
    target_pid=$gov_pid
  fi
}

stop_target() {
  stop_governor
  if [ -n "$strict_pid" ]; then
    kill "$strict_pid" 2>/dev/null || true
    wait "$strict_pid" 2>/dev/null || true
  fi
  strict_pid=
}

# median: the median of the numbers on stdin.
median() {
  sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# summary TARGET C: "rps p50 p99 non2xx" as medians over the rounds in
# $work/TARGET.C (errors summed).
summary() {
  local f="$work/$1.$2"
  echo "$(cut -d' ' -f1 "$f" | median) $(cut -d' ' -f2 "$f" | median) $(cut -d' ' -f3 "$f" | median)" \
    "$(awk '{ s += $4 } END { print s + 0 }' "$f")"
}

# cpu_summary TARGET C: the median over the rounds in $work/TARGET.C of
# load_cpu's CPU µs per request (its sixth field).
cpu_summary() {
  cut -d' ' -f6 "$work/$1.$2" | median
}
