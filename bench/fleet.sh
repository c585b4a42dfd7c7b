#!/usr/bin/env bash
# Fleet benchmark (issue #10, items 2, 4 and 7), all in one run against a real SeaweedFS cluster
# (scripts/seaweedfs.sh: 1 master, 3 volume servers with replication 001, 2 filers/gateways) and
# four arcad hosts (own state, socket and FUSE mount each):
#   propagation  20 production changes (10 promotions, 10 rollbacks, alternating) on one host:
#                time from its acknowledgement to the `production` link flipping on the 3 others
#   cold read    a big file read at once by 3 hosts that hold none of its chunks: throughput,
#                bytes fetched / bytes read, ranged GETs per GiB, and the ratio to a plain
#                download of the same pack objects from the same store (alone, and 3 at once)
#   dedup        v2 of a file with four 5 MiB regions changed: bytes uploaded / bytes changed
# Usage: bench/fleet.sh [BIG_MIB [DEDUP_MIB]]   (default 1024 and 512; root on Debian: it
# creates a test user and drops the page cache)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seaweedfs.sh install
export ARCA_BENCH_FLEET_MIB=${1:-1024} ARCA_BENCH_DEDUP_MIB=${2:-512}
log=$(mktemp /var/tmp/arca-bench-fleet.XXXXXX)
cargo test --release -p arca-tests --test e2e bench_fleet -- --ignored --nocapture --test-threads 1 2>&1 | tee "$log" | grep -E '^(BENCH|fleet:)' || true
if ! grep -q "test result: ok. 1 passed" "$log"; then
  echo "bench/fleet.sh: the benchmark failed; its output is in $log" >&2
  exit 1
fi
rm -f "$log"
