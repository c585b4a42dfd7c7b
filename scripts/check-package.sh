#!/usr/bin/env bash
# Tests the Debian package (scripts/package.sh) as an admin would meet it, without touching this
# host: lintian must find no error; its dependencies must resolve against Debian's archive
# (apt-get --simulate); it is installed with dpkg into a fresh, empty root (`dpkg --root`, its
# maintainer scripts run chrootless with DPKG_ROOT set, which they honour); `dpkg -L` must list
# every file an admin expects, each present; the unit must pass `systemd-analyze verify --root`
# with no output; the postinst must make the mount point and no key-encryption key unless asked
# (ARCA_GENERATE_KEK=yes, here on a reinstall, which also runs prerm and postinst as an
# upgrade does); removal must keep the conffile and the key, purge the conffile but never the
# key.
#
#   bash scripts/check-package.sh            # package the binaries already built, then check
#
# Run as root on Debian (scripts/test.sh runs it after building). It installs what it needs:
# dpkg-dev (dpkg-shlibdeps, for package.sh), lintian, systemd (systemd-analyze), fuse3.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "check-package: FAILED: $*" >&2
  exit 1
}
say() { echo "check-package: $*"; }

need=()
for p in dpkg-dev lintian systemd fuse3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d /tmp/arca-check-package.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

deb=$(bash scripts/package.sh --no-build --out "$tmp/out" | tail -1)
[ -f "$deb" ] || fail "scripts/package.sh made no package"
case $(basename "$deb") in
  arca_*_amd64.deb) ;;
  *) fail "the package is named $(basename "$deb"), not arca_<version>_amd64.deb" ;;
esac
say "built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

# --- lintian -------------------------------------------------------------------------------------
# Every tag is printed (-I: info tags too); only errors fail. (lintian also says that it runs
# as root, which is left out.)
say "lintian $(lintian --version | cut -d' ' -f2) -I --fail-on error:"
lintian -I --fail-on error "$deb" >"$tmp/lintian.txt" 2>&1 && rc=0 || rc=$?
grep -v 'running with root privileges is not recommended' "$tmp/lintian.txt" | sed 's/^/  /' || true
((rc == 0)) || fail "lintian reported errors (above; exit $rc)"
say "lintian: no errors"

# --- dependencies --------------------------------------------------------------------------------
# The Depends line must resolve against the archive this host uses (an old or missing list is
# refreshed once).
if ! apt-get install --simulate -qq "$deb" >"$tmp/apt.txt" 2>&1; then
  apt-get update -qq
  apt-get install --simulate -qq "$deb" >"$tmp/apt.txt" 2>&1 || {
    cat "$tmp/apt.txt" >&2
    fail "apt-get cannot resolve the package's dependencies: $(dpkg-deb -f "$deb" Depends)"
  }
fi
say "dependencies resolve: $(dpkg-deb -f "$deb" Depends)"

# --- install into a fresh root -------------------------------------------------------------------
root=$tmp/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
# --force-depends: the root is empty, so nothing it depends on is there (the simulation above
# resolved them); --force-script-chrootless: run the maintainer scripts here with DPKG_ROOT set
# instead of chrooting into a root with no shell.
dpkg_root() {
  dpkg --root="$root" --log="$root/var/log/dpkg.log" --force-depends --force-script-chrootless "$@"
}
dpkg_root -i "$deb" >"$tmp/install.txt" 2>&1 || {
  cat "$tmp/install.txt" >&2
  fail "dpkg --root -i failed"
}
sed 's/^/  dpkg: /' "$tmp/install.txt"
[ "$(dpkg-query --root="$root" -W -f='${Status}' arca)" = "install ok installed" ] ||
  fail "dpkg does not record arca as installed in the fresh root"

# What an admin expects, derived from the binaries themselves (a man page per subcommand):
bin=$(dirname "$deb")/bin
mkdir -p "$bin"
dpkg-deb -x "$deb" "$bin"
"$bin/usr/bin/arca" man "$tmp/pages" >/dev/null
expected=(
  /usr/bin/arcad /usr/bin/arca
  /lib/systemd/system/arcad.service
  /etc/arca/arcad.toml
  /usr/share/doc/arca/operations.md /usr/share/doc/arca/copyright /usr/share/doc/arca/changelog.gz
  /usr/share/bash-completion/completions/arca /usr/share/bash-completion/completions/arcad
  /usr/share/zsh/vendor-completions/_arca /usr/share/zsh/vendor-completions/_arcad
  /usr/share/fish/vendor_completions.d/arca.fish /usr/share/fish/vendor_completions.d/arcad.fish
  /usr/share/man/man8/arcad.8.gz
)
for page in "$tmp"/pages/*.1; do
  expected+=("/usr/share/man/man1/$(basename "$page").gz")
done
((${#expected[@]} > 20)) || fail "arca man wrote only ${#expected[@]} pages"
dpkg-query --root="$root" -L arca | grep -vxF /. | sort >"$tmp/listed"
missing=0
for f in "${expected[@]}"; do
  if ! grep -qxF "$f" "$tmp/listed"; then
    echo "check-package: dpkg -L does not list $f" >&2
    missing=1
  fi
done
((missing == 0)) || fail "files missing from dpkg -L (above)"
# Every listed path is in the root, and every file the package holds is listed.
while read -r f; do
  [ -e "$root$f" ] || fail "dpkg -L lists $f, which is not in the root"
done <"$tmp/listed"
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^/\?$' | sort >"$tmp/contents"
if ! diff -u "$tmp/contents" "$tmp/listed" >"$tmp/diff"; then
  cat "$tmp/diff" >&2
  fail "dpkg -L and the package's contents differ"
fi
files=$(while read -r f; do [ -f "$root$f" ] && echo "$f"; done <"$tmp/listed" | wc -l)
say "dpkg -L arca: $(wc -l <"$tmp/listed") paths ($files files), every expected one listed and present: ${#expected[@]} checked"
grep -qxF /etc/arca/arcad.toml <(dpkg-query --root="$root" -W -f='${Conffiles}\n' arca | awk 'NF {print $1}') ||
  fail "/etc/arca/arcad.toml is not a conffile"
[ "$(stat -c %a "$root/usr/bin/arcad")" = 755 ] && [ "$(stat -c %a "$root/etc/arca/arcad.toml")" = 644 ] ||
  fail "modes of arcad or arcad.toml"

# --- what postinst made --------------------------------------------------------------------------
[ -d "$root/mnt/arca" ] && [ "$(stat -c %a "$root/mnt/arca")" = 755 ] || fail "postinst did not create /mnt/arca 0755"
[ ! -e "$root/etc/arca/kek.key" ] || fail "postinst made a key-encryption key unasked"
grep -q 'no key-encryption key yet' "$tmp/install.txt" || fail "postinst did not say how to get a key"
say "postinst: /mnt/arca made, no key-encryption key unasked"

# --- the unit ------------------------------------------------------------------------------------
# systemd-analyze verify needs the units the staged one depends on (from this host's systemd) and
# the commands it runs: arcad is the package's; fusermount3 is the fuse3 dependency's, copied from
# this host since the root has no dependencies installed.
sysunits=$(systemd-analyze --system unit-paths | grep -m1 -E '^/(usr/)?lib/systemd/system$')
mkdir -p "$root/usr/lib/systemd/system"
cp -an "$sysunits/." "$root/usr/lib/systemd/system/"
mkdir -p "$root/usr/bin"
cp /usr/bin/fusermount3 "$root/usr/bin/fusermount3"
out=$(systemd-analyze verify --man=no --root="$root" "$root/lib/systemd/system/arcad.service" 2>&1) && rc=0 || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
  printf '%s\n' "$out" | sed "s|$root||g" >&2
  fail "systemd-analyze verify --root: exit $rc"
fi
grep -q '^ExecStart=/usr/bin/arcad ' "$root/lib/systemd/system/arcad.service" || fail "the unit does not run /usr/bin/arcad"
say "systemd-analyze verify --root arcad.service: clean"

# --- a key when asked (a reinstall: prerm upgrade, then postinst configure) ----------------------
ARCA_GENERATE_KEK=yes dpkg_root -i "$deb" >"$tmp/reinstall.txt" 2>&1 || {
  cat "$tmp/reinstall.txt" >&2
  fail "reinstalling with ARCA_GENERATE_KEK=yes failed"
}
kek=$root/etc/arca/kek.key
[ -f "$kek" ] && [ "$(stat -c %a "$kek")" = 600 ] && grep -qxE 'arca-kek-v1:[0-9a-f]{64}' "$kek" ||
  fail "ARCA_GENERATE_KEK=yes made no key-encryption key of mode 0600 in the arca-kek-v1 format"
"$bin/usr/bin/arcad" --config "$root/etc/arca/arcad.toml" --key-file "$kek" --state-dir "$tmp/state" \
  --socket "$tmp/run/arcad.sock" --no-mount --check-config >"$tmp/check.txt" 2>&1 || {
  cat "$tmp/check.txt" >&2
  fail "arcad --check-config refuses the packaged config with the generated key"
}
say "ARCA_GENERATE_KEK=yes: /etc/arca/kek.key made (0600), and arcad --check-config accepts it with the packaged config"

# --- removal and purge ---------------------------------------------------------------------------
dpkg_root -r arca >"$tmp/remove.txt" 2>&1 || {
  cat "$tmp/remove.txt" >&2
  fail "dpkg --root -r failed"
}
[ ! -e "$root/usr/bin/arcad" ] && [ ! -e "$root/lib/systemd/system/arcad.service" ] || fail "remove left the binaries or the unit"
[ -f "$root/etc/arca/arcad.toml" ] || fail "remove deleted the conffile"
dpkg_root -P arca >"$tmp/purge.txt" 2>&1 || {
  cat "$tmp/purge.txt" >&2
  fail "dpkg --root -P failed"
}
[ ! -e "$root/etc/arca/arcad.toml" ] || fail "purge kept the conffile"
[ -f "$kek" ] || fail "purge deleted the key-encryption key"
say "remove keeps the conffile; purge removes it and keeps /etc/arca/kek.key"
say "passed"
