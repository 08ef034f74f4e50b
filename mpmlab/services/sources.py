"""Attached sources: real servers (Apache httpd's and lighttpd's mod_status, nginx's stub_status) watched beside
(or instead of) the embedded core.

One ``poll_loop`` task per source (``mpmcore.sources.attach``), started and stopped by the app's lifespan.
Each frame is turned, once, into what every browser needs: the binary grid frame (same layout as
``mpmlab.services.grid``, so the same canvas code draws it), the summary message with "what is happening"
(Apache's by the rules; nginx and lighttpd in their own counts' words) and a chart point, and the panel's
HTML fragments. Both go out through hubs (``mpmlab.services.hub``): per client, one pending message per kind
and source, the latest wins, so a slow browser never slows a poller.

On ``/ws/sources`` every message says which source it is for: JSON messages carry ``"source"``;
binary grid frames come in an envelope, ``0x53 ('S')``, one byte N, N bytes of the source's name
(UTF-8), then the grid frame of ``mpmlab.services.grid``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpmcore.model import ChartPoint, Insight, SourceFrame, SourceKind, Tile, to_jsonable
from mpmcore.netloc import TargetError, base_url, parse_url
from mpmcore.sources.attach import make_source
from mpmcore.sources.frames import chart_point, poll_loop, summary_message
from mpmcore.sources.grid import grid_frame
from mpmlab.services.hub import Hub
from mpmlab.services.insights import describe, describe_lighttpd, describe_nginx
from mpmlab.services.locust import split_specs
from mpmlab.services.sampler import HISTORY_INTERVAL, History
from mpmlab.services.tiles import source_tiles
from mpmlab.services.traffic import TrafficService
from mpmlab.settings import DashboardSettings, is_loopback_host

log = logging.getLogger("mpmlab.dashboard")

ENVELOPE_MAGIC = 0x53


def envelope(name: str, grid: bytes) -> bytes:
    raw = name.encode("utf-8")[:255]
    return bytes((ENVELOPE_MAGIC, len(raw))) + raw + grid


def _slug(name: str, i: int) -> str:
    """A DOM id for a source: its position plus its name's safe characters."""
    return f"s{i}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "source")


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """A source the dashboard watches (the embedded core or an attached server) and its last frame."""

    name: str
    key: str
    kind: SourceKind
    url: str
    embedded: bool
    traffic_target: str | None
    insight: Insight | None
    spec: str | None = None
    polls: int | None = None
    errors: int | None = None
    frame: SourceFrame | None = None


class AttachedSource:
    """One watched server: its poller task, its latest frame and what was derived from it."""

    def __init__(self, spec: str, index: int, settings: DashboardSettings) -> None:
        self.spec = spec
        self.source = make_source(spec, allow_remote=settings.allow_remote_attach)
        self.name: str = self.source.name
        self.key = _slug(self.name, index)
        self.frame: SourceFrame | None = None
        self.last_ok: SourceFrame | None = None  # the last frame with figures (a failed poll keeps them on show)
        self.grid: bytes | None = None  # the last grid frame in its envelope
        self.message: str | None = None  # the last summary message, JSON
        self.insight: Insight | None = None
        self.tiles: tuple[Tile, ...] = ()  # of the shown frame
        self.history = History(settings.history_seconds)
        self.polls = 0
        self.errors = 0
        self._last: tuple[float, int] | None = None
        self._last_point_t = 0.0
        self.task: asyncio.Task[None] | None = None

    @property
    def kind(self) -> SourceKind:
        return self.frame.kind if self.frame is not None else self.source.kind

    @property
    def url(self) -> str:
        return self.source.url

    @property
    def shown(self) -> SourceFrame | None:
        """The frame whose figures the panel shows: the latest, or after a failed poll the last
        one that had figures (None before the first poll)."""
        if self.frame is not None and not self.frame.ok and self.last_ok is not None:
            return self.last_ok
        return self.frame

    @property
    def last_ok_age_s(self) -> float | None:
        """How old the figures on show are when the last poll failed (None otherwise)."""
        if self.frame is None or self.last_ok is None:
            return None
        return self.frame.t - self.last_ok.t

    def traffic_target(self) -> str | None:
        """The base URL the traffic panel may aim at: only a loopback server (from the last poll,
        which checked the address it connected to; before the first poll, a literal loopback host)."""
        if self.frame is not None:
            return self.frame.traffic_target
        try:
            t = parse_url(self.url)
        except TargetError:
            return None
        return base_url(t) if is_loopback_host(t.host) else None  # the form of the polls' answer

    def entry(self) -> SourceEntry:
        return SourceEntry(name=self.name, key=self.key, kind=self.kind, url=self.url, spec=self.spec,
                           embedded=False, polls=self.polls, errors=self.errors,
                           traffic_target=self.traffic_target(), insight=self.insight, frame=self.frame)

    def to_dict(self, frame: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = to_jsonable(self.entry())
        if not frame:
            del d["frame"]
        return d


def _down_insight(frame: SourceFrame, last_ok: SourceFrame | None) -> Insight:
    """Why a server stopped answering its status page, when its last figures say."""
    last = last_ok.summary if last_ok is not None else None
    if frame.error_kind == "timeout" and last is not None and last.idle == 0 and last.busy:
        counts = last.state_counts or {}
        held = max((k for k in ("R", "W", "K") if counts.get(k)), key=lambda k: counts[k], default=None)
        why = {"R": "reading requests that never finish (R)", "W": "sending replies (W)",
               "K": "holding idle keep-alive connections (K)"}.get(held or "", "busy")
        return Insight("crit", f"{frame.source} does not answer its own status page: at the last answer all "
                               f"{last.busy} workers were {why}",
                       ("the status page is a request like any other: it waits in the listen backlog for a "
                        "free worker, so the figures shown are from the last poll that got an answer",
                        frame.error or ""))
    if frame.error_kind == "timeout" and frame.kind == "apache":
        return Insight("crit", f"{frame.source} does not answer its own status page within the poll's timeout: "
                               "every worker is probably busy",
                       ("Apache serves /server-status with a worker like any request: when none is free, the "
                        "poll waits in the listen backlog; the figures shown are from the last answer",
                        frame.error or ""))
    return Insight("warn", f"{frame.source}: {frame.error}")


class SourceManager:
    """The attached sources of one app, their pollers and their websocket hubs."""

    def __init__(self, settings: DashboardSettings, traffic: TrafficService,
                 render_panel: Callable[[AttachedSource], str] | None = None) -> None:
        self.settings = settings
        self.traffic = traffic
        self.render_panel = render_panel
        pages, _ = split_specs(settings.attach)  # Locust masters are traffic sources: mpmlab.services.locust
        self.sources: list[AttachedSource] = [AttachedSource(spec, i, settings) for i, spec in enumerate(pages)]
        self.hub = Hub("sources")  # /ws/sources: grid frames in envelopes, JSON summaries
        self.live_hub: Hub | None = None  # the page's /ws/live (htmx fragments), set by the app
        self._seq = 0

    def get(self, name: str) -> AttachedSource | None:
        for s in self.sources:
            if s.name == name or s.key == name:
                return s
        return None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        interval = self.settings.attach_interval
        for s in self.sources:
            s.task = asyncio.create_task(poll_loop(s.source, interval, self._handler(s)), name=f"attach-{s.name}")

    def _handler(self, s: AttachedSource) -> Callable[[SourceFrame], None]:
        return lambda f: self.on_frame(s, f)

    async def stop(self) -> None:
        tasks = [s.task for s in self.sources if s.task is not None]
        for t in tasks:
            t.cancel()
        # a poll in progress runs in a worker thread: the task ends when it returns (3 s at most)
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in self.sources:
            s.task = None
            try:
                s.source.close()
            except Exception:
                pass

    # -- frames ---------------------------------------------------------------------------------
    def on_frame(self, s: AttachedSource, frame: SourceFrame) -> None:
        s.frame = frame
        s.polls += 1
        if not frame.ok:
            s.errors += 1
        self._seq += 1
        g = grid_frame(frame, seq=self._seq, now_ms=frame.t * 1000)
        if g is not None:
            s.grid = envelope(s.name, g)  # a failed poll keeps the last grid on show
        # "what is happening" reads a scoreboard: Apache's; nginx has none, its counts are said as they are
        if frame.ok and frame.kind == "apache" and frame.summary and frame.summary.state_counts is not None:
            s.insight = describe(frame.summary)
        elif frame.ok and frame.kind == "nginx" and frame.connections:
            s.insight = describe_nginx(frame.connections)
        elif frame.ok and frame.kind == "lighttpd" and frame.summary and frame.summary.lighttpd:
            s.insight = describe_lighttpd(frame.summary.lighttpd)
        elif not frame.ok:
            s.insight = _down_insight(frame, s.last_ok)
        else:
            s.insight = None
        if frame.ok:
            s.last_ok = frame
        s.tiles = source_tiles(s.shown)
        point: ChartPoint | None = None
        # 0.9: polls at a 1 s (or 0.5 s) interval land a few ms early or late; a strict >= would
        # drop every other point whenever one lands early
        if frame.ok and frame.t - s._last_point_t >= HISTORY_INTERVAL * 0.9:
            point, s._last = chart_point(frame, s._last)
            if point is not None:
                seconds = frame.t - s._last_point_t if s._last_point_t else HISTORY_INTERVAL
                s._last_point_t = frame.t
                target = frame.traffic_target
                point = dataclasses.replace(point, traffic=self.traffic.take_second(seconds, target) if target else {})
                s.history.add(point)
        # the words and tables go to /ws/live as fragments, not here
        msg = dataclasses.replace(summary_message(frame, layout=True), point=point)
        s.message = json.dumps(to_jsonable(msg), separators=(",", ":"))  # encoded once: for the hub and new clients
        if s.grid is not None:
            self.hub.offer(f"grid:{s.key}", s.grid)
        self.hub.offer(f"summary:{s.key}", s.message)
        if self.render_panel is not None and self.live_hub is not None and self.live_hub.channels:
            self.live_hub.offer(f"source:{s.key}", self.render_panel(s))

    def first_messages(self) -> list[Any]:
        """What a new /ws/sources client gets at once: every source's last summary and grid."""
        out: list[Any] = []
        for s in self.sources:
            if s.message is not None:
                out.append(s.message)
            if s.grid is not None:
                out.append(s.grid)
        return out

    def frames(self) -> list[SourceFrame]:
        return [s.frame for s in self.sources if s.frame is not None]

    def stats(self) -> dict[str, Any]:
        return {"sources": {s.name: {"polls": s.polls, "errors": s.errors,
                                     "poll_ms": s.frame.poll_ms if s.frame else None,
                                     "age_s": round(time.time() - s.frame.t, 2) if s.frame else None}
                            for s in self.sources},
                "hub": self.hub.stats()}
