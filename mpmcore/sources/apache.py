"""Apache httpd's mod_status, read into the typed model.

``ApacheSource(url)``: ``GET url?auto``, read the way Prometheus' apache_exporter reads it (each
line split at the first colon, keys and values trimmed, unknown keys ignored, the Scoreboard
letters counted), plus the HTML page (``url`` without a query) for ExtendedStatus' per-worker
table and event's per-process table, found by their column headings (so an older or newer Apache
with other columns still parses). ``apache_frame`` makes the frame from what was read; it is pure
(tests feed it text).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TypeAlias

from mpmcore.model import (
    Capabilities,
    GridLayout,
    ProcessRow,
    ProcSum,
    SourceFrame,
    Summary,
    Totals,
    WorkerRow,
    count_states,
)
from mpmcore.netloc import Target
from mpmcore.scoreboard import STATE_LETTERS, STATE_NAMES
from mpmcore.sources.client import DEFAULT_TIMEOUT, SourceError, get
from mpmcore.sources.frames import HTTPSource, with_workers
from mpmcore.sources.lighttpd import parse_lighttpd_auto
from mpmcore.sources.nginx import looks_like_stub_status

#: ThreadLimit's compiled-in maximum is far higher, but Apache's default ThreadLimit is 64; a row
#: wider than that is only guessed when a hint says so.
MAX_GUESSED_THREADS = 64

# What every Apache source cannot show, in words for the page.
CANNOT_APACHE = (
    "Apache's status page has no memory figures: memory per process is not available",
    "MaxRequestWorkers, ServerLimit and ThreadsPerChild are not in mod_status' output",
    "each poll is itself a request: one W slot (and one access) on the page is the poller's own",
    "the process and worker tables come from a second request (the HTML page), a moment after the counts",
    "the X-Traffic-Pattern of each slot is an mpmlab addition: Apache does not show it",
)
CANNOT_APACHE_EVENT = ("Apache refreshes event's async counters (ConnsTotal, ConnsAsync*) only when its "
                       "timeout queues are processed, so they lag behind the scoreboard by seconds")
CANNOT_APACHE_NOT_EVENT = ("prefork and worker have no async connections: ConnsTotal and ConnsAsync* exist "
                           "only for event")

_STATE_BY_LETTER = {ch: i for i, ch in enumerate(STATE_LETTERS)}
_IDLE_LETTERS = "_."


# -- ?auto -------------------------------------------------------------------------------------
_AUTO_KEYS = {"ServerVersion", "ServerMPM", "Server Built", "CurrentTime", "RestartTime",
              "ParentServerConfigGeneration", "ParentServerMPMGeneration", "ServerUptimeSeconds", "ServerUptime",
              "Load1", "Load5", "Load15", "Total Accesses", "Total kBytes", "Total Duration", "CPUUser",
              "CPUSystem", "CPUChildrenUser", "CPUChildrenSystem", "CPULoad", "Uptime", "ReqPerSec",
              "BytesPerSec", "BytesPerReq", "DurationPerReq", "BusyWorkers", "GracefulWorkers", "IdleWorkers",
              "Processes", "Stopping", "ConnsTotal", "ConnsAsyncWaitIO", "ConnsAsyncWriting",
              "ConnsAsyncKeepAlive", "ConnsAsyncClosing", "Scoreboard"}


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


def _float_field(fields: dict[str, str], key: str) -> float | None:
    """A number from ``fields`` or None. Apache prints ``.5`` for 0.5 (APR's %g): float() reads it."""
    v = fields.get(key)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _int_field(fields: dict[str, str], key: str) -> int | None:
    x = _float_field(fields, key)
    return int(x) if x is not None and math.isfinite(x) else None


# -- the HTML page -----------------------------------------------------------------------------
Cell: TypeAlias = tuple[str, bool, int, int]  # text, is_header, rowspan, colspan


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cells (text, is_header, rowspan, colspan). Tolerant of
    unclosed cells and rows (mod_status closes them, other pages may not) and of nested tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[Cell]]] = []
        self._stack: list[list[list[Cell]]] = []
        self._row: list[Cell] | None = None
        self._cell: list[str] | None = None
        self._cell_meta: tuple[bool, int, int] = (False, 1, 1)

    @staticmethod
    def _span(attrs: list[tuple[str, str | None]], name: str) -> int:
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

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
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

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._close_cell()
        elif tag == "tr":
            self._close_row()
        elif tag == "table" and self._stack:
            self._close_row()
            self.tables.append(self._stack.pop())

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def close(self) -> None:
        super().close()
        while self._stack:
            self._close_row()
            self.tables.append(self._stack.pop())


def _header_columns(rows: list[list[Cell]]) -> tuple[list[str], int]:
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


_PROC_COLUMNS = {  # normalised heading -> ProcessRow field
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


def _int(text: str | None) -> int | None:
    m = re.match(r"\s*(-?\d+)", text or "")
    return int(m.group(1)) if m else None


def _float(text: str | None) -> float | None:
    try:
        return float(text or "")
    except ValueError:
        return None


_PRE_SCOREBOARD = re.compile(r"<pre>\s*([_SRWKLDCGI.\n]+?)\s*</pre>")


@dataclass(frozen=True, slots=True)
class StatusTables:
    """What mod_status' HTML page adds to ``?auto``: event's per-process table, ExtendedStatus'
    per-worker table, and the page's own scoreboard letters (``None`` where the page has none).
    Process rows have no generation, MPM or thread count yet (the page does not print them in
    that table); worker rows have no thread number yet (``assign_threads`` places them)."""

    procs: tuple[ProcessRow, ...] | None = None
    workers: tuple[WorkerRow, ...] | None = None
    letters: str | None = None


def parse_status_html(page: str) -> StatusTables:
    """The tables of mod_status' HTML page, recognised by their headings, not their position: the
    per-process table by "PID", "Stopping" and "Threads busy" (event only), the per-worker table by
    "Srv", "PID", "Acc" and "M" (only with ExtendedStatus On)."""
    parser = _Tables()
    try:
        parser.feed(page)
        parser.close()
    except Exception:  # html.parser is lenient; anything it still chokes on means "no tables"
        return StatusTables()
    procs: tuple[ProcessRow, ...] | None = None
    workers: tuple[WorkerRow, ...] | None = None
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
    return StatusTables(procs, workers, letters)


def _proc_rows(rows: list[list[Cell]], names: list[str]) -> tuple[ProcessRow, ...]:
    out = []
    for row in rows:
        cells = [c[0] for c in row]
        if not cells or cells[0].lower() == "sum" or len(cells) < len(names):
            continue
        ints: dict[str, int | None] = {}
        stopping = old_gen = False
        accepting = True
        for name, text in zip(names, cells, strict=False):
            key = _PROC_COLUMNS.get(name)
            if key == "stopping":
                stopping = text.lower().startswith("yes")
                old_gen = "old gen" in text.lower()
            elif key == "accepting":
                accepting = text.lower().startswith("yes")
            elif key:
                ints[key] = _int(text)
        if ints.get("pid"):
            out.append(ProcessRow(
                slot=ints.get("slot"), pid=ints.get("pid"), generation=None, mpm="?", stopping=stopping,
                old_gen=old_gen, accepting=accepting, connections=ints.get("connections"), busy=ints.get("busy"),
                graceful=ints.get("graceful"), idle=ints.get("idle"), wait_io=ints.get("wait_io"),
                writing=ints.get("writing"), keep_alive=ints.get("keep_alive"), closing=ints.get("closing")))
    return tuple(out)


def _worker_rows(rows: list[list[Cell]], names: list[str]) -> tuple[WorkerRow, ...]:
    out = []
    for row in rows:
        cells = [c[0] for c in row]
        if len(cells) < 4 or all(c[1] for c in row):
            continue
        raw = {_WORKER_COLUMNS[n]: t for n, t in zip(names, cells, strict=False) if n in _WORKER_COLUMNS}
        proc, _, gen = (raw.get("srv") or "").partition("-")
        acc = [_int(x) for x in (raw.get("acc") or "").split("/")] + [None, None, None]
        letter = (raw.get("status") or "?").strip()[:1] or "?"
        state = _STATE_BY_LETTER.get(letter)
        kb, child_mb, slot_mb = (_float(raw.get(k, "")) for k in ("conn_kb", "child_mb", "slot_mb"))
        out.append(WorkerRow(
            proc=_int(proc), thread=None, pid=_int(raw.get("pid", "")), tid=None, generation=_int(gen),
            status=letter, state=STATE_NAMES.get(state, "?") if state is not None else "?",
            conn_count=acc[0], my_access_count=acc[1], access_count=acc[2],
            conn_bytes=int(kb * 1024) if kb is not None else None,
            my_bytes_served=int(child_mb * 1048576) if child_mb is not None else None,
            bytes_served=int(slot_mb * 1048576) if slot_mb is not None else None,
            cpu=_float(raw.get("cpu", "")), ss=_int(raw.get("ss", "")), req_ms=_int(raw.get("req_ms", "")),
            last_req_ms=_int(raw.get("req_ms", "")), duration_ms=_int(raw.get("duration_ms", "")),
            state_since=None, tls=None,
            client=raw.get("client"), protocol=raw.get("protocol"), vhost=raw.get("vhost"),
            request=raw.get("request"), pattern=raw.get("pattern"),
        ))
    return tuple(out)


# -- worker rows to grid cells ---------------------------------------------------------------
def assign_threads(letters: str, tpc: int, workers: tuple[WorkerRow, ...] | None
                   ) -> tuple[tuple[WorkerRow, ...] | None, int]:
    """The ExtendedStatus rows with ``thread`` set where their grid cell is certain (``None``
    elsewhere), and how many were placed.

    mod_status' worker table has no thread column: it lists, in slot order, every slot except the
    idle ('_') and dead ('.') ones that never served a request. So every other slot of a process
    is listed, and those rows anchor the alignment: they must carry the scoreboard's letters in
    order (``letters``: the page's own ``<pre>``, else ``?auto``'s; mod_status reads the scoreboard
    once for each, so a slot can change in between), or that process is left alone. Between two
    anchors, idle rows are placed only when there are as many as idle slots; otherwise which idle
    slots served before is unknown, and they stay unplaced rather than guessed."""
    if workers is None:
        return None, 0
    threads: list[int | None] = [None] * len(workers)
    if not workers or not letters or tpc < 1:
        return tuple(dataclasses.replace(w, thread=None) for w in workers), 0
    by_proc: dict[int, list[int]] = {}
    for i, w in enumerate(workers):
        if w.proc is not None:
            by_proc.setdefault(w.proc, []).append(i)
    placed = 0
    for proc, idxs in by_proc.items():
        cells = letters[proc * tpc:(proc + 1) * tpc]
        if len(cells) < tpc:
            continue
        rows = [workers[i].status for i in idxs]
        busy_cells = [j for j, ch in enumerate(cells) if ch not in _IDLE_LETTERS]
        busy_rows = [k for k, st in enumerate(rows) if st not in _IDLE_LETTERS]
        if [cells[j] for j in busy_cells] != [rows[k] for k in busy_rows]:
            continue  # the two reads disagree about this process
        # gaps: the idle cells and idle rows before each anchor, and after the last
        bounds_c, bounds_r = [-1, *busy_cells, tpc], [-1, *busy_rows, len(rows)]
        for g in range(len(bounds_c) - 1):
            idle_c = list(range(bounds_c[g] + 1, bounds_c[g + 1]))
            idle_r = list(range(bounds_r[g] + 1, bounds_r[g + 1]))
            if idle_r and len(idle_r) == len(idle_c) and all(cells[j] == rows[k]
                                                              for j, k in zip(idle_c, idle_r, strict=True)):
                for j, k in zip(idle_c, idle_r, strict=True):
                    threads[idxs[k]] = j
                    placed += 1
        for j, k in zip(busy_cells, busy_rows, strict=True):
            threads[idxs[k]] = j
            placed += 1
    return tuple(dataclasses.replace(w, thread=t) for w, t in zip(workers, threads, strict=True)), placed


# -- layout ------------------------------------------------------------------------------------
def infer_threads_per_child(letters: str, mpm: str, procs: tuple[ProcessRow, ...] | None,
                            workers: tuple[WorkerRow, ...] | None, hint: int | None = None) -> tuple[int, bool]:
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
    for p in procs or ():
        if not p.stopping and p.busy is not None and p.idle is not None:
            n = p.busy + (p.graceful or 0) + p.idle
            if n > 0:
                return n, False
    n = len(letters)
    if n == 0:
        return 1, True
    max_proc = max((w.proc for w in workers or () if w.proc is not None), default=0)
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


# -- the frame -----------------------------------------------------------------------------------
def apache_frame(frame: SourceFrame, name: str | None, f: dict[str, str], tables: StatusTables,
                 tpc_hint: int | None = None, html_error: str | None = None, html_wanted: bool = True) -> SourceFrame:
    """``frame`` (a poll's start) filled from ``?auto``'s fields ``f`` and the HTML page's tables."""
    mpm = (f.get("ServerMPM") or "?").strip().lower()
    letters = f.get("Scoreboard", "")
    has_board = "Scoreboard" in f
    procs_html = tables.procs
    tpc, inferred = infer_threads_per_child(letters, mpm, procs_html, tables.workers, tpc_hint)
    workers, _ = assign_threads(tables.letters or letters, tpc, tables.workers)
    rows = max(1, math.ceil(len(letters) / tpc)) if letters else 0
    mpm_gen = _int_field(f, "ParentServerMPMGeneration")
    counts = count_states(letters)

    # processes: event's own table; otherwise rows of the scoreboard with a live slot (prefork:
    # every live slot is a process), PIDs from the worker table where it shows them
    pid_of: dict[int, tuple[int, int | None]] = {}
    for w in workers or ():
        if w.proc is not None and w.pid:
            pid_of.setdefault(w.proc, (w.pid, w.generation))
    procs: list[ProcessRow] = []
    if procs_html is not None:
        for p in procs_html:
            gen = pid_of[p.slot][1] if p.slot is not None and p.slot in pid_of else None
            procs.append(dataclasses.replace(p, generation=gen, mpm=mpm, threads=tpc))
    elif letters:
        for r in range(rows):
            row = letters[r * tpc:(r + 1) * tpc]
            if row.count(".") == len(row):
                continue
            pid, gen = pid_of.get(r, (None, None))
            busy = len(row) - row.count("_") - row.count(".") - row.count("S") - row.count("I") - row.count("G")
            procs.append(ProcessRow(
                slot=r, pid=pid, generation=gen, mpm=mpm, stopping=False,
                old_gen=gen is not None and mpm_gen is not None and gen != mpm_gen, threads=tpc,
                busy=busy, graceful=row.count("G"), idle=row.count("_")))

    event = mpm == "event"
    processes = _int_field(f, "Processes") if "Processes" in f else (len(procs) if letters else None)
    stopping = _int_field(f, "Stopping") if "Stopping" in f else None
    proc_sum = ProcSum(
        processes=processes, stopping=stopping, connections=_int_field(f, "ConnsTotal"),
        busy=_int_field(f, "BusyWorkers"), graceful=_int_field(f, "GracefulWorkers"),
        idle=sum(p.idle or 0 for p in procs) if procs else None,
        wait_io=_int_field(f, "ConnsAsyncWaitIO"), writing=_int_field(f, "ConnsAsyncWriting"),
        keep_alive=_int_field(f, "ConnsAsyncKeepAlive"), closing=_int_field(f, "ConnsAsyncClosing"))
    totals = None
    if "Total Accesses" in f:
        kbytes = _int_field(f, "Total kBytes")
        totals = Totals(
            accesses=_int_field(f, "Total Accesses"), kbytes=kbytes,
            # as apache_exporter: kBytes x 1024 (Apache only prints whole kB)
            bytes=kbytes * 1024 if kbytes is not None else None,
            duration_ms=_int_field(f, "Total Duration"),
            cpu_user=_float_field(f, "CPUUser"), cpu_system=_float_field(f, "CPUSystem"),
            cpu_children_user=_float_field(f, "CPUChildrenUser"),
            cpu_children_system=_float_field(f, "CPUChildrenSystem"), cpu_ticks=None,
            cpu_load=_float_field(f, "CPULoad"), req_per_sec=_float_field(f, "ReqPerSec"),
            bytes_per_sec=_float_field(f, "BytesPerSec"), bytes_per_req=_float_field(f, "BytesPerReq"),
            duration_per_req=_float_field(f, "DurationPerReq"))
    uptime = _int_field(f, "ServerUptimeSeconds")
    if uptime is None:
        uptime = _int_field(f, "Uptime")
    summary = Summary(
        server_name=name, server_version=f.get("ServerVersion"), server_built=f.get("Server Built"),
        mpm=mpm, current_time=frame.t,
        restart_time=frame.t - uptime if uptime is not None else None,
        current_time_text=f.get("CurrentTime"), restart_time_text=f.get("RestartTime"),
        config_generation=_int_field(f, "ParentServerConfigGeneration"), mpm_generation=mpm_gen,
        uptime=uptime, uptime_text=f.get("ServerUptime"),
        load=(_float_field(f, "Load1"), _float_field(f, "Load5"), _float_field(f, "Load15")),
        extended_status=totals is not None,
        server_limit=None, threads_per_child=None if inferred else tpc, max_request_workers=None,
        busy=_int_field(f, "BusyWorkers"), graceful=_int_field(f, "GracefulWorkers"),
        idle=_int_field(f, "IdleWorkers"),
        scoreboard=letters if has_board else None,
        state_counts=counts if has_board else None,
        processes=processes, stopping=stopping,
        conns_total=_int_field(f, "ConnsTotal"), conns_async_wait_io=_int_field(f, "ConnsAsyncWaitIO"),
        conns_async_writing=_int_field(f, "ConnsAsyncWriting"),
        conns_async_keep_alive=_int_field(f, "ConnsAsyncKeepAlive"),
        conns_async_closing=_int_field(f, "ConnsAsyncClosing"),
        procs=tuple(procs), proc_sum=proc_sum, fcgi_procs=(), totals=totals,
        graceful_shown=counts["G"] if has_board else _int_field(f, "GracefulWorkers"),
    )
    caps = Capabilities(
        scoreboard=has_board, workers=workers is not None, process_table=bool(procs),
        process_pids=procs_html is not None or bool(pid_of), totals=totals is not None,
        async_connections="ConnsTotal" in f, memory=False, generation=mpm_gen is not None,
        threads_per_child=not inferred, patterns=False, control=False)
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
    layout = GridLayout(rows=rows, cols=tpc, threads_per_child=tpc, inferred=inferred) if letters else None
    return with_workers(dataclasses.replace(
        frame, ok=True, summary=summary, letters=letters if has_board else None, layout=layout,
        raw=dict(f), capabilities=caps, cannot_show=tuple(cannot)), workers)


class ApacheSource(HTTPSource):
    """Apache httpd's mod_status at ``url`` (``http://127.0.0.1:8081/server-status``)."""

    kind = "apache"

    def __init__(self, url: str, name: str | None = None, *, allow_remote: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, html: bool = True, threads_per_child: int | None = None) -> None:
        super().__init__(url, name, allow_remote=allow_remote, timeout=timeout)
        self.html = html
        self.threads_per_child = threads_per_child

    def _poll(self, target: Target, frame: SourceFrame) -> SourceFrame:
        ans = get(target, self.path + "?auto", self.timeout)
        if ans.status != 200:
            raise SourceError("http-status", f"{self.url}?auto answered {ans.status}"
                                             + (f" (Location: {ans.headers['location']})"
                                                if "location" in ans.headers else "")
                                             + ": not a mod_status page (is SetHandler server-status set here?)")
        text = ans.body.decode("latin-1")
        if looks_like_stub_status(text):
            raise SourceError("not-status-page", f"{self.url} is an nginx stub_status page: attach it as nginx")
        if parse_lighttpd_auto(text) is not None:
            raise SourceError("not-status-page", f"{self.url} is lighttpd's mod_status page: attach it as lighttpd "
                                                 "(lighttpd+URL)")
        name, fields = parse_auto(text)
        if "Scoreboard" not in fields and "BusyWorkers" not in fields:
            raise SourceError("not-status-page", f"{self.url}?auto has no BusyWorkers or Scoreboard line: "
                                                 "not Apache's mod_status")
        tables = StatusTables()
        html_error = None
        if self.html:
            try:
                page = get(target, self.path, self.timeout)
                if page.status == 200:
                    tables = parse_status_html(page.body.decode("latin-1"))
                else:
                    html_error = f"the HTML page answered {page.status}: no process or worker table"
            except SourceError as e:
                html_error = f"the HTML page could not be read ({e}): no process or worker table"
        return apache_frame(frame, name, fields, tables, self.threads_per_child, html_error, self.html)
