#!/usr/bin/env bash
# Whole-system benchmark of relay: the real `relay`, `expose` and `echoserver` binaries, measured
# against direct loopback TCP to the same servers in the same run, and printed as a table of
# figures, ratios and the targets from the performance issue. See docs/benchmark.md.
#
#   benches/run.sh                 # full run, about 5 minutes (bounded by BENCH_MAX_SECS)
#   QUICK=1 benches/run.sh         # shorter transfers and fewer samples, about 2 minutes
#   BENCH_PEERS=1 benches/run.sh   # also bore and rathole, side by side (cargo-installs them)
#   BENCH_PROFILE=1 benches/run.sh # also perf-profile the relay on the 1-stream bulk path
#
# The relay's suite runs twice: plain, then with TLS between client and relay (relay
# --tls-self-signed --require-tls, clients --tls-fingerprint); a second table compares them.
#
# Loopback only (127.0.0.1). Every step is bounded by a count and a timeout, and a watchdog
# stops the whole run after BENCH_MAX_SECS. Only processes this script started are stopped, by
# their process id.
set -euo pipefail

QUICK=${QUICK:-0}
BENCH_PEERS=${BENCH_PEERS:-0}
BENCH_PROFILE=${BENCH_PROFILE:-0}
BENCH_MAX_SECS=${BENCH_MAX_SECS:-900}
# Log level of the relay binaries (and the peers). `info` logs two lines per visitor.
BENCH_LOG=${BENCH_LOG:-warn}
# Where bore and rathole are installed (cargo install --root).
BENCH_TOOLS=${BENCH_TOOLS:-/work/bench-tools}
# Whether missing Debian tools (iperf3, wrk, jq, netcat) may be installed with apt-get.
BENCH_APT=${BENCH_APT:-1}

if [[ $QUICK == 1 ]]; then
    BULK_SECS=${BULK_SECS:-2}; PINGPONG_N=${PINGPONG_N:-5000}; CONNECT_N=${CONNECT_N:-500}
    RATE_SECS=${RATE_SECS:-2}; WRK_SECS=${WRK_SECS:-2}
else
    BULK_SECS=${BULK_SECS:-5}; PINGPONG_N=${PINGPONG_N:-20000}; CONNECT_N=${CONNECT_N:-2000}
    RATE_SECS=${RATE_SECS:-5}; WRK_SECS=${WRK_SECS:-5}
fi
HOLD_N=${HOLD_N:-5000}   # idle visitors for the memory figure (the issue asks for >= 5,000)
BIG_N=${BIG_N:-10000}    # concurrent visitors through one session
export RELAY_MAX_OPEN_VISITORS=$((BIG_N + 1000)) RELAY_MAX_OPEN_VISITORS_PER_ADDR=$((BIG_N + 1000)) # idle, beyond the tcp_mem-derived default
RATE_CONCURRENCY=${RATE_CONCURRENCY:-16}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# The work directory's name must not contain "relay": see the copies below.
WORK=$(mktemp -d /tmp/rbench.XXXXXX)
RESULTS=$WORK/results.txt
: >"$RESULTS"
NAME=run.sh
MAX_SECS=$BENCH_MAX_SECS
# Logging, the watchdog, and the processes stopped at exit by their ids.
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools, limits, build

need() { # need CMD PACKAGE: make CMD available, or return 1
    command -v "$1" >/dev/null 2>&1 && return 0
    if [[ $BENCH_APT == 1 && $(id -u) == 0 ]]; then
        log "installing $2 with apt-get"
        timeout 300 apt-get update -qq >/dev/null 2>&1 || true
        timeout 300 apt-get install -y -qq "$2" >/dev/null 2>&1 || true
    fi
    command -v "$1" >/dev/null 2>&1
}
need nc netcat-openbsd || { echo "run.sh: netcat is required" >&2; exit 1; }
need jq jq || { echo "run.sh: jq is required" >&2; exit 1; }
HAVE_IPERF=1; need iperf3 iperf3 || { HAVE_IPERF=0; log "no iperf3: bulk figures use loadgen bulk"; }
HAVE_WRK=1; need wrk wrk || { HAVE_WRK=0; log "no wrk: HTTP figures skipped"; }

# 10,000 held visitors need about that many descriptors in the loader, the relay and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < BIG_N + 1000 )); then
    log "ulimit -n is $(ulimit -n): fewer than $((BIG_N + 1000)); the 10k-visitor figure may show errors"
fi

log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release -q -p relay-bin -p echoserver -p relay-benches \
    --bin relay --bin expose --bin echoserver --bin loadgen)
# Copies under names that contain neither "relay" nor "echoserver": on a shared machine another
# session's `pkill relay` must not stop this run's relay in the middle of a measurement.
BIN=$WORK/bin
mkdir -p "$BIN"
cp "$CARGO_TARGET_DIR/release/relay" "$BIN/rb-server"
cp "$CARGO_TARGET_DIR/release/expose" "$BIN/rb-expose"
cp "$CARGO_TARGET_DIR/release/echoserver" "$BIN/rb-echo"
cp "$CARGO_TARGET_DIR/release/loadgen" "$BIN/rb-loadgen"
LG=$BIN/rb-loadgen

# ---------------------------------------------------------------------------------------------
# Results (start_bg, first_line, wait_port, free_port, field, rss_kib and cpu_ticks: lib.sh)

put() { echo "$1 $2" >>"$RESULTS"; }
get() { awk -v k="$1" '$1 == k {v = $2} END {print v}' "$RESULTS"; }

# ---------------------------------------------------------------------------------------------
# Local servers (the "direct" targets, and what the tunnels forward to)

start_bg echo-srv "$LG" serve echo --lifetime "$BENCH_MAX_SECS"
ECHO_SRV_PID=$LAST_PID
ECHO=$(first_line echo-srv)
start_bg bench-srv "$LG" serve bench --lifetime "$BENCH_MAX_SECS"
BENCH=$(first_line bench-srv)
start_bg http-srv "$LG" serve http --lifetime "$BENCH_MAX_SECS"
HTTP=$(first_line http-srv)
IPERF_PORT=$(free_port)
if [[ $HAVE_IPERF == 1 ]]; then
    start_bg iperf-srv iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
    wait_port "$IPERF_PORT"
fi
log "direct servers: echo=$ECHO bench=$BENCH http=$HTTP iperf=127.0.0.1:$IPERF_PORT"

# ---------------------------------------------------------------------------------------------
# Measurements; each records "SYSTEM.KEY VALUE" lines in $RESULTS

m_bulk() { # m_bulk SYS IPERF_ADDR BENCH_ADDR
    local sys=$1 iperf=$2 bench=$3 p dir out
    for p in 1 8; do
        for dir in up down; do
            if [[ $HAVE_IPERF == 1 && -n $iperf ]]; then
                local rev=()
                [[ $dir == down ]] && rev=(-R)
                out=$(timeout $((BULK_SECS + 30)) iperf3 -c "${iperf%:*}" -p "${iperf##*:}" \
                    -t "$BULK_SECS" -P "$p" "${rev[@]}" -J 2>/dev/null || true)
                put "$sys.bulk${p}_$dir" "$(jq -r '(.end.sum_received.bits_per_second // 0) / 1e9 * 100 | round / 100' <<<"$out" 2>/dev/null || echo 0)"
            else
                out=$(timeout $((BULK_SECS + 60)) "$LG" bulk --addr "$bench" --seconds "$BULK_SECS" \
                    --parallel "$p" --direction "$dir" 2>&1 || true)
                put "$sys.bulk${p}_$dir" "$(field gbit_s "$out")"
            fi
            log "  $sys bulk P=$p $dir: $(get "$sys.bulk${p}_$dir") Gbit/s"
        done
    done
}

m_latency() { # m_latency SYS ECHO_ADDR
    local sys=$1 addr=$2 out
    out=$(timeout 300 "$LG" pingpong --addr "$addr" --count "$PINGPONG_N" 2>&1 | tail -n1 || true)
    put "$sys.rtt_mean" "$(field mean_us "$out")"; put "$sys.rtt_p99" "$(field p99_us "$out")"
    log "  $sys ping-pong: $out"
    out=$(timeout 300 "$LG" connect --addr "$addr" --count "$CONNECT_N" 2>&1 | tail -n1 || true)
    put "$sys.conn_mean" "$(field mean_us "$out")"; put "$sys.conn_p99" "$(field p99_us "$out")"
    put "$sys.conn_errors" "$(field errors "$out")"
    log "  $sys connect: $out"
}

# m_rate SYS KEY ECHO_ADDR TUNNEL_PIDS...: new visitors per second, and the CPU every process
# spends per visitor (the load generator reports its own). The tunnel's processes (relay and
# client) are listed; the echo server is always counted too.
m_rate() {
    local sys=$1 key=$2 addr=$3 out p cpu0=0 cpu1=0 srv0 srv1 ok
    shift 3
    for p in "$@"; do cpu0=$((cpu0 + $(cpu_ticks "$p"))); done
    srv0=$(cpu_ticks "$ECHO_SRV_PID")
    out=$(timeout $((RATE_SECS + 60)) "$LG" rate --addr "$addr" --seconds "$RATE_SECS" \
        --concurrency "$RATE_CONCURRENCY" 2>&1 | tail -n1 || true)
    for p in "$@"; do cpu1=$((cpu1 + $(cpu_ticks "$p"))); done
    srv1=$(cpu_ticks "$ECHO_SRV_PID")
    ok=$(field ok "$out")
    put "$sys.$key" "$(field conns_per_s "$out")"; put "$sys.${key}_errors" "$(field errors "$out")"
    if [[ ${ok:-0} -gt 0 ]]; then
        # Clock ticks are 10 ms; over a run of seconds that is within a few per cent.
        [[ $# -gt 0 ]] && put "$sys.${key}_cpu_tunnel" "$(awk -v t=$((cpu1 - cpu0)) -v n="$ok" 'BEGIN {printf "%.1f", t * 10000 / n}')"
        put "$sys.${key}_cpu_all" "$(awk -v t=$((cpu1 - cpu0 + srv1 - srv0)) -v n="$ok" -v g="$(field cpu_us_per_conn "$out")" 'BEGIN {printf "%.1f", t * 10000 / n + g}')"
    fi
    log "  $sys $key: $out; CPU us per visitor: tunnel $(get "$sys.${key}_cpu_tunnel"), all $(get "$sys.${key}_cpu_all")"
}

m_wrk() { # m_wrk SYS HTTP_ADDR
    local sys=$1 addr=$2 out
    [[ $HAVE_WRK == 1 ]] || return 0
    out=$(timeout $((WRK_SECS + 30)) wrk -t2 -c32 -d"${WRK_SECS}s" "http://$addr/" 2>&1 || true)
    put "$sys.wrk" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    log "  $sys wrk: $(get "$sys.wrk") req/s"
}

# m_hold SYS ECHO_ADDR SERVER_PID CLIENT_PID N KEYSUFFIX: holds N idle visitors and records the
# RSS growth of the server and client processes per visitor (KiB), and the errors.
m_hold() {
    local sys=$1 addr=$2 spid=$3 cpid=$4 n=$5 k=$6 s0 c0 s1 c1 ready verified i
    s0=${BASE_S:-$(rss_kib "$spid")}; c0=${BASE_C:-$(rss_kib "$cpid")}
    local e1
    start_bg "hold-$sys-$k" timeout 300 "$LG" hold --addr "$addr" --count "$n" --hold-seconds 120
    local hpid=$LAST_PID out=$WORK/hold-$sys-$k.out
    for i in $(seq 1200); do grep -q '^ready' "$out" 2>/dev/null && break; sleep 0.1; done
    ready=$(grep '^ready' "$out" || echo "ready opened=0 errors=$n")
    sleep 1 # let both ends settle (the last echoes, allocator caches)
    s1=$(rss_kib "$spid"); c1=$(rss_kib "$cpid")
    # timeout(1) forwards the signal to the loader, which then re-checks every connection.
    kill -USR1 "$(pgrep -P "$hpid" -n || echo "$hpid")" 2>/dev/null || true
    for i in $(seq 1200); do grep -q '^verified' "$out" 2>/dev/null && break; sleep 0.1; done
    verified=$(grep '^verified' "$out" || echo "verified live=0 errors=$n")
    wait "$hpid" 2>/dev/null || true
    put "$sys.hold${k}_opened" "$(field opened "$ready")"
    # Errors: visitors that were not open and still echoing at the end of the hold.
    e1=$(field live "$verified")
    put "$sys.hold${k}_errors" "$(( n - ${e1:-0} ))"
    # An empty reading means the process is gone (crashed, or out of descriptors).
    put "$sys.hold${k}_server_kib" "$(awk -v a="$s0" -v b="$s1" -v n="$n" 'BEGIN {if (b == "") print "died"; else printf "%.2f", (b - a) / n}')"
    [[ $spid == "$cpid" ]] || put "$sys.hold${k}_client_kib" "$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN {if (b == "") print "died"; else printf "%.2f", (b - a) / n}')"
    log "  $sys hold $n: $ready; $verified; server RSS ${s0}->${s1} KiB, client ${c0}->${c1} KiB"
}

# ---------------------------------------------------------------------------------------------
# Systems under test. Each start_* sets SRV_PID, ECHO_CPID and the public addresses
# PUB_ECHO / PUB_IPERF / PUB_BENCH / PUB_HTTP.

# start_relay FULL(0|1). With TLS=1 the relay serves a self-signed certificate and refuses
# plain clients; every client pins the fingerprint the relay logged.
start_relay() {
    local port fp cli=()
    port=$(free_port)
    if [[ ${TLS:-0} == 1 ]]; then
        # The fingerprint is logged at info by the `relay` binary itself.
        BENCH_LOG="$BENCH_LOG,relay=info" start_bg relay-$port "$BIN/rb-server" "127.0.0.1:$port" \
            --tls-self-signed --require-tls
    else
        start_bg relay-$port "$BIN/rb-server" "127.0.0.1:$port"
    fi
    SRV_PID=$LAST_PID
    wait_port "$port"
    if [[ ${TLS:-0} == 1 ]]; then
        fp=$(fingerprint "relay-$port")
        cli=(--tls-fingerprint "$fp")
    fi
    start_bg expose-echo-$port "$BIN/rb-expose" 127.0.0.1 "$port" "$ECHO" "${cli[@]}"
    ECHO_CPID=$LAST_PID; PUB_ECHO=$(first_line expose-echo-$port)
    [[ $1 == 1 ]] || return 0
    start_bg expose-bench-$port "$BIN/rb-expose" 127.0.0.1 "$port" "$BENCH" "${cli[@]}"
    PUB_BENCH=$(first_line expose-bench-$port)
    PUB_IPERF=""
    if [[ $HAVE_IPERF == 1 ]]; then
        start_bg expose-iperf-$port "$BIN/rb-expose" 127.0.0.1 "$port" "127.0.0.1:$IPERF_PORT" "${cli[@]}"
        PUB_IPERF=$(first_line expose-iperf-$port)
    fi
    start_bg expose-http-$port "$BIN/rb-expose" 127.0.0.1 "$port" "$HTTP" "${cli[@]}"
    PUB_HTTP=$(first_line expose-http-$port)
    start_bg echoserver-$port "$BIN/rb-echo" 127.0.0.1 "$port" "${cli[@]}"
    ES_CPID=$LAST_PID; PUB_ECHOSERVER=$(first_line echoserver-$port)
}

start_bore() { # start_bore FULL(0|1); bore's control port is fixed (7835)
    local base
    base=$(free_port)
    start_bg bore-server "$BENCH_TOOLS/bin/bore" server --bind-addr 127.0.0.1 \
        --min-port "$base" --max-port $((base + 10))
    SRV_PID=$LAST_PID
    wait_port 7835
    start_bg bore-echo "$BENCH_TOOLS/bin/bore" local "${ECHO##*:}" --local-host 127.0.0.1 --to 127.0.0.1 --port "$base"
    ECHO_CPID=$LAST_PID; PUB_ECHO=127.0.0.1:$base
    wait_port "$base"
    [[ $1 == 1 ]] || return 0
    start_bg bore-bench "$BENCH_TOOLS/bin/bore" local "${BENCH##*:}" --local-host 127.0.0.1 --to 127.0.0.1 --port $((base + 1))
    PUB_BENCH=127.0.0.1:$((base + 1)); wait_port $((base + 1))
    start_bg bore-iperf "$BENCH_TOOLS/bin/bore" local "$IPERF_PORT" --local-host 127.0.0.1 --to 127.0.0.1 --port $((base + 2))
    PUB_IPERF=127.0.0.1:$((base + 2)); wait_port $((base + 2))
    start_bg bore-http "$BENCH_TOOLS/bin/bore" local "${HTTP##*:}" --local-host 127.0.0.1 --to 127.0.0.1 --port $((base + 3))
    PUB_HTTP=127.0.0.1:$((base + 3)); wait_port $((base + 3))
}

start_rathole() { # start_rathole FULL(0|1); one server and one client process, four services
    local ctl base name
    ctl=$(free_port); base=$(free_port)
    {
        echo "[server]"; echo "bind_addr = \"127.0.0.1:$ctl\""
        for name in echo bench iperf http; do
            echo "[server.services.$name]"; echo "token = \"bench\""
            echo "bind_addr = \"127.0.0.1:$base\""; base=$((base + 1))
        done
    } >"$WORK/rathole-server.toml"
    base=$((base - 4))
    {
        echo "[client]"; echo "remote_addr = \"127.0.0.1:$ctl\""
        echo "[client.services.echo]"; echo "token = \"bench\""; echo "local_addr = \"$ECHO\""
        echo "[client.services.bench]"; echo "token = \"bench\""; echo "local_addr = \"$BENCH\""
        echo "[client.services.iperf]"; echo "token = \"bench\""; echo "local_addr = \"127.0.0.1:$IPERF_PORT\""
        echo "[client.services.http]"; echo "token = \"bench\""; echo "local_addr = \"$HTTP\""
    } >"$WORK/rathole-client.toml"
    start_bg rathole-server "$BENCH_TOOLS/bin/rathole" -s "$WORK/rathole-server.toml"
    SRV_PID=$LAST_PID
    wait_port "$ctl"
    start_bg rathole-client "$BENCH_TOOLS/bin/rathole" -c "$WORK/rathole-client.toml"
    ECHO_CPID=$LAST_PID
    PUB_ECHO=127.0.0.1:$base; PUB_BENCH=127.0.0.1:$((base + 1))
    PUB_IPERF=127.0.0.1:$((base + 2)); PUB_HTTP=127.0.0.1:$((base + 3))
    wait_port "$base"
    sleep 1 # the client registers its services after the server listens
    [[ $1 == 1 ]] || true
}

stop_system() { # stop_system MARK: stops every process started since the mark
    stop_since "$1"
    sleep 0.5 # the pause the run has always left between one system and the next
}

suite() { # suite SYS: every figure except memory, against the current PUB_* addresses
    local sys=$1
    log "$sys: bulk, latency, setup rate, HTTP"
    m_bulk "$sys" "$PUB_IPERF" "$PUB_BENCH"
    m_latency "$sys" "$PUB_ECHO"
    m_rate "$sys" rate "$PUB_ECHO" "$SRV_PID" "$ECHO_CPID"
    m_wrk "$sys" "$PUB_HTTP"
}

memory() { # memory SYS START_FN: fresh processes, idle visitors at HOLD_N and BIG_N
    local sys=$1 mark=${#PIDS[@]}
    log "$sys: idle visitors (fresh processes)"
    "$2" 0
    # Warm the path once so one-off allocations (runtime, first stream) are not counted.
    timeout 30 "$LG" connect --addr "$PUB_ECHO" --count 50 >/dev/null 2>&1 || true
    sleep 0.5
    BASE_S=$(rss_kib "$SRV_PID"); BASE_C=$(rss_kib "$ECHO_CPID")
    m_hold "$sys" "$PUB_ECHO" "$SRV_PID" "$ECHO_CPID" "$HOLD_N" 5k
    sleep 1
    m_hold "$sys" "$PUB_ECHO" "$SRV_PID" "$ECHO_CPID" "$BIG_N" 10k
    unset BASE_S BASE_C
    stop_system "$mark"
}

# ---------------------------------------------------------------------------------------------
# The run

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "source: ${BENCH_REV:-$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)}"

log "direct: bulk, latency, setup rate, HTTP"
m_bulk direct "127.0.0.1:$IPERF_PORT" "$BENCH"
m_latency direct "$ECHO"
m_rate direct rate "$ECHO"
m_wrk direct "$HTTP"
log "direct: idle connections held by the echo server"
BASE_S=$(rss_kib "$ECHO_SRV_PID"); BASE_C=$BASE_S
m_hold direct "$ECHO" "$ECHO_SRV_PID" "$ECHO_SRV_PID" "$HOLD_N" 5k
unset BASE_S BASE_C

MARK=${#PIDS[@]}
start_relay 1
suite relay
log "relay via echoserver (no local hop): latency, setup rate"
m_latency relay_es "$PUB_ECHOSERVER"
m_rate relay rate_es "$PUB_ECHOSERVER" "$SRV_PID" "$ES_CPID"
if [[ $BENCH_PROFILE == 1 ]] && command -v perf >/dev/null; then
    log "relay: perf profile of the relay during 1-stream bulk upload"
    perf record -F 499 -g -o "$WORK/perf-relay.data" -p "$SRV_PID" -- sleep "$BULK_SECS" \
        >/dev/null 2>&1 &
    PERF=$!
    if [[ -n $PUB_IPERF ]]; then
        timeout $((BULK_SECS + 30)) iperf3 -c 127.0.0.1 -p "${PUB_IPERF##*:}" -t "$BULK_SECS" >/dev/null 2>&1 || true
    else
        timeout $((BULK_SECS + 60)) "$LG" bulk --addr "$PUB_BENCH" --seconds "$BULK_SECS" >/dev/null 2>&1 || true
    fi
    wait "$PERF" || true
    perf report -i "$WORK/perf-relay.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -n 25 >"$WORK/profile-relay.txt" || true
fi
stop_system "$MARK"
memory relay start_relay
[[ ${BENCH_SESSIONS:-0} == 1 ]] && { log "relay: idle tunnel sessions (benches/sessions.sh)"; "$ROOT/benches/sessions.sh" >&2 || true; }

# The same tunnels with TLS between client and relay (relay --tls-self-signed, clients
# --tls-fingerprint), right after the plain ones, so the two are compared within one run.
MARK=${#PIDS[@]}
TLS=1 start_relay 1
TLS=1 suite relay_tls
log "relay with TLS via echoserver (no local hop): latency"
m_latency relay_tls_es "$PUB_ECHOSERVER"
stop_system "$MARK"
# Connect latency swings by a third between minutes on a shared machine, more than TLS adds:
# measure plain and TLS in alternating blocks, both tunnels up at once.
log "relay, plain and TLS in alternating blocks: connect + 1 B echo (benches/tls_connect.sh)"
blocks=12; [[ $QUICK == 1 ]] && blocks=4
if out=$(BIN=$CARGO_TARGET_DIR/release BLOCKS=$blocks BENCH_LOG=$BENCH_LOG "$ROOT/benches/tls_connect.sh" | tail -n1); then
    put relay.conn_blocks "$(field plain_us "$out")"; put relay_tls.conn_blocks "$(field tls_us "$out")"
else
    log "benches/tls_connect.sh failed"
fi

if [[ $BENCH_PEERS == 1 ]]; then
    install_peers
    for peer in bore rathole; do
        if [[ -x $BENCH_TOOLS/bin/$peer ]]; then
            log "$peer: $("$BENCH_TOOLS/bin/$peer" --version 2>&1 | tr '\n' ' ')"
            MARK=${#PIDS[@]}
            "start_$peer" 1
            suite "$peer"
            stop_system "$MARK"
            memory "$peer" "start_$peer"
        fi
    done
fi
[[ ${BENCH_WAN:-0} == 1 ]] && { "$ROOT/benches/wan.sh" || log "benches/wan.sh failed"; }
[[ ${BENCH_VISITORS:-0} == 1 ]] && { BENCH_PEERS=$BENCH_PEERS BENCH_TOOLS=$BENCH_TOOLS "$ROOT/benches/visitors.sh" | tee "$WORK/visitors.md"; } || true # bulk against 1-256 visitors (docs/benchmark.md)
log "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# The table

peers=()
[[ -n $(get bore.rtt_mean) ]] && peers+=(bore)
[[ -n $(get rathole.rtt_mean) ]] && peers+=(rathole)

# row LABEL KEY RULE TARGET [DIRECT_KEY]: RULE is ge (ratio >= TARGET), le (ratio <= TARGET), abs_le (relay
# value <= TARGET), zero (relay value == 0), or info (no target).
row() {
    local label=$1 key=$2 rule=$3 target=$4 d r verdict tgt ratio p pv
    d=$(get "direct.${5:-$key}"); r=$(get "relay.$key")
    ratio=$(awk -v d="$d" -v r="$r" 'BEGIN { if (d + 0 > 0 && r != "") printf "%.2fx", r / d; else print "-" }')
    case $rule in
        ge) tgt=">= ${target}x"; verdict=$(awk -v d="$d" -v r="$r" -v t="$target" 'BEGIN { print (d > 0 && r / d >= t) ? "PASS" : "FAIL" }') ;;
        le) tgt="<= ${target}x"; verdict=$(awk -v d="$d" -v r="$r" -v t="$target" 'BEGIN { print (d > 0 && r != "" && r / d <= t) ? "PASS" : "FAIL" }') ;;
        abs_le) tgt="<= $target"; ratio="-"; verdict=$(awk -v r="$r" -v t="$target" 'BEGIN { print (r != "" && r <= t) ? "PASS" : "FAIL" }') ;;
        zero) tgt="0 errors"; ratio="-"; verdict=$( [[ $r == 0 ]] && echo PASS || echo FAIL) ;;
        *) tgt="-"; verdict="" ;;
    esac
    printf '| %s | %s | %s | %s | %s | %s |' "$label" "${d:--}" "${r:--}" "$ratio" "$tgt" "$verdict"
    for p in "${peers[@]}"; do
        pv=$(get "$p.$key")
        if [[ $rule == abs_le || $rule == zero ]]; then
            printf ' %s |' "${pv:--}"
        else
            printf ' %s (%s) |' "${pv:--}" "$(awk -v d="$d" -v r="$pv" 'BEGIN { if (d + 0 > 0 && r != "") printf "%.2fx", r / d; else print "-" }')"
        fi
    done
    echo
}

# tls_row LABEL KEY RULE TARGET: relay_tls against relay (plain) of the same run.
tls_row() {
    local label=$1 key=$2 rule=$3 target=$4 d p t ratio tgt verdict
    d=$(get "direct.$key"); p=$(get "relay.$key"); t=$(get "relay_tls.$key")
    ratio=$(awk -v p="$p" -v t="$t" 'BEGIN { if (p + 0 > 0 && t != "") printf "%.2fx", t / p; else print "-" }')
    case $rule in
        ge) tgt=">= ${target}x"; verdict=$(awk -v p="$p" -v t="$t" -v x="$target" 'BEGIN { print (p > 0 && t / p >= x) ? "PASS" : "FAIL" }') ;;
        le) tgt="<= ${target}x"; verdict=$(awk -v p="$p" -v t="$t" -v x="$target" 'BEGIN { print (p > 0 && t != "" && t / p <= x) ? "PASS" : "FAIL" }') ;;
        *) tgt="-"; verdict="" ;;
    esac
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "${d:--}" "${p:--}" "${t:--}" "$ratio" "$tgt" "$verdict"
}

{
    echo
    printf '| metric | direct | relay | ratio | target | result |'
    for p in "${peers[@]}"; do printf ' %s (ratio) |' "$p"; done
    echo
    printf '|---|---|---|---|---|---|'
    for p in "${peers[@]}"; do printf -- '---|'; done
    echo
    row "bulk 1 visitor up, Gbit/s" bulk1_up ge 0.35
    row "bulk 1 visitor down, Gbit/s" bulk1_down ge 0.35
    row "bulk 8 visitors up, Gbit/s" bulk8_up ge 0.35
    row "bulk 8 visitors down, Gbit/s" bulk8_down ge 0.35
    row "64 B ping-pong RTT mean, us" rtt_mean le 2.0
    row "64 B ping-pong RTT p99, us" rtt_p99 info -
    row "connect + 1 B echo mean, us" conn_mean le 2.0
    row "connect + 1 B echo p99, us" conn_p99 info -
    row "connect errors (of $CONNECT_N)" conn_errors zero -
    row "new visitors/s ($RATE_CONCURRENCY in flight)" rate ge 0.6
    row "new-visitor errors" rate_errors zero -
    row "CPU per new visitor, all processes, us" rate_cpu_all info -
    row "CPU per new visitor, tunnel processes, us" rate_cpu_tunnel info -
    row "new visitors/s via echoserver (no local hop)" rate_es ge 0.6 rate
    row "CPU per new visitor via echoserver, all, us" rate_es_cpu_all info - rate_cpu_all
    [[ $HAVE_WRK == 1 ]] && row "wrk HTTP req/s (2 threads, 32 conns)" wrk info -
    row "server KiB per idle visitor @ $HOLD_N" hold5k_server_kib abs_le 16
    row "client KiB per idle visitor @ $HOLD_N" hold5k_client_kib abs_le 16
    row "errors holding $HOLD_N visitors" hold5k_errors zero -
    row "server KiB per idle visitor @ $BIG_N" hold10k_server_kib info -
    row "client KiB per idle visitor @ $BIG_N" hold10k_client_kib info -
    row "errors holding $BIG_N visitors (one session)" hold10k_errors zero -
    echo
    echo "relay via echoserver (no local hop): RTT mean $(get relay_es.rtt_mean) us, p99 $(get relay_es.rtt_p99) us;" \
        "connect mean $(get relay_es.conn_mean) us, errors $(get relay_es.conn_errors)"
    echo "direct 'server' is the loadgen echo server; 'client' is expose (relay), bore local, rathole client."
    echo "CPU per new visitor: 'all' adds every process (load generator, echo server, tunnel); 'tunnel' is the relay and its client."
    echo "When the machine is CPU-bound, new visitors/s through a tunnel cannot beat direct 'all' / tunnel 'all'."
    echo "bulk: $([[ $HAVE_IPERF == 1 ]] && echo "iperf3 -t $BULK_SECS" || echo "loadgen bulk -t $BULK_SECS"); raw results: $RESULTS"
    echo
    echo "TLS between client and relay, beside plain, same run (ratio: TLS / plain):"
    echo
    echo "| metric | direct | relay, plain | relay, TLS | TLS / plain | target | result |"
    echo "|---|---|---|---|---|---|---|"
    tls_row "bulk 1 visitor up, Gbit/s" bulk1_up ge 0.8
    tls_row "bulk 1 visitor down, Gbit/s" bulk1_down ge 0.8
    tls_row "bulk 8 visitors up, Gbit/s" bulk8_up ge 0.8
    tls_row "bulk 8 visitors down, Gbit/s" bulk8_down ge 0.8
    tls_row "64 B ping-pong RTT mean, us" rtt_mean info -
    tls_row "64 B ping-pong RTT p99, us" rtt_p99 info -
    tls_row "connect + 1 B echo mean, us" conn_mean info -
    tls_row "connect + 1 B echo, alternating blocks, median of block means, us" conn_blocks le 1.2
    tls_row "connect + 1 B echo p99, us" conn_p99 info -
    tls_row "connect errors (of $CONNECT_N)" conn_errors info -
    tls_row "new visitors/s ($RATE_CONCURRENCY in flight)" rate info -
    tls_row "CPU per new visitor, tunnel processes, us" rate_cpu_tunnel info -
    [[ $HAVE_WRK == 1 ]] && tls_row "wrk HTTP req/s (2 threads, 32 conns)" wrk info -
    echo
    echo "relay with TLS via echoserver (no local hop): RTT mean $(get relay_tls_es.rtt_mean) us" \
        "(plain $(get relay_es.rtt_mean) us); connect mean $(get relay_tls_es.conn_mean) us (plain $(get relay_es.conn_mean) us)"
    if [[ -s $WORK/profile-relay.txt ]]; then
        echo; echo "relay CPU profile (1-stream bulk upload, self time):"; cat "$WORK/profile-relay.txt"
    fi
} | tee "$WORK/table.md"
exit 0
