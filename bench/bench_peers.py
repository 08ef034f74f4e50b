"""mpmcore's three MPMs beside real Apache under each MPM, nginx, uvicorn and gunicorn, in one run.

    ./dev.sh bench peers [--duration 5] [--rounds 3] [--only event,worker,...] [--json FILE]
    ./dev.sh bench peers --part idle [--idle 20000]      # idle keep-alive connections under event
    ./dev.sh bench peers --part breakdown                # per-request costs, in-process (ns)
    ./dev.sh bench peers --part profile --mpm event      # py-spy on one child under wrk

throughput (default): every server is started first (same slot budget: prefork 64 children, worker
and event 2 children x 32 threads, MaxKeepAliveRequests unlimited), then ``--rounds`` rounds of
``wrk --latency -t1 -c64 -d{duration}s`` on a 1 KiB keep-alive reply, the servers alternating within
each round (the order rotates each round), so that the machine's drift falls on every target. Prints
req/s, p50/p99 per round, the medians, and the issue-13 ratios as the median of per-round ratios.

Peers: real Apache 2.4 (tests/apache_launcher.py, a static 1 KiB file), nginx (2 workers, the same
file), uvicorn (2 workers, httptools + uvloop, bench/asgi_peer.py), gunicorn gthread (2 x 32 threads,
bench/wsgi_peer.py). Every process is stopped by its pid; loopback only; tests never assert speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from common import (  # noqa: E402
    HEADER,
    PY,
    Proc,
    apache_launcher,
    fmt_row,
    free_port,
    mpmlab,
    stop_apache,
    wait_children,
    wait_port,
    wrk,
)

BODY = b"x" * 1024
PREFORK_64 = {"StartServers": 64, "MinSpareServers": 64, "MaxSpareServers": 128, "MaxRequestWorkers": 64,
              "ServerLimit": 64, "MaxKeepAliveRequests": 0}
THREADED_2x32 = {"StartServers": 2, "ServerLimit": 2, "ThreadsPerChild": 32, "ThreadLimit": 32,
                 "MaxRequestWorkers": 64, "MinSpareThreads": 1, "MaxSpareThreads": 64, "MaxKeepAliveRequests": 0}


@dataclass
class Running:
    name: str
    url: str
    pid: int  # the master's: its process tree is the server
    stop: Callable[[], None]
    extra: dict[str, object] = field(default_factory=dict)


def directives(settings: dict[str, object]) -> str:
    return "".join(f"{k} {v}\n" for k, v in settings.items())


# -- the servers -------------------------------------------------------------------------------
def start_mpmcore(mpm: str, settings: dict[str, object] | None = None) -> Running:
    port = free_port()
    settings = settings or (PREFORK_64 if mpm == "prefork" else THREADED_2x32)
    p = mpmlab(mpm, port, settings)
    try:
        slots = int(settings["MaxRequestWorkers"])  # type: ignore[call-overload]
        wait_children(port, slots)
    except BaseException:
        p.stop()
        raise
    return Running(f"mpmcore {mpm}", f"http://127.0.0.1:{port}/bytes/1024", p.p.pid, p.stop, {"port": port})


def start_apache(mpm: str, settings: dict[str, object] | None = None, extra: str = "") -> Running:
    port = free_port()
    settings = settings or (PREFORK_64 if mpm == "prefork" else THREADED_2x32)
    try:
        pid = apache_launcher.start(mpm, port, directives(settings) + extra, timeout=60)
        (apache_launcher.apache_dir(port) / "htdocs" / "1k.bin").write_bytes(BODY)
        wait_port(port, "/1k.bin")
        if pid is None:
            raise SystemExit(f"Apache {mpm} on :{port} wrote no pid file")
    except BaseException:
        stop_apache(port)
        raise
    return Running(f"Apache {mpm}", f"http://127.0.0.1:{port}/1k.bin", pid, lambda: stop_apache(port),
                   {"port": port})


NGINX_CONF = """daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
user www-data;
events {{ worker_connections {conns}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {d}/htdocs; }}
}}
"""


def start_nginx(conns: int = 4096) -> Running:
    port = free_port()
    d = Path(tempfile.mkdtemp(prefix="mpmlab-bench-nginx-"))
    d.chmod(0o755)
    (d / "htdocs").mkdir()
    (d / "htdocs" / "1k.bin").write_bytes(BODY)
    conf = d / "nginx.conf"
    nofile = min(conns * 2 + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    conf.write_text(NGINX_CONF.format(d=d, port=port, conns=conns, nofile=nofile))
    try:
        p = Proc([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(d), "-c", str(conf)], port, "/1k.bin")
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise

    def stop() -> None:
        try:
            p.stop()
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return Running("nginx", f"http://127.0.0.1:{port}/1k.bin", p.p.pid, stop, {"port": port})


def start_uvicorn() -> Running:
    port = free_port()
    p = Proc([PY, "-m", "uvicorn", "--app-dir", "bench", "--host", "127.0.0.1", "--port", str(port),
              "--workers", "2", "--http", "httptools", "--loop", "uvloop", "--lifespan", "off",
              "--log-level", "warning", "--no-access-log", "asgi_peer:app"], port)
    return Running("uvicorn", f"http://127.0.0.1:{port}/", p.p.pid, p.stop, {"port": port})


def start_gunicorn() -> Running:
    port = free_port()
    p = Proc([PY, "-m", "gunicorn", "--chdir", "bench", "-b", f"127.0.0.1:{port}", "-w", "2", "-k", "gthread",
              "--threads", "32", "--log-level", "warning", "--keep-alive", "5", "wsgi_peer:app"], port)
    return Running("gunicorn gthread", f"http://127.0.0.1:{port}/", p.p.pid, p.stop, {"port": port})


STARTERS: dict[str, Callable[[], Running]] = {
    "prefork": lambda: start_mpmcore("prefork"),
    "worker": lambda: start_mpmcore("worker"),
    "event": lambda: start_mpmcore("event"),
    "apache-prefork": lambda: start_apache("prefork"),
    "apache-worker": lambda: start_apache("worker"),
    "apache-event": lambda: start_apache("event"),
    "nginx": start_nginx,
    "uvicorn": start_uvicorn,
    "gunicorn": start_gunicorn,
}
LABELS = {
    "prefork": "mpmcore prefork (64 children)", "worker": "mpmcore worker (2 x 32 threads)",
    "event": "mpmcore event (2 x 32 threads)", "apache-prefork": "Apache prefork (64 children)",
    "apache-worker": "Apache worker (2 x 32 threads)", "apache-event": "Apache event (2 x 32 threads)",
    "nginx": "nginx (2 workers)", "uvicorn": "uvicorn (2 workers, httptools+uvloop)",
    "gunicorn": "gunicorn gthread (2 x 32 threads)",
}
# (numerator, denominator, target): the ratios
RATIOS = [("event", "worker", 0.95), ("event", "uvicorn", 0.5), ("event", "apache-event", 0.5),
          ("prefork", "gunicorn", 1.5), ("worker", "gunicorn", 1.5), ("event", "gunicorn", 1.5)]


def uptime() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f} ({os.cpu_count()} cores)"


def start_all(names: list[str]) -> dict[str, Running]:
    running: dict[str, Running] = {}
    try:
        for n in names:
            running[n] = STARTERS[n]()
    except BaseException:
        stop_all(running)
        raise
    return running


def stop_all(running: dict[str, Running]) -> None:
    for r in running.values():
        try:
            r.stop()
        except Exception as e:  # stop the others whatever happened to this one
            print(f"stopping {r.name}: {e}", file=sys.stderr)


def throughput(names: list[str], duration: int, rounds: int) -> dict[str, object]:
    print(f"== Throughput: wrk --latency -t1 -c64 -d{duration}s keep-alive, 1 KiB reply, {rounds} rounds "
          f"interleaved ==")
    print(f"before: {uptime()}")
    running = start_all(names)
    per_round: list[dict[str, dict[str, object]]] = []
    try:
        for n in names:  # warm-up: children spawned, code paths hot
            wrk(running[n].url, 64, 1)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            rows = {n: wrk(running[n].url, 64, duration) for n in order}
            per_round.append(rows)
            print(f"-- round {r + 1} ({uptime()})")
            print(HEADER)
            for n in names:
                print(fmt_row(LABELS[n], rows[n]))
    finally:
        stop_all(running)
    print(f"\n-- medians of {rounds} rounds ({uptime()})")
    print(HEADER)
    med: dict[str, dict[str, object]] = {}
    for n in names:
        vals = [rd[n] for rd in per_round]
        med[n] = {"rps": statistics.median(v["rps"] for v in vals),
                  "p50": statistics.median(v.get("p50", 0) for v in vals),
                  "p99": statistics.median(v.get("p99", 0) for v in vals),
                  "errors": "; ".join(sorted({str(v["errors"]) for v in vals})),
                  "non2xx": sum(int(v["non2xx"]) for v in vals)}
        print(fmt_row(LABELS[n], med[n]))
    ratios = {}
    for a, b, target in RATIOS:
        if a in names and b in names:
            per = [rd[a]["rps"] / rd[b]["rps"] if rd[b]["rps"] else float("inf") for rd in per_round]
            m = statistics.median(per)
            ratios[f"{a}/{b}"] = {"per_round": per, "median": m, "target": target}
            print(f"ratio {a}/{b}: {m:.2f}x (rounds {', '.join(f'{x:.2f}' for x in per)}; target >= "
                  f"{target}x: {'met' if m >= target else 'NOT met'})")
    return {"rounds": per_round, "medians": med, "ratios": ratios, "load_after": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["throughput", "idle", "breakdown", "profile"], default="throughput")
    ap.add_argument("--mpm", choices=["prefork", "worker", "event"], default="event", help="--part profile")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help=f"comma-separated targets among {','.join(STARTERS)}")
    ap.add_argument("--idle", type=int, default=20000, help="idle keep-alive connections (--part idle)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    if args.rounds < 1 or args.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    names = list(STARTERS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}: choose among {', '.join(STARTERS)}")
    t0 = time.monotonic()
    if args.part == "throughput":
        results = throughput(names, args.duration, args.rounds)
    elif args.part == "idle":
        from peers_idle import idle_part
        results = idle_part(args.idle, args.duration, args.rounds)
    elif args.part == "breakdown":
        from breakdown import breakdown
        results = breakdown()
    else:
        from profile_child import profile
        results = profile(args.mpm, args.duration)
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
