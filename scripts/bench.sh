#!/usr/bin/env bash
# Side-by-side benchmarks on loopback (issue 12). Machines here are noisy, so every figure is a
# ratio of two things measured in the same run, alternating the sides round by round. Each row
# also gets the requests and bytes the mount caused (from the server's `GET /_appendfs/stats`,
# differences taken around the mount's side only), the daemon's CPU time and its peak RSS
# (VmRSS sampled every 50 ms during the workload).
#
#   1  cold `cat` of SIZE MiB through a fresh mount        vs  `curl` GET
#   2  `dd bs=1M` of SIZE MiB into a new file              vs  one `curl -T` AppendObject
#   3  cold `cat` with the server shaped (--latency 30ms --bandwidth 40MiB)
#                                                          vs  one `curl`, and 8 parallel ranged `curl`s
#   4  `echo line >> f` in a shell loop                    vs  oss2 append_object in a Python loop
#   5  `ls -l` of a directory of OBJECTS objects, fresh mount vs oss2 ObjectIteratorV2 paging;
#      then a second `ls -l` (requests counted), on the default 1 s TTL and on a 10 s TTL mount,
#      and a first `ls -l` on a `--no-xattrs` mount
#   6  four mounts appending lines with O_APPEND to one object vs one mount appending them alone
#   7  `tail -f` through the mount of an object another client appends 4 KiB to every 100 ms
#   8  random 4 KiB O_DIRECT preads of the SIZE MiB object  vs  the same ranged GETs (keep-alive)
#
# Uses a release build and `appendfs serve --memory --anonymous`, all on 127.0.0.1. Writes the
# table to BENCHMARKS.md (with the machine and the command) and prints it. When `perf` is there,
# one extra cold `cat` of row 1 (not timed) is profiled and the daemon's top symbols are added.
#
#   scripts/bench.sh [--quick] [--size MIB] [--rounds N] [--appends N] [--objects N]
#                    [--lines N] [--tail N] [--random N] [--out FILE] [--no-profile] [--only ROWS]
#   --only 1,3,8: run only these rows (3 is 3a and 3b, 5 is 5a-5d); the table is printed and,
#             unless --out is given, not written to BENCHMARKS.md (a partial run is no record)
#   defaults: --size 256 --rounds 3 --appends 2000 --objects 10000 --lines 500 --tail 100 --random 2000
#   --quick:  --size 32  --rounds 2 --appends 300  --objects 2000  --lines 100 --tail 30  --random 300
# Needs root and /dev/fuse (FUSE mounts), curl, python3.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CMDLINE="scripts/bench.sh${*:+ $*}"

SIZE_MIB=256 ROUNDS=3 APPENDS=2000 OBJECTS=10000 LINES=500 TAILN=100 RANDN=2000
OUT="$REPO/BENCHMARKS.md"
PROFILE=1
ONLY="" OUT_SET=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) SIZE_MIB=32 ROUNDS=2 APPENDS=300 OBJECTS=2000 LINES=100 TAILN=30 RANDN=300 ;;
        --size) SIZE_MIB=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --appends) APPENDS=$2; shift ;;
        --objects) OBJECTS=$2; shift ;;
        --lines) LINES=$2; shift ;;
        --tail) TAILN=$2; shift ;;
        --random) RANDN=$2; shift ;;
        --out) OUT=$2; OUT_SET=1; shift ;;
        --only) ONLY=",$2,"; shift ;;
        --no-profile) PROFILE=0 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

want() { [[ -z "$ONLY" || "$ONLY" == *",$1,"* ]]; }  # ROW: is this row to be run?
[[ -n "$ONLY" && $OUT_SET -eq 0 ]] && OUT=/dev/null

for tool in curl python3 dd; do
    command -v "$tool" >/dev/null || {
        echo "bench: $tool missing; installing it" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    }
done

nice -n 10 cargo build --release --quiet
scripts/setup-python.sh >/dev/null 2>&1
PY="$REPO/.venv/bin/python"
BIN="$REPO/target/release/appendfs"
WORK=$(mktemp -d /tmp/appendfs-bench.XXXXXX)
export OSS_ACCESS_KEY_ID=bench OSS_ACCESS_KEY_SECRET=bench-secret
SERVER_PIDS=() MOUNT_PIDS=() RSS_PID="" TAIL_PID=""

cleanup() {
    set +e
    [[ -n "$RSS_PID" ]] && kill "$RSS_PID" 2>/dev/null
    [[ -n "$TAIL_PID" ]] && kill "$TAIL_PID" 2>/dev/null
    for m in "$WORK"/m/*; do
        grep -q " $m " /proc/mounts 2>/dev/null && umount "$m" 2>/dev/null
    done
    for p in "${MOUNT_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null && timeout 20 tail --pid="$p" -f /dev/null
    done
    for m in "$WORK"/m/*; do
        grep -q " $m " /proc/mounts 2>/dev/null && umount -l "$m"
    done
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/m" "$WORK/st"

# ---- servers and mounts ---------------------------------------------------------------------
start_server() {  # NAME [serve options] -> sets EP_<NAME>
    local name=$1; shift
    "$BIN" serve --memory --anonymous --listen 127.0.0.1:0 --bucket bench "$@" \
        >"$WORK/serve-$name.out" 2>"$WORK/serve-$name.err" &
    SERVER_PIDS+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$WORK/serve-$name.out" && break; sleep 0.1; done
    local ep; ep=$(sed -n 's/^listening on //p' "$WORK/serve-$name.out")
    [[ -n "$ep" ]] || { echo "server $name did not start" >&2; cat "$WORK/serve-$name.err" >&2; exit 1; }
    printf -v "EP_$name" '%s' "$ep"
}
declare -A MPID
mount_fs() {  # NAME ENDPOINT [mount options]: mounts at $WORK/m/NAME, PID in MPID[NAME]
    local name=$1 ep=$2; shift 2
    local dir="$WORK/m/$name"
    mkdir -p "$dir"
    "$BIN" mount oss://bench "$dir" --endpoint "$ep" -f "$@" 2>>"$WORK/mount-$name.err" &
    MPID[$name]=$!
    MOUNT_PIDS+=($!)
    for _ in $(seq 200); do grep -q " $dir " /proc/mounts && return 0; sleep 0.05; done
    echo "mount $name did not come up" >&2; cat "$WORK/mount-$name.err" >&2; exit 1
}
unmount_fs() {  # NAME: unmount (drains) and wait for the daemon to exit
    local name=$1 pid=${MPID[$1]}
    umount "$WORK/m/$name" || kill -TERM "$pid"
    timeout 60 tail --pid="$pid" -f /dev/null || true
    unset "MPID[$name]"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK=$(getconf CLK_TCK)

# ---- measurement bookkeeping ----------------------------------------------------------------
# results.tsv: WORKLOAD KEY VALUE (one line per round and side); stats: snapshots around the
# mount's side; rss: peak VmRSS (KiB) of the daemons of a workload, sampled while it runs.
RES="$WORK/results.tsv"
: >"$RES"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.6f}')"; }
SNAP=0
stats_begin() {  # WORKLOAD EP
    SNAP=$((SNAP + 1))
    curl -sf "$2/_appendfs/stats" >"$WORK/st/$1.$SNAP.a.json"
    ST_CUR="$1.$SNAP" ST_EP=$2
}
stats_end() { curl -sf "$ST_EP/_appendfs/stats" >"$WORK/st/$ST_CUR.b.json"; }
rss_begin() {  # WORKLOAD: sample VmRSS of every daemon in MPID (re-read each tick: remounts count)
    RSS_WL=$1
    : >"$WORK/rss.max"
    (
        max=0
        exec 2>/dev/null
        while :; do
            for f in "$WORK"/pids/*; do
                [[ -e "$f" ]] || continue
                while read -r k v _; do
                    [[ "$k" == VmRSS: ]] && ((v > max)) && { max=$v; echo "$max" >"$WORK/rss.max"; }
                done <"/proc/$(cat "$f")/status" 2>/dev/null || true
            done
            sleep 0.05
        done
    ) &
    RSS_PID=$!
}
rss_end() {
    kill "$RSS_PID" 2>/dev/null; wait "$RSS_PID" 2>/dev/null || true
    RSS_PID=""
    record "$RSS_WL" rss_kib "$(cat "$WORK/rss.max" 2>/dev/null || echo 0)"
}
track_pids() {  # NAME...: the sampler follows these daemons (call again after a remount)
    rm -rf "$WORK/pids"; mkdir -p "$WORK/pids"
    for n in "$@"; do [[ -n "${MPID[$n]:-}" ]] && echo "${MPID[$n]}" >"$WORK/pids/$n"; done
    return 0
}

start_server lo
start_server sh --latency 30ms --bandwidth 40MiB
EP=$EP_lo
SIZE=$((SIZE_MIB * 1024 * 1024))
head -c "$SIZE" /dev/urandom >"$WORK/data.bin"
curl -sf -X PUT -H 'Expect:' -T "$WORK/data.bin" "$EP/bench/big.bin" >/dev/null
echo "bench: size ${SIZE_MIB} MiB, ${ROUNDS} rounds${ONLY:+, rows ${ONLY:1:-1}}" >&2
# The shaped upload is paced to 40 MiB/s per connection: 8 ranged parts would need multipart;
# one PUT is simplest.
want 3 && curl -sf -X PUT -H 'Expect:' -T "$WORK/data.bin" "$EP_sh/bench/big.bin" >/dev/null
mount_fs main "$EP"
M="$WORK/m/main"

# ---- 1. cold sequential read, loopback ------------------------------------------------------
if want 1; then
echo "bench: 1 cold read" >&2
rss_begin read_lo
for r in $(seq "$ROUNDS"); do
    mount_fs cold "$EP"; track_pids cold
    c0=$(cpu_ticks "${MPID[cold]}")
    stats_begin read_lo "$EP"
    t0=$(now); cat "$WORK/m/cold/big.bin" >/dev/null; t1=$(now)
    stats_end
    record read_lo mount "$(elapsed "$t0" "$t1")"
    record read_lo cpu "$(( $(cpu_ticks "${MPID[cold]}") - c0 ))"
    unmount_fs cold
    t0=$(now); curl -sf "$EP/bench/big.bin" -o /dev/null; t1=$(now)
    record read_lo curl "$(elapsed "$t0" "$t1")"
done
rss_end
: >"$WORK/profile.txt"
if [[ $PROFILE -eq 1 ]] && command -v perf >/dev/null; then
    mount_fs cold "$EP"
    perf record -F 1999 -g -p "${MPID[cold]}" -o "$WORK/perf.data" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.5
    cat "$WORK/m/cold/big.bin" >/dev/null
    kill -INT "$PERF_PID"; wait "$PERF_PID" || true
    perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -15 | sed -E 's/( +-)+ *$//; s/^ +//; s/  +/  /g' >"$WORK/profile.txt" || true
    unmount_fs cold
fi
fi

# ---- 2. streaming append, loopback ----------------------------------------------------------
if want 2; then
echo "bench: 2 streaming append" >&2
track_pids main; rss_begin append_lo
for r in $(seq "$ROUNDS"); do
    c0=$(cpu_ticks "${MPID[main]}")
    stats_begin append_lo "$EP"
    t0=$(now); dd if="$WORK/data.bin" of="$M/w$r.bin" bs=1M status=none; t1=$(now)
    stats_end
    record append_lo mount "$(elapsed "$t0" "$t1")"
    record append_lo cpu "$(( $(cpu_ticks "${MPID[main]}") - c0 ))"
    t0=$(now)
    curl -sf -X POST -H 'Expect:' -T "$WORK/data.bin" "$EP/bench/c$r.bin?append&position=0" -o /dev/null
    t1=$(now)
    record append_lo curl "$(elapsed "$t0" "$t1")"
    if [[ $r -eq 1 ]]; then
        curl -sf "$EP/bench/w$r.bin" | cmp -s - "$WORK/data.bin" || { echo "dd through the mount: object differs" >&2; exit 1; }
        curl -sf "$EP/bench/c$r.bin" | cmp -s - "$WORK/data.bin" || { echo "curl append: object differs" >&2; exit 1; }
    fi
done
rss_end
fi

# ---- 3. cold sequential read, shaped server -------------------------------------------------
if want 3; then
echo "bench: 3 shaped read" >&2
rss_begin read_sh
for r in $(seq "$ROUNDS"); do
    mount_fs cold "$EP_sh"; track_pids cold
    c0=$(cpu_ticks "${MPID[cold]}")
    stats_begin read_sh "$EP_sh"
    t0=$(now); cat "$WORK/m/cold/big.bin" >/dev/null; t1=$(now)
    stats_end
    record read_sh mount "$(elapsed "$t0" "$t1")"
    record read_sh cpu "$(( $(cpu_ticks "${MPID[cold]}") - c0 ))"
    unmount_fs cold
    t0=$(now); curl -sf "$EP_sh/bench/big.bin" -o /dev/null; t1=$(now)
    record read_sh curl1 "$(elapsed "$t0" "$t1")"
    part=$(( (SIZE + 7) / 8 ))
    pids=()
    t0=$(now)
    for i in $(seq 0 7); do
        a=$((i * part)) b=$(( (i + 1) * part - 1 ))
        ((b >= SIZE)) && b=$((SIZE - 1))
        curl -sf -r "$a-$b" "$EP_sh/bench/big.bin" -o /dev/null & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(now)
    record read_sh curl8 "$(elapsed "$t0" "$t1")"
done
rss_end
fi

# ---- 4. echo >> vs the oss2 SDK -------------------------------------------------------------
if want 4; then
echo "bench: 4 echo >>" >&2
track_pids main; rss_begin echo
for r in $(seq "$ROUNDS"); do
    : >"$M/a$r.log"
    c0=$(cpu_ticks "${MPID[main]}")
    stats_begin echo "$EP"
    t0=$(now)
    for i in $(seq "$APPENDS"); do echo "line $i" >>"$M/a$r.log"; done
    t1=$(now)
    stats_end
    record echo mount "$(elapsed "$t0" "$t1")"
    record echo cpu "$(( $(cpu_ticks "${MPID[main]}") - c0 ))"
    record echo sdk "$("$PY" - "$EP" "$APPENDS" "$r" <<'PY'
import sys, time, oss2
ep, n, r = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = oss2.Bucket(oss2.AnonymousAuth(), ep, "bench")
pos, t0 = 0, time.time()
for i in range(n):
    pos = b.append_object(f"sdk{r}.log", pos, f"line {i}\n").next_position
print(f"{time.time() - t0:.6f}")
PY
)"
    lines=$(curl -sf "$EP/bench/a$r.log" | wc -l)
    [[ "$lines" -eq "$APPENDS" ]] || { echo "echo round $r: $lines of $APPENDS lines" >&2; exit 1; }
done
rss_end
fi

# ---- 5. ls -l of OBJECTS objects ------------------------------------------------------------
if want 5; then
echo "bench: 5 ls -l of $OBJECTS objects (creating them)" >&2
"$PY" - "$EP" "$OBJECTS" <<'PY'
import sys, oss2
from concurrent.futures import ThreadPoolExecutor
ep, n = sys.argv[1], int(sys.argv[2])
b = oss2.Bucket(oss2.AnonymousAuth(), ep, "bench")
with ThreadPoolExecutor(16) as ex:
    list(ex.map(lambda i: b.put_object(f"many/f{i:06d}.txt", b"x" * 100), range(n)))
PY
rss_begin ls
for r in $(seq "$ROUNDS"); do
    mount_fs ls "$EP"; track_pids ls
    c0=$(cpu_ticks "${MPID[ls]}")
    stats_begin ls "$EP"
    t0=$(now); n=$(ls -l "$WORK/m/ls/many" | wc -l); t1=$(now)
    stats_end
    [[ $n -eq $((OBJECTS + 1)) ]] || { echo "ls -l listed $((n - 1)) of $OBJECTS" >&2; exit 1; }
    record ls mount "$(elapsed "$t0" "$t1")"
    record ls cpu "$(( $(cpu_ticks "${MPID[ls]}") - c0 ))"
    stats_begin ls2 "$EP"
    t0=$(now); ls -l "$WORK/m/ls/many" >/dev/null; t1=$(now)
    stats_end
    record ls2 mount "$(elapsed "$t0" "$t1")"
    unmount_fs ls
    # the same on a mount whose TTL (10 s) outlasts the first listing
    mount_fs lsttl "$EP" --metadata-ttl 10s; track_pids lsttl
    stats_begin ls3a "$EP"
    t0=$(now); ls -l "$WORK/m/lsttl/many" >/dev/null; t1=$(now)
    stats_end
    record ls3a mount "$(elapsed "$t0" "$t1")"
    stats_begin ls3 "$EP"
    t0=$(now); ls -l "$WORK/m/lsttl/many" >/dev/null; t1=$(now)
    stats_end
    record ls3 mount "$(elapsed "$t0" "$t1")"
    unmount_fs lsttl
    # the same first listing on a mount that answers no xattrs (the kernel stops asking)
    mount_fs lsnox "$EP" --no-xattrs; track_pids lsnox
    stats_begin ls4 "$EP"
    t0=$(now); ls -l "$WORK/m/lsnox/many" >/dev/null; t1=$(now)
    stats_end
    record ls4 mount "$(elapsed "$t0" "$t1")"
    unmount_fs lsnox
    t=$("$PY" - "$EP" <<'PY'
import sys, time, oss2
b = oss2.Bucket(oss2.AnonymousAuth(), sys.argv[1], "bench")
t0 = time.time()
n = sum(1 for _ in oss2.ObjectIteratorV2(b, prefix="many/", delimiter="/", max_keys=1000))
print(f"{time.time() - t0:.6f}")
PY
)
    record ls sdk "$t"; record ls2 sdk "$t"; record ls3a sdk "$t"; record ls3 sdk "$t"; record ls4 sdk "$t"
done
rss_end
fi

# ---- 6. four mounts appending to one object -------------------------------------------------
if want 6; then
echo "bench: 6 four mounts, one object" >&2
for i in 1 2 3 4; do mount_fs "c$i" "$EP"; done
track_pids c1 c2 c3 c4; rss_begin contend
for r in $(seq "$ROUNDS"); do
    : >"$M/shared$r.log"
    stats_begin contend "$EP"
    t0=$(now)
    pids=()
    for i in 1 2 3 4; do
        ( for j in $(seq "$LINES"); do echo "mount $i line $j" >>"$WORK/m/c$i/shared$r.log"; done ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(now)
    stats_end
    record contend mount "$(elapsed "$t0" "$t1")"
    : >"$M/alone$r.log"
    stats_begin alone "$EP"
    t0=$(now)
    for j in $(seq $((4 * LINES))); do echo "alone line $j" >>"$WORK/m/c1/alone$r.log"; done
    t1=$(now)
    stats_end
    record contend alone "$(elapsed "$t0" "$t1")"
    got=$(curl -sf "$EP/bench/shared$r.log" | sort | uniq | wc -l)
    all=$(curl -sf "$EP/bench/shared$r.log" | wc -l)
    [[ $got -eq $((4 * LINES)) && $all -eq $((4 * LINES)) ]] \
        || { echo "four mounts round $r: $all lines, $got distinct, of $((4 * LINES))" >&2; exit 1; }
done
rss_end
for i in 1 2 3 4; do unmount_fs "c$i"; done
fi

# ---- 7. tail -f of a growing log ------------------------------------------------------------
if want 7; then
echo "bench: 7 tail -f" >&2
head -c 4096 /dev/urandom | base64 -w 0 | head -c 4095 >"$WORK/chunk"; echo >>"$WORK/chunk"
curl -sf -X POST -H 'Expect:' --data-binary @"$WORK/chunk" "$EP/bench/tail.log?append&position=0" -o /dev/null
track_pids main; rss_begin tail
stats_begin tail "$EP"
tail -c +1 -f "$M/tail.log" >"$WORK/tail.out" 2>/dev/null &
TAIL_PID=$!
pos=4096
t0=$(now)
for i in $(seq "$TAILN"); do
    curl -sf -X POST -H 'Expect:' --data-binary @"$WORK/chunk" "$EP/bench/tail.log?append&position=$pos" -o /dev/null
    pos=$((pos + 4096))
    sleep 0.1
done
for _ in $(seq 100); do [[ $(stat -c %s "$WORK/tail.out") -ge $pos ]] && break; sleep 0.1; done
t1=$(now)
kill "$TAIL_PID"; wait "$TAIL_PID" 2>/dev/null || true; TAIL_PID=""
stats_end
rss_end
record tail appended "$pos"
record tail followed "$(stat -c %s "$WORK/tail.out")"
record tail mount "$(elapsed "$t0" "$t1")"
fi

# ---- 8. random 4 KiB reads ------------------------------------------------------------------
if want 8; then
echo "bench: 8 random 4 KiB reads" >&2
rss_begin random
for r in $(seq "$ROUNDS"); do
    mount_fs rnd "$EP"; track_pids rnd
    c0=$(cpu_ticks "${MPID[rnd]}")
    stats_begin random "$EP"
    record random mount "$("$PY" - "$WORK/m/rnd/big.bin" "$SIZE" "$RANDN" "$r" <<'PY'
import os, sys, mmap, random, time
path, size, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
offs = [rng.randrange(size // 4096) * 4096 for _ in range(n)]
try:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
except OSError:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
buf = mmap.mmap(-1, 4096)
t0 = time.time()
for o in offs:
    assert os.preadv(fd, [buf], o) == 4096
print(f"{time.time() - t0:.6f}")
PY
)"
    stats_end
    record random cpu "$(( $(cpu_ticks "${MPID[rnd]}") - c0 ))"
    unmount_fs rnd
    record random http "$("$PY" - "$EP" "$SIZE" "$RANDN" "$r" <<'PY'
import sys, random, time, http.client, urllib.parse
ep, size, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
offs = [rng.randrange(size // 4096) * 4096 for _ in range(n)]
u = urllib.parse.urlparse(ep)
c = http.client.HTTPConnection(u.hostname, u.port)
t0 = time.time()
for o in offs:
    c.request("GET", "/bench/big.bin", headers={"Range": f"bytes={o}-{o + 4095}"})
    resp = c.getresponse()
    assert len(resp.read()) == 4096
print(f"{time.time() - t0:.6f}")
PY
)"
done
rss_end
fi

# ---- the table ------------------------------------------------------------------------------
MACHINE="$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), \
$(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory, Linux $(uname -r)"
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+local changes')"
"$PY" - "$WORK" "$OUT" "$SIZE_MIB" "$ROUNDS" "$APPENDS" "$OBJECTS" "$LINES" "$TAILN" "$RANDN" \
    "$TICK" "$MACHINE" "$CMDLINE" "$COMMIT" <<'PY'
import sys, json, glob, os, statistics as st, datetime
(work, out, size, rounds, appends, objects, lines, tailn, randn,
 tick, machine, cmd, commit) = sys.argv[1:]
size, rounds, appends, objects = int(size), int(rounds), int(appends), int(objects)
lines, tailn, randn, tick = int(lines), int(tailn), int(randn), int(tick)

res = {}
for ln in open(f"{work}/results.tsv"):
    wl, key, val = ln.rstrip("\n").split("\t")
    res.setdefault(wl, {}).setdefault(key, []).append(float(val))

EXCLUDE = {"tail": {"AppendObject"}}  # the writer's own requests, not the mount's
def stats(wl):
    """Sum of differences over every snapshot pair of a workload: {op: {field: n}}."""
    tot = {}
    for a in glob.glob(f"{work}/st/{wl}.*.a.json"):
        b = a[:-6] + "b.json"
        ja, jb = json.load(open(a)), json.load(open(b))
        for op, fb in jb["operations"].items():
            if op in EXCLUDE.get(wl, ()):
                continue
            fa = ja["operations"].get(op, {})
            for k, v in fb.items():
                if isinstance(v, (int, float)):
                    d = v - fa.get(k, 0)
                    if d:
                        tot.setdefault(op, {}).setdefault(k, 0)
                        tot[op][k] += d
    return tot

def med(wl, key):
    return st.median(res[wl][key])

def reqs(wl, per):
    """Requests of the mount per `per` (a round, a line...), by operation."""
    s = stats(wl)
    parts = []
    for op in sorted(s, key=lambda o: -s[o].get("requests", 0)):
        n = s[op].get("requests", 0)
        if n:
            bad = n - s[op].get("2xx", 0)
            parts.append(f"{op} {fmt(n / per)}" + (f" ({fmt(bad / per)} failed)" if bad else ""))
    return ", ".join(parts) or "0"

def io(wl, per):
    s = stats(wl)
    sent = sum(v.get("bytes_sent", 0) for v in s.values()) / per
    recv = sum(v.get("bytes_received", 0) for v in s.values()) / per
    return f"{mib(sent)} / {mib(recv)}"

def op_count(wl, *ops):
    s = stats(wl)
    return sum(v.get("requests", 0) for o, v in s.items() if not ops or o in ops)

def mib(b):
    if b >= 1 << 20: return f"{b / (1 << 20):.1f} MiB"
    if b >= 1 << 10: return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"

def fmt(x):
    if x == int(x): return str(int(x))
    if abs(x) < 0.01: return f"{x:.4f}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"

RSS_LIMIT = 64 + 256  # MiB: issue 12's 64 MiB plus the default --cache-size
def rss(wl):
    if wl not in res or "rss_kib" not in res[wl]:
        return "–"
    v = max(res[wl]["rss_kib"]) / 1024
    return f"{v:.0f} MiB" + (f" **(> {RSS_LIMIT})**" if v > RSS_LIMIT else "")

def cpu(wl):
    return f"{med(wl, 'cpu') / tick:.2f} s" if "cpu" in res.get(wl, {}) else "–"

rows, notes = [], []
def row(n, name, mine, other, ratio, target, ok, req, byts, wl, note=None):
    rows.append((n, name, mine, other, f"{ratio:.2f}" if isinstance(ratio, float) else ratio,
                 target, "yes" if ok else ("**no**" if ok is not None else "–"), req, byts,
                 cpu(wl), rss(wl)))
    if ok is False and note:
        notes.append(f"- **{n}. {name}**: {note}")

# 1
if "read_lo" in res:
    m, c = size / med("read_lo", "mount"), size / med("read_lo", "curl")
    g = op_count("read_lo", "GetObject") / rounds
    row("1", f"cold `cat` {size} MiB, loopback (MiB/s) / `curl` GET", f"{m:.0f}", f"{c:.0f}", m / c,
        "≥ 0.6×", m / c >= 0.6, reqs("read_lo", rounds), io("read_lo", rounds), "read_lo",
        f"{g:.0f} GETs per read ({mib(size * 1048576 / max(g, 1))} each on average); the daemon used {cpu('read_lo')} of CPU "
        f"per {size} MiB ({size / max(med('read_lo', 'cpu') / tick, 1e-9):.0f} MiB per CPU-second) while the whole curl GET took "
        f"{med('read_lo', 'curl'):.2f} s of wall time: CPU per byte in the daemon (body handling, copies into FUSE replies) "
        "plus `cat`'s round trips through FUSE, on 2 shared cores.")
# 2
if "append_lo" in res:
    m, c = size / med("append_lo", "mount"), size / med("append_lo", "curl")
    a = op_count("append_lo", "AppendObject") / rounds
    row("2", f"`dd bs=1M` {size} MiB into a new file (MiB/s) / one `curl -T` AppendObject",
        f"{m:.0f}", f"{c:.0f}", m / c, "≥ 0.8×", m / c >= 0.8, reqs("append_lo", rounds),
        io("append_lo", rounds), "append_lo",
        f"{a:.0f} AppendObject per {size} MiB (one in flight per object by OSS's position rule, each "
        f"waiting for the previous answer), daemon CPU {cpu('append_lo')}; curl streams all bytes in one request.")
# 3
if "read_sh" in res:
    m = size / med("read_sh", "mount")
    c1, c8 = size / med("read_sh", "curl1"), size / med("read_sh", "curl8")
    g = op_count("read_sh", "GetObject") / rounds
    gmax = 48 * size / 256
    row("3a", f"cold `cat` {size} MiB, shaped 30 ms / 40 MiB/s per connection (MiB/s) / one `curl`",
        f"{m:.0f}", f"{c1:.0f}", m / c1, "≥ 5×", m / c1 >= 5, reqs("read_sh", rounds),
        io("read_sh", rounds), "read_sh",
        f"{g:.0f} GETs per read at {m:.0f} MiB/s: throughput is about what "
        f"{m / 40:.1f} connections at 40 MiB/s deliver; the prefetch window does not keep 8 ranged GETs in flight.")
    row("3b", f"the same / 8 parallel ranged `curl`s", f"{m:.0f}", f"{c8:.0f}", m / c8,
        f"≥ 0.8×, ≤ 48 GETs per 256 MiB ({fmt(gmax)} here)", m / c8 >= 0.8 and g <= gmax, f"GetObject {g:.0f} per read", "", "read_sh",
        f"{g:.0f} GETs per {size} MiB (target {fmt(gmax)}); see 3a.")
# 4
if "echo" in res:
    m, s = appends / med("echo", "mount"), appends / med("echo", "sdk")
    per = op_count("echo") / (appends * rounds)
    row("4", "`echo >>` (ops/s) / oss2 `append_object` loop", f"{m:.0f}", f"{s:.0f}", m / s,
        "≥ 2×, 1 request each", m / s >= 2 and per <= 1.0001, reqs("echo", appends * rounds) + " per echo",
        io("echo", appends * rounds) + " per echo", "echo",
        f"{per:.4g} requests per echo; each `echo >>` is open, flush (bash's dup2), write, flush (waits for the AppendObject answer), release: "
        "several FUSE round trips plus one HTTP round trip, against the SDK's one HTTP round trip on a kept-alive connection, both on one shared CPU pair.")
# 5
if "ls" in res:
    m, s = med("ls", "mount"), med("ls", "sdk")
    pages = -(-objects // 1000)
    m3a = med("ls3a", "mount")
    row("5a", f"`ls -l` of {objects} objects, fresh mount, default 1 s TTL (s) / oss2 ObjectIteratorV2 (1000 per page)",
        f"{m:.2f}", f"{s:.2f}", m / s, "≤ 1.5× (time)", m / s <= 1.5, reqs("ls", rounds), io("ls", rounds), "ls",
        f"{reqs('ls', rounds)} per listing, where {pages} pages would do. "
        + ("An `ls -l` that lasts longer than the 1 s TTL counted from when the listing arrived finds the entries "
           "stat-ed after it expired, and each then costs a HEAD and a LIST. "
           if op_count("ls", "HeadObject") / rounds > 10 else "")
        + f"Row 5c, the same on a 10 s TTL mount: {reqs('ls3a', rounds)}, {m3a:.2f} s = {m3a / s:.2f}× the SDK. "
        "With no requests at all, the per-entry FUSE round trips still put `ls -l` "
        f"at {med('ls3', 'mount') / s:.2f}× the SDK (row 5d): `ls -l` asks `security.selinux` and "
        "`system.posix_acl_access` of every file, two getxattr round trips each, while readdirplus "
        "answers the stat. A mount with `--no-xattrs` (row 5e) is asked neither: "
        f"{med('ls4', 'mount'):.2f} s = {med('ls4', 'mount') / s:.2f}× the SDK. The xattrs stay on by "
        "default (the read-only `user.oss.*` attributes are part of the mount's contract).")
    m2 = med("ls2", "mount")
    n2 = op_count("ls2") / rounds
    row("5b", "second `ls -l` right after, default 1 s TTL (s) / SDK", f"{m2:.2f}", f"{s:.2f}", m2 / s,
        "0 requests if within TTL", None, reqs("ls2", rounds), io("ls2", rounds), "ls")
    m3 = med("ls3", "mount")
    n3 = op_count("ls3") / rounds
    row("5c", "first `ls -l` on a fresh `--metadata-ttl 10s` mount (s) / SDK", f"{m3a:.2f}", f"{s:.2f}", m3a / s,
        "≤ 1.5× (time)", m3a / s <= 1.5, reqs("ls3a", rounds), io("ls3a", rounds), "ls",
        f"{reqs('ls3a', rounds)} per listing: requests are not what bounds it here; the two getxattr round trips "
        "per entry are (see 5a and 5e), against one HTTP round trip per 1000 entries for the SDK.")
    row("5d", "second `ls -l` on that mount, within its TTL (s) / SDK", f"{m3:.2f}", f"{s:.2f}", m3 / s,
        "0 requests", n3 == 0, reqs("ls3", rounds), io("ls3", rounds), "ls",
        f"{reqs('ls3', rounds)} per second listing although every entry was listed within the TTL.")
    m4 = med("ls4", "mount")
    row("5e", "first `ls -l` on a fresh `--no-xattrs` mount, default TTL (s) / SDK", f"{m4:.2f}", f"{s:.2f}", m4 / s,
        "≤ 1.5× (time)", m4 / s <= 1.5, reqs("ls4", rounds), io("ls4", rounds), "ls")
# 6
if "contend" in res:
    total = 4 * lines
    m, a = total / med("contend", "mount"), total / med("contend", "alone")
    per = op_count("contend", "AppendObject", "HeadObject") / (total * rounds)
    per_alone = op_count("alone", "AppendObject", "HeadObject") / (total * rounds)
    row("6", f"4 mounts × {lines} `echo >>` to one object (lines/s) / 1 mount alone", f"{m:.0f}", f"{a:.0f}",
        m / a, "≥ 0.8×, ≤ 1.5 req/line", m / a >= 0.8 and per <= 1.5,
        f"{reqs('contend', total * rounds)} per line (alone: {per_alone:.2f})", io("contend", total * rounds) + " per line",
        "contend",
        f"{per:.2f} AppendObject+HeadObject per line with 4 writers (alone {per_alone:.2f}): every lost position race costs a 409. "
        "A writer learns where the others left the end only from a 409 (OSS tells nothing else), and each `echo >>` "
        "waits for its append, so a mount has one line at a time and nothing to batch: strict turn-taking would cost "
        "a 409 per line. Runs of one writer are what make lines cheaper, and they are bounded (8 chunks, then the "
        "writer steps aside) so that no mount is starved; a loser's retry after its first loss is immediate, since "
        "any pause lets a back-to-back winner keep the end. Without these rules: 2.3-3.0 per line. The writers "
        "also serialize on one object's position, so the aggregate is bounded by one AppendObject round trip at a "
        "time plus the lost ones.")
# 7
if "tail" in res:
    app, fol = res["tail"]["appended"][0], res["tail"]["followed"][0]
    got = stats("tail").get("GetObject", {}).get("bytes_sent", 0)
    row("7", f"`tail -f` of a log growing 4 KiB every 100 ms ×{tailn}: bytes fetched / bytes in the log",
        mib(got), mib(app), got / app, "≤ 1.1×", got / app <= 1.1 and fol >= app,
        reqs("tail", 1) + " (the writer's AppendObject not counted)", io("tail", 1), "tail",
        f"{mib(got)} fetched for {mib(app)} ({op_count('tail', 'GetObject')} GETs); tail received {mib(fol)}.")
# 8
if "random" in res:
    m, h = randn / med("random", "mount"), randn / med("random", "http")
    gr = op_count("random", "GetObject") / (randn * rounds)
    bpr = stats("random").get("GetObject", {}).get("bytes_sent", 0) / (randn * rounds)
    row("8", f"random 4 KiB O_DIRECT reads of {size} MiB (reads/s) / ranged GETs, one kept-alive connection",
        f"{m:.0f}", f"{h:.0f}", m / h, "small reads stay small (≤ 64 KiB fetched per read)", bpr <= 64 * 1024,
        reqs("random", randn * rounds) + " per read", io("random", randn * rounds) + " per read", "random",
        f"{gr:.2f} GETs and {mib(bpr)} fetched per 4 KiB read ({mib(bpr * randn)} per round for "
        f"{mib(4096 * randn)} read): the first read in a 1 MiB block fetches the whole block.")

over = sorted({r[0] for r in rows if "**(>" in r[-1]})
if over:
    notes.append(f"- **Peak RSS** above 64 MiB + the 256 MiB cache in rows {', '.join(over)}: "
                 "the excess is memory outside the block cache (not attributed by this script).")
head = ["#", "workload (appendfs ÷ baseline)", "appendfs", "baseline", "ratio", "target", "met",
        "mount's requests", "bytes sent / received by server", "daemon CPU per round", "peak RSS"]
tbl = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
tbl += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
table = "\n".join(tbl)
print(table)
prof = open(f"{work}/profile.txt").read().strip() if os.path.exists(f"{work}/profile.txt") else ""
profile = ("\n### Profile of the daemon during one cold `cat` of row 1\n\n"
           "`perf record -F 1999 -g` on the mount process, self time by symbol (top 15):\n\n"
           "```\n" + prof + "\n```\n") if prof else ""
md = f"""# Benchmarks

Generated by `scripts/bench.sh`; every ratio compares two things measured in the same run,
rounds alternating the two sides, medians over the rounds (the machines here are shared and
noisy, so only ratios are comparable between runs). Requests and bytes are the mount's own,
from the server's `/_appendfs/stats`, per round unless the row says otherwise. Peak RSS is the
largest VmRSS of a mount daemon sampled every 50 ms during the workload (the configured cache is
the default 256 MiB, max dirty 256 MiB).

- Command: `{cmd}` (size {size} MiB, {rounds} rounds, {appends} appends, {objects} objects,
  {lines} lines per mount, {tailn} tail appends, {randn} random reads)
- Machine: {machine}
- appendfs: {commit}; server: `appendfs serve --memory --anonymous` on 127.0.0.1
  (rows 3a/3b: `--latency 30ms --bandwidth 40MiB`)
- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC

{table}

## What bounds it (rows that miss their target)

{chr(10).join(notes) if notes else "Every target is met."}
{profile}"""
open(out, "w").write(md)
PY
echo "bench: wrote $OUT" >&2
