"""The run store under a long recording: size, replay open time, scrubbing, the writer's CPU.

    ./dev.sh bench store                (or: .venv/bin/python bench/bench_store.py [--minutes 10])

1. Writes a synthetic recording into a fresh store in a temporary directory: MINUTES minutes of a
   4,096-slot event grid (64 children x 64 threads) at 10 frames/s, in the recorder's rhythm (one
   call per second with its 10 frames and one SecondSample with three patterns' figures, one mark
   per stage). The grid changes as a loaded event server's does: each frame ~6% of the slots move
   between _ R W K C (a random walk weighted towards the mix of a busy server: about 45% idle,
   30% W, 15% K, 7% R), busy slots carry one of three pattern indices, a child is replaced now and
   then (its row's pid and generation change).
2. Size: the file with its WAL after close (issue: well under 100 MB for 10 minutes).
3. Writer CPU: the process CPU time (user + system) spent inside the store's add_* calls per
   second of recording, as a share of one core (issue: under 5% of one core for the whole
   recording path; this is the store's part of it). With --realtime S, also S seconds paced at
   10 frames/s, measured with psutil over the window (frame building included).
4. Replay open: a new RunStore on the file, load(run), frame_times(target run), frame_at(0)
   (goal < 1 s).
5. Scrubbing: frame_at at 200 random times (goal: >= 20 frames/s).
6. The export bundle of the run: time and size.

Figures go to docs/benchmarks.md ("The run store").
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import tempfile
import time
from pathlib import Path

import psutil

from mpmcore.experiments import exports
from mpmcore.experiments.model import FrameRecord, Mark, PatternSecond, SecondSample
from mpmcore.experiments.store import RunStore
from mpmcore.scoreboard import MPM_IDS, STATE_LETTERS
from mpmcore.sources.grid import GRID_HEADER, GRID_MAGIC, GRID_VERSION, ROW_ALIVE

ROWS, COLS, FPS = 64, 64, 10
SLOTS = ROWS * COLS
_IDX = {ch: i for i, ch in enumerate(STATE_LETTERS)}
#: the random walk's target mix (a loaded event server) and the states a slot moves between
MIX = {"_": 0.45, "W": 0.30, "K": 0.15, "R": 0.07, "C": 0.03}
CHANGE = 0.06


class Grid:
    """A 4,096-slot scoreboard that changes like a loaded event server's."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.letters = [_IDX["_"]] * SLOTS
        self.pattern = [0] * SLOTS
        self.pids = [1000 + r for r in range(ROWS)]
        self.gens = [1] * ROWS
        self.states = [_IDX[ch] for ch in MIX]
        self.weights = list(MIX.values())
        self.seq = 0

    def step(self) -> None:
        rnd = self.rnd
        for i in rnd.sample(range(SLOTS), int(SLOTS * CHANGE)):
            s = rnd.choices(self.states, self.weights)[0]
            self.letters[i] = s
            self.pattern[i] = 0 if s == _IDX["_"] else rnd.randint(1, 3)
        if rnd.random() < 0.01:  # a child replaced (MaxConnectionsPerChild)
            r = rnd.randrange(ROWS)
            self.pids[r] += 1000
            self.gens[r] += 1
        self.seq += 1

    def frame(self, now_ms: float) -> bytes:
        head = GRID_HEADER.pack(GRID_MAGIC, GRID_VERSION, MPM_IDS["event"], 0, self.seq & 0xFFFFFFFF, now_ms, 1,
                                ROWS, COLS, COLS, 0)
        return b"".join((head, bytes(self.letters), bytes(self.pattern), bytes([ROW_ALIVE] * ROWS),
                         struct.pack(f"<{ROWS}I", *self.pids), struct.pack(f"<{ROWS}I", *self.gens)))

    def counts(self) -> dict[str, int]:
        return {ch: self.letters.count(i) for ch, i in _IDX.items()}


def sample(t: float, g: Grid, rnd: random.Random) -> SecondSample:
    c = g.counts()
    busy = SLOTS - c["_"] - c["."]
    pats = {name: PatternSecond(rps=rnd.uniform(200, 400), errors=rnd.randint(0, 2), p50_ms=rnd.uniform(1, 5),
                                p99_ms=rnd.uniform(20, 80), corrected_p99_ms=rnd.uniform(20, 120), connections=800)
            for name in ("browsers", "ajax", "slowloris")}
    return SecondSample(t=t, stage=f"stage-{int(t // 60)}", rps=sum(p.rps for p in pats.values()), errors=1,
                        states=c, busy=busy, idle=c["_"], processes=ROWS, threads=SLOTS, connections=2400,
                        parked=c["K"], pss_bytes=900_000_000 + int(t) * 1000, rss_bytes=1_500_000_000,
                        cpu_seconds=t * 0.8, client_connections=2400, patterns=pats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic recording (default 10)")
    ap.add_argument("--realtime", type=float, default=0.0, metavar="S",
                    help="also record S seconds paced at 10 frames/s and measure the CPU with psutil")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    seconds = int(args.minutes * 60)
    rnd = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mpmlab-bench-store-"))
    path = tmp / "runs.sqlite3"
    store = RunStore(path)
    run = store.begin_run("recording", "bench", "bench_store", "", ["core:event"])
    tid = store.begin_target(run, "core:event", 1)
    g = Grid(rnd)
    raw = 0
    store_cpu = 0.0
    t_start = time.perf_counter()
    for sec in range(seconds):
        frames = []
        for k in range(FPS):
            g.step()
            t = sec + k / FPS
            fr = g.frame(1.7e12 + t * 1000)
            raw += len(fr)
            frames.append(FrameRecord(t=t, grid=fr))
        smp = sample(float(sec + 1), g, rnd)
        c0 = time.process_time()
        store.add_frames(tid, frames)
        store.add_samples(tid, [smp])
        if sec % 60 == 0:
            store.add_marks(tid, [Mark(float(sec), "stage", f"stage-{sec // 60}")])
        store_cpu += time.process_time() - c0
    wall = time.perf_counter() - t_start
    store.end_target(tid, "complete")
    store.end_run(run, "complete")
    store.close()
    size = sum(p.stat().st_size for p in tmp.iterdir() if p.name.startswith("runs.sqlite3"))
    n_frames = seconds * FPS
    print(f"recording: {seconds} s, {n_frames} frames of {SLOTS} slots ({raw / n_frames / 1024:.1f} KiB raw each), "
          f"built and written in {wall:.1f} s")
    print(f"size: {size / 1e6:.1f} MB on disk ({size / n_frames:.0f} B per frame with its share of samples; "
          f"raw frames {raw / 1e6:.0f} MB)")
    print(f"writer CPU inside the store: {store_cpu:.2f} s for {seconds} s of recording = "
          f"{store_cpu / seconds * 100:.2f}% of one core at {FPS} frames/s")

    t0 = time.perf_counter()
    s2 = RunStore(path)
    loaded = s2.load(run)
    times = s2.frame_times(loaded.targets[0].id)
    first = s2.frame_at(loaded.targets[0].id, 0.0)
    open_s = time.perf_counter() - t0
    assert first is not None and len(times) == n_frames
    print(f"replay open (RunStore + load + frame_times + first frame): {open_s * 1000:.0f} ms")

    picks = [rnd.uniform(0, seconds) for _ in range(200)]
    t0 = time.perf_counter()
    for t in picks:
        fr = s2.frame_at(tid, t)
        assert fr is not None
    scrub = len(picks) / (time.perf_counter() - t0)
    print(f"scrubbing: frame_at at {len(picks)} random times: {scrub:.0f} frames/s")
    t0 = time.perf_counter()
    samples = s2.samples(tid)
    print(f"samples: {len(samples)} read in {(time.perf_counter() - t0) * 1000:.0f} ms")

    t0 = time.perf_counter()
    bundle = exports.export_bundle(run, s2, tmp / "run.mpmlab-run.gz")
    print(f"export bundle: {bundle.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    s2.close()

    if args.realtime > 0:
        rt = RunStore(tmp / "rt.sqlite3")
        r = rt.begin_run("recording", "bench-rt", "bench_store realtime", "", ["core:event"])
        rtid = rt.begin_target(r, "core:event", 1)
        me = psutil.Process()
        c0, w0 = me.cpu_times(), time.perf_counter()
        n = int(args.realtime * FPS)
        pending: list[FrameRecord] = []
        for i in range(n):
            due = w0 + i / FPS
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            g.step()
            pending.append(FrameRecord(t=i / FPS, grid=g.frame(time.time() * 1000)))
            if len(pending) == FPS:
                rt.add_frames(rtid, pending)
                rt.add_samples(rtid, [sample(float(i + 1) / FPS, g, rnd)])
                pending = []
        c1, w1 = me.cpu_times(), time.perf_counter()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        print(f"realtime: {n} frames over {w1 - w0:.1f} s, process CPU {cpu / (w1 - w0) * 100:.1f}% of one core "
              "(building the synthetic frames included)")
        rt.close()
    for p in sorted(tmp.iterdir()):
        p.unlink()
    os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
