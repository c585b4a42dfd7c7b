#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests against the real
# binaries. Run as root on Debian (the e2e tests create local users and mount FUSE filesystems).
set -euo pipefail
cd "$(dirname "$0")/.."
# systemd for systemd-analyze; man-db and groff-base render the man pages with warnings on; zsh
# and fish parse the completions (tests/tests/e2e/ecosystem.rs); socat bridges the API fuzzer's
# TCP to arcad's socket and curl fetches the OpenAPI document (tests/tests/e2e/contract.rs);
# openssl makes the certificates of the fleet's HTTPS test (tests/tests/e2e/fleet.rs); iproute2
# (ip, tc) and nftables make the network namespaces, slow links and cut links of
# tests/tests/e2e/fleet_netns.rs.
. scripts/deps.sh systemd man-db groff-base zsh fish socat curl openssl iproute2 nftables
# One profile for everything (RocksDB's C++ build is shared); the target directory is set in
# .cargo/config.toml, outside the clone, so later runs reuse it.
cargo fmt --all -- --check
# The systemd unit: systemd-analyze verify, clean of warnings, in a staged root.
bash scripts/check-units.sh
# The fleet's tests run against a real SeaweedFS (pinned, from PyPI): installed once here.
bash scripts/seaweedfs.sh install
# The contract test's validator and API fuzzer (pinned with hashes, from PyPI): installed once here.
bash scripts/contract.sh install
cargo build --release --workspace --bins
# The Debian package: built with cargo-deb (pinned; installed on first use), then lintian, a
# dpkg --root install into an empty root, dpkg -L and systemd-analyze verify --root.
bash scripts/check-package.sh
cargo clippy --release --workspace --all-targets -- -D warnings
# --all-targets: unit and integration tests (the crates have no doc tests). The output is kept so
# the totals can be summed into one closing line.
log=$(mktemp)
# The fleet tests start SeaweedFS on fixed ports from 18000 up (gRPC ports 10000 above them):
# the kernel must not hand one of them to an outgoing connection meanwhile (a CI run found a
# store that never started, with its ports inside the ephemeral range, where the tests' many
# short S3 connections leave sockets in TIME_WAIT). Reserved ports can still be bound by name;
# the previous setting is put back at exit.
reserved=$(cat /proc/sys/net/ipv4/ip_local_reserved_ports)
echo 18000-35999 >/proc/sys/net/ipv4/ip_local_reserved_ports
trap 'rm -f "$log"; echo "$reserved" >/proc/sys/net/ipv4/ip_local_reserved_ports' EXIT
cargo test --release --workspace --all-targets 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "all tests: %d passed, %d failed, %d ignored\n", p, f, i; if (p == 0) exit 1 }' "$log"
