#!/usr/bin/env bash
# Generation throughput: N copies of specs/cost_guard.json (distinct sku ids)
# in a temp project; times a fresh `ggen build` (write), `ggen build --check`
# of the unchanged tree, and a no-op rebuild. Release build; best of RUNS.
#
#   bench/gen.sh [N...]          (default: 10 100 400; RUNS=3)
#
# Prints one line per N: seconds and specs/s for build, check and rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p ggen --quiet
GGEN="$CARGO_TARGET_DIR/release/ggen"
RUNS="${RUNS:-3}"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10 100 400)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

now() { date +%s%N; }
# best_of CMD...: the fastest of $RUNS runs, in nanoseconds.
best_of() {
  local best=0 start end
  for _ in $(seq "$RUNS"); do
    start=$(now); "$@" >/dev/null 2>&1 || true; end=$(now)
    if [ "$best" -eq 0 ] || [ $((end - start)) -lt "$best" ]; then best=$((end - start)); fi
  done
  echo "$best"
}
rate() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%8.3f s %8.0f specs/s", ns / 1e9, n / (ns / 1e9) }'; }

printf '%6s  %-28s  %-28s  %-28s\n' N "build (fresh)" "check (unchanged)" "rebuild (no-op)"
for n in "${SIZES[@]}"; do
  project="$work/p$n"
  mkdir -p "$project/specs"
  printf 'version = 1\nspecs = ["specs/*.json"]\nout_dir = "generated"\n' >"$project/ggen.toml"
  for i in $(seq -w 1 "$n"); do
    sed "s/\"id\": \"cost_guard\"/\"id\": \"cost_guard_$i\"/" specs/cost_guard.json >"$project/specs/cost_guard_$i.json"
  done
  build=$(best_of bash -c "rm -rf '$project/generated' && '$GGEN' --config '$project/ggen.toml' build")
  "$GGEN" --config "$project/ggen.toml" build >/dev/null 2>&1
  check=$(best_of "$GGEN" --config "$project/ggen.toml" build --check)
  rebuild=$(best_of "$GGEN" --config "$project/ggen.toml" build)
  printf '%6s  %-28s  %-28s  %-28s\n' "$n" "$(rate "$n" "$build")" "$(rate "$n" "$check")" "$(rate "$n" "$rebuild")"
done
