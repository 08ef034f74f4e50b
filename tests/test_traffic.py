"""Traffic generator against real servers on loopback: real Apache (event MPM, started by
shared/tools/real-apache.sh) where it fits, and a tiny asyncio server in this file for what
Apache does not offer (/sleep, /bytes, header capture, body trickle accounting).

The runner runs as its real subprocess (TrafficRunner) and is driven through TrafficClient,
exactly as the dashboard and CLI do.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from datetime import UTC
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, async_wait_for, free_port, pid_alive, status_auto, wait_for
from real_apache_fixtures import start_apache, stop_apache

from mpmcore.procs import terminate
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
                method, target, _ = lines[0].split(" ", 2)
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


def _established(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` to 127.0.0.1:``port`` (seen by the OS, not by us)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in conns if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _frames_until(tc: TrafficClient, pid: str, pred, timeout: float):
    """Collect frames for pattern ``pid`` until ``pred(entry)`` or the timeout; returns the list."""
    got = []

    async def collect():
        async for f in tc.frames():
            for p in f["patterns"]:
                if p["id"] == pid:
                    got.append(p)
                    if pred(p):
                        return

    await asyncio.wait_for(collect(), timeout)
    return got


# -- real Apache ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_apache(tmp_path_factory):
    """A real Apache (event, its defaults), stopped by its pid."""
    port, pid = start_apache(tmp_path_factory.mktemp("apache"), "event", {})
    yield port
    stop_apache(port, pid)


@pytest.mark.apache
def test_steady_closed_matches_apache_total_accesses(default_apache, runner):
    """What the generator counts is what Apache served: Total Accesses within 10%."""
    async def go():
        async with await runner.client() as tc:
            before = int(status_auto(default_apache)["Total Accesses"])
            pid = await tc.start("steady", target=f"http://127.0.0.1:{default_apache}/", path="/index.html",
                                 clients=16, duration=2)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 10)
            after = int(status_auto(default_apache)["Total Accesses"])
            total = frames[-1]["total"]
            assert frames[-1]["stop_reason"] == "duration"
            assert total["status"]["2xx"] > 500
            served = after - before - 1  # minus our own first status request
            assert abs(served - total["responses"]) <= 0.1 * served, (served, total["responses"])
            assert total["latency_ms"]["p50"] <= total["latency_ms"]["p99"] <= total["latency_ms"]["max"]
            assert frames[-1]["active_connections"] == 0
    _run(go())


@pytest.mark.apache
def test_slowloris_holds_connections_in_R_and_stop_closes_them(default_apache, runner):
    s = 30

    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("slowloris", target=f"http://127.0.0.1:{default_apache}/", connections=s,
                                 interval=0.5, duration=30)
            await async_wait_for(lambda: _established(runner.pid, default_apache) == s, 10, f"{s} connections")
            # Apache's own scoreboard: s workers reading a request that never ends.
            await async_wait_for(lambda: status_auto(default_apache)["Scoreboard"].count("R") >= s, 10,
                                 "R slots in Apache's scoreboard")
            await asyncio.sleep(1.2)  # a couple of header lines later, still held
            assert _established(runner.pid, default_apache) == s
            summary = await tc.stop(pid)
            assert summary["state"] == "finished" and summary["stop_reason"] == "stopped"
            assert summary["active_connections"] == 0
            assert summary["total"]["requests"] >= s
            await async_wait_for(lambda: _established(runner.pid, default_apache) == 0, 5, "connections closed")
            await async_wait_for(lambda: status_auto(default_apache)["Scoreboard"].count("R") <= 1, 10,
                                 "R slots released")
    _run(go())


@pytest.mark.apache
def test_browsers_hold_six_connections_each(default_apache, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("browsers", target=f"http://127.0.0.1:{default_apache}/", path="/index.html",
                                 asset_path="/index.html", clients=3, assets=12, think_time=30,
                                 duration=30)
            await async_wait_for(lambda: _established(runner.pid, default_apache) == 18, 10, "3 x 6 connections")
            info = [p for p in await tc.list() if p["id"] == pid][0]
            assert info["active_connections"] == 18
            # Page + 12 assets per browser, then idle (think time) with the connections open.
            async def page_views_done():
                info = [p for p in await tc.list() if p["id"] == pid][0]
                return info["total"]["status"]["2xx"] == 3 * 13 and info
            info = await async_wait_for(page_views_done, 5, "3 page views of 13 requests")
            assert info["total"]["connections_opened"] == 18
            assert _established(runner.pid, default_apache) == 18  # idle, still open
            await tc.stop(pid)
            await async_wait_for(lambda: _established(runner.pid, default_apache) == 0, 5, "connections closed")
    _run(go())


@pytest.mark.apache
def test_live_update_changes_the_rate(default_apache, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{default_apache}/", path="/index.html",
                                 model="open", rate=50, arrivals="uniform", connections=8, duration=20)
            frames = await _frames_until(tc, pid, lambda p: p["elapsed"] > 1.8, 5)
            before = [p["live"]["rps"] for p in frames if p["elapsed"] > 0.8]
            desc = await tc.update(pid, rate=400)
            assert desc["params"]["rate"] == 400.0
            t0 = frames[-1]["elapsed"]
            frames = await _frames_until(tc, pid, lambda p: p["elapsed"] > t0 + 1.6, 5)
            after = [p["live"]["rps"] for p in frames if p["elapsed"] > t0 + 0.5]
            await tc.stop(pid)
            mean_before = sum(before) / len(before)
            mean_after = sum(after) / len(after)
            assert 40 <= mean_before <= 60, before
            assert 340 <= mean_after <= 460, after
    _run(go())


# -- tiny server ------------------------------------------------------------------------------
def test_header_and_steady_closed_think_time(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://localhost:{tiny.port}/", clients=4,
                                 think_time=0.1, duration=1)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 5)
            total = frames[-1]["total"]
            # 4 clients, one request per ~0.1 s each, for 1 s: about 40.
            assert 25 <= total["responses"] <= 44, total["responses"]
            assert tiny.patterns["steady"] == total["requests"]
            assert tiny.accepted == 4  # keep-alive: one connection per client
    _run(go())


def test_open_model_keeps_its_rate_when_the_server_is_slow(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/sleep?ms=100",
                                 path="/sleep?ms=100", model="open", rate=40, arrivals="uniform",
                                 connections=20, duration=2.5)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 8)
            t = frames[-1]["total"]
            # 40/s evenly spaced for 2.5 s = 100 arrivals, answered ~100 ms later each (a closed model with the
            # same 20 connections and no think time would also be server-bound; this one is not).
            assert 80 <= t["arrivals"] <= 120, t["arrivals"]
            assert t["dropped"] == 0
            assert t["responses"] >= 0.85 * t["arrivals"] - 5
            assert 95 <= t["latency_ms"]["p50"] <= 160
    _run(go())


def test_open_model_poisson_arrivals_average_the_rate(tiny, runner):
    """Poisson arrivals (the default) are random: the count over 2 s at 200/s is 400 on average with
    a standard deviation of 20. The bounds are five deviations wide, so a correct generator fails
    them about once in two million runs, while a wrong rate (say 100/s or 400/s) always does."""
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/", model="open",
                                 rate=200, connections=20, duration=2)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 8)
            t = frames[-1]["total"]
            assert 300 <= t["arrivals"] <= 500, t["arrivals"]
            assert t["dropped"] == 0 and t["responses"] >= 0.9 * t["arrivals"], t
    _run(go())


def test_open_model_corrected_latency_exceeds_uncorrected(tiny, runner):
    """Capacity 2 connections / 100 ms = 20/s below the 50/s asked: arrivals queue up (then are
    dropped beyond max_pending). Uncorrected latency stays ~100 ms; the corrected one, measured
    from the intended send time, shows the queueing, as wrk2 does."""
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/",
                                 path="/sleep?ms=100", model="open", rate=50, arrivals="uniform",
                                 connections=2, max_pending=20, duration=2.5)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 8)
            t = frames[-1]["total"]
            assert 110 <= t["arrivals"] <= 140, t["arrivals"]  # the rate was kept: 50/s
            assert t["dropped"] > 20 and t["late"] > 10
            unc, cor = t["latency_ms"], t["corrected_latency_ms"]
            assert unc["p50"] < 160
            assert cor["p50"] > 2 * unc["p50"] and cor["p99"] > 3 * unc["p99"], (unc, cor)
    _run(go())


def test_burst_sends_m_at_once_every_t(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("burst", target=f"http://127.0.0.1:{tiny.port}/", size=20, every=0.5,
                                 duration=1.2)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 6)
            t = frames[-1]["total"]
            assert t["arrivals"] in (40, 60) and t["responses"] == t["arrivals"], t
            assert tiny.accepted == t["responses"]  # new connections for every burst by default
            # Each burst lands within one frame: per-frame responses are multiples of ~20.
            per_frame = [p["live"]["responses"] for p in frames if p["live"]["responses"]]
            assert max(per_frame) >= 20, per_frame
    _run(go())


def test_ajax_polls_over_one_connection_each(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("ajax", target=f"http://127.0.0.1:{tiny.port}/", path="/poll",
                                 clients=5, interval="200ms", duration=2)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 6)
            t = frames[-1]["total"]
            assert 35 <= t["responses"] <= 55, t["responses"]
            # (a poll sent just before the end may be unanswered: compare what was sent)
            assert tiny.accepted == 5 and tiny.paths["/poll"] == t["requests"]
            assert tiny.patterns["ajax"] == t["requests"]
    _run(go())


def test_slow_post_trickles_the_body(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("slow-post", target=f"http://127.0.0.1:{tiny.port}/", connections=3,
                                 content_length=100_000, chunk=10, interval=0.1, duration=30)
            await async_wait_for(lambda: tiny.open == 3 and len(tiny.post_bodies) == 3, 5, "3 POSTs")
            await asyncio.sleep(1.0)
            got = dict(tiny.post_bodies)
            await tc.stop(pid)
            assert tiny.content_lengths == [100_000] * 3
            for n in got.values():  # ~10 bytes per 0.1 s
                assert 50 <= n <= 200, got
            await async_wait_for(lambda: tiny.open == 0, 5, "connections closed")
    _run(go())


def test_slow_read_reads_slowly_through_a_small_window(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("slow-read", target=f"http://127.0.0.1:{tiny.port}/", connections=2,
                                 size="8MiB", rcvbuf=4096, read_bytes=8192, interval=0.5, duration=30)
            await async_wait_for(lambda: tiny.open == 2, 5, "2 connections")
            await asyncio.sleep(2.0)
            info = [p for p in await tc.list() if p["id"] == pid][0]
            await tc.stop(pid)
            # Read: 16 KiB/s per connection for ~2 s (plus the first receive buffer), far below
            # the 8 MiB asked for; the server is stuck with the rest (its kernel send buffer
            # absorbs a few MiB on loopback, but the response cannot be finished).
            assert tiny.paths["/bytes/8388608"] == 2
            assert 2 * 16_384 <= info["total"]["bytes_in"] <= 2 * (3 * 16_384 + 65_536), info["total"]
            assert info["total"]["responses"] == 0
            assert tiny.bytes_sent < 2 * (8 << 20)
            await async_wait_for(lambda: tiny.open == 0, 5, "connections closed")
    _run(go())


def test_slow_read_keeps_reading_slowly_on_a_reopened_connection(tiny, runner):
    """The kept-alive connection is closed by the server as the 2nd request goes out: the
    request is retried on a new connection, which must read as slowly, through as small a window."""
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("slow-read", target=f"http://127.0.0.1:{tiny.port}/", connections=1,
                                 path="/drop-then/bytes/{size}", size="8MiB", rcvbuf=4096,
                                 read_bytes=8192, interval=0.5, duration=30)
            await async_wait_for(lambda: tiny.paths["/drop-then/bytes/8388608"] >= 3, 5, "the retried request")
            await asyncio.sleep(2.0)  # the window the reading rate is measured over
            info = [p for p in await tc.list() if p["id"] == pid][0]
            await tc.stop(pid)
            t = info["total"]
            assert t["reconnects"] >= 1 and t["errors_total"] == 0, t
            # 16 KiB/s for ~2 s plus the first window, not the 8 MiB a full-speed reader would have
            assert t["responses"] == 1 and t["bytes_in"] <= 3 * 16_384 + 65_536, t
            await async_wait_for(lambda: tiny.open == 0, 5, "connections closed")
    _run(go())


def test_io_and_cpu_use_their_routes(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            a = await tc.start("io", target=f"http://127.0.0.1:{tiny.port}/", ms=30, rate=20,
                               arrivals="uniform", duration=1)
            b = await tc.start("cpu", target=f"http://127.0.0.1:{tiny.port}/", ms=5, rate=20,
                               arrivals="uniform", duration=1)

            async def both_done():
                runs = {p["id"]: p for p in await tc.list()}
                return runs[a]["state"] == runs[b]["state"] == "finished"
            await async_wait_for(both_done, 6, "both finished")
            # 20/s evenly spaced for 1 s: about 20 each.
            assert 14 <= tiny.paths["/sleep?ms=30"] <= 26 and tiny.patterns["io"] == tiny.paths["/sleep?ms=30"]
            assert 14 <= tiny.paths["/cpu?ms=5"] <= 26 and tiny.patterns["cpu"] == tiny.paths["/cpu?ms=5"]
    _run(go())


def test_max_requests_and_bad_params_leave_others_running(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            keep = await tc.start("ajax", target=f"http://127.0.0.1:{tiny.port}/", clients=2,
                                  interval=0.1, duration=20)
            with pytest.raises(ValueError, match="'rate' must be between"):
                await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/", model="open", rate=-1)
            with pytest.raises(ValueError, match="allow_remote"):
                await tc.start("steady", target="http://10.0.0.1/")
            with pytest.raises(ValueError, match="'clients' must be between 1 and 20000"):
                await tc.update(keep, clients=10**6)
            with pytest.raises(KeyError):
                await tc.stop("nope-1")
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/", clients=4,
                                 max_requests=100, duration=20)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 10)
            assert frames[-1]["stop_reason"] == "max_requests"
            assert frames[-1]["total"]["responses"] == 100 == tiny.patterns["steady"]
            running = {p["id"]: p["state"] for p in await tc.list()}
            assert running[keep] == "running"
            await tc.stop_all()
            assert {p["id"]: p["state"] for p in await tc.list()}[keep] == "finished"
    _run(go())


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    from datetime import datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


def test_tls_target(tmp_path, runner):
    server = TinyServer(_self_signed(tmp_path)).start()
    try:
        async def go():
            async with await runner.client() as tc:
                url = f"https://127.0.0.1:{server.port}/"
                pid = await tc.start("steady", target=url, clients=2, duration=0.8)
                frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 5)
                t = frames[-1]["total"]
                assert t["status"]["2xx"] > 10 and t["errors_total"] == 0
                assert t["connect_ms"]["count"] == 2
                # tls_verify on: the self-signed certificate is rejected, counted as a tls error.
                pid = await tc.start("steady", target=url, clients=1, duration=0.5, tls_verify=True)
                frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 5)
                t = frames[-1]["total"]
                assert t["errors"]["tls"] >= 1 and t["responses"] == 0
        _run(go())
    finally:
        server.stop()


def test_refused_is_counted_with_bounded_retries(runner):
    port = free_port()  # nothing listens there

    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{port}/", clients=3, duration=1)
            frames = await _frames_until(tc, pid, lambda p: p["state"] == "finished", 5)
            t = frames[-1]["total"]
            # Exponential backoff from 10 ms to 1 s: a handful of attempts per client, not a spin.
            assert 3 <= t["errors"]["refused"] <= 3 * 10, t["errors"]
    _run(go())


# -- process hygiene and CLI ------------------------------------------------------------------
def test_runner_exits_when_its_parent_dies():
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from mpmcore.traffic import TrafficRunner\n"
            "r = TrafficRunner().start(); print(r.pid, flush=True); time.sleep(60)\n") % str(ROOT)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        runner_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(runner_pid)
        parent.kill()  # no chance to clean up
        parent.wait(5)
        try:
            wait_for(lambda: not pid_alive(runner_pid), timeout=10, interval=0.05,
                     what="the runner to exit after its parent died")
        except AssertionError:
            os.kill(runner_pid, signal.SIGKILL)
            raise AssertionError(f"runner {runner_pid} outlived its parent (killed now)") from None
    finally:
        terminate(parent, 5, signal.SIGKILL)


def test_runner_close_stops_it_by_pid():
    r = TrafficRunner().start()
    pid = r.pid
    try:
        assert psutil.Process(pid).cmdline()[-6:-4] == ["--socket", r.socket_path]
    finally:
        code = r.close()
    assert code == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(r.socket_path)


def _cli(*args, timeout=30):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mpmcore.traffic.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_help_lists_every_pattern_and_option():
    from mpmcore.traffic import PATTERNS
    out = _cli("--help").stdout
    for name, pat in PATTERNS.items():
        assert f"\n  {name}\n" in out
        for p in pat["params"]:
            assert "--" + p.replace("_", "-") in out


def test_cli_runs_and_prints_json(tiny):
    res = _cli("ajax", "--target", f"http://127.0.0.1:{tiny.port}/", "--clients", "3", "--interval",
               "100ms", "--duration", "1.5s", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["pattern"] == "ajax" and summary["stop_reason"] == "duration"
    assert summary["total"]["requests"] == tiny.patterns["ajax"] > 20
    assert "resp/s" in res.stderr  # the live progress line


def test_cli_refuses_remote_and_bad_values():
    res = _cli("steady", "--target", "http://10.0.0.1/")
    assert res.returncode == 2 and "--allow-remote" in res.stderr
    res = _cli("steady", "--target", "http://127.0.0.1:9/", "--clients", "0")
    assert res.returncode == 2 and "'clients' must be between 1 and 20000" in res.stderr
    res = _cli("burst", "--target", "http://127.0.0.1:9/", "--think-time", "1")
    assert res.returncode == 2 and "--think-time" in res.stderr
