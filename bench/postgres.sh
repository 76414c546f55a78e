# shellcheck shell=bash
# Shared by bench/pg.sh and bench/replicas.sh (sourced from the project
# root, after CARGO_TARGET_DIR, THREADS and DURATION are set): wrk and a
# release cost-guard-governor (`BIN`), a work folder removed on exit with
# every process in `pids`, a throwaway PostgreSQL server in it (`url`),
# and bench/lib.sh's helpers.

# shellcheck source=bench/governor.sh
source bench/governor.sh
cleanup_extra() {
  scripts/postgres stop "$work/pg" >/dev/null 2>&1 || true
}
# shellcheck disable=SC2034 # read by the sourcing script
url="$(scripts/postgres start "$work/pg" 2>/dev/null)"
