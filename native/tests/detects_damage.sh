#!/usr/bin/env bash
# loadgen must notice a server that echoes wrong, too few or too many bytes:
# it runs against faulty_echo in each of its modes and has to report the
# damage and exit 1.
#   detects_damage.sh FAULTY_ECHO LOADGEN
set -euo pipefail
FAULTY=$1
LOADGEN=$2
. "$(dirname "$0")/lib.sh"

# mode  loadgen counter that must be non-zero
for case in "corrupt mismatches" "drop lost_bytes" "extra excess_bytes"; do
    set -- $case
    start_server "$WORK/$1.out" "$FAULTY" --mode "$1"
    run_loadgen 1 --port "$PORT" --connections 4 --size 1000 --inflight 2 --warmup 0 --duration 0.5
    expect_field "$2" -gt 0
    expect_field connect_failures -eq 0
    kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
done

# the idle mode's probes must be checked as well
start_server "$WORK/idle.out" "$FAULTY" --mode corrupt
run_loadgen 1 --port "$PORT" --connections 8 --mode idle --duration 0.2
expect_field held -eq 8
expect_field echo_ok -eq 0
expect_field echo_failed -eq 8
echo PASS
