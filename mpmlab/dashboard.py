"""``Dashboard``: the container of the dashboard's services, created once per app by ``mpmlab.main.create_app``.

It holds the settings, the templates, the embedded core (``mpmlab.services.core``), the traffic runner
(``mpmlab.services.traffic``), the sampler and the attached sources, and starts and stops them in order.
Routes reach it through ``mpmlab.routes.deps``; what a user can do with it is ``mpmlab.services.actions``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi.templating import Jinja2Templates

from mpmcore.model import SourceFrame
from mpmcore.traffic import StatsFrame
from mpmlab import metrics
from mpmlab.routes import views
from mpmlab.services.core import CoreControl, EmbeddedCore
from mpmlab.services.experiments import ExperimentService
from mpmlab.services.locust import LocustWatcher
from mpmlab.services.sampler import Sampler
from mpmlab.services.sources import AttachedSource, SourceManager
from mpmlab.services.traffic import TrafficService, pattern_catalogue, target_key
from mpmlab.settings import CORE_SOURCE, TEMPLATES_DIR, DashboardSettings

#: Why an attached server off loopback is listed as a refused traffic target.
NOT_LOOPBACK = ("not on loopback: the traffic generator never sends to another machine, even with "
                "--allow-remote-attach")


@dataclass(frozen=True)
class TrafficTarget:
    """One choice of the traffic panel: a source and the base URL traffic would go to (None, with
    ``why``, when it is refused)."""

    name: str
    label: str
    url: str | None
    ok: bool
    why: str | None


class Dashboard:
    """Everything the routes use, created once per app."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
        views.setup_templates(self.templates)
        self.control = CoreControl(settings.core_listen)
        self.core: EmbeddedCore | None = None
        self.traffic = TrafficService(settings.core_url)
        self.sampler = Sampler(settings, self.control, self.traffic, render_live=self.render_live)
        self.traffic.add_listener(self._on_traffic_frame)
        self._traffic_ids: tuple[str, ...] = ()
        self.sources = SourceManager(settings, self.traffic, render_panel=self.render_source)
        self.sources.live_hub = self.sampler.live_hub
        self.locust = LocustWatcher(settings)  # Locust masters (attach locust+URL), beside our own patterns
        # /metrics: the traffic runner's cumulative figures, kept from its 250 ms frames
        self.traffic_totals = metrics.TrafficTotals()
        self.traffic.add_listener(self.traffic_totals.update)
        self.metrics_registry = metrics.build_registry(self.metric_frames, self.traffic_totals,
                                                       failures=self.scrape_failures, targets=self.target_names,
                                                       process=True)
        # the run store (--runs-db), experiments in the background, the record button
        self.experiments = ExperimentService(settings.runs_db)

    def render_live(self, ctx: dict[str, Any]) -> str:
        return str(self.templates.get_template("live/_panels.html").render(**ctx))

    def render_source(self, source: AttachedSource) -> str:
        return str(self.templates.get_template("live/_source_oob.html").render(src=source))

    # -- where the traffic panel may aim ----------------------------------------------------------
    def traffic_targets(self) -> list[TrafficTarget]:
        """The traffic panel's choices: the embedded core, then every attached server; one that is
        not on loopback is listed as refused (the generator's loopback rule holds even when
        --allow-remote-attach lets the dashboard *watch* a remote server)."""
        out: list[TrafficTarget] = []
        if self.settings.watch_core:
            out.append(TrafficTarget(CORE_SOURCE, f"embedded core ({self.settings.core_listen})",
                                     self.settings.core_url, True, None))
        for src in self.sources.sources:
            url = src.traffic_target()
            out.append(TrafficTarget(src.name, f"{src.name} ({src.kind}, {src.url})", url, url is not None,
                                     None if url else NOT_LOOPBACK))
        return out

    def target_names(self) -> dict[tuple[str, int] | None, str]:
        """(host, port) of each permitted target -> source name, to label running patterns."""
        return {target_key(t.url): t.name for t in self.traffic_targets() if t.url}

    def metric_frames(self) -> list[SourceFrame]:
        """Every source's latest frame, for /metrics: the embedded core's summary, then the attached."""
        out: list[SourceFrame] = []
        if self.settings.watch_core:
            out.append(self.sampler.frame)
        out.extend(self.sources.frames())
        return out

    def scrape_failures(self) -> list[metrics.SourceFailures]:
        """Every attached source's failed polls so far, for /metrics."""
        return [metrics.SourceFailures(s.name, s.kind, s.errors) for s in self.sources.sources]

    def _on_traffic_frame(self, frame: StatsFrame) -> None:
        hub = self.sampler.live_hub
        if not hub.channels:
            return
        running = self.traffic.patterns
        ids = tuple(p.id for p in running)
        t = self.templates
        changed = ids != self._traffic_ids
        if not running and not changed:
            return  # nothing runs, and the empty stats went out when the last pattern stopped
        recent = self.traffic.recent()  # once per frame, for both fragments
        if changed:
            self._traffic_ids = ids
            hub.offer("traffic-list", t.get_template("live/_traffic_list_oob.html").render(
                running=running, catalogue=pattern_catalogue(), target_names=self.target_names(),
                recent=recent))
        hub.offer("traffic-stats", t.get_template("live/_traffic_stats.html").render(running=running, recent=recent))

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        s.check()
        if s.start_core:
            self.core = EmbeddedCore(s.core_listen, s.mpm, s.core_settings)
            self.core.start()  # in the event loop's thread, on purpose: see mpmlab.services.corelaunch
        try:
            if s.watch_core:
                await self.control.status()
            if s.start_traffic:
                await self.traffic.start()
            if s.watch_core:
                self.sampler.start()
                await self.sampler.refresh_core_state()
            self.sources.start()
            self.locust.start()
            await asyncio.to_thread(self.experiments.open)  # a bad file is reported, not fatal
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.experiments.recorder is not None:  # the record button's run ends with the dashboard
            rec, self.experiments.recorder = self.experiments.recorder, None
            await rec.stop()
        await asyncio.to_thread(self.experiments.close)  # stops a running experiment first
        await self.locust.stop()
        await self.sources.stop()
        await self.sampler.stop()
        await self.traffic.close()
        if self.core is not None:
            await asyncio.to_thread(self.core.stop)
            self.core = None
