#!/usr/bin/env bash
# Several relays behind HAProxy, with no shared store, in network namespaces of our own.
#
# Namespaces (all named $P-*, unique to this run, removed on exit): sw holds a bridge; lb runs
# HAProxy (10.77.0.2) with deploy/haproxy.cfg; r1-r3 run relays (10.77.0.11-13); c runs the
# clients (10.77.0.100). Checks, in order:
#   1. 30 tunnel sessions through HAProxy spread over all three relays, and each one echoes;
#   2. every relay logs the clients' real address, never HAProxy's;
#   3. a file sent through one relay is received through HAProxy on another (a redirect);
#   4. kill -9 of relay 2: HAProxy marks it down, its clients echo again on the others within
#      10 s, the others' clients notice nothing, and a code naming relay 2 fails fast, naming it;
#   5. relay 2 restarted takes new sessions again;
#   6. relay 1 drained (HAProxy's drain state, then SIGTERM): its clients echo on the others,
#      and it stops cleanly.
#
# Needs root, iproute2, HAProxy, curl, nc (netcat-openbsd), and the binaries in RELAY_BIN, ECHOSERVER_BIN,
# SEND_BIN, RECEIVE_BIN (relay-bin/tests/scale_out.rs passes the ones cargo built).
set -euo pipefail

: "${RELAY_BIN:?}" "${ECHOSERVER_BIN:?}" "${SEND_BIN:?}" "${RECEIVE_BIN:?}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
P="rsc$$"
WORK=$(mktemp -d /tmp/relay-scale.XXXXXX)
NETS=()
PIDS=()
SESSIONS=30
declare -A RELAY_PID

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    # Whatever else still runs in our namespaces (by PID; deleting a namespace kills nothing).
    for ns in "${NETS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    done
    for ns in "${NETS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
# So that a TERM (the cargo test's deadline) or ^C runs the cleanup too.
trap 'exit 143' TERM
trap 'exit 130' INT

log() { echo "scale_out: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (it creates network namespaces)"; exit 1; }
for tool in ip haproxy curl nc; do
    command -v "$tool" >/dev/null || { log "needs $tool (Debian packages iproute2, haproxy, curl, netcat-openbsd)"; exit 1; }
done

fail() {
    log "FAILED: $*"
    for f in "$WORK"/r?.log "$WORK"/haproxy.log; do
        [ -f "$f" ] && { echo "--- tail of $(basename "$f")" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}

# until_true SECONDS WHAT CMD...: polls CMD every 50 ms until it succeeds or the time is up.
until_true() {
    local limit=$1 what=$2 end
    shift 2
    end=$(($(date +%s%N) + limit * 1000000000))
    until "$@"; do
        [ "$(date +%s%N)" -lt "$end" ] || fail "$what (waited ${limit}s)"
        sleep 0.05
    done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- the network -------------------------------------------------------------------------
net() {
    ip netns add "$P-$1"
    NETS+=("$P-$1")
    ip -n "$P-$1" link set lo up
}
join() {
    net "$1"
    ip -n "$P-sw" link add "v$1" type veth peer name eth0 netns "$P-$1"
    ip -n "$P-sw" link set "v$1" master br0 up
    ip -n "$P-$1" addr add "10.77.0.$2/24" dev eth0
    ip -n "$P-$1" link set eth0 up
}
net sw
ip -n "$P-sw" link add br0 type bridge
ip -n "$P-sw" link set br0 up
join lb 2
for i in 1 2 3; do join "r$i" "1$i"; done
join c 100
# Runs CMD in a namespace. `ip netns exec` execs CMD, so `$!` of a background start is CMD's
# own PID (a shell function in the background would fork a subshell instead).
in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

# --- relays and HAProxy ------------------------------------------------------------------
start_relay() {
    local i=$1 peers=()
    for j in 1 2 3; do
        [ "$j" = "$i" ] || peers+=(--peer "$j=10.77.0.1$j:7000")
    done
    RUST_LOG=info ip netns exec "$P-r$i" "$RELAY_BIN" "10.77.0.1$i:7000" --ports 7001-7200 \
        --public-host "10.77.0.1$i" --relay-id "$i" "${peers[@]}" \
        --trusted-proxy 10.77.0.2 --metrics "10.77.0.1$i:9100" --threads 1 \
        >>"$WORK/r$i.log" 2>&1 &
    RELAY_PID[$i]=$!
    PIDS+=($!)
    disown $!
}
listening() { [ "$(grep -c "relay listening" "$WORK/r$1.log" 2>/dev/null)" -ge "$2" ]; }
for i in 1 2 3; do start_relay "$i"; done
for i in 1 2 3; do until_true 10 "relay $i listening" listening "$i" 1; done

sed -e 's/10\.0\.0\./10.77.0./g' -e "s#/run/haproxy/relay-admin.sock#$WORK/admin.sock#" \
    "$ROOT/deploy/haproxy.cfg" >"$WORK/haproxy.cfg"
ip netns exec "$P-lb" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
disown $!

# status NAME: HAProxy's view of server NAME (UP, DOWN, ...), from its stats page.
status() {
    in_ns lb curl -s --max-time 2 "http://10.77.0.2:8404/stats;csv" 2>/dev/null |
        awk -F, -v s="$1" '$1 == "relays" && $2 == s { print $18 }'
}
is_status() { [ "$(status "$1")" = "$2" ]; }
for i in 1 2 3; do until_true 15 "HAProxy sees r$i UP" is_status "r$i" UP; done
log "HAProxy and three relays up"

# --- 1. sessions spread over all relays, each echoes -------------------------------------
start_echo() {
    ip netns exec "$P-c" "$ECHOSERVER_BIN" 10.77.0.2 7000 >"$WORK/e$1.out" 2>"$WORK/e$1.err" &
    PIDS+=($!)
    disown $!
}
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; }
addr_of() { sed -n "${2}p" "$WORK/e$1.out"; }
echoes() {
    in_ns c timeout 5 bash -c \
        'exec 3<>"/dev/tcp/${1%:*}/${1##*:}" && printf "ping %s\n" "$2" >&3 &&
         read -r line <&3 && [ "$line" = "ping $2" ]' _ "$1" "$RANDOM" 2>/dev/null
}
for n in $(seq 1 $SESSIONS); do start_echo "$n"; done
for n in $(seq 1 $SESSIONS); do
    until_true 20 "session $n printed its address" has_lines "$WORK/e$n.out" 1
done
for n in $(seq 1 $SESSIONS); do
    echoes "$(addr_of "$n" 1)" || fail "session $n at $(addr_of "$n" 1) does not echo"
done
declare -A ON
for n in $(seq 1 $SESSIONS); do
    host=$(addr_of "$n" 1)
    ON[${host%:*}]=$((${ON[${host%:*}]:-0} + 1))
done
for i in 1 2 3; do
    [ "${ON[10.77.0.1$i]:-0}" -gt 0 ] || fail "no session on relay $i: ${!ON[*]} = ${ON[*]}"
done
log "1. $SESSIONS sessions echo; per relay: r1=${ON[10.77.0.11]} r2=${ON[10.77.0.12]} r3=${ON[10.77.0.13]}"

# --- 2. real client addresses --------------------------------------------------------------
for i in 1 2 3; do
    grep "session opened" "$WORK/r$i.log" | grep -q "client.addr=10.77.0.100:" ||
        fail "relay $i logs no session from the client's real address"
    ! grep -q "client.addr=10.77.0.2:" "$WORK/r$i.log" ||
        fail "relay $i logs HAProxy's address as a client's"
done
log "2. every relay logs the clients' real address (10.77.0.100), none HAProxy's"

# --- 3. a file through one relay, received through HAProxy on another ----------------------
head -c 1048576 /dev/urandom >"$WORK/file.bin"
ip netns exec "$P-c" "$SEND_BIN" 10.77.0.2:7000 "$WORK/file.bin" -q --timeout 60s >"$WORK/send.out" 2>"$WORK/send.err" &
PIDS+=($!)
disown $!
until_true 10 "send printed a code" has_lines "$WORK/send.out" 1
code=$(head -n 1 "$WORK/send.out")
mkdir -p "$WORK/recv"
in_ns c timeout 30 "$RECEIVE_BIN" 10.77.0.2:7000 "$code" "$WORK/recv" -q 2>"$WORK/receive.err" ||
    fail "receive through HAProxy: $(cat "$WORK/receive.err")"
cmp -s "$WORK/file.bin" "$WORK/recv/file.bin" || fail "the received file differs"
cat "$WORK"/r?.log | grep -q "redirecting" || fail "the receiver was never redirected"
log "3. 1 MiB sent on one relay, received through HAProxy after a redirect, identical"

# --- 4. kill -9 of relay 2 ------------------------------------------------------------------
ip netns exec "$P-c" "$SEND_BIN" 10.77.0.12:7000 --text "held by relay 2" -q >"$WORK/send2.out" 2>/dev/null &
PIDS+=($!)
disown $!
until_true 10 "send on relay 2 printed a code" has_lines "$WORK/send2.out" 1
code2=$(head -n 1 "$WORK/send2.out")
victims=()
others=()
for n in $(seq 1 $SESSIONS); do
    case "$(addr_of "$n" 1)" in
    10.77.0.12:*) victims+=("$n") ;;
    *) others+=("$n") ;;
    esac
done
killed=$(now_ms)
kill -9 "${RELAY_PID[2]}"
until_true 10 "HAProxy marks r2 down" is_status r2 DOWN
down_ms=$(($(now_ms) - killed))
moved() { has_lines "$WORK/e$1.out" 2 && [[ "$(addr_of "$1" 2)" != 10.77.0.12:* ]] && echoes "$(addr_of "$1" 2)"; }
for n in "${victims[@]}"; do
    until_true 10 "relay 2's client $n echoing on another relay" moved "$n"
done
back_ms=$(($(now_ms) - killed))
[ "$back_ms" -le 10000 ] || fail "relay 2's clients took ${back_ms} ms to echo again"
for n in "${others[@]}"; do
    [ "$(lines "$WORK/e$n.out")" -eq 1 ] || fail "session $n on a surviving relay reconnected"
    echoes "$(addr_of "$n" 1)" || fail "session $n on a surviving relay stopped echoing"
done
start=$(now_ms)
if in_ns c timeout 10 "$RECEIVE_BIN" 10.77.0.2:7000 "$code2" - -q >/dev/null 2>"$WORK/dead.err"; then
    fail "a code naming the dead relay was received"
fi
dead_ms=$(($(now_ms) - start))
[ "$dead_ms" -le 3000 ] || fail "a code naming the dead relay took ${dead_ms} ms to fail"
[ "$(wc -l <"$WORK/dead.err")" -eq 1 ] || fail "not one line: $(cat "$WORK/dead.err")"
grep -q "10.77.0.12:7000" "$WORK/dead.err" || fail "the error does not name relay 2: $(cat "$WORK/dead.err")"
log "4. kill -9 r2: marked down after ${down_ms} ms; its ${#victims[@]} clients echo on the others after ${back_ms} ms; ${#others[@]} others untouched; its code fails in ${dead_ms} ms: $(cat "$WORK/dead.err")"

# --- 5. relay 2 restarted takes sessions again ------------------------------------------------
start_relay 2
until_true 10 "relay 2 listening again" listening 2 2
until_true 15 "HAProxy sees r2 UP again" is_status r2 UP
fresh=0
for n in $(seq 101 103); do
    start_echo "$n"
    until_true 10 "new session $n printed its address" has_lines "$WORK/e$n.out" 1
    echoes "$(addr_of "$n" 1)" || fail "new session $n does not echo"
    [[ "$(addr_of "$n" 1)" == 10.77.0.12:* ]] && fresh=$((fresh + 1))
done
[ "$fresh" -gt 0 ] || fail "the restarted relay 2 took none of 3 new sessions"
log "5. restarted r2 took $fresh of 3 new sessions"

# --- 6. drain relay 1 the way deploy/haproxy.cfg says ------------------------------------------
last_of() { tail -n 1 "$WORK/e$1.out"; }
drained=()
for n in $(seq 1 $SESSIONS) 101 102 103; do
    [[ "$(last_of "$n")" == 10.77.0.11:* ]] && drained+=("$n:$(lines "$WORK/e$n.out")")
done
[ "${#drained[@]}" -gt 0 ] || fail "no session on relay 1 to drain"
answer=$(echo "set server relays/r1 state drain" | in_ns lb nc -U -N "$WORK/admin.sock")
[ -z "$answer" ] || fail "HAProxy refused the drain: $answer"
until_true 5 "HAProxy shows r1 draining" is_status r1 DRAIN
start=$(now_ms)
kill -TERM "${RELAY_PID[1]}"
gone() { ! kill -0 "${RELAY_PID[1]}" 2>/dev/null; }
moved_on() {
    local n=${1%:*} had=${1#*:}
    has_lines "$WORK/e$n.out" $((had + 1)) && [[ "$(last_of "$n")" != 10.77.0.11:* ]] &&
        echoes "$(last_of "$n")"
}
for d in "${drained[@]}"; do
    until_true 10 "relay 1's client ${d%:*} echoing elsewhere after the drain" moved_on "$d"
done
until_true 15 "relay 1 exits after its drain" gone
grep -q "relay stopped" "$WORK/r1.log" || fail "relay 1 did not stop cleanly"
log "6. drain r1 (HAProxy drain + SIGTERM): its ${#drained[@]} clients echo elsewhere after $(($(now_ms) - start)) ms; relay 1 stopped cleanly"
log "ok"
