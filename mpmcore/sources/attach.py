"""Attach mode: watch a real server (Apache httpd's mod_status, nginx's stub_status) beside the core.

A *source* is polled (``poll()``, synchronous: the dashboard runs it in a thread at its own rate)
and returns a ``SourceFrame``: the same summary dict ``mpmcore.status.modstatus.summarize`` produces for the
embedded core (same keys; what a source cannot show is ``None``), the scoreboard letters and a grid
layout, optional per-worker and per-process rows, and, in words, what this source cannot show.

Sources:

* ``ApacheSource(url)``: ``GET url?auto``, read the way Prometheus' apache_exporter reads it (each
  line split at the first colon, keys and values trimmed, unknown keys ignored, the Scoreboard
  letters counted), plus the HTML page (``url`` without a query) for ExtendedStatus' per-worker
  table and event's per-process table, found by their column headings (so an older or newer
  Apache with other columns still parses).
* ``NginxSource(url)``: stub_status (Active connections, accepts/handled/requests,
  Reading/Writing/Waiting).
* ``AutoSource(url)``: looks at the page once and becomes one of the two.
* ``frame_from_summary(name, summary)``: the embedded core's summary as a frame, so code that
  handles frames (``app.metrics``) handles all sources the same way.

Safety: like the traffic generator (``mpmcore.traffic.target``), a source only talks to loopback
addresses unless it is created with ``allow_remote=True``; the connection goes to the address that
was checked (no second DNS resolution). ``poll()`` never raises: a bad URL, a refused connection,
a timeout, a page that is not a status page all become a frame with ``ok=False`` and an ``error``
sentence, and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import logging
import math
import re
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from mpmcore.scoreboard import MPM_IDS, STATE_LETTERS, STATE_NAMES
from mpmcore.traffic.target import Target, TargetError, is_loopback, resolve_target_sync

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY",
    "SUMMARY_KEYS",
    "ApacheSource",
    "AutoSource",
    "NginxSource",
    "Source",
    "SourceFrame",
    "chart_point",
    "frame_from_summary",
    "grid_frame",
    "make_source",
    "parse_auto",
    "parse_spec",
    "parse_status_html",
    "parse_stub_status",
    "poll_loop",
    "summary_message",
]

log = logging.getLogger("mpmlab.attach")

#: Seconds for connect and for each read of one status request.
DEFAULT_TIMEOUT = 3.0
#: Largest status page read. Apache's HTML page with 256 x 64 busy slots is about 5 MB.
MAX_BODY = 16 << 20
#: The keys of ``mpmcore.status.modstatus.summarize``'s dict: every frame's summary has all of them.
SUMMARY_KEYS = (
    "server_name", "server_version", "server_built", "mpm", "current_time", "restart_time",
    "current_time_text", "restart_time_text", "config_generation", "mpm_generation", "uptime",
    "uptime_text", "load", "extended_status", "server_limit", "threads_per_child", "max_request_workers",
    "busy", "graceful", "idle", "scoreboard", "state_counts", "processes", "stopping", "conns_total",
    "conns_async_wait_io", "conns_async_writing", "conns_async_keep_alive", "conns_async_closing",
    "procs", "proc_sum", "fcgi_procs", "totals",
)
TOTALS_KEYS = ("accesses", "bytes", "kbytes", "duration_ms", "cpu_user", "cpu_system", "cpu_children_user",
               "cpu_children_system", "cpu_ticks", "cpu_load", "req_per_sec", "bytes_per_sec", "bytes_per_req",
               "duration_per_req")
#: ThreadLimit's compiled-in maximum is far higher, but Apache's default ThreadLimit is 64; a row
#: wider than that is only guessed when a hint says so.
MAX_GUESSED_THREADS = 64
USER_AGENT = "mpmlab-attach"

# What every source of a kind cannot show, in words for the page.
CANNOT_APACHE = [
    "Apache's status page has no memory figures: memory per process is not available",
    "MaxRequestWorkers, ServerLimit and ThreadsPerChild are not in mod_status' output",
    "each poll is itself a request: one W slot (and one access) on the page is the poller's own",
    "the process and worker tables come from a second request (the HTML page), a moment after the counts",
    "the X-Traffic-Pattern of each slot is an mpmlab addition: Apache does not show it",
]
CANNOT_APACHE_EVENT = ("Apache refreshes event's async counters (ConnsTotal, ConnsAsync*) only when its "
                       "timeout queues are processed, so they lag behind the scoreboard by seconds")
CANNOT_APACHE_NOT_EVENT = ("prefork and worker have no async connections: ConnsTotal and ConnsAsync* exist "
                           "only for event")
CANNOT_NGINX = [
    "nginx has no scoreboard: per-worker states are not available",
    "nginx's stub_status has no per-process or per-worker table",
    "nginx's stub_status has no busy/idle worker counts, no generation and no uptime",
    "nginx's stub_status counts requests but not bytes: no traffic volume",
    "nginx's stub_status has no memory figures",
    "each poll is itself a request: one Writing connection (and one request) is the poller's own",
]

_STATE_BY_LETTER = {ch: i for i, ch in enumerate(STATE_LETTERS)}


class SourceError(Exception):
    """A poll failed; ``kind`` is a short machine-readable reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- the frame ---------------------------------------------------------------------------------
@dataclass
class SourceFrame:
    """One poll of one source.

    ``summary``: a dict with every key of ``mpmcore.status.modstatus.summarize`` (``SUMMARY_KEYS``); values
    the source cannot provide are ``None`` (``totals`` may be ``None`` as a whole, like the
    embedded core's with ExtendedStatus Off). ``letters``: the scoreboard string, one letter per
    shown slot (``None`` for nginx). ``layout``: ``{"rows", "cols", "threads_per_child",
    "inferred"}`` for drawing the grid. ``workers``: ExtendedStatus rows (keys as
    ``mpmcore.status.modstatus.worker_rows`` where Apache has the column, ``None`` elsewhere) or ``None``.
    ``connections``: nginx's figures (``None`` for Apache). ``capabilities``: what this source can
    show (booleans by name); ``cannot_show``: the same in sentences for the page.
    """

    source: str  # the name shown on the page ("apache-event", "127.0.0.1:8081")
    kind: str  # "apache" | "nginx" | "mpmlab" | "unknown"
    url: str
    t: float  # wall clock of the poll
    ok: bool = False
    error: str | None = None
    error_kind: str | None = None  # bad-url | not-allowed | unreachable | timeout | http-status | not-status-page | internal
    summary: dict[str, Any] | None = None
    letters: str | None = None
    layout: dict[str, Any] | None = None
    workers: list[dict[str, Any]] | None = None
    connections: dict[str, int] | None = None
    raw: dict[str, str] = field(default_factory=dict)  # the ?auto / stub_status fields as read
    capabilities: dict[str, bool] = field(default_factory=dict)
    cannot_show: list[str] = field(default_factory=list)
    poll_ms: float | None = None
    traffic_target: str | None = None  # base URL the traffic panel may aim at (loopback only)

    @property
    def mpm(self) -> str | None:
        return (self.summary or {}).get("mpm")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for /api and websockets)."""
        return {
            "source": self.source, "kind": self.kind, "url": self.url, "t": self.t, "ok": self.ok,
            "error": self.error, "error_kind": self.error_kind, "summary": self.summary,
            "letters": self.letters, "layout": self.layout, "workers": self.workers,
            "connections": self.connections, "raw": self.raw, "capabilities": self.capabilities,
            "cannot_show": self.cannot_show, "poll_ms": self.poll_ms, "traffic_target": self.traffic_target,
        }


@runtime_checkable
class Source(Protocol):
    """Anything the dashboard can poll. ``poll()`` is synchronous (run it in a thread), never
    raises, and is called for one source at a time (sources keep a little state: AutoSource's
    detection); different sources may be polled in parallel."""

    name: str
    url: str
    kind: str

    def poll(self) -> SourceFrame: ...

    def close(self) -> None: ...


# -- HTTP --------------------------------------------------------------------------------------
@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One context for every poll (it loads the CA store and cipher list once; SSLContext is
    shareable across threads). Not verified: status pages of test servers are self-signed."""
    from mpmcore.traffic.target import make_ssl_context
    return make_ssl_context(verify=False)


def _fetch(target: Target, path: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One GET to the checked address of ``target`` (Connection: close); raises SourceError."""
    cls = http.client.HTTPSConnection if target.tls else http.client.HTTPConnection
    kw: dict[str, Any] = {}
    if target.tls:
        kw["context"] = _tls_context()
    conn = cls(target.address, target.port, timeout=timeout, **kw)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", "text/plain, text/html;q=0.9, */*;q=0.1")
        conn.putheader("Connection", "close")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise SourceError("not-status-page", f"{target.url}: answer larger than {MAX_BODY} bytes: "
                                                 "not a status page")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    except SourceError:
        raise
    except TimeoutError:
        raise SourceError("timeout", f"{target.host_header}: no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise SourceError("unreachable", f"{target.host_header}: connection refused (is the server running?)") from None
    except (OSError, http.client.HTTPException) as e:
        raise SourceError("unreachable", f"{target.host_header}: {type(e).__name__}: {e}") from None
    finally:
        conn.close()


def _split_url(url: str) -> tuple[str, str]:
    """(url without query and fragment, path) with the scheme filled in."""
    if "://" not in url:
        url = "http://" + url
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path or "/", "", "")), p.path or "/"


def base_url(target: Target) -> str:
    """``scheme://host:port/`` of a target: where traffic aimed at this server goes."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{host}:{target.port}/"


# -- ?auto -------------------------------------------------------------------------------------
def parse_auto(text: str) -> tuple[str | None, dict[str, str]]:
    """(server name, fields) the way apache_exporter reads ``?auto``: every line split at its first
    colon, key and value trimmed; a line without a colon is skipped. Apache prints the server name
    alone on the first line; it is returned separately (an IPv6 name such as ``::1`` has colons, so
    the first line is taken as the name unless it is a known key)."""
    lines = text.splitlines()
    name = None
    fields: dict[str, str] = {}
    for i, line in enumerate(lines):
        key, sep, value = line.partition(":")
        key = key.strip()
        if i == 0 and (not sep or key not in _AUTO_KEYS):
            name = line.strip()
            continue
        if not sep:
            continue
        fields[key] = value.strip()
    return name, fields


_AUTO_KEYS = {"ServerVersion", "ServerMPM", "Server Built", "CurrentTime", "RestartTime",
              "ParentServerConfigGeneration", "ParentServerMPMGeneration", "ServerUptimeSeconds", "ServerUptime",
              "Load1", "Load5", "Load15", "Total Accesses", "Total kBytes", "Total Duration", "CPUUser",
              "CPUSystem", "CPUChildrenUser", "CPUChildrenSystem", "CPULoad", "Uptime", "ReqPerSec",
              "BytesPerSec", "BytesPerReq", "DurationPerReq", "BusyWorkers", "GracefulWorkers", "IdleWorkers",
              "Processes", "Stopping", "ConnsTotal", "ConnsAsyncWaitIO", "ConnsAsyncWriting",
              "ConnsAsyncKeepAlive", "ConnsAsyncClosing", "Scoreboard"}


def _num(fields: dict[str, str], key: str, kind=int):
    """A number from ``fields`` or None. Apache prints ``.5`` for 0.5 (APR's %g): float() reads it."""
    v = fields.get(key)
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    if kind is int:
        return int(x) if math.isfinite(x) else None
    return x


# -- the HTML page -----------------------------------------------------------------------------
class _Tables(HTMLParser):
    """Every <table> of a page as rows of cells (text, is_header, rowspan, colspan). Tolerant of
    unclosed cells and rows (mod_status closes them, other pages may not) and of nested tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[tuple[str, bool, int, int]]]] = []
        self._stack: list[list[list[tuple[str, bool, int, int]]]] = []
        self._row: list[tuple[str, bool, int, int]] | None = None
        self._cell: list[str] | None = None
        self._cell_meta: tuple[bool, int, int] = (False, 1, 1)

    @staticmethod
    def _span(attrs, name: str) -> int:
        for k, v in attrs:
            if k == name:
                try:
                    return max(1, min(100, int(v or 1)))
                except ValueError:
                    return 1
        return 1

    def _close_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            text = " ".join("".join(self._cell).split())
            self._row.append((text, *self._cell_meta))
        self._cell = None

    def _close_row(self) -> None:
        self._close_cell()
        if self._row is not None and self._stack:
            self._stack[-1].append(self._row)
        self._row = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._close_row()
            self._stack.append([])
        elif tag == "tr" and self._stack:
            self._close_row()
            self._row = []
        elif tag in ("td", "th") and self._stack:
            if self._row is None:
                self._row = []
            self._close_cell()
            self._cell = []
            self._cell_meta = (tag == "th", self._span(attrs, "rowspan"), self._span(attrs, "colspan"))
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._close_cell()
        elif tag == "tr":
            self._close_row()
        elif tag == "table" and self._stack:
            self._close_row()
            self.tables.append(self._stack.pop())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def close(self) -> None:
        super().close()
        while self._stack:
            self._close_row()
            self.tables.append(self._stack.pop())


def _header_columns(rows: list[list[tuple[str, bool, int, int]]]) -> tuple[list[str], int]:
    """Flatten one or two header rows into column names ("Threads/busy"), and how many rows they took."""
    if not rows or not rows[0] or not all(c[1] for c in rows[0]):
        return [], 0
    first = rows[0]
    if any(c[3] > 1 for c in first) and len(rows) > 1 and rows[1] and all(c[1] for c in rows[1]):
        second = iter(c[0] for c in rows[1])
        cols = []
        for text, _, rowspan, colspan in first:
            if rowspan > 1 or colspan == 1:
                cols.append(text)
            else:
                for _ in range(colspan):
                    cols.append(f"{text}/{next(second, '')}")
        return cols, 2
    return [c[0] for c in first], 1


def _norm(col: str) -> str:
    return re.sub(r"[^a-z/]", "", col.lower())


_PROC_COLUMNS = {  # normalised heading -> our key
    "slot": "slot", "pid": "pid", "stopping": "stopping",
    "connections/total": "connections", "connections/accepting": "accepting",
    "threads/busy": "busy", "threads/graceful": "graceful", "threads/idle": "idle",
    "asyncconnections/waitio": "wait_io", "asyncconnections/writing": "writing",
    "asyncconnections/keepalive": "keep_alive", "asyncconnections/closing": "closing",
}
_WORKER_COLUMNS = {
    "srv": "srv", "pid": "pid", "acc": "acc", "m": "status", "cpu": "cpu", "ss": "ss", "req": "req_ms",
    "dur": "duration_ms", "conn": "conn_kb", "child": "child_mb", "slot": "slot_mb", "client": "client",
    "protocol": "protocol", "vhost": "vhost", "request": "request", "pattern": "pattern",
}


def _int(text: str) -> int | None:
    m = re.match(r"\s*(-?\d+)", text or "")
    return int(m.group(1)) if m else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


_PRE_SCOREBOARD = re.compile(r"<pre>\s*([_SRWKLDCGI.\n]+?)\s*</pre>")


def parse_status_html(page: str) -> dict[str, Any]:
    """The tables of mod_status' HTML page: ``{"procs": [...] | None, "workers": [...] | None,
    "letters": the page's scoreboard | None}``.

    Tables are recognised by their headings, not their position: the per-process table by "PID",
    "Stopping" and "Threads busy" (event only), the per-worker table by "Srv", "PID", "Acc" and "M" (only with
    ExtendedStatus On). A table that is missing gives ``None``."""
    parser = _Tables()
    try:
        parser.feed(page)
        parser.close()
    except Exception:  # html.parser is lenient; anything it still chokes on means "no tables"
        return {"procs": None, "workers": None, "letters": None}
    procs = workers = None
    # the page's own scoreboard (a <pre> of state letters, a newline every 64): read in the same
    # answer as the worker table, so the two agree where ?auto, read just before, may not
    m = _PRE_SCOREBOARD.search(page)
    letters = m.group(1).replace("\n", "") if m else None
    for rows in parser.tables:
        cols, nhead = _header_columns(rows)
        names = [_norm(c) for c in cols]
        if procs is None and {"pid", "stopping", "threads/busy"} <= set(names):
            procs = _proc_rows(rows[nhead:], names)
        elif workers is None and {"srv", "pid", "acc", "m"} <= set(names):
            workers = _worker_rows(rows[nhead:], names)
    return {"procs": procs, "workers": workers, "letters": letters}


def _proc_rows(rows, names) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        cells = [c[0] for c in row]
        if not cells or cells[0].lower() == "sum" or len(cells) < len(names):
            continue
        d: dict[str, Any] = {}
        for name, text in zip(names, cells):
            key = _PROC_COLUMNS.get(name)
            if key in ("stopping", "accepting"):
                d[key] = text.lower().startswith("yes")
                if key == "stopping":
                    d["old_gen"] = "old gen" in text.lower()
            elif key:
                d[key] = _int(text)
        if d.get("pid"):
            out.append(d)
    return out


def _worker_rows(rows, names) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        cells = [c[0] for c in row]
        if len(cells) < 4 or all(c[1] for c in row):
            continue
        raw = {_WORKER_COLUMNS[n]: t for n, t in zip(names, cells) if n in _WORKER_COLUMNS}
        proc, _, gen = (raw.get("srv") or "").partition("-")
        acc = [_int(x) for x in (raw.get("acc") or "").split("/")] + [None, None, None]
        letter = (raw.get("status") or "?").strip()[:1] or "?"
        state = _STATE_BY_LETTER.get(letter)
        kb, child_mb, slot_mb = (_float(raw.get(k, "")) for k in ("conn_kb", "child_mb", "slot_mb"))
        out.append({
            "proc": _int(proc), "thread": None, "pid": _int(raw.get("pid", "")), "tid": None,
            "generation": _int(gen),
            "status": letter, "state": STATE_NAMES.get(state, "?") if state is not None else "?",
            "conn_count": acc[0], "my_access_count": acc[1], "access_count": acc[2],
            "conn_bytes": int(kb * 1024) if kb is not None else None,
            "my_bytes_served": int(child_mb * 1048576) if child_mb is not None else None,
            "bytes_served": int(slot_mb * 1048576) if slot_mb is not None else None,
            "cpu": _float(raw.get("cpu", "")), "ss": _int(raw.get("ss", "")), "req_ms": _int(raw.get("req_ms", "")),
            "last_req_ms": _int(raw.get("req_ms", "")), "duration_ms": _int(raw.get("duration_ms", "")),
            "state_since": None, "tls": None,
            "client": raw.get("client"), "protocol": raw.get("protocol"), "vhost": raw.get("vhost"),
            "request": raw.get("request"), "pattern": raw.get("pattern"),
        })
    return out


# -- worker rows to grid cells ---------------------------------------------------------------
_IDLE_LETTERS = "_."


def assign_threads(letters: str, tpc: int, workers: list[dict[str, Any]] | None) -> int:
    """Set ``thread`` on the ExtendedStatus rows whose grid cell is certain; returns how many.

    mod_status' worker table has no thread column: it lists, in slot order, every slot except the
    idle ('_') and dead ('.') ones that never served a request. So every other slot of a process
    is listed, and those rows anchor the alignment: they must carry the scoreboard's letters in
    order (``letters``: the page's own ``<pre>``, else ``?auto``'s; mod_status reads the scoreboard
    once for each, so a slot can change in between), or that process is left alone. Between two
    anchors, idle rows are placed only when there are as many as idle slots; otherwise which idle
    slots served before is unknown, and they stay unplaced rather than guessed."""
    if not workers or not letters or tpc < 1:
        return 0
    by_proc: dict[int, list[dict[str, Any]]] = {}
    for w in workers:
        w["thread"] = None
        if w.get("proc") is not None:
            by_proc.setdefault(w["proc"], []).append(w)
    placed = 0
    for proc, rows in by_proc.items():
        cells = letters[proc * tpc:(proc + 1) * tpc]
        if len(cells) < tpc:
            continue
        busy_cells = [j for j, ch in enumerate(cells) if ch not in _IDLE_LETTERS]
        busy_rows = [k for k, w in enumerate(rows) if w["status"] not in _IDLE_LETTERS]
        if [cells[j] for j in busy_cells] != [rows[k]["status"] for k in busy_rows]:
            continue  # the two reads disagree about this process
        # gaps: the idle cells and idle rows before each anchor, and after the last
        bounds_c, bounds_r = [-1, *busy_cells, tpc], [-1, *busy_rows, len(rows)]
        for g in range(len(bounds_c) - 1):
            idle_c = list(range(bounds_c[g] + 1, bounds_c[g + 1]))
            idle_r = list(range(bounds_r[g] + 1, bounds_r[g + 1]))
            if idle_r and len(idle_r) == len(idle_c) and all(cells[j] == rows[k]["status"]
                                                              for j, k in zip(idle_c, idle_r)):
                for j, k in zip(idle_c, idle_r):
                    rows[k]["thread"] = j
                    placed += 1
        for j, k in zip(busy_cells, busy_rows):
            rows[k]["thread"] = j
            placed += 1
    return placed


def worker_at(frame: SourceFrame, proc: int, thread: int) -> dict[str, Any] | None:
    """The ExtendedStatus row placed in grid cell (proc, thread) of an attached Apache, if any."""
    for w in frame.workers or []:
        if w.get("proc") == proc and w.get("thread") == thread:
            return w
    return None


# -- layout ------------------------------------------------------------------------------------
def infer_threads_per_child(letters: str, mpm: str, procs: list[dict] | None, workers: list[dict] | None,
                            hint: int | None = None) -> tuple[int, bool]:
    """(ThreadsPerChild, inferred?) for drawing ``letters`` as rows of processes.

    mod_status does not print ThreadsPerChild. prefork has one slot per process. For event the
    per-process table gives it (busy + graceful + idle threads of a current child). Otherwise
    (worker): the widest row such that every row of the string is all open ('.') or has no open
    slot (a live child has all its threads), and every process number seen in the worker table
    fits; Apache's default 25 when it fits."""
    if hint:
        return max(1, int(hint)), False
    if mpm == "prefork":
        return 1, False
    for p in procs or []:
        if not p.get("stopping") and None not in (p.get("busy"), p.get("idle")):
            n = p["busy"] + (p.get("graceful") or 0) + p["idle"]
            if n > 0:
                return n, False
    n = len(letters)
    if n == 0:
        return 1, True
    max_proc = max((w["proc"] for w in workers or [] if w.get("proc") is not None), default=0)
    good = []
    for d in range(1, min(n, MAX_GUESSED_THREADS) + 1):
        if n % d or max_proc >= n // d:
            continue
        rows = (letters[i:i + d] for i in range(0, n, d))
        if all(r.count(".") in (0, d) for r in rows):
            good.append(d)
    if 25 in good:
        return 25, True
    return (good[-1] if good else 1), True


# -- Apache ------------------------------------------------------------------------------------
class _HTTPSource:
    """A status page polled over HTTP: one frame a poll, every failure turned into the frame's
    error (``poll`` never raises, so a poller never dies). Subclasses fill the frame in ``_poll``."""

    kind = "unknown"

    def __init__(self, url: str, name: str | None = None, *, allow_remote: bool = False,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url, self.path = _split_url(url)
        self.name = name or _default_name(self.url)
        self.allow_remote = allow_remote
        self.timeout = timeout

    def close(self) -> None:
        pass

    def poll(self) -> SourceFrame:
        t0 = time.perf_counter()
        frame = SourceFrame(self.name, self.kind, self.url, time.time())
        try:
            target = resolve_target_sync(self.url, allow_remote=self.allow_remote)
            frame.traffic_target = base_url(target) if is_loopback(target.address) else None
            self._poll(target, frame)
        except SourceError as e:
            _fail(frame, e.kind, str(e))
        except TargetError as e:
            _target_failed(frame, self.url, e)
        except Exception as e:  # a bug here must not stop the poller
            _fail(frame, "internal", f"{type(e).__name__}: {e}")
        frame.poll_ms = round((time.perf_counter() - t0) * 1000, 2)
        return frame

    def _poll(self, target: Target, frame: SourceFrame) -> None:
        raise NotImplementedError


class ApacheSource(_HTTPSource):
    """Apache httpd's mod_status at ``url`` (``http://127.0.0.1:8081/server-status``)."""

    kind = "apache"

    def __init__(self, url: str, name: str | None = None, *, allow_remote: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, html: bool = True, threads_per_child: int | None = None) -> None:
        super().__init__(url, name, allow_remote=allow_remote, timeout=timeout)
        self.html = html
        self.threads_per_child = threads_per_child

    def _poll(self, target: Target, frame: SourceFrame) -> None:
        status, headers, body = _fetch(target, self.path + "?auto", self.timeout)
        if status != 200:
            raise SourceError("http-status", f"{self.url}?auto answered {status}"
                                             + (f" (Location: {headers['location']})" if "location" in headers else "")
                                             + ": not a mod_status page (is SetHandler server-status set here?)")
        text = body.decode("latin-1")
        if _looks_like_stub_status(text):
            raise SourceError("not-status-page", f"{self.url} is an nginx stub_status page: attach it as nginx")
        name, fields = parse_auto(text)
        if "Scoreboard" not in fields and "BusyWorkers" not in fields:
            raise SourceError("not-status-page", f"{self.url}?auto has no BusyWorkers or Scoreboard line: "
                                                 "not Apache's mod_status")
        tables: dict[str, Any] = {"procs": None, "workers": None}
        html_error = None
        if self.html:
            try:
                hstatus, _, hbody = _fetch(target, self.path, self.timeout)
                if hstatus == 200:
                    tables = parse_status_html(hbody.decode("latin-1"))
                else:
                    html_error = f"the HTML page answered {hstatus}: no process or worker table"
            except SourceError as e:
                html_error = f"the HTML page could not be read ({e}): no process or worker table"
        _fill_apache(frame, name, fields, tables, self.threads_per_child, html_error, self.html)


def _target_failed(frame: SourceFrame, url: str, e: TargetError) -> None:
    msg = str(e)
    if "non-loopback" in msg:
        bad = msg.split("address(es)", 1)[-1].split(";", 1)[0].strip()
        _fail(frame, "not-allowed", f"attach {url}: {bad} is not a loopback address; attach mode only watches "
                                    "servers on this machine unless remote attach is allowed explicitly "
                                    "(allow_remote_attach = true, MPMLAB_ALLOW_REMOTE_ATTACH=1)")
    else:
        _fail(frame, "bad-url", msg.replace("target:", f"attach {url}:", 1))


def _fail(frame: SourceFrame, kind: str, message: str) -> None:
    frame.ok = False
    frame.error_kind = kind
    frame.error = message
    frame.summary = frame.letters = frame.layout = frame.workers = frame.connections = None


def _fill_apache(frame: SourceFrame, name: str | None, f: dict[str, str], tables: dict[str, Any],
                 tpc_hint: int | None, html_error: str | None, html_wanted: bool) -> None:
    mpm = (f.get("ServerMPM") or "?").strip().lower()
    letters = f.get("Scoreboard", "")
    procs_html, workers = tables.get("procs"), tables.get("workers")
    tpc, inferred = infer_threads_per_child(letters, mpm, procs_html, workers, tpc_hint)
    assign_threads(tables.get("letters") or letters, tpc, workers)
    rows = max(1, math.ceil(len(letters) / tpc)) if letters else 0
    mpm_gen = _num(f, "ParentServerMPMGeneration")
    counts = {ch: letters.count(ch) for ch in STATE_LETTERS}

    # processes: event's own table; otherwise rows of the scoreboard with a live slot (prefork:
    # every live slot is a process), PIDs from the worker table where it shows them
    pid_of: dict[int, tuple[int | None, int | None]] = {}
    for w in workers or []:
        if w.get("proc") is not None and w.get("pid"):
            pid_of.setdefault(w["proc"], (w["pid"], w.get("generation")))
    procs: list[dict[str, Any]] = []
    if procs_html is not None:
        for p in procs_html:
            slot = p.get("slot")
            gen = pid_of.get(slot, (None, None))[1] if slot is not None else None
            procs.append(_proc(slot, p.get("pid"), gen, mpm, p.get("stopping", False), p.get("old_gen", False),
                               tpc, p.get("connections"), p.get("accepting", True), p.get("busy"),
                               p.get("graceful"), p.get("idle"), p.get("wait_io"), p.get("writing"),
                               p.get("keep_alive"), p.get("closing")))
    elif letters:
        for r in range(rows):
            row = letters[r * tpc:(r + 1) * tpc]
            if row.count(".") == len(row):
                continue
            pid, gen = pid_of.get(r, (None, None))
            busy = len(row) - row.count("_") - row.count(".") - row.count("S") - row.count("I") - row.count("G")
            procs.append(_proc(r, pid, gen, mpm, False, gen is not None and mpm_gen is not None and gen != mpm_gen,
                               tpc, None, None, busy, row.count("G"), row.count("_"), None, None, None, None))

    event = mpm == "event"
    processes = _num(f, "Processes") if "Processes" in f else (len(procs) if letters else None)
    stopping = _num(f, "Stopping") if "Stopping" in f else None
    proc_sum = {
        "processes": processes, "stopping": stopping, "connections": _num(f, "ConnsTotal"),
        "busy": _num(f, "BusyWorkers"), "graceful": _num(f, "GracefulWorkers"),
        "idle": sum(p["idle"] or 0 for p in procs) if procs else None,
        "wait_io": _num(f, "ConnsAsyncWaitIO"), "writing": _num(f, "ConnsAsyncWriting"),
        "keep_alive": _num(f, "ConnsAsyncKeepAlive"), "closing": _num(f, "ConnsAsyncClosing"),
        "suspended": None, "pss_kb": None, "rss_kb": None,
    }
    totals = None
    if "Total Accesses" in f:
        kbytes = _num(f, "Total kBytes")
        totals = {
            "accesses": _num(f, "Total Accesses"), "kbytes": kbytes,
            # as apache_exporter: kBytes x 1024 (Apache only prints whole kB)
            "bytes": kbytes * 1024 if kbytes is not None else None,
            "duration_ms": _num(f, "Total Duration"),
            "cpu_user": _num(f, "CPUUser", float), "cpu_system": _num(f, "CPUSystem", float),
            "cpu_children_user": _num(f, "CPUChildrenUser", float),
            "cpu_children_system": _num(f, "CPUChildrenSystem", float), "cpu_ticks": None,
            "cpu_load": _num(f, "CPULoad", float), "req_per_sec": _num(f, "ReqPerSec", float),
            "bytes_per_sec": _num(f, "BytesPerSec", float), "bytes_per_req": _num(f, "BytesPerReq", float),
            "duration_per_req": _num(f, "DurationPerReq", float),
        }
    uptime = _num(f, "ServerUptimeSeconds")
    if uptime is None:
        uptime = _num(f, "Uptime")
    summary = {
        "server_name": name, "server_version": f.get("ServerVersion"), "server_built": f.get("Server Built"),
        "mpm": mpm, "current_time": frame.t,
        "restart_time": frame.t - uptime if uptime is not None else None,
        "current_time_text": f.get("CurrentTime"), "restart_time_text": f.get("RestartTime"),
        "config_generation": _num(f, "ParentServerConfigGeneration"), "mpm_generation": mpm_gen,
        "uptime": uptime, "uptime_text": f.get("ServerUptime"),
        "load": [_num(f, k, float) for k in ("Load1", "Load5", "Load15")],
        "extended_status": totals is not None,
        "server_limit": None, "threads_per_child": None if inferred else tpc, "max_request_workers": None,
        "busy": _num(f, "BusyWorkers"), "graceful": _num(f, "GracefulWorkers"), "idle": _num(f, "IdleWorkers"),
        "scoreboard": letters if "Scoreboard" in f else None,
        "state_counts": counts if "Scoreboard" in f else None,
        "processes": processes, "stopping": stopping,
        "conns_total": _num(f, "ConnsTotal"), "conns_async_wait_io": _num(f, "ConnsAsyncWaitIO"),
        "conns_async_writing": _num(f, "ConnsAsyncWriting"),
        "conns_async_keep_alive": _num(f, "ConnsAsyncKeepAlive"),
        "conns_async_closing": _num(f, "ConnsAsyncClosing"),
        "procs": procs, "proc_sum": proc_sum, "fcgi_procs": [], "totals": totals,
    }
    caps = {
        "scoreboard": "Scoreboard" in f, "workers": workers is not None, "process_table": bool(procs),
        "process_pids": procs_html is not None or bool(pid_of), "totals": totals is not None,
        "async_connections": "ConnsTotal" in f, "memory": False, "generation": mpm_gen is not None,
        "threads_per_child": not inferred, "patterns": False, "control": False,
    }
    cannot = list(CANNOT_APACHE)
    cannot.append(CANNOT_APACHE_EVENT if event else CANNOT_APACHE_NOT_EVENT)
    if inferred and mpm != "prefork":
        cannot.append(f"ThreadsPerChild is not in mod_status' output: the grid's row width ({tpc}) was inferred "
                      "from the scoreboard; set threads_per_child for this source to fix it")
    if totals is None:
        cannot.append("ExtendedStatus is Off: no accesses, traffic or CPU totals")
    if html_wanted and html_error:
        cannot.append(html_error)
    elif html_wanted and workers is None:
        cannot.append("the HTML page has no per-worker table (ExtendedStatus Off): no PIDs, clients or requests "
                      "per slot")
    if not event and letters:
        cannot.append(f"{mpm} has no per-process table on Apache's page: processes are counted from the scoreboard"
                      + ("" if pid_of else " and their PIDs are unknown"))

    frame.ok = True
    frame.summary = summary
    frame.letters = letters if "Scoreboard" in f else None
    frame.layout = {"rows": rows, "cols": tpc, "threads_per_child": tpc, "inferred": inferred} if letters else None
    frame.workers = workers
    frame.raw = dict(f)
    frame.capabilities = caps
    frame.cannot_show = cannot


def _proc(slot, pid, gen, mpm, stopping, old_gen, threads, connections, accepting, busy, graceful, idle,
          wait_io, writing, keep_alive, closing) -> dict[str, Any]:
    """A process row with the keys of ``mpmcore.status.modstatus.summarize``'s ``procs``."""
    return {
        "slot": slot, "pid": pid, "generation": gen, "mpm": mpm, "kind": "child",
        "stopping": bool(stopping), "old_gen": bool(old_gen), "threads": threads, "start_time": None,
        "connections": connections, "accepting": accepting, "busy": busy, "graceful": graceful, "idle": idle,
        "wait_io": wait_io, "writing": writing, "keep_alive": keep_alive, "closing": closing,
        "suspended": None, "pss_kb": None, "rss_kb": None, "mem_time": None,
    }


# -- nginx -------------------------------------------------------------------------------------
_STUB = re.compile(
    r"Active connections:\s*(?P<active>\d+)\s+server accepts handled requests\s+"
    r"(?P<accepts>\d+)\s+(?P<handled>\d+)\s+(?P<requests>\d+)\s+"
    r"Reading:\s*(?P<reading>\d+)\s+Writing:\s*(?P<writing>\d+)\s+Waiting:\s*(?P<waiting>\d+)")


def _looks_like_stub_status(text: str) -> bool:
    return text.lstrip().startswith("Active connections:")


def parse_stub_status(text: str) -> dict[str, int] | None:
    """nginx's stub_status as ints: active, accepts, handled, requests, reading, writing, waiting."""
    m = _STUB.search(text)
    return {k: int(v) for k, v in m.groupdict().items()} if m else None


class NginxSource(_HTTPSource):
    """nginx's stub_status at ``url`` (``http://127.0.0.1:8082/nginx_status``)."""

    kind = "nginx"

    def _poll(self, target: Target, frame: SourceFrame) -> None:
        status, headers, body = _fetch(target, self.path, self.timeout)
        if status != 200:
            raise SourceError("http-status", f"{self.url} answered {status}: not a stub_status page "
                                             "(is `stub_status;` set in this location?)")
        stub = parse_stub_status(body.decode("latin-1"))
        if stub is None:
            raise SourceError("not-status-page", f"{self.url} is not nginx's stub_status page "
                                                 "(no 'Active connections' block)")
        _fill_nginx(frame, stub, headers.get("server"))


def _fill_nginx(frame: SourceFrame, stub: dict[str, int], server_header: str | None) -> None:
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    summary.update({
        "server_version": server_header, "mpm": "nginx", "current_time": frame.t, "load": [None, None, None],
        "extended_status": False, "procs": [], "fcgi_procs": [],
        "conns_total": stub["active"],
        # nginx's Waiting: idle keep-alive connections, held by no worker: what event parks
        "conns_async_keep_alive": stub["waiting"],
        "proc_sum": {"processes": None, "stopping": None, "connections": stub["active"], "busy": None,
                     "graceful": None, "idle": None, "wait_io": None, "writing": None,
                     "keep_alive": stub["waiting"], "closing": None, "suspended": None, "pss_kb": None,
                     "rss_kb": None},
        "totals": dict.fromkeys(TOTALS_KEYS) | {"accesses": stub["requests"]},
        # nginx-only figures, under their own names
        "nginx": dict(stub),
    })
    frame.ok = True
    frame.summary = summary
    frame.connections = dict(stub)
    frame.raw = {k: str(v) for k, v in stub.items()}
    frame.capabilities = {"scoreboard": False, "workers": False, "process_table": False, "process_pids": False,
                          "totals": True, "async_connections": False, "memory": False, "generation": False,
                          "threads_per_child": False, "patterns": False, "control": False, "connections": True}
    frame.cannot_show = list(CANNOT_NGINX)


# -- auto-detection ----------------------------------------------------------------------------
class AutoSource(_HTTPSource):
    """Looks at ``url`` once (GET, without ?auto) and becomes an ApacheSource or an NginxSource."""

    def __init__(self, url: str, name: str | None = None, **kw) -> None:
        super().__init__(url, name, allow_remote=kw.get("allow_remote", False),
                         timeout=kw.get("timeout", DEFAULT_TIMEOUT))
        self.kw = kw
        self.inner: ApacheSource | NginxSource | None = None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def poll(self) -> SourceFrame:
        if self.inner is None:
            frame = super().poll()  # the detection: its frame is the answer only when it failed
            if self.inner is None:
                return frame
            self.kind = self.inner.kind
        return self.inner.poll()

    def _poll(self, target: Target, frame: SourceFrame) -> None:
        status, _, body = _fetch(target, self.path, self.timeout)
        text = body[:65536].decode("latin-1")
        if _looks_like_stub_status(text):
            self.inner = NginxSource(self.url, self.name, **_only(self.kw, NginxSource))
        elif status == 200 and ("Apache Status" in text or "Server MPM" in text or "Scoreboard" in text):
            self.inner = ApacheSource(self.url, self.name, **self.kw)
        else:
            raise SourceError("not-status-page", f"{self.url} is neither Apache's mod_status page nor "
                                                 f"nginx's stub_status (HTTP {status})")


def _only(kw: dict, cls) -> dict:
    import inspect
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kw.items() if k in params}


def _default_name(url: str) -> str:
    p = urlsplit(url)
    return p.netloc or url


def parse_spec(spec: str) -> tuple[str | None, str | None, str, dict[str, Any]]:
    """``[NAME=][KIND+]URL[#threads_per_child=N]`` -> (kind, name, url, options).

    ``apache-event=http://127.0.0.1:8081/server-status``, ``nginx+http://127.0.0.1:8082/nginx_status``,
    ``http://127.0.0.1:8083/server-status#threads_per_child=25``. KIND is apache or nginx
    (otherwise detected). Raises ValueError for an unknown option or a bad value."""
    spec = spec.strip()
    name = None
    eq, colon = spec.find("="), spec.find("://")
    if eq != -1 and (colon == -1 or eq < colon):
        name, spec = spec[:eq].strip() or None, spec[eq + 1:].strip()
    kind = None
    m = re.match(r"(apache|nginx)\+(.*)$", spec, re.I)
    if m:
        kind, spec = m.group(1).lower(), m.group(2)
    options: dict[str, Any] = {}
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
                kind: str | None = None, name: str | None = None,
                threads_per_child: int | None = None) -> ApacheSource | NginxSource | AutoSource:
    """A source from an ``--attach`` value (see ``parse_spec``). Never contacts the server: errors
    in the URL show up in the first poll's frame, like every other error (ValueError only for a
    malformed ``#option``)."""
    k, n, url, opts = parse_spec(spec)
    kind, name = kind or k, name or n
    threads_per_child = threads_per_child or opts.get("threads_per_child")
    if kind is None and re.search(r"(stub_status|nginx_status|nginx)", urlsplit(url if "://" in url else
                                                                                  "http://" + url).path):
        kind = "nginx"
    if kind == "nginx":
        return NginxSource(url, name, allow_remote=allow_remote, timeout=timeout)
    if kind == "apache":
        return ApacheSource(url, name, allow_remote=allow_remote, timeout=timeout,
                            threads_per_child=threads_per_child)
    kw: dict[str, Any] = {"allow_remote": allow_remote, "timeout": timeout}
    if threads_per_child:
        kw["threads_per_child"] = threads_per_child
    return AutoSource(url, name, **kw)


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
def frame_from_summary(name: str, summary: dict[str, Any] | None, url: str = "",
                       workers: list[dict[str, Any]] | None = None, error: str | None = None) -> SourceFrame:
    """The embedded core's ``summarize()`` dict (the sampler's ``self.summary``) as a frame."""
    frame = SourceFrame(name, "mpmlab", url, (summary or {}).get("current_time") or time.time())
    if summary is None:
        _fail(frame, "unreachable", error or "the embedded server is not running")
        return frame
    frame.ok = True
    frame.summary = summary
    frame.letters = summary.get("scoreboard")
    tpc = max(1, summary.get("threads_per_child") or 1)
    n = len(frame.letters or "")
    frame.layout = {"rows": math.ceil(n / tpc) if n else 0, "cols": tpc, "threads_per_child": tpc, "inferred": False}
    frame.workers = workers
    frame.capabilities = {"scoreboard": True, "workers": True, "process_table": True, "process_pids": True,
                          "totals": summary.get("totals") is not None, "async_connections": True, "memory": True,
                          "generation": True, "threads_per_child": True, "patterns": True, "control": True}
    frame.cannot_show = []
    return frame


# -- shapes the dashboard already uses ---------------------------------------------------------------
#: app.services.grid's frame header (version 1), so an attached Apache's grid draws with the same
#: static/js/scoreboard.js. tests/test_attach.py checks that the two stay the same.
GRID_HEADER = struct.Struct("<BBBBIdIHHHH")
GRID_MAGIC, GRID_VERSION, GRID_NO_SERVER = 0x4D, 1, 255
ROW_ALIVE, ROW_STOPPING, ROW_OLD_GEN, ROW_NOT_ACCEPTING = 1, 2, 4, 8


def grid_frame(frame: SourceFrame, seq: int = 0, now_ms: float | None = None) -> bytes | None:
    """The binary grid frame of app.services.grid (same layout) for a frame with a scoreboard; None without
    one (nginx, errors). Pattern indices are all 0: Apache does not show patterns."""
    if not frame.ok or not frame.letters or not frame.layout:
        return None
    s = frame.summary or {}
    lay = frame.layout
    rows, cols = lay["rows"], lay["cols"]
    letters = frame.letters.ljust(rows * cols, ".")[: rows * cols]
    statuses = bytes(_STATE_BY_LETTER.get(ch, 0) for ch in letters)
    flags = bytearray(rows)
    pids = [0] * rows
    gens = [0] * rows
    run_gen = s.get("mpm_generation") or 0
    for p in s.get("procs") or []:
        slot = p.get("slot")
        if slot is None or not 0 <= slot < rows:
            continue
        f = ROW_ALIVE
        if p.get("stopping"):
            f |= ROW_STOPPING
        if p.get("old_gen"):
            f |= ROW_OLD_GEN
        if p.get("accepting") is False:
            f |= ROW_NOT_ACCEPTING
        flags[slot] = f
        pids[slot] = max(0, p.get("pid") or 0)
        gens[slot] = p.get("generation") if p.get("generation") is not None else run_gen
    head = GRID_HEADER.pack(GRID_MAGIC, GRID_VERSION, MPM_IDS.get(s.get("mpm"), GRID_NO_SERVER), 0,
                            seq & 0xFFFFFFFF, time.time() * 1000 if now_ms is None else now_ms, run_gen & 0xFFFFFFFF,
                            rows, cols, lay["threads_per_child"], 0)
    return b"".join((head, statuses, bytes(rows * cols), bytes(flags), struct.pack(f"<{rows}I", *pids),
                     struct.pack(f"<{rows}I", *[g & 0xFFFFFFFF for g in gens])))


def summary_message(frame: SourceFrame) -> dict[str, Any]:
    """The sampler's websocket ``summary`` message (app.services.sampler) for a frame, plus ``source``,
    ``kind``, ``ok``, ``error``, ``cannot_show`` and nginx's ``connections``. ``insight`` and
    ``point`` are left None for the dashboard to fill (``app.services.insights.describe(frame.summary)``
    works on Apache frames; ``chart_point`` gives the point)."""
    s = frame.summary or {}
    return {
        "type": "summary", "t": frame.t, "source": frame.source, "kind": frame.kind, "ok": frame.ok,
        "error": frame.error, "mpm": s.get("mpm"), "generation": s.get("mpm_generation"), "patterns": [],
        "counts": s.get("state_counts"), "busy": s.get("busy"), "idle": s.get("idle"), "graceful": s.get("graceful"),
        "processes": s.get("processes"), "stopping": s.get("stopping"),
        "max_request_workers": s.get("max_request_workers"), "threads_per_child": s.get("threads_per_child"),
        "server_limit": s.get("server_limit"),
        "conns": {"total": s.get("conns_total"), "keep_alive": s.get("conns_async_keep_alive"),
                  "writing": s.get("conns_async_writing"), "closing": s.get("conns_async_closing")},
        "accesses": (s.get("totals") or {}).get("accesses"),
        "connections": frame.connections, "cannot_show": frame.cannot_show, "capabilities": frame.capabilities,
        "insight": None, "point": None,
    }


def chart_point(frame: SourceFrame, last: tuple[float, int] | None) -> tuple[dict[str, Any] | None, tuple[float, int] | None]:
    """A chart point with app.services.sampler's keys (``traffic`` left for the dashboard), and the new
    ``last`` (time, accesses) to pass next time. Unknown figures are None; rps needs two frames.
    For nginx, R and W are its Reading and Writing connections and parked_keep_alive its Waiting."""
    if not frame.ok or frame.summary is None:
        return None, last
    s = frame.summary
    accesses = (s.get("totals") or {}).get("accesses")
    rps = None
    if accesses is not None and last is not None and frame.t > last[0] and accesses >= last[1]:
        rps = round((accesses - last[1]) / (frame.t - last[0]), 2)
    c = s.get("state_counts") or {}
    pss = (s.get("proc_sum") or {}).get("pss_kb")
    conn = frame.connections or {}
    point = {
        "t": round(frame.t, 3), "rps": rps, "busy": s.get("busy"), "idle": s.get("idle"),
        # the G slots the grid shows (see app.services.sampler: GracefulWorkers skips stopping children)
        "graceful": (s.get("state_counts") or {}).get("G", s.get("graceful")),
        "R": c.get("R") if c else conn.get("reading"), "W": c.get("W") if c else conn.get("writing"),
        "K": c.get("K") if c else None, "C": c.get("C") if c else None,
        "parked_keep_alive": s.get("conns_async_keep_alive"), "async_writing": s.get("conns_async_writing"),
        "async_closing": s.get("conns_async_closing"), "conns_total": s.get("conns_total"),
        "pss_mb": round(pss / 1024, 1) if pss is not None else None,
    }
    return point, ((frame.t, accesses) if accesses is not None else last)
