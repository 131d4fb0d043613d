#!/usr/bin/env bash
# loadgen --tls (built with OpenSSL): bad --alpn values are refused, and towards a server that does not speak TLS
# (echo_ref echoes the ClientHello back) every handshake fails: no traffic, each connection counted in
# connect_failures, the TLS error on stderr, exit 1. The TLS echo itself is checked byte for byte by
# tests/comparison/run --quick against EchoServer --api pipe --tls and InBoxEchoServer --tls.
#   tls_handshake.sh ECHO_REF LOADGEN
set -euo pipefail
ECHO_REF=$1
LOADGEN=$2
. "$(dirname "$0")/lib.sh"

for args in "--alpn h2" "--tls --alpn ''" "--tls --alpn a,,b" "--tls --alpn ,"; do
    rc=0
    eval "\"$LOADGEN\" --port 1 $args" >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 2 ] || fail "loadgen --port 1 $args: exit code $rc, expected 2"
done
"$LOADGEN" --help | grep -q -- '--tls ' || fail "--help does not mention --tls"

start_server "$WORK/server.out" "$ECHO_REF" --host 127.0.0.1 --port 0
rc=0
RESULT=$(timeout 60 "$LOADGEN" --json --tls --alpn http/1.1 --port "$PORT" --connections 8 --warmup 0 --duration 0.5 2>"$WORK/loadgen.err") || rc=$?
echo "loadgen --tls against a plain echo server: $RESULT (exit $rc)"
[ "$rc" -eq 1 ] || fail "exit code $rc, expected 1"
expect_field connect_failures -eq 8
expect_field messages -eq 0
grep -q 'TLS handshake' "$WORK/loadgen.err" || fail "stderr does not name the TLS handshake: $(cat "$WORK/loadgen.err")"
stop_server
[ "$SERVER_RC" -eq 0 ] || fail "echo_ref exit code $SERVER_RC"
echo "tls_handshake: ok"
