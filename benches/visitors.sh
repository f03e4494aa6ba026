#!/usr/bin/env bash
# Bulk throughput against the number of visitors (1, 8, 64, 256 by default), both ways: direct
# loopback TCP to the bench server, our tunnel (relay + expose), and bore and rathole beside it
# when installed (run.sh with BENCH_PEERS=1 installs them). Every figure is `loadgen bulk` with N
# connections at once, so every system is driven by the same load generator; rounds are
# interleaved and the order of the systems changes from round to round.
#
#   benches/visitors.sh                         # counts 1 8 64 256, 3 rounds of 3 s each
#   VISITORS="1 8" ROUNDS=5 SECS=5 benches/visitors.sh
#   TLS=1 benches/visitors.sh                   # also our tunnel with TLS to the relay
#   BASE_BIN=DIR benches/visitors.sh            # also a baseline build (relay, expose in DIR)
#   BENCH_PEERS=0 benches/visitors.sh           # without bore and rathole
#   VISITORS=256 DIRS=up benches/visitors.sh     # one direction only
#
# The yamux stall that once made repeated 256-visitor downloads pile up kernel memory (docs/
# benchmark.md, "Hot path") is fixed since protocol 3: rounds can run back to back.
#
# Loopback only; every step is bounded; only processes this script started are stopped, by
# their process id.
set -euo pipefail

VISITORS=${VISITORS:-1 8 64 256}
DIRS=${DIRS:-up down}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
TLS=${TLS:-0}
BASE_BIN=${BASE_BIN:-}
BENCH_PEERS=${BENCH_PEERS:-1}
BENCH_TOOLS=${BENCH_TOOLS:-/work/bench-tools}
BENCH_LOG=${BENCH_LOG:-warn}
MAX_SECS=${MAX_SECS:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/vbench.XXXXXX)
NAME=visitors.sh
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "building release binaries"
(cd "$ROOT" && cargo build --release -q -p relay-bin -p relay-benches \
    --bin relay --bin expose --bin loadgen)
# Copies whose names contain no "relay" (see run.sh).
declare -A DIR
mkdir -p "$WORK/new" && DIR[relay]=$WORK/new
cp "$CARGO_TARGET_DIR/release/relay" "$WORK/new/vb-server"
cp "$CARGO_TARGET_DIR/release/expose" "$WORK/new/vb-expose"
cp "$CARGO_TARGET_DIR/release/loadgen" "$WORK/vb-loadgen"
LG=$WORK/vb-loadgen


start_bg bench-srv "$LG" serve bench --lifetime "$MAX_SECS"
BENCH=$(first_line bench-srv)
declare -A ADDR
ADDR[direct]=$BENCH
SYSTEMS=(direct)

start_ours() { # start_ours NAME DIR TLS(0|1)
    local name=$1 dir=$2 tls=$3 port fp="" cli=()
    port=$(free_port)
    if [[ $tls == 1 ]]; then
        BENCH_LOG="$BENCH_LOG,relay=info" start_bg "srv-$name" "$dir/vb-server" "127.0.0.1:$port" --tls-self-signed --require-tls
    else
        start_bg "srv-$name" "$dir/vb-server" "127.0.0.1:$port"
    fi
    wait_port "$port"
    if [[ $tls == 1 ]]; then
        fp=$(fingerprint "srv-$name")
        cli=(--tls-fingerprint "$fp")
    fi
    start_bg "expose-$name" "$dir/vb-expose" 127.0.0.1 "$port" "$BENCH" "${cli[@]}"
    ADDR[$name]=$(first_line "expose-$name")
    SYSTEMS+=("$name")
}

start_ours relay "$WORK/new" 0
if [[ -n $BASE_BIN ]]; then
    mkdir -p "$WORK/base"
    cp "$BASE_BIN/relay" "$WORK/base/vb-server"; cp "$BASE_BIN/expose" "$WORK/base/vb-expose"
    start_ours relay_base "$WORK/base" 0
fi
[[ $TLS == 1 ]] && start_ours relay_tls "$WORK/new" 1

if [[ $BENCH_PEERS == 1 && -x $BENCH_TOOLS/bin/bore ]]; then
    base=$(free_port)
    start_bg bore-server "$BENCH_TOOLS/bin/bore" server --bind-addr 127.0.0.1 --min-port "$base" --max-port $((base + 2))
    wait_port 7835
    start_bg bore-local "$BENCH_TOOLS/bin/bore" local "${BENCH##*:}" --local-host 127.0.0.1 --to 127.0.0.1 --port "$base"
    wait_port "$base"
    ADDR[bore]=127.0.0.1:$base; SYSTEMS+=(bore)
fi
if [[ $BENCH_PEERS == 1 && -x $BENCH_TOOLS/bin/rathole ]]; then
    ctl=$(free_port); pub=$(free_port)
    printf '[server]\nbind_addr = "127.0.0.1:%s"\n[server.services.bench]\ntoken = "bench"\nbind_addr = "127.0.0.1:%s"\n' \
        "$ctl" "$pub" >"$WORK/rathole-server.toml"
    printf '[client]\nremote_addr = "127.0.0.1:%s"\n[client.services.bench]\ntoken = "bench"\nlocal_addr = "%s"\n' \
        "$ctl" "$BENCH" >"$WORK/rathole-client.toml"
    start_bg rathole-server "$BENCH_TOOLS/bin/rathole" -s "$WORK/rathole-server.toml"
    wait_port "$ctl"
    start_bg rathole-client "$BENCH_TOOLS/bin/rathole" -c "$WORK/rathole-client.toml"
    wait_port "$pub"
    sleep 1 # the client registers its service after the server listens
    ADDR[rathole]=127.0.0.1:$pub; SYSTEMS+=(rathole)
fi
log "systems: ${SYSTEMS[*]}; visitors: $VISITORS; $ROUNDS rounds of ${SECS}s"
log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# Hundreds of bulk connections can fill the kernel's TCP memory (every system here: buffers
# grow to tcp_wmem/tcp_rmem's maximum on both ends of every hop). Past tcp_mem's pressure
# threshold the kernel clamps socket buffers on the whole machine and every figure after it is
# wrong, so the pages in use are logged, and each measurement waits for them to fall back.
tcp_pages() { awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
PRESSURE=$(awk '{print $2}' /proc/sys/net/ipv4/tcp_mem)
settle() { local i; for i in $(seq 30); do (( $(tcp_pages) < PRESSURE / 4 )) && return 0; sleep 0.1; done
    log "  kernel TCP memory still at $(tcp_pages) pages"; }

RES=$WORK/results.txt
: >"$RES"
for r in $(seq "$ROUNDS"); do
    for n in $VISITORS; do
        for dir in $DIRS; do
            # Rotate the order of the systems each round.
            order=("${SYSTEMS[@]:$((r % ${#SYSTEMS[@]}))}" "${SYSTEMS[@]:0:$((r % ${#SYSTEMS[@]}))}")
            for sys in "${order[@]}"; do
                out=$(timeout $((SECS + 60)) "$LG" bulk --addr "${ADDR[$sys]}" --seconds "$SECS" \
                    --parallel "$n" --direction "$dir" 2>&1 | tail -n1 || true)
                g=$(field gbit_s "$out"); g=${g:-0}
                echo "$sys $n $dir $g" >>"$RES"
                log "  round $r: $sys $n $dir: $g Gbit/s; kernel TCP memory $(tcp_pages) pages (pressure at $PRESSURE)"
                settle
            done
        done
    done
done
log "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

med() { # med SYS N DIR: median of the rounds
    awk -v s="$1" -v n="$2" -v d="$3" '$1 == s && $2 == n && $3 == d {print $4}' "$RES" | sort -g |
        awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
spread() {
    awk -v s="$1" -v n="$2" -v d="$3" '$1 == s && $2 == n && $3 == d {print $4}' "$RES" | sort -g |
        awk '{v[NR] = $1} END {if (NR) printf "%g-%g", v[1], v[NR]}'
}
echo
echo "Bulk Gbit/s against visitors: median of $ROUNDS interleaved rounds of ${SECS}s (min-max), ratio to direct"
echo
printf '| visitors | way |'; for s in "${SYSTEMS[@]}"; do printf ' %s |' "$s"; done; echo
printf '|---|---|'; for s in "${SYSTEMS[@]}"; do printf -- '---|'; done; echo
for n in $VISITORS; do
    for dir in $DIRS; do
        d=$(med direct "$n" "$dir")
        printf '| %s | %s |' "$n" "$dir"
        for s in "${SYSTEMS[@]}"; do
            m=$(med "$s" "$n" "$dir")
            if [[ $s == direct ]]; then printf ' %s (%s) |' "$m" "$(spread "$s" "$n" "$dir")"
            else printf ' %s (%s) %s |' "$m" "$(spread "$s" "$n" "$dir")" \
                "$(awk -v d="$d" -v m="$m" 'BEGIN {if (d > 0) printf "%.2fx", m / d}')"; fi
        done
        echo
    done
done
echo
echo "raw: $RES (system visitors way gbit_s)"
