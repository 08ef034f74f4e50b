"""Dashboard cost and latency with 4096 scoreboard slots and 10 browsers at 20 frames/s.

    ./dev.sh bench dashboard            (or: .venv/bin/python bench/bench_dashboard.py)

1. Starts `mpmlab dashboard` (its own process) with the embedded core under event with
   ServerLimit 64 x ThreadsPerChild 64 = 4096 worker slots, every child kept (MaxSpareThreads 4096),
   and a control token of its own in MPMLAB_TOKEN (sent with every API call; the pages open the
   URL with ?token=, as a user does).
2. Opens 10 pages in headless Chromium (/usr/bin/chromium), each on /ws/scoreboard at 20 frames/s,
   with an `io` traffic pattern running so the grid changes every frame.
3. CPU: the dashboard process's CPU time (psutil, user + system, its own threads only: the core and
   the traffic runner are separate processes) over a WINDOW-second window, as a share of one core.
   Printed beside the sampler's own share (time spent inside its ticks) and the frames it sent.
4. Latency: with the traffic stopped and the 10 pages still connected, a slow request
   (/sleep?ms=1500) is sent on a new connection; one page's JS records Date.now() when its grid
   first shows one more W cell. End-to-end = that moment - the send time (same clock, same host).

Targets (from the issue): CPU < 10% of one core, latency < 150 ms.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time

import psutil
from common import (  # bench/ is the script's directory, first on sys.path
    ARGS,
    CHROMIUM,
    ROOT,
    SLOTS_SETTINGS,
    TOKEN,
    api,
    start_dashboard,
    wait_until,
)

from mpmcore.procs import terminate


class WsReaders:
    """``n`` websocket clients on /ws/scoreboard that take every frame they are sent, in threads."""

    def __init__(self, base: str, n: int):
        import contextlib

        from websockets.sync.client import connect
        self.stack = contextlib.ExitStack()
        self.stop_event = threading.Event()
        self.counts = [0] * n
        self.t0 = time.monotonic()
        url = base.replace("http://", "ws://") + "/ws/scoreboard"
        try:
            self.conns = [self.stack.enter_context(connect(url, origin=base, max_size=None)) for _ in range(n)]
        except BaseException:  # close the ones already open
            self.stack.close()
            raise
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _read(self, i: int) -> None:
        ws = self.conns[i]
        while not self.stop_event.is_set():
            try:
                msg = ws.recv(timeout=1)
            except TimeoutError:
                continue
            except Exception:
                return
            if isinstance(msg, bytes):
                self.counts[i] += 1

    def stop(self) -> list[float]:
        secs = time.monotonic() - self.t0
        self.stop_event.set()
        for t in self.threads:
            t.join(5)
        self.stack.close()
        return [c / secs for c in self.counts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=10)
    ap.add_argument("--window", type=float, default=15.0, help="CPU measuring window, seconds")
    ap.add_argument("--trials", type=int, default=15, help="latency trials")
    ap.add_argument("--mpm", default="event", choices=["worker", "event"])
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    log = open(ROOT / "test-artifacts" / "bench-dashboard.log", "wb") if (ROOT / "test-artifacts").is_dir() else subprocess.DEVNULL
    dash, base, core_port = start_dashboard(["--mpm", args.mpm], SLOTS_SETTINGS, log)
    try:
        sb = wait_until(lambda: (s := api(base, "/api/scoreboard"))["state_counts"]["_"] >= 4000 and s, 180,
                  "4096 ready slots (64 children x 64 threads)")
        live = len(sb["scoreboard"]) - sb["state_counts"]["."]
        print(f"scoreboard: {len(sb['scoreboard'])} slots shown, {live} live, MPM {sb['mpm']}")
        proc = psutil.Process(dash.pid)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pages = []
            for _ in range(args.pages):
                pg = browser.new_page(viewport={"width": 1400, "height": 1000})
                pg.goto(f"{base}/?token={TOKEN}")  # sets the cookie, lands on / without ?token=
                pages.append(pg)
            for pg in pages:
                pg.wait_for_function("window.mpmlab && window.mpmlab.layout && window.mpmlab.layout.rows >= 64",
                                     timeout=30_000)
            # traffic that changes the grid every frame
            tid = api(base, "/api/traffic", {"pattern": "io", "params": {"rate": 300, "ms": 100, "duration": 120}})["id"]
            time.sleep(3)  # let the pattern ramp up before measuring (a measurement window, not a wait for state)
            # the sampler's counter is read right beside the process' CPU times, both around the same
            # window (the pages' frame counts, slow to read on a saturated box, outside it)
            f0 = [pg.evaluate("[window.mpmlab.frames, Date.now()]") for pg in pages]
            psutil.cpu_percent(interval=None)
            before = api(base, "/api/dashboard")["sampler"]
            c0, t0 = proc.cpu_times(), time.monotonic()
            time.sleep(args.window)
            c1, t1 = proc.cpu_times(), time.monotonic()
            after = api(base, "/api/dashboard")["sampler"]
            f1 = [pg.evaluate("[window.mpmlab.frames, Date.now()]") for pg in pages]
            cpu = ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0)
            sampler_share = (after["work_seconds"] - before["work_seconds"]) / (t1 - t0)
            fps = [(b[0] - a[0]) * 1000 / (b[1] - a[1]) for a, b in zip(f0, f1, strict=True)]
            load = psutil.cpu_percent(interval=None)
            print(f"dashboard process CPU with {args.pages} pages, traffic running: {cpu * 100:.1f}% of one core "
                  f"(sampler+encoder alone, thread CPU time: {sampler_share * 100:.1f}%, {after['tick_ms_avg']:.2f} ms per tick)")
            print(f"whole machine during the window: {load:.0f}% of {psutil.cpu_count()} cores busy")
            print(f"frames received per page: {statistics.mean(fps):.1f}/s (min {min(fps):.1f}, max {max(fps):.1f}); "
                  f"dropped by the latest-wins queues so far: {after['scoreboard']['dropped']}")
            api(base, f"/api/traffic/{tid}", method="DELETE")
            pg = pages[0]
            pg.wait_for_function("window.mpmlab.counts()['W'] === 0", timeout=30_000)
            idle_c0, idle_t0 = proc.cpu_times(), time.monotonic()
            time.sleep(5)
            idle_c1, idle_t1 = proc.cpu_times(), time.monotonic()
            idle_cpu = ((idle_c1.user - idle_c0.user) + (idle_c1.system - idle_c0.system)) / (idle_t1 - idle_t0)
            print(f"dashboard process CPU with {args.pages} pages, no traffic: {idle_cpu * 100:.1f}% of one core")

            # Latency: ten Chromium renderers drawing 4096 cells 20 times a second keep both cores of
            # the 2-core bench box at 100%, which measures the box, not the dashboard. So one page
            # measures, and nine light websocket clients take the other nine browsers' frames: the
            # server still feeds ten clients at 20 frames/s.
            for other in pages[1:]:
                other.close()
            readers = WsReaders(base, args.pages - 1)
            try:
                time.sleep(2)  # let the box settle after closing the renderers (not a wait for a state)
                lat: list[float] = []
                split: list[tuple[float, float]] = []
                for _ in range(args.trials):
                    pg.wait_for_function("window.mpmlab.counts()['W'] === 0", timeout=30_000)
                    pg.evaluate("""() => { const m = window.mpmlab; m._seenW = null;
                        const base = m.counts()['W'];
                        const cb = (f) => { if (m._seenW === null && f.counts['W'] > base) { m._seenW = Date.now(); m._seenT = f.t; } };
                        m.on('frame', cb); }""")
                    s = socket.create_connection(("127.0.0.1", core_port))
                    sent = time.time() * 1000
                    s.sendall(f"GET /sleep?ms=1500 HTTP/1.1\r\nHost: 127.0.0.1:{core_port}\r\nConnection: close\r\n\r\n".encode())
                    pg.wait_for_function("window.mpmlab._seenW !== null", timeout=30_000)
                    seen, built = pg.evaluate("[window.mpmlab._seenW, window.mpmlab._seenT]")
                    lat.append(seen - sent)
                    split.append((built - sent, seen - built))
                    s.recv(65536)
                    s.close()
            finally:  # its threads and sockets, also when a trial failed
                ws_fps = readers.stop()
            lat.sort()
            p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
            print(f"meanwhile {len(ws_fps)} websocket clients received {statistics.mean(ws_fps):.1f} frames/s each "
                  f"(min {min(ws_fps):.1f})" if ws_fps else "no other websocket clients")
            print(f"state change -> browser (W cell seen), 1 page + {len(ws_fps)} websocket clients, {len(lat)} trials: "
                  f"median {statistics.median(lat):.0f} ms, "
                  f"p95 {p95:.0f} ms, max {max(lat):.0f} ms, min {min(lat):.0f} ms")
            print(f"  of which send -> frame built by the sampler (server: accept, read, W, next tick): median "
                  f"{statistics.median(a for a, _ in split):.0f} ms; frame built -> seen in the page (encode, "
                  f"websocket, decode): median {statistics.median(b for _, b in split):.0f} ms, max {max(b for _, b in split):.0f} ms")
            print(f"targets: CPU < 10% -> {'PASS' if cpu < 0.10 else 'FAIL'}; latency < 150 ms -> "
                  f"{'PASS' if max(lat) < 150 else 'FAIL (max)' if statistics.median(lat) < 150 else 'FAIL'}")
            browser.close()
    finally:
        terminate(dash, 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
