"""The traffic generator's test helpers, shared by the integration and external traffic tests: a tiny
asyncio HTTP server (what Apache does not offer: /sleep, /bytes, header capture, body trickle
accounting), the runner as its real subprocess, and frame collection with a deadline."""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import threading

import psutil
import pytest

from mpmcore.traffic import TrafficClient, TrafficRunner


# -- the tiny asyncio server -------------------------------------------------------------------
class TinyServer:
    """HTTP/1.1 on loopback in its own thread and loop. Routes: /sleep?ms=N, /bytes/N,
    /drop-then/bytes/N (its first request answered "ok", its second dropped unanswered as a
    keep-alive timeout would, then /bytes/N), anything else -> 200 "ok". Records per-request
    X-Traffic-Pattern, open connections, POST body bytes."""

    def __init__(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.ssl_ctx = ssl_ctx
        self.port = 0
        self.open = 0
        self.accepted = 0
        self.patterns: collections.Counter = collections.Counter()
        self.paths: collections.Counter = collections.Counter()
        self.post_bodies: dict[int, int] = {}  # connection number -> body bytes received
        self.content_lengths: list[int] = []
        self.bytes_sent = 0
        self._writers: set = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> TinyServer:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.ssl_ctx, backlog=1024), self.loop)
        self.server = fut.result(5)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def _close():
            self.server.close()
            for w in list(self._writers):
                w.transport.abort()
        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        cid = self.accepted
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                self.patterns[headers.get("x-traffic-pattern")] += 1
                self.paths[target] += 1
                length = int(headers.get("content-length", "0"))
                if length:
                    self.content_lengths.append(length)
                    self.post_bodies[cid] = 0
                    while self.post_bodies[cid] < length:
                        chunk = await reader.read(min(65536, length - self.post_bodies[cid]))
                        if not chunk:
                            return
                        self.post_bodies[cid] += len(chunk)
                body = b"ok\n"
                if target.startswith("/drop-then/"):
                    seen = self.paths[target]
                    if seen == 2:
                        return  # closed with no answer: the client sent on a connection being closed
                    if seen > 2:
                        target = target[len("/drop-then"):]
                m = re.match(r"^/sleep\?ms=(\d+)", target)
                if m:
                    await asyncio.sleep(int(m.group(1)) / 1000)
                m = re.match(r"^/bytes/(\d+)", target)
                if m:
                    n = int(m.group(1))
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                    chunk = b"x" * 65536
                    left = n
                    while left:
                        piece = chunk[: min(left, 65536)]
                        writer.write(piece)
                        await writer.drain()
                        left -= len(piece)
                        self.bytes_sent += len(piece)
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.transport.abort()


@pytest.fixture
def tiny():
    server = TinyServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runner():
    r = TrafficRunner().start()
    yield r
    r.close()
    assert r.proc.returncode is not None


def established(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` to 127.0.0.1:``port`` (seen by the OS, not by us)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in conns if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def run_coro(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def frames_until(tc: TrafficClient, pid: str, pred, timeout: float):
    """Collect frames for pattern ``pid`` until ``pred(entry)`` or the timeout; returns the list."""
    got = []

    async def collect():
        async for f in tc.frames():
            for p in f.patterns:
                if p.id == pid:
                    got.append(p)
                    if pred(p):
                        return

    await asyncio.wait_for(collect(), timeout)
    return got
