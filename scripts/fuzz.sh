#!/usr/bin/env bash
# Runs libFuzzer on every decoder target in fuzz/ for a fixed time each (issue #7) and prints one
# line per target: runs, coverage, corpus size (after `cargo fuzz cmin`), and whether it found a
# crash. New inputs land in fuzz/corpus/<target>/, which CI replays on stable; a crash is saved
# under fuzz/artifacts/<target>/ and fails the script.
#
#   bash scripts/fuzz.sh                 # every target, 600 s each
#   bash scripts/fuzz.sh 60 config       # one target, 60 s
#
# Targets run side by side, one per core (ARCA_FUZZ_JOBS overrides); each gets its full time.
#
# Needs nightly Rust and cargo-fuzz; this script installs both if missing.
#
# Why ROCKSDB_LIB_DIR: the fuzz build sets sanitizer RUSTFLAGS, which makes cargo rebuild every
# dependency, RocksDB's C++ included (well over 40 minutes on 2 cores). No target reaches RocksDB,
# so the fuzz binaries link the static library the normal release build already made; the Rust
# code under test is still instrumented and built with AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
set --
. scripts/deps.sh
command -v rustup >/dev/null || { echo "fuzz: rustup is needed for a nightly toolchain" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
((${#targets[@]})) || mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
((${#targets[@]})) || { echo "fuzz: no targets (cargo fuzz list failed?)" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-/var/tmp/arca-target}
cargo build --release -p arca-daemon --lib
lib=$(ls -t "$target_dir"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
[ -n "$lib" ] || { echo "fuzz: no librocksdb.a under $target_dir/release/build" >&2; exit 1; }
export ROCKSDB_LIB_DIR=$(dirname "$lib") ROCKSDB_STATIC=1

cd fuzz
cargo +nightly fuzz build -O
jobs=${ARCA_FUZZ_JOBS:-$(nproc)}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: ARCA_FUZZ_JOBS must be a positive number" >&2; exit 1; }
results=$(mktemp -d)
# Fuzzers still running when the script ends early (Ctrl-C, an error) are stopped first.
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$results"' EXIT
one() { # target: runs it, writes its table line to $results/<target>
  local t=$1 log=$results/$1.log res=ok runs cov
  mkdir -p "corpus/$t"
  # -rss_limit_mb: a decoder must not balloon on hostile input either.
  cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1 || res="CRASH (see fuzz/artifacts/$t)"
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo '?')
  printf '%-18s %8s %12s %10s %s\n' "$t" "$secs" "$runs" "$cov" "$res" >"$results/$t"
}
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  one "$t" &
done
wait
# Keep only the inputs that add coverage, so the corpus CI replays stays small.
for t in "${targets[@]}"; do
  cargo +nightly fuzz cmin -O "$t" >"$results/$t.cmin" 2>&1 || echo "fuzz: cmin of $t failed" >&2
done
status=0
printf '%-18s %8s %12s %10s %8s %s\n' target seconds runs coverage corpus result
for t in "${targets[@]}"; do
  read -r name sec runs cov res <"$results/$t"
  printf '%-18s %8s %12s %10s %8s %s\n' "$name" "$sec" "$runs" "$cov" "$(ls "corpus/$t" | wc -l)" "$res"
  if ! grep -q ' ok$' "$results/$t"; then
    status=1
    tail -40 "$results/$t.log" >&2
  fi
done
exit "$status"
