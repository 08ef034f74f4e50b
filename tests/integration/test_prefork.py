"""The master and the prefork MPM, observed from outside: real processes, sockets, shared memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import http_get, read_response, wait_for

from mpmcore import scoreboard as sb


def test_states_seen_from_another_process(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 3, "MinSpareServers": 3, "MaxSpareServers": 6})
    wait_for(lambda: srv.count_states()["_"] >= 3, what="3 idle children")

    # W: a slow request in flight, with its request line and pattern in the slot
    holder = threading.Thread(target=http_get, args=(srv.port, "/sleep?ms=1500"),
                              kwargs={"headers": {"X-Traffic-Pattern": "io"}})
    holder.start()

    def writing():
        snap = srv.snapshot()
        for _, _, w in sb.live_workers(snap):
            if w.status == sb.BUSY_WRITE and w.request.startswith(b"GET /sleep"):
                return w
    w = wait_for(writing, what="a W slot showing the request")
    assert w.pattern == b"io" and w.client == b"127.0.0.1" and w.protocol == b"HTTP/1.1"

    # K: an idle keep-alive connection holds its child
    ka = socket.create_connection(("127.0.0.1", srv.port))
    ka.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(ka)[0] == 200
    wait_for(lambda: srv.count_states()["K"] == 1, what="one K slot")

    # R: a client that sent half a request
    half = socket.create_connection(("127.0.0.1", srv.port))
    half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    wait_for(lambda: srv.count_states()["R"] == 1, what="one R slot")

    holder.join(10)
    ka.close()
    half.close()
    wait_for(lambda: srv.count_states()["K"] == 0 and srv.count_states()["W"] == 0, what="slots back to idle")
    # counters moved at the end of each request
    snap = srv.snapshot()
    assert sum(w.access_count for _, _, w in sb.live_workers(snap)) >= 2


def _spawns_per_tick(srv) -> list[int]:
    """How many children each maintenance tick spawned, in order: a tick that spawns forks its
    children together and logs one "maintenance: spawned N child(ren)" line."""
    return [int(n) for n in re.findall(r"maintenance: spawned (\d+) child", srv.log_text())]


def _after_two_memory_samples(srv, timeout: float = 10) -> None:
    """Wait for the master to sample the children's memory twice more: samples are taken on
    maintenance ticks two ticks apart, so at least one more maintenance tick has run."""
    def sampled() -> float:
        return max(p.mem_time for p in srv.live_children())
    start = sampled()
    seen = [start]

    def moved_twice() -> bool:
        t = sampled()
        if t != seen[-1]:
            seen.append(t)
        return len(seen) >= 3
    wait_for(moved_twice, timeout=timeout, interval=0.05, what="two memory samples (maintenance ticks)")


def test_spare_maintenance_spawns_by_doubling_per_tick(server_factory):
    # The policy's rules are unit-tested (tests/unit/test_policy.py); this checks the sequence the
    # master carries out with real forks: +1, +2, +4 on successive ticks, then the spares are met
    # (8 idle >= MinSpareServers 5) and later ticks spawn nothing.
    srv = server_factory(mpm="prefork", settings={"StartServers": 1, "MinSpareServers": 5, "MaxSpareServers": 10})
    wait_for(lambda: len(srv.live_children()) == 8, timeout=15, what="8 children")
    _after_two_memory_samples(srv)
    assert len(srv.live_children()) == 8
    assert _spawns_per_tick(srv) == [1, 2, 4]
    log = srv.log_text()
    assert "maintenance: spawned 1 child (" in log and "maintenance: spawned 4 children (" in log


def test_idle_children_stopped_one_per_tick(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 8, "MinSpareServers": 1, "MaxSpareServers": 3})
    wait_for(lambda: len(srv.live_children()) == 8, what="8 children")
    counts = [8]

    def track():
        n = len(srv.live_children())
        if n != counts[-1]:
            counts.append(n)
        return n == 3
    # As Apache's: one idle child per maintenance tick (and none on the tick a stopped child is
    # reaped: unit-tested in tests/unit/test_policy.py), so the count falls by one at a time.
    wait_for(track, timeout=16, interval=0.05, what="down to MaxSpareServers")
    assert counts == [8, 7, 6, 5, 4, 3], counts
    assert srv.log_text().count("maintenance: stopping idle child") == 5
    assert _spawns_per_tick(srv) == []


def test_max_request_workers_reached_waits_and_logs_once(server_factory):
    n = 3
    srv = server_factory(mpm="prefork", settings={"StartServers": n, "MinSpareServers": 1, "MaxSpareServers": 2,
                                                  "MaxRequestWorkers": n})
    wait_for(lambda: srv.count_states()["_"] == n, what=f"{n} idle children")
    results: dict[int, tuple[int, float]] = {}

    def one(i):
        t0 = time.monotonic()
        status = http_get(srv.port, "/sleep?ms=2500", timeout=30)[0]
        results[i] = (status, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n + 1)]
    for t in threads:
        t.start()
    wait_for(lambda: srv.count_states()["W"] == n, what="all children writing")
    wait_for(lambda: "server reached MaxRequestWorkers setting" in srv.log_text(), timeout=5, what="the message")
    for t in threads:
        t.join(30)
    assert sorted(s for s, _ in results.values()) == [200] * (n + 1)  # the extra one waited, was not refused
    durations = sorted(d for _, d in results.values())
    assert durations[-1] >= 4.5  # it waited for a child to free up: about two request times
    assert srv.log_text().count("server reached MaxRequestWorkers setting") == 1


def test_graceful_restart_under_load_loses_nothing(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 4, "MinSpareServers": 2, "MaxSpareServers": 6})
    gen0 = srv.snapshot().glob.running_generation
    stop = threading.Event()
    outcomes: list[int | str] = []

    def client():
        while not stop.is_set() and len(outcomes) < 5000:
            try:
                outcomes.append(http_get(srv.port, "/sleep?ms=20", timeout=10)[0])
            except OSError as e:
                outcomes.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(outcomes) > 20, what="traffic flowing")
    os.kill(srv.proc.pid, signal.SIGUSR1)
    wait_for(lambda: srv.snapshot().glob.running_generation == gen0 + 1, what="generation +1")

    def old_gone():
        snap = srv.snapshot()
        return all(p.generation == gen0 + 1 for p in snap.procs if p.pid)
    wait_for(old_gone, what="old generation gone")
    n_after = len(outcomes)
    wait_for(lambda: len(outcomes) > n_after + 20, what="traffic after the restart")
    stop.set()
    for t in threads:
        t.join(10)
    assert outcomes and all(o == 200 for o in outcomes), [o for o in outcomes if o != 200][:5]
    assert "Graceful restart requested" in srv.log_text()


def test_malformed_and_hostile_requests(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 2, "MinSpareServers": 1, "MaxSpareServers": 3,
                                                  "RequestReadTimeout": "header=1-2,MinRate=500"})
    cases = [
        (b"\x16\x03\x01garbage\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /sleep?ms=abc HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ]
    for raw, want in cases:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(raw)
            assert read_response(s)[0] == want, raw[:40]
            assert s.recv(10) == b""  # and the connection is closed
    # slowloris: one header byte every 0.3 s is far below MinRate; header=1-2 ends it with 408
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        t0 = time.monotonic()
        got = b""
        for ch in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                break
            s.settimeout(0.3)
            try:
                got += s.recv(4096)
            except TimeoutError:
                continue
            if got:
                break
        assert got.startswith(b"HTTP/1.1 408"), got[:60]
        assert time.monotonic() - t0 < 3.5
    # and the server still serves
    assert http_get(srv.port, "/")[0] == 200


def test_killed_child_is_replaced_and_its_slot_cleaned(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 3, "MinSpareServers": 3, "MaxSpareServers": 6})
    wait_for(lambda: srv.count_states()["_"] == 3, what="3 idle")
    victim = srv.live_children()[0]
    pid, slot = victim.pid, next(i for i, p in enumerate(srv.snapshot().procs) if p.pid == victim.pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: srv.snapshot().procs[slot].pid != pid, what="slot cleaned")
    wait_for(lambda: len(srv.live_children()) == 3 and srv.count_states()["_"] == 3, what="replaced")
    assert f"child pid {pid} exit signal SIGKILL" in srv.log_text()
    assert http_get(srv.port, "/")[0] == 200


def test_hard_restart_zeroes_counters_and_graceful_stop(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 2, "MinSpareServers": 1, "MaxSpareServers": 3})
    for _ in range(5):
        http_get(srv.port, "/")
    wait_for(lambda: int(srv.auto()["Total Accesses"]) >= 5, what="accesses counted")
    restart0 = srv.snapshot().glob.restart_time
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_for(lambda: srv.snapshot().glob.running_generation == 1, what="generation 1")
    wait_for(lambda: srv.snapshot().glob.restart_time > restart0, what="restart time moved")
    auto = srv.auto()
    assert int(auto["Total Accesses"]) <= 1  # zeroed (this request may be counted)
    # graceful stop: in-flight request finishes, then the master exits and removes the segment
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", http_get(srv.port, "/sleep?ms=1000")))
    t.start()

    def sleep_in_flight() -> bool:
        # the /sleep slot itself: the ?auto request's slot may still show W after its client has
        # read the reply, and a stop before /sleep is accepted refuses it (the listeners close)
        return any(w.status == sb.BUSY_WRITE and w.request.startswith(b"GET /sleep")
                   for _, _, w in sb.live_workers(srv.snapshot()))
    wait_for(sleep_in_flight, what="the /sleep request in flight")
    os.kill(srv.proc.pid, signal.SIGWINCH)
    t.join(10)
    assert result["r"][0] == 200
    assert srv.proc.wait(15) == 0
    assert not Path("/dev/shm" + srv.shm_name).exists()


def test_stale_scoreboard_is_replaced(server_factory, tmp_path):
    srv = server_factory(mpm="prefork", settings={"StartServers": 1, "MinSpareServers": 1, "MaxSpareServers": 2})
    port = srv.port
    srv.reader.close()
    srv.reader = None
    srv.proc.send_signal(signal.SIGKILL)  # a crash: the segment stays behind
    srv.proc.wait(10)
    assert Path("/dev/shm" + srv.shm_name).exists()
    # its children die with it (PDEATHSIG)
    wait_for(lambda: _port_closed(port), what="children gone with the master")
    import conftest
    from conftest import MpmServer
    orig = conftest.free_port
    conftest.free_port = lambda: port
    try:
        again = MpmServer(tmp_path, mpm="prefork", settings={"StartServers": 1})
    finally:
        conftest.free_port = orig
    try:
        assert "removing stale scoreboard" in again.log_text()
        assert http_get(port, "/")[0] == 200
    finally:
        again.stop()
    assert not Path("/dev/shm" + srv.shm_name).exists()


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_bad_directive_is_refused_clearly(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "mpmcore.cli", "serve", "--set", "MaxRequestWorkers=-5"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "MaxRequestWorkers" in r.stderr and "allowed" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mpmcore.cli", "serve", "--set", "MaxClientz=5"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown directive" in r.stderr


@pytest.mark.parametrize("mpm", ["prefork", "worker"])
def test_max_connections_per_child_recycles_the_child(server_factory, mpm):
    settings = {"StartServers": 1, "MaxConnectionsPerChild": 3}
    if mpm == "prefork":
        settings.update({"MinSpareServers": 1, "MaxSpareServers": 2, "MaxRequestWorkers": 1})
    else:
        settings.update({"ServerLimit": 1, "ThreadsPerChild": 2, "MaxRequestWorkers": 2, "MinSpareThreads": 1,
                         "MaxSpareThreads": 2})
    srv = server_factory(mpm=mpm, settings=settings)
    first = wait_for(lambda: srv.live_children() and srv.live_children()[0].pid, what="a child")
    for _ in range(3):  # counted across the child's threads for worker
        assert http_get(srv.port, "/")[0] == 200
    # the child exits cleanly after its 3rd connection; maintenance starts a new one
    wait_for(lambda: (c := srv.live_children()) and c[0].pid != first, timeout=10, what="a new child")
    assert http_get(srv.port, "/")[0] == 200
    assert f"child pid {first} exit" not in srv.log_text()  # a clean exit, not a crash


def test_expect_100_continue_is_answered_before_the_body(server_factory):
    srv = server_factory(mpm="prefork", settings={"StartServers": 1, "MinSpareServers": 1, "MaxSpareServers": 2})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /sleep?ms=0 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n"
                  b"Connection: close\r\n\r\n")
        # the client waits for the interim answer before it sends its body (curl waits 1 s without it)
        assert s.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"x" * 2000)
        status, _, body = read_response(s)
        assert status == 200 and b"2000" in body
    # pipelined behind a GET that arrived in the same packet: the GET's reply goes first, then the
    # 100 for the POST (an interim reply before it would read as the GET's)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /sleep?ms=0 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
                  b"Connection: close\r\n\r\n")
        got = b""
        deadline = time.monotonic() + 5
        while b"100 Continue\r\n\r\n" not in got and time.monotonic() < deadline:
            got += s.recv(4096)
        head, _, rest = got.partition(b"\r\n\r\n")  # the GET's head, then its 10-byte body, then the 100
        assert head.startswith(b"HTTP/1.1 200 ") and rest[10:] == b"HTTP/1.1 100 Continue\r\n\r\n", got
        s.sendall(b"abc")
        status, _, body = read_response(s)
        assert status == 200


def test_bytes_served_count_bodies_not_headers(server_factory):
    """Like Apache (r->bytes_sent): Total kBytes and the slot counters add up response bodies;
    headers are not counted. 50 replies of 10 bytes add exactly 500 bytes (plus the first status
    page's own body), where headers would add some 5 kB more."""
    import json
    srv = server_factory(mpm="prefork", settings={"StartServers": 1, "MinSpareServers": 1, "MaxSpareServers": 2})
    status, _, body = http_get(srv.port, "/server-status?json")
    assert status == 200
    before = json.loads(body)["totals"]["bytes"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        for _ in range(50):
            s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
            st, _, b = read_response(s)
            assert st == 200 and len(b) == 10
    want = before + len(body) + 500

    def counted():
        return json.loads(http_get(srv.port, "/server-status?json")[2])["totals"]["bytes"]
    # the last request is counted just after its reply, so poll; a poll's own page is counted only
    # after it answers, so the first figure that reaches the goal is exact (or headers were counted)
    assert wait_for(lambda: (n := counted()) >= want and n, what=f"{want} bytes served") == want
