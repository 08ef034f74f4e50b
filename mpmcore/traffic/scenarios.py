"""The patterns as small scenario functions: one coroutine per simulated client.

Each scenario runs until it is cancelled by its PatternRun's supervisor (duration, stop) or its
clients run out of request budget (RunFinished). Parameters are read from ``run.p`` at loop
boundaries, so ``update()`` takes effect at the next request, burst, poll or header line; a
client re-builds its request bytes only when ``run.version`` changed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from time import perf_counter
from typing import Any

from mpmcore.traffic.client import ConnectionClosed
from mpmcore.traffic.engine import PatternRun, RunFinished, Scenario, Slot

__all__ = ["SCENARIOS"]


async def _gather_or_cancel(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines concurrently; on the first exception cancel the others and re-raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                raise exc
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _with_query(path: str, key: str, value: object) -> str:
    return f"{path}{'&' if '?' in path else '?'}{key}={value}"


# -- steady (closed) ---------------------------------------------------------------------------
async def _closed_client(run: PatternRun, index: int) -> None:
    slot = Slot()
    version = -1
    data = b""
    think = 0.0
    try:
        while True:
            if version != run.version:
                version = run.version
                data = run.request_bytes(run.p["path"], keepalive=run.p["keepalive"])
                think = run.p["think_time"]
            await run.fetch(slot, data)
            if think:
                await asyncio.sleep(think)
    finally:
        slot.drop()


# -- open model (steady open, cpu, io) ---------------------------------------------------------
async def _open_model(run: PatternRun, path_of: Callable[[], str]) -> None:
    """Arrivals at ``rate`` per second, independent of the responses (wrk2's model).

    Each arrival has an intended send time. Connections (``connections`` of them, one worker
    coroutine each) take arrivals from a queue; corrected latency runs from the intended time,
    uncorrected from the actual write. The queue is bounded by ``max_pending`` beyond the idle
    workers; an arrival that finds it full is counted dropped, never silently lost.
    """
    queue: asyncio.Queue[float] = asyncio.Queue()  # intended send times (perf_counter)
    stats = run.stats
    idle = [0]

    async def worker(index: int) -> None:
        slot = Slot()
        version = -1
        data = b""
        late_s = 0.0
        try:
            while True:
                idle[0] += 1
                try:
                    intended = await queue.get()
                finally:
                    idle[0] -= 1
                if version != run.version:
                    version = run.version
                    data = run.request_bytes(path_of())
                    late_s = run.p["late_ms"] / 1000.0
                if perf_counter() - intended > late_s:
                    stats.counts["late"] += 1
                await run.fetch(slot, data, intended)
        finally:
            slot.drop()

    workers = asyncio.ensure_future(run.scale(lambda: run.p["connections"], worker))
    rng = random.Random()
    version = run.version

    def gap() -> float:
        rate = run.p["rate"]
        return rng.expovariate(rate) if run.p["arrivals"] == "poisson" else 1.0 / rate

    next_t = perf_counter()
    try:
        while not workers.done():
            now = perf_counter()
            if version != run.version:
                version = run.version
                # A new rate applies from now on, not after a long gap drawn at the old rate.
                next_t = min(next_t, now + gap())
            counts = stats.counts  # re-read: the stats window is swapped at each frame
            max_pending = run.p["max_pending"]
            while next_t <= now:
                counts["arrivals"] += 1
                if queue.qsize() < idle[0] + max_pending:
                    queue.put_nowait(next_t)
                else:
                    counts["dropped"] += 1
                next_t += gap()
            # uvloop timers have ~1 ms resolution; arrivals due meanwhile are sent in a batch,
            # each keeping its own intended time.
            await asyncio.sleep(min(max(0.0, next_t - perf_counter()), 0.1))
    finally:
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)


async def steady(run: PatternRun) -> None:
    if run.p["model"] == "closed":
        await run.scale(lambda: run.p["clients"], lambda i: _closed_client(run, i))
    else:
        await _open_model(run, lambda: run.p["path"])


async def cpu_or_io(run: PatternRun) -> None:
    """``cpu`` and ``io``: the open model on the handler's route (its path), with ?ms=."""
    await _open_model(run, lambda: _with_query(run.p["path"], "ms", run.p["ms"]))


# -- burst -------------------------------------------------------------------------------------
async def burst(run: PatternRun) -> None:
    slots: list[Slot] = []
    busy: set[int] = set()
    tasks: set[asyncio.Task[None]] = set()
    stats = run.stats

    async def one(i: int, data: bytes, keepalive: bool) -> None:
        try:
            await run.fetch(slots[i], data)
        except RunFinished:
            pass
        finally:
            busy.discard(i)
            if not keepalive or i >= run.p["size"]:
                slots[i].drop()

    next_t = time.monotonic()
    try:
        while True:
            m, keepalive = run.p["size"], run.p["keepalive"]
            data = run.request_bytes(run.p["path"], keepalive=keepalive)
            while len(slots) < m:
                slots.append(Slot())
            for i in range(m, len(slots)):
                if i not in busy:
                    slots[i].drop()
            for i in range(m):
                stats.counts["arrivals"] += 1
                if i in busy:
                    stats.counts["dropped"] += 1
                    continue
                busy.add(i)
                t = asyncio.ensure_future(one(i, data, keepalive))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            next_t += run.p["every"]
            while (delay := next_t - time.monotonic()) > 0:
                await asyncio.sleep(min(delay, 0.25))
                next_t = min(next_t, time.monotonic() + run.p["every"])  # a shorter T applies now
    finally:
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for s in slots:
            s.drop()


# -- browsers ----------------------------------------------------------------------------------
async def _browser(run: PatternRun, index: int) -> None:
    slots: list[Slot] = []
    try:
        while True:
            p = run.p
            cpb, assets = p["connections_per_browser"], p["assets"]
            while len(slots) < cpb:
                slots.append(Slot())
            while len(slots) > cpb:
                slots.pop().drop()
            page = run.request_bytes(p["path"])
            asset = run.request_bytes(p["asset_path"])
            await run.fetch(slots[0], page)
            if assets:
                remaining = [assets]  # shared by the page view's connections: each takes the next asset

                async def fetch_assets(slot: Slot, data: bytes, left: list[int]) -> None:
                    while left[0] > 0:
                        left[0] -= 1
                        await run.fetch(slot, data)

                await _gather_or_cancel(fetch_assets(slots[k], asset, remaining) for k in range(min(cpb, assets)))
            # Think: idle with the connections open (the server sees them in keep-alive).
            await asyncio.sleep(run.p["think_time"])
    finally:
        for s in slots:
            s.drop()


async def browsers(run: PatternRun) -> None:
    await run.scale(lambda: run.p["clients"], lambda i: _browser(run, i))


# -- ajax --------------------------------------------------------------------------------------
async def _poller(run: PatternRun, index: int) -> None:
    slot = Slot()
    version = -1
    data = b""
    # Spread the clients over one interval so they do not all poll in the same millisecond.
    next_t = time.monotonic() + random.random() * min(run.p["interval"], 5.0)
    try:
        while True:
            if version != run.version:
                version = run.version
                data = run.request_bytes(run.p["path"])
            delay = next_t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await run.fetch(slot, data)
            interval = run.p["interval"]
            next_t += interval
            now = time.monotonic()
            if next_t < now:  # slower than the interval: skip the missed polls
                next_t = now
    finally:
        slot.drop()


async def ajax(run: PatternRun) -> None:
    await run.scale(lambda: run.p["clients"], lambda i: _poller(run, i))


# -- slowloris and slow-post -------------------------------------------------------------------
async def _held_connection(run: PatternRun, index: int, post: bool) -> None:
    """Hold one connection with a request that never (or very slowly) completes; reconnect
    (counted) whenever the server closes it."""
    slot = Slot()
    stats = run.stats
    rnd = random.Random(index)
    try:
        while True:
            try:
                conn = await run.connect()
            except (asyncio.CancelledError, RunFinished):
                raise
            except Exception:
                await run.backoff(slot)
                continue
            slot.backoff = 0.0
            slot.conn = conn
            conn.on_unsolicited = lambda status: run.stats.status_only(status)
            await run.gate()
            stats.counts["requests"] += 1
            p = run.p
            try:
                if post:
                    length = p["content_length"]
                    head = run.request_bytes(p["path"], "POST", content_length=length)
                    conn.write(head)
                    stats.counts["bytes_out"] += len(head)
                    sent = 0
                    while sent < length:
                        if await conn.wait_closed(run.p["interval"]):
                            break
                        n = min(run.p["chunk"], length - sent)
                        conn.write(b"a" * n)
                        sent += n
                        stats.counts["bytes_out"] += n
                    if sent >= length and not conn.closed:
                        t0 = perf_counter()
                        conn.t_first = 0.0
                        conn.nbytes = 0
                        status = await conn.expect_response(run.timeout)
                        stats.response(status, perf_counter() - t0, 0.0, conn.nbytes)
                else:
                    head = run.request_bytes(p["path"], final=False)
                    conn.write(head)
                    stats.counts["bytes_out"] += len(head)
                    k = 0
                    while not await conn.wait_closed(run.p["interval"]):
                        k += 1
                        line = f"X-Slow-{k}: {rnd.randrange(1 << 30)}\r\n".encode()
                        conn.write(line)
                        stats.counts["bytes_out"] += len(line)
            except (ConnectionClosed, ConnectionError, TimeoutError):
                pass
            if conn.closed:
                stats.counts["reconnects"] += 1  # the server gave up on us: come back
            slot.drop()
    finally:
        slot.drop()


async def slowloris(run: PatternRun) -> None:
    await run.scale(lambda: run.p["connections"], lambda i: _held_connection(run, i, post=False))


async def slow_post(run: PatternRun) -> None:
    await run.scale(lambda: run.p["connections"], lambda i: _held_connection(run, i, post=True))


# -- slow-read ---------------------------------------------------------------------------------
async def _slow_reader(run: PatternRun, index: int) -> None:
    slot = Slot()
    try:
        while True:
            p = run.p
            data = run.request_bytes(p["path"].replace("{size}", str(p["size"])))
            # The small receive buffer and the read rate hold for every connection, a reopened one
            # too. The response takes as long as the slow reading makes it take: the request
            # timeout here is the pattern's whole duration (plus the usual timeout).
            await run.fetch(slot, data, rcvbuf=p["rcvbuf"], read_rate=p["read_bytes"] / p["interval"],
                            timeout=p["duration"] + p["timeout"])
    finally:
        slot.drop()


async def slow_read(run: PatternRun) -> None:
    await run.scale(lambda: run.p["connections"], lambda i: _slow_reader(run, i))


#: pattern name -> scenario (the catalogue's names; the runner hands this to its Engine)
SCENARIOS: Mapping[str, Scenario] = {
    "steady": steady, "burst": burst, "browsers": browsers, "ajax": ajax, "slowloris": slowloris,
    "slow-post": slow_post, "slow-read": slow_read, "cpu": cpu_or_io, "io": cpu_or_io,
}
