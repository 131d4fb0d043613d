#!/usr/bin/env bash
# loadgen's --connect-budget: a bad value is refused, and towards a listener that never accepts (its backlog full, so
# further connects get no answer) loadgen gives up on the connections still unopened when the budget runs out, counts
# them as connect failures and exits 1: after about 1 s with --connect-budget 1, after its 5 s default without.
#   connect_budget.sh LOADGEN
set -euo pipefail
LOADGEN=$1
. "$(dirname "$0")/lib.sh"

for bad in 0 -1 abc 3601; do
    rc=0
    "$LOADGEN" --port 1 --connect-budget "$bad" >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 2 ] || fail "--connect-budget $bad: exit code $rc, expected 2"
done
# --drain-grace takes the same range.
for bad in 0 -1 abc 3601; do
    rc=0
    "$LOADGEN" --port 1 --drain-grace "$bad" >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 2 ] || fail "--drain-grace $bad: exit code $rc, expected 2"
done
"$LOADGEN" --help | grep -q -- '--connect-budget' || fail "--help does not mention --connect-budget"

command -v python3 >/dev/null || fail "python3 is needed for the listener that never accepts"
start_server "$WORK/listener.out" python3 -c '
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
# fill the accept queue with connections of our own, so that every later connect gets no answer
fill = []
for _ in range(4):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(s.getsockname())
    fill.append(c)
    time.sleep(0.05)
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
time.sleep(60)'

elapsed_run() { # BUDGET_ARGS... : runs loadgen (expects exit 1), sets ELAPSED_MS
    local t0 t1
    t0=$(date +%s%N)
    run_loadgen 1 --port "$PORT" --mode idle --connections 64 --duration 0.2 "$@"
    t1=$(date +%s%N)
    ELAPSED_MS=$(((t1 - t0) / 1000000))
    echo "took $ELAPSED_MS ms"
    expect_field connect_failures -eq 64
}

elapsed_run --connect-budget 1
[ "$ELAPSED_MS" -ge 900 ] || fail "gave up after $ELAPSED_MS ms, before its 1 s budget"
[ "$ELAPSED_MS" -lt 3500 ] || fail "took $ELAPSED_MS ms with a 1 s budget"

elapsed_run
[ "$ELAPSED_MS" -ge 4900 ] || fail "gave up after $ELAPSED_MS ms, before its 5 s default budget"

stop_server
echo "PASS"
