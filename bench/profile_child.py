"""``bench_peers.py --part profile``: where one child's time goes per request, sampled by py-spy.

The MPM runs at the benchmark's slot budget under ``wrk -t1 -c64`` (1 KiB keep-alive); py-spy
samples its first child for ``seconds`` twice: with ``--gil`` (only the thread holding the GIL:
the child's CPU time in Python) and without (every thread that is not idle: also the time spent
waiting to get the GIL back after a system call or a wake-up). Each sample is put in the first
category its stack matches, from the innermost frame out.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_peers import start_mpmcore, uptime

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("scoreboard writes", ("scoreboard.py",)),
    ("hand-offs: listener -> worker (dispatch, tasks.put), worker -> listener (returns)",
     ("queue.py", "_give_back", "dispatch", "Condition.", "IdleCount.")),
    ("event: park / unpark / counters", ("_park", "_unpark", "Counters.", "_publish", "ChildCounters",
                                         "worker_idle")),
    ("parse (protocol.py)", ("receive_data", "next_event", "HTTPConnection._")),
    ("response head (send_response_parts)", ("send_response_parts", "_reply_parts", "_split_tail")),
    ("handler", ("content/", "handle (")),
    ("per-request CPU (getrusage)", ("_thread_cpu",)),
    ("socket reads/writes", ("_recv ", "_recv (", "write_all", "write_some", "_wait_readable")),
    ("listener loop and epoll", ("EventChild.listener", "listener_thread")),
    ("worker loop: waiting on the tasks queue, woken, getting the GIL", ("EventChild.worker", "worker_thread")),
]
# frames every thread has: never a category of their own
SKIP = ("Thread._bootstrap", "Thread.run ", "Thread._bootstrap_inner")


def categorize(raw: Path) -> tuple[collections.Counter[str], int]:
    out: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        total += count
        cat = "other (serve and worker loops)"
        for frame in reversed(stack.split(";")):
            if frame.startswith(SKIP):
                continue
            hit = next((name for name, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if hit:
                cat = hit
                break
        out[cat] += count
    return out, total


def profile(mpm: str, seconds: int = 5) -> dict[str, dict[str, float]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--part profile needs py-spy (pip install py-spy, the bench extra)")
    r = start_mpmcore(mpm)
    results: dict[str, dict[str, float]] = {}
    try:
        child = psutil.Process(r.pid).children()[0].pid
        d = tempfile.mkdtemp(prefix=f"mpmlab-profile-{mpm}-")  # kept: py-spy's raw stacks, to read further
        for mode in ("--gil", "all"):
            w = subprocess.Popen(["wrk", "-t1", "-c64", f"-d{seconds + 3}s", r.url], stdout=subprocess.PIPE,
                                 text=True)
            time.sleep(1)
            raw = Path(d) / f"{mode.strip('-')}.txt"
            subprocess.run([spy, "record", "-p", str(child), "-d", str(seconds), "-r", "250", "--nonblocking",
                            "-f", "raw", "-o", str(raw)] + ([mode] if mode == "--gil" else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           timeout=seconds + 30)
            out = w.communicate(timeout=seconds + 30)[0]
            rps = next((line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")), "?")
            cats, total = categorize(raw)
            label = "holding the GIL (CPU in Python)" if mode == "--gil" else "all non-idle samples (incl. GIL waits)"
            print(f"-- mpmcore {mpm}, child {child}, {label}: {total} samples, wrk {rps} req/s ({uptime()}; "
                  f"raw stacks: {raw})")
            results[mode] = {k: 100 * v / total for k, v in cats.items()} if total else {}
            for k, v in cats.most_common():
                print(f"  {100 * v / total:5.1f}%  {k}")
    finally:
        r.stop()
    return results
