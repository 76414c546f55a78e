#!/usr/bin/env bash
# Shipping figures (issue 13): the time to bundle the repository's 3 specs
# (plain, --check, and --verify with dependencies already compiled), and the
# time to compile one generated governor crate once the runtime is built
# (debug and release, after touching its sources). Release ggen; best of
# RUNS for the fast ones, one timed run after a warm-up for the builds.
#
#   bench/bundle.sh            (RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p ggen --quiet
GGEN="$CARGO_TARGET_DIR/release/ggen"
RUNS="${RUNS:-5}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
best_of() {
  local best=0 start end
  for _ in $(seq "$RUNS"); do
    start=$(now); "$@" >/dev/null 2>&1; end=$(now)
    if [ "$best" -eq 0 ] || [ $((end - start)) -lt "$best" ]; then best=$((end - start)); fi
  done
  echo $((best / 1000000))
}

echo "bundle, 3 specs:          $(best_of "$GGEN" bundle --out "$out/plain") ms"
echo "bundle --check, 3 specs:  $(best_of "$GGEN" bundle --check "$out/plain") ms"
# --verify: a warm-up run compiles the dependencies into the shared target.
"$GGEN" bundle --verify --out "$out/warm" >/dev/null 2>&1
start=$(now); "$GGEN" bundle --verify --out "$out/verified" >/dev/null 2>&1; end=$(now)
echo "bundle --verify, 3 specs: $(ms "$start" "$end") ms (dependencies compiled)"
for profile in dev release; do
  flag=(); [ "$profile" = release ] && flag=(--release)
  cargo build --locked --quiet "${flag[@]}" -p cost-guard-governor
  touch generated/cost_guard/src/lib.rs
  start=$(now); cargo build --locked --quiet "${flag[@]}" -p cost-guard-governor; end=$(now)
  echo "cost-guard-governor, $profile build of the crate alone: $(ms "$start" "$end") ms"
done
