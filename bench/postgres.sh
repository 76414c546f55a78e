# shellcheck shell=bash
# Shared by bench/pg.sh and bench/replicas.sh (sourced from the project
# root, after CARGO_TARGET_DIR, THREADS and DURATION are set): wrk and a
# release cost-guard-governor (`BIN`), a work folder removed on exit with
# every process in `pids`, a throwaway PostgreSQL server in it (`url`),
# and bench/lib.sh's helpers.

if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null
fi
cargo build --release --locked -p cost-guard-governor --quiet
# shellcheck disable=SC2034 # read by the sourcing script
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/postgres stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck disable=SC2034 # read by the sourcing script
url="$(scripts/postgres start "$work/pg" 2>/dev/null)"

# shellcheck source=bench/lib.sh
source bench/lib.sh
