"""Benchmark of the traffic generator (mpmcore.traffic), against peers measured in the same run.

1. Throughput: requests/s the generator drives alone against real Apache (event MPM, started by
   tests/apache_launcher.py on a free loopback port): steady closed model, keep-alive,
   64 connections, /index.html; then wrk (1 thread, 64 connections) on the same server. Prints
   the ratio (target >= 0.5x wrk: the generator is one Python process on one core).
2. Capacity: 10,000 concurrent slowloris connections held against a sink server (a uvloop
   process that accepts and holds; Apache cannot hold 10k connections with its defaults), and
   the runner's RSS / PSS measured with psutil (target < 1 GiB).

    .venv/bin/python bench/bench_traffic.py [--seconds 5] [--connections 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # apache_launcher.py, the launcher the tests use too

import apache_launcher  # noqa: E402
from common import free_port, stop_apache  # noqa: E402  (bench/ is the script's directory)

from mpmcore.procs import terminate  # noqa: E402
from mpmcore.traffic import RunInfo, TrafficRunner  # noqa: E402


# -- sink server (run as a subprocess: bench_traffic.py --sink PORT) ---------------------------
def sink_main(port: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    class Hold(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            pass  # hold: never answer

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Hold, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Exit with the parent (the benchmark) whatever happens.
        while not stop.is_set() and os.getppid() != 1:
            try:
                await asyncio.wait_for(stop.wait(), 1)
            except TimeoutError:
                pass
        server.close()

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


# -- throughput --------------------------------------------------------------------------------
async def generator_rps(runner: TrafficRunner, url: str, seconds: float, connections: int) -> RunInfo:
    async with await runner.client() as tc:
        pid = await tc.start("steady", target=url, path="/index.html", clients=connections,
                             duration=seconds)
        async for f in tc.frames():
            if any(p.id == pid and p.state == "finished" for p in f.patterns):
                break
        return await tc.get(pid)


def wrk_rps(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url], capture_output=True,
                         text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise SystemExit(f"could not parse wrk output:\n{out}")
    return float(m.group(1))


def bench_throughput(seconds: float, connections: int, rounds: int) -> None:
    missing = [name for name in ("apache2", "wrk")
               if not (shutil.which(name) or os.access(f"/usr/sbin/{name}", os.X_OK))]
    if missing:
        raise SystemExit(f"throughput needs Debian's {' and '.join(missing)}: run `./dev.sh setup` as root "
                         f"(it installs them), or pass --skip-throughput")
    port = free_port()
    url = f"http://127.0.0.1:{port}/index.html"
    try:
        apache_launcher.start("event", port, timeout=60)
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200
        wrk_rps(url, 2, connections)  # warm-up: Apache spawns its children
        runner = TrafficRunner().start()
        try:
            print(f"throughput: real Apache event on :{port}, {connections} keep-alive connections, "
                  f"/index.html, {seconds:g}s per run, {rounds} rounds alternating")
            gens, wrks = [], []
            for i in range(rounds):
                s = asyncio.run(generator_rps(runner, f"http://127.0.0.1:{port}/", seconds, connections))
                t = s.total
                gens.append(t.rps)
                print(f"  round {i + 1}: mpmcore.traffic {t.rps:10.0f} req/s  (errors {t.errors_total}, "
                      f"reconnects {t.reconnects}, p50 {t.latency_ms.p50:.2f} ms, "
                      f"p99 {t.latency_ms.p99:.2f} ms)")
                w = wrk_rps(url, seconds, connections)
                wrks.append(w)
                print(f"  round {i + 1}: wrk -t1           {w:10.0f} req/s")
        finally:
            runner.close()
        g, w = sorted(gens)[len(gens) // 2], sorted(wrks)[len(wrks) // 2]
        print(f"  median: mpmcore.traffic {g:.0f} req/s, wrk {w:.0f} req/s, ratio {g / w:.2f}x "
              f"(target >= 0.50x)")
    finally:  # also after a failed start: whatever Apache did start is stopped, its files removed
        stop_apache(port)


# -- capacity ----------------------------------------------------------------------------------
async def hold(runner: TrafficRunner, url: str, n: int) -> None:
    proc = psutil.Process(runner.pid)
    base = proc.memory_full_info()
    async with await runner.client() as tc:
        t0 = time.monotonic()
        pid = await tc.start("slowloris", target=url, connections=n, interval=10, duration=600)
        deadline = time.monotonic() + 120
        info = None
        while time.monotonic() < deadline:
            info = await tc.get(pid)
            if info.active_connections >= n:
                break
            await asyncio.sleep(0.25)
        ramp = time.monotonic() - t0
        assert info and info.active_connections >= n, info and info.active_connections
        await asyncio.sleep(11)  # one header line per connection sent meanwhile
        info = await tc.get(pid)
        mem = proc.memory_full_info()
        cpu = proc.cpu_percent(interval=2.0)
        print(f"capacity: {info.active_connections} slowloris connections held "
              f"(opened in {ramp:.1f}s, errors {info.total.errors_total}, "
              f"reconnects {info.total.reconnects}, bytes out {info.total.bytes_out})")
        print(f"  runner RSS {mem.rss / 2**20:.0f} MiB, PSS {mem.pss / 2**20:.0f} MiB "
              f"(idle runner: RSS {base.rss / 2**20:.0f} MiB, PSS {base.pss / 2**20:.0f} MiB); "
              f"{(mem.pss - base.pss) / n / 1024:.1f} KiB per connection; CPU while holding {cpu:.1f}%; "
              f"target < 1024 MiB: {'ok' if mem.pss < 2**30 and mem.rss < 2**30 else 'FAILED'}")
        summary = await tc.stop(pid)
        print(f"  stopped: active connections {summary.active_connections}")


def bench_capacity(n: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 200:
        print(f"skipping capacity: RLIMIT_NOFILE hard limit {hard} < {n + 200}")
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by runner and sink
    port = free_port()
    sink = subprocess.Popen([sys.executable, __file__, "--sink", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "ready"
        with TrafficRunner() as runner:
            asyncio.run(hold(runner, f"http://127.0.0.1:{port}/", n))
    finally:
        terminate(sink, 10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--connections", type=int, default=10_000, help="slow connections to hold")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink:
        sink_main(args.sink)
        return 0
    print(f"host: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if not args.skip_throughput:
        bench_throughput(args.seconds, args.clients, args.rounds)
    if not args.skip_capacity:
        bench_capacity(args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
