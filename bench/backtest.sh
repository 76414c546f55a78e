#!/usr/bin/env bash
# `ggen backtest` throughput and memory (release build, in memory, no
# fsync): N recorded cost_guard signals over T tenants (bench/gen-signals.py,
# a week of readings with bursts past every threshold) through cost_guard
# and a stricter cost_guard (spend_rate refuse 500 → 300), both specs
# evaluated for every input.
#
#   bench/backtest.sh [N] [T]      (default 1,000,000 signals, 1,000 tenants)
#
# Prints the wall time, inputs/s, spec evaluations/s (2 per input: the
# target is per spec evaluated) and the peak RSS; then the same tenants with
# twice the signals, to show memory is bounded by tenants, not by signals.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
N="${1:-1000000}"
T="${2:-1000}"
cargo build --release --locked -p ggen --quiet
BIN="$CARGO_TARGET_DIR/release/ggen"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed 's/"warn": 50, "intervene": 100, "refuse": 500, "clear": 40,/"warn": 50, "intervene": 100, "refuse": 300, "clear": 40,/' \
  specs/cost_guard.json >"$work/new.json"
grep -q '"refuse": 300' "$work/new.json" || { echo "the stricter spec was not made" >&2; exit 2; }

run() { # run SIGNALS
  local n="$1"
  python3 bench/gen-signals.py --tenants "$T" --signals "$n" >"$work/signals.jsonl"
  local lines
  lines=$(wc -l <"$work/signals.jsonl")
  /usr/bin/time -f "%e %M" -o "$work/time" \
    "$BIN" --format json backtest --old specs/cost_guard.json --new "$work/new.json" \
    --signals "$work/signals.jsonl" >"$work/report.json"
  read -r secs kib <"$work/time"
  python3 - "$lines" "$secs" "$kib" "$work/report.json" <<'PY'
import json, sys
lines, secs, kib = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
r = json.load(open(sys.argv[4]))
print(f"{lines:>9} inputs, {r['tenants']} tenants: {secs:.2f} s, "
      f"{lines / secs:,.0f} inputs/s, {2 * lines / secs:,.0f} spec evaluations/s, "
      f"peak RSS {kib / 1024:.1f} MiB; refusals {r['refusals']['old']} -> {r['refusals']['new']}, "
      f"diverged {r['diverged']}, bad {r['bad_inputs']}")
PY
}

echo "== ggen backtest, $T tenants ($(nproc) cores, $(uname -m))"
run "$N"
run "$((2 * N))"
