"""The dashboard application: ``create_app(settings)`` and ``run_dashboard(args)`` (``mpmlab dashboard``).

The lifespan owns the processes and tasks through ``app.dashboard.Dashboard``: it starts the embedded
master (``app.services.core``) and the traffic runner (``mpmcore.traffic``), then the sampler and one
poller task per attached server (``app.services.sources``); on shutdown (also Ctrl-C, which uvicorn turns
into a shutdown) it stops them in reverse order: tasks cancelled and awaited, processes each by its pid,
TERM then KILL after a deadline. Everything a route needs is reached through
``request.app.state.dashboard`` via FastAPI dependencies (``app.routes.deps``); there are no
module-level globals.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from app import metrics
from app.dashboard import Dashboard
from app.routes import api, ui, ws
from app.security import host_allowed
from app.services.actions import ActionError
from app.services.core import ControlError, CoreError
from app.settings import STATIC_DIR, DashboardSettings
from mpmcore import __version__
from mpmcore.directives import DirectiveError, parse_assignments
from mpmcore.traffic import TrafficError


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
    async def check_host(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not host_allowed(request, settings):
            return PlainTextResponse("Host not allowed (the dashboard answers to loopback names only)", 403)
        return await call_next(request)

    # The body of every error is app.routes.errors.ErrorBody. The actions raise ActionError; the
    # services' own errors can still reach a route that reads (GET /api/traffic asks the runner).
    @app.exception_handler(ActionError)
    async def _action_error(request: Request, e: ActionError) -> Response:
        return _error(e.status, e.message, e.directive)

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, e: ControlError) -> Response:
        return _error(422 if e.directive else 409, e.message, e.directive)

    @app.exception_handler(DirectiveError)
    async def _directive_error(request: Request, e: DirectiveError) -> Response:
        return _error(422, str(e), e.directive)

    @app.exception_handler(CoreError)
    async def _core_error(request: Request, e: CoreError) -> Response:
        return _error(503, str(e))

    @app.exception_handler(TrafficError)
    async def _traffic_error(request: Request, e: TrafficError) -> Response:
        return _error(503, str(e))

    @app.get("/metrics", tags=["api"], response_class=PlainTextResponse,
             summary="Prometheus text format: every source (core and attached), the traffic generator")
    async def prometheus_metrics() -> Response:
        # Read-only figures, like every GET here: no token needed (Prometheus scrapes it). The Host
        # check above still applies on a loopback bind.
        body, ctype = await asyncio.to_thread(metrics.make_metrics_response, dashboard.metrics_registry)
        return Response(body, media_type=ctype)

    app.include_router(api.router)
    app.include_router(ui.router)
    app.include_router(ws.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _error(status: int, message: str, directive: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if directive:
        body["directive"] = directive
    return JSONResponse(body, status_code=status)


def settings_from_args(args: argparse.Namespace) -> DashboardSettings:
    return DashboardSettings(
        host=args.host, port=args.port, mpm=args.mpm, core_listen=args.core_listen,
        core_settings=parse_assignments(args.set or []), token=args.token,
        start_core=not args.no_core, grid_hz=float(getattr(args, "fps", None) or 20),
        attach=list(getattr(args, "attach", None) or []),
        attach_interval=float(getattr(args, "attach_interval", None) or 1.0),
        allow_remote_attach=bool(getattr(args, "allow_remote_attach", False)))


def run_dashboard(args: argparse.Namespace) -> int:
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
