#!/usr/bin/env bash
# A local trial on arcad's embedded defaults: builds, starts arcad in the background (state,
# socket and a generated development key under /var/tmp/arca-dev), creates a signing key, pushes
# a small sample model, and shows it, reads it through the FUSE mount (/var/tmp/arca-dev/mnt),
# verifies it and fetches it back. Run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh python3
cargo build --release --bins
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
base=/var/tmp/arca-dev
mkdir -p "$base"
# The trial daemon's socket, named so that the CLI uses it even on a host with a system arcad.
export ARCA_SOCKET=$base/arcad.sock

if ! "$bin/arca" whoami >/dev/null 2>&1; then
  echo "starting arcad (log: $base/arcad.log)"
  nohup "$bin/arcad" >>"$base/arcad.log" 2>&1 &
  for _ in $(seq 1 100); do "$bin/arca" whoami >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin/arca" whoami >/dev/null || { cat "$base/arcad.log"; exit 1; }
fi
[ -f "$HOME/.config/arca/signing.key" ] || "$bin/arca" key gen

sample=$base/sample-model
if [ ! -d "$sample" ]; then
  mkdir -p "$sample/tokenizer"
  head -c $((16 << 20)) /dev/urandom >"$sample/model.safetensors"
  head -c $((1 << 20)) /dev/urandom >"$sample/tokenizer/vocab.bin"
  echo '{"architecture": "demo", "hidden_size": 64}' >"$sample/config.json"
fi
if ! "$bin/arca" show sample 1.0.0 >/dev/null 2>&1; then
  "$bin/arca" push "$sample" --name sample --version 1.0.0 --type nlp --framework pytorch \
    --description "arca demo model" --tag demo --dep torch==2.3.1
fi
"$bin/arca" ls
"$bin/arca" show sample 1.0.0
"$bin/arca" verify sample
rm -rf "$base/fetched"
"$bin/arca" get sample 1.0.0 --out "$base/fetched"
echo "the same file through the mount and as fetched:"
sha256sum "$base/mnt/sample/1.0.0/model.safetensors" "$base/fetched/model.safetensors" "$sample/model.safetensors"
ls -l "$base/mnt/sample/1.0.0/"
echo
pid=$(pgrep -f "^$bin/arcad\$" | head -1 || true)
echo "arcad is running in the background${pid:+ (pid $pid)}; stop it with: kill -TERM ${pid:-<pid>} (it unmounts $base/mnt)"
echo "CLI: $bin/arca --help"
