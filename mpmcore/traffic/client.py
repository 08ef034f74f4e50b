"""A raw HTTP/1.1 client connection on an asyncio protocol, parsed by httptools (llhttp).

One ClientConnection is one TCP (or TLS) connection. It sends bytes the caller prepared (the
patterns build their request bytes once and reuse them) and resolves one future per response, with
the three timings a load tool needs:

- connect time: from socket creation to connection_made (TCP handshake, plus TLS handshake for
  https), measured by the caller around ``open_connection``;
- time to first byte: from the request write to the first byte of the response;
- total: from the request write to the end of the response.

No streams, no wait_for per request (which costs a task in Python 3.11): a timer handle per
request, and a plain future.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from time import perf_counter
from typing import cast

import httptools

from mpmcore.traffic.runstats import ERROR_KINDS
from mpmcore.traffic.target import Target

__all__ = ["ERROR_KINDS", "ClientConnection", "ConnectionClosed", "ProtocolError", "error_kind", "open_connection"]

class ConnectionClosed(ConnectionError):
    """The server closed the connection before the response was complete."""


class ProtocolError(Exception):
    """The response could not be parsed."""


class ConnectionCapReached(Exception):
    """MAX_CONNECTIONS would be exceeded; the connection was not attempted."""


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionClosed):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, (ProtocolError, httptools.HttpParserError)):
        return "protocol"
    if isinstance(exc, ConnectionCapReached):
        return "cap"
    return "other"


class ClientConnection(asyncio.Protocol):
    """One client connection; at most one request outstanding at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.close_exc: BaseException | None = None
        self.closed_waiter: asyncio.Future[None] | None = None
        self.t_sent = 0.0
        self.t_first = 0.0
        self.status = 0
        self.nbytes = 0  # bytes of the current response
        self.headers_done = False
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.corrupted = False  # this response carries X-Unsafe-Corrupted: 1 (see content/unsafe.py)
        self.keep_alive = True
        #: Slow-read: bytes per second the application consumes; None = as fast as possible.
        self.read_rate: float | None = None
        self._resume_handle: asyncio.TimerHandle | None = None
        #: Called with the status of a response nobody asked for (e.g. 408 to a slowloris client).
        self.on_unsolicited: Callable[[int], None] | None = None
        #: Called once when the connection is gone (accounting in the pattern run).
        self.on_lost: Callable[[ClientConnection], None] | None = None
        #: The pattern's live counters (bytes_in is counted as bytes arrive, so slow reads show).
        self.counts: dict[str, int] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream connection's transport (TCP or TLS) is a Transport, under uvloop too
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.t_first:
            self.t_first = perf_counter()
        n = len(data)
        self.nbytes += n
        if self.counts is not None:
            self.counts["bytes_in"] += n
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("unexpected protocol upgrade"))
            self.abort()
            return
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"bad response: {exc}"))
            self.abort()
            return
        if self.read_rate and not self.closed and self.transport is not None:
            # Consume at read_rate: stop reading for as long as these bytes "take" to read.
            # With a small SO_RCVBUF the server sees a full window and must wait (slow read).
            self.transport.pause_reading()
            self._resume_handle = self.loop.call_later(n / self.read_rate, self._resume)

    def _resume(self) -> None:
        self._resume_handle = None
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_exc = exc
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        w = self.waiter
        if w is not None and not w.done():
            self.waiter = None
            if exc is None and self.headers_done and not self.framed:
                # Close-delimited body: the end of the connection is the end of the response.
                self.keep_alive = False
                w.set_result(self.status)
            else:
                w.set_exception(exc if exc is not None else ConnectionClosed("closed before the response was complete"))
        cw = self.closed_waiter
        if cw is not None and not cw.done():
            cw.set_result(None)
        if self.on_lost is not None:
            cb, self.on_lost = self.on_lost, None
            cb(self)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers_done = False
        self.framed = False
        self.corrupted = False

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n in (14, 17):  # content-length / transfer-encoding, cheaply
            lname = name.lower()
            if lname == b"content-length" or lname == b"transfer-encoding":
                self.framed = True
        elif n == 18 and name.lower() == b"x-unsafe-corrupted" and value.strip() == b"1":
            self.corrupted = True

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        status = self.status
        if 100 <= status < 200:  # interim response: keep waiting for the final one
            return
        self.keep_alive = self.parser.should_keep_alive()
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(status)
        elif self.on_unsolicited is not None:
            self.on_unsolicited(status)

    # -- API --------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        w = self.waiter
        if w is not None and not w.done():
            self.waiter = None
            w.set_exception(exc)

    def _timeout(self, fut: asyncio.Future[int]) -> None:
        if not fut.done():
            self._fail(TimeoutError("no complete response within the timeout"))
            self.abort()

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ConnectionClosed("connection already closed")
        self.transport.write(data)

    def _delivered(self, status: int) -> int:
        """The response handed to the caller, which records it in the same step (no await in
        between): a corrupted /unsafe answer is counted here, with it, so that a stop cancelling
        the caller never counts one without the other."""
        if self.corrupted and self.counts is not None:
            self.counts["corrupted"] += 1
        return status

    async def request(self, data: bytes, timeout: float) -> int:
        """Send ``data`` (a complete request) and return the response status.

        Afterwards ``t_sent``, ``t_first`` and ``nbytes`` describe this exchange.
        """
        if self.closed or self.transport is None:
            raise ConnectionClosed("connection already closed")
        fut: asyncio.Future[int] = self.loop.create_future()
        self.waiter = fut
        self.t_first = 0.0
        self.nbytes = 0
        self.status = 0
        self.t_sent = perf_counter()
        self.transport.write(data)
        handle = self.loop.call_later(timeout, self._timeout, fut)
        try:
            return self._delivered(await fut)
        finally:
            handle.cancel()

    async def expect_response(self, timeout: float) -> int:
        """Wait for a response to bytes already written (slow-post after its body)."""
        if self.closed:
            raise ConnectionClosed("connection already closed")
        fut: asyncio.Future[int] = self.loop.create_future()
        self.waiter = fut
        handle = self.loop.call_later(timeout, self._timeout, fut)
        try:
            return self._delivered(await fut)
        finally:
            handle.cancel()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection to close; True if it did."""
        if self.closed:
            return True
        if self.closed_waiter is None or self.closed_waiter.done():
            self.closed_waiter = self.loop.create_future()
        fut = self.closed_waiter

        def expire() -> None:
            if not fut.done():
                fut.set_result(None)
        handle = self.loop.call_later(timeout, expire)
        try:
            await fut
        finally:
            handle.cancel()
        return self.closed

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


async def open_connection(target: Target, ssl_ctx: ssl.SSLContext | None, timeout: float,
                          rcvbuf: int | None = None) -> ClientConnection:
    """Connect to the target's checked address. Raises the OS error on failure."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            # Must be set before connect so the advertised window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await asyncio.wait_for(loop.sock_connect(sock, target.sockaddr), timeout)
        if ssl_ctx is not None:
            _transport, proto = await loop.create_connection(
                lambda: ClientConnection(loop), sock=sock, ssl=ssl_ctx, server_hostname=target.host,
                ssl_handshake_timeout=timeout)
        else:
            _transport, proto = await loop.create_connection(lambda: ClientConnection(loop), sock=sock)
        return proto
    except BaseException:
        sock.close()
        raise
