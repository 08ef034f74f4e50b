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


def decode_params(data: bytes) -> dict[str, str]:
    out, i = {}, 0
    while i < len(data):
        lens = []
        for _ in range(2):
            if data[i] < 128:
                lens.append(data[i])
                i += 1
            else:
                lens.append(struct.unpack("!I", data[i:i + 4])[0] & 0x7FFFFFFF)
                i += 4
        k = data[i:i + lens[0]].decode("latin-1")
        i += lens[0]
        out[k] = data[i:i + lens[1]].decode("latin-1")
        i += lens[1]
    return out


def _read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("FastCGI peer closed the connection mid-record")
        buf += chunk
    return buf


def read_record(s: socket.socket) -> tuple[int, int, bytes]:
    version, rtype, rid, length, pad = HEADER.unpack(_read_exact(s, HEADER.size))
    if version != FCGI_VERSION_1:
        raise ConnectionError(f"not FastCGI (version {version})")
    content = _read_exact(s, length) if length else b""
    if pad:
        _read_exact(s, pad)
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
                    raise ConnectionError("FastCGI response too large")
            elif rtype == FCGI_END_REQUEST:
                break
    head, _, body = bytes(out).partition(b"\r\n\r\n")
    status = 200
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            status = int(line.split()[1])
    return status, body
