#!/usr/bin/env bash
# Round trips through the tunnel, and what each of our processes spends on one: 64 B ping-pong
# direct, through `expose` (two of our processes: relay and expose, plus expose's local hop) and
# through `echoserver` (the relay alone), with the CPU time (all threads, from
# /proc/PID/task/*/schedstat, nanoseconds) and the context switches of the relay and of the
# client per round trip (bore's and rathole's server and client beside them, when installed).
# Rounds are interleaved, so a busy machine hits every system alike.
#
#   benches/roundtrip.sh                      # this tree's release build
#   BASE_BIN=DIR benches/roundtrip.sh         # also a baseline build (DIR holds relay, expose,
#                                             # echoserver), interleaved with this one
#   TLS=1 benches/roundtrip.sh                # also the same through TLS to the relay
#   ROUNDS=5 N=5000 benches/roundtrip.sh      # rounds, and round trips per measurement
#
# Hardware counters (perf stat -e instructions) are not available on every VM; the CPU time
# per round trip is the figure that works everywhere. Loopback only; every step is bounded;
# only processes this script started are stopped, by their process id.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
N=${N:-5000}
TLS=${TLS:-0}
BASE_BIN=${BASE_BIN:-}
BENCH_LOG=${BENCH_LOG:-warn}
MAX_SECS=${MAX_SECS:-900}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/rtbench.XXXXXX)
NAME=roundtrip.sh
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "building release binaries"
(cd "$ROOT" && cargo build --release -q -p relay-bin -p echoserver -p relay-benches \
    --bin relay --bin expose --bin echoserver --bin loadgen)
# Copies whose names contain neither "relay" nor "echoserver" (see run.sh).
declare -A BUILD_DIR
mkdir -p "$WORK/new" && BUILD_DIR[new]=$WORK/new
cp "$CARGO_TARGET_DIR/release/relay" "$WORK/new/rt-server"
cp "$CARGO_TARGET_DIR/release/expose" "$WORK/new/rt-expose"
cp "$CARGO_TARGET_DIR/release/echoserver" "$WORK/new/rt-echo"
cp "$CARGO_TARGET_DIR/release/loadgen" "$WORK/rt-loadgen"
BUILDS=(new)
if [[ -n $BASE_BIN ]]; then
    mkdir -p "$WORK/base" && BUILD_DIR[base]=$WORK/base
    cp "$BASE_BIN/relay" "$WORK/base/rt-server"
    cp "$BASE_BIN/expose" "$WORK/base/rt-expose"
    cp "$BASE_BIN/echoserver" "$WORK/base/rt-echo"
    BUILDS=(base new)
fi
LG=$WORK/rt-loadgen

cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }

start_bg echo-srv "$LG" serve echo --lifetime "$MAX_SECS"
ECHO=$(first_line echo-srv)

declare -A ADDR SPID CPID
start_system() { # start_system BUILD TLS(0|1): relay, expose to the echo server, echoserver
    local b=$1 tls=$2 dir=${BUILD_DIR[$1]} port fp="" cli=() key=$1$([[ $2 == 1 ]] && echo -tls)
    port=$(free_port)
    if [[ $tls == 1 ]]; then
        BENCH_LOG="$BENCH_LOG,relay=info" start_bg "srv-$key" "$dir/rt-server" "127.0.0.1:$port" --tls-self-signed --require-tls
    else
        start_bg "srv-$key" "$dir/rt-server" "127.0.0.1:$port"
    fi
    local srv=$LAST_PID
    wait_port "$port"
    if [[ $tls == 1 ]]; then
        fp=$(fingerprint "srv-$key")
        cli=(--tls-fingerprint "$fp")
    fi
    start_bg "expose-$key" "$dir/rt-expose" 127.0.0.1 "$port" "$ECHO" "${cli[@]}"
    SPID[expose-$key]=$srv; CPID[expose-$key]=$LAST_PID; ADDR[expose-$key]=$(first_line "expose-$key")
    start_bg "es-$key" "$dir/rt-echo" 127.0.0.1 "$port" "${cli[@]}"
    SPID[es-$key]=$srv; CPID[es-$key]=$LAST_PID; ADDR[es-$key]=$(first_line "es-$key")
    SYSTEMS+=("expose-$key" "es-$key")
}

SYSTEMS=()
for b in "${BUILDS[@]}"; do
    start_system "$b" 0
    [[ $TLS == 1 ]] && start_system "$b" 1
done
# bore and rathole beside ours, when installed (run.sh with BENCH_PEERS=1 installs them).
BENCH_TOOLS=${BENCH_TOOLS:-/work/bench-tools}
if [[ ${BENCH_PEERS:-1} == 1 && -x $BENCH_TOOLS/bin/bore ]]; then
    base=$(free_port)
    start_bg bore-server "$BENCH_TOOLS/bin/bore" server --bind-addr 127.0.0.1 --min-port "$base" --max-port $((base + 2))
    SPID[bore]=$LAST_PID; wait_port 7835
    start_bg bore-local "$BENCH_TOOLS/bin/bore" local "${ECHO##*:}" --local-host 127.0.0.1 --to 127.0.0.1 --port "$base"
    CPID[bore]=$LAST_PID; wait_port "$base"; ADDR[bore]=127.0.0.1:$base; SYSTEMS+=(bore)
fi
if [[ ${BENCH_PEERS:-1} == 1 && -x $BENCH_TOOLS/bin/rathole ]]; then
    ctl=$(free_port); pub=$(free_port)
    printf '[server]\nbind_addr = "127.0.0.1:%s"\n[server.services.echo]\ntoken = "bench"\nbind_addr = "127.0.0.1:%s"\n' \
        "$ctl" "$pub" >"$WORK/rathole-server.toml"
    printf '[client]\nremote_addr = "127.0.0.1:%s"\n[client.services.echo]\ntoken = "bench"\nlocal_addr = "%s"\n' \
        "$ctl" "$ECHO" >"$WORK/rathole-client.toml"
    start_bg rathole-server "$BENCH_TOOLS/bin/rathole" -s "$WORK/rathole-server.toml"
    SPID[rathole]=$LAST_PID; wait_port "$ctl"
    start_bg rathole-client "$BENCH_TOOLS/bin/rathole" -c "$WORK/rathole-client.toml"
    CPID[rathole]=$LAST_PID; wait_port "$pub"; sleep 1
    ADDR[rathole]=127.0.0.1:$pub; SYSTEMS+=(rathole)
fi
log "systems: direct ${SYSTEMS[*]}"

RES=$WORK/results.txt
: >"$RES"
measure() { # measure SYSTEM ADDR [SERVER_PID CLIENT_PID]
    local sys=$1 addr=$2 s=${3:-} c=${4:-} out s0=0 s1=0 c0=0 c1=0 sw0=0 sw1=0
    [[ -n $s ]] && { s0=$(cpu_ns "$s"); c0=$(cpu_ns "$c"); sw0=$(( $(switches "$s") + $(switches "$c") )); }
    out=$(timeout 120 "$LG" pingpong --addr "$addr" --count "$N" 2>&1 | tail -n1 || true)
    [[ -n $s ]] && { s1=$(cpu_ns "$s"); c1=$(cpu_ns "$c"); sw1=$(( $(switches "$s") + $(switches "$c") )); }
    echo "$sys $(field p50_us "$out") $(field mean_us "$out") $(field p99_us "$out") $(( (s1 - s0) / N )) $(( (c1 - c0) / N )) $(awk -v d=$((sw1 - sw0)) -v n="$N" 'BEGIN {printf "%.2f", d / n}')" >>"$RES"
    log "  $sys: $out; relay $(( (s1 - s0) / N )) ns, client $(( (c1 - c0) / N )) ns CPU per round trip"
}

for r in $(seq "$ROUNDS"); do
    log "round $r of $ROUNDS"
    # Each round in a different order, so no system always runs right after another.
    order=(direct "${SYSTEMS[@]}")
    if (( r % 2 == 0 )); then order=($(printf '%s\n' "${order[@]}" | tac)); fi
    for sys in "${order[@]}"; do
        if [[ $sys == direct ]]; then measure direct "$ECHO"
        else measure "$sys" "${ADDR[$sys]}" "${SPID[$sys]}" "${CPID[$sys]}"; fi
    done
done

# Medians over the rounds, with the spread (min-max), and the ratio of medians to direct.
echo
echo "64 B ping-pong, $N round trips x $ROUNDS interleaved rounds; median (min-max) of the rounds"
echo
echo "| system | p50 us | mean us | mean / direct | p99 us | relay CPU ns/RT | client CPU ns/RT | ctx switches/RT |"
echo "|---|---|---|---|---|---|---|---|"
stat() { # stat SYSTEM COLUMN: median (min-max)
    awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$RES" | sort -n | awk '{v[NR] = $1} END {
        if (NR == 0) {print "-"; exit}
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%g (%g-%g)", m, v[1], v[NR]}'
}
med() { awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$RES" | sort -n | awk '{v[NR] = $1} END {
        if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
d=$(med direct 3)
for sys in direct "${SYSTEMS[@]}"; do
    ratio=$(awk -v d="$d" -v r="$(med "$sys" 3)" 'BEGIN {if (d > 0) printf "%.2fx", r / d}')
    if [[ $sys == direct ]]; then
        echo "| direct | $(stat direct 2) | $(stat direct 3) | 1.00x | $(stat direct 4) | - | - | - |"
    else
        echo "| $sys | $(stat "$sys" 2) | $(stat "$sys" 3) | $ratio | $(stat "$sys" 4) | $(stat "$sys" 5) | $(stat "$sys" 6) | $(stat "$sys" 7) |"
    fi
done
echo
echo "raw: $RES (system p50 mean p99 relay_ns client_ns switches)"
