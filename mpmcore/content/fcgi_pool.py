"""One process of the FastCGI pool for /unsafe, forked by the master (UnsafeFastCGIPool N).

Single-threaded: it accepts on the pool's Unix socket, reads one FastCGI request (fcgi.py), runs
the thread-unsafe module (unsafe.py) and answers, moving its scoreboard slot through ``_ R W _``
like any other worker.

A malformed request (a record cut short, a bad header, a PARAMS stream whose lengths run past its
end, records out of order, an oversized stream) is an error on that request only: the peer gets a
``Status: 500`` reply with the reason when the connection still takes one, the reason goes to the
error log, and the process accepts the next connection.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from mpmcore import scoreboard as sb
from mpmcore.content.fcgi import (
    CALL_TIMEOUT,
    FCGI_ABORT_REQUEST,
    FCGI_BEGIN_REQUEST,
    FCGI_END_REQUEST,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDIN,
    FCGI_STDOUT,
    MAX_PARAMS,
    FastCGIError,
    PeerClosed,
    decode_params,
    read_record,
    record,
)
from mpmcore.content.unsafe import MAX_WORK_MS, unsafe_work
from mpmcore.procs import install_child_signals

MAX_STDIN = 1 << 20  # /unsafe takes no body; a larger STDIN stream is refused

#: the master's log(level, message, module)
Log = Callable[[str, str, str], None]


@dataclass
class FastCGIRequest:
    request_id: int
    params: dict[str, str]


class BadRequest(FastCGIError):
    """A well-formed FastCGI request that /unsafe cannot take (its query): Status 400."""


def read_request(conn: socket.socket) -> FastCGIRequest | None:
    """One responder request: BEGIN_REQUEST, PARAMS..., empty PARAMS, STDIN..., empty STDIN, all of
    one request id. None when the peer aborted it (ABORT_REQUEST); FastCGIError when the stream is
    malformed."""
    rtype, rid, content = read_record(conn)
    if rtype != FCGI_BEGIN_REQUEST:
        raise FastCGIError(f"first record is of type {rtype}, not BEGIN_REQUEST")
    if len(content) != 8:
        raise FastCGIError(f"BEGIN_REQUEST body of {len(content)} bytes, not 8")
    role = struct.unpack_from("!H", content)[0]
    if role != FCGI_RESPONDER:
        raise FastCGIError(f"role {role} (only RESPONDER, 1, is served)")
    if rid == 0:
        raise FastCGIError("BEGIN_REQUEST with request id 0 (reserved for management records)")
    raw_params = bytearray()
    params: dict[str, str] | None = None
    stdin_bytes = 0
    while True:
        rtype, got_rid, content = read_record(conn)
        if got_rid != rid:
            raise FastCGIError(f"record of type {rtype} for request id {got_rid} inside request {rid}")
        if rtype == FCGI_ABORT_REQUEST:
            return None
        if rtype == FCGI_PARAMS:
            if params is not None:
                raise FastCGIError("PARAMS record after the PARAMS stream ended")
            if content:
                raw_params += content
                if len(raw_params) > MAX_PARAMS:
                    raise FastCGIError(f"PARAMS stream longer than {MAX_PARAMS} bytes")
            else:
                params = decode_params(bytes(raw_params))
        elif rtype == FCGI_STDIN:
            if params is None:
                raise FastCGIError("STDIN record before the PARAMS stream ended")
            if not content:
                return FastCGIRequest(rid, params)
            stdin_bytes += len(content)
            if stdin_bytes > MAX_STDIN:
                raise FastCGIError(f"STDIN stream longer than {MAX_STDIN} bytes")
        else:
            raise FastCGIError(f"unexpected record of type {rtype} in a request")


def _query(params: dict[str, str]) -> tuple[str, str, int]:
    """(query string, id, ms) of a request's QUERY_STRING; BadRequest when ms is not 0..MAX_WORK_MS."""
    qs = params.get("QUERY_STRING", "")
    q = urllib.parse.parse_qs(qs)
    rid_s = (q.get("id") or ["?"])[0][:64]
    try:
        ms = int((q.get("ms") or ["0"])[0])
    except ValueError:
        ms = -1
    if not 0 <= ms <= MAX_WORK_MS:
        raise BadRequest(f"ms must be an integer 0..{MAX_WORK_MS}")
    return qs, rid_s, ms


def reply(status: str, content_type: str, body: bytes, rid: int, app_status: int = 0) -> bytes:
    """A whole response: STDOUT (headers and body), the empty STDOUT, END_REQUEST."""
    out = f"Status: {status}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body
    return (record(FCGI_STDOUT, out, rid) + record(FCGI_STDOUT, b"", rid)
            + record(FCGI_END_REQUEST, struct.pack("!IB3x", app_status, FCGI_REQUEST_COMPLETE), rid))


def serve_connection(conn: socket.socket, slot: sb.SlotWriter, log: Log | None) -> None:
    """One connection to the pool: one request, answered; a malformed one answered 500 (400 for a
    bad query) and logged. Never raises: the process goes on to the next connection."""
    rid = 1
    try:
        req = read_request(conn)
        if req is None:
            return
        rid = req.request_id
        qs, rid_s, ms = _query(req.params)
        slot.request_started(f"GET /unsafe?{qs}", "fastcgi", "FastCGI/1.0", None)
        body = json.dumps(unsafe_work(rid_s, ms)).encode()
        out = reply("200 OK", "application/json", body, rid)
        conn.sendall(out)
        slot.request_finished(len(out), 0.0, 0.0)
    except PeerClosed:
        pass  # nothing to answer
    except FastCGIError as e:
        bad_query = isinstance(e, BadRequest)
        if log is not None:
            log("warn" if bad_query else "error", f"FastCGI pool process {os.getpid()}: "
                f"{'bad request' if bad_query else 'malformed request'}: {e}", "proxy_fcgi")
        status = "400 Bad Request" if bad_query else "500 Internal Server Error"
        try:
            conn.sendall(reply(status, "text/plain", f"{e}\n".encode(), rid, app_status=1))
        except OSError:
            pass
    except OSError as e:  # the peer went away or timed out (CALL_TIMEOUT)
        if log is not None:
            log("info", f"FastCGI pool process {os.getpid()}: connection ended: {e}", "proxy_fcgi")
    except Exception:  # a bug in one request must not end the pool process
        if log is not None:
            log("error", f"FastCGI pool process {os.getpid()}: request failed: "
                + traceback.format_exc().replace("\n", " | "), "proxy_fcgi")


def run_pool_process(scoreboard: sb.Scoreboard, proc: int, generation: int, listen_sock: socket.socket,
                     log: Log | None = None) -> int:
    """One single-threaded FastCGI responder: accept, read the request, run /unsafe, answer."""
    install_child_signals()  # USR1 ignored: the pool is stopped with TERM
    slot = scoreboard.slot(proc, 0)
    slot.claim(os.getpid(), threading.get_native_id(), generation, sb.STARTING)
    listen_sock.setblocking(True)
    slot.set(sb.READY)
    while True:
        try:
            conn, _ = listen_sock.accept()
        except InterruptedError:
            continue
        with conn:
            conn.settimeout(CALL_TIMEOUT)
            slot.new_connection("fastcgi", sb.BUSY_READ)
            serve_connection(conn, slot, log)
        slot.set(sb.READY)
