"""FastCGI for /unsafe's responder pool ("consider FastCGI and php-fpm"): the records, and the client.

The pool is php-fpm's answer to thread-unsafe code: N single-threaded processes, each running one
request at a time, behind a Unix socket. A threaded MPM's worker hands /unsafe to the pool over
FastCGI (the real wire protocol, FastCGI 1.0 spec: 8-byte record headers, BEGIN_REQUEST, PARAMS,
STDIN, STDOUT, END_REQUEST), so the module's globals are never shared between concurrent requests.

Written here rather than taken from flup: flup's FastCGI client does not run on Python 3
(``types.StringTypes``), and the pool's accept loop must move its scoreboard slot through
``_ R W _`` like any other worker. The pool process itself is fcgi_pool.py.
"""

from __future__ import annotations

import socket
import struct

FCGI_VERSION_1 = 1
FCGI_BEGIN_REQUEST, FCGI_ABORT_REQUEST, FCGI_END_REQUEST = 1, 2, 3
FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 4, 5, 6, 7
FCGI_DATA, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE = 8, 9, 10, 11
FCGI_RESPONDER = 1
FCGI_REQUEST_COMPLETE = 0
HEADER = struct.Struct("!BBHHBx")  # version, type, requestId, contentLength, paddingLength, reserved
MAX_CONTENT = 65535
REQUEST_ID = 1
CALL_TIMEOUT = 30.0  # the pool must answer within this (it runs /unsafe, bounded by MAX_WORK_MS)
MAX_RESPONSE = 1 << 20


def record(rtype: int, content: bytes, request_id: int = REQUEST_ID) -> bytes:
    out = []
    for i in range(0, max(len(content), 1), MAX_CONTENT):
        chunk = content[i:i + MAX_CONTENT]
        pad = -len(chunk) % 8
        out.append(HEADER.pack(FCGI_VERSION_1, rtype, request_id, len(chunk), pad) + chunk + b"\0" * pad)
    return b"".join(out)


def encode_params(params: dict[str, str]) -> bytes:
    out = bytearray()
    for k, v in params.items():
        kb, vb = k.encode(), v.encode()
        for n in (len(kb), len(vb)):
            out += bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += kb + vb
    return bytes(out)


class FastCGIError(ValueError):
    """A malformed FastCGI record or stream: what is wrong with it, for the error log. It ends that
    one request (the peer gets an error), never the process reading it."""


#: the largest PARAMS stream one request may send (the sum of its PARAMS records' contents)
MAX_PARAMS = 1 << 20
#: the most name-value pairs one request may send
MAX_PAIRS = 1024


def _length(data: bytes, i: int, what: str) -> tuple[int, int]:
    """One name or value length at ``data[i]`` (FastCGI 1.0, 3.4: one byte below 128, else four
    bytes with the top bit set); returns (length, next index)."""
    if i >= len(data):
        raise FastCGIError(f"name-value pair truncated: {what} length missing at byte {i}")
    if data[i] < 128:
        return data[i], i + 1
    if i + 4 > len(data):
        raise FastCGIError(f"name-value pair truncated: four-byte {what} length at byte {i} has "
                           f"{len(data) - i} byte(s)")
    return struct.unpack_from("!I", data, i)[0] & 0x7FFFFFFF, i + 4


def decode_params(data: bytes) -> dict[str, str]:
    """The name-value pairs of a whole PARAMS stream. Every length is checked against what is left:
    a truncated or oversized pair, or too many pairs, raises FastCGIError (never IndexError or
    struct.error)."""
    if len(data) > MAX_PARAMS:
        raise FastCGIError(f"PARAMS stream of {len(data)} bytes exceeds {MAX_PARAMS}")
    out: dict[str, str] = {}
    i = 0
    while i < len(data):
        if len(out) >= MAX_PAIRS:
            raise FastCGIError(f"more than {MAX_PAIRS} name-value pairs")
        start = i
        nlen, i = _length(data, i, "name")
        vlen, i = _length(data, i, "value")
        if nlen + vlen > len(data) - i:
            raise FastCGIError(f"name-value pair at byte {start} declares {nlen}+{vlen} bytes, "
                               f"{len(data) - i} left")
        if nlen == 0:
            raise FastCGIError(f"name-value pair at byte {start} has an empty name")
        k = data[i:i + nlen].decode("latin-1")
        i += nlen
        out[k] = data[i:i + vlen].decode("latin-1")
        i += vlen
    return out


def _read_exact(s: socket.socket, n: int, what: str) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise FastCGIError(f"peer closed the connection mid-record: {what} has {len(buf)} of {n} bytes")
        buf += chunk
    return buf


class PeerClosed(FastCGIError):
    """The peer closed the connection between records (not inside one)."""


def read_record(s: socket.socket) -> tuple[int, int, bytes]:
    """One record: (type, requestId, content). A header that is not FastCGI 1.0, an unknown
    record type, or a record cut short raises FastCGIError. (contentLength and paddingLength are
    16 and 8 bits on the wire, so a record is never more than 65,535 + 255 bytes.)"""
    header = s.recv(HEADER.size)
    if not header:
        raise PeerClosed("peer closed the connection before the request was complete")
    if len(header) < HEADER.size:
        header += _read_exact(s, HEADER.size - len(header), "the record header")
    version, rtype, rid, length, pad = HEADER.unpack(header)
    if version != FCGI_VERSION_1:
        raise FastCGIError(f"not FastCGI 1.0: version byte {version} (record header {header.hex()})")
    if not FCGI_BEGIN_REQUEST <= rtype <= FCGI_UNKNOWN_TYPE:
        raise FastCGIError(f"unknown record type {rtype}")
    content = _read_exact(s, length, f"a type-{rtype} record's content") if length else b""
    if pad:
        _read_exact(s, pad, f"a type-{rtype} record's padding")
    return rtype, rid, content


# -- client (in the MPM's worker thread) ------------------------------------------------------------
def fcgi_call(path: str, params: dict[str, str], stdin: bytes = b"") -> tuple[int, bytes]:
    """One FastCGI request to the pool; returns (HTTP status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CALL_TIMEOUT)
        s.connect(path)
        s.sendall(record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", FCGI_RESPONDER, 0))
                  + record(FCGI_PARAMS, encode_params(params)) + record(FCGI_PARAMS, b"")
                  + (record(FCGI_STDIN, stdin) if stdin else b"") + record(FCGI_STDIN, b""))
        out = bytearray()
        while True:
            rtype, _, content = read_record(s)
            if rtype == FCGI_STDOUT:
                out += content
                if len(out) > MAX_RESPONSE:
                    raise FastCGIError(f"response larger than {MAX_RESPONSE} bytes")
            elif rtype == FCGI_END_REQUEST:
                break
    head, sep, body = bytes(out).partition(b"\r\n\r\n")
    if not sep:
        raise FastCGIError(f"response without a header block ({len(out)} bytes of STDOUT)")
    status = 200
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            word = line[7:].split()[:1]
            if not word or not word[0].isdigit() or not 100 <= int(word[0]) <= 599:
                raise FastCGIError(f"response with a bad Status header: {line[:80]!r}")
            status = int(word[0])
    return status, body
