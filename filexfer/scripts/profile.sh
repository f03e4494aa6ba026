#!/usr/bin/env bash
# Where one large file's CPU goes, per process (sender, relay, receiver):
#
#   filexfer/scripts/profile.sh [--no-build] [ROUNDS=3] [MODE=cpu|perf|strace]
#
# cpu     ROUNDS transfers of a 1 GiB random file (tmpfs), each process's user and system
#         seconds (`/usr/bin/time` for send and receive, /proc/PID/stat for the relay), beside
#         `nc | nc` and `socat | socat` in the same rounds.
# perf    one transfer with `perf record -g` attached to each process; prints each one's top
#         functions (self time, children folded in) and leaves the data in $OUT (default
#         /tmp/filexfer-profile).
# strace  one transfer under `strace -f -c` per process: syscall counts and time.
#
# BIN=DIR uses the send, receive and relay binaries in DIR (default: this tree's release
# build); BEFORE=DIR adds another build's binaries (its own relay) to the same rounds in cpu
# mode. The file lives on /dev/shm when there is one, so the disk is not measured.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "${1:-}" = "--no-build" ]; then
    shift
else
    echo "building release binaries..." >&2
    (cd "$ROOT" && cargo build --release --quiet -p relay-bin -p filexfer-cli)
fi
BIN=${BIN:-$CARGO_TARGET_DIR/release}
ROUNDS=${1:-3}
MODE=${2:-cpu}
OUT=${OUT:-/tmp/filexfer-profile}
BASE=/dev/shm
[ -d "$BASE" ] || BASE=${TMPDIR:-/tmp}
WORK=$(mktemp -d "$BASE/filexfer-profile.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

head -c 1G /dev/urandom >"$WORK/big.bin"
BYTES=$(stat -c %s "$WORK/big.bin")
GIB=$(awk -v b="$BYTES" 'BEGIN { print b / 1073741824 }')

# start_relay BINDIR LOG: sets RELAY and RELAY_PID.
start_relay() {
    "$1/relay" 127.0.0.1:0 2>"$2" &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    for _ in $(seq 100); do grep -qs 'control=' "$2" && break; sleep 0.05; done
    RELAY=$(grep -o 'control=[0-9.:]*' "$2" | head -1 | cut -d= -f2)
    [ -n "$RELAY" ] || { echo "profile: the relay in $1 did not start" >&2; exit 1; }
}
if [ -n "${BEFORE:-}" ]; then
    start_relay "$BEFORE" "$WORK/relay-before.log"
    OLD=("$BEFORE" "$RELAY" "$RELAY_PID")
fi
start_relay "$BIN" "$WORK/relay.log"
NEW=("$BIN" "$RELAY" "$RELAY_PID")

cpu_of() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.3f %.3f", $14 / t, $15 / t }' "/proc/$1/stat"; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
per_gib() { awk -v u="$1" -v s="$2" -v g="$GIB" 'BEGIN { printf "%.2f (user %.2f, sys %.2f)", (u + s) / g, u / g, s / g }'; }

# ours [LABEL BINDIR RELAY RELAY_PID]: one transfer (profiled as MODE says); prints the
# per-process CPU per GiB.
ours() {
    local label=${1:-ours} BIN=${2:-$BIN} RELAY=${3:-$RELAY} RELAY_PID=${4:-$RELAY_PID}
    local t0 t1 code sp r0 r1 wrap_relay=
    rm -rf "$WORK/out" "$WORK/code" "$WORK/send.cpu" "$WORK/receive.cpu"
    mkdir -p "$WORK/out"
    read -r -a r0 <<<"$(cpu_of "$RELAY_PID")"
    case $MODE in
    perf)
        perf record -q -g -o "$OUT/relay.data" -p "$RELAY_PID" 2>/dev/null &
        wrap_relay=$!
        ;;
    strace)
        strace -f -c -o "$OUT/relay.strace" -p "$RELAY_PID" 2>/dev/null &
        wrap_relay=$!
        ;;
    esac
    sleep 0.3
    t0=$(now)
    wrap send /usr/bin/time -o "$WORK/send.cpu" -f '%U %S' "$BIN/send" --quiet "$RELAY" "$WORK/big.bin" >"$WORK/code" &
    sp=$!
    while [ ! -s "$WORK/code" ]; do sleep 0.005; done
    code=$(head -1 "$WORK/code")
    wrap receive /usr/bin/time -o "$WORK/receive.cpu" -f '%U %S' "$BIN/receive" --quiet "$RELAY" "$code" "$WORK/out"
    wait "$sp"
    t1=$(now)
    read -r -a r1 <<<"$(cpu_of "$RELAY_PID")"
    if [ -n "$wrap_relay" ]; then
        kill -INT "$wrap_relay"
        wait "$wrap_relay" || true
    fi
    cmp -s "$WORK/big.bin" "$WORK/out/big.bin" || { echo "profile: the file arrived different" >&2; exit 1; }
    local su ss ru rs lu ls
    read -r su ss <"$WORK/send.cpu"
    read -r ru rs <"$WORK/receive.cpu"
    lu=$(awk -v a="${r0[0]}" -v b="${r1[0]}" 'BEGIN { print b - a }')
    ls=$(awk -v a="${r0[1]}" -v b="${r1[1]}" 'BEGIN { print b - a }')
    echo "  $label: $(awk -v b="$BYTES" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.0f", b / (c - a) / 1e6 }') MB/s;" \
        "CPU s/GiB: sender $(per_gib "$su" "$ss"), relay $(per_gib "$lu" "$ls")," \
        "receiver $(per_gib "$ru" "$rs"); all $(awk -v a="$su" -v b="$ss" -v c="$ru" -v d="$rs" -v e="$lu" -v f="$ls" -v g="$GIB" 'BEGIN { printf "%.2f", (a + b + c + d + e + f) / g }')"
}

# wrap WHO CMD...: runs CMD under perf or strace when profiling.
wrap() {
    local who=$1
    shift
    case $MODE in
    perf) perf record -q -g -o "$OUT/$who.data" -- "$@" 2>/dev/null ;;
    strace) strace -f -c -o "$OUT/$who.strace" -- "$@" ;;
    *) "$@" ;;
    esac
}

# plain TOOL: one nc | nc or socat | socat copy with both sides timed.
plain() {
    local port t0 t1 rp
    port=$(free_port)
    rm -f "$WORK/copy" "$WORK/l.cpu" "$WORK/c.cpu"
    t0=$(now)
    if [ "$1" = nc ]; then
        /usr/bin/time -o "$WORK/l.cpu" -f '%U %S' nc -l 127.0.0.1 "$port" >"$WORK/copy" &
    else
        /usr/bin/time -o "$WORK/l.cpu" -f '%U %S' socat -u -t 0 "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "CREATE:$WORK/copy" &
    fi
    rp=$!
    sleep 0.2
    t0=$(now)
    if [ "$1" = nc ]; then
        /usr/bin/time -o "$WORK/c.cpu" -f '%U %S' nc -N 127.0.0.1 "$port" <"$WORK/big.bin"
    else
        /usr/bin/time -o "$WORK/c.cpu" -f '%U %S' socat -u -t 0 "OPEN:$WORK/big.bin" "TCP:127.0.0.1:$port"
    fi
    wait "$rp"
    t1=$(now)
    local cu cs lu ls
    read -r cu cs <"$WORK/c.cpu"
    read -r lu ls <"$WORK/l.cpu"
    echo "  $1: $(awk -v b="$BYTES" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.0f", b / (c - a) / 1e6 }') MB/s;" \
        "CPU s/GiB: sending $(per_gib "$cu" "$cs"), receiving $(per_gib "$lu" "$ls")"
}

echo "load $(cut -d' ' -f1-3 /proc/loadavg); mode $MODE"
case $MODE in
cpu)
    for round in $(seq 1 "$ROUNDS"); do
        echo "round $round"
        plain nc
        ours ours "${NEW[@]}"
        [ -n "${BEFORE:-}" ] && ours before "${OLD[@]}"
        command -v socat >/dev/null && plain socat
    done
    ;;
perf)
    ours
    for who in send relay receive; do
        echo "== $who: by process part (children included), then self time"
        perf report -i "$OUT/$who.data" --no-children --sort dso,sym --percent-limit 1.5 --stdio 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -25
    done
    ;;
strace)
    ours
    for who in send relay receive; do
        echo "== $who"
        head -20 "$OUT/$who.strace"
    done
    ;;
esac
