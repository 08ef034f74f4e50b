"""Attach mode: watch real servers beside the embedded core (Apache httpd's mod_status, nginx's
stub_status, lighttpd's mod_status), and the one module that names every part of it.

A *source* is polled (``poll()``, synchronous: the dashboard runs it in a thread at its own rate)
and returns a ``mpmcore.model.SourceFrame``: the same typed summary the embedded core's
``mpmcore.status.summary.summarize`` produces (what a source cannot show is ``None``), the
scoreboard letters and a grid layout, optional per-worker and per-process rows, and, in words,
what this source cannot show. By concern:

* ``mpmcore.sources.client``: the one HTTP GET client (chunked bodies decoded, size-capped).
* ``mpmcore.sources.frames``: the poll that never raises, the core's summary as a frame, the
  summary message and chart point of any frame, the poll loop.
* ``mpmcore.sources.apache``: ``ApacheSource``, ``?auto`` and the HTML page into the model.
* ``mpmcore.sources.nginx``: ``NginxSource``, stub_status into the model.
* ``mpmcore.sources.lighttpd``: ``LighttpdSource``, lighttpd's ``?auto`` into the model.
* ``mpmcore.sources.grid``: an attached scoreboard as the dashboard's binary grid frame.
* here: ``AutoSource(url)``, which looks at the page once and becomes one of the three, and
  ``make_source``/``parse_spec`` for ``--attach`` values.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from mpmcore.model import SourceFrame, SourceKind
from mpmcore.netloc import Target, base_url
from mpmcore.sources.apache import (
    CANNOT_APACHE,
    ApacheSource,
    StatusTables,
    apache_frame,
    assign_threads,
    infer_threads_per_child,
    parse_auto,
    parse_status_html,
)
from mpmcore.sources.client import DEFAULT_TIMEOUT, MAX_BODY, SourceError, _tls_context, get
from mpmcore.sources.frames import HTTPSource, Source, chart_point, frame_from_summary, poll_loop, summary_message
from mpmcore.sources.grid import GRID_HEADER, GRID_MAGIC, GRID_VERSION, grid_frame
from mpmcore.sources.lighttpd import (
    CANNOT_LIGHTTPD,
    LighttpdSource,
    lighttpd_frame,
    looks_like_lighttpd,
    parse_lighttpd_auto,
)
from mpmcore.sources.nginx import CANNOT_NGINX, NginxSource, looks_like_stub_status, nginx_frame, parse_stub_status
from mpmcore.status.render import JSON_KEYS as SUMMARY_KEYS

__all__ = [
    "CANNOT_APACHE",
    "CANNOT_LIGHTTPD",
    "CANNOT_NGINX",
    "DEFAULT_TIMEOUT",
    "GRID_HEADER",
    "GRID_MAGIC",
    "GRID_VERSION",
    "MAX_BODY",
    "SUMMARY_KEYS",
    "ApacheSource",
    "AutoSource",
    "LighttpdSource",
    "NginxSource",
    "Source",
    "SourceError",
    "SourceFrame",
    "StatusTables",
    "_tls_context",
    "apache_frame",
    "assign_threads",
    "base_url",
    "chart_point",
    "frame_from_summary",
    "grid_frame",
    "infer_threads_per_child",
    "lighttpd_frame",
    "make_source",
    "nginx_frame",
    "parse_auto",
    "parse_lighttpd_auto",
    "parse_spec",
    "parse_status_html",
    "parse_stub_status",
    "poll_loop",
    "summary_message",
]


class AutoSource(HTTPSource):
    """Looks at ``url`` once (GET, without ?auto) and becomes an ApacheSource, an NginxSource or a
    LighttpdSource (lighttpd's status page: its Server header or its "Server-Status (lighttpd"
    heading; checked before Apache's, since lighttpd's ?auto borrows Apache's words)."""

    def __init__(self, url: str, name: str | None = None, *, allow_remote: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, threads_per_child: int | None = None) -> None:
        super().__init__(url, name, allow_remote=allow_remote, timeout=timeout)
        self.kw: dict[str, Any] = {"allow_remote": allow_remote, "timeout": timeout}
        if threads_per_child:
            self.kw["threads_per_child"] = threads_per_child
        self.inner: ApacheSource | NginxSource | LighttpdSource | None = None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def poll(self) -> SourceFrame:
        if self.inner is None:
            frame = super().poll()  # the detection: its frame is the answer only when it failed
            if self.inner is None:
                return frame
        inner: ApacheSource | NginxSource | LighttpdSource = self.inner
        self.kind = inner.kind
        return inner.poll()

    def _poll(self, target: Target, frame: SourceFrame) -> SourceFrame:
        ans = get(target, self.path, self.timeout)
        text = ans.body[:65536].decode("latin-1")
        if looks_like_stub_status(text):
            self.inner = NginxSource(self.url, self.name, allow_remote=self.allow_remote, timeout=self.timeout)
        elif ans.status == 200 and looks_like_lighttpd(text, ans.headers.get("server")):
            self.inner = LighttpdSource(self.url, self.name, allow_remote=self.allow_remote, timeout=self.timeout)
        elif ans.status == 200 and ("Apache Status" in text or "Server MPM" in text or "Scoreboard" in text):
            self.inner = ApacheSource(self.url, self.name, **self.kw)
        else:
            raise SourceError("not-status-page", f"{self.url} is not Apache's or lighttpd's mod_status "
                                                 f"page nor nginx's stub_status (HTTP {ans.status})")
        return frame


_KINDS: dict[str, SourceKind] = {"apache": "apache", "nginx": "nginx", "lighttpd": "lighttpd"}


def parse_spec(spec: str) -> tuple[SourceKind | None, str | None, str, dict[str, int]]:
    """``[NAME=][KIND+]URL[#threads_per_child=N]`` -> (kind, name, url, options).

    ``apache-event=http://127.0.0.1:8081/server-status``, ``nginx+http://127.0.0.1:8082/nginx_status``,
    ``http://127.0.0.1:8083/server-status#threads_per_child=25``,
    ``lighttpd+http://127.0.0.1:8084/server-status``. KIND is apache, nginx or lighttpd
    (otherwise detected). Raises ValueError for an unknown option or a bad value."""
    spec = spec.strip()
    name = None
    eq, colon = spec.find("="), spec.find("://")
    if eq != -1 and (colon == -1 or eq < colon):
        name, spec = spec[:eq].strip() or None, spec[eq + 1:].strip()
    kind: SourceKind | None = None
    m = re.match(r"(apache|nginx|lighttpd)\+(.*)$", spec, re.I)
    if m:
        kind, spec = _KINDS[m.group(1).lower()], m.group(2)
    options: dict[str, int] = {}
    spec, _, frag = spec.partition("#")
    for part in filter(None, frag.split("&")):
        key, _, value = part.partition("=")
        if key != "threads_per_child":
            raise ValueError(f"attach {spec}: unknown option {key!r} after '#' (known: threads_per_child)")
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= 20000:
            raise ValueError(f"attach {spec}: threads_per_child must be an integer 1..20000, not {value!r}")
        options[key] = n
    return kind, name, spec, options


def make_source(spec: str, *, allow_remote: bool = False, timeout: float = DEFAULT_TIMEOUT,
                kind: SourceKind | None = None, name: str | None = None,
                threads_per_child: int | None = None) -> ApacheSource | NginxSource | LighttpdSource | AutoSource:
    """A source from an ``--attach`` value (see ``parse_spec``). Never contacts the server: errors
    in the URL show up in the first poll's frame, like every other error (ValueError only for a
    malformed ``#option``)."""
    k, n, url, opts = parse_spec(spec)
    kind, name = kind or k, name or n
    threads_per_child = threads_per_child or opts.get("threads_per_child")
    if kind is None and re.search(r"(stub_status|nginx_status|nginx)", urlsplit(url if "://" in url else
                                                                                  "http://" + url).path):
        kind = "nginx"
    elif kind is None and "lighttpd" in urlsplit(url if "://" in url else "http://" + url).path:
        kind = "lighttpd"
    if kind == "nginx":
        return NginxSource(url, name, allow_remote=allow_remote, timeout=timeout)
    if kind == "lighttpd":
        return LighttpdSource(url, name, allow_remote=allow_remote, timeout=timeout)
    if kind == "apache":
        return ApacheSource(url, name, allow_remote=allow_remote, timeout=timeout,
                            threads_per_child=threads_per_child)
    return AutoSource(url, name, allow_remote=allow_remote, timeout=timeout, threads_per_child=threads_per_child)


