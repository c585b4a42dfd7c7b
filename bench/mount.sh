#!/usr/bin/env bash
# Mount benchmark, all in one run on one random file (2 GiB by default): cold sequential read
# through arca's FUSE mount vs. a plain FUSE passthrough (bindfs) vs. the raw file; warm re-read
# vs. the raw page-cache read and bindfs's; fio random 4 KiB and 1 MiB reads (IOPS, p50/p99
# latency) on arca and bindfs; arcad's peak RSS during the push and, separately, while the mount
# is read.
# arcad's CPU-seconds per GiB on the cold read (from /proc/PID/stat) is put next to the floor of
# the work it must do on the same bytes (`arca-floor read`: every chunk's AEAD open and keyed id
# check), measured in the same run. Prints ratios against the targets of issues #3 and #9.
# Usage: bench/mount.sh [SIZE_MIB]   (run as root on Debian; drops the page cache)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh bindfs fio bc openssl python3
size_mib=${1:-2048}
cache_mib=256
cargo build --release --bins
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
work=$(mktemp -d /var/tmp/arca-bench.XXXXXX)
cleanup() {
  umount "$work/bind" 2>/dev/null || true
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  umount -l "$work/mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/raw" "$work/bind" "$work/mnt"
(openssl enc -aes-128-ctr -pass pass:arca-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c $((size_mib << 20)) >"$work/raw/data.bin") || true
bytes=$(stat -c %s "$work/raw/data.bin")
[ "$bytes" -eq $((size_mib << 20)) ] || { echo "could not generate the test file" >&2; exit 1; }
( umask 077; printf 'arca-kek-v1:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/kek.key" )
"$bin/arcad" --state-dir "$work/state" --socket "$work/arcad.sock" --key-file "$work/kek.key" \
  --mount "$work/mnt" --cache-mib "$cache_mib" 2>"$work/arcad.log" &
pid=$!
export ARCA_SOCKET=$work/arcad.sock HOME=$work/home
for _ in $(seq 1 200); do "$bin/arca" whoami >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/arca" key gen >/dev/null
"$bin/arca" push "$work/raw/data.bin" --name bench --version 1.0.0 >/dev/null
# VmHWM covers the process's whole life, and the push (ingest) is not what the mount target is
# about: report the push's peak, then reset the high-water mark (clear_refs 5, Linux >= 4.0) so
# the figure checked against the target is the peak while the mount is being read.
hwm_mib() { echo $(( $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") >> 10 )); }
push_rss_mib=$(hwm_mib)
echo 5 >"/proc/$pid/clear_refs"
# kernel_cache: bindfs's pages stay cached across opens, as arca's do (FOPEN_KEEP_CACHE), so its
# warm re-read shows what the kernel's FUSE page-cache path alone costs.
bindfs -o ro,kernel_cache "$work/raw" "$work/bind"
arca_file=$work/mnt/bench/1.0.0/data.bin
bind_file=$work/bind/data.bin
raw_file=$work/raw/data.bin

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
readall() { dd if="$1" of=/dev/null bs=1M status=none; }
mbs() { echo "$bytes / $1 / 1000000" | bc -l; }

drop; t_raw_cold=$(secs readall "$raw_file")
drop; t_bind_cold=$(secs readall "$bind_file")
# utime + stime of arcad, in seconds (fields 14 and 15 of /proc/PID/stat, in clock ticks).
tck=$(getconf CLK_TCK)
cpu_s() { awk -v t="$tck" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }
drop; c0=$(cpu_s "$pid"); t_arca_cold=$(secs readall "$arca_file"); c1=$(cpu_s "$pid")
arcad_cpu_gib=$(echo "($c1 - $c0) / ($bytes / 1073741824)" | bc -l)
floor_cpu_gib=$("$bin/arca-floor" read "$raw_file" | awk '{ print $NF }')
t_arca_warm=$(secs readall "$arca_file")
readall "$raw_file"; t_raw_warm=$(secs readall "$raw_file")
readall "$bind_file"; t_bind_warm=$(secs readall "$bind_file")

# fio: 4 readers, buffered, after dropping caches. Each reader does a fixed number of reads on
# the same random sequence (randrepeat) for arca and bindfs alike, covering a small part of the
# file: a time-based run would let the faster one fill the page cache and then measure the cache.
# JSON parsed for IOPS and completion latency.
fio_run() { # file bs ios-per-job
  drop
  fio --name=r --filename="$1" --rw=randread --bs="$2" --ioengine=psync --numjobs=4 --group_reporting \
    --number_ios="$3" --randrepeat=1 --invalidate=1 --readonly --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["read"]; p=j["clat_ns"]["percentile"]; print("%.0f %.0f %.0f" % (j["iops"], p["50.000000"]/1000, p["99.000000"]/1000))'
}
ios4k=$(( bytes / 4096 / 40 ))   # 4 jobs: 10% of the file's 4 KiB blocks
ios1m=$(( bytes / 1048576 / 8 )) # 4 jobs: half of the file's 1 MiB blocks
read -r a4_iops a4_p50 a4_p99 < <(fio_run "$arca_file" 4k "$ios4k")
read -r b4_iops b4_p50 b4_p99 < <(fio_run "$bind_file" 4k "$ios4k")
read -r a1m_iops a1m_p50 a1m_p99 < <(fio_run "$arca_file" 1m "$ios1m")
read -r b1m_iops b1m_p50 b1m_p99 < <(fio_run "$bind_file" 1m "$ios1m")
rss_mib=$(hwm_mib)

ratio() { echo "$1 / $2" | bc -l; }
echo "mount benchmark on $((bytes >> 20)) MiB, $(nproc) cores, arcad cache ${cache_mib} MiB"
printf '%-32s %10s %10s\n' "sequential read" "MB/s" ""
printf '%-32s %10.0f\n' "raw file, cold" "$(mbs "$t_raw_cold")"
printf '%-32s %10.0f\n' "bindfs, cold" "$(mbs "$t_bind_cold")"
printf '%-32s %10.0f   %.2fx bindfs (target >= 0.8, aim 1.0)\n' "arca, cold" "$(mbs "$t_arca_cold")" "$(ratio "$t_bind_cold" "$t_arca_cold")"
printf 'arcad CPU on the cold read: %.2f CPU-s per GiB; floor (AEAD open + keyed id) %.2f; %.2fx the floor (target <= 1.5)\n' "$arcad_cpu_gib" "$floor_cpu_gib" "$(ratio "$arcad_cpu_gib" "$floor_cpu_gib")"
printf '%-32s %10.0f\n' "raw file, warm (page cache)" "$(mbs "$t_raw_warm")"
printf '%-32s %10.0f   %.2fx raw warm\n' "bindfs, warm re-read" "$(mbs "$t_bind_warm")" "$(ratio "$t_raw_warm" "$t_bind_warm")"
printf '%-32s %10.0f   %.2fx raw warm, %.2fx bindfs warm (target >= 1.0)\n' "arca, warm re-read" "$(mbs "$t_arca_warm")" "$(ratio "$t_raw_warm" "$t_arca_warm")" "$(ratio "$t_bind_warm" "$t_arca_warm")"
printf '%-32s %10s %10s %10s\n' "fio randread, 4 jobs" "IOPS" "p50 us" "p99 us"
printf '%-32s %10s %10s %10s\n' "bindfs 4 KiB" "$b4_iops" "$b4_p50" "$b4_p99"
printf '%-32s %10s %10s %10s   %.2fx bindfs IOPS (target >= 0.5)\n' "arca 4 KiB" "$a4_iops" "$a4_p50" "$a4_p99" "$(ratio "$a4_iops" "$b4_iops")"
printf '%-32s %10s %10s %10s\n' "bindfs 1 MiB" "$b1m_iops" "$b1m_p50" "$b1m_p99"
printf '%-32s %10s %10s %10s   %.2fx bindfs IOPS (target >= 0.8)\n' "arca 1 MiB" "$a1m_iops" "$a1m_p50" "$a1m_p99" "$(ratio "$a1m_iops" "$b1m_iops")"
printf 'arcad peak RSS while reading the mount: %d MiB (target <= 64 + %d cache = %d MiB)\n' "$rss_mib" "$cache_mib" $((64 + cache_mib))
printf 'arcad peak RSS during the push (ingest, before the reads): %d MiB\n' "$push_rss_mib"
grep -q "integrity failure" "$work/arcad.log" && { echo "integrity failures were logged!" >&2; exit 1; }
exit 0
