"""mod_status: the /server-status handler (``?auto``, the HTML page, ``?json``) and the names the
rest of the tree imports from one place.

The work is split by concern: ``mpmcore.status.summary`` counts a scoreboard Snapshot into the
typed model (``mpmcore.model.Summary``) by Apache's rules, ``mpmcore.status.render`` writes the
three formats from it, ``mpmcore.status.aprfmt`` prints numbers as APR's printf does.

Deliberate differences from Apache (modules/generators/mod_status.c), each visible in the output:

* Query options are parsed as ``name[=value]`` pairs (Apache searches substrings); a bad
  ``refresh`` value is a 400 naming the parameter (Apache falls back to 10 s); ``?json`` (or
  ``Accept: application/json``) is mpmlab's; methods other than GET/HEAD get 405 (Apache declines
  to 404).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from mpmcore.scoreboard import Snapshot
from mpmcore.status.aprfmt import (
    CLK_TCK,
    GBYTE,
    KBYTE,
    MBYTE,
    apr_f,
    apr_g,
    escape_logitem,
    format_byte_out,
    format_kbyte_out,
    ht_time,
    show_time,
)
from mpmcore.status.render import STATUS_MAXLINE, render_auto, render_html, render_json, status_json
from mpmcore.status.summary import ServerInfo, summarize, worker_rows

if TYPE_CHECKING:
    from mpmcore.http.protocol import Request, Response

__all__ = [
    "AUTO_TYPE",
    "CLK_TCK",
    "GBYTE",
    "HTML_TYPE",
    "JSON_TYPE",
    "KBYTE",
    "MBYTE",
    "STATUS_MAXLINE",
    "ServerInfo",
    "StatusOptionError",
    "StatusOptions",
    "apr_f",
    "apr_g",
    "escape_logitem",
    "format_byte_out",
    "format_kbyte_out",
    "handle_status_request",
    "ht_time",
    "parse_options",
    "render_auto",
    "render_html",
    "render_json",
    "show_time",
    "status_json",
    "summarize",
    "worker_rows",
]

REFRESH_DEFAULT = 10  # Apache 2.4's Refresh when ?refresh has no usable value
REFRESH_MIN, REFRESH_MAX = 1, 3600

AUTO_TYPE = "text/plain; charset=ISO-8859-1"
HTML_TYPE = "text/html; charset=ISO-8859-1"
JSON_TYPE = "application/json"


# -- the handler -----------------------------------------------------------------------------
class StatusOptionError(ValueError):
    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass
class StatusOptions:
    auto: bool = False
    json: bool = False
    notable: bool = False
    refresh: int | None = None


def parse_options(query: str) -> StatusOptions:
    """``auto``, ``json``, ``notable``, ``refresh[=N]``, combined with ``&`` (or ``;``) as Apache
    combines them; unknown names are ignored, as Apache ignores them."""
    opts = StatusOptions()
    for part in query.replace(";", "&").split("&"):
        if not part:
            continue
        name, has_value, value = part.partition("=")
        name = unquote_plus(name).strip().lower()
        value = unquote_plus(value).strip()
        if name == "auto":
            opts.auto = True
        elif name == "json":
            opts.json = True
        elif name == "notable":
            opts.notable = True
        elif name == "refresh":
            if not has_value or value == "":
                opts.refresh = REFRESH_DEFAULT
                continue
            try:
                n = int(value)
            except ValueError:
                raise StatusOptionError("refresh", f"must be an integer number of seconds "
                                                   f"({REFRESH_MIN}..{REFRESH_MAX}), not {value[:40]!r}") from None
            if not REFRESH_MIN <= n <= REFRESH_MAX:
                raise StatusOptionError("refresh", f"{n} is out of range "
                                                   f"(allowed: {REFRESH_MIN}..{REFRESH_MAX} seconds)")
            opts.refresh = n
    return opts


def _wants_json(request: Request) -> bool:
    accept = (request.header("accept") or "").lower()
    return "application/json" in accept and "text/html" not in accept


def handle_status_request(request: Request, snapshot: Callable[[], Snapshot],
                          info: Callable[[], ServerInfo]) -> Response:
    """/server-status: GET and HEAD; ``?auto`` text, ``?json`` (or Accept: application/json),
    otherwise the HTML page; ``refresh`` adds a Refresh header to any of them."""
    from mpmcore.http.protocol import Response  # protocol imports nothing from here; keeps the module importable alone

    if request.method not in ("GET", "HEAD"):
        return Response(405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8")],
                        f"405 Method Not Allowed: {request.method[:20]} (server-status takes GET or HEAD)\n"
                        .encode("utf-8", "replace"))
    try:
        opts = parse_options(request.query or "")
    except StatusOptionError as err:
        return Response(400, [("Content-Type", "text/plain; charset=utf-8")],
                        f"400 Bad Request: {err}\n".encode("utf-8", "replace"))
    snap, inf = snapshot(), info()
    headers: list[tuple[str, str]] = []
    if opts.json or (not opts.auto and _wants_json(request)):
        body = json.dumps(render_json(snap, inf), separators=(",", ":")).encode()
        headers.append(("Content-Type", JSON_TYPE))
    elif opts.auto:
        body = render_auto(snap, inf).encode("latin-1", "replace")
        headers.append(("Content-Type", AUTO_TYPE))
    else:
        body = render_html(snap, inf, refresh=opts.refresh, notable=opts.notable).encode("latin-1", "xmlcharrefreplace")
        headers.append(("Content-Type", HTML_TYPE))
    if opts.refresh:
        headers.append(("Refresh", str(opts.refresh)))
    return Response(200, headers, body)
