#!/usr/bin/env bash
# Memory of a long-running mount: the daemon's resident set after listing a directory of N
# objects (`ls -l`) and after stat-ing N distinct missing names, each done twice. The second
# round must add (almost) nothing: the inode table follows the kernel's references, "not
# found" answers live in a bounded map, a listing is held a page at a time (only listings of
# at most 20,000 entries are remembered), and freed heap pages go back to the system.
#   scripts/memory.sh [N=100000]
# Uses a release build, `appendfs serve --memory` and one mount, all on 127.0.0.1.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
N=${1:-100000}

cargo build --release --quiet
scripts/setup-python.sh >/dev/null 2>&1
BIN="$REPO/target/release/appendfs"
WORK=$(mktemp -d /tmp/appendfs-memory.XXXXXX)
MNT="$WORK/mnt"
mkdir -p "$MNT"
export OSS_ACCESS_KEY_ID=memory OSS_ACCESS_KEY_SECRET=memory-secret

cleanup() {
    set +e
    [[ -n "${MOUNT_PID:-}" ]] && kill -TERM "$MOUNT_PID" 2>/dev/null && timeout 30 tail --pid="$MOUNT_PID" -f /dev/null
    grep -q " $MNT " /proc/mounts && umount -l "$MNT"
    [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" serve --memory --anonymous --listen 127.0.0.1:0 --bucket mem >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.out" && break; sleep 0.1; done
EP=$(sed -n 's/^listening on //p' "$WORK/serve.out")
[[ -n "$EP" ]] || { echo "server did not start" >&2; exit 1; }

echo "creating $N objects under big/ ..."
.venv/bin/python - "$EP" "$N" <<'PY'
import sys, oss2
from concurrent.futures import ThreadPoolExecutor
ep, n = sys.argv[1], int(sys.argv[2])
b = oss2.Bucket(oss2.AnonymousAuth(), ep, "mem")
def put(i):
    b.put_object(f"big/object-{i:07d}.log", b"x")
with ThreadPoolExecutor(16) as pool:
    list(pool.map(put, range(n)))
PY

"$BIN" mount oss://mem "$MNT" --endpoint "$EP" -f 2>"$WORK/mount.err" &
MOUNT_PID=$!
for _ in $(seq 100); do grep -q " $MNT " /proc/mounts && break; sleep 0.1; done
grep -q " $MNT " /proc/mounts || { echo "mount did not come up" >&2; cat "$WORK/mount.err" >&2; exit 1; }

rss() { awk '/VmRSS/ {print $2}' "/proc/$MOUNT_PID/status"; }   # KiB
printf '%-52s %10s KiB\n' "after mounting" "$(rss)"
for round in 1 2; do
    t0=$(date +%s.%N)
    count=$(ls -l "$MNT/big" | wc -l)
    t1=$(date +%s.%N)
    printf '%-52s %10s KiB   (%d entries, %.2f s)\n' "after ls -l of $N objects, round $round" "$(rss)" "$((count - 1))" "$(python3 -c "print($t1-$t0)")"
    sleep 2   # past the metadata TTL: the listing is stale now
done
for round in 1 2; do
    t0=$(date +%s.%N)
    python3 - "$MNT" "$N" "$round" <<'PY'
import os, sys
mnt, n, r = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    try:
        os.stat(f"{mnt}/missing-{r}-{i}")
    except FileNotFoundError:
        pass
PY
    t1=$(date +%s.%N)
    printf '%-52s %10s KiB   (%.2f s)\n' "after stat of $N missing names, round $round" "$(rss)" "$(python3 -c "print($t1-$t0)")"
done
