#!/usr/bin/env bash
# echo_ref with a tiny descriptor limit: connections beyond the limit must be
# shed without the accept loop spinning, the connections it holds must keep
# working, and once the load is gone it must serve normally again.
#   descriptor_exhaustion.sh ECHO_REF LOADGEN
set -euo pipefail
ECHO_REF=$1
LOADGEN=$2
. "$(dirname "$0")/lib.sh"

LIMIT=64
start_server "$WORK/server.out" bash -c "ulimit -n $LIMIT && exec \"\$0\" --port 0" "$ECHO_REF"

cpu_ticks() { # utime + stime of the server, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"
}
before=$(cpu_ticks)

# 200 connections against room for fewer than 64: the excess is closed by the
# server, so loadgen reports failures (exit 1) but every held one echoes
run_loadgen 1 --port "$PORT" --connections 200 --mode idle --duration 2
held=$(json_field "$RESULT" held)
ok=$(json_field "$RESULT" echo_ok)
[ "$held" -gt 0 ] && [ "$held" -lt "$LIMIT" ] || fail "held $held connections, expected between 1 and $LIMIT"
[ "$ok" -eq "$held" ] || fail "only $ok of $held held connections echoed"

used=$(( $(cpu_ticks) - before ))
ticks=$(getconf CLK_TCK)
echo "server CPU during the overload: $used ticks (of $ticks per second)"
[ "$used" -lt "$ticks" ] || fail "server used $used ticks in about 2 s: the accept loop spins"

run_loadgen 0 --port "$PORT" --connections 16 --size 64 --warmup 0 --duration 0.5
expect_field errors -eq 0

stop_server
[ "$SERVER_RC" -eq 0 ] || fail "server exit code $SERVER_RC"
grep -Eq '^stats: connections=[0-9]+ bytes=[0-9]+$' "$WORK/server.out" || fail "no stats line"
cat "$WORK/server.out.err"
echo PASS
