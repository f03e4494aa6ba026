#!/usr/bin/env bash
# Where the relay's and expose's CPU goes on the bulk path: one iperf3 stream through
# relay + expose on loopback, with `perf stat` (CPU used, context switches), `perf record`
# (hot symbols, self time, user space and kernel) and `strace -c` (syscalls per GiB moved).
#
#   benches/profile.sh [SECONDS] [up|down]     # default 8 s, upload (visitor -> service)
#   SUT_ENV="GLIBC_TUNABLES=..." benches/profile.sh   # extra environment for relay and expose only
#
# Needs perf (Debian: linux-perf), strace and iperf3. Loopback only; every step is bounded.
# Writes its reports to a fresh /tmp/rbprof.* directory and prints a summary.
set -euo pipefail

SECS=${1:-8}
DIR=${2:-up}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/rbprof.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for t in perf strace iperf3 nc; do
    command -v "$t" >/dev/null || { echo "profile.sh: $t is required" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -q -p relay-bin --bin relay --bin expose)
# Neutral names, as in run.sh: another session's `pkill relay` must not end this run.
cp "$CARGO_TARGET_DIR/release/relay" "$WORK/rb-server"
cp "$CARGO_TARGET_DIR/release/expose" "$WORK/rb-expose"

port=$((20000 + RANDOM % 9000)); iperf_port=$((port + 5000))
iperf3 -s -B 127.0.0.1 -p "$iperf_port" >/dev/null 2>&1 & PIDS+=($!)
env RUST_LOG=warn ${SUT_ENV:-} "$WORK/rb-server" "127.0.0.1:$port" 2>"$WORK/relay.err" & PIDS+=($!); RELAY=$!
for _ in $(seq 100); do nc -z 127.0.0.1 "$port" && break; sleep 0.1; done
env RUST_LOG=warn ${SUT_ENV:-} "$WORK/rb-expose" 127.0.0.1 "$port" "$iperf_port" >"$WORK/expose.out" 2>&1 & PIDS+=($!); EXPOSE=$!
for _ in $(seq 100); do [[ -s $WORK/expose.out ]] && break; sleep 0.1; done
pub=$(head -n1 "$WORK/expose.out")
rev=(); [[ $DIR == down ]] && rev=(-R)

run_iperf() { timeout $((SECS + 30)) iperf3 -c 127.0.0.1 -p "${pub##*:}" -t "$SECS" "${rev[@]}" -J \
    | jq -r '.end.sum_received.bytes'; }

# 1. perf stat + perf record while iperf3 runs (the profilers stop a second before iperf3).
perf stat -e task-clock,context-switches,cpu-migrations -p "$RELAY" -o "$WORK/stat-relay.txt" -- sleep $((SECS - 1)) &
s1=$!
perf stat -e task-clock,context-switches,cpu-migrations -p "$EXPOSE" -o "$WORK/stat-expose.txt" -- sleep $((SECS - 1)) &
s2=$!
bytes_stat=$(run_iperf)
wait "$s1" "$s2" || true
perf record -F 999 -g -p "$RELAY" -o "$WORK/relay.data" -- sleep $((SECS - 1)) >/dev/null 2>&1 &
r1=$!
perf record -F 999 -g -p "$EXPOSE" -o "$WORK/expose.data" -- sleep $((SECS - 1)) >/dev/null 2>&1 &
r2=$!
run_iperf >/dev/null
wait "$r1" "$r2" || true
# 2. syscall counts (strace slows the process; only the counts per byte matter here).
timeout $((SECS + 5)) strace -c -f -p "$RELAY" -o "$WORK/strace-relay.txt" &
t1=$!
sleep 0.5
bytes_strace=$(run_iperf)
kill -INT "$t1" 2>/dev/null || true; wait "$t1" 2>/dev/null || true

for who in relay expose; do
    perf report -i "$WORK/$who.data" --no-children --sort symbol --percent-limit 1 --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -n 20 >"$WORK/top-$who.txt" || true
    perf report -i "$WORK/$who.data" --no-children --sort dso --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -n 6 >"$WORK/dso-$who.txt" || true
done

gib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1073741824}'; }
echo "bulk $DIR, one iperf3 stream through relay + expose, $SECS s: $(gib "$bytes_stat") GiB" \
    "($(awk -v b="$bytes_stat" -v s="$SECS" 'BEGIN {printf "%.2f", b * 8 / s / 1e9}') Gbit/s)"
for who in relay expose; do
    echo; echo "== $who: CPU and scheduling (perf stat)"
    grep -E 'task-clock|context-switches|cpu-migrations' "$WORK/stat-$who.txt" | sed 's/^ */  /'
    # CPU per GiB moved is the figure that survives a busy machine; throughput alone does not.
    awk -v b="$bytes_stat" -v s="$SECS" '/task-clock/ {gsub(",", "", $1);
        printf "  %.0f CPU-ms per GiB moved\n", $1 / (b * (s - 1) / s / 1073741824)}' "$WORK/stat-$who.txt"
    echo "== $who: by DSO"; cat "$WORK/dso-$who.txt"
    echo "== $who: hottest symbols, self time"; cat "$WORK/top-$who.txt"
done
echo; echo "== relay: syscalls during $(gib "$bytes_strace") GiB (strace -c, slowed)"
head -n 14 "$WORK/strace-relay.txt"
echo; echo "reports in $WORK"
