#!/usr/bin/env bash
# How fast many small files could go at best while keeping ftx's promise
# (no file under its final name before it is complete): floor.c makes
# only the per-file system calls ftx makes, over TCP on 127.0.0.1, and
# takes turns with `tar | nc`, onto tmpfs (/dev/shm). Not part of
# `cargo test`; needs cc, nc, tar, python3, and root (linkat of an
# unnamed file). Run from anywhere:
#
#   tests/bench/floor.sh                   # 100,000 files of 0-2 KiB
#   FILES=20000 ROUNDS=5 tests/bench/floor.sh
#   HOWS="unnamed staged direct" tests/bench/floor.sh
#
# FILES (default 100000), SMALL_MAX (bytes, default 2048), SMALL_PER_DIR
# (default 100), ROUNDS (default 7), HOWS (how the receiving end makes
# each file, see floor.c: unnamed, as ftx does, by default; staged and
# direct for comparison; each takes its turn in every round). Prints each
# round, the medians and the ratios, and the CPU of each side of the last
# round of each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
FILES=${FILES:-100000}
SMALL_MAX=${SMALL_MAX:-2048}
SMALL_PER_DIR=${SMALL_PER_DIR:-100}
ROUNDS=${ROUNDS:-7}
HOWS=${HOWS:-unnamed}
for how in $HOWS; do
    case $how in unnamed | staged | direct) ;; *) echo "floor.sh: HOWS: unnamed, staged or direct, not '$how'" >&2; exit 1 ;; esac
done
die() { echo "floor.sh: $*" >&2; exit 1; }
for t in cc nc tar python3 ss; do command -v "$t" >/dev/null || die "$t is not installed"; done
[[ -d /dev/shm && -w /dev/shm ]] || die "no writable /dev/shm"
[[ $(id -u) == 0 ]] || die "run as root (linkat with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH)"
W=$(mktemp -d /dev/shm/ftx-floor.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
cc -O2 -o "$W/floor" "$here/floor.c" || die "cannot build floor.c"
mkdir -p "$W/src/small"
python3 - "$W/src/small" "$FILES" "$SMALL_MAX" "$SMALL_PER_DIR" <<'PY'
import os, random, sys
root, n, top, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(root, "d%05d" % (i // per))
    if i % per == 0:
        os.mkdir(d)
    with open(os.path.join(d, "f%05d" % (i % per)), "wb") as f:
        f.write(rng.randbytes(rng.randint(0, top)))
PY
now() { date +%s.%N; }
port_free() {
    local p=$((20000 + RANDOM % 20000))
    while ss -ltnH "sport = :$p" | grep -q .; do p=$((p + 1)); done
    echo "$p"
}
listening() {
    local i
    for i in $(seq 1000); do
        ss -ltnH "sport = :$1" | grep -q . && return 0
        sleep 0.01
    done
    die "nothing listens on port $1 after 10 s"
}
: >"$W/rounds"
for r in $(seq "$ROUNDS"); do
    rm -rf "$W/t"
    mkdir -p "$W/t"
    port=$(port_free)
    bash -c 'nc -l -p "$1" | tar x -C "$2"' _ "$port" "$W/t" &
    rx=$!
    pids=("$rx")
    listening "$port"
    t=$(now)
    tar c -C "$W/src" small | nc -N 127.0.0.1 "$port"
    wait "$rx" || die "tar | nc failed"
    row="$(echo "$(now) - $t" | bc)"
    line="round $r: tar | nc $row s"
    for how in $HOWS; do
        rm -rf "$W/f"
        mkdir -p "$W/f"
        port=$(port_free)
        /usr/bin/time -f "%U %S" -o "$W/recv-$how.cpu" "$W/floor" recv "$W/f" "$port" "$how" >/dev/null &
        rx=$!
        pids=("$rx")
        listening "$port"
        t=$(now)
        /usr/bin/time -f "%U %S" -o "$W/send-$how.cpu" "$W/floor" send "$W/src/small" "$port"
        wait "$rx" || die "floor recv ($how) failed"
        b=$(echo "$(now) - $t" | bc)
        pids=()
        diff -r "$W/src/small" "$W/f" >/dev/null || die "the floor's copy ($how) differs from the source"
        line="$line, floor $how $b s"
        row="$row $b"
    done
    echo "$line"
    echo "$row" >>"$W/rounds"
done
diff -r "$W/src/small" "$W/t/small" >/dev/null || die "tar's copy differs from the source"
python3 - "$W/rounds" $HOWS <<'PY'
import statistics as st, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
a = st.median(r[0] for r in rows)
print("medians: tar | nc %.3f s" % a)
for i, how in enumerate(sys.argv[2:], 1):
    b = st.median(r[i] for r in rows)
    print("  floor %-8s %.3f s: %.2f x tar | nc" % (how, b, b / a))
PY
for how in $HOWS; do
    echo "CPU of the last floor $how round (user system, s): sender $(cat "$W/send-$how.cpu"), receiver $(cat "$W/recv-$how.cpu")"
done
