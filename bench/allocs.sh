#!/usr/bin/env bash
# Heap allocations per signal of governor binaries: uprobes on the
# allocator's entry points (mimalloc's `mi_malloc_aligned`,
# `mi_zalloc_aligned` and `mi_realloc_aligned`, which the Rust global
# allocator calls) counted by `perf stat` while wrk sends DURATION of the
# calm mix of bench/http.sh on CONNECTIONS connections; the count divided by
# the requests wrk completed. Uprobes slow every allocation a thousandfold:
# the rate is meaningless, the count per request is exact. Needs root (perf
# probe). With STACKS=1, also records the call stacks of the allocations
# and prints the sites, per request, most frequent first.
#
#   bench/allocs.sh BIN [BIN ...]      (DURATION=3s CONNECTIONS=8 STACKS=0)
set -euo pipefail
DURATION="${DURATION:-3s}"
CONNECTIONS="${CONNECTIONS:-8}"
STACKS="${STACKS:-0}"
THREADS=1
PORT="${PORT:-18091}"
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
group="ggen_allocs_$$"
trap 'stop_governor; perf probe -q -d "$group:*" 2>/dev/null || true; rm -rf "$work"' EXIT
export GOVERNOR_AUTH_TOKEN=bench-token

for bin in "$@"; do
  bin="$(realpath "$bin")"
  for fn in mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned; do
    perf probe -q -x "$bin" --add "$group:${fn}_$$=$fn"
  done
  start_governor "$bin" "$PORT"
  wrk -t1 -c"$CONNECTIONS" -d1s -s "$work/signals.lua" "http://127.0.0.1:$PORT" >/dev/null
  seconds="${DURATION%s}"
  if [ "$STACKS" = 1 ]; then
    perf record -q -e "$group:*" --call-graph dwarf,8192 -p "$gov_pid" -o "$work/perf.data" \
      -- sleep "$seconds" >/dev/null 2>&1 &
  else
    perf stat -e "$group:*" -x, -o "$work/perf.out" -p "$gov_pid" -- sleep "$seconds" &
  fi
  perf_pid=$!
  requests="$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$work/signals.lua" "http://127.0.0.1:$PORT" |
    awk '/requests in/ { print $1 }')"
  wait "$perf_pid"
  stop_governor
  perf probe -q -d "$group:*"
  if [ "$STACKS" = 1 ]; then
    # The innermost frame of the project's or its dependencies' code above
    # the allocator and the standard library's containers (inlined frames
    # included). perf may drop samples: the shares are approximate.
    skip='^(mi_|_mi_|__rust_|alloc::|<alloc::|core::|<core::|std::|<std::|\[unknown\]|'
    skip+='(re)?alloc(_impl.*|ate.*)?$|box_new|exchange_malloc|with_capacity|try_allocate|'
    skip+='(do_)?reserve|(finish_)?grow|from_elem|clone|to_vec|to_owned|new<|pin<|push|extend|'
    skip+='(try_)?insert<|spec_|from_iter|collect|copy_from_slice|to_string|format|write_)'
    perf script -i "$work/perf.data" -F ip,sym 2>/dev/null |
      awk -v n="$requests" -v skip="$skip" '
        /^$/ { if (site != "") count[site]++; site = ""; next }
        site == "" && $2 !~ skip { site = substr(substr($0, index($0, $2)), 1, 110) }
        END { for (s in count) printf "%6.2f %s\n", count[s] / n, s }' |
      sort -rn | head -30
    echo "$bin: $requests signals (sites above, allocations per signal)"
  else
    awk -F, -v n="$requests" -v bin="$bin" '$3 ~ /ggen_allocs/ { s += $1 }
      END { printf "%s: %d signals, %.1f allocations per signal\n", bin, n, s / n }' "$work/perf.out"
  fi
done
