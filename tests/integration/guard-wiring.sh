#!/usr/bin/env bash
# The write guard in the running controller (controller/watch.c wired into serve.c and sync.c):
# real agent and controller on 127.0.0.1, file syncs only. A failover webhook DOWN refuses syncs
# until UP; a write request in the backup's access log refuses them with the agent's documented
# line and exit code, keeps the live generation, and survives a restart; a file dropped into the
# live tree refuses them too. Skipped while serve.c does not start the guard yet.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

command -v curl >/dev/null || skip "curl is not installed"
command -v openssl >/dev/null || skip "openssl is not installed"
grep -q 'write guard: syncs are refused' "$UNDERSTUDY_CONTROLLER" 2>/dev/null ||
    skip "understudy-controller serve does not start the write guard yet (controller/watch.h)"

tmpdir
T=$TEST_TMP
SITE=$T/site
mkdir -p "$SITE/wp-content/uploads"
printf '<?php echo "hello";\n' >"$SITE/index.php"
make_pair "$T" --site-root "$SITE" || die "make_pair failed"
DOCROOT=$(sed -n 's/^docroot = //p' "$CONTROLLER_CONF" | tail -n 1)
DATA=$(sed -n 's/^data = //p' "$CONTROLLER_CONF" | tail -n 1)
if ! { ((EUID == 0)) && getent passwd www-data >/dev/null; }; then
    printf '\n[site]\nowner = %s:%s\n' "$(id -un)" "$(id -gn)" >>"$CONTROLLER_CONF"
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -keyout "$T/hook.key" -out "$T/hook.crt" >/dev/null 2>&1 ||
    die "openssl req failed"
chmod 600 "$T/hook.key"
SECRET=guard-wiring-secret-0123456789
printf '%s\n' "$SECRET" >"$T/hook.secret"
chmod 600 "$T/hook.secret"
: >"$T/access.log"
cat >>"$CONTROLLER_CONF" <<EOF

[guard]
access_log = $T/access.log
file_check_interval = 1s
webhook_listen = 127.0.0.1:0
webhook_cert = $T/hook.crt
webhook_key = $T/hook.key
webhook_secret_file = $T/hook.secret
EOF
STARTS=0
start() {
    STARTS=$((STARTS + 1))
    LOG=$T/controller.$STARTS.log
    start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not start: $(tail -5 "$LOG")"
    set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
    HOOK_PORT=$(grep -Eo 'failover webhook listening on port [0-9]+' "$LOG" | tail -n 1 |
        grep -Eo '[0-9]+$')
}
start

OUT=$T/out
sync_rc() {
    local rc=0
    "$UNDERSTUDY_AGENT" sync --no-database --config "$AGENT_CONF" >"$OUT" 2>&1 || rc=$?
    printf '%s\n' "$rc"
}
notify() {
    curl -sk -o /dev/null -w '%{http_code}' -H "cf-webhook-auth: $SECRET" \
        -H 'Content-Type: application/json' --data-binary "$1" "https://127.0.0.1:$HOOK_PORT/"
}
log_write() {
    printf '203.0.113.9 - - [%s] "POST /wp-comments-post.php HTTP/1.1" 302 0 "-" "Mozilla"\n' \
        "$(LC_ALL=C date -u '+%d/%b/%Y:%H:%M:%S +0000')" >>"$T/access.log"
}

check_eq "first sync applies" "$(sync_rc)" 0
GEN=$(readlink "$DOCROOT")

# Failover notifications.
check_eq "webhook DOWN accepted" "$(notify '{"text":"Pool primary is unhealthy","data":{"new_health":"Unhealthy"}}')" 200
echo "changed" >>"$SITE/index.php"
check_eq "sync refused while the primary is down (exit 40)" "$(sync_rc)" 40
check "agent names the failover" grep -q "Can't update backup website: it has local changes that would be lost (failover: the primary was reported DOWN" "$OUT"
check_eq "live generation kept" "$(readlink "$DOCROOT")" "$GEN"
check_eq "webhook UP accepted" "$(notify '{"text":"Pool primary is healthy","data":{"new_health":"Healthy"}}')" 200
check_eq "sync applies after UP" "$(sync_rc)" 0
GEN=$(readlink "$DOCROOT")

# A write request in the access log.
sleep 1.1 # the next request is logged after the switch's second
log_write
echo "changed again" >>"$SITE/index.php"
check_eq "sync refused after a POST (exit 40)" "$(sync_rc)" 40
check "agent prints the evidence" grep -q "Can't update backup website: it has local changes that would be lost (signal access-log at .*POST /wp-comments-post.php 302 from 203.0.113.9" "$OUT"
check_eq "live generation kept" "$(readlink "$DOCROOT")" "$GEN"
check "trip logged by the controller" grep -q 'write guard tripped' "$LOG"
stop_controller
start
check_eq "still refused after a restart" "$(sync_rc)" 40

# The operator clears the trip while the controller runs (what 'resolve' does through
# guard_clear: the clear time, then the tripped file removed); the running controller follows,
# and a restart does not count the old request again.
sleep 1.1 # resolve comes later than the request, not in the same second
printf 'cleared %s\n' "$(date +%s)" >"$DATA/guard/cleared"
rm "$DATA/guard/tripped"
check_eq "sync applies once cleared" "$(sync_rc)" 0
stop_controller
start
sleep 1.5
check_eq "old requests do not trip again after a restart" "$(sync_rc)" 0

# An unchanged tree is answered at SyncBegin (SyncBegin.files_only), after the same guard check.
check_eq "unchanged sync applies" "$(sync_rc)" 0
check "unchanged sync answered at SyncBegin" \
    grep -q "sync: the agent's tree is live generation .*, unchanged" "$LOG"
sleep 1.1 # the next request is logged after the last sync's second
log_write
check_eq "unchanged sync refused after a POST (exit 40)" "$(sync_rc)" 40
check "agent prints the evidence for the unchanged sync" grep -q "Can't update backup website: it has local changes that would be lost (signal access-log at .*POST /wp-comments-post.php" "$OUT"
sleep 1.1
printf 'cleared %s\n' "$(date +%s)" >"$DATA/guard/cleared"
rm "$DATA/guard/tripped"
check_eq "unchanged sync applies once cleared" "$(sync_rc)" 0

# A file dropped into the live site trips it.
echo "upload" >"$DOCROOT/wp-content/uploads/cat.jpg"
sleep 2.5
echo "more" >>"$SITE/index.php"
check_eq "sync refused after a file appeared (exit 40)" "$(sync_rc)" 40
check "agent names the file" grep -q "signal files at .*created wp-content/uploads/cat.jpg" "$OUT"
check "the file is still there" test -e "$DOCROOT/wp-content/uploads/cat.jpg"
stop_controller
check "clean shutdowns (no handles left open)" bash -c "! grep -q 'handles still open' $T/controller.*.log"
