"""What the record button costs the dashboard: a live 4,096-slot core recorded at 10 frames/s.

    .venv/bin/python bench/bench_record.py [--window 10] [--pairs 2]

1. Starts `mpmlab dashboard` (its own process) with the embedded core under event with
   ServerLimit 64 x ThreadsPerChild 64 = 4096 worker slots (as bench/bench_dashboard.py), a run
   store of its own in a temporary directory (--runs-db), no browser.
2. Starts an `io` traffic pattern (300 req/s) so that the grid changes every frame, so the recorder
   stores ~10 frames a second, its most.
3. Measures the dashboard process's CPU time (psutil, user + system; the core and the traffic
   runner are other processes) over WINDOW seconds not recording, then WINDOW seconds recording,
   PAIRS times interleaved (off, on, off, on), and prints the difference as a share of one core,
   the frames and samples recorded, and the store's growth extrapolated to 10 minutes.

Target (from the issue): recording costs < 5% of one core; a 10-minute recording of 4,096 slots
well under 100 MB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import (  # bench/ is the script's directory, first on sys.path
    SLOTS_SETTINGS,
    api,
    start_dashboard,
    wait_until,
)

from mpmcore.procs import terminate


def cpu_share(proc: psutil.Process, seconds: float) -> float:
    c0, t0 = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)  # the measuring window itself
    c1, t1 = proc.cpu_times(), time.monotonic()
    return ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=10.0, help="CPU measuring window, seconds")
    ap.add_argument("--pairs", type=int, default=2, help="off/on window pairs")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mpmlab-bench-record-"))
    db = tmp / "runs.sqlite3"
    log = open(tmp / "dashboard.log", "wb")
    dash, base, _ = start_dashboard(["--mpm", "event", "--runs-db", str(db)], SLOTS_SETTINGS, log)
    try:
        wait_until(lambda: api(base, "/api/scoreboard")["state_counts"]["_"] >= 4000, 180,
                   "4096 ready slots (64 children x 64 threads)", interval=0.5)
        proc = psutil.Process(dash.pid)
        tid = api(base, "/api/traffic", {"pattern": "io", "params": {"rate": 300, "ms": 100, "duration": 600}})["id"]
        time.sleep(3)  # let the pattern ramp up before measuring (a measurement window, not a wait for state)
        off, on = [], []
        frames = samples = 0
        recorded = 0.0
        for _ in range(args.pairs):
            off.append(cpu_share(proc, args.window))
            api(base, "/api/record", {})
            time.sleep(1)  # the recorder's first hand-over, outside the window
            r0 = api(base, "/api/record")
            on.append(cpu_share(proc, args.window))
            r1 = api(base, "/api/record")
            frames += r1["frames"] - r0["frames"]
            samples += r1["samples"] - r0["samples"]
            recorded += r1["seconds"] - r0["seconds"]
            api(base, "/api/record/stop", {})
        api(base, f"/api/traffic/{tid}", method="DELETE")
        size = db.stat().st_size + sum(p.stat().st_size for p in tmp.glob("runs.sqlite3-*"))
        total_s = sum(r["ended_at"] - r["started_at"] for r in api(base, "/api/runs"))
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(f"dashboard process CPU, io traffic, not recording: {', '.join(f'{x * 100:.1f}%' for x in off)} "
              f"(median {m_off * 100:.1f}%)")
        print(f"dashboard process CPU, io traffic, recording:     {', '.join(f'{x * 100:.1f}%' for x in on)} "
              f"(median {m_on * 100:.1f}%)")
        print(f"recording costs {100 * (m_on - m_off):.1f}% of one core (target < 5%)")
        print(f"recorded {frames / recorded:.1f} frames/s and {samples / recorded:.2f} samples/s of a 4096-slot grid")
        print(f"store: {size / 1e6:.2f} MB for {total_s:.0f} s recorded = {size / total_s * 600 / 1e6:.1f} MB per "
              "10 minutes (target well under 100 MB)")
        print(f"whole machine: {psutil.cpu_percent(interval=1.0):.0f}% of {psutil.cpu_count()} cores busy")
    finally:
        terminate(dash, 30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)  # this bench's own directory
    return 0


if __name__ == "__main__":
    sys.exit(main())
