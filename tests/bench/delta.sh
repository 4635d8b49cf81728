#!/usr/bin/env bash
# Delta updates against rsync: a file of SIZE (default 1 GiB) with 1 MiB
# changed in place (16 scattered 64 KiB writes) is sent again onto the old
# copy, by ftx (`ftx recv --overwrite`) and by an rsync daemon (delta
# transfer on, `--inplace`), and compared with a full cold ftx send.
#
#   - bytes on the wire, through a byte-counting proxy (countproxy.py);
#   - wall time over loopback, RUNS runs each (default 3), medians;
#   - wall time through a shaped link (two network namespaces, veth, `tc
#     tbf rate $LINK`, default 100mbit; needs root; LINK= skips it), one
#     run each.
#
# Every copy is compared with the source (outside the timed part). Not
# part of `cargo test`. Run from anywhere:
#
#   tests/bench/delta.sh
#   SIZE=256M RUNS=1 LINK= tests/bench/delta.sh    # quicker
#
# The sender runs with --no-cache (its file changed: nothing to reuse);
# the old copy is put in place with `cp` before each run, so the
# receiver has no block digests of it cached either (the cold case).

set -euo pipefail
unset FTX_TOKEN

SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}
LINK=${LINK-100mbit}
KEEP=${KEEP:-0}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
    echo "delta.sh: $*" >&2
    exit 1
}

command -v rsync >/dev/null || apt-get install -y --no-install-recommends rsync >/dev/null 2>&1 || die "needs rsync"
command -v python3 >/dev/null || die "needs python3 (the byte-counting proxy)"
(cd "$repo" && cargo build --release --quiet) || die "cargo build failed"
FTX=$repo/target/release/ftx
bytes=$(numfmt --from=iec "$SIZE")

W=$(mktemp -d "${TMPDIR:-/tmp}/ftx-delta.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n ${ns_made:-} ]]; then
        ip netns del ftxdeltaA 2>/dev/null || true
        ip netns del ftxdeltaB 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() {
    setsid "$@" &
    bg=$!
    pids+=("$bg")
}
finish_bg() {
    local p=$1 rc=0 q keep=()
    wait "$p" || rc=$?
    for q in "${pids[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
    pids=("${keep[@]+"${keep[@]}"}")
    return "$rc"
}
stop_bg() {
    kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null || true
    finish_bg "$1" || true
}
port_listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }
free_port() {
    local p=$1
    while port_listening "$p"; do p=$((p + 1)); done
    echo "$p"
}
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
elapsed() { secs=$(awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'); }
median_of() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- data: the old file, and the new one with 16 x 64 KiB changed ----------
echo "generating $(numfmt --to=iec-i "$bytes")B in $W" >&2
old=$W/old/big.bin
new=$W/src/big.bin
mkdir -p "$W/src" "$W/old"
head -c "$bytes" /dev/urandom >"$old"
cp "$old" "$new"
for ((i = 0; i < 16; i++)); do
    at=$((i * (bytes / 16) + (RANDOM * 4096) % (bytes / 16 - 65536)))
    head -c 65536 /dev/urandom | dd of="$new" bs=65536 seek="$at" oflag=seek_bytes conv=notrunc status=none
done
changed=$({ cmp -l "$old" "$new" || true; } | wc -l)
echo "bytes that differ: $changed" >&2
sync

# --- the receivers ------------------------------------------------------------
rport=$(free_port 8740)
rout=$W/rsync-out
mkdir -p "$rout"
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
start_bg rsync --daemon --no-detach --config="$W/rsyncd.conf"
wait_port "$rport" "$bg"

fout=$W/ftx-out
mkdir -p "$fout"
XDG_CACHE_HOME=$W/rx-cache start_bg "$FTX" recv -q --overwrite --port 0 --bind 127.0.0.1 --out "$fout" >"$W/recv.out" 2>"$W/recv.err"
frx=$bg
for ((i = 0; i < 1000; i++)); do
    faddr=$(sed -n 's/^listening on //p' "$W/recv.out" | head -n1)
    [[ -z $faddr ]] || break
    sleep 0.01
done
[[ -n $faddr ]] || die "ftx recv did not start: $(cat "$W/recv.err")"
fport=${faddr##*:}

check() { cmp -s "$new" "$1" || die "$2: $1 differs from the source"; }

# $1: "old" (the old copy put in place with cp: no digests of it cached),
# "placed" (the old copy sent by ftx first, untimed: the receiver cached
# its block digests as it wrote it) or "none"; $2: ftx's address.
ftx_once() {
    rm -f "$fout/big.bin"
    case $1 in
    old) cp "$old" "$fout/big.bin" ;;
    placed) "$FTX" send -q --no-cache "$old" "$2" || die "ftx send of the old copy failed" ;;
    esac
    sync
    local t
    t=$(now)
    "$FTX" send -q --no-cache "$new" "$2" || die "ftx send failed"
    elapsed "$t"
    check "$fout/big.bin" "ftx"
}
# $1: rsync's port.
rsync_once() {
    cp "$old" "$rout/big.bin"
    sync
    local t
    t=$(now)
    rsync -a --inplace --no-whole-file "$new" "rsync://127.0.0.1:$1/mod/" || die "rsync failed"
    elapsed "$t"
    check "$rout/big.bin" "rsync"
}

# --- bytes on the wire, one run each through the proxy ------------------------
proxied() { # $1: target port; the rest: the command (which gets the proxy's port in $pport)
    local target=$1
    shift
    pport=$(free_port 18740)
    start_bg python3 "$repo/tests/bench/countproxy.py" "$pport" 127.0.0.1 "$target" "$W/counts"
    local proxy=$bg
    wait_port "$pport" "$proxy"
    "$@"
    stop_bg "$proxy"
    read -r up down <"$W/counts"
    wire=$((up + down))
}
ftx_delta_proxied() { ftx_once old "127.0.0.1:$pport"; }
ftx_full_proxied() { ftx_once none "127.0.0.1:$pport"; }
rsync_proxied() { rsync_once "$pport"; }
proxied "$fport" ftx_delta_proxied
ftx_delta_wire=$wire
proxied "$fport" ftx_full_proxied
ftx_full_wire=$wire
proxied "$rport" rsync_proxied
rsync_wire=$wire

# --- loopback wall time ---------------------------------------------------------
full=() delta=() placed=() rs=()
for ((r = 1; r <= RUNS; r++)); do
    ftx_once none "$faddr"
    full+=("$secs")
    ftx_once old "$faddr"
    delta+=("$secs")
    ftx_once placed "$faddr"
    placed+=("$secs")
    rsync_once "$rport"
    rs+=("$secs")
done
echo "  ftx full: ${full[*]}; ftx delta: ${delta[*]}; ftx delta, placed: ${placed[*]}; rsync --inplace: ${rs[*]}" >&2
m_full=$(median_of "${full[@]}")
m_delta=$(median_of "${delta[@]}")
m_placed=$(median_of "${placed[@]}")
m_rsync=$(median_of "${rs[@]}")

echo
echo "delta update of a $(numfmt --to=iec-i "$bytes")B file, 16 x 64 KiB changed ($changed bytes differ)"
echo "bytes through the proxy (both directions, one run):"
awk -v f="$ftx_full_wire" -v d="$ftx_delta_wire" -v r="$rsync_wire" -v n="$bytes" 'BEGIN {
    printf "  ftx full send     %14d  %6.2f%% of the file\n", f, f * 100 / n
    printf "  ftx delta         %14d  %6.2f%% of the file\n", d, d * 100 / n
    printf "  rsync --inplace   %14d  %6.2f%% of the file\n", r, r * 100 / n }'
echo "loopback, $RUNS runs, medians:"
awk -v f="$m_full" -v d="$m_delta" -v p="$m_placed" -v r="$m_rsync" 'BEGIN {
    printf "  ftx full send               %8.3f s\n", f
    printf "  ftx delta, old copied in    %8.3f s  %.2f x the full send\n", d, d / f
    printf "  ftx delta, old placed by ftx%8.3f s  %.2f x the full send\n", p, p / f
    printf "  rsync --inplace             %8.3f s  %.2f x the full send\n", r, r / f }'

# --- through a shaped link --------------------------------------------------------
if [[ -n $LINK ]] && command -v ip >/dev/null && command -v tc >/dev/null && [[ $(id -u) == 0 ]]; then
    stop_bg "$frx"
    ns_made=1
    A=ftxdeltaA B=ftxdeltaB
    ip netns del $A 2>/dev/null || true
    ip netns del $B 2>/dev/null || true
    ip netns add $A
    ip netns add $B
    ip link add ftxdla type veth peer name ftxdlb
    ip link set ftxdla netns $A
    ip link set ftxdlb netns $B
    ip -n $A addr add 10.232.0.1/24 dev ftxdla
    ip -n $B addr add 10.232.0.2/24 dev ftxdlb
    ip -n $A link set ftxdla up
    ip -n $B link set ftxdlb up
    ip -n $A link set lo up
    ip -n $B link set lo up
    tc -n $A qdisc add dev ftxdla root tbf rate "$LINK" burst 256kb latency 50ms
    XDG_CACHE_HOME=$W/rx-cache start_bg ip netns exec $B "$FTX" recv -q --overwrite --port 7701 --bind 10.232.0.2 --out "$fout" >"$W/recv2.out" 2>"$W/recv2.err"
    for ((i = 0; i < 1000; i++)); do
        grep -q '^listening on' "$W/recv2.out" 2>/dev/null && break
        sleep 0.01
    done
    sed -i "s/^address = .*/address = 10.232.0.2/; s/^port = .*/port = 8799/; s|^pid file = .*|pid file = $W/rsyncd2.pid|" "$W/rsyncd.conf"
    start_bg ip netns exec $B rsync --daemon --no-detach --config="$W/rsyncd.conf"
    for ((i = 0; i < 1000; i++)); do
        ip netns exec $B ss -ltnH "sport = :8799" | grep -q . && break
        sleep 0.01
    done
    link_ftx() {
        rm -f "$fout/big.bin"
        [[ $1 == none ]] || cp "$old" "$fout/big.bin"
        sync
        local t
        t=$(now)
        ip netns exec $A "$FTX" send -q --no-cache "$new" 10.232.0.2:7701 || die "ftx send over the link failed"
        elapsed "$t"
        check "$fout/big.bin" "ftx over the link"
    }
    link_rsync() {
        cp "$old" "$rout/big.bin"
        sync
        local t
        t=$(now)
        ip netns exec $A rsync -a --inplace --no-whole-file "$new" rsync://10.232.0.2:8799/mod/ || die "rsync over the link failed"
        elapsed "$t"
        check "$rout/big.bin" "rsync over the link"
    }
    link_ftx old
    l_delta=$secs
    link_rsync
    l_rsync=$secs
    link_ftx none
    l_full=$secs
    echo "through a $LINK link (veth + tc tbf), one run each:"
    awk -v f="$l_full" -v d="$l_delta" -v r="$l_rsync" 'BEGIN {
        printf "  ftx full send     %8.3f s\n", f
        printf "  ftx delta         %8.3f s  %.3f x the full send\n", d, d / f
        printf "  rsync --inplace   %8.3f s  %.3f x the full send\n", r, r / f }'
fi
