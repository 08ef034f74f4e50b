"""worker and event: who holds a thread, parking, the accept limit, TLS, and the thread-unsafe module."""

from __future__ import annotations

import json
import resource
import socket
import ssl
import threading
import time

import pytest
from conftest import http_get, pid_alive, read_response, wait_for

from mpmcore import scoreboard as sb

GET_KA = b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"


def keepalive_clients(port: int, n: int, tls_port: int | None = None) -> list[socket.socket]:
    """``n`` connections that each made one request, read the answer, and now sit idle."""
    socks = []
    ctx = None
    if tls_port:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", tls_port or port), timeout=20)
        if ctx:
            s = ctx.wrap_socket(s)
        s.sendall(GET_KA)
        assert read_response(s)[0] == 200
        socks.append(s)
    return socks


def test_worker_idle_keepalive_clients_hold_threads(server_factory):
    srv = server_factory(mpm="worker", settings={
        "ServerLimit": 2, "ThreadsPerChild": 4, "MaxRequestWorkers": 8, "StartServers": 2,
        "MinSpareThreads": 1, "MaxSpareThreads": 8, "KeepAliveTimeout": 30})
    wait_for(lambda: srv.count_states()["_"] == 8, what="8 idle threads")
    socks = keepalive_clients(srv.port, 8)
    wait_for(lambda: srv.count_states()["K"] == 8, what="8 threads in K")
    # a new client waits: every thread is held by an idle keep-alive connection
    waiting = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    waiting.settimeout(1.5)
    with pytest.raises(socket.timeout):
        waiting.recv(1)
    # one keep-alive client leaves: its thread takes the waiting client at once
    t0 = time.monotonic()
    socks[0].close()
    waiting.settimeout(10)
    assert read_response(waiting)[0] == 200
    assert time.monotonic() - t0 < 3
    for s in socks[1:] + [waiting]:
        s.close()


def test_event_parks_1000_idle_keepalive_connections(server_factory):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The accept rule allows ThreadsPerChild + idle x factor connections per child: with the
    # default factor 2 that is 75 per child here, so raise it to hold 1000 in 2 children.
    srv = server_factory(mpm="event", settings={
        "ServerLimit": 2, "ThreadsPerChild": 25, "MaxRequestWorkers": 50, "StartServers": 2,
        "MinSpareThreads": 10, "MaxSpareThreads": 50, "KeepAliveTimeout": 60, "AsyncRequestWorkerFactor": 40,
        "MaxKeepAliveRequests": 0})
    wait_for(lambda: srv.count_states()["_"] == 50, what="50 idle threads")
    socks = keepalive_clients(srv.port, 1000)
    try:
        def parked():
            a = srv.auto()
            return a if int(a["ConnsAsyncKeepAlive"]) == 1000 else None
        auto = wait_for(parked, timeout=20, what="1000 parked keep-alive connections")
        assert int(auto["ConnsTotal"]) >= 1000
        letters = auto["Scoreboard"]
        assert letters.count("K") == 0  # no thread is held by an idle connection
        assert letters.count("_") >= 48  # all idle but the one answering this status request
        # new requests are served promptly
        t0 = time.monotonic()
        for _ in range(20):
            assert http_get(srv.port, "/bytes/100")[0] == 200
        assert time.monotonic() - t0 < 5
        # the parked connections still work
        for s in socks[:50]:
            s.sendall(GET_KA)
            assert read_response(s)[0] == 200
    finally:
        for s in socks:
            s.close()


def test_event_accept_limit_turns_not_accepting_on_and_off(server_factory):
    srv = server_factory(mpm="event", settings={
        "ServerLimit": 1, "ThreadsPerChild": 2, "MaxRequestWorkers": 2, "StartServers": 1,
        "MinSpareThreads": 1, "MaxSpareThreads": 2, "AsyncRequestWorkerFactor": 1, "KeepAliveTimeout": 30})
    wait_for(lambda: srv.count_states()["_"] == 2, what="2 idle threads")

    def not_accepting():
        return srv.snapshot().children[0].not_accepting
    assert not_accepting() == 0
    # limit: connections < ThreadsPerChild + idle x floor(factor) = 2 + 2 x 1 = 4
    socks = keepalive_clients(srv.port, 4)
    wait_for(lambda: not_accepting() == 1, what="not_accepting on")
    # the 4th reply reaches its client just before its worker parks the connection
    wait_for(lambda: srv.snapshot().children[0].keep_alive == 4, timeout=5, what="4 parked")
    assert not_accepting() == 1
    # a 5th client is not accepted while the limit holds (it waits in the backlog, not refused)
    extra = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    extra.settimeout(1.0)
    with pytest.raises(socket.timeout):
        extra.recv(1)
    socks[0].close()
    socks[1].close()
    extra.settimeout(10)
    assert read_response(extra)[0] == 200  # accepted once connections fell below the limit
    wait_for(lambda: not_accepting() == 0, what="not_accepting off")
    for s in socks[2:] + [extra]:
        s.close()


def test_event_closes_its_keepalive_queue_when_workers_ran_out(server_factory):
    """A parked keep-alive connection that becomes readable while no worker is idle is closed, and
    with it the whole keep-alive queue (Apache's event: the clients reconnect). The child goes on:
    the busy requests are answered and a new client is served."""
    srv = server_factory(mpm="event", settings={
        "ServerLimit": 1, "ThreadsPerChild": 2, "MaxRequestWorkers": 2, "StartServers": 1,
        "MinSpareThreads": 1, "MaxSpareThreads": 2, "AsyncRequestWorkerFactor": 4, "KeepAliveTimeout": 30})
    wait_for(lambda: srv.count_states()["_"] == 2, what="2 idle threads")
    a, b, trigger, victim = keepalive_clients(srv.port, 4)
    wait_for(lambda: srv.snapshot().children[0].keep_alive == 4, timeout=5, what="4 parked")
    for s in (a, b):  # both workers busy for 3 s
        s.sendall(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: srv.count_states()["_"] == 0, timeout=5, what="both workers busy")
    trigger.sendall(GET_KA)  # readable, no idle worker: closed, and the keep-alive queue with it
    for s in (trigger, victim):  # closed without an answer (a reset when our request was unread)
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
    for s in (a, b):
        assert read_response(s)[0] == 200
    wait_for(lambda: srv.snapshot().children[0].keep_alive == 2, timeout=5, what="a and b parked again")
    # the listener re-reads its accept rule at least every 0.1 s: it accepts again
    wait_for(lambda: not srv.snapshot().children[0].not_accepting, timeout=5, what="accepting again")
    assert srv.snapshot().children[0].connections == 2
    assert http_get(srv.port, "/")[0] == 200  # the listener still accepts
    for s in (a, b, trigger, victim):
        s.close()


@pytest.mark.parametrize("sync", [False, True])
def test_event_tls_async_or_held_like_worker(server_factory, sync):
    srv = server_factory(mpm="event", tls=True, settings={
        "ServerLimit": 1, "ThreadsPerChild": 8, "MaxRequestWorkers": 8, "StartServers": 1,
        "MinSpareThreads": 1, "MaxSpareThreads": 8, "KeepAliveTimeout": 30, "SSLSyncEventMPM": "On" if sync else "Off"})
    wait_for(lambda: srv.count_states()["_"] == 8, what="8 idle threads")
    socks = keepalive_clients(srv.port, 3, tls_port=srv.tls_port)
    try:
        if sync:
            # Apache before 2.4.7: each TLS connection holds its worker, keep-alive included
            wait_for(lambda: srv.count_states()["K"] == 3, what="3 threads held in K")
            assert srv.snapshot().children[0].keep_alive == 0
        else:
            wait_for(lambda: srv.snapshot().children[0].keep_alive == 3, what="3 TLS connections parked")
            # each worker goes back to _ right after parking its connection
            wait_for(lambda: (c := srv.count_states())["K"] == 0 and c["_"] == 8 and c, timeout=5,
                     what="no K, all 8 threads idle")
        for s in socks:  # and they still work
            s.sendall(GET_KA)
            assert read_response(s)[0] == 200
    finally:
        for s in socks:
            s.close()


def _unsafe_burst(port: int, n: int = 24) -> list[dict]:
    out: list[dict] = []
    lock = threading.Lock()

    def one(i):
        st, _, body = http_get(port, f"/unsafe?id=req{i}&ms=100", timeout=30)
        assert st == 200
        with lock:
            out.append(json.loads(body))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


@pytest.mark.parametrize("mpm,pool,corrupt", [
    ("prefork", 0, False), ("worker", 0, True), ("event", 0, True), ("event", 2, False), ("worker", 2, False)])
def test_unsafe_module(server_factory, mpm, pool, corrupt):
    settings = {"StartServers": 2, "UnsafeFastCGIPool": pool}
    if mpm == "prefork":
        settings.update({"MinSpareServers": 24, "MaxSpareServers": 30, "StartServers": 24})
    else:
        settings.update({"ServerLimit": 2, "ThreadsPerChild": 16, "MaxRequestWorkers": 32, "MinSpareThreads": 1,
                         "MaxSpareThreads": 32})
    srv = server_factory(mpm=mpm, settings=settings)
    wait_for(lambda: srv.count_states()["_"] >= 24, what="24 idle slots")
    results = _unsafe_burst(srv.port)
    assert len(results) == 24
    bad = [r for r in results if r["corrupted"]]
    if corrupt:
        assert bad, "threads sharing module globals should have mixed requests up"
    else:
        assert not bad, bad[:3]
    if pool:
        assert all(r["served_by"] == "fastcgi" for r in results)
        assert len({r["pid"] for r in results}) <= pool


def test_event_write_completion_parks_the_rest_of_a_reply(server_factory):
    srv = server_factory(mpm="event", settings={
        "ServerLimit": 1, "ThreadsPerChild": 4, "MaxRequestWorkers": 4, "StartServers": 1,
        "MinSpareThreads": 1, "MaxSpareThreads": 4, "Timeout": 30,
        "SendBufferSize": 4096})  # loopback buffers would otherwise swallow megabytes at once
    wait_for(lambda: srv.count_states()["_"] == 4, what="4 idle threads")
    readers = []
    for _ in range(3):  # replies below the 64 KiB threshold, to clients that do not read
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /bytes/60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(s)
    try:
        wait_for(lambda: srv.snapshot().children[0].write_completion == 3, what="3 replies in write completion")
        # no thread waits for the slow readers (each is back to _ right after handing its reply over)
        wait_for(lambda: srv.count_states()["W"] == 0 and srv.count_states()["_"] == 4, timeout=5,
                 what="no W, all 4 threads idle")
        assert srv.snapshot().children[0].write_completion == 3
        # when the clients read, the listener finishes the replies and parks them as keep-alive
        for s in readers:
            s.settimeout(10)
            status, _, body = read_response(s)
            assert status == 200 and len(body) == 60000
        wait_for(lambda: (c := srv.snapshot().children[0]).keep_alive == 3 and c.write_completion == 0,
                 what="3 kept-alive after writing, none left in write completion")
    finally:
        for s in readers:
            s.close()


def test_worker_new_child_squats_on_a_finishing_childs_slot(server_factory):
    srv = server_factory(mpm="worker", settings={
        "ServerLimit": 1, "ThreadsPerChild": 4, "MaxRequestWorkers": 4, "StartServers": 1,
        "MinSpareThreads": 1, "MaxSpareThreads": 4})
    wait_for(lambda: srv.count_states()["_"] == 4, what="4 idle threads")
    old_pid = srv.snapshot().procs[0].pid
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", http_get(srv.port, "/sleep?ms=2500")))
    t.start()
    wait_for(lambda: srv.count_states()["W"] == 1, what="the slow request in flight")
    busy_thread = next(i for i in range(4) if srv.snapshot().worker(0, i).status == sb.BUSY_WRITE)
    assert srv.ctl("graceful")["ok"]

    def squatted():
        snap = srv.snapshot()
        new_pid = snap.procs[0].pid
        others = [snap.worker(0, i) for i in range(4) if i != busy_thread]
        return (new_pid != old_pid and snap.worker(0, busy_thread).pid == old_pid
                and all(w.pid == new_pid and w.status == sb.READY for w in others)) and new_pid
    # ServerLimit 1: the new child takes the old child's process slot while the old one finishes,
    # and starts every thread but the one whose slot the old request still holds: that busy old
    # thread keeps its own state (W), as Apache's worker threads do (docs/graceful-restart.md)
    new_pid = wait_for(squatted, what="new child squatting on slot 0")
    assert srv.snapshot().worker(0, busy_thread).status == sb.BUSY_WRITE
    t.join(10)
    assert result["r"][0] == 200
    # when the old thread lets go, the new child takes that thread slot too
    wait_for(lambda: srv.snapshot().worker(0, busy_thread).pid == new_pid, what="thread slot reused")
    assert http_get(srv.port, "/")[0] == 200


def test_event_child_finishing_gracefully_waits_idle(server_factory):
    """After a graceful restart an old event child keeps its listener polling its last connection.
    It must sleep in epoll meanwhile: the wake pipe that told it to stop stays readable, and while
    it stayed in the poll set the listener spun at 100% of a core until the connection ended."""
    import psutil

    srv = server_factory(mpm="event", settings={"ServerLimit": 2, "ThreadsPerChild": 4, "MaxRequestWorkers": 4,
                                                "StartServers": 1, "MinSpareThreads": 1, "MaxSpareThreads": 4})
    wait_for(lambda: srv.count_states()["_"] == 4, what="4 idle threads")
    old_pid = srv.live_children()[0].pid
    half = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # holds a worker of the old child in R
        wait_for(lambda: srv.count_states()["R"] == 1, what="one R slot")
        assert srv.ctl("graceful")["ok"]
        wait_for(lambda: any(p.pid != old_pid for p in srv.live_children()), what="the new child")
        old = psutil.Process(old_pid)
        before, t0 = sum(old.cpu_times()[:2]), time.monotonic()
        time.sleep(1.5)  # a measuring window, not a wait for a state
        busy = (sum(old.cpu_times()[:2]) - before) / (time.monotonic() - t0)
        assert old.is_running() and busy < 0.3, f"the old child used {busy:.0%} of a core while finishing"
    finally:
        half.close()
    wait_for(lambda: not pid_alive(old_pid), timeout=15, what="the old child gone once its connection closed")
