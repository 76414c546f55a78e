#!/usr/bin/env bash
# Decision throughput and restart cost of a generated governor on the file
# ledger (group commit), release build:
#   1. `replay` of N recorded signals (default 1,000,000) over T tenants into a
#      fresh ledger: signals/s end to end (parse, policy + FSM, canonical
#      receipt, SHA-256 chain, framed append, fdatasync batches);
#   2. `ledger verify` of the resulting ledger: receipts/s;
#   3. a second `replay` of a 1-line file against that ledger: the time to open
#      it and recover every tenant (restart cost), with and without its
#      checkpoint.
#
#   bench/replay.sh [N] [T]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
N="${1:-1000000}"
T="${2:-1000}"
cargo build --release --locked -p cost-guard-governor --quiet
BIN="$CARGO_TARGET_DIR/release/cost-guard-governor"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

bench/replay-signals.py "$N" "$T" >"$work/signals.jsonl"

now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.3f", ns / 1e9 }'; }
per_s() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%.0f", n / (ns / 1e9) }'; }

start=$(now); "$BIN" replay --signals "$work/signals.jsonl" --ledger "$work/ledger" >/dev/null; end=$(now)
replay_ns=$((end - start))
receipts=$(find "$work/ledger" -name '*.seg' -printf '%s\n' | awk '{ s += $1 } END { print s }')
echo "replay:   $N signals, $T tenants in $(secs $replay_ns) s = $(per_s "$N" $replay_ns) signals/s (segments: $((receipts / 1048576)) MiB)"

start=$(now); out=$("$BIN" ledger verify --ledger "$work/ledger"); end=$(now)
verify_ns=$((end - start))
count=$(echo "$out" | awk '{ print $2 }')
echo "verify:   $out in $(secs $verify_ns) s = $(per_s "$count" $verify_ns) receipts/s"

echo '{"tenant":"t0","signal":"spend_rate","value":1,"at":"2026-01-02T00:00:00Z"}' >"$work/one.jsonl"
start=$(now); "$BIN" replay --signals "$work/one.jsonl" --ledger "$work/ledger" >/dev/null; end=$(now)
echo "restart:  open + recover $count receipts with checkpoint: $(secs $((end - start))) s"
rm -f "$work/ledger/CHECKPOINT"
start=$(now); "$BIN" replay --signals "$work/one.jsonl" --ledger "$work/ledger" >/dev/null; end=$(now)
echo "restart:  open + recover $count receipts without checkpoint (full replay): $(secs $((end - start))) s"
