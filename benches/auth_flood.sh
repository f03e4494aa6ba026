#!/usr/bin/env bash
# What a token-guessing flood costs the relay: `loadgen auth` makes handshake attempts with a
# wrong token at a fixed rate against a relay started with --token, while this script samples
# the relay's CPU time and resident memory from /proc.
#
#   benches/auth_flood.sh                       # 1,000 attempts/s for 10 s from 1,000 addresses
#   SOURCES=1 benches/auth_flood.sh             # the same flood from one address
#   PROFILE=release benches/auth_flood.sh       # with release binaries (build them first)
#
# Loopback only; bounded by SECONDS_RUN plus the attempts' own deadline. Only the relay this
# script started is stopped, by its process id.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PROFILE:-debug}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
RATE=${RATE:-1000}
SECONDS_RUN=${SECONDS_RUN:-10}
SOURCES=${SOURCES:-1000}
THREADS=${THREADS:-2}

for b in relay loadgen; do
    [[ -x $BIN/$b ]] || { echo "missing $BIN/$b; build it first (cargo build --bins)" >&2; exit 1; }
done

log=$(mktemp)
RELAY_TOKEN=auth-flood-benchmark-secret "$BIN/relay" 127.0.0.1:0 --threads "$THREADS" 2>"$log" &
relay=$!
trap 'kill "$relay" 2>/dev/null || true; wait "$relay" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
    grep -q "relay listening" "$log" && break
    sleep 0.1
done
addr=$(grep -o 'control=[0-9.:]*' "$log" | head -1 | cut -d= -f2)
[[ -n $addr ]] || { echo "relay did not start:" >&2; cat "$log" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$relay/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$relay/status"; }
rss_idle=$(rss)
cpu_before=$(cpu)
peak=$rss_idle
"$BIN/loadgen" auth --addr "$addr" --rate "$RATE" --seconds "$SECONDS_RUN" --sources "$SOURCES" &
load=$!
start=$(date +%s.%N)
while kill -0 "$load" 2>/dev/null; do
    now=$(rss); (( now > peak )) && peak=$now
    sleep 0.2
done
wait "$load"
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
cpu_after=$(cpu)
cpu_s=$(echo "scale=2; ($cpu_after - $cpu_before) / $ticks" | bc)
util=$(echo "scale=1; 100 * $cpu_s / $elapsed" | bc)
echo "relay profile=$PROFILE threads=$THREADS rss_idle_kib=$rss_idle rss_peak_kib=$peak rss_after_kib=$(rss) cpu_s=$cpu_s wall_s=$elapsed cpu_pct_of_one_core=$util"
grep -E "auth_failed|more refusals" "$log" | tail -3 || true
