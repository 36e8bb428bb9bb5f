#!/usr/bin/env bash
# Create (or reuse) the Python virtualenv used by the SDK conformance suite.
#
#   scripts/setup-python.sh          -> $REPO/.venv with tests/conformance/requirements.txt
#
# Idempotent: a stamp file inside the venv holds the SHA-256 of the requirements file
# plus the interpreter version; when it matches, nothing is installed again.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${APPENDFS_VENV:-$REPO/.venv}"
REQ="$REPO/tests/conformance/requirements.txt"
STAMP="$VENV/.appendfs-requirements.sha256"
PY="${PYTHON:-python3}"

log() { printf 'setup-python: %s\n' "$*" >&2; }

command -v "$PY" >/dev/null 2>&1 || {
    log "$PY not found; installing Debian's python3"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
}

want="$( { sha256sum "$REQ" | cut -d' ' -f1; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
    && "$VENV/bin/python" -c 'import oss2, alibabacloud_oss_v2, pytest, requests' 2>/dev/null; then
    log "venv $VENV is up to date"
    exit 0
fi

make_venv() {
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
}

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating venv at $VENV"
    if ! make_venv 2>/tmp/setup-python-venv.err; then
        cat /tmp/setup-python-venv.err >&2 || true
        # Debian's python3 ships venv without ensurepip unless python3-venv is installed.
        log "python3 -m venv failed; installing python3-venv with apt-get"
        apt-get update -qq
        ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv "python${ver}-venv" >/dev/null 2>&1 \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        make_venv
    fi
fi

log "installing $(grep -cv '^\s*\(#\|$\)' "$REQ") pinned packages from $REQ"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
"$VENV/bin/python" -c 'import oss2, alibabacloud_oss_v2, pytest, requests'
echo "$want" > "$STAMP"
log "venv $VENV ready"
