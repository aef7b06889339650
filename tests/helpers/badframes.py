#!/usr/bin/env python3
"""An authenticated client that sends broken frames (tests/drill/run, the fault matrix).

    badframes.py HOST:PORT CERT KEY CASE...

For each CASE, one TLS 1.3 connection to the controller with the agent's own certificate and key
(a trusted identity, so the handshake succeeds), then:

    length     a frame header announcing 0xFFFFFFFF bytes, then 64 random bytes, then close
    garbage    a frame of 64 random bytes (its length is right; its protobuf is not)
    truncated  a frame header announcing 4096 bytes, then only 100, then close
    hello-garbage
               a valid Hello (what the agent sends first), the controller's answer read, then a
               frame of random bytes
    hello-truncated
               a valid Hello, then a header announcing 1 MiB and 10 bytes of it, then close

The frame format is common/wire.h's: a 4-byte big-endian length, then one serialized Frame
(proto/understudy.proto). The controller's certificate is not checked: this client attacks, it
does not need to trust. Prints one line per case ("CASE: handshake ok, sent N bytes, peer closed"
or the error); exit status 0 when every handshake succeeded.
"""
import os
import socket
import ssl
import struct
import sys

from pbwire import field, frame, recv_frame, varint


def hello_frame(site="default"):
    hello = (field(1, 2, b"understudy") + field(2, 0, varint(1)) + field(3, 2, b"badframes")
             + field(4, 2, site.encode()) + field(6, 0, varint(1)))
    return frame(1, hello)


def play(addr, ctx, case):
    host, port = addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=20)
    s = ctx.wrap_socket(raw)
    sent = 0

    def send(data):
        nonlocal sent
        s.sendall(data)
        sent += len(data)

    if case == "length":
        send(struct.pack(">I", 0xFFFFFFFF) + os.urandom(64))
    elif case == "garbage":
        send(struct.pack(">I", 64) + os.urandom(64))
    elif case == "truncated":
        send(struct.pack(">I", 4096) + os.urandom(100))
    elif case in ("hello-garbage", "hello-truncated"):
        send(hello_frame())
        recv_frame(s)
        if case == "hello-garbage":
            send(struct.pack(">I", 64) + os.urandom(64))
        else:
            send(struct.pack(">I", 1 << 20) + os.urandom(10))
    else:
        raise ValueError("unknown case " + case)
    if case in ("truncated", "hello-truncated", "length"):
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    # Whatever the controller answers (an Error frame, an alert, a close), until it closes.
    how = "peer closed"
    try:
        while s.recv(65536):
            pass
    except (OSError, ssl.SSLError) as e:
        how = "peer closed (%s)" % type(e).__name__
    s.close()
    return "handshake ok, sent %d bytes, %s" % (sent, how)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    addr, cert, key = sys.argv[1:4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    status = 0
    for case in sys.argv[4:]:
        try:
            print("%s: %s" % (case, play(addr, ctx, case)), flush=True)
        except (OSError, ssl.SSLError, ValueError) as e:
            print("%s: FAILED: %s" % (case, e), flush=True)
            status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
