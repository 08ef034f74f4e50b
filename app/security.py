"""Safe by default.

* The dashboard binds to 127.0.0.1 unless told otherwise; bound elsewhere it refuses to start
  without a token (settings.check).
* Host check (every request): on a loopback bind only loopback host names are served, so a web
  page on another site cannot reach the dashboard through DNS rebinding.
* Origin check (control actions over POST/PATCH/DELETE and every websocket): a browser's request
  must come from the dashboard's own origin; a cross-origin one gets 403. Clients that send no
  Origin (curl, scripts) are not browsers acting for another site and pass.
* Token (control actions, when one is configured): ``Authorization: Bearer``, ``X-Mpmlab-Token``,
  or the ``mpmlab_token`` cookie that ``/?token=...`` sets for the browser.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, Request, WebSocket
from starlette.requests import HTTPConnection

from app.settings import DashboardSettings, is_loopback_host

TOKEN_COOKIE = "mpmlab_token"
TOKEN_HEADER = "x-mpmlab-token"


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


def given_token(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return conn.headers.get(TOKEN_HEADER) or conn.cookies.get(TOKEN_COOKIE) or conn.query_params.get("token")


def check_control(conn: HTTPConnection, settings: DashboardSettings) -> None:
    """Raise 403 unless this request may control the server."""
    why = origin_problem(conn)
    if why:
        raise HTTPException(403, f"cross-origin control request refused: {why}")
    if not settings.token_ok(given_token(conn)):
        raise HTTPException(403, "a valid token is required for control actions (Authorization: Bearer ..., "
                                 "X-Mpmlab-Token, or open the page once as /?token=...)")


def check_websocket(ws: WebSocket, settings: DashboardSettings) -> str | None:
    """Why this websocket must be refused, or None."""
    if not host_allowed(ws, settings):
        return "host not allowed"
    return origin_problem(ws)


def control_guard(request: Request) -> None:
    """FastAPI dependency for every control route."""
    check_control(request, request.app.state.dashboard.settings)
