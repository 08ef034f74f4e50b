"""The dashboard application: ``create_app(settings)`` and ``run_dashboard(args)`` (``mpmlab dashboard``).

The lifespan owns the processes and tasks: it starts the embedded master (``app.services.core``) and the
traffic runner (``mpmcore.traffic``), then the sampler and one poller task per attached server
(``app.services.sources``); on shutdown (also Ctrl-C, which uvicorn turns into a shutdown) it stops them in
reverse order: tasks cancelled and awaited, processes each by its pid, TERM then KILL after a deadline.
Everything a route needs is reached through ``request.app.state.dashboard`` via FastAPI
dependencies; there are no module-level globals.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app import metrics
from app.security import host_allowed
from app.services.core import ControlError, CoreControl, CoreError, EmbeddedCore
from app.services.sampler import Sampler
from app.services.sources import AttachedSource, SourceManager
from app.services.traffic import TrafficService
from app.settings import CORE_SOURCE, STATIC_DIR, TEMPLATES_DIR, DashboardSettings
from mpmcore import __version__
from mpmcore.directives import DirectiveError, parse_assignments
from mpmcore.sources.attach import SourceFrame
from mpmcore.traffic import StatsFrame, TrafficError

log = logging.getLogger("mpmlab.dashboard")


class Dashboard:
    """Everything the routes use, created once per app."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
        from app.routes import views
        views.setup_templates(self.templates)
        self.control = CoreControl(settings.core_listen)
        self.core: EmbeddedCore | None = None
        self.traffic = TrafficService(settings.core_url)
        self.sampler = Sampler(settings, self.control, self.traffic, render_live=self.render_live)
        self.traffic.add_listener(self._on_traffic_frame)
        self._traffic_ids: tuple[str, ...] = ()
        self.sources = SourceManager(settings, self.traffic, render_panel=self.render_source)
        self.sources.live_hub = self.sampler.live_hub
        # /metrics: the traffic runner's cumulative figures, kept from its 250 ms frames
        self.traffic_totals = metrics.TrafficTotals()
        self.traffic.add_listener(self.traffic_totals.update)
        self.metrics_registry = metrics.build_registry(self.metric_frames, self.traffic_totals)

    def render_live(self, ctx: dict[str, Any]) -> str:
        return self.templates.get_template("live/_panels.html").render(**ctx)

    def render_source(self, source: AttachedSource) -> str:
        return self.templates.get_template("live/_source_oob.html").render(src=source)

    # -- where the traffic panel may aim ----------------------------------------------------------
    def traffic_targets(self) -> list[dict[str, Any]]:
        """The traffic panel's choices: the embedded core, then every attached server; one that is
        not on loopback is listed as refused (the generator's loopback rule holds even when
        --allow-remote-attach lets the dashboard *watch* a remote server)."""
        out: list[dict[str, Any]] = []
        if self.settings.watch_core:
            out.append({"name": CORE_SOURCE, "label": f"embedded core ({self.settings.core_listen})",
                        "url": self.settings.core_url, "ok": True, "why": None})
        for src in self.sources.sources:
            url = src.traffic_target()
            out.append({"name": src.name, "label": f"{src.name} ({src.kind}, {src.url})", "url": url,
                        "ok": url is not None,
                        "why": None if url else "not on loopback: the traffic generator never sends to "
                                                "another machine, even with --allow-remote-attach"})
        return out

    def traffic_target(self, source: str | None) -> tuple[str, str]:
        """(source name, base URL) for a pattern aimed at ``source`` (None: the embedded core, or
        the only attached server when there is no core). KeyError: no such source (404);
        ValueError: not a permitted target (422)."""
        if source in (None, "") and not self.settings.watch_core and len(self.sources.sources) == 1:
            source = self.sources.sources[0].name
        if source in (None, "", CORE_SOURCE):
            if not self.settings.watch_core:
                raise ValueError("source: there is no embedded core (--no-core); aim at an attached server")
            return CORE_SOURCE, self.settings.core_url
        src = self.sources.get(str(source))
        if src is None:
            raise KeyError(f"no source {source!r}; known: "
                           + ", ".join(t["name"] for t in self.traffic_targets()))
        url = src.traffic_target()
        if url is None:
            raise ValueError(f"source {src.name}: {src.url} is not on loopback; the traffic generator only "
                             "sends to this machine (127.0.0.0/8, ::1), even when --allow-remote-attach "
                             "lets the dashboard watch a remote server")
        return src.name, url

    def target_names(self) -> dict[Any, str]:
        """(host, port) of each permitted target -> source name, to label running patterns."""
        from app.services.traffic import target_key
        return {target_key(t["url"]): t["name"] for t in self.traffic_targets() if t["url"]}

    def metric_frames(self) -> list[SourceFrame]:
        """Every source's latest frame, for /metrics: the embedded core's summary, then the attached."""
        out: list[SourceFrame] = []
        if self.settings.watch_core:
            out.append(self.sampler.frame)
        out.extend(self.sources.frames())
        return out

    def _on_traffic_frame(self, frame: StatsFrame) -> None:
        hub = self.sampler.live_hub
        if not hub.channels:
            return
        running = self.traffic.patterns
        ids = tuple(p.id for p in running)
        t = self.templates
        changed = ids != self._traffic_ids
        if changed:
            self._traffic_ids = ids
            hub.offer("traffic-list", t.get_template("live/_traffic_list_oob.html").render(
                running=running, catalogue=_catalogue(), target_names=self.target_names()))
        if not running and not changed:
            return  # nothing runs, and the empty stats went out when the last pattern stopped
        hub.offer("traffic-stats", t.get_template("live/_traffic_stats.html").render(running=running))

    async def start(self) -> None:
        s = self.settings
        s.check()
        if s.start_core:
            self.core = EmbeddedCore(s.core_listen, s.mpm, s.core_settings)
            self.core.start()  # in the event loop's thread, on purpose: see app.services.corelaunch
        try:
            if s.watch_core:
                await self.control.status()
            if s.start_traffic:
                await self.traffic.start()
            if s.watch_core:
                self.sampler.start()
                await self.sampler.refresh_core_state()
            self.sources.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.sources.stop()
        await self.sampler.stop()
        await self.traffic.close()
        if self.core is not None:
            await asyncio.to_thread(self.core.stop)
            self.core = None


def _catalogue() -> dict[str, Any]:
    from app.services.traffic import pattern_catalogue
    return pattern_catalogue()


def create_app(settings: DashboardSettings, on_ready: Callable[[], None] | None = None) -> FastAPI:
    settings.check()
    dashboard = Dashboard(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dashboard.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await dashboard.stop()

    app = FastAPI(title="mpmlab dashboard", version=__version__, lifespan=lifespan,
                  description="Watch and steer Apache httpd's MPMs (prefork, worker, event) in mpmlab's embedded "
                              "server. Everything the page does is here. Control calls (POST/PATCH/DELETE) refuse "
                              "cross-origin browser requests and, when the dashboard has a token, need it.")
    app.state.dashboard = dashboard

    @app.middleware("http")
    async def check_host(request: Request, call_next):
        if not host_allowed(request, settings):
            return PlainTextResponse("Host not allowed (the dashboard answers to loopback names only)", 403)
        return await call_next(request)

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, e: ControlError):
        body: dict[str, Any] = {"detail": e.message}
        if e.directive:
            body["directive"] = e.directive
        return JSONResponse(body, status_code=422 if e.directive else 409)

    @app.exception_handler(DirectiveError)
    async def _directive_error(request: Request, e: DirectiveError):
        return JSONResponse({"detail": str(e), "directive": e.directive}, status_code=422)

    @app.exception_handler(CoreError)
    async def _core_error(request: Request, e: CoreError):
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.exception_handler(TrafficError)
    async def _traffic_error(request: Request, e: TrafficError):
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.get("/metrics", tags=["api"], response_class=PlainTextResponse,
             summary="Prometheus text format: every source (core and attached), the traffic generator")
    async def prometheus_metrics() -> Response:
        # Read-only figures, like every GET here: no token needed (Prometheus scrapes it). The Host
        # check above still applies on a loopback bind.
        body, ctype = await asyncio.to_thread(metrics.make_metrics_response, dashboard.metrics_registry)
        return Response(body, media_type=ctype)

    from app.routes import api, ui, ws
    app.include_router(api.router)
    app.include_router(ui.router)
    app.include_router(ws.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def settings_from_args(args) -> DashboardSettings:
    return DashboardSettings(
        host=args.host, port=args.port, mpm=args.mpm, core_listen=args.core_listen,
        core_settings=parse_assignments(args.set or []), token=args.token,
        start_core=not args.no_core, grid_hz=float(getattr(args, "fps", None) or 20),
        attach=list(getattr(args, "attach", None) or []),
        attach_interval=float(getattr(args, "attach_interval", None) or 1.0),
        allow_remote_attach=bool(getattr(args, "allow_remote_attach", False)))


def run_dashboard(args) -> int:
    import uvicorn

    try:
        settings = settings_from_args(args)
        settings.check()
    except (ValueError, DirectiveError) as e:
        print(f"mpmlab dashboard: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}/" + (f"?token={settings.token}" if settings.token else "")

    def announce() -> None:  # after the lifespan started the core: the URL is about to be live
        watched = [f"embedded server: {settings.mpm} on http://{settings.core_listen}/"] if settings.watch_core else []
        watched += [f"attached: {s.name} ({s.url})" for s in app.state.dashboard.sources.sources]
        print(f"mpmlab dashboard: {url}  ({'; '.join(watched)})", file=sys.stderr, flush=True)

    app = create_app(settings, on_ready=announce)

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    try:
        server.run()
    except CoreError as e:
        print(f"mpmlab dashboard: {e}", file=sys.stderr)
        return 1
    return 0 if server.started else 1
