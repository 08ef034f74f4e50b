"""Traffic generator against a tiny asyncio server on loopback (traffic_fixtures.py) for what a real
server does not offer (/sleep, /bytes, header capture, body trickle accounting), TLS, refused
ports, the runner's process hygiene and the CLI. The real-Apache comparisons are in
tests/external/test_traffic_apache.py.

The runner runs as its real subprocess (TrafficRunner) and is driven through TrafficClient,
exactly as the dashboard and CLI do.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, async_wait_for, free_port, pid_alive, wait_for
from traffic_fixtures import TinyServer, frames_until, run_coro

from mpmcore.procs import terminate
from mpmcore.traffic import TrafficRunner


# -- tiny server ------------------------------------------------------------------------------
def test_header_and_steady_closed_think_time(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://localhost:{tiny.port}/", clients=4,
                                 think_time=0.1, duration=1)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 5)
            total = frames[-1].total
            # 4 clients, one request per ~0.1 s each, for 1 s: about 40.
            assert 25 <= total.responses <= 44, total.responses
            assert tiny.patterns["steady"] == total.requests
            assert tiny.accepted == 4  # keep-alive: one connection per client
    run_coro(go())


def test_open_model_keeps_its_rate_when_the_server_is_slow(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/sleep?ms=100",
                                 path="/sleep?ms=100", model="open", rate=40, arrivals="uniform",
                                 connections=20, duration=2.5)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 8)
            t = frames[-1].total
            # 40/s evenly spaced for 2.5 s = 100 arrivals, answered ~100 ms later each (a closed model with the
            # same 20 connections and no think time would also be server-bound; this one is not).
            assert 80 <= t.arrivals <= 120, t.arrivals
            assert t.dropped == 0
            assert t.responses >= 0.85 * t.arrivals - 5
            assert 95 <= t.latency_ms.p50 <= 160
    run_coro(go())


def test_open_model_poisson_arrivals_average_the_rate(tiny, runner):
    """Poisson arrivals (the default) are random: the count over 2 s at 200/s is 400 on average with
    a standard deviation of 20. The bounds are five deviations wide, so a correct generator fails
    them about once in two million runs, while a wrong rate (say 100/s or 400/s) always does."""
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/", model="open",
                                 rate=200, connections=20, duration=2)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 8)
            t = frames[-1].total
            assert 300 <= t.arrivals <= 500, t.arrivals
            assert t.dropped == 0 and t.responses >= 0.9 * t.arrivals, t
    run_coro(go())


def test_open_model_corrected_latency_exceeds_uncorrected(tiny, runner):
    """Capacity 2 connections / 100 ms = 20/s below the 50/s asked: arrivals queue up (then are
    dropped beyond max_pending). Uncorrected latency stays ~100 ms; the corrected one, measured
    from the intended send time, shows the queueing, as wrk2 does."""
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/",
                                 path="/sleep?ms=100", model="open", rate=50, arrivals="uniform",
                                 connections=2, max_pending=20, duration=2.5)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 8)
            t = frames[-1].total
            assert 110 <= t.arrivals <= 140, t.arrivals  # the rate was kept: 50/s
            assert t.dropped > 20 and t.late > 10
            unc, cor = t.latency_ms, t.corrected_latency_ms
            assert unc.p50 < 160
            assert cor.p50 > 2 * unc.p50 and cor.p99 > 3 * unc.p99, (unc, cor)
    run_coro(go())


def test_histograms_op_hands_out_the_cumulative_hdr_histograms(tiny, runner):
    from hdrh.histogram import HdrHistogram

    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{tiny.port}/", model="open", rate=50,
                                 connections=4, duration=1)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 5)
            total = frames[-1].total
            hists = await tc.histograms(pid)
            assert set(hists) == {"latency", "corrected", "ttfb", "connect"}
            lat = HdrHistogram.decode(hists["latency"])
            assert lat.get_total_count() == total.latency_ms.count == total.responses > 0
            assert HdrHistogram.decode(hists["corrected"]).get_total_count() == total.corrected_latency_ms.count
            assert HdrHistogram.decode(hists["connect"]).get_total_count() == total.connections_opened
            with pytest.raises(KeyError, match="no pattern with id 'steady-999'"):
                await tc.histograms("steady-999")
    run_coro(go())


def test_burst_sends_m_at_once_every_t(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("burst", target=f"http://127.0.0.1:{tiny.port}/", size=20, every=0.5,
                                 duration=1.2)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 6)
            t = frames[-1].total
            assert t.arrivals in (40, 60) and t.responses == t.arrivals, t
            assert tiny.accepted == t.responses  # new connections for every burst by default
            # Each burst lands within one frame: per-frame responses are multiples of ~20.
            per_frame = [p.live.responses for p in frames if p.live.responses]
            assert max(per_frame) >= 20, per_frame
    run_coro(go())


def test_ajax_polls_over_one_connection_each(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("ajax", target=f"http://127.0.0.1:{tiny.port}/", path="/poll",
                                 clients=5, interval="200ms", duration=2)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 6)
            t = frames[-1].total
            assert 35 <= t.responses <= 55, t.responses
            # (a poll sent just before the end may be unanswered: compare what was sent)
            assert tiny.accepted == 5 and tiny.paths["/poll"] == t.requests
            assert tiny.patterns["ajax"] == t.requests
    run_coro(go())


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
    run_coro(go())


def test_slow_read_reads_slowly_through_a_small_window(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("slow-read", target=f"http://127.0.0.1:{tiny.port}/", connections=2,
                                 size="8MiB", rcvbuf=4096, read_bytes=8192, interval=0.5, duration=30)
            await async_wait_for(lambda: tiny.open == 2, 5, "2 connections")
            await asyncio.sleep(2.0)
            info = next(p for p in await tc.list() if p.id == pid)
            await tc.stop(pid)
            # Read: 16 KiB/s per connection for ~2 s (plus the first receive buffer), far below
            # the 8 MiB asked for; the server is stuck with the rest (its kernel send buffer
            # absorbs a few MiB on loopback, but the response cannot be finished).
            assert tiny.paths["/bytes/8388608"] == 2
            assert 2 * 16_384 <= info.total.bytes_in <= 2 * (3 * 16_384 + 65_536), info.total
            assert info.total.responses == 0
            assert tiny.bytes_sent < 2 * (8 << 20)
            await async_wait_for(lambda: tiny.open == 0, 5, "connections closed")
    run_coro(go())


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
            info = next(p for p in await tc.list() if p.id == pid)
            await tc.stop(pid)
            t = info.total
            assert t.reconnects >= 1 and t.errors_total == 0, t
            # 16 KiB/s for ~2 s plus the first window, not the 8 MiB a full-speed reader would have
            assert t.responses == 1 and t.bytes_in <= 3 * 16_384 + 65_536, t
            await async_wait_for(lambda: tiny.open == 0, 5, "connections closed")
    run_coro(go())


def test_io_and_cpu_use_their_routes(tiny, runner):
    async def go():
        async with await runner.client() as tc:
            a = await tc.start("io", target=f"http://127.0.0.1:{tiny.port}/", ms=30, rate=20,
                               arrivals="uniform", duration=1)
            b = await tc.start("cpu", target=f"http://127.0.0.1:{tiny.port}/", ms=5, rate=20,
                               arrivals="uniform", duration=1)

            async def both_done():
                runs = {p.id: p for p in await tc.list()}
                return runs[a].state == runs[b].state == "finished"
            await async_wait_for(both_done, 6, "both finished")
            # 20/s evenly spaced for 1 s: about 20 each.
            assert 14 <= tiny.paths["/sleep?ms=30"] <= 26 and tiny.patterns["io"] == tiny.paths["/sleep?ms=30"]
            assert 14 <= tiny.paths["/cpu?ms=5"] <= 26 and tiny.patterns["cpu"] == tiny.paths["/cpu?ms=5"]
    run_coro(go())


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
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 10)
            assert frames[-1].stop_reason == "max_requests"
            assert frames[-1].total.responses == 100 == tiny.patterns["steady"]
            running = {p.id: p.state for p in await tc.list()}
            assert running[keep] == "running"
            await tc.stop_all()
            assert {p.id: p.state for p in await tc.list()}[keep] == "finished"
    run_coro(go())


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
                frames = await frames_until(tc, pid, lambda p: p.state == "finished", 5)
                t = frames[-1].total
                assert t.status["2xx"] > 10 and t.errors_total == 0
                assert t.connect_ms.count == 2
                # tls_verify on: the self-signed certificate is rejected, counted as a tls error.
                pid = await tc.start("steady", target=url, clients=1, duration=0.5, tls_verify=True)
                frames = await frames_until(tc, pid, lambda p: p.state == "finished", 5)
                t = frames[-1].total
                assert t.errors["tls"] >= 1 and t.responses == 0
        run_coro(go())
    finally:
        server.stop()


def test_control_socket_answers_bad_messages_with_typed_errors(runner):
    """Raw newline-delimited JSON on the runner's socket: every bad message gets an error reply naming
    the problem (the exception type TrafficClient re-raises), and the connection keeps serving."""
    async def go():
        reader, writer = await asyncio.open_unix_connection(runner.socket_path)
        try:
            async def ask(line: bytes) -> dict:
                writer.write(line + b"\n")
                await writer.drain()
                return json.loads(await asyncio.wait_for(reader.readline(), 10))

            assert await ask(b"not json") == {"id": None, "ok": False, "error": {
                "type": "ValueError", "message": "bad message: Expecting value: line 1 column 1 (char 0)"}}
            assert (await ask(b'{"id": 1, "op": "bogus"}'))["error"] == {"type": "ValueError",
                                                                         "message": "unknown op 'bogus'"}
            assert (await ask(b'{"id": 2, "op": ["ping"]}'))["error"]["message"] == "unknown op ['ping']"
            assert (await ask(b'{"id": 3, "op": "start", "params": [1]}'))["error"] == {
                "type": "ValueError", "message": "params must be a JSON object"}
            assert (await ask(b'{"id": 4, "op": "get", "pattern_id": "nope"}')) == {
                "id": 4, "ok": False, "error": {"type": "KeyError", "message": "no pattern with id 'nope'"}}
            assert await ask(b'{"id": 5, "op": "ping"}') == {"id": 5, "ok": True, "result": {"pid": runner.pid}}
        finally:
            writer.close()

    run_coro(go())


def test_refused_is_counted_with_bounded_retries(runner):
    port = free_port()  # nothing listens there

    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{port}/", clients=3, duration=1)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 5)
            t = frames[-1].total
            # Exponential backoff from 10 ms to 1 s: a handful of attempts per client, not a spin.
            assert 3 <= t.errors["refused"] <= 3 * 10, t.errors
    run_coro(go())


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
        for p in pat.params:
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
