# Shared helpers of the native test scripts (sourced, not run).

WORK=$(mktemp -d "${TMPDIR:-/tmp}/epollsharp-native.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# start_server OUTFILE CMD... : runs CMD in the background with stdout in
# OUTFILE, waits (5 s at most) for its "listening on HOST:PORT" line and sets
# SERVER_PID and PORT.
start_server() {
    local out=$1
    shift
    "$@" >"$out" 2>"$out.err" &
    SERVER_PID=$!
    local i line
    for i in $(seq 1 50); do
        line=$(grep -m1 '^listening on ' "$out" 2>/dev/null || true)
        [ -n "$line" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited early: $(cat "$out.err")"
        sleep 0.1
    done
    [ -n "$line" ] || fail "no 'listening on' line within 5 s"
    PORT=$(printf '%s\n' "$line" | sed -n 's/^listening on .*:\([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p')
    [ -n "$PORT" ] && [ "$PORT" -gt 0 ] || fail "cannot parse port from: $line"
    echo "server: $line"
}

# stop_server : SIGTERM, then wait (bounded) for the exit status in SERVER_RC.
stop_server() {
    kill -TERM "$SERVER_PID"
    local i
    for i in $(seq 1 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "server still running 5 s after SIGTERM"
    SERVER_RC=0
    wait "$SERVER_PID" || SERVER_RC=$?
    SERVER_PID=
}

# json_field JSON NAME : prints the value of a numeric or string field.
json_field() {
    printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p"
}

# run_loadgen EXPECTED_RC ARGS... : runs loadgen (bounded by timeout), checks
# its exit code, leaves its JSON line in RESULT.
run_loadgen() {
    local expect=$1
    shift
    local rc=0
    RESULT=$(timeout 60 "$LOADGEN" --json "$@") || rc=$?
    echo "loadgen $*: $RESULT (exit $rc)"
    [ "$rc" -eq "$expect" ] || fail "loadgen exit code $rc, expected $expect"
    [ "$(printf '%s\n' "$RESULT" | wc -l)" -eq 1 ] || fail "expected exactly one output line"
    case "$RESULT" in
        '{'*'}') ;;
        *) fail "output is not a JSON object" ;;
    esac
}

expect_field() { # NAME OP VALUE  (OP as for test: -eq -gt -ge ...)
    local v
    v=$(json_field "$RESULT" "$1")
    [ -n "$v" ] || fail "field $1 missing"
    [ "$v" "$2" "$3" ] || fail "field $1 = $v, expected $2 $3"
}
