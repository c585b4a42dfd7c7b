#!/usr/bin/env bash
# The contract test's tools (issue #15): a venv under /var/tmp with openapi-spec-validator and
# schemathesis, pinned with hashes (tests/contract/requirements.txt), and their two uses. The test
# itself (daemon, bridges, users, state comparison) is tests/tests/e2e/contract.rs.
#
#   bash scripts/contract.sh install                   # the venv; prints nothing once it is current
#   bash scripts/contract.sh validate DOC              # openapi-spec-validator DOC
#   bash scripts/contract.sh fuzz DOC URL SECS OUT     # schemathesis against URL for SECS seconds;
#                                                      # reports in OUT (report.json, output.txt)
#
# ARCA_CONTRACT_VENV moves the venv; ARCA_CONTRACT_SEED changes the fuzzer's seed (default 15).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
VENV=${ARCA_CONTRACT_VENV:-/var/tmp/arca-contract}
REQ=$repo/tests/contract/requirements.txt

install_venv() {
  # The venv is current when it was built from exactly this requirements file.
  local want
  want=$(sha256sum "$REQ" | cut -d' ' -f1)
  if [ -x "$VENV/bin/st" ] && [ "$(cat "$VENV/.requirements" 2>/dev/null)" = "$want" ]; then
    return
  fi
  rm -rf "$VENV"
  # Debian's own python3 needs python3-venv for this (a pyenv or upstream Python has it).
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --no-deps --require-hashes -r "$REQ"
  "$VENV/bin/st" --version >/dev/null
  echo "$want" >"$VENV/.requirements"
}

cmd=${1:-}
case "$cmd" in
  install)
    install_venv
    ;;
  validate)
    doc=${2:?usage: contract.sh validate DOC}
    install_venv
    "$VENV/bin/openapi-spec-validator" "$doc"
    ;;
  fuzz)
    doc=${2:?usage: contract.sh fuzz DOC URL SECS OUT}
    url=${3:?usage: contract.sh fuzz DOC URL SECS OUT}
    secs=${4:?usage: contract.sh fuzz DOC URL SECS OUT}
    out=${5:?usage: contract.sh fuzz DOC URL SECS OUT}
    install_venv
    mkdir -p "$out"
    # Every check but four, which do not apply: positive_data_acceptance expects schema-valid
    # requests to succeed, but the document cannot state every rule (a public key must be a
    # curve point, a policy's approvals must fit its require_approval, a transition must be
    # allowed, ...), and those refusals are 400s by design; ensure_resource_availability expects
    # a created upload to last, but a refused file or commit discards its upload by design
    # (docs/api.md, "A push"); ignored_auth and object_level_authorization test authentication
    # schemes, and the API has none (identity is the socket's peer credentials). One worker:
    # Hypothesis parses lambdas with ast in every thread, which CPython 3.11 does not survive
    # ("AST constructor recursion depth mismatch"). Two retries of a request that failed at the
    # network level (a reset or refused TCP connection through the socat bridge): on a loaded
    # CI machine one request in some thousands did (a "Network Error" with no answer at all);
    # the daemon's answers are what is checked, and a retried request is checked the same way.
    cd "$out"
    # The hooks add a deserializer for the NDJSON answer of verify (tests/contract/hooks.py).
    ARCA_OPENAPI=$doc SCHEMATHESIS_HOOKS=hooks PYTHONPATH=$repo/tests/contract \
      "$VENV/bin/st" run "$doc" --url "$url" \
      --checks all \
      --exclude-checks positive_data_acceptance,ensure_resource_availability,ignored_auth,object_level_authorization \
      --max-time "$secs" --workers 1 --seed "${ARCA_CONTRACT_SEED:-15}" \
      --request-timeout 60 --request-retries 2 \
      --report json --report-json-path "$out/report.json" \
      >"$out/output.txt" 2>&1
    ;;
  *)
    echo "usage: contract.sh install | validate DOC | fuzz DOC URL SECS OUT" >&2
    exit 2
    ;;
esac
