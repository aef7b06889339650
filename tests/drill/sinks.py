# The drill's alert receivers, both on 127.0.0.1 inside the backup's network namespace:
#
#   python3 sinks.py SMTP_PORT HOOK_PORT OUTDIR
#
# An SMTP server (aiosmtpd, plain: the controller is set to smtp_starttls = no, a local relay)
# writes each message to OUTDIR/mailN (envelope sender and recipients first); an HTTP receiver
# writes each POST body to OUTDIR/hookN and answers 200. OUTDIR/ready appears once both listen.
import http.server
import itertools
import os
import sys
import threading
import time

from aiosmtpd.controller import Controller

smtp_port, hook_port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mails, hooks = itertools.count(), itertools.count()


class Mail:
    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(out, "mail%d" % next(mails)), "wb") as f:
            f.write(("FROM %s\n" % envelope.mail_from).encode())
            for r in envelope.rcpt_tos:
                f.write(("RCPT %s\n" % r).encode())
            f.write(b"\n" + envelope.original_content)
        return "250 OK"


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(os.path.join(out, "hook%d" % next(hooks)), "wb") as f:
            f.write(("CT %s\n" % self.headers.get("Content-Type")).encode() + body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


c = Controller(Mail(), hostname="127.0.0.1", port=smtp_port)
c.start()
s = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
threading.Thread(target=s.serve_forever, daemon=True).start()
open(os.path.join(out, "ready"), "w").close()
while True:
    time.sleep(3600)
