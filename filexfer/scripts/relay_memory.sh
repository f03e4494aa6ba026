#!/usr/bin/env bash
# Relay memory per file transfer, as a new user meets it: the relay's resident set (RSS) while
# transfers run through it, with the real release binaries on loopback.
#
#   filexfer/scripts/relay_memory.sh [--no-build]
#
# Runs, each bounded in time:
#   1. a fresh relay: its idle RSS; one 1 GiB transfer (cold); one more (warm); four 256 MiB
#      transfers at once (warm);
#   2. another fresh relay: four 256 MiB transfers at once (cold).
# Growth = peak RSS during the run (offers, pairing, data) minus RSS just before the offers. The peak is the larger of VmHWM
# (reset before each run through /proc/PID/clear_refs, which needs root or the same user) and
# VmRSS sampled every 20 ms. Sources are sparse files; receivers write to /dev/null
# (`receive ... -`), so no disk is involved and nothing big is left behind. Everything this
# script starts or writes is removed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
LIMIT_SECONDS=${RELAY_MEMORY_TIMEOUT:-300}

if [ "${1:-}" != "--no-build" ]; then
    echo "building release binaries..." >&2
    (cd "$ROOT" && cargo build --release --quiet -p relay-bin -p filexfer-cli)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/relay-memory.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$2/status"; }

# Starts a relay; sets RELAY (pid) and ADDR.
start_relay() {
    local log=$WORK/relay$1.log
    "$BIN/relay" 127.0.0.1:0 2>"$log" &
    RELAY=$!
    PIDS+=("$RELAY")
    for _ in $(seq 100); do
        grep -qs 'control=' "$log" && break
        sleep 0.05
    done
    ADDR=$(grep -o 'control=[0-9.:]*' "$log" | head -1 | cut -d= -f2)
    [ -n "$ADDR" ] || { echo "relay_memory: the relay did not start" >&2; exit 1; }
    sleep 1 # let start-up settle before reading the idle figure
}

# run N MIB: N concurrent transfers of MIB MiB through $RELAY; sets BEFORE, PEAK, SECS.
run() {
    local n=$1 mib=$2 i
    local senders=() receivers=() codes=()
    # From before the offers: a transfer's cost includes its waiting offer.
    echo 5 >"/proc/$RELAY/clear_refs" 2>/dev/null || true
    BEFORE=$(kib VmRSS "$RELAY")
    for i in $(seq 1 "$n"); do
        truncate -s "${mib}M" "$WORK/file$i.bin"
        timeout "$LIMIT_SECONDS" "$BIN/send" --quiet "$ADDR" "$WORK/file$i.bin" >"$WORK/code$i" &
        senders+=("$!")
        PIDS+=("$!")
    done
    for i in $(seq 1 "$n"); do
        for _ in $(seq 200); do
            [ -s "$WORK/code$i" ] && break
            sleep 0.02
        done
        codes+=("$(head -1 "$WORK/code$i")")
    done
    local sampled=$BEFORE start end
    start=$(date +%s.%N)
    for i in $(seq 1 "$n"); do
        timeout "$LIMIT_SECONDS" "$BIN/receive" --quiet "$ADDR" "${codes[i - 1]}" - >/dev/null &
        receivers+=("$!")
        PIDS+=("$!")
    done
    while :; do
        local running=0 pid rss
        for pid in "${receivers[@]}"; do
            kill -0 "$pid" 2>/dev/null && running=$((running + 1))
        done
        ((running > 0)) || break
        rss=$(kib VmRSS "$RELAY")
        ((rss > sampled)) && sampled=$rss
        sleep 0.02
    done
    end=$(date +%s.%N)
    local hwm failed=0 pid
    hwm=$(kib VmHWM "$RELAY")
    PEAK=$((hwm > sampled ? hwm : sampled))
    for pid in "${receivers[@]}" "${senders[@]}"; do
        wait "$pid" || failed=$((failed + 1))
    done
    ((failed == 0)) || { echo "relay_memory: $failed send/receive runs failed" >&2; exit 1; }
    SECS=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
    rm -f "$WORK"/file*.bin "$WORK"/code*
}

report() { # label n
    local growth=$((PEAK - BEFORE))
    printf '%-44s %6d KiB before, %6d KiB peak: +%d KiB' "$1" "$BEFORE" "$PEAK" "$growth"
    (($2 > 1)) && printf ' (%d KiB per transfer)' $((growth / $2))
    printf ', %s s\n' "$SECS"
}

start_relay 1
echo "relay idle RSS (fresh, 1 s after start): $(kib VmRSS "$RELAY") KiB"
run 1 1024
report "one 1 GiB transfer, fresh relay" 1
run 1 1024
report "one 1 GiB transfer, warm relay" 1
run 4 256
report "four 256 MiB transfers at once, warm relay" 4
kill "$RELAY"

start_relay 2
run 4 256
report "four 256 MiB transfers at once, fresh relay" 4
