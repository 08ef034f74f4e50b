"""Each MPM's scoreboard against a real Apache 2.4 under the same small scenarios.

Both servers get the same directives and the same clients at the same time: a few slow readers
of a large response, idle keep-alive clients, and clients that trickle their headers. The counts of
slots in each state must be the same, and what the MPM model predicts.
"""

from __future__ import annotations

import socket

import pytest
from conftest import read_response, status_auto, wait_for

BIG = 16 * 1024 * 1024  # larger than every socket buffer on the way, so the writer must wait

DIRECTIVES = {
    "prefork": {"StartServers": 20, "MinSpareServers": 10, "MaxSpareServers": 20, "MaxRequestWorkers": 20},
    "worker": {"ServerLimit": 2, "ThreadsPerChild": 10, "MaxRequestWorkers": 20, "StartServers": 2,
               "MinSpareThreads": 5, "MaxSpareThreads": 20},
}
DIRECTIVES["event"] = DIRECTIVES["worker"]
COMMON = {"KeepAliveTimeout": 30}

# What the model predicts for 3 slow readers, 4 idle keep-alive clients and 2 header tricklers,
# plus the W of the status request that looks.
EXPECTED = {
    "prefork": {"W": 4, "K": 4, "R": 2},
    "worker": {"W": 4, "K": 4, "R": 2},
    # Keep-alive clients are parked; readers of a big reply hold their worker under event too
    # (Apache writes until at most 64 KiB are left before write completion takes over).
    "event": {"W": 4, "K": 0, "R": 2},
}

pytestmark = pytest.mark.apache


def scenario(port: int, big_path: str) -> list[socket.socket]:
    socks = []
    for _ in range(3):  # slow readers: a small receive buffer, never read
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {big_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    for _ in range(4):  # idle keep-alive clients
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n" if big_path.endswith(".bin")
                  else b"GET /bytes/768 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        socks.append(s)
    for _ in range(2):  # header tricklers
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-a: 1\r\n")
        socks.append(s)
    return socks


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_same_states_as_real_apache(mpm, real_apache, server_factory):
    directives = {**DIRECTIVES[mpm], **COMMON}
    ours = server_factory(mpm=mpm, settings=directives)
    apache_port = real_apache(mpm, directives, files={"big.bin": b"x" * BIG})
    wait_for(lambda: ours.count_states()["_"] == 20, what="our 20 idle slots")
    socks = scenario(apache_port, "/big.bin") + scenario(ours.port, f"/bytes/{BIG}")
    try:
        want = EXPECTED[mpm]

        def counts(port):
            letters = status_auto(port)["Scoreboard"]
            return {k: letters.count(k) for k in "RWK"}

        a = wait_for(lambda: (c := counts(apache_port)) == want and c, timeout=15,
                     what=f"real Apache {mpm} at {want}")
        o = wait_for(lambda: (c := counts(ours.port)) == want and c, timeout=15, what=f"mpmcore {mpm} at {want}")
        assert a == o == want
        if mpm == "event":
            ours_auto = status_auto(ours.port)
            # ours are current (the truth); Apache's async counters lag until its queues are processed
            assert int(ours_auto["ConnsAsyncKeepAlive"]) == 4
            assert int(ours_auto["ConnsAsyncWriting"]) == 0
            assert int(status_auto(apache_port)["ConnsAsyncKeepAlive"]) <= 4
    finally:
        for s in socks:
            s.close()


def test_event_starts_a_child_beside_one_that_stopped_accepting(real_apache, server_factory):
    """One event child holds as many parked keep-alive connections as it may (ThreadsPerChild +
    idle x AsyncRequestWorkerFactor = 2 + 2 x 1): it stops accepting with its 2 threads idle. Apache
    does not count those as spare (event.c: ``!ps->not_accepting``) and starts a second child, which
    serves the next client; mpmcore must do the same."""
    directives = {"ServerLimit": 3, "ThreadsPerChild": 2, "MaxRequestWorkers": 6, "StartServers": 1,
                  "MinSpareThreads": 1, "MaxSpareThreads": 6, "AsyncRequestWorkerFactor": 1, "KeepAliveTimeout": 30}
    ours = server_factory(mpm="event", settings=directives)
    apache_port = real_apache("event", directives)
    socks: list[socket.socket] = []
    try:
        page = {apache_port: b"/index.html", ours.port: b"/"}
        for port in (apache_port, ours.port):
            assert status_auto(port)["Processes"] == "1"
            for _ in range(4):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"GET " + page[port] + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(s)[0] == 200
                socks.append(s)

        def processes(port: int) -> str | None:
            try:
                return status_auto(port)["Processes"]  # served by whichever child accepts
            except (OSError, AssertionError):
                return None
        for port, who in ((apache_port, "real Apache"), (ours.port, "mpmcore")):
            wait_for(lambda port=port: processes(port) == "2", timeout=15, what=f"{who}: a second child")
            extra = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(extra)
            extra.sendall(b"GET " + page[port] + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_response(extra)[0] == 200, who
    finally:
        for s in socks:
            s.close()
