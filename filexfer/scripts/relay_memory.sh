#!/usr/bin/env bash
# Relay memory per file transfer: the relay's resident set while TRANSFERS concurrent transfers
# of MIB MiB each run through it (real release binaries, loopback only, bounded in time).
#
#   filexfer/scripts/relay_memory.sh [TRANSFERS=8] [MIB=512]
#
# Prints the relay's RSS before the transfers (baseline), its peak RSS (VmHWM, plus VmRSS sampled
# every 100 ms), and (peak - baseline) / TRANSFERS. Source files are sparse (no disk space, the
# relay only ever sees ciphertext anyway); received files go to a temporary directory that is
# removed at the end, as is everything else this script starts or writes.
set -euo pipefail

TRANSFERS=${1:-8}
MIB=${2:-512}
LIMIT_SECONDS=${RELAY_MEMORY_TIMEOUT:-900}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

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

need_mib=$((TRANSFERS * MIB * 11 / 10))
free_mib=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
if ((free_mib < need_mib)); then
    echo "relay_memory: need ${need_mib} MiB free in $WORK for the received files, have ${free_mib}" >&2
    exit 1
fi

echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release --quiet -p relay-bin -p filexfer-cli)

"$BIN/relay" 127.0.0.1:0 2>"$WORK/relay.log" &
RELAY=$!
PIDS+=("$RELAY")
for _ in $(seq 100); do
    grep -q 'control=' "$WORK/relay.log" && break
    sleep 0.1
done
ADDR=$(grep -o 'control=[0-9.:]*' "$WORK/relay.log" | head -1 | cut -d= -f2)
[ -n "$ADDR" ] || { echo "relay_memory: the relay did not start" >&2; exit 1; }

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$RELAY/status"; }
BASELINE=$(kib VmRSS)

# Offers first (each prints its code), then all receivers at once.
CODES=()
for i in $(seq 1 "$TRANSFERS"); do
    truncate -s "${MIB}M" "$WORK/file$i.bin"
    timeout "$LIMIT_SECONDS" "$BIN/send" --quiet "$ADDR" "$WORK/file$i.bin" >"$WORK/code$i" &
    PIDS+=("$!")
    SENDERS[i]=$!
done
for i in $(seq 1 "$TRANSFERS"); do
    for _ in $(seq 100); do
        [ -s "$WORK/code$i" ] && break
        sleep 0.1
    done
    CODES[i]=$(head -1 "$WORK/code$i")
done

START=$(date +%s.%N)
for i in $(seq 1 "$TRANSFERS"); do
    timeout "$LIMIT_SECONDS" "$BIN/receive" --quiet "$ADDR" "${CODES[i]}" "$WORK/out$i" &
    PIDS+=("$!")
    RECEIVERS[i]=$!
done

PEAK_SAMPLED=0
SAMPLES=0
while :; do
    running=0
    for i in $(seq 1 "$TRANSFERS"); do
        kill -0 "${RECEIVERS[i]}" 2>/dev/null && running=$((running + 1))
    done
    ((running > 0)) || break
    rss=$(kib VmRSS)
    ((rss > PEAK_SAMPLED)) && PEAK_SAMPLED=$rss
    SAMPLES=$((SAMPLES + 1))
    sleep 0.1
done
END=$(date +%s.%N)
HWM=$(kib VmHWM)

FAILED=0
for i in $(seq 1 "$TRANSFERS"); do
    wait "${RECEIVERS[i]}" || FAILED=$((FAILED + 1))
    wait "${SENDERS[i]}" || FAILED=$((FAILED + 1))
    got=$(stat -c %s "$WORK/out$i/file$i.bin" 2>/dev/null || echo 0)
    [ "$got" -eq $((MIB * 1024 * 1024)) ] || FAILED=$((FAILED + 1))
    rm -f "$WORK/out$i/file$i.bin"
done

PEAK=$((HWM > PEAK_SAMPLED ? HWM : PEAK_SAMPLED))
awk -v n="$TRANSFERS" -v mib="$MIB" -v base="$BASELINE" -v peak="$PEAK" -v sampled="$PEAK_SAMPLED" \
    -v samples="$SAMPLES" -v start="$START" -v end="$END" -v failed="$FAILED" 'BEGIN {
    secs = end - start
    printf "transfers:          %d x %d MiB concurrently, %.1f s, %.0f MB/s in total\n", n, mib, secs, n * mib * 1048576 / secs / 1e6
    printf "relay RSS baseline: %d KiB\n", base
    printf "relay RSS peak:     %d KiB (VmHWM; highest of %d samples: %d KiB)\n", peak, samples, sampled
    printf "per transfer:       %.0f KiB  ((peak - baseline) / %d)\n", (peak - base) / n, n
    if (failed) printf "FAILED: %d sender/receiver runs or sizes were wrong\n", failed
}'
((FAILED == 0))
