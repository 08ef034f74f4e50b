"""``bench_peers.py --part idle``: N idle keep-alive connections parked beside wrk, under mpmcore
event, real Apache event and nginx, with the same clients.

For each server: ``rounds`` interleaved pairs (wrk alone; N idle keep-alive connections opened, each
having made one request and got its answer; wrk again beside them; the idle ones closed and drained),
the figures being the medians of the per-pair ratios. Memory per parked connection is the PSS of
the server's whole process tree with the idle connections open minus its PSS just before they were
opened, divided by the connections answered. The bench raises RLIMIT_NOFILE as far as it may before
starting the servers, which inherit it; the idle connections are held by helper processes of at
most PER_HOLDER connections each (this script with --hold), since one process may not hold 20,000
descriptors where the hard limit is 20,000. They bind 127.0.0.2-9, so that the ephemeral ports of
one source address are not the limit.
"""

from __future__ import annotations

import math
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench_peers import Running, THREADED_2x32, start_apache, start_mpmcore, start_nginx, uptime
from common import HEADER, fmt_row, tree_pss_kb, wait_until, wrk

NOFILE = 65536
PER_HOLDER = 9000


def raise_nofile(n: int = NOFILE) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(n, soft), max(n, hard)))
    except (ValueError, OSError):  # not root: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_idle(port: int, path: str, n: int, wait: float = 60.0) -> tuple[list[socket.socket], int]:
    """Open ``n`` connections, one request each, and count the answered ones."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.0.{2 + i % 8}", 0))
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, i)
        if i % 500 == 499:
            time.sleep(0.02)  # let the server accept (backlogs are 511 to 4096)
    answered, pending = 0, {}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and answered < n and sel.get_map():
        for key, ev in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if ev & selectors.EVENT_WRITE:
                try:
                    s.send(request)
                except OSError:
                    sel.unregister(s)
                    continue
                sel.modify(s, selectors.EVENT_READ, key.data)
                pending[key.data] = b""
            else:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                buf = pending[key.data] = pending[key.data] + data
                _head, sep, body = buf.partition(b"\r\n\r\n")
                if not data or (sep and len(body) >= 1024):
                    sel.unregister(s)
                    answered += 1 if data else 0
    sel.close()
    return socks, answered


def still_open(socks: list[socket.socket]) -> int:
    """How many idle connections the server has not closed (no EOF readable on them)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(0.5))
    sel.close()
    return len(socks) - closed


def hold_main(port: int, path: str, n: int) -> int:
    """--hold: open ``n`` idle connections, print how many were answered, then on each stdin line
    print how many are still open; close them all at EOF."""
    raise_nofile()
    socks, answered = open_idle(port, path, n)
    print(f"answered {answered}", flush=True)
    for _line in sys.stdin:
        print(f"open {still_open(socks)}", flush=True)
    for s in socks:
        s.close()
    return 0


class Holders:
    """The helper processes holding the idle connections (stopped by closing their stdin, then by
    pid if they do not exit)."""

    def __init__(self, port: int, path: str, n: int):
        k = max(1, math.ceil(n / PER_HOLDER))
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        self.procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--hold", str(port), path,
                                        str(m)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for m in sizes]
        self.answered = sum(int(self._line(p).split()[1]) for p in self.procs)

    @staticmethod
    def _line(p: subprocess.Popen[str]) -> str:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"idle-connection holder {p.pid} exited early (status {p.wait()})")
        return line

    def still_open(self) -> int:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("check\n")
            p.stdin.flush()
        return sum(int(self._line(p).split()[1]) for p in self.procs)

    def close(self) -> None:
        from mpmcore.procs import terminate
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                terminate(p, 10)


def established(port: int) -> int:
    return sum(1 for c in psutil.net_connections("tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def idle_one(r: Running, n: int, duration: int, rounds: int) -> dict[str, object]:
    port = int(r.extra["port"])  # type: ignore[call-overload]
    path = r.url.split(str(port), 1)[1]
    wrk(r.url, 64, 1)
    pairs = []
    for i in range(rounds):
        alone = wrk(r.url, 64, duration)
        before_kb, nprocs = tree_pss_kb(r.pid)
        holders = Holders(port, path, n)
        try:
            answered = holders.answered
            with_kb, _ = tree_pss_kb(r.pid)
            loaded = wrk(r.url, 64, duration)
            kept = holders.still_open()
        finally:
            holders.close()
        wait_until(lambda: established(port) <= 8, 60, f"{r.name}'s idle connections to close", 0.5)
        per_conn = (with_kb - before_kb) * 1024 / answered if answered else float("nan")
        pairs.append({"alone": alone, "with_idle": loaded, "answered": answered, "still_open_after": kept,
                      "pss_before_kb": before_kb, "pss_with_kb": with_kb, "processes": nprocs,
                      "bytes_per_connection": per_conn, "rps_ratio": loaded["rps"] / alone["rps"],
                      "p99_ratio": loaded.get("p99", 0) / alone["p99"] if alone.get("p99") else None})
        print(fmt_row(f"{r.name} alone, round {i + 1}", alone))
        print(fmt_row(f"{r.name} + {answered} idle, round {i + 1}", loaded))
        print(f"   {kept} of {answered} idle still open after the run; PSS {before_kb / 1024:.1f} -> "
              f"{with_kb / 1024:.1f} MiB in {nprocs} processes: {per_conn / 1024:.2f} KiB per connection")
    rps = statistics.median(p["rps_ratio"] for p in pairs)
    p99s = [p["p99_ratio"] for p in pairs if p["p99_ratio"] is not None]
    p99 = statistics.median(p99s) if p99s else float("nan")
    # the first pair's: freed memory stays in the processes' allocators, so later pairs start higher
    mem = pairs[0]["bytes_per_connection"]
    print(f"== {r.name}: with {n} idle, req/s {rps:.2f}x and p99 {p99:.2f}x of alone (medians; goal: within "
          f"20%), {mem / 1024:.2f} KiB per parked connection (first pair; goal < 10 KiB)")
    return {"rounds": pairs, "rps_ratio_median": rps, "p99_ratio_median": p99, "bytes_per_connection": mem}


def idle_part(n: int, duration: int, rounds: int) -> dict[str, object]:
    nofile = raise_nofile()
    print(f"== {n} idle keep-alive connections beside wrk -t1 -c64 -d{duration}s, {rounds} pairs per server "
          f"(RLIMIT_NOFILE {nofile}; {uptime()}) ==")
    print(HEADER)
    # 2 children x 64 threads; the accept rule must admit n/2 connections per child:
    # ThreadsPerChild + idle workers x AsyncRequestWorkerFactor
    factor = max(100, n // 2 // 32 + 20)
    settings: dict[str, object] = {**THREADED_2x32, "ThreadsPerChild": 64, "ThreadLimit": 64, "MaxRequestWorkers": 128,
                                   "MaxSpareThreads": 128, "KeepAliveTimeout": 60, "AsyncRequestWorkerFactor": factor,
                                   "ListenBacklog": 4096}
    starters = [("mpmcore event", lambda: start_mpmcore("event", settings)),
                ("Apache event", lambda: start_apache("event", settings)),
                ("nginx", lambda: start_nginx(conns=n + 2000))]
    out: dict[str, object] = {}
    for name, start in starters:
        r = start()
        try:
            out[name] = idle_one(r, n, duration, rounds)
        finally:
            r.stop()
    print(f"after: {uptime()}")
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--hold":
        sys.exit(hold_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
    sys.exit("usage: peers_idle.py --hold PORT PATH N (run by bench_peers.py --part idle)")
