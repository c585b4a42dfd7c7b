#!/usr/bin/env bash
# Installs arca on a host, as root, on Debian: builds the binaries (unless --no-build), then puts
# the binaries, the systemd unit, a default config and a key-encryption key in place and, on a
# systemd host, enables and starts arcad.service; also shell completions and man pages, which the
# binaries generate. Idempotent: an existing config or key is never overwritten; binaries, the
# unit, completions, man pages and the docs are replaced.
#
#   bash scripts/install.sh                      # build and install on this host
#   bash scripts/install.sh --no-build           # install already-built binaries
#   bash scripts/install.sh --no-build --root /tmp/stage --bin-dir DIR   # stage into a directory
#
# See docs/operations.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)

usage() {
  cat <<'EOF'
usage: scripts/install.sh [--no-build] [--root DIR] [--bin-dir DIR]

  --no-build     do not run cargo; install binaries that are already built
  --root DIR     install under DIR instead of / (staging, packaging, tests); nothing is started
  --bin-dir DIR  take arcad and arca from DIR (default: the cargo target directory's release/)
EOF
}

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}
say() { echo "install.sh: $*"; }

root=/
build=1
bin_dir=
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --root)
      (($# >= 2)) || die "--root needs a directory"
      root=$2
      shift
      ;;
    --root=*) root=${1#--root=} ;;
    --bin-dir)
      (($# >= 2)) || die "--bin-dir needs a directory"
      bin_dir=$2
      shift
      ;;
    --bin-dir=*) bin_dir=${1#--bin-dir=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done

[ -n "$root" ] || die "--root must not be empty"
# Relative --root and --bin-dir are taken from the caller's directory.
mkdir -p "$root"
root=$(cd "$root" && pwd -P)
if [ -n "$bin_dir" ]; then
  [ -d "$bin_dir" ] || die "--bin-dir $bin_dir is not a directory"
  bin_dir=$(cd "$bin_dir" && pwd -P)
fi
cd "$repo"
host=0
[ "$root" = / ] && host=1
# Prefix for paths under the root: "" for /, "/tmp/stage" otherwise.
R=${root%/}

is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1
if ((host && !is_root)); then
  die "installing on this host needs root (run as root, or stage with --root DIR)"
fi
if ((!is_root)); then
  say "not root: files are staged owned by $(id -un), not root"
fi

# --- packages and build ---------------------------------------------------------------------
if ((build)); then
  # Build and runtime packages (fuse3 provides fusermount3, used by the unit's ExecStartPre).
  . scripts/deps.sh
  say "building (cargo build --release --workspace --bins; the first build takes ~15 minutes)"
  cargo build --release --workspace --bins
elif ((host)); then
  # Runtime packages only: fusermount3.
  if ! dpkg-query -W -f='${Status}' fuse3 2>/dev/null | grep -q "install ok installed"; then
    say "installing fuse3"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq fuse3 >/dev/null
  fi
fi

if [ -z "$bin_dir" ]; then
  bin_dir=${CARGO_TARGET_DIR:-/var/tmp/arca-target}/release
fi
for b in arcad arca; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b not found or not executable (build first, or drop --no-build, or pass --bin-dir)"
done

# --- files ----------------------------------------------------------------------------------
own=()
((is_root)) && own=(-o root -g root)

# Copies $1 to $2 with mode $3 through a temporary file and a rename, so a running binary is
# replaced atomically (no "text file busy") and a reader never sees half a file.
put() {
  local src=$1 dst=$2 mode=$3
  install -d -m 0755 "${own[@]}" "$(dirname "$dst")"
  install -m "$mode" "${own[@]}" "$src" "$dst.new.$$"
  mv -f "$dst.new.$$" "$dst"
}

put "$bin_dir/arcad" "$R/usr/local/bin/arcad" 0755
put "$bin_dir/arca" "$R/usr/local/bin/arca" 0755
say "installed $R/usr/local/bin/arcad and $R/usr/local/bin/arca"

# --- completions and man pages --------------------------------------------------------------
# Both binaries print them from their own clap definitions, so they describe exactly what is
# installed. Debian's places: bash-completion's, zsh's and fish's vendor directories, and man
# pages gzipped (-n: no name or time stamp, as dh_compress does) in man1, and man8 for a daemon.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bin_dir/arca" man "$gen/man1" >/dev/null || die "arca man failed"
[ -s "$gen/man1/arca.1" ] || die "arca man wrote no arca.1"
"$bin_dir/arcad" --man >"$gen/arcad.8" || die "arcad --man failed"
[ -s "$gen/arcad.8" ] || die "arcad --man printed nothing"
for b in arca arcad; do
  for shell in bash zsh fish; do
    case $b in
      arca) "$bin_dir/arca" completions "$shell" ;;
      arcad) "$bin_dir/arcad" --completions "$shell" ;;
    esac >"$gen/$b.$shell" || die "$b: generating $shell completions failed"
    [ -s "$gen/$b.$shell" ] || die "$b: the $shell completions are empty"
  done
  put "$gen/$b.bash" "$R/usr/share/bash-completion/completions/$b" 0644
  put "$gen/$b.zsh" "$R/usr/share/zsh/vendor-completions/_$b" 0644
  put "$gen/$b.fish" "$R/usr/share/fish/vendor_completions.d/$b.fish" 0644
done
say "installed shell completions for bash, zsh and fish"
# Pages of subcommands that no longer exist must not linger.
rm -f "$R"/usr/share/man/man1/arca.1.gz "$R"/usr/share/man/man1/arca-*.1.gz
for page in "$gen"/man1/*.1 "$gen/arcad.8"; do
  gzip -9n "$page"
  put "$page.gz" "$R/usr/share/man/man${page##*.}/$(basename "$page").gz" 0644
done
say "installed man pages: arca(1), arca-COMMAND(1) and arcad(8)"

put systemd/arcad.service "$R/etc/systemd/system/arcad.service" 0644
say "installed $R/etc/systemd/system/arcad.service (customise with 'systemctl edit arcad', not by editing it)"
put docs/operations.md "$R/usr/local/share/doc/arca/operations.md" 0644

install -d -m 0755 "${own[@]}" "$R/etc/arca"
if [ -e "$R/etc/arca/arcad.toml" ]; then
  say "kept the existing $R/etc/arca/arcad.toml (the shipped default is config/arcad.toml)"
else
  put config/arcad.toml "$R/etc/arca/arcad.toml" 0644
  say "installed the default config $R/etc/arca/arcad.toml"
fi

kek=$R/etc/arca/kek.key
if [ -e "$kek" ]; then
  say "kept the existing key-encryption key $kek"
  mode=$(stat -c %a "$kek")
  if [ $((8#$mode & 8#077)) -ne 0 ]; then
    echo "install.sh: warning: $kek has mode $mode; arcad refuses a key readable by group or others: chmod 600 $kek" >&2
  fi
else
  hex=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  [[ "$hex" =~ ^[0-9a-f]{64}$ ]] || die "could not read 32 random bytes from /dev/urandom"
  (
    umask 077
    printf 'arca-kek-v1:%s\n' "$hex" >"$kek.new.$$"
    ((is_root)) && chown root:root "$kek.new.$$"
    chmod 0600 "$kek.new.$$"
    mv "$kek.new.$$" "$kek"
  )
  unset hex
  say "generated a key-encryption key $kek (mode 0600). It protects every model in the store: back it up somewhere safe, apart from /var/lib/arca."
fi

install -d -m 0755 "${own[@]}" "$R/mnt/arca"

# --- start ----------------------------------------------------------------------------------
next="systemctl daemon-reload && systemctl enable --now arcad.service"
if ((!host)); then
  say "staged under $root; on the target host run: $next"
  exit 0
fi

[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || echo "install.sh: warning: /dev/fuse is missing and 'modprobe fuse' failed; arcad cannot mount" >&2

say "checking the configuration (arcad --check-config)"
/usr/local/bin/arcad --config /etc/arca/arcad.toml --key-file /etc/arca/kek.key --check-config ||
  die "arcad --check-config rejected /etc/arca/arcad.toml or /etc/arca/kek.key (message above)"

if [ -d /run/systemd/system ]; then
  was_active=0
  systemctl is-active --quiet arcad.service && was_active=1
  systemctl daemon-reload
  if ! systemctl enable --now arcad.service; then
    systemctl --no-pager --lines=30 status arcad.service >&2 || true
    die "arcad.service did not start; see: journalctl -u arcad.service"
  fi
  if ((was_active)); then
    say "arcad.service was already running the previous binaries; to switch, run: systemctl restart arcad.service"
  fi
  say "arcad.service is enabled and running: socket /run/arca/arcad.sock, mount /mnt/arca"
else
  say "systemd is not running on this host (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)); nothing was started."
  say "on a systemd host run: $next"
  say "or start it by hand: /usr/local/bin/arcad --config /etc/arca/arcad.toml --key-file /etc/arca/kek.key"
fi
