#!/usr/bin/env bash
# What a token-guessing flood costs the relay: `loadgen auth` makes handshake attempts with a
# wrong token at a fixed rate against a relay started with --token, while this script samples
# the relay's CPU time and resident memory from /proc.
#
#   benches/auth_flood.sh                       # 1,000 attempts/s for 10 s from 1,000 addresses
#   SOURCES=1 benches/auth_flood.sh             # the same flood from one address
#   PROFILE=release benches/auth_flood.sh       # with release binaries (build them first)
#
# Loopback only; bounded by SECONDS_RUN plus the attempts' own deadline, and the whole run by
# MAX_SECS. Only the processes this script started are stopped, by their process ids.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PROFILE:-debug}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
RATE=${RATE:-1000}
SECONDS_RUN=${SECONDS_RUN:-10}
SOURCES=${SOURCES:-1000}
THREADS=${THREADS:-2}
# The relay's log level: its refusal lines are shown at the end.
BENCH_LOG=${BENCH_LOG:-info}
MAX_SECS=${MAX_SECS:-$((SECONDS_RUN + 120))} # the whole run, whatever happens

for b in relay loadgen; do
    [[ -x $BIN/$b ]] || { echo "missing $BIN/$b; build it first (cargo build --bins)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/authflood.XXXXXX)
NAME=auth_flood.sh
# The watchdog, and the processes stopped at exit by their ids.
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
on_exit() { rm -rf "$WORK"; }

RELAY_TOKEN=auth-flood-benchmark-secret start_bg relay "$BIN/relay" 127.0.0.1:0 --threads "$THREADS"
relay=$LAST_PID
addr=$(relay_addr relay)

ticks=$(getconf CLK_TCK)
# Readings of the relay; one that is gone ends the run.
cpu() { kill -0 "$relay" && cpu_ticks "$relay"; }
rss() { kill -0 "$relay" && rss_kib "$relay"; }
rss_idle=$(rss)
cpu_before=$(cpu)
peak=$rss_idle
"$BIN/loadgen" auth --addr "$addr" --rate "$RATE" --seconds "$SECONDS_RUN" --sources "$SOURCES" &
load=$!
PIDS+=("$load")
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
grep -E "auth_failed|more refusals" "$WORK/relay.err" | tail -3 || true
