"""The engine inside the runner process: pattern runs, their life cycle, caps and stats frames.

A ``PatternRun`` is one started pattern: its parameters (changed live by ``update``), its stats,
its connections, and a supervisor task that runs the scenario until the duration, the request
budget or a stop ends it. Scenario functions (scenarios.py) use the run's helpers: ``connect``,
``fetch``, ``gate`` and ``scale``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any

from mpmcore.traffic import catalogue
from mpmcore.traffic.client import ClientConnection, ConnectionCapReached, ConnectionClosed, error_kind, open_connection
from mpmcore.traffic.limits import (
    FINISHED_HISTORY,
    FRAME_INTERVAL,
    MAX_CONNECTIONS,
    MAX_PARALLEL_CONNECTS,
    MAX_PATTERNS,
    MAX_RATE,
    MAX_TOTAL_REQUESTS,
)
from mpmcore.traffic.runstats import Figures, FrameTotals, RunInfo, RunState, StatsFrame, StopReason
from mpmcore.traffic.stats import PatternStats
from mpmcore.traffic.target import Target, make_ssl_context, resolve_target

__all__ = ["Engine", "PatternRun", "RunFinished", "Scenario", "Slot"]

USER_AGENT = "mpmlab-traffic/0.1"
#: Connect-failure backoff for a client: first retry after this, doubling up to the max, so a
#: refused port costs a bounded number of attempts per second instead of a spin.
BACKOFF_MIN = 0.01
BACKOFF_MAX = 1.0
#: How long stop() waits for a scenario's tasks to unwind before aborting what is left.
STOP_GRACE = 3.0


class RunFinished(Exception):
    """Raised inside a client when its pattern has used its request budget."""


class Slot:
    """A client's connection holder (None between connections) and its connect backoff."""

    __slots__ = ("backoff", "conn")

    def __init__(self) -> None:
        self.conn: ClientConnection | None = None
        self.backoff = 0.0

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.abort()
            self.conn = None


#: A pattern's behaviour: a coroutine that drives one run through its helpers until it is stopped.
Scenario = Callable[["PatternRun"], Awaitable[None]]


class PatternRun:
    def __init__(self, engine: Engine, rid: str, pattern: str, params: dict[str, Any], target: Target) -> None:
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.id = rid
        self.pattern = pattern
        self.p = params
        self.target = target
        self.ssl_ctx = make_ssl_context(params["tls_verify"], params["tls_cafile"]) if target.tls else None
        self.label = params["label"] or pattern
        self.stats = PatternStats()
        self.conns: set[ClientConnection] = set()
        self.state = RunState.RUNNING
        self.stop_reason: StopReason | None = None
        self.error: str | None = None
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.ended: float | None = None
        self.issued = 0
        self.in_flight = 0
        self.budget_used = False
        self.version = 0  # bumped by every update()
        self.changed = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.deadline = 0.0
        self.max_requests = 0
        self.timeout = 0.0
        self._apply_limits()

    # -- parameters ---------------------------------------------------------------------------
    def _apply_limits(self) -> None:
        self.deadline = self.started + float(self.p["duration"])
        self.max_requests = min(int(self.p["max_requests"]), MAX_TOTAL_REQUESTS)
        self.timeout = float(self.p["timeout"])

    def update(self, new: dict[str, Any]) -> None:
        self.p.update(new)
        self._apply_limits()
        self.version += 1
        self.changed.set()
        self.budget_used = self.issued >= self.max_requests

    def finish(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    # -- request bytes ------------------------------------------------------------------------
    def request_bytes(self, path: str, method: str = "GET", *, keepalive: bool = True,
                      content_length: int | None = None, final: bool = True) -> bytes:
        # The pattern header is never the last line: a parser can only know a header value is whole
        # when the next line starts (it could be continued, obs-fold), so as the last line of a
        # slowloris' partial head it would reach the scoreboard only with the first trickled line.
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.target.host_header}",
                 f"X-Traffic-Pattern: {self.label}", f"User-Agent: {USER_AGENT}", "Accept: */*"]
        if not keepalive:
            lines.append("Connection: close")
        if content_length is not None:
            lines.append("Content-Type: application/x-www-form-urlencoded")
            lines.append(f"Content-Length: {content_length}")
        head = "\r\n".join(lines) + "\r\n"
        if final:
            head += "\r\n"
        return head.encode("latin-1")

    # -- budget and rate governor ------------------------------------------------------------
    async def gate(self) -> None:
        """Admit one request: enforce the request budget and the runner-wide MAX_RATE."""
        if self.issued >= self.max_requests:
            # Budget used: no new request; the supervisor ends the run once the requests in
            # flight have their answers (so requests == responses + errors at the end).
            self.budget_used = True
            raise RunFinished
        if self.stop_event.is_set():
            raise RunFinished
        self.issued += 1
        e = self.engine
        now = time.monotonic()
        if now >= e.rate_window_end:
            e.rate_window_end = now + 1.0
            e.rate_window_count = 0
        e.rate_window_count += 1
        if e.rate_window_count > MAX_RATE:
            self.stats.counts["throttled"] += 1
            await asyncio.sleep(e.rate_window_end - now)

    # -- connections --------------------------------------------------------------------------
    def _lost(self, conn: ClientConnection) -> None:
        self.conns.discard(conn)
        self.stats.disconnected()
        self.engine.open_connections -= 1

    async def connect(self, rcvbuf: int | None = None) -> ClientConnection:
        """Open a connection (counted against MAX_CONNECTIONS). On failure the error is counted
        and re-raised."""
        e = self.engine
        if e.open_connections >= MAX_CONNECTIONS:
            self.stats.error("cap")
            raise ConnectionCapReached(f"MAX_CONNECTIONS={MAX_CONNECTIONS} reached")
        e.open_connections += 1  # reserve before awaiting
        ok = False
        try:
            async with e.connect_sem:
                if self.stop_event.is_set():
                    raise RunFinished
                t0 = perf_counter()
                conn = await open_connection(self.target, self.ssl_ctx, self.timeout, rcvbuf)
                self.stats.connected(perf_counter() - t0)
            ok = True
        except (asyncio.CancelledError, RunFinished):
            raise
        except Exception as exc:
            self.stats.error(error_kind(exc))
            raise
        finally:
            if not ok:
                e.open_connections -= 1
        self.conns.add(conn)
        conn.counts = self.stats.counts
        conn.on_lost = self._lost
        if conn.closed:  # lost before we attached the callback
            conn.on_lost = None
            self._lost(conn)
        return conn

    async def backoff(self, slot: Slot) -> None:
        slot.backoff = min(BACKOFF_MAX, slot.backoff * 2 or BACKOFF_MIN)
        await asyncio.sleep(slot.backoff)

    async def fetch(self, slot: Slot, data: bytes, intended: float | None = None,
                    rcvbuf: int | None = None, timeout: float | None = None,
                    read_rate: float | None = None) -> int | None:
        """One request/response on the slot's connection (connecting first if needed).

        Returns the status, or None after an error (counted). A kept-alive connection that the
        server closed while idle is reopened, and a request that fails on such a connection
        before any byte came back is retried once on a new one (as browsers do); both count as
        reconnects, not errors. ``intended`` is the open model's intended send time
        (perf_counter) for the corrected latency. ``rcvbuf`` and ``read_rate`` (bytes/s the
        reply is read at) hold for every connection the request is sent on, a reopened one too.
        The call passes the gate (max_requests, the rate cap) before it connects, so an attempt
        whose connect fails still counts against max_requests, for every pattern that uses it.
        """
        await self.gate()
        stats = self.stats
        for attempt in (0, 1):
            conn = slot.conn
            reused = conn is not None
            if conn is not None and conn.closed:
                stats.counts["reconnects"] += 1
                slot.conn = conn = None
                reused = False
            if conn is None:
                try:
                    conn = slot.conn = await self.connect(rcvbuf)
                except (asyncio.CancelledError, RunFinished):
                    raise
                except Exception:
                    await self.backoff(slot)
                    return None
                slot.backoff = 0.0
            if read_rate is not None:
                conn.read_rate = read_rate
            stats.counts["requests"] += 1
            stats.counts["bytes_out"] += len(data)
            self.in_flight += 1
            try:
                status = await conn.request(data, timeout or self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if reused and attempt == 0 and conn.nbytes == 0 and isinstance(
                        exc, (ConnectionClosed, ConnectionResetError, BrokenPipeError)):
                    stats.counts["reconnects"] += 1
                    stats.counts["requests"] -= 1
                    slot.drop()
                    continue
                stats.error(error_kind(exc))
                slot.drop()
                return None
            finally:
                self.in_flight -= 1
            done = perf_counter()
            t_sent = conn.t_sent
            stats.response(status, done - t_sent, (conn.t_first - t_sent) if conn.t_first else 0.0,
                           conn.nbytes, None if intended is None else done - intended)
            if not conn.keep_alive:
                conn.close()
                slot.conn = None
            return status
        return None  # pragma: no cover

    # -- clients ------------------------------------------------------------------------------
    async def _guard(self, client: Callable[[int], Awaitable[None]], index: int) -> None:
        try:
            await client(index)
        except RunFinished:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.error("other")
            print(f"traffic[{self.id}]: client {index} failed:\n{traceback.format_exc()}", file=sys.stderr)

    async def scale(self, count: Callable[[], int], client: Callable[[int], Awaitable[None]]) -> None:
        """Keep ``count()`` client coroutines running (re-read after every update()); cancel the
        highest-numbered ones when the count drops. Returns when every client has ended."""
        tasks: list[asyncio.Task[None]] = []
        try:
            while True:
                n = count()
                while len(tasks) < n:
                    tasks.append(asyncio.ensure_future(self._guard(client, len(tasks))))
                while len(tasks) > n:
                    tasks.pop().cancel()
                if tasks and all(t.done() for t in tasks):
                    return
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.5)
                except TimeoutError:
                    pass
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=STOP_GRACE)

    # -- life cycle ---------------------------------------------------------------------------
    async def supervise(self, scenario: Scenario) -> None:
        scen = asyncio.ensure_future(scenario(self))
        stop_wait = asyncio.ensure_future(self.stop_event.wait())
        try:
            while not scen.done():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self.finish(StopReason.DURATION)
                    break
                if self.stop_event.is_set():
                    break
                if self.budget_used and self.in_flight == 0:
                    self.finish(StopReason.MAX_REQUESTS)
                    break
                await asyncio.wait({scen, stop_wait}, timeout=min(remaining, 0.25),
                                   return_when=asyncio.FIRST_COMPLETED)
            exc = scen.exception() if scen.done() and not scen.cancelled() else None
            if exc is not None:
                self.error = f"{type(exc).__name__}: {exc}"
                self.finish(StopReason.ERROR)
                print(f"traffic[{self.id}]: scenario failed: {self.error}", file=sys.stderr)
            elif self.stop_reason is None:
                self.finish(StopReason.MAX_REQUESTS if self.budget_used else StopReason.COMPLETED)
        finally:
            stop_wait.cancel()
            if not scen.done():
                scen.cancel()
                await asyncio.wait({scen}, timeout=STOP_GRACE)
            for conn in list(self.conns):
                conn.abort()
            # abort() reports connection_lost on the next loop iteration; give it a few.
            for _ in range(50):
                if not self.conns:
                    break
                await asyncio.sleep(0.01)
            self.ended = time.monotonic()
            self.stats.fold(self.ended)
            self.state = RunState.FINISHED
            self.engine._finished(self)

    # -- reporting ----------------------------------------------------------------------------
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def describe(self, live: Figures | None = None, total: Figures | None = None) -> RunInfo:
        return RunInfo(
            id=self.id, pattern=self.pattern, label=self.label, state=self.state, stop_reason=self.stop_reason,
            error=self.error, target=self.target.url, address=self.target.address, started_at=self.started_wall,
            elapsed=round(self.elapsed(), 3), params=dict(self.p),
            active_connections=self.stats.active_connections, peak_connections=self.stats.peak_connections,
            live=live, total=total)

    def summary(self) -> RunInfo:
        return self.describe(total=self.stats.total(elapsed=self.elapsed()))


class Engine:
    """The runner's pattern runs. ``scenarios`` maps each pattern name to its scenario (the runner
    passes scenarios.SCENARIOS; the engine knows only the Scenario signature)."""

    def __init__(self, scenarios: Mapping[str, Scenario]) -> None:
        self.scenarios = scenarios
        self.runs: dict[str, PatternRun] = {}
        self.finished: collections.OrderedDict[str, PatternRun] = collections.OrderedDict()
        self.open_connections = 0
        self.connect_sem = asyncio.Semaphore(MAX_PARALLEL_CONNECTS)
        self.rate_window_end = 0.0
        self.rate_window_count = 0
        self._ids = itertools.count(1)
        self._seq = 0
        self._final_frames: list[PatternRun] = []

    # -- control ------------------------------------------------------------------------------
    def _check_caps(self, pattern: str, params: dict[str, Any], exclude: str | None = None) -> None:
        running = [r for r in self.runs.values() if r.id != exclude]
        conns = catalogue.declared_connections(pattern, params)
        used = sum(catalogue.declared_connections(r.pattern, r.p) for r in running)
        if used + conns > MAX_CONNECTIONS:
            raise ValueError(f"{pattern}: {conns} connections would exceed MAX_CONNECTIONS="
                             f"{MAX_CONNECTIONS} across running patterns ({used} already in use)")
        rate = catalogue.declared_rate(pattern, params)
        used_rate = sum(catalogue.declared_rate(r.pattern, r.p) for r in running)
        if used_rate + rate > MAX_RATE:
            raise ValueError(f"{pattern}: {rate:g} requests/s would exceed MAX_RATE={MAX_RATE} "
                             f"across running patterns ({used_rate:g} already asked for)")

    async def start(self, pattern: str, params: dict[str, Any]) -> str:
        p = catalogue.validate_params(pattern, params)
        if pattern == "slow-read":
            # The path template gets the size filled in; check the result like a path.
            catalogue.validate_params(pattern, {"path": p["path"].replace("{size}", str(p["size"]))},
                                      partial=True)
        target = await resolve_target(p["target"], allow_remote=p["allow_remote"])
        # The caps are checked after the last await and right before the run is added, so that two
        # starts racing through resolve_target cannot both pass them.
        if len(self.runs) >= MAX_PATTERNS:
            raise ValueError(f"at most MAX_PATTERNS={MAX_PATTERNS} patterns may run at once")
        self._check_caps(pattern, p)
        rid = f"{pattern}-{next(self._ids)}"
        run = PatternRun(self, rid, pattern, p, target)
        self.runs[rid] = run
        run.task = asyncio.ensure_future(run.supervise(self.scenarios[pattern]))
        return rid

    def _get(self, rid: str) -> PatternRun:
        run = self.runs.get(rid) or self.finished.get(rid)
        if run is None:
            raise KeyError(f"no pattern with id {rid!r}")
        return run

    def update(self, rid: str, params: dict[str, Any]) -> RunInfo:
        run = self._get(rid)
        if run.state is not RunState.RUNNING:
            raise ValueError(f"pattern {rid} has finished ({run.stop_reason}); start a new one")
        new = catalogue.validate_params(run.pattern, params, partial=True)
        merged = dict(run.p, **new)
        self._check_caps(run.pattern, merged, exclude=rid)
        run.update(new)
        return run.describe()

    async def stop(self, rid: str) -> RunInfo:
        run = self._get(rid)
        if run.state is RunState.RUNNING:
            run.finish(StopReason.STOPPED)
            if run.task is not None:
                await asyncio.wait({run.task}, timeout=STOP_GRACE + 2)
        return run.summary()

    async def stop_all(self) -> list[RunInfo]:
        runs = list(self.runs.values())
        for r in runs:
            r.finish(StopReason.STOPPED)
        tasks = {r.task for r in runs if r.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE + 2)
        return [r.summary() for r in runs]

    def list(self) -> list[RunInfo]:
        return [r.summary() for r in itertools.chain(self.runs.values(), self.finished.values())]

    def get(self, rid: str) -> RunInfo:
        return self._get(rid).summary()

    def histograms(self, rid: str) -> dict[str, str]:
        """A pattern's cumulative HDR histograms, encoded (``PatternStats.encoded_histograms``)."""
        return self._get(rid).stats.encoded_histograms()

    def _finished(self, run: PatternRun) -> None:
        self.runs.pop(run.id, None)
        self.finished[run.id] = run
        while len(self.finished) > FINISHED_HISTORY:
            self.finished.popitem(last=False)
        self._final_frames.append(run)

    # -- frames -------------------------------------------------------------------------------
    def frame(self) -> StatsFrame:
        """Fold every running pattern's interval and build one stats frame."""
        now = time.monotonic()
        self._seq += 1
        out: list[RunInfo] = []
        running_rps = 0.0
        for run in list(self.runs.values()):
            live = run.stats.fold(now)
            running_rps += live.rps
            out.append(run.describe(live, run.stats.total(now, elapsed=run.elapsed(), cached=True)))
        for run in self._final_frames:
            out.append(run.describe(run.stats.live, run.stats.total(elapsed=run.elapsed())))
        self._final_frames = []
        return StatsFrame(seq=self._seq, time=time.time(), interval=FRAME_INTERVAL, patterns=out,
                          totals=FrameTotals(running=len(self.runs), active_connections=self.open_connections,
                                             rps=round(running_rps, 2)))
