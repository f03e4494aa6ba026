# Shared helpers of the benchmark scripts (sourced, not run). The caller sets NAME (for
# messages), WORK (its scratch directory), BENCH_LOG and MAX_SECS first. Processes started
# with start_bg (or added to PIDS) are stopped, by their process id, when the script exits; a
# script with more to undo then (namespaces, scratch files) defines on_exit, which runs after
# its processes are stopped. A watchdog ends the script after MAX_SECS.

PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
    stop_since 0
    if declare -F on_exit >/dev/null; then on_exit || true; fi
    [[ -n ${WATCHDOG:-} ]] && kill "$WATCHDOG" 2>/dev/null || true
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# The watchdog's sleep is killed with it: left behind, it kept the caller's stdout or stderr
# open, so `script 2>&1 | tail` waited for MAX_SECS after the script had finished.
( trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep "$MAX_SECS" & nap=$!; wait "$nap"
  echo "$NAME: time limit of ${MAX_SECS}s reached; stopping" >&2; kill -TERM $$ ) >/dev/null &
WATCHDOG=$!

# start_bg NAME CMD...: runs CMD in the background, output in $WORK/NAME.{out,err}.
start_bg() { local name=$1; shift
    RUST_LOG=$BENCH_LOG "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    LAST_PID=$!; PIDS+=("$LAST_PID"); }
# stop_since MARK: stops the processes started since MARK (an index into PIDS), by their ids:
# TERM, then KILL for any still running 2 s later; reaps them.
stop_since() { local p i
    for p in "${PIDS[@]:$1}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:$1}"; do
        for i in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
    done; }
# first_line NAME: the first line NAME printed (its address), waiting at most 10 s.
first_line() { local i
    for i in $(seq 100); do [[ -s $WORK/$1.out ]] && { head -n1 "$WORK/$1.out"; return 0; }; sleep 0.1; done
    echo "$NAME: $1 printed no address; its log:" >&2; tail -n 20 "$WORK/$1.err" >&2 || true; return 1; }
# relay_addr NAME: the control address the relay started as NAME logged (at info), waiting at
# most 10 s; for a relay bound to port 0.
relay_addr() { local i a
    for i in $(seq 100); do
        a=$(grep -o 'control=[0-9.:]*' "$WORK/$1.err" 2>/dev/null | head -n1 | cut -d= -f2)
        [[ -n $a ]] && { echo "$a"; return 0; }; sleep 0.1; done
    echo "$NAME: the relay $1 did not start; its log:" >&2; tail -n 20 "$WORK/$1.err" >&2 || true; return 1; }
# fingerprint NAME: the certificate fingerprint the relay started as NAME with
# --tls-self-signed logged (at info for target `relay`), waiting at most 10 s.
fingerprint() { local i fp
    for i in $(seq 100); do
        fp=$(sed -n 's/.*fingerprint=\([0-9a-f]\{64\}\).*/\1/p' "$WORK/$1.err" | head -n1)
        [[ -n $fp ]] && { echo "$fp"; return 0; }; sleep 0.1; done
    echo "$NAME: the TLS relay $1 logged no fingerprint" >&2; return 1; }
# free_port: a port below the ephemeral range with nothing listening on it.
free_port() { local p; while :; do p=$((20000 + RANDOM % 9000))
    [[ -z $(ss -Hltn "( sport = :$p )" 2>/dev/null) ]] && { echo "$p"; return; }; done; }
# wait_port PORT: until something listens on 127.0.0.1:PORT, at most 10 s.
wait_port() { local i; for i in $(seq 100); do nc -z 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "$NAME: nothing listens on 127.0.0.1:$1" >&2; return 1; }
# field KEY LINE: the value of KEY=VALUE in LINE.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# rss_kib PID: resident memory of PID in KiB; nothing once PID is gone.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
# cpu_ticks PID: user + system CPU time PID has used, in clock ticks; 0 once PID is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# install_peers: bore and rathole into $BENCH_TOOLS when missing (cargo install: minutes of
# compiling the first time); the caller leaves out one that did not install.
install_peers() { local tool bin extra
    for tool in bore-cli rathole; do
        bin=${tool%-cli}
        [[ -x $BENCH_TOOLS/bin/$bin ]] && continue
        log "installing $tool into $BENCH_TOOLS (several minutes of compiling)"
        extra=()
        [[ $tool == rathole ]] && extra=(--no-default-features --features server,client)
        timeout 1800 cargo install -q --root "$BENCH_TOOLS" "$tool" "${extra[@]}" || true
    done; }
