#!/usr/bin/env bash
# CPU cost of bulk transfers through one tunnel against the number of visitors: for each count
# and direction, `loadgen bulk` through relay + expose, with the CPU seconds each process used
# per GiB moved (from /proc/PID/stat, so robust on a busy machine) beside the throughput and
# direct loopback TCP. With BASE_BIN the same rounds also run through a baseline build,
# interleaved (new, base, new, base...), so before/after comes from one run.
#
#   benches/visitors_cpu.sh                            # 1 and 8 visitors, 3 rounds of 4 s
#   VISITORS="1 8 64" ROUNDS=5 BASE_BIN=DIR benches/visitors_cpu.sh
#   ALT_ENV="RELAY_CLIENT_THREADS=2" benches/visitors_cpu.sh   # also this build with settings
#
# Loopback only; every step is bounded; only processes this script started are stopped, by
# their process id.
set -euo pipefail

VISITORS=${VISITORS:-1 8}
DIRS=${DIRS:-up down}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-4}
BASE_BIN=${BASE_BIN:-}
ALT_ENV=${ALT_ENV:-}
BENCH_LOG=${BENCH_LOG:-warn}
MAX_SECS=${MAX_SECS:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/vcpu.XXXXXX)
NAME=visitors_cpu.sh
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "building release binaries"
(cd "$ROOT" && cargo build --release -q -p relay-bin -p relay-benches \
    --bin relay --bin expose --bin loadgen)
# Copies whose names contain no "relay" (see run.sh).
mkdir -p "$WORK/new"
cp "$CARGO_TARGET_DIR/release/relay" "$WORK/new/vc-server"
cp "$CARGO_TARGET_DIR/release/expose" "$WORK/new/vc-expose"
cp "$CARGO_TARGET_DIR/release/loadgen" "$WORK/vc-loadgen"
LG=$WORK/vc-loadgen

start_bg bench-srv "$LG" serve bench --lifetime "$MAX_SECS"
BENCH_PID=$LAST_PID
BENCH=$(first_line bench-srv)
declare -A ADDR PID_R PID_E
ADDR[direct]=$BENCH
SYSTEMS=(direct)

start_ours() { # start_ours NAME DIR [VAR=VALUE...]: relay and expose, with that environment
    local name=$1 dir=$2 port
    shift 2
    port=$(free_port)
    start_bg "srv-$name" env "$@" "$dir/vc-server" "127.0.0.1:$port"
    PID_R[$name]=$LAST_PID
    wait_port "$port"
    start_bg "expose-$name" env "$@" "$dir/vc-expose" 127.0.0.1 "$port" "$BENCH"
    PID_E[$name]=$LAST_PID
    ADDR[$name]=$(first_line "expose-$name")
    SYSTEMS+=("$name")
}
start_ours new "$WORK/new"
if [[ -n $BASE_BIN ]]; then
    mkdir -p "$WORK/base"
    cp "$BASE_BIN/relay" "$WORK/base/vc-server"; cp "$BASE_BIN/expose" "$WORK/base/vc-expose"
    start_ours base "$WORK/base"
fi
# shellcheck disable=SC2086 # ALT_ENV is a list of VAR=VALUE words
[[ -n $ALT_ENV ]] && start_ours alt "$WORK/new" $ALT_ENV
log "systems: ${SYSTEMS[*]}; visitors: $VISITORS; $ROUNDS rounds of ${SECS}s"
log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

TICK=$(getconf CLK_TCK)
cpu() { [[ -z ${1:-} ]] && { echo 0; return; }; awk '{print $14 + $15}' "/proc/$1/stat"; }

RES=$WORK/results.txt
: >"$RES"
for r in $(seq "$ROUNDS"); do
    for n in $VISITORS; do
        for dir in $DIRS; do
            order=("${SYSTEMS[@]:$((r % ${#SYSTEMS[@]}))}" "${SYSTEMS[@]:0:$((r % ${#SYSTEMS[@]}))}")
            for sys in "${order[@]}"; do
                r0=$(cpu "${PID_R[$sys]:-}"); e0=$(cpu "${PID_E[$sys]:-}"); b0=$(cpu "$BENCH_PID")
                out=$(timeout $((SECS + 60)) "$LG" bulk --addr "${ADDR[$sys]}" --seconds "$SECS" \
                    --parallel "$n" --direction "$dir" 2>&1 | tail -n1 || true)
                r1=$(cpu "${PID_R[$sys]:-}"); e1=$(cpu "${PID_E[$sys]:-}"); b1=$(cpu "$BENCH_PID")
                g=$(field gbit_s "$out"); bytes=$(field bytes "$out")
                read -r rs es bs < <(awk -v b="${bytes:-0}" -v t="$TICK" \
                    -v r=$((r1 - r0)) -v e=$((e1 - e0)) -v s=$((b1 - b0)) 'BEGIN {
                        gib = b / 2^30; if (gib <= 0) { print "0 0 0"; exit }
                        printf "%.3f %.3f %.3f\n", r / t / gib, e / t / gib, s / t / gib }')
                echo "$sys $n $dir ${g:-0} $rs $es $bs" >>"$RES"
                log "  round $r: $sys $n $dir: ${g:-0} Gbit/s; CPU s/GiB relay $rs expose $es bench-server $bs"
            done
        done
    done
done

med() { # med SYS N DIR COLUMN
    awk -v s="$1" -v n="$2" -v d="$3" -v c="$4" '$1 == s && $2 == n && $3 == d {print $c}' "$RES" |
        sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
echo
echo "Bulk through one tunnel: medians of $ROUNDS interleaved rounds of ${SECS}s"
echo
echo "| visitors | way | system | Gbit/s | x direct | relay CPU s/GiB | expose CPU s/GiB |"
echo "|---|---|---|---|---|---|---|"
for n in $VISITORS; do
    for dir in $DIRS; do
        d=$(med direct "$n" "$dir" 4)
        for s in "${SYSTEMS[@]}"; do
            g=$(med "$s" "$n" "$dir" 4)
            x=$(awk -v d="$d" -v m="$g" 'BEGIN {if (d > 0) printf "%.2f", m / d}')
            if [[ $s == direct ]]; then echo "| $n | $dir | direct | $g | 1 | | |"
            else echo "| $n | $dir | $s | $g | $x | $(med "$s" "$n" "$dir" 5) | $(med "$s" "$n" "$dir" 6) |"; fi
        done
    done
done
echo
echo "raw: $RES (system visitors way gbit_s relay_s_per_gib expose_s_per_gib bench_server_s_per_gib)"
