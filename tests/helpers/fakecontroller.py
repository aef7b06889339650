#!/usr/bin/env python3
"""A controller that lies to the agent (tests/integration/fake-controller.sh).

    fakecontroller.py PORTFILE CERT KEY CASE

Listens on 127.0.0.1 (an ephemeral port, written to PORTFILE once it listens) with the
controller's certificate and key, so that the agent's pinned handshake succeeds, and serves one
connection: the agent's Hello is answered with a Hello, and its SyncBegin with the Result that
CASE names, in place of SyncReady:

    unchanged        UNCHANGED for the agent's own base generation (what a real controller
                     answers a files-only sync of its live tree)
    unchanged-other  UNCHANGED for base generation + 7
    applied          APPLIED for the agent's base generation

Then it waits until the agent closes. Prints one line: "base_generation N files_only B".
The frame format is common/wire.h's: a 4-byte big-endian length, then one serialized Frame
(proto/understudy.proto), encoded and decoded by pbwire.py.
"""
import os
import socket
import ssl
import sys

from pbwire import field, fields, frame, recv_frame, varint

HELLO, SYNC_BEGIN, RESULT = 1, 3, 16
STATUS_APPLIED, STATUS_UNCHANGED = 0, 1


def read_frame(s):
    """(body number, body bytes) of the next frame."""
    data = recv_frame(s)
    if data is None:
        raise EOFError("the agent closed the connection")
    msg = fields(data)
    if len(msg) != 1:
        raise ValueError("a frame with %d bodies" % len(msg))
    return next(iter(msg.items()))


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    portfile, cert, key, case = sys.argv[1:]
    if case not in ("unchanged", "unchanged-other", "applied"):
        sys.exit("fakecontroller.py: unknown case %s" % case)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(30)
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    os.rename(portfile + ".tmp", portfile)
    raw, _ = ls.accept()
    raw.settimeout(30)
    s = ctx.wrap_socket(raw, server_side=True)

    num, body = read_frame(s)
    if num != HELLO:
        sys.exit("fakecontroller.py: frame %d where Hello was expected" % num)
    hello = fields(body)
    s.sendall(frame(HELLO, field(1, 2, b"understudy") + field(2, 0, varint(hello.get(2, 1)))
                    + field(3, 2, b"fakecontroller") + field(4, 2, hello.get(4, b"default"))
                    + field(6, 0, varint(2))))
    num, body = read_frame(s)
    if num != SYNC_BEGIN:
        sys.exit("fakecontroller.py: frame %d where SyncBegin was expected" % num)
    begin = fields(body)
    base, files_only = begin.get(3, 0), begin.get(6, 0)
    print("base_generation %d files_only %d" % (base, files_only), flush=True)
    status, gen = {"unchanged": (STATUS_UNCHANGED, base),
                   "unchanged-other": (STATUS_UNCHANGED, base + 7),
                   "applied": (STATUS_APPLIED, base)}[case]
    result = field(1, 0, varint(status)) + field(2, 0, varint(gen))
    s.sendall(frame(RESULT, result))
    try:
        while s.recv(65536):
            pass
    except (OSError, ssl.SSLError):
        pass
    s.close()


if __name__ == "__main__":
    main()
