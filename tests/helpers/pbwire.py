"""The little of protobuf's encoding and common/wire.h's framing that the Python test clients
(badframes.py, fakecontroller.py) need, written by hand so that they need no protobuf package:
a frame is a 4-byte big-endian length, then one serialized Frame (proto/understudy.proto)."""
import struct


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wiretype, payload):
    """One field: wiretype 0 (payload already a varint) or 2 (length-delimited bytes)."""
    key = varint(num << 3 | wiretype)
    if wiretype == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def frame(num, body):
    """A whole frame whose Frame holds body as its oneof member num."""
    data = field(num, 2, body)
    return struct.pack(">I", len(data)) + data


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields(buf):
    """{number: value} of a message's varint and length-delimited fields (the last wins)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            out[num], i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            out[num], i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d not expected" % wt)
    return out


def recv_frame(s, limit=1 << 20):
    """The serialized Frame of the next frame read from socket s, or None if the peer closes
    first. A frame announcing more than limit bytes raises ValueError."""
    head = _recv_exact(s, 4)
    if head is None:
        return None
    n = struct.unpack(">I", head)[0]
    if n > limit:
        raise ValueError("a frame of %d bytes (the limit is %d)" % (n, limit))
    return _recv_exact(s, n)


def _recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(min(n - len(data), 65536))
        if not chunk:
            return None
        data += chunk
    return data
