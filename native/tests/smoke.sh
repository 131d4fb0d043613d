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

# --progress: one line on stderr when the connections are open and traffic starts (stdout is still the one JSON line)
progress=$(timeout 30 "$LOADGEN" --json --progress --port "$PORT" --connections 4 --size 16 --warmup 0 --duration 0.3 2>&1 >/dev/null)
[ "$progress" = "loadgen: 4 connections open, traffic starts" ] || fail "unexpected --progress output: $progress"

run_loadgen 0 --port "$PORT" --connections 16 --size 16384 --inflight 1 --warmup 0.2 --duration 1
check_clean_pingpong
expect_field size -eq 16384

# 8 MiB in flight per connection towards a small client receive buffer: the
# server's sends come up short, so its backlog, EPOLLOUT and read-pause paths
# are used (checked on its stderr line at the end)
# (up to 30 s to drain them: a loaded machine moves them slowly through the small buffer)
run_loadgen 0 --port "$PORT" --connections 2 --size 1048576 --inflight 8 --rcvbuf 16384 --warmup 0 --duration 1 --drain-grace 30
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
[ "$conns" -ge 282 ] || fail "server counted $conns connections, expected at least 282"
[ "$bytes" -gt 0 ] || fail "server echoed no bytes"
diag=$(grep '^echo_ref: write backlogs' "$WORK/server.out.err" || true)
echo "server: $diag"
backlogs=$(printf '%s\n' "$diag" | sed -n 's/.*write backlogs \([0-9]*\),.*/\1/p')
pauses=$(printf '%s\n' "$diag" | sed -n 's/.*read pauses \([0-9]*\),.*/\1/p')
[ "${backlogs:-0}" -gt 0 ] || fail "the server never had to buffer echo data"
[ "${pauses:-0}" -gt 0 ] || fail "the server never paused reading"

# nothing listens on the port any more: loadgen must give up by itself and say so
run_loadgen 1 --port "$PORT" --connections 8 --warmup 0 --duration 1
expect_field connect_failures -eq 8
echo PASS
