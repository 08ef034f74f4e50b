"""Malformed FastCGI over the pool's real Unix socket: each is an error on that request (a 500, or
400 for a bad query, with the reason in the error log), and the same pool process serves the next
request."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
from conftest import http_get, wait_for

from mpmcore import scoreboard as sb
from mpmcore.content import fcgi
from mpmcore.content.fcgi import encode_params, record

BEGIN = record(fcgi.FCGI_BEGIN_REQUEST, struct.pack("!HB5x", fcgi.FCGI_RESPONDER, 0))
GOOD_PARAMS = record(fcgi.FCGI_PARAMS, encode_params({"QUERY_STRING": "id=x&ms=0"})) + record(fcgi.FCGI_PARAMS, b"")
END_STDIN = record(fcgi.FCGI_STDIN, b"")


def _header(rtype: int, length: int, rid: int = 1, pad: int = 0, version: int = 1) -> bytes:
    return struct.pack("!BBHHBx", version, rtype, rid, length, pad)


#: (name, bytes sent, half-close after, the status expected back (None: the reply may be cut, as
#: the pool stops reading), what the error log says)
MALFORMED = [
    ("truncated name length", BEGIN + record(fcgi.FCGI_PARAMS, b"\x80\x00") + record(fcgi.FCGI_PARAMS, b"")
     + END_STDIN, 500, "four-byte name length"),
    ("pair longer than its stream", BEGIN + record(fcgi.FCGI_PARAMS, b"\xff\xff\xff\xff\x00k")
     + record(fcgi.FCGI_PARAMS, b"") + END_STDIN, 500, "declares 2147483647"),
    ("value cut short", BEGIN + record(fcgi.FCGI_PARAMS, b"\x01\x10kvv") + record(fcgi.FCGI_PARAMS, b"")
     + END_STDIN, 500, "declares 1+16"),
    ("record cut mid-content", BEGIN + _header(fcgi.FCGI_PARAMS, 100) + b"x" * 10, 500, "mid-record"),
    ("record cut mid-header", BEGIN + b"\x01\x04\x00", 500, "mid-record"),
    ("HTTP on the FastCGI socket", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 500, "not FastCGI 1.0"),
    ("unknown record type", BEGIN + _header(77, 0), 500, "unknown record type 77"),
    ("no BEGIN_REQUEST", GOOD_PARAMS + END_STDIN, 500, "not BEGIN_REQUEST"),
    ("short BEGIN_REQUEST", record(fcgi.FCGI_BEGIN_REQUEST, b"\x00\x01"), 500, "BEGIN_REQUEST body of 2"),
    ("authorizer role", record(fcgi.FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 2, 0)), 500, "role 2"),
    ("another request id", BEGIN + record(fcgi.FCGI_PARAMS, b"", request_id=9), 500, "request id 9"),
    ("STDIN before PARAMS ended", BEGIN + END_STDIN, 500, "STDIN record before"),
    ("oversized PARAMS stream", BEGIN + record(fcgi.FCGI_PARAMS, b"\x7f\x7f" + b"a" * 254) * 4200,
     None, "PARAMS stream longer than"),
    ("ms out of range", BEGIN + record(fcgi.FCGI_PARAMS, encode_params({"QUERY_STRING": "ms=99999999"}))
     + record(fcgi.FCGI_PARAMS, b"") + END_STDIN, 400, "ms must be an integer"),
]


def _send(path: str, data: bytes) -> bytes:
    """Send ``data`` to the pool, half-close, read the whole answer (the pool closes after it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the pool stopped reading an oversized stream: its answer may still be there
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def _status_of(answer: bytes) -> int | None:
    """The Status of the pool's reply, None when it sent none."""
    stdout = b""
    i = 0
    while i + 8 <= len(answer):
        _, rtype, _, length, pad = struct.unpack_from("!BBHHBx", answer, i)
        if rtype == fcgi.FCGI_STDOUT:
            stdout += answer[i + 8:i + 8 + length]
        i += 8 + length + pad
    head = stdout.partition(b"\r\n\r\n")[0]
    return int(head.split(b"\r\n")[0].split()[1]) if head.startswith(b"Status: ") else None


def _pool_pids(srv) -> list[int]:
    return sorted(p.pid for p in srv.live_children() if p.kind == sb.KIND_FCGI)


def _unsafe_ok(srv, i: int) -> None:
    status, _, body = http_get(srv.port, f"/unsafe?id=after-{i}&ms=0")
    assert status == 200, body
    got = json.loads(body)
    assert got["served_by"] == "fastcgi" and got["got"] == f"after-{i}" and not got["corrupted"]


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_malformed_records_are_errors_and_the_pool_serves_on(server_factory, mpm):
    srv = server_factory(mpm=mpm, settings={"StartServers": 1, "UnsafeFastCGIPool": 1})
    wait_for(lambda: len(_pool_pids(srv)) == 1, what="the pool process in the scoreboard")
    pids = _pool_pids(srv)
    path = str(srv.run_dir / "fcgi.sock")
    _unsafe_ok(srv, -1)
    for i, (name, data, want, logged) in enumerate(MALFORMED):
        answer = _send(path, data)
        if want is not None:
            assert _status_of(answer) == want, (name, answer[:200])
        wait_for(lambda logged=logged: logged in srv.log_text(), timeout=5, what=f"{name}: {logged!r} logged")
        _unsafe_ok(srv, i)
        assert _pool_pids(srv) == pids, f"{name}: the pool process was replaced (it died)"
    assert "Traceback" not in srv.log_text()


def test_a_pool_that_answers_garbage_is_a_502(tmp_path):
    """The worker's side: a FastCGI peer whose answer is malformed gives the client a 502 with the
    reason, logged; a peer that is not there, a 503."""
    from mpmcore.content.unsafe import make_unsafe_handler
    from mpmcore.directives import resolve
    from mpmcore.http.protocol import Request

    path = str(tmp_path / "fake.sock")
    answers = [b"\x01\x06\x00\x01\x00\x10\x00\x00abc",  # STDOUT record cut short
               record(fcgi.FCGI_STDOUT, b"no header block") + record(fcgi.FCGI_END_REQUEST, bytes(8)),
               record(fcgi.FCGI_STDOUT, b"Status: abc\r\n\r\n{}") + record(fcgi.FCGI_END_REQUEST, bytes(8)),
               record(fcgi.FCGI_STDOUT, b"Status: 200\r\n\r\nnot json") + record(fcgi.FCGI_END_REQUEST, bytes(8))]
    logged: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ls:
        ls.bind(path)
        ls.listen(4)

        def peer() -> None:
            for a in answers:
                c, _ = ls.accept()
                with c:
                    c.settimeout(5)
                    got = b""
                    while not got.endswith(END_STDIN):
                        chunk = c.recv(65536)
                        assert chunk, "the client closed before its request was complete"
                        got += chunk
                    c.sendall(a)
        t = threading.Thread(target=peer, daemon=True)
        t.start()
        handle = make_unsafe_handler(resolve("worker", {"UnsafeFastCGIPool": 1}), path,
                                     lambda m, lvl, msg: logged.append(f"{m}:{lvl} {msg}"))
        req = Request(method="GET", target="/unsafe?id=a&ms=0")
        for _ in answers:
            assert handle(req).status == 502
        t.join(5)
    assert len(logged) == 4 and all(line.startswith("proxy_fcgi:error") for line in logged), logged
    (tmp_path / "fake.sock").unlink()
    assert handle(req).status == 503
