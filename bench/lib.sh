# shellcheck shell=bash
# Shared by bench/http.sh and bench/pg.sh (sourced, after `work`,
# `THREADS` and `DURATION` are set): the wrk script of authenticated,
# steady-state signals and the helpers that run wrk and summarise rounds.

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
