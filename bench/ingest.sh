#!/usr/bin/env bash
# Ingest benchmark: pushes one random file (2 GiB by default) into a fresh arcad and reports, in
# the same run and on the same file:
# - MB/s next to a plain read (`cat > /dev/null`), a single-threaded SHA-256 (`sha256sum`) and
#   restic's `backup` of the same file into a fresh repository (restic from Debian);
# - arcad's plus the CLI's CPU-seconds per GiB (/proc/PID/stat and the CLI's rusage) next to the
#   floor of the work a push must do on these bytes (`arca-floor ingest`: FastCDC, SHA-256 and
#   BLAKE3 on both sides, each chunk's keyed id and seal), as a ratio;
# - arcad's peak RSS during the push.
# Prints ratios against the targets of issue #9.
# Usage: bench/ingest.sh [SIZE_MIB]   (run as root on Debian)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh bc openssl python3 restic
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
export RESTIC_REPOSITORY=$work/restic RESTIC_PASSWORD=arca-bench
restic init --quiet >/dev/null

# Runs a command with its output discarded and prints "WALL CPU": wall seconds, and the CPU
# seconds (user + system) of the command and its children, from rusage.
run() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
w = time.monotonic() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(w, r.ru_utime + r.ru_stime)
PY
}
tck=$(getconf CLK_TCK)
cpu_s() { awk -v t="$tck" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }
gib=$(echo "$bytes / 1073741824" | bc -l)

cat "$work/data.bin" >/dev/null # warm the page cache so every reader reads from memory
read -r t_cat _ < <(run cat "$work/data.bin")
read -r t_sha _ < <(run sha256sum "$work/data.bin")
read -r t_restic c_restic < <(run restic backup --quiet "$work/data.bin")
c0=$(cpu_s "$pid")
read -r t_push c_cli < <(run "$bin/arca" push "$work/data.bin" --name bench --version 1.0.0)
c1=$(cpu_s "$pid")
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
floor=$("$bin/arca-floor" ingest "$work/data.bin" | awk '{ print $NF }')
arcad_gib=$(echo "($c1 - $c0) / $gib" | bc -l)
cli_gib=$(echo "$c_cli / $gib" | bc -l)
restic_gib=$(echo "$c_restic / $gib" | bc -l)

mbs() { echo "$bytes / $1 / 1000000" | bc -l; }
printf '%-34s %10s %8s %12s\n' "ingest of $((bytes >> 20)) MiB" "MB/s" "ratio" "CPU-s/GiB"
printf '%-34s %10.0f %8s\n' "cat > /dev/null (page cache)" "$(mbs "$t_cat")" "1.00"
printf '%-34s %10.0f %8.3f\n' "sha256sum (one core)" "$(mbs "$t_sha")" "$(echo "$t_cat / $t_sha" | bc -l)"
printf '%-34s %10.0f %8.3f %12.2f\n' "restic backup" "$(mbs "$t_restic")" "$(echo "$t_cat / $t_restic" | bc -l)" "$restic_gib"
printf '%-34s %10.0f %8.3f %12.2f\n' "arca push (arcad + CLI)" "$(mbs "$t_push")" "$(echo "$t_cat / $t_push" | bc -l)" "$(echo "$arcad_gib + $cli_gib" | bc -l)"
printf 'push / restic backup: %.2fx (target >= 2)\n' "$(echo "$t_restic / $t_push" | bc -l)"
printf 'CPU-s per GiB: arcad %.2f + CLI %.2f = %.2f; floor (FastCDC, SHA-256 + BLAKE3 on both sides, id, seal) %.2f; %.2fx the floor (target <= 1.5)\n' \
  "$arcad_gib" "$cli_gib" "$(echo "$arcad_gib + $cli_gib" | bc -l)" "$floor" "$(echo "($arcad_gib + $cli_gib) / $floor" | bc -l)"
printf 'arcad peak RSS: %d MiB (target <= 128)   cores: %d\n' $((rss_kib >> 10)) "$(nproc)"
