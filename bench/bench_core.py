"""mpmcore's three MPMs against gunicorn in the same run, with wrk on loopback.

    ./dev.sh bench core [--duration 10] [--only throughput|idle|memory] [--rounds 3]

1. Throughput: keep-alive, 1 KiB reply, 64 connections.
   - mpmcore prefork (64 children) vs gunicorn sync (2 workers, one per core: its best setting here).
   - mpmcore worker and event (2 children x 32 threads) vs gunicorn gthread (2 workers x 32 threads).
2. Idle keep-alive capacity (2 children x 64 threads): 5000 idle keep-alive connections open, then
   the same wrk run; event's req/s and p99 should stay within 20% of its figures without them
   (median of --rounds interleaved pairs). worker's beside it.
3. Memory (PSS, whole process tree): prefork with 64 children vs worker/event with 64 threads.
Prints ratios against the peer measured in the same run; tests never assert speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HEADER, PY, Proc, fmt_row, free_port, mpmlab, wait_children, wait_until, wrk

from mpmcore.sources.attach import parse_auto

PREFORK_64 = {"StartServers": 64, "MinSpareServers": 64, "MaxSpareServers": 128, "MaxRequestWorkers": 64,
              "ServerLimit": 64, "MaxKeepAliveRequests": 0}
THREADED_2x32 = {"StartServers": 2, "ServerLimit": 2, "ThreadsPerChild": 32, "ThreadLimit": 32,
                 "MaxRequestWorkers": 64, "MinSpareThreads": 1, "MaxSpareThreads": 64, "MaxKeepAliveRequests": 0}
IDLE_CONNECTIONS = 5000


def gunicorn(worker_class: str, port: int, workers: int, threads: int = 1) -> Proc:
    args = [PY, "-m", "gunicorn", "--chdir", "bench", "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "-k", worker_class, "--log-level", "warning", "--keep-alive", "5"]
    if threads > 1:
        args += ["--threads", str(threads)]
    return Proc(args + ["wsgi_peer:app"], port)


def throughput(duration: int) -> dict:
    rows = {}
    print("\n== Throughput: wrk -t1 -c64 keep-alive, 1 KiB reply ==")
    print(HEADER)
    port = free_port()
    with mpmlab("prefork", port, PREFORK_64):
        wait_children(port, 64)
        rows["mpmcore prefork (64 children)"] = wrk(f"http://127.0.0.1:{port}/bytes/1024", 64, duration)
    port = free_port()
    with gunicorn("sync", port, 2):
        rows["gunicorn sync (2 workers)"] = wrk(f"http://127.0.0.1:{port}/", 64, duration)
    for mpm in ("worker", "event"):
        port = free_port()
        with mpmlab(mpm, port, THREADED_2x32):
            wait_children(port, 64)
            rows[f"mpmcore {mpm} (2 x 32 threads)"] = wrk(f"http://127.0.0.1:{port}/bytes/1024", 64, duration)
    port = free_port()
    with gunicorn("gthread", port, 2, 32):
        rows["gunicorn gthread (2 x 32 threads)"] = wrk(f"http://127.0.0.1:{port}/", 64, duration)
    for name, r in rows.items():
        print(fmt_row(name, r))
    pre, sync = rows["mpmcore prefork (64 children)"]["rps"], rows["gunicorn sync (2 workers)"]["rps"]
    gth = rows["gunicorn gthread (2 x 32 threads)"]["rps"]
    ratios = {"prefork / gunicorn sync": pre / sync,
              "worker / gunicorn gthread": rows["mpmcore worker (2 x 32 threads)"]["rps"] / gth,
              "event / gunicorn gthread": rows["mpmcore event (2 x 32 threads)"]["rps"] / gth}
    for k, v in ratios.items():
        print(f"ratio {k}: {v:.2f}x (target >= 1.5x)")
    return {"rows": rows, "ratios": ratios}


def open_idle(port: int, n: int, wait: float = 10.0) -> tuple[list[socket.socket], int]:
    """Open ``n`` connections, send one request on each, and count the answered ones (the others
    wait in the server's backlog: worker has no thread for them)."""
    socks, sel = [], selectors.DefaultSelector()
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, i)
        if i % 500 == 499:
            time.sleep(0.05)  # let the server accept; the backlog is 511
    answered = 0
    pending = {}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and answered < n:
        for key, ev in sel.select(0.2):
            s = key.fileobj
            if ev & selectors.EVENT_WRITE:
                try:
                    s.send(b"GET /bytes/16 HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    sel.unregister(s)
                    continue
                sel.modify(s, selectors.EVENT_READ, key.data)
                pending[key.data] = b""
            else:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                buf = pending[key.data] = pending[key.data] + data
                _head, sep, body = buf.partition(b"\r\n\r\n")
                if not data or (sep and len(body) >= 16):
                    sel.unregister(s)
                    answered += 1 if data else 0
    sel.close()
    return socks, answered


def _parked(port: int) -> int:
    """ConnsAsyncKeepAlive from the server's own /server-status?auto (-1 when it has none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server-status?auto", timeout=10) as r:
        return int(parse_auto(r.read().decode())[1].get("ConnsAsyncKeepAlive", -1))


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def idle_capacity(duration: int, rounds: int) -> dict:
    """event: ``rounds`` interleaved pairs (wrk alone, then wrk with the idle connections open, then
    close them and wait until none is parked), so that the machine's drift between runs falls on both
    sides; the ratios are per pair, the figure is their median. worker: one pair (it answers nothing
    with the idle connections open, whatever the noise)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = {}
    print(f"\n== Idle keep-alive capacity: {IDLE_CONNECTIONS} idle keep-alive connections + wrk -c64, "
          f"2 x 64 threads ==")
    print(HEADER)
    for mpm in ("event", "worker"):
        # 2 x 64 threads for 64 active connections: enough workers that event never runs out (when
        # it does, it closes its whole keep-alive queue, as Apache's does, and the idle connections
        # would be gone for the rest of the run); AsyncRequestWorkerFactor lets it accept them all
        settings = {**THREADED_2x32, "ThreadsPerChild": 64, "ThreadLimit": 64, "MaxRequestWorkers": 128,
                    "MaxSpareThreads": 128, "KeepAliveTimeout": 60, "AsyncRequestWorkerFactor": 100}
        port = free_port()
        pairs = []
        with mpmlab(mpm, port, settings):
            wait_children(port, 128)
            for r in range(rounds if mpm == "event" else 1):
                base = wrk(f"http://127.0.0.1:{port}/bytes/1024", 64, duration)
                socks, answered = open_idle(port, IDLE_CONNECTIONS)
                loaded = wrk(f"http://127.0.0.1:{port}/bytes/1024", 64, duration)
                # still parked at the end? (event closes its whole keep-alive queue when its workers
                # ran out: then the idle connections were not there for the whole run)
                parked_after = _parked(port) if mpm == "event" else None
                for s in socks:
                    s.close()
                if mpm == "event":  # the next "alone" starts with none parked
                    wait_until(lambda port=port: _parked(port) <= 0, 30, "parked connections to drain")
                print(fmt_row(f"mpmcore {mpm} alone, round {r + 1}", base))
                print(fmt_row(f"mpmcore {mpm} + {answered} idle, round {r + 1}", loaded))
                pairs.append({"alone": base, "with_idle": loaded, "idle_answered": answered,
                              "parked_after": parked_after, "rps_ratio": loaded["rps"] / base["rps"],
                              "p99_ratio": (loaded["p99"] / base["p99"]
                                            if loaded.get("p99") and base.get("p99") else None)})
        rps = [p["rps_ratio"] for p in pairs]
        p99 = [p["p99_ratio"] for p in pairs if p["p99_ratio"] is not None]
        out[mpm] = {"rounds": pairs, "rps_ratio_median": statistics.median(rps),
                    "p99_ratio_median": statistics.median(p99) if p99 else None}
        if mpm == "event":
            p99_median = out[mpm]["p99_ratio_median"]
            p99_median = "n/a" if p99_median is None else f"{p99_median:.2f}"
            print(f"  event: req/s with idle connections = {', '.join(f'{x:.2f}' for x in rps)} x alone, "
                  f"median {out[mpm]['rps_ratio_median']:.2f}; p99 = {', '.join(f'{x:.2f}' for x in p99) or 'n/a'} x "
                  f"alone, median {p99_median} (target: within 20%); still parked "
                  f"after each run: {[p['parked_after'] for p in pairs]}")
        else:
            print(f"  worker: req/s with idle connections = {rps[0]:.2f} x alone")
    return out


def memory() -> dict:
    out = {}
    print("\n== Memory (PSS of the whole process tree, after a short warm-up) ==")
    for mpm, settings in (("prefork", PREFORK_64), ("worker", THREADED_2x32), ("event", THREADED_2x32)):
        port = free_port()
        with mpmlab(mpm, port, settings) as p:
            wait_children(port, 64)
            wrk(f"http://127.0.0.1:{port}/bytes/1024", 64, 3)
            mb, nprocs = p.tree_pss_mb()
        out[mpm] = {"pss_mb": mb, "processes": nprocs}
        print(f"mpmcore {mpm:<8} 64 slots: {mb:8.1f} MB PSS in {nprocs} processes")
    print(f"prefork / event memory: {out['prefork']['pss_mb'] / out['event']['pss_mb']:.1f}x")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--only", choices=["throughput", "idle", "memory"])
    ap.add_argument("--rounds", type=_positive_int, default=3, help="interleaved alone / with-idle pairs for event")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    results = {}
    if args.only in (None, "throughput"):
        results["throughput"] = throughput(args.duration)
    if args.only in (None, "idle"):
        results["idle"] = idle_capacity(args.duration, args.rounds)
    if args.only in (None, "memory"):
        results["memory"] = memory()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
