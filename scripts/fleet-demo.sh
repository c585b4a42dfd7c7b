#!/usr/bin/env bash
# A fleet on one machine (issue #10): a real SeaweedFS cluster (scripts/seaweedfs.sh: 1 master,
# 3 volume servers with replication 001, 2 filers with S3 gateways) and three arcad hosts, each
# with its own state directory, socket and FUSE mount, one KEK, every host's key pinned. A model
# is pushed on host a, promoted from host b, and read through host c's mount and `arca get`.
#   bash scripts/fleet-demo.sh          (root on Debian; KEEP=1 leaves it running)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seaweedfs.sh install
cargo build --release --bins
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
work=$(mktemp -d /var/tmp/arca-fleet-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo "left running in $work (stop: kill ${pids[*]}; bash scripts/seaweedfs.sh stop $work/seaweedfs)"
    return
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for h in a b c; do umount -l "$work/$h/mnt" 2>/dev/null || true; done
  bash scripts/seaweedfs.sh stop "$work/seaweedfs" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== SeaweedFS cluster"
mapfile -t eps < <(bash scripts/seaweedfs.sh cluster "$work/seaweedfs" 18800)
printf '   S3 gateway %s\n' "${eps[@]}"
python3 -c 'import sys,urllib.request as u; u.urlopen(u.Request(sys.argv[1], method="PUT"))' "${eps[0]}/arca-demo"

( umask 077; printf 'arca-kek-v1:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/kek.key" )
declare -A endpoint=([a]="${eps[0]}" [b]="${eps[1]}" [c]="${eps[1]}\", \"${eps[0]}")
config() { # host, pins
  printf '[fleet]\nhost = "%s"\nendpoints = ["%s"]\nbucket = "arca-demo"\npoll_ms = 200\n%s' "$1" "${endpoint[$1]}" "$2"
}
pins="[fleet.hosts]"$'\n'
for h in a b c; do
  mkdir -p "$work/$h/home"
  install -m 600 "$work/kek.key" "$work/$h/kek.key"
  config "$h" "" >"$work/$h/arcad.toml"
  key=$("$bin/arcad" --config "$work/$h/arcad.toml" --state-dir "$work/$h/state" --socket "$work/$h/arcad.sock" \
    --key-file "$work/$h/kek.key" --no-mount --host-key 2>"$work/$h/setup.log")
  echo "== host $h: entry-signing key $key"
  pins+="$h = \"$key\""$'\n'
done
for h in a b c; do
  config "$h" "$pins" >"$work/$h/arcad.toml"
  "$bin/arcad" --config "$work/$h/arcad.toml" --state-dir "$work/$h/state" --socket "$work/$h/arcad.sock" \
    --key-file "$work/$h/kek.key" --mount "$work/$h/mnt" 2>"$work/$h/arcad.log" &
  pids+=($!)
done
on() { # host, arca args...
  local h=$1
  shift
  ARCA_SOCKET="$work/$h/arcad.sock" HOME="$work/$h/home" "$bin/arca" "$@"
}
for h in a b c; do
  for _ in $(seq 1 300); do on "$h" whoami >/dev/null 2>&1 && break; sleep 0.1; done
  on "$h" whoami >/dev/null
done

echo "== on a: push demo 1.0.0 (a 16 MiB weights file and a config)"
mkdir -p "$work/model"
# (head closes the pipe early: openssl's SIGPIPE is expected, the size is checked instead)
(openssl enc -aes-128-ctr -pass pass:arca-demo -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c $((16 << 20)) >"$work/model/model.safetensors") || true
[ "$(stat -c %s "$work/model/model.safetensors")" -eq $((16 << 20)) ]
echo '{"arch": "demo"}' >"$work/model/config.json"
chmod 644 "$work/model/"*
on a key gen >/dev/null
on a policy set demo --require-approval no >/dev/null
on a push "$work/model" --name demo --version 1.0.0

echo "== on b: promote demo 1.0.0 to staging, then production"
for _ in $(seq 1 100); do on b show demo 1.0.0 >/dev/null 2>&1 && break; sleep 0.1; done
on b promote demo 1.0.0 --to staging
on b promote demo 1.0.0 --to production

echo "== on c: read it through the mount and with arca get"
link="$work/c/mnt/demo/production"
for _ in $(seq 1 300); do [ "$(readlink "$link" 2>/dev/null)" = 1.0.0 ] && break; sleep 0.01; done
echo "   $link -> $(readlink "$link")"
want=$(sha256sum <"$work/model/model.safetensors" | cut -d' ' -f1)
got=$(sha256sum <"$link/model.safetensors" | cut -d' ' -f1)
echo "   sha256 pushed on a:          $want"
echo "   sha256 read through c mount: $got"
[ "$want" = "$got" ] || { echo "MISMATCH" >&2; exit 1; }
on c get demo 1.0.0 --out "$work/c/got" >/dev/null
cmp "$work/model/model.safetensors" "$work/c/got/model.safetensors"
echo "   arca get on c: verified and identical"
on c status | sed 's/^/   /'
echo "== the fleet works: pushed on a, promoted on b, served by c"
