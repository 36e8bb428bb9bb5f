#!/usr/bin/env bash
# Side-by-side benchmarks on loopback. Machines here are noisy, so every figure is a ratio of two
# things measured in the same run, alternating sides over several rounds:
#   read    `cat` of an object through the mount   vs  `curl` GET of it from the server
#   write   `dd bs=1M` into the mount (appends)     vs  `curl` PUT of the same bytes
#   append  `echo line >> f` in a shell loop        vs  oss2 append_object in a Python loop
# Uses a release build, `appendfs serve --memory` and one mount, all on 127.0.0.1.
#   scripts/bench.sh [SIZE_MIB=256] [ROUNDS=3] [APPENDS=2000]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SIZE_MIB=${1:-256}
ROUNDS=${2:-3}
APPENDS=${3:-2000}

cargo build --release --quiet
scripts/setup-python.sh >/dev/null 2>&1
BIN="$REPO/target/release/appendfs"
WORK=$(mktemp -d /tmp/appendfs-bench.XXXXXX)
MNT="$WORK/mnt"
mkdir -p "$MNT"
export OSS_ACCESS_KEY_ID=bench OSS_ACCESS_KEY_SECRET=bench-secret

cleanup() {
    set +e
    [[ -n "${MOUNT_PID:-}" ]] && kill -TERM "$MOUNT_PID" 2>/dev/null && timeout 20 tail --pid="$MOUNT_PID" -f /dev/null
    grep -q " $MNT " /proc/mounts && umount -l "$MNT"
    [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" serve --memory --anonymous --listen 127.0.0.1:0 --bucket bench >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.out" && break; sleep 0.1; done
EP=$(sed -n 's/^listening on //p' "$WORK/serve.out")
[[ -n "$EP" ]] || { echo "server did not start" >&2; exit 1; }

"$BIN" mount oss://bench "$MNT" --endpoint "$EP" -f 2>"$WORK/mount.err" &
MOUNT_PID=$!
for _ in $(seq 100); do grep -q " $MNT " /proc/mounts && break; sleep 0.1; done
grep -q " $MNT " /proc/mounts || { echo "mount did not come up" >&2; cat "$WORK/mount.err" >&2; exit 1; }

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$WORK/data.bin"
now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.1f}')"; }   # amount start end -> per second

declare -a R_MNT R_CURL W_MNT W_CURL A_MNT A_SDK
for r in $(seq "$ROUNDS"); do
    # write: appends through the mount vs one PUT
    rm -f "$MNT/w$r.bin"
    t0=$(now); dd if="$WORK/data.bin" of="$MNT/w$r.bin" bs=1M status=none; t1=$(now)
    W_MNT+=("$(rate "$SIZE_MIB" "$t0" "$t1")")
    t0=$(now); curl -sf -X PUT --data-binary @"$WORK/data.bin" "$EP/bench/p$r.bin" >/dev/null; t1=$(now)
    W_CURL+=("$(rate "$SIZE_MIB" "$t0" "$t1")")
    # read: cat through a fresh open (page cache dropped on open) vs curl GET
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now); cat "$MNT/p$r.bin" >/dev/null; t1=$(now)
    R_MNT+=("$(rate "$SIZE_MIB" "$t0" "$t1")")
    t0=$(now); curl -sf "$EP/bench/p$r.bin" -o /dev/null; t1=$(now)
    R_CURL+=("$(rate "$SIZE_MIB" "$t0" "$t1")")
    cmp -s "$MNT/w$r.bin" "$WORK/data.bin" || { echo "round $r: mount content differs" >&2; exit 1; }
    # small appends: shell echo loop vs the official SDK in a loop
    : >"$MNT/a$r.log"
    t0=$(now)
    for i in $(seq "$APPENDS"); do echo "line $i" >>"$MNT/a$r.log"; done
    t1=$(now)
    A_MNT+=("$(rate "$APPENDS" "$t0" "$t1")")
    A_SDK+=("$(.venv/bin/python - "$EP" "$APPENDS" "$r" <<'PY'
import sys, time, oss2
ep, n, r = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = oss2.Bucket(oss2.AnonymousAuth(), ep, "bench")
pos, t0 = 0, time.time()
for i in range(n):
    pos = b.append_object(f"sdk{r}.log", pos, f"line {i}\n").next_position
print(f"{n / (time.time() - t0):.1f}")
PY
)")
    lines=$(wc -l <"$MNT/a$r.log")
    [[ "$lines" -eq "$APPENDS" ]] || { echo "round $r: $lines of $APPENDS lines" >&2; exit 1; }
done

ratio() { python3 -c "import statistics as s; a=[float(x) for x in '$1'.split()]; b=[float(x) for x in '$2'.split()]; print(f'{s.median(a):9.1f} {s.median(b):9.1f}   ratio {s.median(a)/s.median(b):5.2f}')"; }
printf '%-44s %9s %9s\n' "median over $ROUNDS rounds" mount other
printf '%-44s %s\n' "read MiB/s   (cat via mount / curl GET)" "$(ratio "${R_MNT[*]}" "${R_CURL[*]}")"
printf '%-44s %s\n' "write MiB/s  (dd bs=1M via mount / curl PUT)" "$(ratio "${W_MNT[*]}" "${W_CURL[*]}")"
printf '%-44s %s\n' "appends/s    (echo >> via mount / oss2 SDK)" "$(ratio "${A_MNT[*]}" "${A_SDK[*]}")"
