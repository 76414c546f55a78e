#!/usr/bin/env bash
# Restart cost of two governor binaries, paired: OLD writes one ledger of N
# recorded signals over T tenants (the load of bench/replay.sh), then OLD and
# NEW alternately open and recover a fresh copy of it (`replay` of one line:
# open, recover, append, close), ROUNDS times, with its checkpoint and with
# the checkpoint removed (every record replayed). Build the two release
# binaries first (e.g. with `git worktree` at each commit).
#
#   bench/restart-ab.sh OLD NEW [N] [T]      (ROUNDS=4)
set -euo pipefail
OLD="$(realpath "$1")"
NEW="$(realpath "$2")"
N="${3:-1000000}"
T="${4:-1000}"
ROUNDS="${ROUNDS:-4}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$(dirname "$0")/replay-signals.py" "$N" "$T" >"$work/signals.jsonl"
"$OLD" replay --signals "$work/signals.jsonl" --ledger "$work/ledger" >/dev/null
echo '{"tenant":"t0","signal":"spend_rate","value":1,"at":"2026-01-02T00:00:00Z"}' >"$work/one.jsonl"
seconds() {
  local start end
  start=$(date +%s%N)
  "$1" replay --signals "$work/one.jsonl" --ledger "$2" >/dev/null
  end=$(date +%s%N)
  awk -v ns=$((end - start)) 'BEGIN { printf "%.3f", ns / 1e9 }'
}
for mode in checkpoint none; do
  for round in $(seq "$ROUNDS"); do
    for which in old new; do
      bin="$OLD"
      [ "$which" = new ] && bin="$NEW"
      rm -rf "$work/copy"
      cp -a "$work/ledger" "$work/copy"
      [ "$mode" = none ] && rm -f "$work/copy/CHECKPOINT"
      sync
      echo "$mode round $round $which: $(seconds "$bin" "$work/copy") s"
    done
  done
done
