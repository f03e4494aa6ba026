#!/usr/bin/env bash
# Instructions per 64 B round trip in each of our processes, counted by callgrind (exact and
# unaffected by other load on the machine, unlike wall-clock time): the relay and `expose` each
# run under `valgrind --tool=callgrind`; after a warm-up the counters are zeroed, N round trips
# go through `expose` to an echo server, and the counters are dumped. User space only (the
# kernel's share, most of a round trip on loopback, is not counted).
#
#   benches/roundtrip_instr.sh                  # this tree's release build
#   BASE_BIN=DIR benches/roundtrip_instr.sh     # also a baseline build (relay, expose in DIR)
#   TLS=1 benches/roundtrip_instr.sh            # also with TLS between expose and the relay
#   N=2000 benches/roundtrip_instr.sh
#
# Every step is bounded; only processes this script started are stopped, by their process id.
set -euo pipefail

N=${N:-2000}
TLS=${TLS:-0}
BASE_BIN=${BASE_BIN:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/ribench.XXXXXX)
PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
command -v valgrind >/dev/null || { echo "roundtrip_instr.sh: valgrind is required" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -q -p relay-bin -p relay-benches --bin relay --bin expose --bin loadgen)
mkdir -p "$WORK/new"
cp "$CARGO_TARGET_DIR/release/relay" "$WORK/new/ri-server"
cp "$CARGO_TARGET_DIR/release/expose" "$WORK/new/ri-expose"
cp "$CARGO_TARGET_DIR/release/loadgen" "$WORK/ri-loadgen"
BUILDS=(new)
if [[ -n $BASE_BIN ]]; then
    mkdir -p "$WORK/base"
    cp "$BASE_BIN/relay" "$WORK/base/ri-server"; cp "$BASE_BIN/expose" "$WORK/base/ri-expose"
    BUILDS=(base new)
fi
LG=$WORK/ri-loadgen

start_bg() { local name=$1; shift
    RUST_LOG=${LOG:-warn} "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    LAST_PID=$!; PIDS+=("$LAST_PID"); }
first_line() { local i
    for i in $(seq 600); do [[ -s $WORK/$1.out ]] && { head -n1 "$WORK/$1.out"; return 0; }; sleep 0.1; done
    echo "roundtrip_instr.sh: $1 printed no address" >&2; tail -n 20 "$WORK/$1.err" >&2; return 1; }
free_port() { local p; while :; do p=$((20000 + RANDOM % 9000))
    [[ -z $(ss -Hltn "( sport = :$p )" 2>/dev/null) ]] && { echo "$p"; return; }; done; }
wait_port() { local i; for i in $(seq 600); do nc -z 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
total_ir() { # total_ir OUTFILE_PREFIX: instructions in the last dump
    local f; f=$(ls -t "$1".* 2>/dev/null | head -n1)
    awk '/^(summary|totals):/ {print $2; exit}' "$f"
}

start_bg echo-srv "$LG" serve echo --lifetime 1200
ECHO=$(first_line echo-srv)
VG=(valgrind --tool=callgrind --dump-instr=no)

echo "| build | transport | relay instructions / round trip | expose instructions / round trip | round trips |"
echo "|---|---|---|---|---|"
for b in "${BUILDS[@]}"; do
    for tls in 0 $([[ $TLS == 1 ]] && echo 1); do
        key=$b-$tls port=$(free_port) cli=() srv=()
        [[ $tls == 1 ]] && srv=(--tls-self-signed --require-tls)
        LOG=warn,relay=info start_bg "srv-$key" "${VG[@]}" --callgrind-out-file="$WORK/cg-srv-$key" \
            "$WORK/$b/ri-server" "127.0.0.1:$port" "${srv[@]}"
        spid=$LAST_PID
        wait_port "$port"
        if [[ $tls == 1 ]]; then
            fp=""
            for i in $(seq 600); do
                fp=$(sed -n 's/.*fingerprint=\([0-9a-f]\{64\}\).*/\1/p' "$WORK/srv-$key.err" | head -n1)
                [[ -n $fp ]] && break; sleep 0.1
            done
            cli=(--tls-fingerprint "$fp")
        fi
        start_bg "expose-$key" "${VG[@]}" --callgrind-out-file="$WORK/cg-exp-$key" \
            "$WORK/$b/ri-expose" 127.0.0.1 "$port" "$ECHO" "${cli[@]}"
        cpid=$LAST_PID
        pub=$(first_line "expose-$key")
        timeout 300 "$LG" pingpong --addr "$pub" --count 200 --warmup 0 >/dev/null
        callgrind_control -z "$spid" >/dev/null; callgrind_control -z "$cpid" >/dev/null
        timeout 600 "$LG" pingpong --addr "$pub" --count "$N" --warmup 0 >"$WORK/pp-$key.txt"
        callgrind_control -d "$spid" >/dev/null; callgrind_control -d "$cpid" >/dev/null
        s=$(total_ir "$WORK/cg-srv-$key"); c=$(total_ir "$WORK/cg-exp-$key")
        echo "| $b | $([[ $tls == 1 ]] && echo TLS || echo plain) | $((s / N)) | $((c / N)) | $N |"
        kill -TERM "$cpid" "$spid" 2>/dev/null || true
        sleep 1
    done
done
