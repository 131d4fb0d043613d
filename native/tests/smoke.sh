#!/usr/bin/env bash
# Smoke test: echo_ref on an ephemeral port, loadgen in both modes against it,
# then a clean SIGTERM shutdown with its statistics line.
#   smoke.sh ECHO_REF LOADGEN
set -euo pipefail
ECHO_REF=$1
LOADGEN=$2
. "$(dirname "$0")/lib.sh"

start_server "$WORK/server.out" "$ECHO_REF" --host 127.0.0.1 --port 0
grep -Eq '^listening on 127\.0\.0\.1:[0-9]+ backend=c-epoll loops=1$' "$WORK/server.out" ||
    fail "unexpected listening line: $(head -1 "$WORK/server.out")"

check_clean_pingpong() {
    for f in errors mismatches lost_bytes excess_bytes connect_failures; do
        expect_field "$f" -eq 0
    done
    expect_field messages -gt 0
}

run_loadgen 0 --port "$PORT" --connections 64 --size 64 --inflight 1 --warmup 0.3 --duration 2
check_clean_pingpong
expect_field connections -eq 64

run_loadgen 0 --port "$PORT" --connections 16 --size 16384 --inflight 1 --warmup 0.2 --duration 1
check_clean_pingpong
expect_field size -eq 16384

# several messages in flight, large enough to fill socket buffers, so partial
# writes and the server's EPOLLOUT path are exercised
run_loadgen 0 --port "$PORT" --connections 4 --size 262144 --inflight 8 --warmup 0 --duration 1
check_clean_pingpong

run_loadgen 0 --port "$PORT" --connections 200 --mode idle --duration 1
expect_field held -eq 200
expect_field echo_ok -eq 200
expect_field echo_failed -eq 0
expect_field connect_failures -eq 0

stop_server
[ "$SERVER_RC" -eq 0 ] || fail "server exit code $SERVER_RC after SIGTERM"
[ "$(wc -l <"$WORK/server.out")" -eq 2 ] || fail "server printed other than two lines: $(cat "$WORK/server.out")"
stats=$(tail -1 "$WORK/server.out")
echo "server: $stats"
conns=$(printf '%s\n' "$stats" | sed -n 's/^stats: connections=\([0-9][0-9]*\) bytes=\([0-9][0-9]*\)$/\1/p')
bytes=$(printf '%s\n' "$stats" | sed -n 's/^stats: connections=\([0-9][0-9]*\) bytes=\([0-9][0-9]*\)$/\2/p')
[ -n "$conns" ] && [ -n "$bytes" ] || fail "malformed stats line: $stats"
[ "$conns" -ge 284 ] || fail "server counted $conns connections, expected at least 284"
[ "$bytes" -gt 0 ] || fail "server echoed no bytes"

# nothing listens on the port any more: loadgen must give up by itself and say so
run_loadgen 1 --port "$PORT" --connections 8 --warmup 0 --duration 1
expect_field connect_failures -eq 8
echo PASS
