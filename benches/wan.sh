#!/usr/bin/env bash
# WAN benchmark: bulk throughput through the real `relay` and `expose` over an emulated long
# link, beside direct TCP over the same link in the same run (and bore and rathole with
# BENCH_PEERS=1). See docs/benchmark.md, "WAN bulk".
#
#   sudo benches/wan.sh                    # 40 and 100 ms, both placements, 3 rounds, iperf3 -t 20
#   WAN_SECS=10 WAN_ROUNDS=3 benches/wan.sh
#   BENCH_PEERS=1 benches/wan.sh           # also bore and rathole (cargo-installed like run.sh)
#   WAN_RELAY_ARGS="--visitor-recv-buffer 256KiB" benches/wan.sh   # try a relay setting
#
# The link is ../shared/tools/wanlink.py (WANLINK): two network namespaces joined by a
# fixed-delay packet pipe, since this kernel has no netem. The relay always runs in the near
# namespace (10.77.0.1), as on a server. Two placements:
#
#   client   the tunnel client across the WAN: iperf3 server and expose in the far namespace,
#            visitors (iperf3 -c) in the near one beside the relay. The session's yamux windows
#            and the client's socket buffers carry the long path.
#   visitor  the visitors across the WAN: relay, expose and iperf3 server in the near namespace,
#            visitors in the far one. The relay's visitor sockets carry the long path.
#
# Direct is iperf3 across the same link between the same two namespaces. Each round runs every
# case on every system back to back (interleaved), so slow drifts of the shared machine hit all
# systems alike. Figures: whole run and first 5 s, both measured at the receiver.
#
# Needs root (namespaces, TUN), iperf3, python3. Namespaces are named wanb_<pid>_near/_far and
# removed at exit; only processes this script started are stopped, by their process id.
set -euo pipefail

WAN_RTTS=${WAN_RTTS:-"40 100"}          # round-trip times in ms (half each way)
WAN_PLACEMENTS=${WAN_PLACEMENTS:-"client visitor"}
WAN_ROUNDS=${WAN_ROUNDS:-3}
WAN_SECS=${WAN_SECS:-20}
WAN_STREAMS=${WAN_STREAMS:-"1 8"}
WAN_RELAY_ARGS=${WAN_RELAY_ARGS:-}
BENCH_PEERS=${BENCH_PEERS:-0}
BENCH_LOG=${BENCH_LOG:-warn}
BENCH_TOOLS=${BENCH_TOOLS:-/work/bench-tools}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WANLINK=${WANLINK:-$ROOT/../shared/tools/wanlink.py}
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
n_rtts=$(wc -w <<<"$WAN_RTTS"); n_pl=$(wc -w <<<"$WAN_PLACEMENTS"); n_st=$(wc -w <<<"$WAN_STREAMS")
n_sys=$((2 + 2 * BENCH_PEERS))
BENCH_MAX_SECS=${BENCH_MAX_SECS:-$((n_rtts * n_pl * WAN_ROUNDS * n_st * 2 * n_sys * (WAN_SECS + 4) + 600))}

[[ $(id -u) == 0 ]] || { echo "wan.sh: needs root (network namespaces, TUN devices)" >&2; exit 1; }
for t in iperf3 python3 ip; do
    command -v "$t" >/dev/null || { echo "wan.sh: $t is required" >&2; exit 1; }
done
[[ -f $WANLINK ]] || { echo "wan.sh: no wanlink.py at $WANLINK (set WANLINK)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/wanb.XXXXXX)
RESULTS=$WORK/results.tsv
NEAR=wanb_$$_near
FAR=wanb_$$_far
NEAR_IP=10.77.0.1
FAR_IP=10.77.0.2
NAME=wan.sh
MAX_SECS=$BENCH_MAX_SECS
# Logging, the watchdog, and the processes stopped at exit by their ids.
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
on_exit() {
    ip netns del "$NEAR" 2>/dev/null || true
    ip netns del "$FAR" 2>/dev/null || true
}

log "building release binaries"
(cd "$ROOT" && cargo build --release -q -p relay-bin --bin relay --bin expose)
# Copies whose names contain no "relay": another session's `pkill relay` must not hit them.
BIN=$WORK/bin
mkdir -p "$BIN"
cp "$CARGO_TARGET_DIR/release/relay" "$BIN/rb-server"
cp "$CARGO_TARGET_DIR/release/expose" "$BIN/rb-expose"

SYSTEMS=(direct relay)
if [[ $BENCH_PEERS == 1 ]]; then
    install_peers
    for bin in bore rathole; do
        if [[ -x $BENCH_TOOLS/bin/$bin ]]; then
            SYSTEMS+=("$bin")
            log "$bin: $("$BENCH_TOOLS/bin/$bin" --version 2>&1 | tr '\n' ' ')"
        fi
    done
fi

# ---------------------------------------------------------------------------------------------
# Helpers

# Also from lib.sh: first_line, stop_since.

start_in() { # start_in NAME NS CMD...: start_bg NAME, with CMD in network namespace NS
    local name=$1 ns=$2; shift 2
    start_bg "$name" ip netns exec "$ns" "$@"
}

wait_port_in() { # wait_port_in NS IP PORT: up to 10 s for a listener
    local i
    for i in $(seq 100); do
        ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "wan.sh: nothing listens on $2:$3 in $1" >&2
    return 1
}

# ---------------------------------------------------------------------------------------------
# Systems. Each start_* sets TARGET[sys] to the address visitors dial (from CLI_NS).

declare -A TARGET
IPERF_PORT=5201

# start_systems: iperf3 server in SRV_NS; relay (and peers' servers) in near; clients in SRV_NS.
start_systems() {
    local srv_ip=$1 base
    start_in "iperf-$TAG" "$SRV_NS" iperf3 -s -J -p "$IPERF_PORT"
    wait_port_in "$SRV_NS" 127.0.0.1 "$IPERF_PORT"
    TARGET[direct]=$srv_ip:$IPERF_PORT

    # shellcheck disable=SC2086 # WAN_RELAY_ARGS is a list of flags
    start_in "relay-$TAG" "$NEAR" "$BIN/rb-server" "$NEAR_IP:7000" --ports 7001-7010 $WAN_RELAY_ARGS
    wait_port_in "$NEAR" "$NEAR_IP" 7000
    start_in "expose-$TAG" "$SRV_NS" "$BIN/rb-expose" "$NEAR_IP" 7000 "127.0.0.1:$IPERF_PORT"
    TARGET[relay]=$(first_line "expose-$TAG")

    if [[ " ${SYSTEMS[*]} " == *" bore "* ]]; then
        base=7101
        start_in "bore-server-$TAG" "$NEAR" "$BENCH_TOOLS/bin/bore" server --bind-addr "$NEAR_IP" \
            --min-port "$base" --max-port $((base + 5))
        wait_port_in "$NEAR" "$NEAR_IP" 7835
        start_in "bore-local-$TAG" "$SRV_NS" "$BENCH_TOOLS/bin/bore" local "$IPERF_PORT" \
            --local-host 127.0.0.1 --to "$NEAR_IP" --port "$base"
        wait_port_in "$NEAR" "$NEAR_IP" "$base"
        TARGET[bore]=$NEAR_IP:$base
    fi
    if [[ " ${SYSTEMS[*]} " == *" rathole "* ]]; then
        base=7201
        printf '[server]\nbind_addr = "%s:7200"\n[server.services.iperf]\ntoken = "bench"\nbind_addr = "%s:%s"\n' \
            "$NEAR_IP" "$NEAR_IP" "$base" >"$WORK/rathole-server.toml"
        printf '[client]\nremote_addr = "%s:7200"\n[client.services.iperf]\ntoken = "bench"\nlocal_addr = "127.0.0.1:%s"\n' \
            "$NEAR_IP" "$IPERF_PORT" >"$WORK/rathole-client.toml"
        start_in "rathole-server-$TAG" "$NEAR" "$BENCH_TOOLS/bin/rathole" -s "$WORK/rathole-server.toml"
        wait_port_in "$NEAR" "$NEAR_IP" 7200
        start_in "rathole-client-$TAG" "$SRV_NS" "$BENCH_TOOLS/bin/rathole" -c "$WORK/rathole-client.toml"
        wait_port_in "$NEAR" "$NEAR_IP" "$base"
        sleep 1 # the client registers its service after the server listens
        TARGET[rathole]=$NEAR_IP:$base
    fi
}

# measure SYS P DIR ROUND: one iperf3 run from CLI_NS; appends a line to $RESULTS.
measure() {
    local sys=$1 p=$2 dir=$3 round=$4 addr out rev=() line
    addr=${TARGET[$sys]}
    [[ $dir == down ]] && rev=(-R)
    out=$WORK/iperf-$TAG-$sys-$p-$dir-$round.json
    timeout $((WAN_SECS + 30)) ip netns exec "$CLI_NS" iperf3 -c "${addr%:*}" -p "${addr##*:}" \
        -t "$WAN_SECS" -P "$p" "${rev[@]}" --get-server-output -J >"$out" 2>/dev/null || true
    # Receiver side: the server's intervals uploading, the client's downloading.
    line=$(python3 - "$out" "$dir" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    total = d["end"]["sum_received"]["bits_per_second"] / 1e6
    ivs = d["intervals"] if sys.argv[2] == "down" else d["server_output_json"]["intervals"]
    early = sum(i["sum"]["bytes"] for i in ivs if i["sum"]["end"] <= 5.01) * 8 / 5 / 1e6
    print(f"{total:.1f}\t{early:.1f}")
except Exception:
    print("0\t0")
EOF
)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$RTT" "$PLACEMENT" "$sys" "$p" "$dir" "$round" "$line" >>"$RESULTS"
    log "  rtt=${RTT}ms $PLACEMENT $sys P=$p $dir round $round: $(cut -f1 <<<"$line") Mbit/s (first 5 s $(cut -f2 <<<"$line"))"
}

# ---------------------------------------------------------------------------------------------
# The run

log "machine: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "source: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown); relay args: ${WAN_RELAY_ARGS:-(defaults)}"
log "tcp_rmem $(sysctl -n net.ipv4.tcp_rmem | tr '\t' ' '), tcp_wmem $(sysctl -n net.ipv4.tcp_wmem | tr '\t' ' '), cc $(sysctl -n net.ipv4.tcp_congestion_control)"
for RTT in $WAN_RTTS; do
    ip netns add "$NEAR"; ip netns add "$FAR"
    start_bg "wanlink-$RTT" python3 "$WANLINK" --near "$NEAR" --far "$FAR" \
        --delay-ms "$(awk -v r="$RTT" 'BEGIN {print r / 2}')" --max-seconds "$BENCH_MAX_SECS" --tag "$$"
    LINK=$LAST_PID
    for i in $(seq 100); do grep -q ready "$WORK/wanlink-$RTT.out" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$WORK/wanlink-$RTT.out" || { echo "wan.sh: wanlink did not start" >&2; cat "$WORK/wanlink-$RTT.err" >&2; exit 1; }
    log "link up: ${RTT} ms RTT"
    for PLACEMENT in $WAN_PLACEMENTS; do
        TAG=$RTT-$PLACEMENT
        case $PLACEMENT in
            client) SRV_NS=$FAR; CLI_NS=$NEAR; srv_ip=$FAR_IP ;;
            visitor) SRV_NS=$NEAR; CLI_NS=$FAR; srv_ip=$NEAR_IP ;;
            *) echo "wan.sh: unknown placement '$PLACEMENT' (client, visitor)" >&2; exit 1 ;;
        esac
        MARK=${#PIDS[@]}
        start_systems "$srv_ip"
        log "rtt=${RTT}ms placement=$PLACEMENT: ${SYSTEMS[*]} -> ${TARGET[*]}"
        for round in $(seq "$WAN_ROUNDS"); do
            for p in $WAN_STREAMS; do
                for dir in up down; do
                    for sys in "${SYSTEMS[@]}"; do measure "$sys" "$p" "$dir" "$round"; done
                done
            done
        done
        stop_since "$MARK"
    done
    kill -TERM "$LINK" 2>/dev/null || true
    wait "$LINK" 2>/dev/null || true
    log "link: $(tail -n1 "$WORK/wanlink-$RTT.err")"
    ip netns del "$NEAR"; ip netns del "$FAR"
done

# ---------------------------------------------------------------------------------------------
# The table: medians over rounds, spread (min-max), and the ratio to direct of the same round.

python3 - "$RESULTS" "${SYSTEMS[@]}" <<'EOF' | tee "$WORK/table.md"
import sys, statistics as st
from collections import defaultdict
path, systems = sys.argv[1], sys.argv[2:]
runs = defaultdict(dict)  # (rtt, placement, p, dir) -> {(sys, round): (total, early)}
for line in open(path):
    rtt, pl, s, p, d, r, total, early = line.split("\t")
    runs[(int(rtt), pl, int(p), d)][(s, int(r))] = (float(total), float(early))
def fmt(v):
    return f"{st.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
def ratios(cell, s, k):
    rounds = sorted({r for (_, r) in cell})
    out = [cell[(s, r)][k] / cell[("direct", r)][k] for r in rounds
           if (s, r) in cell and ("direct", r) in cell and cell[("direct", r)][k] > 0]
    return out
for k, title in ((0, "whole run"), (1, "first 5 s")):
    print(f"\nWAN bulk, {title}: Mbit/s median (min-max) over rounds; ratio = median of per-round sys/direct (min-max)\n")
    head = "| RTT | placement | visitors | dir | direct |" + "".join(f" {s} | {s} / direct |" for s in systems[1:])
    print(head)
    print("|" + "---|" * (5 + 2 * (len(systems) - 1)))
    for key in sorted(runs):
        cell = runs[key]
        rtt, pl, p, d = key
        row = f"| {rtt} ms | {pl} | {p} | {d} |"
        for s in systems:
            v = [cell[(s2, r)][k] for (s2, r) in cell if s2 == s]
            row += f" {fmt(v) if v else '-'} |"
            if s != "direct":
                rs = ratios(cell, s, k)
                row += f" {st.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})" if rs else " - "
                row += " |"
        print(row)
print(f"\nraw results: {path}")
EOF
exit 0
