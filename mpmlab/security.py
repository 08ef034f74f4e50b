"""Safe by default (docs/security.md).

* The dashboard binds to 127.0.0.1 unless told otherwise; bound elsewhere it refuses to start
  without a token the user chose (settings.check).
* Host check (every request): on a loopback bind only loopback host names are served, so a web
  page on another site cannot reach the dashboard through DNS rebinding.
* Origin check (every request that is not GET/HEAD/OPTIONS, and every websocket): a browser's
  request must come from the dashboard's own origin; a cross-origin one gets 403. Clients that send
  no Origin (curl, scripts) are not browsers acting for another site and pass.
* Token (every request that is not GET/HEAD/OPTIONS, as Jupyter does): a random one is made at
  start unless the user gave one or asked for none (``--no-token``). It comes as
  ``Authorization: Bearer``, ``X-Mpmlab-Token``, or the cookie ``mpmlab_token_<port>`` that the
  printed URL's ``?token=...`` sets (``token_link``). Reading (GET: the page, /api reads, /metrics,
  the websockets, which only send) needs no token: it shows what the embedded core's own
  /server-status shows to any local process anyway, and monitoring tools scrape /metrics.
* The token stays out of the logs: ``RedactTokens`` rewrites ``token=...`` in log records.
"""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import urlencode, urlsplit

from fastapi import HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection

from mpmlab.settings import DashboardSettings, is_loopback_host

TOKEN_HEADER = "x-mpmlab-token"
#: Methods that only read: every other one is a control request.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_REQUIRED = ("a valid token is required for control actions: open the URL mpmlab printed at start "
                  "(it holds ?token=...), or send Authorization: Bearer TOKEN or X-Mpmlab-Token: TOKEN")


def _hostname(netloc: str) -> str:
    try:
        return (urlsplit("//" + netloc).hostname or "").lower()
    except ValueError:
        return ""


def host_allowed(conn: HTTPConnection, settings: DashboardSettings) -> bool:
    if not settings.loopback:
        return True
    host = conn.headers.get("host", "")
    return is_loopback_host(_hostname(host)) if host else True


def origin_problem(conn: HTTPConnection) -> str | None:
    """Why a browser request is cross-origin, or None when it is fine."""
    origin = conn.headers.get("origin")
    if origin is None:
        site = conn.headers.get("sec-fetch-site")
        if site and site not in ("same-origin", "none"):
            return f"cross-site request (Sec-Fetch-Site: {site})"
        return None
    if origin == "null":
        return "opaque origin (null)"
    host = conn.headers.get("host", "").lower()
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host:
        return f"origin {origin} is not this dashboard ({host})"
    return None


def given_token(conn: HTTPConnection, settings: DashboardSettings) -> str | None:
    """The token a request carries: Bearer, then X-Mpmlab-Token, then this dashboard's cookie. Never
    the query string of a control request (it would end up in logs and histories)."""
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return conn.headers.get(TOKEN_HEADER) or conn.cookies.get(settings.token_cookie)


def control_problem(conn: HTTPConnection, settings: DashboardSettings) -> str | None:
    """Why this request may not control the server, or None."""
    why = origin_problem(conn)
    if why:
        return f"cross-origin control request refused: {why}"
    if not settings.token_ok(given_token(conn, settings)):
        return TOKEN_REQUIRED
    return None


def check_control(conn: HTTPConnection, settings: DashboardSettings) -> None:
    """Raise 403 unless this request may control the server."""
    why = control_problem(conn, settings)
    if why:
        raise HTTPException(403, why)


def refusal(request: Request, message: str) -> Response:
    """The 403 for a refused control request: JSON for /api and scripts, HTML for the page's own
    (htmx) requests."""
    page = "text/html" in request.headers.get("accept", "") or request.headers.get("hx-request") == "true"
    if request.url.path.startswith("/api/") or not page:
        return JSONResponse({"detail": message}, status_code=403)
    return HTMLResponse(f'<div class="flash error" role="alert">403: {html.escape(message)}</div>', 403)


def token_link(request: Request, settings: DashboardSettings) -> Response | None:
    """For a GET with ``?token=...`` (the URL printed at start): the redirect to the same URL without
    it, setting this dashboard's cookie (HttpOnly, SameSite=Strict), so that the token stays out of
    the history and of Referer headers. A wrong token is a 403 page. None for any other request."""
    if request.method not in ("GET", "HEAD") or "token" not in request.query_params:
        return None
    token = request.query_params["token"]
    rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    target = request.url.path + (f"?{rest}" if rest else "")
    if settings.token is None:  # --no-token: nothing to remember
        return RedirectResponse(target, status_code=303)
    if not settings.token_ok(token):
        return HTMLResponse("<!doctype html><title>mpmlab: wrong token</title><h1>403: wrong token</h1>"
                            "<p>This is not this dashboard's token. A dashboard started without --token "
                            "makes a new one at every start: open the URL it printed last.</p>", 403)
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(settings.token_cookie, token, httponly=True, samesite="strict", path="/")
    return resp


def check_websocket(ws: WebSocket, settings: DashboardSettings) -> str | None:
    """Why this websocket must be refused, or None. The websockets only send (frames, fragments):
    they read, like a GET, so they need no token."""
    if not host_allowed(ws, settings):
        return "host not allowed"
    return origin_problem(ws)


def control_guard(request: Request) -> None:
    """FastAPI dependency for every control route (the middleware in mpmlab.main checks the same for
    every non-GET request; this keeps a route safe wherever it is mounted)."""
    check_control(request, request.app.state.dashboard.settings)


# -- logs ------------------------------------------------------------------------------------------
_TOKEN_RE = re.compile(r"(token=)[^&\s\"';]+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _TOKEN_RE.sub(r"\1" + REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrites ``token=...`` in a record's message and its string arguments (uvicorn's access log
    passes the request line as an argument: its formatter reads the arguments by position, so they
    are redacted in place rather than merged into the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_log_redaction() -> None:
    """Put RedactTokens on uvicorn's loggers and on every handler of the root logger (call it after
    uvicorn.Config, which configures its loggers, was made)."""
    f = RedactTokens()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(x, RedactTokens) for x in target.filters):
                target.addFilter(f)
    for h in logging.getLogger().handlers:
        if not any(isinstance(x, RedactTokens) for x in h.filters):
            h.addFilter(f)
