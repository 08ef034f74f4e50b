"""The traffic generator as the dashboard uses it: the runner process, its control client, presets,
and per-second figures for the charts.

Every pattern started from the dashboard goes to the embedded server or to an attached server on
loopback: the dashboard fills in the target itself (``start_pattern(..., target=...)``), a request
that names a target in its parameters is refused, and the generator's own rule (loopback only, no
``allow_remote`` from the dashboard, ever) still checks every address it connects to.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpmcore.traffic import PATTERNS, TrafficClient, TrafficError, TrafficRunner, catalogue_json, validate_params
from mpmcore.traffic.runstats import RunInfo, StatsFrame
from mpmcore.traffic.target import TargetError, parse_url

log = logging.getLogger("mpmlab.dashboard")

#: Parameters the dashboard does not let a user set: it fills in the target (the embedded server or
#: an attached server on loopback) and never allows a remote one.
HIDDEN_PARAMS = ("target", "allow_remote", "tls_verify", "tls_cafile")
#: How long presets run unless stopped (the generator's own default is 30 s).
PRESET_DURATION = 600.0
#: Seconds of frames a running pattern's card reads its rate and latency over: a 250 ms frame of
#: Browsers (think time between pages) often has no response at all.
RECENT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RecentFigures:
    """A running pattern's figures over its last RECENT_SECONDS of frames (its card's line): rps
    over that time, p50 the count-weighted mean of the frames' p50, p99 the worst frame's."""

    seconds: float
    rps: float
    p50: float | None
    p99: float | None
    errors: int


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    pattern: str
    params: dict[str, Any]
    teaches: str


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("browsers", "Browsers, 6 keep-alive connections each", "browsers",
           {"clients": 70, "connections_per_browser": 6, "think_time": 5.0, "duration": PRESET_DURATION},
           "420 idle keep-alive connections: they fill worker and prefork with K; event parks them"),
    Preset("slowloris", "Slowloris", "slowloris",
           {"connections": 150, "interval": 10.0, "duration": PRESET_DURATION},
           "150 requests that never finish hold a worker each (R) under every MPM"),
    Preset("ajax", "AJAX polling", "ajax",
           {"clients": 50, "interval": 1.0, "duration": PRESET_DURATION},
           "50 clients poll once a second over one keep-alive connection each"),
    Preset("one-at-a-time", "One request at a time", "steady",
           {"model": "closed", "clients": 1, "think_time": 0.0, "duration": PRESET_DURATION},
           "one client, one request in flight: the baseline"),
]}


def pattern_catalogue() -> dict[str, Any]:
    """PATTERNS for forms, without the parameters the dashboard fills in itself."""
    out = catalogue_json()
    for p in out.values():
        p["params"] = [s for s in p["params"] if s["name"] not in HIDDEN_PARAMS]
    return out


def clean_params(pattern: str, params: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """Drop empty form fields; refuse the hidden ones; check the rest (ValueError names the field)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k in HIDDEN_PARAMS:
            if k == "target":
                raise ValueError("target: the dashboard sends traffic to its embedded server only, or to an "
                                 "attached server on loopback chosen as the source (not a URL in the parameters)")
            raise ValueError(f"{k}: not settable from the dashboard")
        if v is None or (isinstance(v, str) and v.strip() == ""):
            continue
        out[k] = v
    if partial:
        validate_params(pattern, out, partial=True)
    return out


def target_key(url: str | None) -> tuple[str, int] | None:
    """(host, port) of a target URL, to match the runner's frames with a source."""
    if not url:
        return None
    try:
        t = parse_url(url)
    except TargetError:
        return None
    return t.host.lower(), t.port


class _Window:
    """One second of traffic figures for one label, folded from the 250 ms frames."""

    __slots__ = ("errors", "p50_count", "p50_weighted", "p99", "responses", "server_errors")

    def __init__(self) -> None:
        self.responses = self.errors = self.server_errors = 0
        self.p50_weighted = 0.0
        self.p50_count = 0
        self.p99: float | None = None


class TrafficService:
    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.runner: TrafficRunner | None = None
        self.client: TrafficClient | None = None
        self.patterns: list[RunInfo] = []  # running patterns, from the last frame
        # per target (host, port), per label: the figures of the current second
        self._windows: dict[tuple[str, int] | None, dict[str, _Window]] = {}
        # per running pattern id: (seconds, responses, errors, p50, p99, latency count) of its last frames
        self._recent: dict[str, collections.deque[tuple[float, int, int, float | None, float | None, int]]] = {}
        self._listeners: list[Callable[[StatsFrame], None]] = []
        self.error: str | None = None

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        runner = TrafficRunner()
        try:
            await asyncio.to_thread(runner.start)
            self.runner = runner
            self.client = await runner.client()
            await self.client.on_frame(self._on_frame)
        except (TrafficError, OSError) as e:
            self.error = f"traffic generator unavailable: {e}"
            log.error(self.error)
            await self.close()

    async def close(self) -> None:
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.stop_all(), 10)
            except Exception:
                pass
            await self.client.close()
            self.client = None
        if self.runner is not None:
            await asyncio.to_thread(self.runner.close)
            self.runner = None

    @property
    def pid(self) -> int | None:
        return self.runner.pid if self.runner else None

    def _need(self) -> TrafficClient:
        if self.client is None:
            raise TrafficError(self.error or "the traffic generator is not running")
        return self.client

    # -- control ------------------------------------------------------------------------------
    async def start_pattern(self, pattern: str, params: dict[str, Any], target: str | None = None) -> str:
        """Start ``pattern`` against ``target`` (a base URL the dashboard chose: the embedded
        server by default). ``allow_remote`` is never passed: the runner refuses non-loopback."""
        p = clean_params(pattern, params)
        p["target"] = target or self.target_url
        return await self._need().start(pattern, **p)

    async def start_preset(self, name: str, overrides: dict[str, Any] | None = None,
                           target: str | None = None) -> str:
        if name not in PRESETS:
            raise KeyError(f"no preset {name!r}; known: {', '.join(PRESETS)}")
        pr = PRESETS[name]
        params = dict(pr.params)
        params.update(overrides or {})
        return await self.start_pattern(pr.pattern, params, target)

    async def update(self, pattern_id: str, params: dict[str, Any]) -> RunInfo:
        info = await self._need().get(pattern_id)
        p = clean_params(info.pattern, params, partial=True)
        return await self._need().update(pattern_id, **p)

    async def stop(self, pattern_id: str) -> RunInfo:
        return await self._need().stop(pattern_id)

    async def stop_all(self) -> list[RunInfo]:
        return await self._need().stop_all()

    async def list(self) -> list[RunInfo]:
        return await self._need().list()

    async def get(self, pattern_id: str) -> RunInfo:
        return await self._need().get(pattern_id)

    # -- frames -------------------------------------------------------------------------------
    def add_listener(self, cb: Callable[[StatsFrame], None]) -> None:
        self._listeners.append(cb)

    def _on_frame(self, frame: StatsFrame) -> None:
        self.patterns = [p for p in frame.patterns if p.running]
        self._keep_recent()
        for p in frame.patterns:
            per_target = self._windows.setdefault(target_key(p.target), {})
            wdw = per_target.setdefault(p.label or p.pattern, _Window())
            live = p.live
            if live is None:
                continue
            wdw.responses += live.responses
            wdw.errors += live.errors_total
            wdw.server_errors += live.status.get("5xx", 0)
            lat = live.latency_ms
            if lat:
                wdw.p50_weighted += lat.p50 * lat.count
                wdw.p50_count += lat.count
                wdw.p99 = lat.p99 if wdw.p99 is None else max(wdw.p99, lat.p99)
        for cb in list(self._listeners):
            cb(frame)

    def _keep_recent(self) -> None:
        ids = set()
        for p in self.patterns:
            ids.add(p.id)
            live = p.live
            if live is None:
                continue
            dq = self._recent.setdefault(p.id, collections.deque())
            lat = live.latency_ms
            dq.append((live.seconds, live.responses, live.errors_total, lat.p50 if lat else None,
                       lat.p99 if lat else None, lat.count if lat else 0))
            while len(dq) > 1 and sum(x[0] for x in dq) - dq[0][0] >= RECENT_SECONDS:
                dq.popleft()
        for gone in set(self._recent) - ids:
            del self._recent[gone]

    def recent(self) -> dict[str, RecentFigures]:
        """Per running pattern id, its figures over the last RECENT_SECONDS."""
        out: dict[str, RecentFigures] = {}
        for pid, dq in self._recent.items():
            seconds = sum(x[0] for x in dq)
            responses = sum(x[1] for x in dq)
            counted = [(x[3], x[4], x[5]) for x in dq if x[5] and x[3] is not None and x[4] is not None]
            n = sum(c for _, _, c in counted)
            out[pid] = RecentFigures(
                seconds=round(seconds, 2), rps=responses / seconds if seconds > 0 else 0.0,
                p50=sum(p50 * c for p50, _, c in counted) / n if n else None,
                p99=max(p99 for _, p99, _ in counted) if counted else None,
                errors=sum(x[2] for x in dq))
        return out

    def running_labels(self, target: str | None = None) -> set[str]:
        """The labels of the running patterns aimed at ``target`` (default: the embedded server)."""
        key = target_key(target or self.target_url)
        return {p.label or p.pattern for p in self.patterns if target_key(p.target) == key}

    def take_second(self, seconds: float, target: str | None = None) -> dict[str, dict[str, Any]]:
        """Per label of the patterns aimed at ``target`` (default: the embedded server) since the
        last call for that target: p50 (count-weighted mean of the frames' p50), p99 (worst frame),
        responses/s, errors/s (client-side errors plus 5xx)."""
        out: dict[str, dict[str, Any]] = {}
        key = target_key(target or self.target_url)
        running = self.running_labels(target)
        for label, w in self._windows.get(key, {}).items():
            out[label] = {
                "p50": round(w.p50_weighted / w.p50_count, 3) if w.p50_count else None,
                "p99": w.p99,
                "rps": round(w.responses / seconds, 2) if seconds > 0 else 0.0,
                "errors": round((w.errors + w.server_errors) / seconds, 2) if seconds > 0 else 0.0,
            }
        self._windows[key] = {k: _Window() for k in running}
        return out
