"""A graceful restart (SIGUSR1) against a real Apache 2.4 and mpmcore, side by side, per MPM.

Both servers get the same directives and, at the same time, the same five clients: (a) headers
mid-way, (b) a POST body mid-way, (c) kept-alive idle, (d) a big reply being written to a reader
that does not read, (e) the same with a second request pipelined behind it. Then USR1 to each
master; the scoreboard letters of the old generation are polled until they reach what Apache
shows (docs/graceful-restart.md), and every client is finished and its outcome compared:
answered or not, and whether the server closed after it.
"""

from __future__ import annotations

import os
import signal
import socket

import apache_launcher
import pytest
from conftest import read_response, status_auto, wait_for

BIG = 16 * 1024 * 1024

# worker/event: one child holds every client (StartServers 1, ThreadsPerChild 8); prefork: one child each
DIRECTIVES = {
    "prefork": {"StartServers": 6, "MinSpareServers": 1, "MaxSpareServers": 10, "MaxRequestWorkers": 10},
    "worker": {"ServerLimit": 4, "ThreadLimit": 8, "ThreadsPerChild": 8, "MaxRequestWorkers": 32,
               "StartServers": 1, "MinSpareThreads": 1, "MaxSpareThreads": 32},
}
DIRECTIVES["event"] = DIRECTIVES["worker"]
COMMON = {"KeepAliveTimeout": 15, "Timeout": 60}

# What the clients get, per MPM: (answered, closed after) for b, c, d and e's second request.
# a differs in prefork only (below). A set lists outcomes Apache itself was seen to vary between.
OUTCOMES: dict[str, dict[str, tuple[bool, bool] | set[tuple[bool, bool]]]] = {
    "prefork": {"a": (True, True), "b": (True, True), "c": (True, True), "d": (True, True), "e2": (False, True)},
    "worker": {"a": (True, True), "b": (True, True), "c": (True, True), "d": (True, True), "e2": (False, True)},
    # event closes parked keep-alive connections at once. A request pipelined behind a big reply:
    # Apache 2.4 answered it in some runs and not in others (whether the child's stop reached the
    # connection before its reply's write completion ended), so either is Apache's behaviour.
    "event": {"a": (True, True), "b": (True, True), "c": (False, True), "d": (True, True),
              "e2": {(True, True), (False, True)}},
}


def busy_letters(port: int) -> dict[str, int]:
    """Counts of the letters that say what old slots do (the ?auto request itself is one W)."""
    letters = status_auto(port)["Scoreboard"]
    return {k: letters.count(k) for k in "RWKGL"}


def state_ok(mpm: str, c: dict[str, int], ours: bool) -> bool:
    """The old generation's letters after USR1, as Apache writes them (docs/graceful-restart.md)."""
    if mpm == "prefork":
        # the parent writes G into every busy child's slot; Apache's (a) child answered 400 at once
        # and shows L until it exits, ours goes on reading and shows G (apache-differences.md)
        return c["G"] == (5 if ours else 4) and c["R"] == c["K"] == 0 and c["W"] <= 1
    if mpm == "worker":
        # busy threads keep their own state; idle siblings go `.` (Apache: G or `.`, a race).
        # (b) is W in Apache (body read after the headers), R in ours: counted together
        return c["R"] + c["W"] == 5 and c["K"] == 1 and (ours is False or c["G"] == 0)
    # event: the child marks every slot G, idle threads leave (`.`), busy ones keep G
    return c["G"] == 4 and c["R"] == c["K"] == 0 and c["W"] <= 1


def open_clients(port: int, small: str, big: str) -> dict[str, socket.socket]:
    socks: dict[str, socket.socket] = {}
    a = socket.create_connection(("127.0.0.1", port), timeout=60)
    a.sendall(f"GET {small} HTTP/1.1\r\nHost: x\r\n".encode())
    b = socket.create_connection(("127.0.0.1", port), timeout=60)
    b.sendall(f"POST {small} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345".encode())
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    c.sendall(f"GET {small} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert read_response(c)[0] == 200
    socks.update(a=a, b=b, c=c)
    for name, extra in (("d", ""), ("e", f"GET {small} HTTP/1.1\r\nHost: x\r\n\r\n")):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(60)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {big} HTTP/1.1\r\nHost: x\r\n\r\n{extra}".encode())
        socks[name] = s
    return socks


def closed_after(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def try_response(s: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    try:
        return read_response(s)
    except (ConnectionError, TimeoutError):
        return None


def send_rest(socks: dict[str, socket.socket], small: str) -> None:
    """What a, b and c still had to send. Sent to both servers before either's replies are read, so
    that reading one server's 32 MiB does not run the other's keep-alive timeout down."""
    socks["a"].sendall(b"\r\n")
    socks["b"].sendall(b"67890")
    try:
        socks["c"].sendall(f"GET {small} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    except OSError:
        pass


def finish(socks: dict[str, socket.socket]) -> dict[str, tuple[bool, bool]]:
    out = {}
    for name in "abc":
        r = try_response(socks[name])
        out[name] = (r is not None, closed_after(socks[name]))
        if name == "a" and r is not None:
            out["a_status"] = (r[0] == 200, r[0] == 400)
    r = try_response(socks["d"])
    out["d"] = (r is not None and len(r[2]) == BIG, closed_after(socks["d"]))
    first = try_response(socks["e"])
    assert first is not None and len(first[2]) == BIG
    second = try_response(socks["e"])
    out["e2"] = (second is not None, closed_after(socks["e"]) if second is not None else True)
    return out


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_graceful_restart_like_real_apache(mpm, real_apache, server_factory):
    directives = {**DIRECTIVES[mpm], **COMMON}
    ours = server_factory(mpm=mpm, settings=directives)
    apache_port = real_apache(mpm, directives, files={"big.bin": b"x" * BIG})
    idle_before = 6 if mpm == "prefork" else 8
    wait_for(lambda: status_auto(apache_port)["Scoreboard"].count("_") >= idle_before - 1, timeout=15,
             what="Apache's children ready")
    wait_for(lambda: ours.count_states()["_"] >= idle_before, timeout=15, what="our children ready")
    servers = {"apache": (apache_port, "/index.html", "/big.bin", apache_launcher.read_pid(apache_port)),
               "ours": (ours.port, "/", f"/bytes/{BIG}", ours.ctl("status")["pid"])}
    socks = {who: open_clients(port, small, big) for who, (port, small, big, _) in servers.items()}
    try:
        for who, (port, *_rest) in servers.items():
            # event parks the kept-alive client (no slot): the others are in place
            wait_for(lambda port=port: ((c := busy_letters(port))["K"] >= 1 or mpm == "event") and c["W"] >= 2,
                     timeout=10,
                     what=f"{who}: every client in place")
        for _, (_, _, _, pid) in servers.items():
            os.kill(pid, signal.SIGUSR1)
        for who, (port, *_rest) in servers.items():
            wait_for(lambda port=port, who=who: state_ok(mpm, busy_letters(port), who == "ours"), timeout=10,
                     interval=0.1, what=f"{who} ({mpm}): the old generation's letters after USR1 "
                                        f"(last {busy_letters(port)})")
        for who in servers:
            send_rest(socks[who], servers[who][1])
        results = {who: finish(socks[who]) for who in servers}
    finally:
        for group in socks.values():
            for s in group.values():
                s.close()
    a, o = results["apache"], results["ours"]
    for case, want in OUTCOMES[mpm].items():
        if mpm == "prefork" and case == "a":
            continue
        allowed = want if isinstance(want, set) else {want}
        assert a[case] in allowed, f"Apache {mpm} {case}: {a[case]} (expected {want})"
        assert o[case] in allowed, f"mpmcore {mpm} {case}: {o[case]} (Apache {a[case]})"
    if mpm == "prefork":
        # the documented difference: Apache's child, interrupted in its header read by
        # AP_SIG_GRACEFUL, answers 400; ours finishes reading the request and answers it
        assert a["a_status"] == (False, True), a
        assert o["a_status"] == (True, False), o
    else:
        assert a["a_status"] == o["a_status"] == (True, False)
