"""Replay of a stored 10-minute run of 4,096 slots: how long it takes to open, how fast scrubbing redraws.

    .venv/bin/python bench/bench_replay.py [--minutes 10] [--steps 300]

1. Writes a run store (temporary directory) holding one recording: MINUTES minutes of 4,096-slot
   grid frames at 10 frames/s (64 process rows x 64 threads, mpmlab/services/grid.py's layout, ~5% of
   the slots changing state every frame, as under traffic) and one SecondSample a second. The
   frames are made here, not recorded live (a live 10-minute recording would take 10 minutes); they
   have the real layout and size, so the store, the routes and the page do the real work.
2. Starts `mpmlab dashboard` on that store (--runs-db) and opens /runs/ID/replay in headless
   Chromium (/usr/bin/chromium).
3. Open: from navigation to the first frame drawn (the timeline read, the first batch of frames
   fetched, decoded and drawn). Scrub: the clock moved STEPS times across the whole run in order
   (as dragging the slider does), each step waiting until the grid shows the exact stored frame for
   the new time (batches fetched as needed): redraws per second.

Targets (from the issue): opens in < 1 s; scrubbing redraws at >= 20 frames/s.
"""

from __future__ import annotations

import argparse
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

from common import ARGS, CHROMIUM, start_dashboard  # bench/ is the script's directory, first on sys.path

from mpmcore.experiments.model import FrameRecord, SecondSample
from mpmcore.experiments.store import RunStore
from mpmcore.procs import terminate
from mpmlab.services.grid import HEADER

ROWS = COLS = 64


def make_store(path: Path, minutes: float) -> int:
    rnd = random.Random(1)
    n = ROWS * COLS
    status = bytearray([2] * n)  # READY
    tail = bytes(n) + bytes([1] * ROWS) + b"".join(struct.pack("<I", 1000 + i) for i in range(ROWS)) + bytes(4 * ROWS)
    with RunStore(path) as store:
        run = store.begin_run("recording", "bench-replay", f"{minutes:g} minutes of 4096 slots", "", ["core:event"])
        tid = store.begin_target(run, "core:event", 1)
        frames: list[FrameRecord] = []
        t0 = time.time() * 1000
        for i in range(int(minutes * 600)):
            for _ in range(n // 20):
                status[rnd.randrange(n)] = rnd.choice((2, 2, 3, 4, 5))
            t = i / 10
            frames.append(FrameRecord(t, HEADER.pack(0x4D, 1, 2, 0, i, t0 + t * 1000, 1, ROWS, COLS, COLS, 0)
                                      + bytes(status) + tail))
            if len(frames) == 600:
                store.add_frames(tid, frames)
                frames = []
            if i % 10 == 0:
                busy = sum(1 for s in status if s > 2)
                store.add_samples(tid, [SecondSample(t=t, stage="bench", rps=300.0, errors=0, busy=busy,
                                                     idle=n - busy, processes=ROWS, threads=n, connections=busy)])
        store.add_frames(tid, frames)
        store.end_target(tid, "complete")
        store.end_run(run, "complete")
        return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="mpmlab-bench-replay-"))
    db = tmp / "runs.sqlite3"
    t = time.monotonic()
    run_id = make_store(db, args.minutes)
    print(f"store: {db.stat().st_size / 1e6:.1f} MB for {args.minutes:g} minutes of 4096-slot frames at 10/s "
          f"(written in {time.monotonic() - t:.1f} s)")
    log = open(tmp / "dashboard.log", "wb")
    dash, base, _ = start_dashboard(["--runs-db", str(db)], log=log, ready_path="/api/runs")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            opens = []
            for _ in range(3):
                t0 = time.monotonic()
                pg.goto(f"{base}/runs/{run_id}/replay")
                pg.wait_for_function("window.mpmReplay && window.mpmReplay.ready && window.mpmReplay.draws > 0 "
                                     "&& window.mpmReplay.settled()", timeout=30_000, polling=10)
                opens.append(time.monotonic() - t0)
            print(f"open (navigation -> first frame drawn), 3 tries: {', '.join(f'{x * 1000:.0f} ms' for x in opens)}"
                  " (target < 1 s)")
            res = pg.evaluate("""async (steps) => {
                const r = window.mpmReplay, t0 = performance.now(), d0 = r.draws;
                for (let i = 1; i <= steps; i++) {
                  r.seek(r.duration * i / steps);
                  await new Promise((res) => { const chk = () => (r.settled() ? res() : requestAnimationFrame(chk)); chk(); });
                }
                return {ms: performance.now() - t0, draws: r.draws - d0}; }""", args.steps)
            print(f"scrub across the whole run, {args.steps} steps, each to the exact frame: "
                  f"{args.steps / res['ms'] * 1000:.1f} redraws/s ({res['draws']} grid draws) (target >= 20/s)")
            browser.close()
    finally:
        terminate(dash, 30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)  # this bench's own directory
    return 0


if __name__ == "__main__":
    sys.exit(main())
