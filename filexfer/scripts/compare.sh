#!/usr/bin/env bash
# send/receive side by side with a plain socket copy, magic-wormhole and wormhole-william, on
# the same data in the same run, everything on loopback with local servers:
#
#   filexfer/scripts/compare.sh [--no-build] [ROUNDS=3]
#
# Environment: ONLY=file|tree runs one data set; BEFORE=DIR adds "before", the send, receive
# and relay binaries in DIR (an older build, its own relay), to the same interleaved rounds;
# WORMHOLE=0 skips magic-wormhole; WILLIAM=1 (below).
#
# Data (on /dev/shm when there is one, removed at the end): one 1 GiB random file, and a tree
# of 10,000 random files of 1-40 KiB (about 200 MiB) in 100 directories.
#
#   plain             nc | nc for the file, tar | nc | tar for the tree (no relay, no crypto)
#   socat             the same with socat (issue #11's baseline; its defaults, but -t 0 so it
#                     does not linger after the end), when installed
#   send/receive      through our relay (release build), receiver writing to the same tmpfs
#   magic-wormhole    Debian's `wormhole` with a local mailbox server (pip:
#                     magic-wormhole-mailbox-server) and Debian's transit relay, both sides
#                     --no-listen so the data must go through the transit relay
#   wormhole-william  only with WILLIAM=1: Debian's 1.0.6 has no option for the transit relay
#                     (it always resolves transit.magic-wormhole.io and gives up without DNS,
#                     leaving its receiver waiting) nor to refuse direct connections, so where
#                     it runs at all it connects directly: an upper bound, not a relayed figure
#
# Rounds are interleaved (plain, ours, the others, then the next round), so a machine whose load
# changes affects all tools alike. Prints per round and then as medians, per tool and data set:
# MB/s (payload bytes / wall time from starting the receiver until both sides exited), the
# ratio to plain in the same round, CPU seconds per GiB of payload (user + system of every
# process of the tool: sender, receiver and, for relayed tools, the relay's own growth in CPU
# time), the time from starting the sender until its code is printed, and for our relay its
# memory growth during the transfer (VmHWM after, reset through /proc/PID/clear_refs before,
# minus VmRSS before). Tools that are missing are skipped with a note.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
if [ "${1:-}" = "--no-build" ]; then
    shift
else
    echo "building release binaries..." >&2
    (cd "$ROOT" && cargo build --release --quiet -p relay-bin -p filexfer-cli)
fi
ROUNDS=${1:-3}
BASE=/dev/shm
[ -d "$BASE" ] || BASE=${TMPDIR:-/tmp}
WORK=$(mktemp -d "$BASE/filexfer-compare.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }

echo "making data in $WORK..." >&2
mkdir -p "$WORK/src/tree"
head -c 1G /dev/urandom >"$WORK/src/big.bin"
python3 - "$WORK/src/tree" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(11)
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d:03}/f{f:03}.bin", "wb") as out:
            out.write(os.urandom(rng.randint(1024, 40 * 1024)))
EOF
FILE_BYTES=$(stat -c %s "$WORK/src/big.bin")
TREE_BYTES=$(du -sb --apparent-size "$WORK/src/tree" | cut -f1)

# start_relay BINDIR LOG: sets RELAY_ADDR and RELAY_PID.
start_relay() {
    "$1/relay" 127.0.0.1:0 2>"$2" &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    for _ in $(seq 100); do grep -qs 'control=' "$2" && break; sleep 0.05; done
    RELAY_ADDR=$(grep -o 'control=[0-9.:]*' "$2" | head -1 | cut -d= -f2)
    [ -n "$RELAY_ADDR" ] || { echo "compare: the relay in $1 did not start" >&2; exit 1; }
}
start_relay "$BIN" "$WORK/relay.log"
RELAY=$RELAY_ADDR
RELAY_PROC=$RELAY_PID
if [ -n "${BEFORE:-}" ]; then
    start_relay "$BEFORE" "$WORK/relay-before.log"
    RELAY_BEFORE=$RELAY_ADDR
    RELAY_BEFORE_PROC=$RELAY_PID
fi
# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$2/status"; }
# Runs a command under /usr/bin/time, appending its user + system seconds to $WORK/cpu.
timed() { /usr/bin/time -a -o "$WORK/cpu" -f '%U %S' "$@"; }

HAVE_WORMHOLE=0
MAILBOX_PORT=$(free_port)
TRANSIT_PORT=$(free_port)
# twistd3 runs Debian's python3; the mailbox server must be importable there.
if [ "${WORMHOLE:-1}" = 1 ] && command -v twistd3 >/dev/null && /usr/bin/python3 -c 'import wormhole_mailbox_server' 2>/dev/null; then
    (cd "$WORK" && exec twistd3 -n --pidfile= wormhole-mailbox --port="tcp:$MAILBOX_PORT:interface=127.0.0.1" \
        >"$WORK/mailbox.log" 2>&1) &
    PIDS+=("$!")
    (cd "$WORK" && exec twistd3 -n --pidfile= transitrelay --port="tcp:$TRANSIT_PORT:interface=127.0.0.1" \
        >"$WORK/transit.log" 2>&1) &
    PIDS+=("$!")
    sleep 3
    HAVE_WORMHOLE=1
else
    echo "note: twistd3 or wormhole_mailbox_server missing: wormhole tools skipped" >&2
fi
MAILBOX="ws://127.0.0.1:$MAILBOX_PORT/v1"

# One transfer. Sets RATE (MB/s), CODE_SECS (sender start to code; empty when none), CPU
# (seconds per GiB, all the tool's processes) and MEM (KiB of relay growth; empty when not
# measured). $1 tool, $2 what (file|tree)
transfer() {
    local tool=$1 what=$2 src out code t0 t1 t2 sp rp relay_pid= relay_cpu=0 rss0=
    out="$WORK/out"
    rm -rf "$out"
    mkdir -p "$out"
    if [ "$what" = file ]; then src=$WORK/src/big.bin; else src=$WORK/src/tree; fi
    CODE_SECS=
    MEM=
    rm -f "$WORK/code" "$WORK/code.out" "$WORK/cpu"
    case $tool in
    send) relay_pid=$RELAY_PROC ;;
    before) relay_pid=$RELAY_BEFORE_PROC ;;
    esac
    if [ -n "$relay_pid" ]; then
        relay_cpu=$(cpu_of "$relay_pid")
        echo 5 >"/proc/$relay_pid/clear_refs" 2>/dev/null || true
        rss0=$(kib VmRSS "$relay_pid")
    fi
    t0=$(now)
    case $tool in
    plain)
        local port
        port=$(free_port)
        if [ "$what" = file ]; then
            timed nc -l 127.0.0.1 "$port" >"$out/big.bin" &
        else
            (timed nc -l 127.0.0.1 "$port" | timed tar -C "$out" -xf -) &
        fi
        rp=$!
        sleep 0.2
        t1=$(now)
        if [ "$what" = file ]; then
            timed nc -N 127.0.0.1 "$port" <"$src"
        else
            timed tar -C "$WORK/src" -cf - tree | timed nc -N 127.0.0.1 "$port"
        fi
        wait "$rp"
        ;;
    socat)
        local port
        port=$(free_port)
        local listen=TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr
        if [ "$what" = file ]; then
            timed socat -u -t 0 "$listen" "CREATE:$out/big.bin" &
        else
            (timed socat -u -t 0 "$listen" STDOUT | timed tar -C "$out" -xf -) &
        fi
        rp=$!
        sleep 0.2
        t1=$(now)
        if [ "$what" = file ]; then
            timed socat -u -t 0 "OPEN:$src" "TCP:127.0.0.1:$port"
        else
            timed tar -C "$WORK/src" -cf - tree | timed socat -u -t 0 STDIN "TCP:127.0.0.1:$port"
        fi
        wait "$rp"
        ;;
    send | before)
        local dir=$BIN relay=$RELAY
        [ "$tool" = before ] && dir=$BEFORE relay=$RELAY_BEFORE
        timed "$dir/send" --quiet "$relay" "$src" >"$WORK/code" &
        sp=$!
        while [ ! -s "$WORK/code" ]; do sleep 0.005; done
        CODE_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
        code=$(head -1 "$WORK/code")
        t1=$(now)
        timed "$dir/receive" --quiet "$relay" "$code" "$out"
        wait "$sp"
        ;;
    wormhole)
        wormhole --relay-url "$MAILBOX" --transit-helper "tcp:127.0.0.1:$TRANSIT_PORT" \
            send --no-listen --hide-progress "$src" 2>"$WORK/code" >/dev/null &
        sp=$!
        until grep -qs 'Wormhole code is' "$WORK/code"; do sleep 0.005; done
        CODE_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
        code=$(grep -o 'Wormhole code is: [^ ]*' "$WORK/code" | awk '{ print $4 }')
        t1=$(now)
        (cd "$out" && wormhole --relay-url "$MAILBOX" --transit-helper "tcp:127.0.0.1:$TRANSIT_PORT" \
            receive --no-listen --accept-file --hide-progress "$code" >/dev/null 2>&1)
        wait "$sp"
        ;;
    william)
        wormhole-william --relay-url "$MAILBOX" send --hide-progress "$src" 2>"$WORK/code" >"$WORK/code.out" &
        sp=$!
        until grep -qs 'Wormhole code is' "$WORK/code" "$WORK/code.out"; do sleep 0.005; done
        CODE_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
        code=$(cat "$WORK/code" "$WORK/code.out" | grep -o 'Wormhole code is: [^ ]*' | awk '{ print $4 }')
        t1=$(now)
        (cd "$out" && wormhole-william --relay-url "$MAILBOX" receive --hide-progress "$code" >/dev/null 2>&1)
        wait "$sp"
        ;;
    esac
    t2=$(now)
    if [ -n "$relay_pid" ]; then
        MEM=$(($(kib VmHWM "$relay_pid") - rss0))
        relay_cpu=$(awk -v a="$relay_cpu" -v b="$(cpu_of "$relay_pid")" 'BEGIN { print b - a }')
    fi
    local bytes=$FILE_BYTES
    [ "$what" = tree ] && bytes=$TREE_BYTES
    # Check what arrived before believing the time.
    local got
    got=$(du -sb --apparent-size "$out" | cut -f1)
    if ((got < bytes)); then
        echo "  $tool $what: only $got of $bytes bytes arrived" >&2
        RATE=0
        return
    fi
    RATE=$(awk -v b="$bytes" -v a="$t1" -v c="$t2" 'BEGIN { printf "%.0f", b / (c - a) / 1e6 }')
    # The wormhole tools' servers are not counted (their relay is Python under twistd).
    CPU=$(awk -v b="$bytes" -v r="$relay_cpu" '{ s += $1 + $2 } END { printf "%.2f", (s + r) / (b / 1073741824) }' "$WORK/cpu" 2>/dev/null || echo -)
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

TOOLS=(plain)
command -v socat >/dev/null && TOOLS+=(socat)
TOOLS+=(send)
[ -n "${BEFORE:-}" ] && TOOLS+=(before)
((HAVE_WORMHOLE)) && command -v wormhole >/dev/null && TOOLS+=(wormhole)
((HAVE_WORMHOLE)) && [ "${WILLIAM:-0}" = 1 ] && command -v wormhole-william >/dev/null && TOOLS+=(william)

echo "1 GiB file: $FILE_BYTES bytes; tree: 10,000 files, $TREE_BYTES bytes; $ROUNDS rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
pick() { echo "$1" | tr ' ' '\n' | grep . || true; }
for what in ${ONLY:-file tree}; do
    declare -A RATES=() CODES=() RATIOS=() SRATIOS=() CPUS=() MEMS=()
    for round in $(seq 1 "$ROUNDS"); do
        plain_now=
        socat_now=
        for tool in "${TOOLS[@]}"; do
            transfer "$tool" "$what"
            [ "$tool" = plain ] && plain_now=$RATE
            [ "$tool" = socat ] && socat_now=$RATE
            ratio=$(awk -v r="$RATE" -v p="$plain_now" 'BEGIN { printf "%.2f", r / p }')
            sratio=$(awk -v r="$RATE" -v p="${socat_now:-0}" 'BEGIN { if (p > 0) printf "%.2f", r / p }')
            RATES[$tool]+="$RATE "
            RATIOS[$tool]+="$ratio "
            SRATIOS[$tool]+="${sratio:-} "
            CPUS[$tool]+="$CPU "
            CODES[$tool]+="${CODE_SECS:-} "
            MEMS[$tool]+="${MEM:-} "
            echo "  round $round $what $tool: $RATE MB/s, ${ratio}x plain${sratio:+, ${sratio}x socat}, CPU $CPU s/GiB${CODE_SECS:+, code after $CODE_SECS s}${MEM:+, relay +$MEM KiB}" >&2
        done
    done
    for tool in "${TOOLS[@]}"; do
        code=-
        [ -n "$(pick "${CODES[$tool]}")" ] && code="$(pick "${CODES[$tool]}" | median) s"
        mem=
        [ -n "$(pick "${SRATIOS[$tool]}")" ] && mem="  $(pick "${SRATIOS[$tool]}" | median) x socat"
        [ -n "$(pick "${MEMS[$tool]}")" ] && mem+="  relay +$(pick "${MEMS[$tool]}" | median) KiB"
        printf '%-5s %-17s %6s MB/s  %5s x plain  CPU %5s s/GiB  code after %s%s\n' "$what" "$tool" \
            "$(pick "${RATES[$tool]}" | median)" "$(pick "${RATIOS[$tool]}" | median)" \
            "$(pick "${CPUS[$tool]}" | median)" "$code" "$mem"
    done
    unset RATES CODES RATIOS SRATIOS CPUS MEMS
done
rm -rf "$WORK/out"
