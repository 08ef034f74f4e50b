"""The one sampler: reads the shared-memory scoreboard at a fixed rate and fans frames out.

Per tick (GRID_HZ, 20 by default) it builds the binary grid frame (mpmlab.services.grid) and offers it to every
/ws/scoreboard client; an unchanged grid is re-sent only once a second. Every 1/SUMMARY_HZ it takes
a full consistent snapshot, summarises it by mod_status' rules, reads it in words
(mpmlab.services.insights) and offers the summary (JSON) and the page's live fragments (HTML for htmx). Once a
second it records a point of the chart history. It never awaits a client: offering is a dict
store (mpmlab.services.hub), so a slow browser cannot slow the sampler or the other browsers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from mpmcore import scoreboard as sb
from mpmcore.content.server import server_info
from mpmcore.errorlog import read_from, tail
from mpmcore.model import ChartPoint, Insight, SourceFrame, Summary, Tile, to_jsonable
from mpmcore.sources.frames import chart_point, frame_from_summary, summary_message
from mpmcore.status.summary import summarize
from mpmlab.services.core import ControlError, CoreControl, CoreError
from mpmlab.services.grid import GridReader, core_down_frame
from mpmlab.services.hub import Hub
from mpmlab.services.insights import describe
from mpmlab.services.tiles import core_tiles
from mpmlab.services.traffic import TrafficService
from mpmlab.settings import CORE_SOURCE, LOG_LINES, DashboardSettings

log = logging.getLogger("mpmlab.dashboard")

HISTORY_INTERVAL = 1.0  # seconds between chart points
LOG_POLL = 0.25  # seconds between reads of the error log
REATTACH_INTERVAL = 1.0  # seconds between tries to attach to the scoreboard when it is gone
STATE_RETRY = 1.0  # seconds before a failed `status` after a new generation is asked again
BIG_TABLE = 32  # process table rows beyond which /ws/live sends the table once a second, not with every summary


class History:
    """The last ``seconds`` of chart points, one a second."""

    def __init__(self, seconds: int) -> None:
        self.points: collections.deque[ChartPoint] = collections.deque(maxlen=seconds)

    def add(self, point: ChartPoint) -> None:
        self.points.append(point)

    def last(self) -> ChartPoint | None:
        return self.points[-1] if self.points else None

    def since(self, seconds: float | None = None) -> list[ChartPoint]:
        if seconds is None or not self.points:
            return list(self.points)
        cut = self.points[-1].t - seconds
        return [p for p in self.points if p.t >= cut]


class Sampler:
    def __init__(self, settings: DashboardSettings, control: CoreControl, traffic: TrafficService,
                 render_live: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.settings = settings
        self.control = control
        self.traffic = traffic
        self.render_live = render_live  # summary -> HTML fragments for /ws/live
        self.grid_hub = Hub("scoreboard")
        self.live_hub = Hub("live")
        self.history = History(settings.history_seconds)
        self.reader: sb.ScoreboardReader | None = None
        self.grid: GridReader | None = None
        self.summary: Summary | None = None
        # the same summary as a source frame (for /api/sources and /metrics), made once per summary
        self.frame: SourceFrame = frame_from_summary(CORE_SOURCE, None, url=settings.core_url)
        self.insight: Insight | None = None
        self.tiles: tuple[Tile, ...] = ()
        self.core_state: dict[str, Any] | None = None  # the master's `status` answer
        self.log_lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._log_offset = 0
        self.log_listeners: list[Callable[[list[str]], None]] = []  # fed every new error-log line
        self._last_grid: bytes | None = None
        self.last_frame: bytes | None = None
        self._last_grid_sent = 0.0
        self._last_point_t = 0.0  # when the last chart point was taken
        self._last_acc: tuple[float, int] | None = None  # (time, accesses) for chart_point's rps
        self._last_attach_try = 0.0
        self._state_task: asyncio.Task[None] | None = None
        self._known_generation: int | None = None
        self.ticks = 0
        self._summaries = 0
        self.work_seconds = 0.0  # CPU time spent in ticks (for /api/dashboard)
        self.frames_sent = 0
        self.started = time.monotonic()
        self.tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        lines, self._log_offset = tail(self.control.error_log, LOG_LINES)
        self.log_lines.extend(lines)
        self.tasks = [asyncio.create_task(self._run(), name="sampler"),
                      asyncio.create_task(self._follow_log(), name="log-follower")]

    async def stop(self) -> None:
        tasks = self.tasks + ([self._state_task] if self._state_task is not None else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.reader is not None:
            try:
                self.reader.close()
            except BufferError:
                pass
            self.reader = None

    # -- the loop -----------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.settings.grid_hz
        summary_every = max(1, round(self.settings.grid_hz / self.settings.summary_hz))
        next_t = loop.time()
        while True:
            t0 = time.thread_time()  # CPU time of this thread: what the tick costs, not how long it waited
            try:
                self.tick(summary=self.ticks % summary_every == 0)
            except Exception:  # a bug in one tick must not stop the dashboard
                log.exception("sampler tick failed")
            self.work_seconds += time.thread_time() - t0
            self.ticks += 1
            next_t += period
            now = loop.time()
            if next_t < now:  # fell behind (a paused laptop, a busy box): skip, do not burst
                next_t = now + period
            await asyncio.sleep(next_t - now)

    def _attach(self) -> bool:
        if self.reader is not None:
            return True
        now = time.monotonic()
        if now - self._last_attach_try < REATTACH_INTERVAL:
            return False
        self._last_attach_try = now
        try:
            self.reader = sb.ScoreboardReader(self.control.shm_name)
        except (FileNotFoundError, sb.StaleScoreboard, OSError):
            return False
        self.grid = GridReader(self.reader)
        self._last_point_t, self._last_acc = 0.0, None
        return True

    def _detach(self) -> None:
        if self.reader is not None:
            try:
                self.reader.close()
            except BufferError:
                pass
        self.reader = self.grid = None

    def tick(self, summary: bool) -> None:
        now = time.time()
        if not self._attach() or self.grid is None:
            if now - self._last_grid_sent >= 1.0:
                self.grid_hub.offer("grid", core_down_frame(0, now * 1000))
                self._last_grid_sent = now
            return
        try:
            frame, shown, _ = self.grid.frame(now * 1000)
        except (FileNotFoundError, ValueError, sb.StaleScoreboard, OSError):
            self._detach()  # the server went away: try again later
            return
        if shown != self._last_grid or now - self._last_grid_sent >= 1.0 or frame[3] & 1:
            self.grid_hub.offer("grid", frame)
            self.last_frame = frame
            self._last_grid, self._last_grid_sent = shown, now
            self.frames_sent += 1
        if summary:
            self._summarize(now)

    def _summarize(self, now: float) -> None:
        if self.reader is None:
            return
        try:
            snap = self.reader.snapshot()
        except (FileNotFoundError, ValueError, sb.StaleScoreboard, OSError):
            self._detach()  # the server went away between the grid frame and this read
            return
        host = self.control.listen.rpartition(":")[0].strip("[]") or "localhost"
        s = summarize(snap, server_info(snap, host), now)
        last = self.history.last()
        rps = last.rps if last is not None and now - last.t <= 3 * HISTORY_INTERVAL else None
        self.summary, self.insight = s, describe(s, (self.core_state or {}).get("config"), rps)
        self.tiles = core_tiles(s, rps)
        # the same frame, message and chart point as an attached server's (mpmcore.sources.attach)
        frame = self.frame = frame_from_summary(CORE_SOURCE, s, url=self.settings.core_url)
        point = None
        if now - self._last_point_t >= HISTORY_INTERVAL:
            point = self._point(frame, now)
        gen = s.mpm_generation
        if gen != self._known_generation and (self._state_task is None or self._state_task.done()):
            self._known_generation = gen
            self._state_task = asyncio.create_task(self._refresh_for_generation())
        msg = dataclasses.replace(summary_message(frame, patterns=tuple(self.grid.patterns) if self.grid else ()),
                                  insight=self.insight, point=point)
        self.grid_hub.offer("summary", json.dumps(to_jsonable(msg), separators=(",", ":")))
        self._summaries += 1
        if self.render_live is not None and self.live_hub.channels:
            # a long process table (256 prefork children) re-rendered and swapped 4 times a second kept
            # the page's main thread busy: beyond BIG_TABLE rows it goes out once a second
            every = max(1, round(self.settings.summary_hz))
            procs = len(s.procs) <= BIG_TABLE or self._summaries % every == 0
            self.live_hub.offer("panels", self.render_live(dict(self.live_context(), with_procs=procs)))

    def _point(self, frame: SourceFrame, now: float) -> ChartPoint | None:
        seconds = now - self._last_point_t if self._last_point_t else HISTORY_INTERVAL
        self._last_point_t = now
        point, self._last_acc = chart_point(frame, self._last_acc)  # rps: None at the first point
        if point is None:
            return None
        point = dataclasses.replace(point, traffic=self.traffic.take_second(seconds))
        self.history.add(point)
        return point

    async def refresh_core_state(self) -> dict[str, Any] | None:
        await self._fetch_core_state()
        return self.core_state

    async def _fetch_core_state(self) -> bool:
        try:
            self.core_state = await self.control.status()
        except (CoreError, ControlError) as e:
            log.warning("core status: %s", e)
            return False
        return True

    async def _refresh_for_generation(self) -> None:
        """The master's `status` after the scoreboard showed a new generation. When it fails, the
        generation is forgotten (after a pause, during which no other refresh starts) so that a
        later tick asks again."""
        if not await self._fetch_core_state():
            await asyncio.sleep(STATE_RETRY)
            self._known_generation = None

    def live_context(self) -> dict[str, Any]:
        return {"summary": self.summary, "insight": self.insight, "tiles": self.tiles, "core": self.core_state,
                "traffic": self.traffic.patterns}

    # -- the error log --------------------------------------------------------------------------
    async def _follow_log(self) -> None:
        while True:
            await asyncio.sleep(LOG_POLL)
            self.read_log()

    def read_log(self) -> None:
        """The error log's new lines to the page and to ``log_listeners`` (the record button's
        recorder, which also calls this when it stops, for the last lines)."""
        path = self.control.error_log
        try:
            if os.path.getsize(path) < self._log_offset:
                self._log_offset = 0  # replaced by a new master
        except OSError:
            return
        lines, self._log_offset = read_from(path, self._log_offset)
        if lines:
            self.log_lines.extend(lines)
            self.live_hub.append("log", lines)
            for cb in list(self.log_listeners):
                cb(lines)

    def stats(self) -> dict[str, Any]:
        up = time.monotonic() - self.started
        return {"ticks": self.ticks, "uptime": round(up, 1),
                "tick_ms_avg": round(1000 * self.work_seconds / max(1, self.ticks), 3),
                "work_seconds": round(self.work_seconds, 4),
                "sampler_cpu_share": round(self.work_seconds / up, 4) if up else 0,
                "grid_frames_offered": self.frames_sent,
                "scoreboard": self.grid_hub.stats(), "live": self.live_hub.stats()}
