"""The dashboard application: ``create_app(settings)`` and ``run_dashboard(args)`` (``mpmlab dashboard``).

The lifespan owns the processes and tasks through ``mpmlab.dashboard.Dashboard``: it starts the embedded
master (``mpmlab.services.core``) and the traffic runner (``mpmcore.traffic``), then the sampler and one
poller task per attached server (``mpmlab.services.sources``); on shutdown (also Ctrl-C, which uvicorn turns
into a shutdown) it stops them in reverse order: tasks cancelled and awaited, processes each by its pid,
TERM then KILL after a deadline. Everything a route needs is reached through
``request.app.state.dashboard`` via FastAPI dependencies (``mpmlab.routes.deps``); there are no
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
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from mpmcore import __version__
from mpmcore.directives import DirectiveError, parse_assignments
from mpmcore.traffic import TrafficError
from mpmlab import metrics
from mpmlab.dashboard import Dashboard
from mpmlab.routes import api, experiments, ui, ws
from mpmlab.security import SAFE_METHODS, control_problem, host_allowed, install_log_redaction, refusal, token_link
from mpmlab.services.actions import ActionError
from mpmlab.services.core import ControlError, CoreError
from mpmlab.services.experiments import Busy, Unavailable
from mpmlab.settings import STATIC_DIR, DashboardSettings


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

    # docs_url=None: /docs is served below from static/vendor (FastAPI's default loads Swagger UI
    # from a CDN, a blank page without internet); ReDoc is not offered.
    app = FastAPI(title="mpmlab dashboard", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Watch and steer Apache httpd's MPMs (prefork, worker, event) in mpmlab's embedded "
                              "server. Everything the page does is here. Control calls (every method but GET, HEAD, "
                              "OPTIONS) refuse cross-origin browser requests and need the dashboard's token "
                              "(Authorization: Bearer, X-Mpmlab-Token, or the cookie the printed URL sets) unless "
                              "it was started with --no-token.")
    app.state.dashboard = dashboard

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # mpmlab.security: Host first, then the printed URL's ?token=, then Origin and token for every
        # request that is not a read, whichever route it is for (also one that does not exist).
        if not host_allowed(request, settings):
            return PlainTextResponse("Host not allowed (the dashboard answers to loopback names only)", 403)
        link = token_link(request, settings)
        if link is not None:
            return link
        if request.method not in SAFE_METHODS:
            why = control_problem(request, settings)
            if why:
                return refusal(request, why)
        return await call_next(request)

    # The body of every error is mpmlab.routes.errors.ErrorBody. The actions raise ActionError; the
    # services' own errors can still reach a route that reads (GET /api/traffic asks the runner).
    @app.exception_handler(ActionError)
    async def _action_error(request: Request, e: ActionError) -> Response:
        return _error(e.status, e.message, e.directive, e.errors)

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, e: ControlError) -> Response:
        return _error(422 if e.directive else 409, e.message, e.directive)

    @app.exception_handler(DirectiveError)
    async def _directive_error(request: Request, e: DirectiveError) -> Response:
        return _error(422, str(e), e.directive)

    # the errors whose message is the whole answer: the core or the runner is down, an experiment
    # (or a recording) runs already, the run store could not be opened
    plain: dict[type[Exception], int] = {CoreError: 503, TrafficError: 503, Busy: 409, Unavailable: 503}

    async def _plain_error(request: Request, e: Exception) -> Response:
        return _error(next(status for cls, status in plain.items() if isinstance(e, cls)), str(e))

    for exc in plain:
        app.add_exception_handler(exc, _plain_error)

    @app.get("/metrics", tags=["api"], response_class=PlainTextResponse,
             summary="Prometheus text format: every source (core and attached), the traffic generator")
    async def prometheus_metrics(request: Request) -> Response:
        # Read-only figures, like every GET here: no token needed (Prometheus scrapes it; see
        # docs/security.md). The Host check above still applies on a loopback bind. OpenMetrics
        # when the scraper's Accept asks for it (Prometheus does).
        body, ctype = await asyncio.to_thread(metrics.make_metrics_response, dashboard.metrics_registry,
                                              request.headers.get("accept"))
        return Response(body, media_type=ctype)

    app.include_router(api.router)
    app.include_router(ui.router)
    app.include_router(ws.router)
    app.include_router(experiments.api)
    app.include_router(experiments.pages)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title}: API",
                                   swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui.css",
                                   swagger_favicon_url="/static/vendor/swagger-favicon-32x32.png")
    return app


def _error(status: int, message: str, directive: str | None = None, errors: tuple[str, ...] = ()) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if directive:
        body["directive"] = directive
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status)


def settings_from_args(args: argparse.Namespace) -> DashboardSettings:
    return DashboardSettings(
        host=args.host, port=args.port, mpm=args.mpm, core_listen=args.core_listen,
        core_settings=parse_assignments(args.set or []), token=args.token or None,
        no_token=bool(getattr(args, "no_token", False)), access_log=bool(getattr(args, "access_log", False)),
        start_core=not args.no_core, grid_hz=float(getattr(args, "fps", None) or 20),
        attach=list(getattr(args, "attach", None) or []),
        attach_interval=float(getattr(args, "attach_interval", None) or 1.0),
        allow_remote_attach=bool(getattr(args, "allow_remote_attach", False)),
        runs_db=getattr(args, "runs_db", None) or None)


def printed_url(settings: DashboardSettings, host: str | None = None) -> str:
    """The URL the start line prints. A generated token is printed whole (it is the only way to
    learn it); a token the user chose (``--token``, ``MPMLAB_TOKEN``, the file) is not, so that it
    never lands whole in a container's or a service's logs: its first two characters, then the
    reminder of where it came from."""
    host = host or settings.host
    base = f"http://{host}:{settings.port}/"
    if not settings.token:
        return base
    if settings.token_generated:
        return base + f"?token={quote(settings.token, safe='')}"
    return base + f"?token={quote(settings.token[:2], safe='')}… (your token, as set with --token or MPMLAB_TOKEN)"


def run_dashboard(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        settings.check()
    except (ValueError, DirectiveError) as e:
        print(f"mpmlab dashboard: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = printed_url(settings, host)

    def announce() -> None:  # after the lifespan started the core: the URL is about to be live
        watched = [f"embedded server: {settings.mpm} on http://{settings.core_listen}/"] if settings.watch_core else []
        watched += [f"attached: {s.name} ({s.url})" for s in app.state.dashboard.sources.sources]
        watched += [f"Locust master: {m.name} ({m.url})" for m in app.state.dashboard.locust.masters]
        # The one line that shows the token: open this URL (it sets the cookie and drops ?token=).
        print(f"mpmlab dashboard: {url}  ({'; '.join(watched)})", file=sys.stderr, flush=True)
        if settings.token is None:
            print("mpmlab dashboard: WARNING: started with --no-token: CONTROL IS OPEN to every process "
                  "on this machine, of every user (switch MPM, restart, start traffic). Start without "
                  "--no-token to require a token.", file=sys.stderr, flush=True)

    app = create_app(settings, on_ready=announce)

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=settings.access_log, timeout_graceful_shutdown=3)
    if settings.access_log:  # uvicorn's access lines are INFO: its loggers are set to warning above
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    install_log_redaction()  # after uvicorn.Config configured its loggers
    server = uvicorn.Server(config)
    try:
        server.run()
    except CoreError as e:
        print(f"mpmlab dashboard: {e}", file=sys.stderr)
        return 1
    return 0 if server.started else 1
