#!/usr/bin/env bash
# Issue #8's attack table: every attack of a hostile insider, tried as the attacker would, with
# its outcome (refused / detected and named / not exploitable) and whether state stayed
# unchanged. CI runs the same test inside scripts/test.sh; this prints the table on its own.
#
#   bash scripts/insider.sh                 # every attack
#   ARCA_INSIDER_ONLY=store bash scripts/insider.sh   # those whose name contains "store"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release -p arca-tests --test e2e -- insider:: --nocapture --test-threads=1 >"$log" 2>&1 || status=$?
grep -E '^test .*(FAILED|panicked)|^thread .* panicked' "$log" >&2 || true
awk -F'|' 'BEGIN { printf "%-32s %-68s %-20s %s\n", "foothold", "attack", "outcome", "state" }
  /ATTACK\|/ { sub(/.*ATTACK\|/, "ATTACK|"); split($0, f, "|"); printf "%-32s %-68s %-20s %s\n", f[2], f[3], f[4], f[5] }' "$log"
[ "$status" -eq 0 ] || { echo "insider: some attack was not stopped (see above)" >&2; exit "$status"; }
