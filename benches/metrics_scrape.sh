#!/usr/bin/env bash
# Cost of a /metrics scrape with many open visitors: starts the release `relay --metrics`, an
# `echoserver` tunnel and `loadgen hold` with N idle visitors, then times SCRAPES scrapes and
# reads the relay's CPU time around them.
#
#   benches/metrics_scrape.sh            # 10,000 visitors, 200 scrapes
#   N=1000 SCRAPES=50 benches/metrics_scrape.sh
#
# Loopback only; every wait is bounded; only processes this script started are stopped, by id.
set -euo pipefail

N=${N:-10000}
SCRAPES=${SCRAPES:-200}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/rscrape.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

(cd "$ROOT" && cargo build --release -q -p relay-bin -p echoserver -p relay-benches \
    --bin relay --bin echoserver --bin loadgen)
BIN=$CARGO_TARGET_DIR/release

wait_for() { # wait_for FILE PATTERN: up to 60 s
    local i
    for i in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "metrics_scrape.sh: no '$2' in $1" >&2; tail -n 20 "$1" >&2; return 1
}

"$BIN/relay" 127.0.0.1:0 --metrics 127.0.0.1:0 --threads 1 2>"$WORK/relay.err" &
RELAY=$!; PIDS+=("$RELAY")
wait_for "$WORK/relay.err" "metrics listening"
CONTROL=$(grep -o 'control=[^ ]*' "$WORK/relay.err" | head -n1 | cut -d= -f2)
METRICS=$(grep -o 'metrics=[^ ]*' "$WORK/relay.err" | head -n1 | cut -d= -f2)
"$BIN/echoserver" 127.0.0.1 "${CONTROL##*:}" >"$WORK/echo.out" 2>"$WORK/echo.err" &
PIDS+=("$!")
wait_for "$WORK/echo.out" ":"
PUBLIC=$(head -n1 "$WORK/echo.out"); PUBLIC=127.0.0.1:${PUBLIC##*:}
"$BIN/loadgen" hold --addr "$PUBLIC" --count "$N" --hold-seconds 300 >"$WORK/hold.out" 2>&1 &
HOLD=$!; PIDS+=("$HOLD")
wait_for "$WORK/hold.out" "^ready"
echo "$(grep '^ready' "$WORK/hold.out")"
open=$(curl -s "http://$METRICS/metrics" | awk '/^relay_visitors_open/ {print $2}')
echo "visitors open per /metrics: $open"

cpu() { awk '{print $14 + $15}' "/proc/$RELAY/stat"; } # utime + stime, in clock ticks
HZ=$(getconf CLK_TCK)
c0=$(cpu); t0=$(date +%s%N)
bytes=0
for _ in $(seq "$SCRAPES"); do
    b=$(curl -s -o /dev/null -w '%{size_download}' "http://$METRICS/metrics")
    bytes=$b
done
t1=$(date +%s%N); c1=$(cpu)
awk -v n="$SCRAPES" -v t="$((t1 - t0))" -v c="$((c1 - c0))" -v hz="$HZ" -v b="$bytes" -v v="$N" 'BEGIN {
    printf "%d scrapes with %d visitors open: %.2f ms per scrape (wall, curl included), relay CPU %.3f ms per scrape, %d bytes each\n",
        n, v, t / n / 1e6, c / hz * 1000 / n, b
}'
