#!/usr/bin/env bash
# What idle tunnel sessions cost the relay: `loadgen sessions` opens raw-protocol sessions in
# steps (each with its control stream and heartbeat, like `expose` when nothing visits), while
# this script reads the relay's resident memory and CPU time from /proc.
#
#   benches/sessions.sh                         # 1,000 / 5,000 / 10,000 sessions, 10 s heartbeat
#   STEPS=500,2000 benches/sessions.sh          # other steps
#   RELAY_BIN=/path/to/relay benches/sessions.sh  # another relay build (before/after runs)
#
# Release binaries (built first: cargo build --release -p relay-bin -p relay-benches). Loopback
# only; every wait is bounded, and the whole run by MAX_SECS; only the processes this script
# started are stopped, by their ids.
# Prints one `sessions ...` line of key=value figures (KiB, seconds): resident memory per session
# at each step, CPU per heartbeat interval at the top step, and how much of the sessions'
# memory the relay handed back once they all closed (`returned_pct`, of the top step's growth).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RELAY_BIN=${RELAY_BIN:-$BIN/relay}
LOADGEN=${LOADGEN:-$BIN/loadgen}
STEPS=${STEPS:-1000,5000,10000}
HEARTBEAT=${HEARTBEAT:-10s}     # the relay's default
CPU_INTERVALS=${CPU_INTERVALS:-3} # heartbeat intervals over which CPU is measured at the top step
SETTLE=${SETTLE:-3}             # seconds for the relay to settle before a memory reading
# The relay's log level: its "session closed" lines (info) are counted below.
BENCH_LOG=${BENCH_LOG:-info}
MAX_SECS=${MAX_SECS:-3600}      # the whole run, whatever happens

for b in "$RELAY_BIN" "$LOADGEN"; do
    [[ -x $b ]] || { echo "sessions.sh: missing $b; build it first" >&2; exit 1; }
done
top=${STEPS##*,}
# Two descriptors per session on the relay (connection and public listener) and one in loadgen.
want_fds=$((2 * top + 512))
if (( $(ulimit -n) < want_fds )); then
    ulimit -Hn "$want_fds" 2>/dev/null || true
    if ! ulimit -n "$want_fds" 2>/dev/null; then
        # Without CAP_SYS_RESOURCE the hard limit stays: take the most sessions it allows.
        ulimit -n "$(ulimit -Hn)"
        fit=$(( ($(ulimit -n) - 512) / 2 / 100 * 100 ))
        (( fit > 0 )) || { echo "sessions.sh: ulimit -n $(ulimit -n) leaves no room" >&2; exit 1; }
        echo "sessions.sh: the hard limit of $(ulimit -Hn) open files allows $fit sessions, not $top" >&2
        STEPS=$(tr , '\n' <<<"$STEPS" | awk -v fit="$fit" '$1 < fit' | paste -sd,),$fit
        STEPS=${STEPS#,}
        top=$fit
    fi
fi

WORK=$(mktemp -d /tmp/sessions.XXXXXX)
NAME=sessions.sh
# Logging, the watchdog, and the processes stopped at exit by their ids.
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
on_exit() { rm -rf "$WORK"; }

# Public ports below the ephemeral range, one per session; the session cap above the top step.
start_bg relay "$RELAY_BIN" 127.0.0.1:0 --ports 20000-$((20000 + top + 999)) \
    --max-sessions $((top + 256)) --heartbeat "$HEARTBEAT"
relay=$LAST_PID
addr=$(relay_addr relay)

ticks=$(getconf CLK_TCK)
# Readings of the relay; one that is gone ends the run.
cpu() { kill -0 "$relay" && cpu_ticks "$relay"; }
rss() { kill -0 "$relay" && rss_kib "$relay"; }
tcp_pages() { awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
wait_line() { # wait_line PATTERN SECONDS: until loadgen printed a line matching PATTERN
    local deadline=$((SECONDS + $2))
    until grep -q "$1" "$WORK/load.out"; do
        (( SECONDS < deadline )) || { echo "sessions.sh: no '$1' from loadgen in $2 s" >&2; cat "$WORK/load.out" "$WORK/load.err" >&2; exit 1; }
        kill -0 "$load" 2>/dev/null || { echo "sessions.sh: loadgen ended early" >&2; cat "$WORK/load.out" "$WORK/load.err" >&2; exit 1; }
        sleep 0.2
    done
}

sleep "$SETTLE"
idle=$(rss)
tcp_idle=$(tcp_pages)
start_bg load "$LOADGEN" sessions --addr "$addr" --steps "$STEPS" --hold-seconds 600
load=$LAST_PID
out="sessions relay_idle_kib=$idle"
IFS=, read -r -a steps <<<"$STEPS"
for n in "${steps[@]}"; do
    wait_line "step=$n " 600
    sleep "$SETTLE"
    r=$(rss)
    per=$(echo "scale=1; ($r - $idle) / $n" | bc)
    tcp=$(( $(tcp_pages) - tcp_idle ))
    out+=" rss_${n}_kib=$r per_session_${n}_kib=$per host_tcp_mem_delta_${n}_kib=$((tcp * 4))"
    if [[ $n == "$top" ]]; then
        # CPU spent while every session only keeps its heartbeat.
        iv=$(sed 's/s$//' <<<"$HEARTBEAT")
        before=$(cpu)
        sleep $((iv * CPU_INTERVALS))
        after=$(cpu)
        out+=" cpu_s_per_heartbeat_${n}=$(echo "scale=3; ($after - $before) / $ticks / $CPU_INTERVALS" | bc)"
        out+=" cpu_us_per_session_heartbeat=$(echo "scale=1; ($after - $before) * 1000000 / $ticks / $CPU_INTERVALS / $n" | bc)"
    fi
    kill -USR1 "$load"
done
wait_line "^closed" 120
wait "$load" || true
# Closed sessions leave the relay's tables as their tasks end; give it a bounded moment.
deadline=$((SECONDS + 30))
while (( SECONDS < deadline )) && (( $(grep -c "session closed" "$WORK/relay.err") < top )); do sleep 0.5; done
sleep "$SETTLE"
closed_rss=$(rss)
out+=" rss_after_close_kib=$closed_rss returned_pct=$(( (r - closed_rss) * 100 / (r - idle) )) $(grep -o 'heartbeats=[0-9]* failed=[0-9]*' "$WORK/load.out")"
out+=" errors=$(grep -o 'errors=[0-9]*' "$WORK/load.out" | tail -1 | cut -d= -f2)"
echo "$out"
