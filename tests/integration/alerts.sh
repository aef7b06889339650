#!/usr/bin/env bash
# Alert delivery (controller/alert.c) to real local receivers: an SMTP server (Debian's
# python3-aiosmtpd) that demands STARTTLS and authentication, and an HTTP webhook receiver.
# Checks content and recipients, a refused login kept in the outbox and retried, and that mail
# is never sent in clear text to a server without STARTTLS unless smtp_starttls = no.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

PY=/usr/bin/python3
SEND=${UNDERSTUDY_ALERT_SEND:-$UNDERSTUDY_BUILD/tests/alert-send}
[[ -x $SEND ]] || skip "no $SEND (build the tests)"
$PY -c 'import aiosmtpd' 2>/dev/null || skip "python3-aiosmtpd is not installed"
command -v openssl >/dev/null || skip "openssl is not installed"

tmpdir
T=$TEST_TMP
mkdir -p "$T/mail" "$T/hooks" "$T/data"

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# SMTP server certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$T/smtp.key" -out "$T/smtp.crt" >/dev/null 2>&1 || die "openssl req failed"

cat >"$T/sink.py" <<'EOF'
# SMTP sink: python3 sink.py PORT OUTDIR TLS(1/0) [CERT KEY]; user "alice", password "s3cret".
import ssl, sys, time, os, itertools
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, out, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
counter = itertools.count()

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = next(counter)
        with open(os.path.join(out, "msg%d" % n), "wb") as f:
            f.write(("FROM %s\n" % envelope.mail_from).encode())
            for r in envelope.rcpt_tos:
                f.write(("RCPT %s\n" % r).encode())
            f.write(("TLS %s\n" % ("yes" if session.ssl else "no")).encode())
            f.write(("AUTH %s\n" % (session.authenticated and "yes" or "no")).encode())
            f.write(b"\n" + envelope.original_content)
        return "250 OK"

def auth(server, session, envelope, mechanism, data):
    ok = data.login == b"alice" and data.password == b"s3cret"
    return AuthResult(success=ok)

kw = {}
if tls:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    kw = dict(tls_context=ctx, require_starttls=True, authenticator=auth, auth_require_tls=True)
else:
    kw = dict(authenticator=auth, auth_require_tls=False)
c = Controller(Handler(), hostname="127.0.0.1", port=port, **kw)
c.start()
open(os.path.join(out, "ready"), "w").close()
while True:
    time.sleep(3600)
EOF

cat >"$T/hook.py" <<'EOF'
# Webhook receiver: python3 hook.py PORTFILE OUTDIR; POST /ok -> 200 (body saved), else 500.
import http.server, os, sys, itertools
out = sys.argv[2]
counter = itertools.count()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/ok":
            with open(os.path.join(out, "hook%d" % next(counter)), "wb") as f:
                f.write(("CT %s\n" % self.headers.get("Content-Type")).encode() + body)
            self.send_response(200)
        else:
            self.send_response(500)
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(sys.argv[1], "w") as f:
    f.write(str(s.server_address[1]))
s.serve_forever()
EOF

SMTP_PORT=$(free_port)
$PY "$T/sink.py" "$SMTP_PORT" "$T/mail" 1 "$T/smtp.crt" "$T/smtp.key" >"$T/sink.log" 2>&1 &
SINK_PID=$!
on_exit "kill $SINK_PID 2>/dev/null"
PLAIN_PORT=$(free_port)
mkdir -p "$T/plain"
$PY "$T/sink.py" "$PLAIN_PORT" "$T/plain" 0 >"$T/plain.log" 2>&1 &
PLAIN_PID=$!
on_exit "kill $PLAIN_PID 2>/dev/null"
$PY "$T/hook.py" "$T/hook.port" "$T/hooks" >"$T/hook.log" 2>&1 &
HOOK_PID=$!
on_exit "kill $HOOK_PID 2>/dev/null"
for _ in $(seq 100); do
    [[ -e $T/mail/ready && -e $T/plain/ready && -s $T/hook.port ]] && break
    sleep 0.1
done
[[ -e $T/mail/ready && -e $T/plain/ready && -s $T/hook.port ]] ||
    die "receivers did not start: $(cat "$T/sink.log" "$T/plain.log" "$T/hook.log")"
HOOK_PORT=$(cat "$T/hook.port")

printf 's3cret\n' >"$T/smtp.password"
chmod 600 "$T/smtp.password"

# write_conf FILE [EXTRA LINES FOR [alerts]...]
write_conf() {
    local f=$1
    shift
    cat >"$f" <<EOF
[listen]
address = 127.0.0.1:0
[identity]
key = $T/controller.key
cert = $T/controller.crt
[agent]
fingerprint = $(printf '0%.0s' $(seq 64))
[site]
id = blog
docroot = $T/docroot
data = $T/data
[alerts]
from = understudy@backup.example
EOF
    printf '%s\n' "$@" >>"$f"
}

# 1. Two recipients over STARTTLS with authentication, and a webhook.
write_conf "$T/c1.conf" "smtp_url = smtp://127.0.0.1:$SMTP_PORT" "smtp_ca_file = $T/smtp.crt" \
    "smtp_user = alice" "smtp_password_file = $T/smtp.password" \
    "email = ops@example.org" "email = owner@example.net" \
    "webhook = http://127.0.0.1:$HOOK_PORT/ok"
out=$("$SEND" --config "$T/c1.conf" "backup tripped" $'signal access-log: POST /wp-comments-post.php\n.leading dot line' 2>&1)
check_eq "delivered to both recipients and the webhook" "$(head -1 <<<"$out")" \
    "delivered 3 failed 0 pending 0"
check_eq "two messages arrived" "$(ls "$T/mail" | grep -c '^msg')" 2
rcpts=$(grep -h '^RCPT ' "$T"/mail/msg* | sort | tr '\n' ' ')
check_eq "one message per recipient" "$rcpts" "RCPT ops@example.org RCPT owner@example.net "
check_eq "over STARTTLS, authenticated" "$(grep -h -E '^(TLS|AUTH) ' "$T"/mail/msg* | sort -u | tr '\n' ' ')" \
    "AUTH yes TLS yes "
check "subject and sender in the mail" grep -q '^Subject: backup tripped' "$T/mail/msg0"
check "envelope sender" grep -q '^FROM understudy@backup.example' "$T/mail/msg0"
check "body in the mail" grep -q 'POST /wp-comments-post.php' "$T/mail/msg0"
check "a line starting with a dot survives" grep -q '^\.leading dot line' "$T/mail/msg0"
check "webhook got JSON" grep -q '^CT application/json' "$T/hooks/hook0"
text=$(tail -n +2 "$T/hooks/hook0" | $PY -c 'import json,sys; print(json.load(sys.stdin)["text"])' 2>&1)
check_eq "webhook text field" "$(head -1 <<<"$text")" "backup tripped"

# 2. A refused login stays in the outbox and is retried when due.
rm -rf "$T/data/alerts"
write_conf "$T/c2.conf" "smtp_url = smtp://127.0.0.1:$SMTP_PORT" "smtp_ca_file = $T/smtp.crt" \
    "smtp_user = alice" "smtp_password_file = $T/smtp.password" "email = ops@example.org"
printf 'wrong\n' >"$T/smtp.password"
out=$("$SEND" --config "$T/c2.conf" "retry me" "body" 2>&1)
check_eq "wrong password: failed, kept" "$(head -1 <<<"$out")" "delivered 0 failed 1 pending 1"
check "the error names the recipient" grep -q 'ops@example.org' <<<"$out"
printf 's3cret\n' >"$T/smtp.password"
out=$("$SEND" --config "$T/c2.conf" --deliver-only 2>&1)
check_eq "not retried before its time" "$(head -1 <<<"$out")" "delivered 0 failed 0 pending 1"
out=$("$SEND" --config "$T/c2.conf" --deliver-only --at 61 2>&1)
check_eq "retried after the backoff" "$(head -1 <<<"$out")" "delivered 1 failed 0 pending 0"
check "the retried mail arrived" grep -lq '^Subject: retry me' "$T"/mail/msg*

# 3. No STARTTLS offered: refused unless smtp_starttls = no (a local relay).
rm -rf "$T/data/alerts"
write_conf "$T/c3.conf" "smtp_url = smtp://127.0.0.1:$PLAIN_PORT" "email = ops@example.org"
out=$("$SEND" --config "$T/c3.conf" "plain" "body" 2>&1)
check_eq "no clear-text mail when STARTTLS is required" "$(head -1 <<<"$out")" \
    "delivered 0 failed 1 pending 1"
check_eq "nothing reached the plain server" "$(ls "$T/plain" | grep -c '^msg')" 0
rm -rf "$T/data/alerts"
write_conf "$T/c4.conf" "smtp_url = smtp://127.0.0.1:$PLAIN_PORT" "email = ops@example.org" \
    "smtp_starttls = no"
out=$("$SEND" --config "$T/c4.conf" "plain" "body" 2>&1)
check_eq "plain SMTP with smtp_starttls = no" "$(head -1 <<<"$out")" \
    "delivered 1 failed 0 pending 0"

# 4. A webhook answering 500 is kept for a retry.
rm -rf "$T/data/alerts"
write_conf "$T/c5.conf" "webhook = http://127.0.0.1:$HOOK_PORT/fail"
out=$("$SEND" --config "$T/c5.conf" "x" "y" 2>&1)
check_eq "webhook 500: failed, kept" "$(head -1 <<<"$out")" "delivered 0 failed 1 pending 1"
check "the error names the status" grep -q 'HTTP status 500' <<<"$out"
