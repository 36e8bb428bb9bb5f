#!/usr/bin/env bash
# The project's test command (README names it, .ci/run calls it). On a fresh machine of this
# kind it installs what the tests need (the Python venv with the official OSS SDKs), then runs:
# format and lint checks, the Rust unit and integration tests (server, client, append stream,
# real FUSE mounts), and the SDK conformance suite against `appendfs serve`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

step() { printf '\n==> %s\n' "$*"; }

if [[ $(id -u) -ne 0 || ! -e /dev/fuse ]]; then
    echo "test.sh: the mount tests need root and /dev/fuse (uid $(id -u), /dev/fuse $( [[ -e /dev/fuse ]] && echo present || echo missing ))" >&2
    exit 1
fi

if [[ ! -x /sbin/mount.fuse3 && ! -x /usr/sbin/mount.fuse3 ]]; then
    # tests/mount_helper.rs mounts through mount(8), which needs Debian's mount.fuse3.
    step "Debian fuse3 (mount.fuse3 for mount -t fuse.appendfs)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
fi

missing=()
command -v logrotate >/dev/null || missing+=(logrotate)
command -v rsync >/dev/null || missing+=(rsync)
[[ -x /usr/sbin/nginx ]] || missing+=(nginx)
if (( ${#missing[@]} )); then
    # tests/rotation.rs runs the real log-host tools against a mount.
    step "log-host tools for tests/rotation.rs: ${missing[*]}"
    apt-cache policy "${missing[@]}" | grep -q 'Candidate: [0-9]' || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "Python venv with the official OSS SDKs"
scripts/setup-python.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "build"
cargo build --locked --all-targets

step "SDK conformance suite (oss2 V1/V4, alibabacloud-oss-v2) against appendfs serve"
APPENDFS_BIN="$REPO/target/debug/appendfs" .venv/bin/pytest -q tests/conformance

step "Rust tests: unit, server, client, append stream, FUSE mounts"
# Two threads: the machine has two cores and the mount tests start servers and mounts.
cargo test --locked --all-targets -- --test-threads=2
