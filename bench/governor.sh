# shellcheck shell=bash
# Shared by the benchmarks that drive a release cost-guard-governor over
# HTTP (sourced from the project root, after CARGO_TARGET_DIR, THREADS and
# DURATION are set): the release binary (`BIN`), a work folder
# removed on exit with every process in `pids` (and whatever a
# `cleanup_extra` function the sourcing script defines stops), and
# bench/lib.sh's helpers (wrk among them).

cargo build --release --locked -p cost-guard-governor --quiet
# shellcheck disable=SC2034 # read by the sourcing script
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh
