#!/usr/bin/env bash
# Connect + 1-byte echo through `expose`, plain and TLS side by side: both relays and both
# tunnels run at once and the load generator alternates between them in short blocks, so a
# slow minute on a shared machine hits both alike. (Measured one after the other, as run.sh's
# suites are, the plain figure alone swung from 195 to 285 us between runs of one build.)
#
#   benches/tls_connect.sh                     # 12 blocks of 300 connections each way
#   BLOCKS=20 PER_BLOCK=500 benches/tls_connect.sh
#   BIN=/tmp/build benches/tls_connect.sh      # a directory holding relay and expose
#
# Prints each block's summary, then one line: `tls_connect plain_us=.. tls_us=.. ratio=..`,
# where the figures are the medians of the blocks' mean latencies and ratio is TLS / plain.
# Loopback only; every wait is bounded; only the processes this script started are stopped.
set -euo pipefail

BLOCKS=${BLOCKS:-12}
PER_BLOCK=${PER_BLOCK:-300}
BENCH_LOG=${BENCH_LOG:-warn}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOADGEN=$CARGO_TARGET_DIR/release/loadgen
WORK=$(mktemp -d /tmp/tlsconn.XXXXXX)
NAME=tls_connect.sh
MAX_SECS=${MAX_SECS:-600}
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
on_exit() { rm -rf "$WORK"; }

if [[ -z ${BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release -q -p relay-bin --bin relay --bin expose)
    BIN=$CARGO_TARGET_DIR/release
fi
(cd "$ROOT" && cargo build --release -q -p relay-benches --bin loadgen)
# Neutral names: another session's `pkill relay` must not end this run.
cp "$BIN/relay" "$WORK/rb-server"; cp "$BIN/expose" "$WORK/rb-expose"

echo_port=$(free_port)
start_bg echo "$LOADGEN" serve echo --addr "127.0.0.1:$echo_port"
wait_port "$echo_port"
plain_port=$(free_port)
start_bg plain "$WORK/rb-server" "127.0.0.1:$plain_port"
wait_port "$plain_port"
tls_port=$(free_port)
# The fingerprint is logged at info by the `relay` binary itself.
BENCH_LOG="$BENCH_LOG,relay=info" start_bg tls "$WORK/rb-server" "127.0.0.1:$tls_port" \
    --tls-self-signed --require-tls
wait_port "$tls_port"
fp=$(fingerprint tls)
start_bg plain-expose "$WORK/rb-expose" 127.0.0.1 "$plain_port" "127.0.0.1:$echo_port"
start_bg tls-expose "$WORK/rb-expose" 127.0.0.1 "$tls_port" "127.0.0.1:$echo_port" --tls-fingerprint "$fp"
plain_pub=$(first_line plain-expose)
tls_pub=$(first_line tls-expose)

declare -A means=([plain]="" [tls]="")
for ((b = 1; b <= BLOCKS; b++)); do
    for way in plain tls; do
        pub=$plain_pub; [[ $way == tls ]] && pub=$tls_pub
        out=$(timeout 120 "$LOADGEN" connect --addr "$pub" --count "$PER_BLOCK" | tail -n1)
        echo "block $b $way $out"
        [[ $(field errors "$out") == 0 ]] || { echo "$NAME: connection errors in block $b ($way)" >&2; exit 1; }
        means[$way]+="$(field mean_us "$out") "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR] = $1} END {print (a[int((NR + 1) / 2)] + a[int(NR / 2) + 1]) / 2}'; }
p=$(median "${means[plain]}")
t=$(median "${means[tls]}")
awk -v p="$p" -v t="$t" -v n="$BLOCKS" -v k="$PER_BLOCK" \
    'BEGIN {printf "tls_connect blocks=%d per_block=%d plain_us=%.1f tls_us=%.1f ratio=%.2f\n", n, k, p, t, t / p}'
