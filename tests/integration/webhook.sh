#!/usr/bin/env bash
# The failover webhook (controller/webhook.c) over real HTTPS with curl: Cloudflare-style DOWN and
# UP notifications recorded in the guard's state, the cf-webhook-auth secret, strict HTTP limits
# (method, sizes, chunked bodies, headers, timeouts), pool filtering, and a clean shutdown.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

LISTEN=${UNDERSTUDY_WEBHOOK_LISTEN:-$UNDERSTUDY_BUILD/tests/webhook-listen}
[[ -x $LISTEN ]] || skip "no $LISTEN (build the tests)"
command -v curl >/dev/null || skip "curl is not installed"
command -v openssl >/dev/null || skip "openssl is not installed"
PY=/usr/bin/python3

tmpdir
T=$TEST_TMP
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$T/hook.key" -out "$T/hook.crt" >/dev/null 2>&1 || die "openssl req failed"
chmod 600 "$T/hook.key"
SECRET=0123456789abcdef-understudy
printf '%s\n' "$SECRET" >"$T/secret"
chmod 600 "$T/secret"

# start DATA_DIR [ARGS...]: starts the listener, sets PORT and LPID.
start() {
    local data=$1
    shift
    mkdir -p "$data"
    "$LISTEN" "$data" "$T/hook.crt" "$T/hook.key" "$T/secret" "$@" >"$data.out" 2>"$data.err" &
    LPID=$!
    on_exit "kill $LPID 2>/dev/null"
    for _ in $(seq 50); do
        PORT=$(sed -n 's/^port //p' "$data.out")
        [[ -n $PORT ]] && return 0
        pid_alive "$LPID" || break
        sleep 0.1
    done
    die "webhook-listen did not start: $(cat "$data.err")"
}

# post NAME WANT_STATUS BODY [CURL ARGS...]: POSTs BODY, compares the status.
post() {
    local name=$1 want=$2 body=$3 got
    shift 3
    got=$(curl -sk -o "$T/resp" -w '%{http_code}' --max-time 10 \
        -H 'Content-Type: application/json' --data-binary "$body" "$@" \
        "https://127.0.0.1:$PORT/understudy/failover")
    check_eq "$name (HTTP $want)" "$got" "$want"
}

DOWN='{"name":"lb health","text":"Pool primary is unhealthy","ts":1795654923,"alert_type":"load_balancing_health_alert","data":{"pool_name":"primary","new_health":"Unhealthy"}}'
UP='{"name":"lb health","text":"Pool primary is healthy","alert_type":"load_balancing_health_alert","data":{"pool_name":"primary","new_health":"Healthy"}}'
AUTH=(-H "cf-webhook-auth: $SECRET")

start "$T/d1" --timeout-ms 1500

post "no secret" 401 "$DOWN"
post "wrong secret" 401 "$DOWN" -H 'cf-webhook-auth: 0123456789abcdef-understudx'
check "refused requests recorded nothing" test ! -e "$T/d1/guard/primary"
got=$(curl -sk -o /dev/null -w '%{http_code}' "${AUTH[@]}" "https://127.0.0.1:$PORT/")
check_eq "GET is refused (HTTP 405)" "$got" 405

post "Cloudflare's test message" 200 '{"text":"Hello World! This is a test message sent from https://cloudflare.com."}' "${AUTH[@]}"
check "test message recorded nothing" test ! -e "$T/d1/guard/primary"

post "DOWN notification" 200 "$DOWN" "${AUTH[@]}"
check "response says down" grep -q '"recorded":"down"' "$T/resp"
check "guard state is down" grep -q '^state down' "$T/d1/guard/primary"
check "events log has primary-down" grep -q '"event":"primary-down","detail":"load_balancing_health_alert: primary: Pool primary is unhealthy"' "$T/d1/guard/events"
wait_for_log "$T/d1.out" '^event down ' 5 >/dev/null 2>&1
check "callback ran" grep -q '^event down load_balancing_health_alert' "$T/d1.out"

post "UP notification" 200 "$UP" "${AUTH[@]}"
check "guard state is up" grep -q '^state up' "$T/d1/guard/primary"

post "HTTP/1.0 works too" 200 "$DOWN" "${AUTH[@]}" --http1.0
check "guard state is down again" grep -q '^state down' "$T/d1/guard/primary"

post "Expect: 100-continue" 200 "$UP" "${AUTH[@]}" -H 'Expect: 100-continue'
check "guard state is up again" grep -q '^state up' "$T/d1/guard/primary"

post "not JSON" 400 '{"text":' "${AUTH[@]}"
post "body over 64 KiB" 413 "$($PY -c 'print("{\"text\":\"" + "x" * 70000 + "\"}")')" "${AUTH[@]}"
post "chunked body" 411 "$DOWN" "${AUTH[@]}" -H 'Transfer-Encoding: chunked'
post "headers over 16 KiB" 431 "$DOWN" "${AUTH[@]}" -H "X-Big: $(printf 'y%.0s' $(seq 17000))"
check "still up after the refusals" grep -q '^state up' "$T/d1/guard/primary"

got=$(curl -sk -o /dev/null -w '%{http_code}' --tls-max 1.1 "${AUTH[@]}" --data-binary "$DOWN" \
    "https://127.0.0.1:$PORT/" 2>/dev/null)
check_eq "TLS 1.1 is refused" "$got" 000

# A client that connects and sends nothing is dropped after the timeout.
start_s=$(date +%s%N)
$PY - "$PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
assert s.recv(1) == b""
EOF
rc=$?
elapsed=$((($(date +%s%N) - start_s) / 1000000))
check_eq "silent client dropped" "$rc" 0
check "dropped after about the timeout ($elapsed ms)" test "$elapsed" -ge 1000 -a "$elapsed" -lt 5000

# Clean shutdown: every handle closed.
kill -TERM "$LPID"
wait "$LPID"
check_eq "clean shutdown (uv_loop_close)" "$?" 0

# Pool filtering: a notification about the backup's own pool does not count.
start "$T/d2" --pool primary
post "other pool: accepted" 200 '{"text":"Pool backup is unhealthy","data":{"pool_name":"backup","new_health":"Unhealthy"}}' "${AUTH[@]}"
check "other pool recorded nothing" test ! -e "$T/d2/guard/primary"
post "named pool: recorded" 200 "$DOWN" "${AUTH[@]}"
check "named pool is down" grep -q '^state down' "$T/d2/guard/primary"
kill -TERM "$LPID"
wait "$LPID"

# A key readable by others is refused at start.
chmod 644 "$T/hook.key"
mkdir -p "$T/d3"
"$LISTEN" "$T/d3" "$T/hook.crt" "$T/hook.key" "$T/secret" >"$T/d3.out" 2>&1
check_eq "world-readable key refused" "$?" 2
check "the refusal says how to fix it" grep -q 'chmod' "$T/d3.out"
