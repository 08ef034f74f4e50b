"""Source frames: the typed model of one poll (``mpmcore.model.SourceFrame``), and what every
source shares: the poll that never raises, the embedded core's summary as a frame, the
websocket summary message and the chart point made from any frame, the poll loop.

Safety: like the traffic generator, a source only talks to loopback addresses unless it is
created with ``allow_remote=True`` (``mpmcore.netloc``); the connection goes to the address that
was checked (no second DNS resolution). ``poll()`` never raises: a bad URL, a refused connection,
a timeout, a page that is not a status page all become a frame with ``ok=False`` and an ``error``
sentence, and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from mpmcore.model import (
    Capabilities,
    ChartPoint,
    ConnCounts,
    ErrorKind,
    GridLayout,
    SourceFrame,
    SourceKind,
    Summary,
    SummaryMessage,
    WorkerRow,
    busy_workers,
)
from mpmcore.netloc import Target, TargetError, base_url, is_loopback, resolve_target_sync
from mpmcore.sources.client import DEFAULT_TIMEOUT, SourceError

log = logging.getLogger("mpmlab.attach")

#: What the embedded core can show: everything.
CORE_CAPABILITIES = dict(scoreboard=True, workers=True, process_table=True, process_pids=True,
                         async_connections=True, memory=True, generation=True, threads_per_child=True,
                         patterns=True, control=True)


@runtime_checkable
class Source(Protocol):
    """Anything the dashboard can poll. ``poll()`` is synchronous (run it in a thread), never
    raises, and is called for one source at a time (sources keep a little state: AutoSource's
    detection); different sources may be polled in parallel."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def kind(self) -> SourceKind: ...

    def poll(self) -> SourceFrame: ...

    def close(self) -> None: ...


def failed(frame: SourceFrame, kind: ErrorKind, message: str) -> SourceFrame:
    """``frame`` as a failed poll: the error, and no figures."""
    return dataclasses.replace(frame, ok=False, error_kind=kind, error=message, summary=None, letters=None,
                               layout=None, workers=None, connections=None, busy_workers=(), busy_workers_total=0)


def with_workers(frame: SourceFrame, workers: tuple[WorkerRow, ...] | None) -> SourceFrame:
    """``frame`` with its ExtendedStatus rows and the busy ones the page lists."""
    shown, total = busy_workers(workers)
    return dataclasses.replace(frame, workers=workers, busy_workers=shown, busy_workers_total=total)


def split_url(url: str) -> tuple[str, str]:
    """(url without query and fragment, path) with the scheme filled in."""
    if "://" not in url:
        url = "http://" + url
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path or "/", "", "")), p.path or "/"


def default_name(url: str) -> str:
    return urlsplit(url).netloc or url


def _target_failed(frame: SourceFrame, url: str, e: TargetError) -> SourceFrame:
    msg = str(e)
    if "non-loopback" in msg:
        bad = msg.split("address(es)", 1)[-1].split(";", 1)[0].strip()
        return failed(frame, "not-allowed", f"attach {url}: {bad} is not a loopback address; attach mode only "
                                            "watches servers on this machine unless remote attach is allowed "
                                            "explicitly (allow_remote_attach = true, MPMLAB_ALLOW_REMOTE_ATTACH=1)")
    return failed(frame, "bad-url", msg.replace("target:", f"attach {url}:", 1))


class HTTPSource:
    """A status page polled over HTTP: one frame a poll, every failure turned into the frame's
    error (``poll`` never raises, so a poller never dies). Subclasses make the frame in ``_poll``."""

    kind: SourceKind = "unknown"

    def __init__(self, url: str, name: str | None = None, *, allow_remote: bool = False,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url, self.path = split_url(url)
        self.name = name or default_name(self.url)
        self.allow_remote = allow_remote
        self.timeout = timeout

    def close(self) -> None:
        pass

    def poll(self) -> SourceFrame:
        t0 = time.perf_counter()
        frame = SourceFrame(self.name, self.kind, self.url, time.time())
        try:
            target = resolve_target_sync(self.url, allow_remote=self.allow_remote)
            frame = dataclasses.replace(frame, traffic_target=base_url(target) if is_loopback(target.address) else None)
            frame = self._poll(target, frame)
        except SourceError as e:
            frame = failed(frame, e.kind, str(e))
        except TargetError as e:
            frame = _target_failed(frame, self.url, e)
        except Exception as e:  # a bug here must not stop the poller
            frame = failed(frame, "internal", f"{type(e).__name__}: {e}")
        return dataclasses.replace(frame, poll_ms=round((time.perf_counter() - t0) * 1000, 2))

    def _poll(self, target: Target, frame: SourceFrame) -> SourceFrame:
        raise NotImplementedError


async def poll_loop(source: Source, interval: float, on_frame: Callable[[SourceFrame], Any]) -> None:
    """Poll ``source`` every ``interval`` seconds in a worker thread and hand each frame to
    ``on_frame`` (in the event loop) until cancelled. A slow poll delays the next one instead of
    piling up; an exception in ``on_frame`` is logged and the loop goes on."""
    loop = asyncio.get_running_loop()
    next_t = loop.time()
    while True:
        frame = await asyncio.to_thread(source.poll)
        try:
            on_frame(frame)
        except Exception:
            log.exception("attach %s: frame handler failed", source.name)
        next_t += interval
        now = loop.time()
        if next_t < now:  # the poll took longer than the interval: start again from now
            next_t = now
        await asyncio.sleep(next_t - now)


# -- the embedded core as a frame ----------------------------------------------------------------
def frame_from_summary(name: str, summary: Summary | None, url: str = "",
                       workers: tuple[WorkerRow, ...] | None = None, error: str | None = None) -> SourceFrame:
    """The embedded core's summary (the sampler's ``summary``) as a frame, so code that handles
    frames (``mpmlab.metrics``, the API) handles every source the same way."""
    t = summary.current_time if summary is not None else time.time()
    frame = SourceFrame(name, "mpmlab", url, t)
    if summary is None:
        return failed(frame, "unreachable", error or "the embedded server is not running")
    tpc = max(1, summary.threads_per_child or 1)
    n = len(summary.scoreboard or "")
    layout = GridLayout(rows=-(-n // tpc) if n else 0, cols=tpc, threads_per_child=tpc, inferred=False)
    return with_workers(dataclasses.replace(
        frame, ok=True, summary=summary, letters=summary.scoreboard, layout=layout,
        capabilities=Capabilities(totals=summary.totals is not None, **CORE_CAPABILITIES)), workers)


# -- what the dashboard sends for any frame -----------------------------------------------------------
def summary_message(frame: SourceFrame, *, patterns: tuple[str, ...] = (), layout: bool = False) -> SummaryMessage:
    """The websocket ``summary`` message for a frame (``insight`` and ``point`` are for the
    dashboard to add). ``layout``: include the frame's grid layout (the attached sources' page
    draws with it)."""
    s = frame.summary
    if s is None:
        return SummaryMessage(t=frame.t, source=frame.source, kind=frame.kind, ok=frame.ok, error=frame.error,
                              connections=frame.connections, cannot_show=frame.cannot_show,
                              capabilities=frame.capabilities, patterns=patterns,
                              layout=frame.layout if layout else None)
    return SummaryMessage(
        t=frame.t, source=frame.source, kind=frame.kind, ok=frame.ok, error=frame.error, mpm=s.mpm,
        generation=s.mpm_generation, patterns=patterns, counts=s.state_counts, busy=s.busy, idle=s.idle,
        graceful=s.graceful, processes=s.processes, stopping=s.stopping,
        max_request_workers=s.max_request_workers, threads_per_child=s.threads_per_child,
        server_limit=s.server_limit,
        conns=ConnCounts(total=s.conns_total, keep_alive=s.conns_async_keep_alive,
                         writing=s.conns_async_writing, closing=s.conns_async_closing),
        accesses=s.totals.accesses if s.totals is not None else None,
        connections=frame.connections, cannot_show=frame.cannot_show, capabilities=frame.capabilities,
        layout=frame.layout if layout else None)


def chart_point(frame: SourceFrame, last: tuple[float, int] | None) -> tuple[ChartPoint | None, tuple[float, int] | None]:
    """A chart point (``traffic`` left for the dashboard), and the new ``last`` (time, accesses)
    to pass next time. Unknown figures are None; rps needs two frames. For nginx, R and W are its
    Reading and Writing connections and parked_keep_alive its Waiting."""
    s = frame.summary
    if not frame.ok or s is None:
        return None, last
    accesses = s.totals.accesses if s.totals is not None else None
    rps = None
    if accesses is not None and last is not None and frame.t > last[0] and accesses >= last[1]:
        rps = round((accesses - last[1]) / (frame.t - last[0]), 2)
    c = s.state_counts
    conn = frame.connections
    pss = s.proc_sum.pss_kb
    point = ChartPoint(
        t=round(frame.t, 3), rps=rps, busy=s.busy, idle=s.idle,
        # the G slots the grid shows (GracefulWorkers skips stopping children)
        graceful=s.graceful_shown if s.graceful_shown is not None else s.graceful,
        R=c.get("R") if c else (conn.reading if conn else None),
        W=c.get("W") if c else (conn.writing if conn else None),
        K=c.get("K") if c else None, C=c.get("C") if c else None,
        parked_keep_alive=s.conns_async_keep_alive, async_writing=s.conns_async_writing,
        async_closing=s.conns_async_closing, conns_total=s.conns_total,
        pss_mb=round(pss / 1024, 1) if pss is not None else None,
        mpm=s.mpm, generation=s.mpm_generation,
    )
    return point, ((frame.t, accesses) if accesses is not None else last)
