#!/usr/bin/env bash
# Installs what building and testing arca needs on Debian, as root. Idempotent and quiet when
# everything is present. Rust itself (cargo, rustc >= 1.88) must already be on the machine.
set -euo pipefail
need=(fuse3 libfuse3-dev clang libclang-dev pkg-config ca-certificates)
need+=("$@")
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (>= 1.88) first" >&2; exit 1; }
