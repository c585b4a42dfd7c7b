#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests against the real
# binaries. Run as root on Debian (the e2e tests create local users and mount FUSE filesystems).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# One profile for everything (RocksDB's C++ build is shared); the target directory is set in
# .cargo/config.toml, outside the clone, so later runs reuse it.
cargo fmt --all -- --check
cargo build --release --workspace --bins
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
