#!/usr/bin/env bash
# Checks every systemd unit in systemd/ with `systemd-analyze verify`, failing on any error AND any
# warning (verify exits 0 on an unknown directive or an unparsable value, so its output must be
# empty too). Touches nothing on the host: the units are staged with scripts/install.sh into a
# temporary root, with stub arcad/arca binaries, and verified there with --root.
#
#   bash scripts/check-units.sh
#
# Needs systemd-analyze (Debian package `systemd`); it does not need systemd to be running.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "check-units: FAILED: $*" >&2
  exit 1
}

command -v systemd-analyze >/dev/null ||
  fail "systemd-analyze not found: install the Debian package 'systemd' (apt-get install systemd, or: . scripts/deps.sh systemd)"

tmp=$(mktemp -d /tmp/arca-check-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$tmp/bin" "$root"

# Stub binaries: verify only checks that ExecStart= commands exist and are executable. install.sh
# also has them print their man pages and completions, so they print placeholders (the real ones
# are checked by the e2e tests, ecosystem.rs).
cat >"$tmp/bin/arca" <<'EOF'
#!/bin/sh
case "$1" in
  man) mkdir -p "$2" && echo '.TH ARCA 1' >"$2/arca.1" ;;
  completions) echo '# stub' ;;
esac
EOF
cat >"$tmp/bin/arcad" <<'EOF'
#!/bin/sh
case "$1" in
  --man) echo '.TH ARCAD 8' ;;
  --completions) echo '# stub' ;;
esac
EOF
chmod 0755 "$tmp/bin/arca" "$tmp/bin/arcad"
bash scripts/install.sh --no-build --root "$root" --bin-dir "$tmp/bin" >"$tmp/install.log" 2>&1 ||
  {
    cat "$tmp/install.log" >&2
    fail "scripts/install.sh --no-build --root $root failed"
  }

# The units the staged ones depend on (sysinit.target, multi-user.target, ...) come from the
# host's systemd, copied into the staging root.
sysunits=$(systemd-analyze --system unit-paths | grep -m1 -E '^/(usr/)?lib/systemd/system$' || true)
[ -n "$sysunits" ] && [ -d "$sysunits" ] || fail "cannot find the host's systemd unit directory"
mkdir -p "$root/usr/lib/systemd"
cp -a "$sysunits" "$root/usr/lib/systemd/system"

shopt -s nullglob
units=(systemd/*.service systemd/*.socket systemd/*.timer systemd/*.path systemd/*.mount systemd/*.target)
((${#units[@]})) || fail "no units in systemd/"

status=0
for u in "${units[@]}"; do
  name=$(basename "$u")
  staged=$root/etc/systemd/system/$name
  if [ ! -f "$staged" ]; then
    echo "check-units: $u is not installed by scripts/install.sh" >&2
    status=1
    continue
  fi
  cmp -s "$u" "$staged" || {
    echo "check-units: the staged $name differs from $u" >&2
    status=1
    continue
  }
  # Every absolute command the unit runs must exist in the staging root: arcad/arca come from
  # install.sh; anything else (e.g. /usr/bin/fusermount3) is copied from this host, so a
  # misspelled path fails here instead of on a production host.
  while read -r cmd; do
    [ -e "$root$cmd" ] && continue
    if [ -x "$cmd" ]; then
      mkdir -p "$root$(dirname "$cmd")"
      cp "$cmd" "$root$cmd"
    else
      echo "check-units: $u runs $cmd, which neither install.sh installs nor this host has" >&2
      status=1
    fi
  done < <(sed -nE 's/^Exec[A-Za-z]*=[-@:+!]*(\/[^[:space:]]+).*/\1/p' "$u" | sort -u)

  out=$(systemd-analyze verify --man=no --root="$root" "$staged" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    echo "check-units: systemd-analyze verify $name: exit $rc" >&2
    printf '%s\n' "$out" | sed "s|$root||g" >&2
    status=1
  else
    echo "check-units: $name: systemd-analyze verify clean"
  fi

  # The daemon's unit must stay in the host's mount namespace, or its FUSE mount is invisible to
  # every other service (docs/operations.md, "Why arcad has no mount namespace"). Each directive
  # here gives the unit a mount namespace of its own in systemd 252 (measured), would in later
  # versions (PrivateNetwork= implies PrivateMounts= from v254), or takes away the host
  # CAP_SYS_ADMIN that mount(2) needs (PrivateUsers=).
  if grep -qE '^ExecStart=.*/arcad( |$)' "$u"; then
    bad=$(grep -nE '^[[:space:]]*(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|PrivateMounts|PrivateIPC|IPCNamespacePath|PrivateNetwork|NetworkNamespacePath|PrivateUsers|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectProc|ProcSubset|ReadOnlyPaths|ReadWritePaths|InaccessiblePaths|ExecPaths|NoExecPaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|RootDirectory|RootImage|MountImages|ExtensionImages|ExtensionDirectories|MountAPIVFS|MountFlags|DynamicUser|LogNamespace|JoinsNamespaceOf)[[:space:]]*=' "$u" || true)
    if [ -n "$bad" ]; then
      echo "check-units: $u: directives that would hide arcad's mount from the host:" >&2
      printf '%s\n' "$bad" | sed 's/^/  /' >&2
      status=1
    fi
    # Regression guard on the rest of the hardening: systemd-analyze's exposure score (tenths)
    # must not rise above what the unit has now (3.8 with systemd 252).
    if ! systemd-analyze security --offline=yes --root="$root" --threshold=38 --no-pager "$staged" >"$tmp/security.txt" 2>&1; then
      echo "check-units: $name: systemd-analyze security exposure is above 3.8 (hardening was removed?):" >&2
      tail -3 "$tmp/security.txt" >&2
      status=1
    else
      echo "check-units: $name: $(grep -o 'Overall exposure level.*' "$tmp/security.txt")"
    fi
  fi
done

((status == 0)) || fail "see the messages above"
echo "check-units: ${#units[@]} unit(s) passed, 0 failed"
