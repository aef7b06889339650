#!/usr/bin/env bash
# The pinned TLS 1.3 channel between real agent and controller processes on 127.0.0.1:
# success, and every failure with its documented exit code and its message on both sides.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

tmpdir
make_pair "$TEST_TMP" || die "make_pair failed"
# Short timeouts so the slow-peer cases finish quickly.
printf '\n[listen]\nhandshake_timeout = 2s\nmax_connections = 4\n' >>"$CONTROLLER_CONF"
printf '\n[agent]\nhandshake_timeout = 2s\nconnect_timeout = 3s\n' >>"$AGENT_CONF"
LOG=$TEST_TMP/controller.log
start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not start"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"

# run_check NAME EXPECTED_EXIT CONF [ENV...]: runs check and compares the exit code.
OUT=$TEST_TMP/out
run_check() {
    local name=$1 want=$2 conf=$3 got=0
    shift 3
    env "$@" "$UNDERSTUDY_AGENT" check --no-database --config "$conf" >"$OUT" 2>&1 || got=$?
    if [[ $got == "$want" ]]; then
        pass "$name (exit $got)"
    else
        fail "$name" "exit $got, expected $want; output:"
        sed 's/^/    /' "$OUT"
    fi
}
# expect_out NAME REGEX / expect_log NAME REGEX: the agent's output / the controller's log.
expect_out() {
    if grep -Eq -- "$2" "$OUT"; then pass "$1"; else
        fail "$1" "agent output lacks /$2/:"
        sed 's/^/    /' "$OUT"
    fi
}
expect_log() {
    if wait_for_log "$LOG" "$2" 5 >/dev/null 2>&1; then pass "$1"; else
        fail "$1" "controller log lacks /$2/:"
        tail -n 5 "$LOG" | sed 's/^/    /'
    fi
}
# variant NAME: a copy of the agent config to modify.
variant() {
    cp "$AGENT_CONF" "$TEST_TMP/$1.conf"
    printf '%s' "$TEST_TMP/$1.conf"
}

# --- trusted ------------------------------------------------------------------------------------
run_check "trusted pair" 0 "$AGENT_CONF"
expect_out "reports TLS 1.3" '^tls: TLSv1\.3$'
expect_out "reports the controller fingerprint" "^controller: trusted \(fingerprint $CONTROLLER_FINGERPRINT\)"
expect_out "reports the controller version" '^controller version: [0-9.]+ \(protocol 1\)'
expect_out "reports the site" '^site: default$'
expect_log "controller logs the agent" "agent $AGENT_FINGERPRINT .* connected"

# --- the controller does not trust this agent ---------------------------------------------------
mkdir -p "$TEST_TMP/stranger"
"$UNDERSTUDY_AGENT" init --dir "$TEST_TMP/stranger" >"$TEST_TMP/stranger.out" || die "init"
STRANGER_FP=$(sed -n 's/^fingerprint: //p' "$TEST_TMP/stranger.out")
conf=$(variant stranger)
sed -i -e "s#^key = .*#key = $TEST_TMP/stranger/agent.key#" \
    -e "s#^cert = .*#cert = $TEST_TMP/stranger/agent.crt#" "$conf"
run_check "untrusted agent is refused" 13 "$conf"
expect_out "agent says it was rejected" 'rejected our certificate'
expect_log "controller names the untrusted fingerprint" "fingerprint $STRANGER_FP is not trusted"

# --- the agent does not trust this controller ---------------------------------------------------
conf=$(variant wrongpin)
sed -i "s/^fingerprint = $CONTROLLER_FINGERPRINT/fingerprint = $STRANGER_FP/" "$conf"
run_check "untrusted controller is refused" 12 "$conf"
expect_out "agent names the fingerprint it saw" "fingerprint $CONTROLLER_FINGERPRINT is not trusted"
expect_log "controller hears the agent's refusal" 'the peer rejected our certificate'

# --- key rotation: several accepted fingerprints ------------------------------------------------
conf=$(variant rotation)
printf '\n[controller]\nfingerprint = %s\n' "$STRANGER_FP" >>"$conf"
run_check "one of several pinned fingerprints matches" 0 "$conf"

# --- certificate validity -----------------------------------------------------------------------
mkdir -p "$TEST_TMP/expired" "$TEST_TMP/future"
"$UNDERSTUDY_MKCERT" "$TEST_TMP/expired/agent.key" "$TEST_TMP/expired/agent.crt" 30 -1 \
    >"$TEST_TMP/expired.out" || die "mkcert"
EXPIRED_FP=$(sed -n 's/^fingerprint: //p' "$TEST_TMP/expired.out")
"$UNDERSTUDY_MKCERT" "$TEST_TMP/future/agent.key" "$TEST_TMP/future/agent.crt" -10 30 \
    >"$TEST_TMP/future.out" || die "mkcert"
FUTURE_FP=$(sed -n 's/^fingerprint: //p' "$TEST_TMP/future.out")
# The controller trusts both keys, so only the dates can fail.
stop_controller || fail "controller stops cleanly on SIGTERM"
printf '\n[agent]\nfingerprint = %s\nfingerprint = %s\n' "$EXPIRED_FP" "$FUTURE_FP" >>"$CONTROLLER_CONF"
: >"$LOG"
start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not restart"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
for kind in expired future; do
    conf=$(variant "$kind")
    sed -i -e "s#^key = .*#key = $TEST_TMP/$kind/agent.key#" \
        -e "s#^cert = .*#cert = $TEST_TMP/$kind/agent.crt#" "$conf"
done
run_check "expired agent certificate is refused" 16 "$TEST_TMP/expired.conf"
expect_out "agent warns its certificate has expired" 'has expired'
expect_log "controller says the certificate has expired" "peer certificate $EXPIRED_FP has expired"
run_check "not-yet-valid agent certificate is refused" 17 "$TEST_TMP/future.conf"
expect_log "controller says the certificate is not yet valid" "peer certificate $FUTURE_FP is not yet valid"

# An expired controller certificate: the agent refuses it.
mkdir -p "$TEST_TMP/oldctl"
"$UNDERSTUDY_MKCERT" "$TEST_TMP/oldctl/c.key" "$TEST_TMP/oldctl/c.crt" 30 -1 >"$TEST_TMP/oldctl.out"
OLDCTL_FP=$(sed -n 's/^fingerprint: //p' "$TEST_TMP/oldctl.out")
cp "$CONTROLLER_CONF" "$TEST_TMP/oldctl.conf"
sed -i -e "s#^key = .*#key = $TEST_TMP/oldctl/c.key#" -e "s#^cert = .*#cert = $TEST_TMP/oldctl/c.crt#" \
    "$TEST_TMP/oldctl.conf"
(
    CONTROLLER_PID= CONTROLLER_PORT=
    start_controller "$TEST_TMP/oldctl.conf" "$TEST_TMP/oldctl.log" || exit 1
    grep -q 'has expired' "$TEST_TMP/oldctl.log" || echo "no startup warning" >"$TEST_TMP/oldctl.nowarn"
    conf=$TEST_TMP/oldctl-agent.conf
    cp "$AGENT_CONF" "$conf"
    set_agent_controller_address "$conf" "127.0.0.1:$CONTROLLER_PORT"
    printf '\n[controller]\nfingerprint = %s\n' "$OLDCTL_FP" >>"$conf"
    code=0
    "$UNDERSTUDY_AGENT" check --no-database --config "$conf" >"$TEST_TMP/oldctl-agent.out" 2>&1 || code=$?
    stop_controller
    exit "$code"
)
code=$?
if [[ $code == 16 ]] && grep -q "peer certificate $OLDCTL_FP has expired" "$TEST_TMP/oldctl-agent.out" &&
    [[ ! -e $TEST_TMP/oldctl.nowarn ]]; then
    pass "expired controller certificate is refused by the agent (exit 16)"
else
    fail "expired controller certificate" "exit $code"
    sed 's/^/    /' "$TEST_TMP/oldctl-agent.out"
fi

# --- protocol version mismatch, reported on both sides ------------------------------------------
run_check "protocol version mismatch" 18 "$AGENT_CONF" UNDERSTUDY_TEST_PROTOCOL_VERSION=99
expect_out "agent explains the mismatch" 'protocol version mismatch'
expect_log "controller explains the mismatch" 'protocol version mismatch: agent .* speaks protocol 99'

# --- garbage, plaintext, TLS 1.2 and slow clients against the controller -------------------------
python3 - "$CONTROLLER_PORT" <<'EOF' || fail "garbage client" "connection not closed by the controller"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 4)
s.settimeout(5)
while s.recv(4096):
    pass
EOF
expect_log "controller names a plaintext client" 'does not speak TLS'

if openssl s_client -tls1_2 -connect "127.0.0.1:$CONTROLLER_PORT" </dev/null >"$TEST_TMP/s_client.out" 2>&1; then
    fail "TLS 1.2 client" "openssl s_client -tls1_2 succeeded"
else
    pass "TLS 1.2 client cannot connect"
fi
expect_log "controller names a TLS 1.2 client" 'does not speak TLS 1.3'

START=$SECONDS
python3 - "$CONTROLLER_PORT" <<'EOF' || fail "slow-loris client" "not disconnected by the handshake timeout"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32
for b in hello:                      # one byte a second: never a whole ClientHello
    try:
        s.sendall(bytes([b]))
    except OSError:
        sys.exit(0)
    time.sleep(1)
    s.settimeout(0.01)
    try:
        if s.recv(1) == b"":
            sys.exit(0)
    except socket.timeout:
        pass
    except OSError:
        sys.exit(0)
sys.exit(1)
EOF
elapsed=$((SECONDS - START))
expect_log "controller cuts the slow client at the handshake timeout" 'did not finish within 2000 ms'
((elapsed < 10)) && pass "slow client cut within seconds (${elapsed}s)" || fail "slow client" "took ${elapsed}s"

# The controller survived all of it.
run_check "controller still serves after hostile clients" 0 "$AGENT_CONF"

# --- the agent against peers that are not a controller -------------------------------------------
fake_server() { # fake_server MODE PORTFILE: a TCP listener that misbehaves
    python3 - "$1" "$2" <<'EOF' &
import socket, sys, time
mode, portfile = sys.argv[1], sys.argv[2]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4)
open(portfile, "w").write(str(srv.getsockname()[1]))
srv.settimeout(20)
try:
    c, _ = srv.accept()
except socket.timeout:
    sys.exit(0)
if mode == "plaintext":
    c.recv(4096)
    c.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    c.close()
else:
    time.sleep(8)
EOF
    FAKE_PID=$!
    on_exit "kill $FAKE_PID 2>/dev/null"
    for _ in $(seq 50); do [[ -s $2 ]] && break; sleep 0.1; done
}
fake_server plaintext "$TEST_TMP/plain.port"
conf=$(variant plaintext)
set_agent_controller_address "$conf" "127.0.0.1:$(cat "$TEST_TMP/plain.port")"
run_check "plaintext server" 14 "$conf"
expect_out "agent says the peer does not speak TLS" 'does not speak TLS'

fake_server silent "$TEST_TMP/silent.port"
conf=$(variant silent)
set_agent_controller_address "$conf" "127.0.0.1:$(cat "$TEST_TMP/silent.port")"
run_check "silent server hits the handshake timeout" 11 "$conf"

# A port nobody listens on.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
conf=$(variant unreachable)
set_agent_controller_address "$conf" "127.0.0.1:$PORT"
run_check "unreachable controller" 10 "$conf"
expect_out "agent names the address" "127.0.0.1:$PORT"

# --- local refusals before any connection --------------------------------------------------------
chmod 0644 "$TEST_TMP/primary/agent.key"
run_check "private key readable by others is refused" 4 "$AGENT_CONF"
expect_out "the refusal says which chmod to run" "chmod 600 $TEST_TMP/primary/agent.key"
chmod 0600 "$TEST_TMP/primary/agent.key"

stop_controller && pass "controller exits 0 on SIGTERM" || fail "controller exits 0 on SIGTERM"
exit 0
