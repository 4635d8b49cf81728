#!/usr/bin/env bash
# Compares ftx with the usual tools over loopback (127.0.0.1):
#
#   one large file:  md5sum alone, nc, nc + md5sum on both ends,
#                    nc + md5sum + fsync, rsync -a (daemon), ftx (push),
#                    ftx resumed after a kill -9 at two thirds,
#                    ftx get from ftx serve (pull), cold and digest cached,
#                    curl from nginx (sendfile on) and from ftx serve --http
#   many small files: tar | nc, tar | nc + sync -f, tar | nc + fsync each,
#                     rsync -a (daemon), ftx; on disk (TMPDIR), and onto
#                     tmpfs (tar | nc, ftx) where /dev/shm is one
#   many entries:     time per entry and peak RSS of each side of an ftx
#                     send of N empty files on tmpfs (ENTRIES)
#
# Each measurement runs RUNS times (default 3), every run into a fresh
# output directory; the table shows medians in seconds and ratios against
# md5sum (large file) and against tar|nc + sync -f (small files). The small-
# file methods take turns run by run, and their output stays until all runs
# are done: creating files right after deleting thousands is several times
# slower on some disks, and the turns spread whatever the disk does over all
# methods alike. Every received copy is checked against the source (outside
# the timed part); a mismatch or a failed tool stops the script.
#
# Not part of `cargo test`. Run from anywhere:
#
#   tests/bench/compare.sh                      # 1 GiB file, 2000 small files
#   SIZE=256M FILES=500 tests/bench/compare.sh  # quicker
#   SIZE=0 FILES=100000 SMALL_MAX=2048 SMALL_PER_DIR=100 LINK= \
#     ENTRIES="100000 1000000" tests/bench/compare.sh   # issue 25's shapes
#
# Environment: SIZE (default 1G, binary units: 256M, 1G, 12345),
# FILES (default 2000), SMALL_MAX (largest small file, default 65536;
# sizes are 0 to that), SMALL_PER_DIR (default 20), RUNS (default 3),
# TMPDIR (where the data goes), SHM (a tmpfs for the tmpfs rows, default
# /dev/shm; SHM= skips them), ENTRIES (a list of entry counts for the
# many-entries rows, default none), FSYNC_EACH=0 (no "fsync each" row:
# minutes for 100,000 files on a slow disk), KEEP=1 (keep the work
# directory). Installs netcat-openbsd and rsync with
# apt-get when they are missing. Linux only (uses ss, /proc).
#
# Notes on fairness: all sources are in the page cache (caches are not
# dropped between runs). ftx makes every received file durable before it
# reports it (in batches: syncfs, renames, syncfs); plain nc, tar and rsync
# -a do not, hence the "+ sync" rows: `sync -f` syncs the file system of the
# received tree once (the same durability, the fastest way), and "fsync
# each" runs coreutils `sync FILE...` on every received file. ftx send runs
# with --no-cache, so that later runs do not reuse the first run's digests,
# except in the "digest cached" row (the re-send after a failed attempt).
# Every run starts with a `sync` (untimed): a sync inside a run (ftx's
# syncfs, `sync -f`) would otherwise also write out what earlier runs of
# other methods left dirty. Each method reads its source again in every
# run, so the page cache stays warm even where the kernel pages out what
# was idle for a while (this development VM runs DAMON with a pageout
# scheme: about 30 s).

set -euo pipefail
# Plain rows are plain whatever the caller's environment holds.
unset FTX_TOKEN

SIZE=${SIZE:-1G}
FILES=${FILES:-2000}
SMALL_MAX=${SMALL_MAX:-65536}
SMALL_PER_DIR=${SMALL_PER_DIR:-20}
SHM=${SHM-/dev/shm}
ENTRIES=${ENTRIES:-}
FSYNC_EACH=${FSYNC_EACH:-1}
RUNS=${RUNS:-3}
KEEP=${KEEP:-0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

[[ $FILES =~ ^[0-9]+$ ]] || die "FILES must be a number, not '$FILES'"
[[ $SMALL_MAX =~ ^[0-9]+$ ]] || die "SMALL_MAX must be a number, not '$SMALL_MAX'"
[[ $SMALL_PER_DIR =~ ^[1-9][0-9]*$ ]] || die "SMALL_PER_DIR must be a positive number"
for n in $ENTRIES; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "ENTRIES must be numbers, not '$n'"; done
if [[ -n $SHM ]] && [[ $(stat -f -c %T "$SHM" 2>/dev/null) != tmpfs ]]; then
    echo "compare.sh: $SHM is not a tmpfs: no tmpfs rows" >&2
    SHM=""
fi
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
bytes=$(numfmt --from=iec -- "${SIZE%iB}") || die "bad SIZE '$SIZE'"
[[ $bytes =~ ^[0-9]+$ ]] || die "bad SIZE '$SIZE'"

# --- tools -----------------------------------------------------------------

have_openbsd_nc() {
    command -v nc >/dev/null && nc -h 2>&1 | grep -q 'OpenBSD netcat'
}

missing=()
have_openbsd_nc || missing+=(netcat-openbsd)
command -v rsync >/dev/null || missing+=(rsync)
command -v ss >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
command -v nginx >/dev/null || missing+=(nginx-light)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y "${missing[@]}" >/dev/null ||
        { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y "${missing[@]}" >/dev/null; } ||
        die "cannot install ${missing[*]}"
fi
have_openbsd_nc || die "nc is not OpenBSD netcat (need -N)"

echo "building ftx (release)" >&2
(cd "$repo" && cargo build --release --quiet) || die "cargo build failed"
FTX=$repo/target/release/ftx
[[ -x $FTX ]] || die "no $FTX"

# --- work directory, processes, cleanup -------------------------------------

W=$(mktemp -d "${TMPDIR:-/tmp}/ftx-compare.XXXXXX")
pids=() # every background process this script started (process group leaders)

cleanup() {
    local p
    for p in "${pids[@]}"; do
        # Each is the leader of its own process group (setsid): the group
        # holds only what this script started for that measurement.
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ -n ${ns_made:-} ]]; then
        ip netns del ftxcmpA 2>/dev/null || true
        ip netns del ftxcmpB 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then
        echo "kept $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background in its own session (so that a pipeline inside
# can be killed as a group) and sets $bg to its pid.
start_bg() {
    setsid "$@" &
    bg=$!
    pids+=("$bg")
}

# Waits for background pid $1 and forgets it. Returns its exit status.
finish_bg() {
    local p=$1 rc=0 q keep=()
    wait "$p" || rc=$?
    for q in "${pids[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
    pids=("${keep[@]+"${keep[@]}"}")
    return "$rc"
}

port_listening() {
    ss -ltnH "sport = :$1" 2>/dev/null | grep -q .
}

# A free TCP port, starting the search at $1.
free_port() {
    local p=$1
    while port_listening "$p"; do
        p=$((p + 1))
        ((p < 65000)) || die "no free port"
    done
    echo "$p"
}

# Waits (bounded, 10 s) until port $1 is listening; $2 is the listener's pid.
wait_port() {
    local i
    for ((i = 0; i < 1000; i++)); do
        port_listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "listener for port $1 exited early"
        sleep 0.01
    done
    die "nothing listening on port $1 after 10 s"
}

now() { date +%s.%N; }
# Sets $secs to the seconds since timestamp $1.
elapsed() { secs=$(awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'); }

# --- data --------------------------------------------------------------------

echo "generating $(numfmt --to=iec-i "$bytes")B file and $FILES small files in $W" >&2
src=$W/src
mkdir -p "$src/small"
big=$src/big.bin
if ((bytes > 0)); then
    head -c "$bytes" /dev/urandom >"$big"
fi
small_bytes=0
# Written by one process: a fork per file takes minutes for 100,000.
small_bytes=$(python3 - "$src/small" "$FILES" "$SMALL_MAX" "$SMALL_PER_DIR" <<'PY'
import os, random, sys
root, files, top, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
total = 0
for i in range(files):
    d = os.path.join(root, "d%05d" % (i // per))
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    n = random.randint(0, top)
    with open(os.path.join(d, "f%07d.bin" % i), "wb") as f:
        f.write(os.urandom(n))
    total += n
print(total)
PY
)
sync
big_md5=""
((bytes == 0)) || big_md5=$(md5sum <"$big" | cut -d' ' -f1)

# --- rsync daemon --------------------------------------------------------------

rport=$(free_port 8730)
rout=$W/rsync-out
cat >"$W/rsyncd.conf" <<EOF
port = $rport
address = 127.0.0.1
use chroot = no
pid file = $W/rsyncd.pid
log file = $W/rsyncd.log
uid = $(id -u)
gid = $(id -g)

[mod]
path = $rout
read only = no
EOF
mkdir -p "$rout"
start_bg rsync --daemon --no-detach --config="$W/rsyncd.conf"
rsyncd=$bg
wait_port "$rport" "$rsyncd"

# --- one run of each method ----------------------------------------------------
# Each sets $secs to the elapsed seconds. $1 is a fresh, empty output dir.
# They run in the main shell (not in $(...)), so that every background
# process is known to the cleanup trap.

check_big() { cmp -s "$big" "$1" || die "$2: $1 differs from the source"; }
check_small() { diff -r "$src/small" "$1" >/dev/null || die "$2: $1 differs from the source"; }

fsync_tree() { find "$1" -type f -exec sync -- {} +; }
syncfs_tree() { sync -f "$1"; }

m_md5sum() {
    local t
    t=$(now)
    md5sum "$big" >"$1/sum"
    elapsed "$t"
    [[ $(cut -d' ' -f1 "$1/sum") == "$big_md5" ]] || die "md5sum: unstable digest"
}

# $2: "" | md5 | md5sync
nc_big() {
    local out=$1 mode=$2 port t sum
    port=$(free_port $((20000 + RANDOM % 12000)))
    start_bg nc -l -p "$port" >"$out/big.bin"
    local rx=$bg
    wait_port "$port" "$rx"
    t=$(now)
    [[ $mode == "" ]] || sum=$(md5sum <"$big" | cut -d' ' -f1)
    nc -N 127.0.0.1 "$port" <"$big"
    finish_bg "$rx" || die "nc receiver failed"
    [[ $mode != md5sync ]] || sync -- "$out/big.bin"
    [[ $mode == "" ]] || sum=$(md5sum <"$out/big.bin" | cut -d' ' -f1)
    elapsed "$t"
    [[ $mode == "" || $sum == "$big_md5" ]] || die "nc + md5sum: digest mismatch"
    check_big "$out/big.bin" "nc"
}
m_nc() { nc_big "$1" ""; }
m_nc_md5() { nc_big "$1" md5; }
m_nc_md5_sync() { nc_big "$1" md5sync; }

m_rsync_big() {
    local t
    rm -rf "$rout" && mkdir "$rout"
    t=$(now)
    rsync -a "$big" "rsync://127.0.0.1:$rport/mod/"
    elapsed "$t"
    check_big "$rout/big.bin" "rsync"
    rm -rf "$rout" && mkdir "$rout"
}

# Starts `ftx recv` into $1 (the rest: more recv options, e.g. --once) on
# a free loopback port; sets $rx to its pid and $addr to the address it
# prints ("listening on ADDR:PORT"), waiting at most 10 s.
start_recv() {
    local out=$1 i
    start_bg "$FTX" recv "${@:2}" -q --port 0 --bind 127.0.0.1 --out "$out" >"$W/ftx-recv.out" 2>"$W/ftx-recv.err"
    rx=$bg
    addr=""
    for ((i = 0; i < 1000; i++)); do
        addr=$(sed -n 's/^listening on //p' "$W/ftx-recv.out" | head -n1)
        [[ -z $addr ]] || break
        kill -0 "$rx" 2>/dev/null || die "ftx recv exited early: $(cat "$W/ftx-recv.err")"
        sleep 0.01
    done
    [[ -n $addr ]] || die "ftx recv did not print its address within 10 s"
}

# ftx: receiver --once, reads "listening on ADDR:PORT", then send. $2: source;
# $3: "cached" to let the sender use its digest cache (kept in $W/cache);
# the rest: more `ftx send` options.
ftx_run() {
    local out=$1 what=$2 cached=${3:-} t addr="" rx
    local extra=("${@:4}")
    start_recv "$out" --once
    t=$(now)
    # --no-cache: every run hashes its source, like the other methods.
    local cache=(--no-cache)
    [[ $cached != cached ]] || cache=()
    XDG_CACHE_HOME=$W/cache "$FTX" send -q "${cache[@]}" "${extra[@]}" "$what" "$addr" || die "ftx send failed"
    finish_bg "$rx" || die "ftx recv failed: $(cat "$W/ftx-recv.err")"
    elapsed "$t"
}
m_ftx_big() {
    ftx_run "$1" "$big"
    check_big "$1/big.bin" "ftx"
}
# The file through a pipe: `cat big | ftx send --name big.bin -`.
m_ftx_big_stdin() {
    local out=$1 t addr="" rx
    start_recv "$out" --once
    t=$(now)
    cat "$big" | "$FTX" send -q --name big.bin - "$addr" || die "ftx send - failed"
    finish_bg "$rx" || die "ftx recv failed: $(cat "$W/ftx-recv.err")"
    elapsed "$t"
    check_big "$1/big.bin" "ftx send -"
}
# A cold send checked with XXH3-128 instead of MD5.
m_ftx_big_xxh3() {
    ftx_run "$1" "$big" "" --hash xxh3
    check_big "$1/big.bin" "ftx --hash xxh3"
}
# The same file again after an interrupted or failed attempt: its digest is
# in the sender's cache (one untimed run before puts it there), the target
# is fresh.
m_ftx_big_cached() {
    ftx_run "$1" "$big" cached
    check_big "$1/big.bin" "ftx"
}
# The same two, encrypted: one token on both sides (FTX_TOKEN reaches the
# receiver and the sender that ftx_run starts).
m_ftx_big_token() {
    FTX_TOKEN=$token ftx_run "$1" "$big"
    check_big "$1/big.bin" "ftx, token"
}
m_ftx_big_token_cached() {
    FTX_TOKEN=$token ftx_run "$1" "$big" cached
    check_big "$1/big.bin" "ftx, token"
}

# Resume after a kill: a cold send (a new version of the file: no digest
# or checkpoint of an earlier run) killed with -9 once the receiver's
# partial passes two thirds of the file, then the same command, timed.
m_ftx_resume() {
    local out=$1 addr="" i rx tx t sz part=$1/.big.bin.ftx-part
    start_recv "$out"
    touch "$big"
    XDG_CACHE_HOME=$W/resume-cache start_bg "$FTX" send -q "$big" "$addr"
    tx=$bg
    for ((i = 0; i < 6000; i++)); do
        sz=$(stat -c %s "$part" 2>/dev/null || echo 0)
        ((sz * 3 >= bytes * 2)) && break
        kill -0 "$tx" 2>/dev/null || die "the send to interrupt ended before two thirds"
        sleep 0.01
    done
    kill -KILL -- "-$tx" 2>/dev/null || true
    finish_bg "$tx" || true
    t=$(now)
    XDG_CACHE_HOME=$W/resume-cache "$FTX" send -q "$big" "$addr" || die "the resumed send failed"
    elapsed "$t"
    kill -TERM -- "-$rx" 2>/dev/null || true
    finish_bg "$rx" || true
    check_big "$out/big.bin" "ftx, resumed"
}

# Pulls: `ftx serve` (started once per kind, kept running) and `ftx get`.
# $1: "cold" (the server has --no-cache) or "cached" (its digest cache, in
# $W/serve-cache, primed by one untimed get). Sets $serve_addr.
start_serve() {
    local kind=$1 i cache=(--no-cache) out=$W/serve-$1.out
    [[ $kind != cached ]] || cache=()
    XDG_CACHE_HOME=$W/serve-cache start_bg "$FTX" serve -q "${cache[@]}" --port 0 --bind 127.0.0.1 "$big" >"$out" 2>"$W/serve-$kind.err"
    serve_pid=$bg
    serve_addr=""
    for ((i = 0; i < 1000; i++)); do
        serve_addr=$(sed -n 's/^listening on //p' "$out" | head -n1)
        [[ -z $serve_addr ]] || break
        kill -0 "$serve_pid" 2>/dev/null || die "ftx serve exited early: $(cat "$W/serve-$kind.err")"
        sleep 0.01
    done
    [[ -n $serve_addr ]] || die "ftx serve did not print its address within 10 s"
}
stop_serve() {
    kill -TERM "$serve_pid" 2>/dev/null || true
    finish_bg "$serve_pid" || true
}
# HTTP: curl from nginx (sendfile on, its usual static-file setup) and
# from `ftx serve --http`, both serving $big, started once.
start_http_servers() {
    nport=$(free_port 18080)
    mkdir -p "$W/nginx/logs"
    # As root, its worker would run as nobody and not read $W (mode 0700).
    local user=""
    [[ $(id -u) -ne 0 ]] || user="user root;"
    cat >"$W/nginx/nginx.conf" <<EOF
$user
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    server { listen 127.0.0.1:$nport; root $src; }
}
EOF
    start_bg nginx -c "$W/nginx/nginx.conf" -p "$W/nginx"
    nginx_pid=$bg
    wait_port "$nport" "$nginx_pid"
    hport=$(free_port $((nport + 1)))
    start_bg "$FTX" serve -q --port 0 --bind 127.0.0.1 --http "127.0.0.1:$hport" "$big" >"$W/http.out" 2>"$W/http.err"
    http_pid=$bg
    wait_port "$hport" "$http_pid"
}
m_curl_nginx() {
    local t
    t=$(now)
    curl -sSf -o "$1/big.bin" "http://127.0.0.1:$nport/big.bin" || die "curl from nginx failed"
    elapsed "$t"
    check_big "$1/big.bin" "curl from nginx"
}
m_curl_ftx() {
    local t
    t=$(now)
    curl -sSf -o "$1/big.bin" "http://127.0.0.1:$hport/big.bin" || die "curl from ftx serve --http failed"
    elapsed "$t"
    check_big "$1/big.bin" "curl from ftx serve --http"
}

m_ftx_get() {
    local t
    t=$(now)
    "$FTX" get -q "$serve_addr/big.bin" --out "$1" >/dev/null || die "ftx get failed"
    elapsed "$t"
    check_big "$1/big.bin" "ftx get"
}

# $2: "" | syncfs | sync
tar_nc() {
    local out=$1 mode=$2 port t
    port=$(free_port $((20000 + RANDOM % 12000)))
    # shellcheck disable=SC2016 # expanded by the inner bash
    start_bg bash -c 'set -o pipefail; nc -l -p "$1" | tar x -C "$2"' _ "$port" "$out"
    local rx=$bg
    wait_port "$port" "$rx"
    t=$(now)
    tar c -C "$src" small | nc -N 127.0.0.1 "$port"
    finish_bg "$rx" || die "tar|nc receiver failed"
    [[ $mode != syncfs ]] || syncfs_tree "$out/small"
    [[ $mode != sync ]] || fsync_tree "$out/small"
    elapsed "$t"
    check_small "$out/small" "tar|nc"
}
m_tar_nc() { tar_nc "$1" ""; }
m_tar_nc_syncfs() { tar_nc "$1" syncfs; }
m_tar_nc_sync() { tar_nc "$1" sync; }

# Into a fresh directory of the module, named after $1; measure_turns
# removes it with the others.
m_rsync_small() {
    local t sub
    sub=$(basename "$1")
    t=$(now)
    rsync -a "$src/small" "rsync://127.0.0.1:$rport/mod/$sub/"
    elapsed "$t"
    check_small "$rout/$sub/small" "rsync"
}

m_ftx_small() {
    ftx_run "$1" "$src/small"
    check_small "$1/small" "ftx"
}

# --- measuring -------------------------------------------------------------------

declare -A median

# measure KEY FUNCTION: RUNS runs into fresh directories; stores the median.
measure() {
    local key=$1 fn=$2 r out times=()
    for ((r = 1; r <= RUNS; r++)); do
        out=$W/out-$r
        rm -rf "$out" && mkdir "$out"
        sync # nothing dirty from earlier runs: see "Notes on fairness"
        secs=""
        "$fn" "$out"
        times+=("$secs")
        rm -rf "$out"
    done
    set_median "$key" "${times[@]}"
}

# set_median KEY TIMES...: stores and reports the median of TIMES.
set_median() {
    local key=$1
    shift
    median[$key]=$(printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    echo "  $key: $* -> median ${median[$key]} s" >&2
}

# measure_turns KEY FUNCTION [KEY FUNCTION...]: RUNS rounds in which each
# method runs once, in turn, into a fresh directory; the directories are
# removed only after the last round.
# Into $TURNS_IN (default $W).
measure_turns() {
    local base=${TURNS_IN:-$W}
    local -a keys=() fns=()
    local -A took=()
    local r i out
    while (($#)); do
        keys+=("$1")
        fns+=("$2")
        shift 2
    done
    for ((r = 1; r <= RUNS; r++)); do
        for i in "${!keys[@]}"; do
            out=$base/turn-$i-$r
            mkdir "$out"
            sync # nothing dirty from earlier runs: see "Notes on fairness"
            secs=""
            "${fns[$i]}" "$out"
            took[$i]+="$secs "
        done
    done
    for i in "${!keys[@]}"; do
        # shellcheck disable=SC2086 # a list of numbers
        set_median "${keys[$i]}" ${took[$i]}
    done
    rm -rf "$base"/turn-* "$rout"/turn-*
}

big_rows=()
if ((bytes > 0)); then
    echo "large file, $RUNS runs each:" >&2
    big_rows=("md5sum" "nc" "nc + md5sum" "nc + md5sum + sync" "rsync -a" "ftx" "ftx get" "ftx --hash xxh3" "ftx, digest cached" "ftx get, cached" "cat | ftx send -" "ftx, token" "ftx, token, cached" "ftx, resume at 2/3" "curl < nginx" "curl < ftx --http")
    measure "md5sum" m_md5sum
    measure "nc" m_nc
    measure "nc + md5sum" m_nc_md5
    measure "nc + md5sum + sync" m_nc_md5_sync
    measure "rsync -a" m_rsync_big
    measure "ftx" m_ftx_big
    measure "ftx --hash xxh3" m_ftx_big_xxh3
    mkdir "$W/prime" && m_ftx_big_cached "$W/prime" && rm -rf "$W/prime"
    measure "ftx, digest cached" m_ftx_big_cached
    start_serve cold
    measure "ftx get" m_ftx_get
    stop_serve
    start_serve cached
    mkdir "$W/prime" && m_ftx_get "$W/prime" && rm -rf "$W/prime"
    measure "ftx get, cached" m_ftx_get
    stop_serve
    start_http_servers
    # One untimed download each: the digest is computed once, by then.
    mkdir "$W/prime" && m_curl_ftx "$W/prime" && m_curl_nginx "$W/prime" && rm -rf "$W/prime"
    measure "curl < nginx" m_curl_nginx
    measure "curl < ftx --http" m_curl_ftx
    measure "cat | ftx send -" m_ftx_big_stdin
    token=$("$FTX" token)
    measure "ftx, token" m_ftx_big_token
    measure "ftx, token, cached" m_ftx_big_token_cached
    measure "ftx, resume at 2/3" m_ftx_resume
fi
small_rows=()
if ((FILES > 0)); then
    echo "small files, $RUNS runs each:" >&2
    small_rows=("tar|nc" "tar|nc + sync -f")
    turns=("tar|nc" m_tar_nc "tar|nc + sync -f" m_tar_nc_syncfs)
    if [[ $FSYNC_EACH == 1 ]]; then
        small_rows+=("tar|nc + fsync each")
        turns+=("tar|nc + fsync each" m_tar_nc_sync)
    fi
    small_rows+=("rsync -a dir" "ftx dir")
    turns+=("rsync -a dir" m_rsync_small "ftx dir" m_ftx_small)
    measure_turns "${turns[@]}"
    if [[ -n $SHM ]]; then
        shm_w=$(mktemp -d "$SHM/ftx-compare.XXXXXX")
        small_rows+=("tar|nc, tmpfs" "ftx dir, tmpfs")
        TURNS_IN=$shm_w measure_turns "tar|nc, tmpfs" m_tar_nc "ftx dir, tmpfs" m_ftx_small
        rm -rf "$shm_w"
    fi
fi

# Many entries: N empty files on tmpfs (1000 a directory) sent with the
# default flags (digest cache on, in the work directory) to a receiver on
# tmpfs; time per entry and the peak RSS of each side (GNU time's %M).
# A receiver serves every session of the run (over 1,048,576 entries a
# run takes several), and is stopped with SIGINT after.
entries_rows=()
declare -A entries_rss
if [[ -n $ENTRIES && -n $SHM ]]; then
    echo "many entries (empty files on tmpfs), one run each:" >&2
    for n in $ENTRIES; do
        ew=$(mktemp -d "$SHM/ftx-entries.XXXXXX")
        python3 - "$ew/src/tree" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%05d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    open(os.path.join(d, "f%04d" % (i % 1000)), "w").close()
PY
        mkdir "$ew/out"
        start_bg /usr/bin/time -f %M -o "$W/rss-recv" "$FTX" recv -q --port 0 --bind 127.0.0.1 --out "$ew/out" >"$W/ftx-recv.out" 2>"$W/ftx-recv.err"
        rxt=$bg
        addr=""
        for ((i = 0; i < 1000; i++)); do
            addr=$(sed -n 's/^listening on //p' "$W/ftx-recv.out" | head -n1)
            [[ -z $addr ]] || break
            sleep 0.01
        done
        [[ -n $addr ]] || die "ftx recv did not print its address within 10 s"
        t=$(now)
        XDG_CACHE_HOME=$W/cache /usr/bin/time -f %M -o "$W/rss-send" "$FTX" send -q "$ew/src/tree" "$addr" || die "ftx send of $n entries failed"
        elapsed "$t"
        # The receiver is the child of time (setsid execs time, or forks it);
        # time writes "Command exited with non-zero status 130" before %M.
        rpid=$(pgrep -P "$rxt" -x ftx || true)
        if [[ -z $rpid ]]; then
            tp=$(pgrep -P "$rxt" -x time || true)
            [[ -z $tp ]] || rpid=$(pgrep -P "$tp" -x ftx || true)
        fi
        [[ -n $rpid ]] || die "cannot find the receiver of the many-entries run to stop it"
        kill -INT "$rpid"
        finish_bg "$rxt" || true
        got=$(find "$ew/out" -type f | wc -l)
        [[ $got == "$n" ]] || die "many entries: $got of $n files arrived"
        entries_rows+=("$n")
        entries_rss[$n]="$secs $(tail -n1 "$W/rss-send") $(tail -n1 "$W/rss-recv")"
        echo "  $n entries: ${entries_rss[$n]} (s, sender KiB, receiver KiB)" >&2
        rm -rf "$ew"
    done
fi

# --- report -------------------------------------------------------------------------

model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo
echo "machine: $(nproc) CPUs (${model:-unknown model}), kernel $(uname -r)"
echo "tools: $(nc -h 2>&1 | head -n1), $(rsync --version | head -n1 | sed 's/  */ /g'), $("$FTX" --version)"
echo "runs: $RUNS per row, medians; sources in page cache; loopback 127.0.0.1"
if ((bytes > 0)); then
    echo
    echo "one file, $bytes bytes ($(numfmt --to=iec-i "$bytes")B); ratio = time / md5sum; ftx ratio to 2 x md5sum: $(awk -v f="${median[ftx]}" -v m="${median[md5sum]}" 'BEGIN { printf "%.3f", (m > 0) ? f / (2 * m) : 0 }')"
    printf '%-22s %10s %10s %8s\n' "method" "median s" "MB/s" "ratio"
    for k in "${big_rows[@]}"; do
        awk -v k="$k" -v s="${median[$k]}" -v b="$bytes" -v ref="${median[md5sum]}" 'BEGIN {
            s0 = (s > 0) ? s : 1e-9; r0 = (ref > 0) ? ref : 1e-9
            printf "%-22s %10.3f %10.1f %8.2f\n", k, s, b / 1e6 / s0, s / r0 }'
    done
    awk -v p="${median[ftx]}" -v g="${median["ftx get"]}" -v ph="${median["ftx, digest cached"]}" -v gh="${median["ftx get, cached"]}" -v m="${median[md5sum]}" 'BEGIN {
        m0 = (m > 0) ? m : 1e-9
        printf "pull vs push, ratios to md5sum: cold %.2f vs %.2f (%+.1f%%); digest cached %.2f vs %.2f (%+.1f%%)\n",
            g / m0, p / m0, (p > 0) ? (g / p - 1) * 100 : 0, gh / m0, ph / m0, (ph > 0) ? (gh / ph - 1) * 100 : 0 }'
    awk -v n="${median["curl < nginx"]}" -v f="${median["curl < ftx --http"]}" 'BEGIN {
        printf "curl from ftx serve --http: %.2f x the throughput of nginx (sendfile on)\n", (f > 0) ? n / f : 0 }'
    awk -v c="${median[ftx]}" -v r="${median["ftx, resume at 2/3"]}" -v s="${median["cat | ftx send -"]}" 'BEGIN {
        printf "resume after a kill at 2/3: %.2f x a cold send; standard input: %.2f x a cold send\n", (c > 0) ? r / c : 0, (c > 0) ? s / c : 0 }'
    awk -v c="${median[ftx]}" -v ct="${median["ftx, token"]}" -v h="${median["ftx, digest cached"]}" -v ht="${median["ftx, token, cached"]}" 'BEGIN {
        printf "encrypted (token) vs plain: cold %.2f x the time; digest cached %.2f x the throughput\n",
            (c > 0) ? ct / c : 0, (ht > 0) ? h / ht : 0 }'
fi
if ((FILES > 0)); then
    echo
    echo "$FILES small files, $small_bytes bytes; ratio = time / (tar|nc + sync -f)"
    printf '%-22s %10s %10s %8s\n' "method" "median s" "files/s" "ratio"
    for k in "${small_rows[@]}"; do
        awk -v k="$k" -v s="${median[$k]}" -v n="$FILES" -v ref="${median["tar|nc + sync -f"]}" 'BEGIN {
            s0 = (s > 0) ? s : 1e-9; r0 = (ref > 0) ? ref : 1e-9
            printf "%-22s %10.3f %10.1f %8.2f\n", k, s, n / s0, s / r0 }'
    done
    if [[ -n ${median["ftx dir, tmpfs"]:-} ]]; then
        awk -v f="${median["ftx dir, tmpfs"]}" -v t="${median["tar|nc, tmpfs"]}" -v fd="${median["ftx dir"]}" -v td="${median["tar|nc + sync -f"]}" 'BEGIN {
            printf "ftx dir: %.2f x tar|nc + sync -f on disk; %.2f x tar|nc onto tmpfs\n", (td > 0) ? fd / td : 0, (t > 0) ? f / t : 0 }'
    fi
fi

if ((${#entries_rows[@]})); then
    echo
    echo "many entries: empty files on tmpfs, default flags; time per entry and peak RSS"
    printf '%-12s %10s %12s %14s %16s\n' "entries" "seconds" "us/entry" "sender MiB" "receiver MiB"
    for n in "${entries_rows[@]}"; do
        read -r es ss rs <<<"${entries_rss[$n]}"
        awk -v n="$n" -v s="$es" -v a="$ss" -v b="$rs" 'BEGIN {
            e = n + 1 + int((n + 999) / 1000)
            printf "%-12d %10.1f %12.1f %14.1f %16.1f\n", e, s, s * 1e6 / e, a / 1024, b / 1024 }'
    done
fi

# --- through a shaped link ------------------------------------------------------------
# Two network namespaces joined by a veth pair, the sender's side shaped with
# `tc tbf rate $LINK` (default 100mbit; LINK= skips this part; needs root and
# iproute2). The rate is ftx's body rate from its file_done event, so the
# hashing before the header does not count against the link.
LINK=${LINK-100mbit}
LINK_SIZE=${LINK_SIZE:-200M}
if [[ -n $LINK ]] && command -v ip >/dev/null && command -v tc >/dev/null && [[ $(id -u) == 0 ]]; then
    ns_made=1
    ip netns del ftxcmpA 2>/dev/null || true
    ip netns del ftxcmpB 2>/dev/null || true
    ip netns add ftxcmpA
    ip netns add ftxcmpB
    ip link add ftxcmpa type veth peer name ftxcmpb
    ip link set ftxcmpa netns ftxcmpA
    ip link set ftxcmpb netns ftxcmpB
    ip -n ftxcmpA addr add 10.231.0.1/24 dev ftxcmpa
    ip -n ftxcmpB addr add 10.231.0.2/24 dev ftxcmpb
    ip -n ftxcmpA link set ftxcmpa up
    ip -n ftxcmpB link set ftxcmpb up
    ip -n ftxcmpA link set lo up
    ip -n ftxcmpB link set lo up
    tc -n ftxcmpA qdisc add dev ftxcmpa root tbf rate "$LINK" burst 256kb latency 50ms
    head -c "$(numfmt --from=iec "$LINK_SIZE")" /dev/urandom >"$W/link.bin"
    mkdir -p "$W/link-out"
    start_bg ip netns exec ftxcmpB "$FTX" recv --once -q --port 7700 --bind 10.231.0.2 --out "$W/link-out" >"$W/link-recv.out" 2>"$W/link-recv.err"
    rx=$bg
    for ((i = 0; i < 1000; i++)); do
        grep -q '^listening on' "$W/link-recv.out" 2>/dev/null && break
        sleep 0.01
    done
    ip netns exec ftxcmpA "$FTX" send -q --no-cache --json "$W/link.bin" 10.231.0.2:7700 >"$W/link-send.jsonl" || die "ftx send over the shaped link failed"
    finish_bg "$rx" || die "ftx recv over the shaped link failed"
    check_big_link() { cmp -s "$W/link.bin" "$W/link-out/link.bin" || die "shaped link: copy differs"; }
    check_big_link
    rate=$(sed -n 's/.*"event":"file_done".*"mb_per_s":\([0-9.]*\).*/\1/p' "$W/link-send.jsonl" | head -n1)
    link_bits=$(awk -v l="$LINK" 'BEGIN { n = l + 0; u = tolower(l); sub(/^[0-9.]+/, "", u);
        m = (u ~ /^g/) ? 1e9 : (u ~ /^m/) ? 1e6 : (u ~ /^k/) ? 1e3 : 1; print n * m }')
    echo
    echo "through a $LINK link (veth + tc tbf, $LINK_SIZE file):"
    awk -v r="$rate" -v l="$link_bits" 'BEGIN {
        printf "ftx body rate %.1f MB/s = %.1f Mbit/s = %.1f%% of the link\n", r, r * 8, r * 8e6 / l * 100 }'
fi
