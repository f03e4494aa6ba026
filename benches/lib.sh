# Shared helpers of the benchmark scripts (sourced, not run). The caller sets NAME (for
# messages), WORK (its scratch directory), BENCH_LOG and MAX_SECS first. Processes started
# with start_bg are stopped, by their process id, when the script exits; a watchdog ends the
# script after MAX_SECS.

PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    [[ -n ${WATCHDOG:-} ]] && kill "$WATCHDOG" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The watchdog's sleep is killed with it: left behind, it kept the caller's stderr open, so
# `script 2>&1 | tail` waited for MAX_SECS after the script had finished.
( trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep "$MAX_SECS" & nap=$!; wait "$nap"
  echo "$NAME: time limit reached" >&2; kill -TERM $$ ) >/dev/null &
WATCHDOG=$!

# start_bg NAME CMD...: runs CMD in the background, output in $WORK/NAME.{out,err}.
start_bg() { local name=$1; shift
    RUST_LOG=$BENCH_LOG "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    LAST_PID=$!; PIDS+=("$LAST_PID"); }
# first_line NAME: the first line NAME printed (its address), waiting at most 10 s.
first_line() { local i
    for i in $(seq 100); do [[ -s $WORK/$1.out ]] && { head -n1 "$WORK/$1.out"; return 0; }; sleep 0.1; done
    echo "$NAME: $1 printed no address" >&2; tail -n 20 "$WORK/$1.err" >&2; return 1; }
free_port() { local p; while :; do p=$((20000 + RANDOM % 9000))
    [[ -z $(ss -Hltn "( sport = :$p )" 2>/dev/null) ]] && { echo "$p"; return; }; done; }
# wait_port PORT: until something listens on 127.0.0.1:PORT, at most 10 s.
wait_port() { local i; for i in $(seq 100); do nc -z 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "$NAME: nothing listens on 127.0.0.1:$1" >&2; return 1; }
# field KEY LINE: the value of KEY=VALUE in LINE.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
