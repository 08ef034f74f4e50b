"""Driving one connection with blocking sockets: the I/O half shared by all three MPMs.

The HTTP rules live in ``protocol.HTTPConnection`` (sans-IO); this module moves bytes between it
and a socket, applies the timeouts it computes, and moves the slot's scoreboard state at each
transition. The MPMs differ only in who waits between requests:

* prefork and worker call ``serve(hold=True)``: the thread itself waits for the next request on a
  kept-alive connection (its slot shows K), so an idle client holds the thread;
* event calls ``serve(hold=False)``: when the connection goes idle between requests, or its reply
  could not be written at once, ``serve`` returns and the listener thread parks it.
"""

from __future__ import annotations

import enum
import errno
import resource
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpmcore import scoreboard as sb
from mpmcore.http.protocol import (
    CLOSED,
    NEED_DATA,
    HTTPConnection,
    Limits,
    Phase,
    ProtocolError,
    Request,
    RequestReadTimeout,
    Response,
)

# A piece of a reply: the head and small bodies as bytes, a large body as a view of it (no copy)
Chunk = bytes | memoryview

RECV_SIZE = 65536
# Lingering close (Apache's MAX_SECS_TO_LINGER and SECONDS_TO_LINGER): after our half-close, read
# and drop what the client still sends, up to 30 s in all and 2 s per read, so that a client's
# late bytes do not turn into a RST that destroys the response it has not read yet.
MAX_SECS_TO_LINGER = 30.0
SECONDS_TO_LINGER = 2.0

class Served(enum.Enum):
    """What ``serve`` returns: what the caller does with the connection next."""

    CLOSE = "close"  # connection finished: the caller does the lingering close
    PARK_KEEPALIVE = "keepalive"  # event: idle between requests, hand to the listener
    PARK_WRITE = "write"  # event: reply not fully written, hand to the listener (write completion)
    GONE = "gone"  # already closed (peer vanished, error): nothing left to do


class Written(enum.Enum):
    """What ``write_some`` did."""

    ALL = "all"  # the whole reply is out
    PARTIAL = "partial"  # the socket took what it could: wait until it is writable again
    FAILED = "failed"  # the connection failed: close it


class Readiness(enum.Enum):
    """Why a wait for a readable connection ended."""

    DATA = "data"
    TIMEOUT = "timeout"
    WAKE = "wake"  # the child is told to stop


CLOSE, PARK_KEEPALIVE, PARK_WRITE, GONE = Served.CLOSE, Served.PARK_KEEPALIVE, Served.PARK_WRITE, Served.GONE


@dataclass
class ServerContext:
    """Everything a child needs to serve connections, built once per child from its Config."""

    handler: Callable[[Request], Response]
    limits: Limits
    read_timeout: RequestReadTimeout
    timeout: float  # Timeout
    keep_alive_timeout: float  # KeepAliveTimeout
    vhost: str  # "host:port" for the scoreboard
    stopping: threading.Event = field(default_factory=threading.Event)  # graceful: finish and close
    wake_fd: int | None = None  # readable when the child is told to stop (keep-alive waits watch it)
    server_name: str = "mpmlab"


@dataclass
class Conn:
    """One client connection as it moves between threads (event) or stays in one (prefork/worker)."""

    sock: socket.socket
    client: str
    http: HTTPConnection
    tls: bool = False
    out: list[Chunk] | None = None  # reply parts not yet written (event write completion)
    handshake_done: bool = True
    accepted_at: float = 0.0

    @classmethod
    def accept(cls, sock: socket.socket, addr: Any, ctx: ServerContext, tls: bool = False) -> Conn:
        client = addr[0] if isinstance(addr, tuple) else str(addr)
        http = HTTPConnection(ctx.limits, ctx.read_timeout, timeout=ctx.timeout, server=ctx.server_name,
                              now=time.monotonic())
        return cls(sock, client, http, tls=tls, handshake_done=not tls, accepted_at=time.monotonic())


def _pending(sock: socket.socket) -> int:
    """Decrypted bytes a TLS socket holds (select() does not see them); 0 for plain TCP."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def _thread_cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime, ru.ru_stime


def _wait_readable(c: Conn, deadline: float, wake_fd: int | None) -> Readiness:
    """Wait until the connection has data, the deadline passes or the child is told to stop."""
    if c.tls and _pending(c.sock):
        return Readiness.DATA
    fds: list[socket.socket | int] = [c.sock] if wake_fd is None else [c.sock, wake_fd]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Readiness.TIMEOUT
        try:
            ready, _, _ = select.select(fds, [], [], remaining)
        except ValueError:  # socket closed under us
            return Readiness.TIMEOUT
        if not ready:
            return Readiness.TIMEOUT
        if c.sock in ready:
            return Readiness.DATA
        return Readiness.WAKE


def _recv(c: Conn, deadline: float) -> bytes | None:
    """One read, bounded by ``deadline``; None on timeout, b"" on EOF/reset."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    sock = c.sock
    if sock.gettimeout() == 0.0:
        # event: a non-blocking socket, usually readable already (the listener saw it so): try
        # the read first, and only when nothing is there wait with a timeout (ioctl + poll)
        try:
            return sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (ConnectionError, ssl.SSLError, OSError):
            return b""
    try:
        sock.settimeout(remaining)
        return sock.recv(RECV_SIZE)
    except TimeoutError:
        return None
    except ssl.SSLWantReadError:
        return None
    except (ConnectionError, ssl.SSLError, OSError):
        return b""


def handshake(c: Conn, ctx: ServerContext) -> bool:
    """TLS handshake in the serving thread, bounded by Timeout."""
    try:
        sock = c.sock
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(ctx.timeout)
            sock.do_handshake()
        c.handshake_done = True
        return True
    except (TimeoutError, OSError, ssl.SSLError):
        return False


def write_all(c: Conn, data: Chunk, timeout: float) -> bool:
    try:
        c.sock.settimeout(timeout)
        c.sock.sendall(data)
        return True
    except (TimeoutError, OSError, ssl.SSLError):
        return False


def write_some(c: Conn) -> Written:
    """Event's write completion: send what the socket takes now."""
    parts = c.out or []
    try:
        if c.sock.gettimeout() != 0.0:
            c.sock.setblocking(False)
        while parts:
            head = memoryview(parts[0])
            n = c.sock.send(head)
            if n < len(head):
                parts[0] = head[n:]
            else:
                parts.pop(0)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return Written.PARTIAL
    except (OSError, ssl.SSLError):
        c.out = None
        return Written.FAILED
    c.out = None
    return Written.ALL


# Below this, head and body go out in one send (one packet); above it, separately, without a copy.
COALESCE_BYTES = 65536
# Event: the worker itself writes a large reply (W) until at most this much is left; only that rest
# goes to the listener's write-completion queue. Apache's core output filter does the same
# (THRESHOLD_MAX_BUFFER): a slow reader of a big file holds a worker under event too, as a real
# Apache 2.4 shows side by side (tests/test_vs_apache.py).
WRITE_COMPLETION_THRESHOLD = 65536


def _split_tail(parts: list[Chunk], keep: int) -> tuple[list[Chunk], list[Chunk]]:
    """Split reply parts into what must be written now and the last ``keep`` bytes."""
    total = sum(len(p) for p in parts)
    cut = total - keep
    if cut <= 0:
        return [], parts
    head: list[Chunk] = []
    tail: list[Chunk] = []
    pos = 0
    for p in parts:
        size = len(p)
        if pos + size <= cut:
            head.append(p)
        elif pos >= cut:
            tail.append(p)
        else:
            mv = memoryview(p)
            head.append(mv[:cut - pos])
            tail.append(mv[cut - pos:])
        pos += size
    return head, tail


def _reply_parts(http: HTTPConnection, req: Request, resp: Response) -> tuple[list[Chunk], int]:
    """(the buffers to write, the body's length: what Apache counts as bytes served, r->bytes_sent,
    headers not included)."""
    head, body = http.send_response_parts(req, resp)
    if not body:
        return [head], 0
    if len(body) <= COALESCE_BYTES:
        return [head + bytes(body)], len(body)
    return [head, memoryview(body)], len(body)


def serve(c: Conn, slot: sb.SlotWriter, ctx: ServerContext, hold: bool, readable: bool = False) -> Served:
    """Serve requests on ``c`` until it must close, or (``hold=False``) until it would wait.

    The slot is in R on entry (a new connection, or, with ``readable``, a parked one the listener
    saw become readable: read it at once instead of parking it again).
    """
    http = c.http
    if not c.handshake_done and not handshake(c, ctx):
        return CLOSE
    shown_pattern = None  # what the slot shows, so the pattern is written once per request
    while True:
        event = http.next_event()
        if event is NEED_DATA:
            # 100 Continue here, once every earlier pipelined request has its reply
            interim = http.take_interim()
            if interim and not write_all(c, interim, ctx.timeout):
                return CLOSE
            if http.phase is Phase.IDLE and http.requests_completed > 0:
                # Between requests on a kept-alive connection.
                if ctx.stopping.is_set():
                    return CLOSE
                if readable:
                    readable = False
                elif not hold and not (c.tls and _pending(c.sock)):  # decrypted bytes waiting: read now
                    # event: park it (no K under event). Trying one non-blocking read first was
                    # measured and dropped: the next request was there for 5% of requests under
                    # wrk, and the failed read cost the other 95% more (docs/performance.md).
                    return PARK_KEEPALIVE
                else:
                    slot.set(sb.BUSY_KEEPALIVE)
                    ka_deadline = time.monotonic() + ctx.keep_alive_timeout
                    why = _wait_readable(c, ka_deadline, ctx.wake_fd)
                    if why is Readiness.WAKE and hold:
                        # prefork/worker: a thread already waiting on a kept-alive connection is
                        # not woken by a graceful stop; it answers one more request (closing
                        # after it) or times out (modules/http/http_core.c,
                        # ap_process_http_sync_connection)
                        why = _wait_readable(c, ka_deadline, None)
                    if why is not Readiness.DATA:
                        return CLOSE  # keep-alive timeout, or a graceful stop: close after the last reply
                    slot.set(sb.BUSY_READ)
                if shown_pattern is not None:  # the previous request's pattern is not this one's
                    shown_pattern = None
                    slot.set_pattern(None)
                data = _recv(c, time.monotonic() + ctx.timeout)
            else:
                deadline, status = http.read_deadline()
                if http.requests_completed == 0 and http.phase is Phase.IDLE:
                    # A fresh connection: mod_reqtimeout's header timeout runs from the accept.
                    rt = ctx.read_timeout.header_timeout
                    if rt > 0:
                        deadline, status = min(deadline, c.accepted_at + rt), 408
                data = _recv(c, deadline)
                if data is None:  # read timeout (mod_reqtimeout or Timeout)
                    if status:
                        err = ProtocolError(status, "request not received in time (RequestReadTimeout)")
                        write_all(c, http.send_error(err), ctx.timeout)
                    return CLOSE
            if data is None:
                return CLOSE
            http.receive_data(data, time.monotonic())
            if http.partial_pattern != shown_pattern:
                shown_pattern = http.partial_pattern
                slot.set_pattern(shown_pattern)
            continue
        if event is CLOSED:
            return CLOSE
        if isinstance(event, ProtocolError):
            slot.set(sb.BUSY_WRITE)
            write_all(c, http.send_error(event), ctx.timeout)
            return CLOSE
        # A complete request.
        req: Request = event
        slot.request_started(req.request_line, ctx.vhost, f"HTTP/{req.http_version}", req.traffic_pattern)
        try:
            resp = ctx.handler(req)
        except Exception as e:  # a handler bug is a 500 for this request, never a dead child
            resp = Response(500, [("Content-Type", "text/plain")], f"internal error: {type(e).__name__}\n".encode(),
                            close=True)
        if ctx.stopping.is_set():
            resp.close = True  # graceful: this is the connection's last request
        parts, served = _reply_parts(http, req, resp)
        if hold:
            ok = all(write_all(c, p, ctx.timeout) for p in parts)
            slot.set(sb.BUSY_LOG)
            slot.request_finished(served if ok else 0, *_thread_cpu())
            if not ok:
                return CLOSE
        else:
            now_parts, c.out = _split_tail(parts, WRITE_COMPLETION_THRESHOLD)
            if now_parts and not all(write_all(c, p, ctx.timeout) for p in now_parts):
                slot.request_finished(0, *_thread_cpu())
                return CLOSE
            done = write_some(c)
            if done is Written.PARTIAL:
                slot.request_finished(served, *_thread_cpu())
                return PARK_WRITE
            slot.set(sb.BUSY_LOG)
            slot.request_finished(served if done is Written.ALL else 0, *_thread_cpu())
            if done is Written.FAILED:
                return CLOSE
        if not http.keep_alive:
            return CLOSE
        if hold and ctx.stopping.is_set():
            # prefork/worker: a stopping child ends the connection after each response, pipelined
            # requests already read are not answered (ap_process_http_sync_connection checks
            # AP_MPMQ_STOPPING); event goes on serving them
            return CLOSE
        slot.set(sb.BUSY_READ)


def lingering_close(c: Conn, slot: sb.SlotWriter | None, total: float = MAX_SECS_TO_LINGER) -> None:
    """Apache's lingering close, done by the calling thread (prefork, worker)."""
    if slot is not None:
        slot.set(sb.CLOSING)
    sock = c.sock
    try:
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.settimeout(0.5)
                sock = sock.unwrap()
            except (OSError, ssl.SSLError, ValueError):
                pass
        sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + total
        while True:
            remaining = min(end - time.monotonic(), SECONDS_TO_LINGER)
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            if not sock.recv(RECV_SIZE):
                break
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    finally:
        close_quietly(c)


def start_lingering(c: Conn) -> bool:
    """First half of a non-blocking lingering close (event): half-close now. False = already gone."""
    try:
        if c.tls:
            close_quietly(c)
            return False
        c.sock.shutdown(socket.SHUT_WR)
        c.sock.setblocking(False)
        return True
    except OSError:
        close_quietly(c)
        return False


def drain(c: Conn) -> bool:
    """Read and drop what arrived on a lingering connection. True = the client has closed."""
    try:
        while True:
            data = c.sock.recv(RECV_SIZE)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def close_quietly(c: Conn) -> None:
    try:
        c.sock.close()
    except OSError:
        pass


def is_transient_accept_error(e: OSError) -> bool:
    """Errors after which accept() is simply retried (Apache logs and goes on)."""
    return e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR, errno.EPROTO,
                       errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
