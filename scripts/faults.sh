#!/usr/bin/env bash
# The fault suite (issue #7): tampering, crashes and hostile input, each case checked through
# `arca verify`, `arca get` and the mount. Prints one table: case, tries, detected, bytes lost,
# corrupt bytes served. CI runs the short variant inside scripts/test.sh; this script runs it on
# its own, and `--long` runs many tries per case.
#
#   bash scripts/faults.sh          # short: 1 try per tamper case, 4 crash restarts
#   bash scripts/faults.sh --long   # 20 tries per tamper case, 200 crash restarts
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
# deps.sh installs the packages named in its arguments, which a sourced script inherits.
set --
. scripts/deps.sh
if [ "$mode" = "--long" ]; then
  export ARCA_FAULT_TRIES=${ARCA_FAULT_TRIES:-20} ARCA_CRASH_TRIES=${ARCA_CRASH_TRIES:-200}
  export ARCA_LOAD_SECS=${ARCA_LOAD_SECS:-60}
fi
cargo build --release --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release -p arca-tests --test e2e -- faults:: --nocapture --test-threads=1 >"$log" 2>&1 || status=$?
grep -E '^test .*(FAILED|panicked)|^thread .* panicked' "$log" >&2 || true
awk -F'|' 'BEGIN { printf "%-52s %6s %9s %11s %22s\n", "case", "tries", "detected", "bytes lost", "corrupt bytes served" }
  /FAULT\|/ { sub(/.*FAULT\|/, "FAULT|"); split($0, f, "|"); printf "%-52s %6s %9s %11s %22s\n", f[2], f[3], f[4], f[5], f[6] }' "$log"
[ "$status" -eq 0 ] || { echo "faults: some case failed (see above)" >&2; exit "$status"; }
