#!/usr/bin/env bash
# Runs the two example sessions from the README on this machine, end to end, with the real
# binaries: a tunnel (relay + echoserver + a telnet-like visitor) and a file transfer
# (send + receive through the same kind of relay). Logs go to a temporary directory.
#
#   ./demo.sh            # control ports 8080 and 9021, as in the README
#   DEMO_PORT=18080 DEMO_XFER_PORT=19021 ./demo.sh
set -euo pipefail
cd "$(dirname "$0")"

port=${DEMO_PORT:-8080}
xfer_port=${DEMO_XFER_PORT:-9021}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building (release)..." >&2
cargo build --release --quiet -p relay-bin -p echoserver -p filexfer-cli
bin=$PWD/target/release

# Waits (at most 10 s) until something listens on localhost:$1.
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing is listening on port $1 after 10 s (see $work/*.log)" >&2
    return 1
}

# Reads the first line a background program writes to the file $1 (at most 10 s).
first_line() {
    for _ in $(seq 100); do
        if [ -s "$1" ] && line=$(head -n 1 "$1") && [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        sleep 0.1
    done
    echo "no output in $1 after 10 s" >&2
    return 1
}

echo "--- tunnel ---"
echo "\$ ./relay $port &"
"$bin/relay" "$port" 2>"$work/relay.log" &
pids+=($!)
wait_port "$port"

echo "\$ ./echoserver localhost $port &"
"$bin/echoserver" localhost "$port" >"$work/echo.out" 2>"$work/echoserver.log" &
pids+=($!)
public=$(first_line "$work/echo.out")
echo "$public"

public_port=${public##*:}
echo "\$ telnet localhost $public_port"
echo "Hello, world!"
exec 3<>"/dev/tcp/127.0.0.1/$public_port"
printf 'Hello, world!\r\n' >&3
IFS= read -r -t 10 reply <&3
exec 3>&-
echo "${reply%$'\r'}"
[ "${reply%$'\r'}" = "Hello, world!" ]

echo
echo "--- file transfer ---"
echo "\$ ./relay :$xfer_port"
"$bin/relay" ":$xfer_port" 2>"$work/relay-xfer.log" &
pids+=($!)
wait_port "$xfer_port"

cd "$work"
head -c $((24 * 1024 * 1024)) /dev/urandom >corgis.mp4
echo "\$ ./send localhost:$xfer_port corgis.mp4"
"$bin/send" --quiet "localhost:$xfer_port" corgis.mp4 >send.out 2>send.log &
send_pid=$!
code=$(first_line send.out)
echo "$code"

echo "\$ ./receive localhost:$xfer_port $code out/"
"$bin/receive" --quiet "localhost:$xfer_port" "$code" out/
wait "$send_pid"
echo "\$ ls out/"
ls out/
cmp corgis.mp4 out/corgis.mp4
echo
echo "both example sessions worked; the received file is identical (24 MiB)."
