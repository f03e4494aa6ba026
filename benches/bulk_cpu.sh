#!/usr/bin/env bash
# CPU per GiB that relay + expose spend on bulk data, for several builds or environments in
# interleaved rounds (so other load on the machine hits every variant alike): per round and
# variant, a fresh relay and expose in front of iperf3's server, one stream moving a fixed
# number of bytes, CPU time of both processes from /proc.
#
#   benches/bulk_cpu.sh name=BINDIR[,ENV=VALUE...] ...   # BINDIR holds relay and expose
#   benches/bulk_cpu.sh ours=target/release bore=/work/bench-tools/bin/bore   # a bore binary
#   ROUNDS=5 BYTES=2G DIR=down STREAMS=8 benches/bulk_cpu.sh base=/tmp/a new=/tmp/b
#
# STREAMS visitors (iperf3 -P) share the BYTES. Prints one `bulk_cpu name ...` line per variant:
# CPU-ms per GiB for every round and the median, and the median throughput in Gbit/s.
# Loopback only; every wait is bounded; only the processes this script started are stopped.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
BYTES=${BYTES:-2G}
DIR=${DIR:-up}
STREAMS=${STREAMS:-1}
(( $# > 0 )) || { echo "usage: bulk_cpu.sh name=BINDIR[,ENV=VALUE...] ..." >&2; exit 2; }
for t in iperf3 nc jq; do
    command -v "$t" >/dev/null || { echo "bulk_cpu.sh: $t is required" >&2; exit 1; }
done
work=$(mktemp -d /tmp/bulkcpu.XXXXXX)
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
rev=(); [[ $DIR == down ]] && rev=(-R)

# one_run NAME BINDIR ENV...: prints CPU-ms per GiB of relay + expose for one transfer, and
# its Gbit/s, as `MS/GBPS`.
one_run() {
    local name=$1 bin=$2; shift 2
    local port=$((20000 + RANDOM % 9000)) relay expose iperf pub json bytes gbps c0 c1
    iperf3 -s -1 -B 127.0.0.1 -p $((port + 5000)) >/dev/null 2>&1 & iperf=$!; pids+=("$iperf")
    if [[ -f $bin && $(basename "$bin") == bore ]]; then
        # bore's control port is fixed (7835); its tunnel gets the port we ask for. Probing
        # the tunnel would reach iperf3's one-off server, so wait for bore's own log line.
        env "$@" "$bin" server --bind-addr 127.0.0.1 --min-port "$port" --max-port "$port" >/dev/null 2>&1 & relay=$!; pids+=("$relay")
        for _ in $(seq 100); do nc -z 127.0.0.1 7835 2>/dev/null && break; sleep 0.1; done
        env "$@" "$bin" local $((port + 5000)) -l 127.0.0.1 --to 127.0.0.1 -p "$port" >"$work/expose.log" 2>&1 & expose=$!; pids+=("$expose")
        for _ in $(seq 100); do grep -q listening "$work/expose.log" && break; sleep 0.1; done
        grep -q listening "$work/expose.log" && pub=127.0.0.1:$port || pub=
    else
        # Neutral process names: another session's `pkill relay` must not end this run.
        cp "$bin/relay" "$work/rb-server-$name"; cp "$bin/expose" "$work/rb-expose-$name"
        env RUST_LOG=warn "$@" "$work/rb-server-$name" "127.0.0.1:$port" 2>"$work/relay.err" & relay=$!; pids+=("$relay")
        for _ in $(seq 100); do nc -z 127.0.0.1 "$port" 2>/dev/null && break; sleep 0.1; done
        env RUST_LOG=warn "$@" "$work/rb-expose-$name" 127.0.0.1 "$port" $((port + 5000)) >"$work/expose.out" 2>&1 & expose=$!; pids+=("$expose")
        for _ in $(seq 100); do [[ -s $work/expose.out ]] && break; sleep 0.1; done
        pub=$(head -n1 "$work/expose.out")
    fi
    [[ -n $pub ]] || { echo "bulk_cpu.sh: the tunnel client did not start" >&2; cat "$work"/expose.* "$work/relay.err" >&2 2>/dev/null; exit 1; }
    c0=$(( $(ticks "$relay") + $(ticks "$expose") ))
    json=$(timeout 120 iperf3 -c 127.0.0.1 -p "${pub##*:}" -n "$BYTES" -P "$STREAMS" "${rev[@]}" -J || true)
    bytes=$(jq -r '.end.sum_received.bytes' <<<"$json" 2>/dev/null || true)
    gbps=$(jq -r '.end.sum_received.bits_per_second / 1e9' <<<"$json" 2>/dev/null || true)
    c1=$(( $(ticks "$relay") + $(ticks "$expose") ))
    kill "$expose" "$relay" "$iperf" 2>/dev/null || true
    wait "$expose" "$relay" "$iperf" 2>/dev/null || true
    # A transfer that failed (a port taken meanwhile, say) counts as no run.
    [[ $bytes =~ ^[1-9][0-9]*$ ]] || { echo failed; return; }
    awk -v t=$((c1 - c0)) -v hz="$hz" -v b="$bytes" -v g="$gbps" \
        'BEGIN {printf "%.0f/%.2f", t * 1000 / hz / (b / 1073741824), g}'
}

declare -A results
for ((r = 1; r <= ROUNDS; r++)); do
    for spec in "$@"; do
        name=${spec%%=*}; rest=${spec#*=}
        IFS=, read -r -a parts <<<"$rest"
        ms=$(one_run "$name" "${parts[0]}" "${parts[@]:1}")
        results[$name]+="$ms "
        echo "round $r $name: $ms CPU-ms/GiB / Gbit/s" >&2
    done
done
for spec in "$@"; do
    name=${spec%%=*}
    med=$(tr ' ' '\n' <<<"${results[$name]}" | grep -v failed | grep . | cut -d/ -f1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
    gmed=$(tr ' ' '\n' <<<"${results[$name]}" | grep -v failed | grep . | cut -d/ -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
    echo "bulk_cpu $name dir=$DIR streams=$STREAMS bytes=$BYTES runs=[${results[$name]% }] median_cpu_ms_per_gib=$med median_gbps=$gmed"
done
