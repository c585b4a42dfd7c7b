#!/usr/bin/env bash
# Builds the Debian package arca_<version>_amd64.deb with cargo-deb (installed here, pinned):
# both binaries, the systemd unit, /etc/arca/arcad.toml as a conffile, shell completions, man
# pages and the maintainer scripts in packaging/deb/. The package's contents are declared in
# daemon/Cargo.toml ([package.metadata.deb]); what the binaries generate (completions, man pages)
# and the unit with the package's paths are staged here first, as scripts/install.sh does for a
# host. See docs/operations.md, "Install from the package"; scripts/check-package.sh tests it.
#
#   bash scripts/package.sh                 # build (cargo build --release), then package
#   bash scripts/package.sh --no-build      # package binaries that are already built
#   bash scripts/package.sh --out DIR       # write the .deb into DIR (default: the target dir)
#
# Prints the path of the package on its last line.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"

# cargo-deb: the maintained Cargo subcommand for .deb files (control, md5sums, conffiles,
# dpkg-shlibdeps for Depends, stripping). Pinned, and built with its own lock file.
CARGO_DEB_VERSION=3.8.0

die() {
  echo "package.sh: error: $*" >&2
  exit 1
}
say() { echo "package.sh: $*" >&2; }

build=1
out=
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --out)
      (($# >= 2)) || die "--out needs a directory"
      out=$2
      shift
      ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done

# dpkg-dev: dpkg-shlibdeps, which cargo-deb runs for the shared-library dependencies. The build
# packages too, unless the binaries are already built.
if ((build)); then
  . scripts/deps.sh dpkg-dev
else
  need=dpkg-dev
  dpkg-query -W -f='${Status}' "$need" 2>/dev/null | grep -q "install ok installed" || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$need" >/dev/null
  }
  if ! command -v cargo >/dev/null; then
    for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
      [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
    done
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (>= 1.88) first"
fi

if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  say "installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked; about 2 minutes on 2 cores)"
  # From outside the repository, so its .cargo/config.toml (target dir, CPU flags) stays out.
  (cd / && cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION")
fi

if ((build)); then
  say "building (cargo build --release --workspace --bins)"
  cargo build --release --workspace --bins
fi

target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/release
for b in arcad arca; do
  [ -x "$bin/$b" ] || die "$bin/$b not built (drop --no-build)"
done

# --- what the binaries generate, and the unit with the package's paths ------------------------
stage=$bin/deb
rm -rf "$stage"
mkdir -p "$stage"/completions/{bash,zsh,fish} "$stage/man1" "$stage/man8"
"$bin/arca" man "$stage/man1" >/dev/null
[ -s "$stage/man1/arca.1" ] || die "arca man wrote no arca.1"
"$bin/arcad" --man >"$stage/man8/arcad.8"
[ -s "$stage/man8/arcad.8" ] || die "arcad --man printed nothing"
# gzip -9n: no name or time stamp, as dh_compress does, so the package is reproducible.
gzip -9n "$stage"/man1/*.1 "$stage/man8/arcad.8"
for shell in bash zsh fish; do
  case $shell in
    bash) a=arca d=arcad ;;
    zsh) a=_arca d=_arcad ;;
    fish) a=arca.fish d=arcad.fish ;;
  esac
  "$bin/arca" completions "$shell" >"$stage/completions/$shell/$a"
  "$bin/arcad" --completions "$shell" >"$stage/completions/$shell/$d"
  [ -s "$stage/completions/$shell/$a" ] && [ -s "$stage/completions/$shell/$d" ] ||
    die "empty $shell completions"
done
gzip -9n <packaging/deb/changelog >"$stage/changelog.gz"
# The repository's unit is for scripts/install.sh (/usr/local); a package owns /usr.
sed -e 's|/usr/local/bin/|/usr/bin/|g' \
  -e 's|file:///usr/local/share/doc/arca/|file:///usr/share/doc/arca/|g' \
  systemd/arcad.service >"$stage/arcad.service"
if grep -n '/usr/local' "$stage/arcad.service" >&2; then
  die "the packaged unit still names /usr/local (above)"
fi

# --- the package ------------------------------------------------------------------------------
out=${out:-$target}
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
version=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "arca-daemon"))')
deb=$out/arca_${version}_amd64.deb
rm -f "$deb"
# SOURCE_DATE_EPOCH: file times in the package from the last commit, for a reproducible build.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
  cargo deb -p arca-daemon --no-build --strip --output "$deb" >&2
[ -s "$deb" ] || die "cargo deb wrote no $deb"
say "built $deb"
echo "$deb"
