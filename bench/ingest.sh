#!/usr/bin/env bash
# Ingest benchmark: pushes one random file (2 GiB by default) into a fresh arcad and reports its
# MB/s next to, in the same run and on the same file, a plain read (`cat > /dev/null`) and a
# single-threaded SHA-256 (`sha256sum`), the floor any push that records SHA-256 must pay.
# Usage: bench/ingest.sh [SIZE_MIB]   (run as root on Debian)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh bc openssl python3
size_mib=${1:-2048}
cargo build --release --bins
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
work=$(mktemp -d /var/tmp/arca-bench.XXXXXX)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Random data, fast: AES-CTR keystream from OpenSSL.
# (openssl dies of SIGPIPE when head has enough, hence the `|| true` and the size check.)
(openssl enc -aes-128-ctr -pass pass:arca-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c $((size_mib << 20)) >"$work/data.bin") || true
bytes=$(stat -c %s "$work/data.bin")
[ "$bytes" -eq $((size_mib << 20)) ] || { echo "could not generate the test file" >&2; exit 1; }
( umask 077; printf 'arca-kek-v1:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/kek.key" )
"$bin/arcad" --state-dir "$work/state" --socket "$work/arcad.sock" --key-file "$work/kek.key" --no-mount 2>"$work/arcad.log" &
pid=$!
export ARCA_SOCKET=$work/arcad.sock HOME=$work/home
for _ in $(seq 1 200); do "$bin/arca" whoami >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/arca" key gen >/dev/null

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
cat "$work/data.bin" >/dev/null # warm the page cache so all three read from memory
t_cat=$(secs cat "$work/data.bin")
t_sha=$(secs sha256sum "$work/data.bin")
t_push=$(secs "$bin/arca" push "$work/data.bin" --name bench --version 1.0.0)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
mbs() { echo "$bytes / $1 / 1000000" | bc -l; }
printf '%-34s %10s %8s\n' "ingest of $((bytes >> 20)) MiB" "MB/s" "ratio"
printf '%-34s %10.0f %8s\n' "cat > /dev/null (page cache)" "$(mbs "$t_cat")" "1.00"
printf '%-34s %10.0f %8.3f\n' "sha256sum (one core)" "$(mbs "$t_sha")" "$(echo "$t_cat / $t_sha" | bc -l)"
printf '%-34s %10.0f %8.3f\n' "arca push" "$(mbs "$t_push")" "$(echo "$t_cat / $t_push" | bc -l)"
printf 'push / sha256sum: %.3f   arcad peak RSS: %d MiB   cores: %d\n' "$(echo "$t_sha / $t_push" | bc -l)" $((rss_kib >> 10)) "$(nproc)"
