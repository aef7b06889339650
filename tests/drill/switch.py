# The drill's health-checking switch, a small stand-in for Cloudflare's load balancer:
#
#   python3 switch.py LISTEN_ADDR:PORT PRIMARY_ADDR:PORT BACKUP_ADDR:PORT LOGFILE
#
# Relays every TCP connection made to LISTEN to whichever host is active, as a byte stream
# (visitors' Host header goes through unchanged). A monitor sends "GET /" to the primary every
# second (2 s timeout): after 3 failures in a row (no answer, or a status other than 2xx/3xx) the
# backup becomes active; while the backup is active, 2 healthy answers in a row make the primary
# active again. Each change is logged as "active backup" / "active primary", with the time; the
# first line is "active primary" once the relay listens. Runs until killed.
import http.client
import socket
import sys
import threading
import time

listen, primary, backup, logfile = sys.argv[1:5]


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


LISTEN, PRIMARY, BACKUP = hostport(listen), hostport(primary), hostport(backup)
state = {"active": PRIMARY}
lock = threading.Lock()


def log(line):
    with open(logfile, "a") as f:
        f.write("%s %s\n" % (time.strftime("%H:%M:%S"), line))


def healthy():
    try:
        c = http.client.HTTPConnection(PRIMARY[0], PRIMARY[1], timeout=2)
        c.request("GET", "/", headers={"User-Agent": "drill-monitor"})
        status = c.getresponse().status
        c.close()
        return 200 <= status < 400
    except Exception:
        return False


def monitor():
    fails = oks = 0
    while True:
        ok = healthy()
        with lock:
            on_primary = state["active"] == PRIMARY
            if ok:
                fails, oks = 0, oks + 1
                if not on_primary and oks >= 2:
                    state["active"] = PRIMARY
                    log("active primary")
            else:
                fails, oks = fails + 1, 0
                if on_primary and fails >= 3:
                    state["active"] = BACKUP
                    log("active backup")
        time.sleep(1)


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (dst,):
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client):
    with lock:
        target = state["active"]
    try:
        upstream = socket.create_connection(target, timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    t = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    t.start()
    pipe(client, upstream)
    t.join()
    client.close()
    upstream.close()


srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(LISTEN)
srv.listen(64)
log("active primary")
threading.Thread(target=monitor, daemon=True).start()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=relay, args=(conn,), daemon=True).start()
