"""The typed model: what a server looks like at one instant.

Every producer builds these (the embedded core's ``mpmcore.status.summary.summarize``, the
attached sources of ``mpmcore.sources``: Apache's ``?auto`` and HTML page, nginx's stub_status)
and every consumer reads them (the status renderers, the dashboard's sampler, "what is
happening", ``/metrics``, the JSON API, the templates). A value a source cannot show is ``None``;
the embedded core shows every value. All types are frozen: a consumer never edits what another
one reads. FastAPI serves them as response models (docs/ARCHITECTURE.md, "The typed model").

Field names are the keys mod_status' ``?json`` has always had, so the model serialises to the same
JSON (``mpmcore.status.render.status_json`` writes that wire format from it, key for key).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

#: Scoreboard letters, Apache's (mod_status' key): one per worker slot state.
StateLetter: TypeAlias = Literal["_", "S", "R", "W", "K", "L", "D", "C", "G", "I", "."]
#: The letters in Apache's state-number order (0 '.', 1 S, 2 _, ...): the order of ``state_counts``.
STATE_ORDER: tuple[StateLetter, ...] = (".", "S", "_", "R", "W", "K", "L", "D", "C", "G", "I")
#: Letters of a slot that holds a request (a busy worker in the page's worker list).
BUSY_LETTERS: frozenset[str] = frozenset("RWKLDCG")
#: Letters of a slot that holds no request (nothing to show of a client or request line).
NO_REQUEST_LETTERS: frozenset[str] = frozenset("_.SI")
#: Busy workers listed in an attached server's panel; the rest are counted.
BUSY_WORKERS_SHOWN = 60

ProcKind: TypeAlias = Literal["child", "fcgi"]
SourceKind: TypeAlias = Literal["apache", "nginx", "lighttpd", "mpmlab", "unknown"]
ErrorKind: TypeAlias = Literal["bad-url", "not-allowed", "unreachable", "timeout", "http-status",
                               "not-status-page", "internal"]
Level: TypeAlias = Literal["ok", "info", "warn", "crit"]
#: Counts per scoreboard letter, in STATE_ORDER.
StateCounts: TypeAlias = dict[StateLetter, int]


def count_states(letters: str) -> StateCounts:
    """How many slots of ``letters`` are in each state (every letter present, zeros included)."""
    return {ch: letters.count(ch) for ch in STATE_ORDER}


def to_jsonable(obj: Any) -> Any:
    """A model value as plain JSON data (dataclasses as dicts in field order, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


# -- the summary: mod_status' numbers ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Totals:
    """ExtendedStatus' totals: accesses, traffic, duration, CPU, and Apache's rates (C floats)."""

    accesses: int | None = None
    bytes: int | None = None
    kbytes: int | None = None
    duration_ms: int | None = None
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_children_user: float | None = None
    cpu_children_system: float | None = None
    cpu_ticks: int | None = None
    cpu_load: float | None = None  # None: no CPU used yet (Apache leaves the line out)
    req_per_sec: float | None = None  # None: zero uptime
    bytes_per_sec: float | None = None
    bytes_per_req: float | None = None  # None: no access yet
    duration_per_req: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One process of the scoreboard (event's per-process table, kept for every MPM)."""

    slot: int | None
    pid: int | None
    generation: int | None
    mpm: str
    kind: ProcKind = "child"
    stopping: bool = False
    old_gen: bool = False
    threads: int | None = None
    start_time: float | None = None
    connections: int | None = None
    accepting: bool | None = None  # None: not known (an attached Apache without its process table)
    busy: int | None = None
    graceful: int | None = None
    idle: int | None = None
    wait_io: int | None = None
    writing: int | None = None
    keep_alive: int | None = None
    closing: int | None = None
    suspended: int | None = None
    pss_kb: int | None = None
    rss_kb: int | None = None
    mem_time: float | None = None


@dataclass(frozen=True, slots=True)
class ProcSum:
    """The sums under the process table (event's "Sum" row)."""

    processes: int | None = None
    stopping: int | None = None
    connections: int | None = None
    busy: int | None = None
    graceful: int | None = None
    idle: int | None = None  # READY slots of every generation (Apache's per-process idle)
    wait_io: int | None = None
    writing: int | None = None
    keep_alive: int | None = None
    closing: int | None = None
    suspended: int | None = None
    pss_kb: int | None = None
    rss_kb: int | None = None


@dataclass(frozen=True, slots=True)
class NginxCounts:
    """nginx's stub_status, as it prints it."""

    active: int
    accepts: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int


@dataclass(frozen=True, slots=True)
class LighttpdCounts:
    """lighttpd's mod_status ``?auto``, as it prints it: ``busy_servers`` are its open connections,
    ``idle_servers`` its free connection slots (server.max-connections minus the open ones);
    ``states`` counts the connections per lighttpd state letter (``.qrQRhsWSECxk``, see
    ``mpmcore.sources.lighttpd``), ``scoreboard`` is its own letters, one per connection slot."""

    accesses: int
    kbytes: int
    uptime: int
    busy_servers: int
    idle_servers: int
    scoreboard: str
    states: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Summary:
    """Everything mod_status shows about a server, by Apache's counting rules.

    ``busy``/``idle``/``graceful`` are mod_status' BusyWorkers/IdleWorkers/GracefulWorkers;
    ``graceful_shown`` is the number of G slots the grid shows (GracefulWorkers skips stopping
    children, so during a restart the two differ)."""

    mpm: str  # prefork | worker | event (nginx for nginx; "?" when a page does not say)
    current_time: float
    server_name: str | None = None
    server_version: str | None = None
    server_built: str | None = None
    restart_time: float | None = None
    current_time_text: str | None = None
    restart_time_text: str | None = None
    config_generation: int | None = None
    mpm_generation: int | None = None
    uptime: int | None = None
    uptime_text: str | None = None
    load: tuple[float | None, float | None, float | None] = (None, None, None)
    extended_status: bool = False
    server_limit: int | None = None
    threads_per_child: int | None = None
    max_request_workers: int | None = None
    busy: int | None = None
    graceful: int | None = None
    idle: int | None = None
    scoreboard: str | None = None
    state_counts: StateCounts | None = None
    processes: int | None = None
    stopping: int | None = None
    conns_total: int | None = None
    conns_async_wait_io: int | None = None
    conns_async_writing: int | None = None
    conns_async_keep_alive: int | None = None
    conns_async_closing: int | None = None
    procs: tuple[ProcessRow, ...] = ()
    proc_sum: ProcSum = field(default_factory=ProcSum)
    fcgi_procs: tuple[ProcessRow, ...] = ()
    totals: Totals | None = None
    graceful_shown: int | None = None
    nginx: NginxCounts | None = None
    lighttpd: LighttpdCounts | None = None

    def count(self, letter: StateLetter) -> int:
        """Slots in state ``letter`` (0 when the source has no scoreboard)."""
        return (self.state_counts or {}).get(letter, 0)

    @property
    def children(self) -> tuple[ProcessRow, ...]:
        """The MPM's child processes (the FastCGI pool's are in ``fcgi_procs``)."""
        return tuple(p for p in self.procs if p.kind == "child")


# -- workers and slots ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker slot of ExtendedStatus' table (mod_status' columns; ``None`` where a source's
    page has no such column: an attached Apache has no thread number, tid, tls or state time)."""

    proc: int | None
    thread: int | None
    pid: int | None
    tid: int | None = None
    generation: int | None = None
    status: str = "?"  # the scoreboard letter ("?" when unknown)
    state: str = "?"  # the state's name, as mod_status' key says it
    conn_count: int | None = None
    my_access_count: int | None = None
    access_count: int | None = None
    conn_bytes: int | None = None
    my_bytes_served: int | None = None
    bytes_served: int | None = None
    cpu: float | None = None
    ss: int | None = None  # seconds since the most recent request began
    req_ms: int | None = None
    last_req_ms: int | None = None
    duration_ms: int | None = None
    state_since: float | None = None
    tls: bool | None = None
    client: str | None = None
    protocol: str | None = None
    vhost: str | None = None
    request: str | None = None
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class SlotDetail:
    """One worker slot of the embedded core, read under its sequence counter (the grid's tooltip).
    ``client``, ``request`` and ``pattern`` are empty when the slot holds no request."""

    proc: int
    thread: int
    pid: int
    tid: int
    generation: int
    mpm: str | None
    status: str
    state: str
    seconds_in_state: float | None
    client: str
    request: str
    pattern: str  # the X-Traffic-Pattern of the request holding the slot
    vhost: str
    protocol: str
    tls: bool
    conn_count: int
    access_count: int
    my_access_count: int
    bytes_served: int
    last_request_ms: int
    last_request: str
    process_stopping: bool


@dataclass(frozen=True, slots=True)
class AttachedSlotDetail:
    """A grid cell of an attached Apache: its letter, and its ExtendedStatus row when its place is
    certain (``detail``); without one, only the letter is known."""

    proc: int
    thread: int
    status: str
    detail: bool = False
    pid: int | None = None
    generation: int | None = None
    since_request_s: int | None = None  # mod_status' SS
    client: str | None = None
    request: str | None = None
    vhost: str | None = None
    protocol: str | None = None
    conn_count: int | None = None
    access_count: int | None = None
    my_access_count: int | None = None
    last_request: str | None = None
    last_request_ms: int | None = None


# -- a source's frame ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GridLayout:
    """How a scoreboard string is drawn: rows of processes, ``cols`` slots each."""

    rows: int
    cols: int
    threads_per_child: int
    inferred: bool = False  # the row width was guessed (mod_status does not print ThreadsPerChild)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a source can show."""

    scoreboard: bool = False
    workers: bool = False
    process_table: bool = False
    process_pids: bool = False
    totals: bool = False
    async_connections: bool = False
    memory: bool = False
    generation: bool = False
    threads_per_child: bool = False
    patterns: bool = False
    control: bool = False
    connections: bool = False  # nginx's connection counts


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One poll of one source (or one summary of the embedded core).

    ``letters``: the scoreboard string (``None`` for nginx); ``workers``: ExtendedStatus rows or
    ``None``; ``busy_workers``: the first BUSY_WORKERS_SHOWN of them that hold a request, and
    ``busy_workers_total`` how many do; ``cannot_show``: what this source cannot show, in
    sentences for the page."""

    source: str  # the name shown on the page ("apache-event", "127.0.0.1:8081")
    kind: SourceKind
    url: str
    t: float  # wall clock of the poll
    ok: bool = False
    error: str | None = None
    error_kind: ErrorKind | None = None
    summary: Summary | None = None
    letters: str | None = None
    layout: GridLayout | None = None
    workers: tuple[WorkerRow, ...] | None = None
    connections: NginxCounts | None = None
    raw: dict[str, str] = field(default_factory=dict)  # the ?auto / stub_status fields as read
    capabilities: Capabilities = field(default_factory=Capabilities)
    cannot_show: tuple[str, ...] = ()
    poll_ms: float | None = None
    traffic_target: str | None = None  # base URL the traffic panel may aim at (loopback only)
    busy_workers: tuple[WorkerRow, ...] = ()
    busy_workers_total: int = 0

    @property
    def mpm(self) -> str | None:
        return self.summary.mpm if self.summary is not None else None

    @property
    def busy_workers_more(self) -> int:
        """Busy workers not listed."""
        return self.busy_workers_total - len(self.busy_workers)

    def worker_at(self, proc: int, thread: int) -> WorkerRow | None:
        """The ExtendedStatus row placed in grid cell (proc, thread), if any."""
        for w in self.workers or ():
            if w.proc == proc and w.thread == thread:
                return w
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for websockets; the API serialises the dataclass itself)."""
        out: dict[str, Any] = to_jsonable(self)
        return out


def busy_workers(workers: tuple[WorkerRow, ...] | None) -> tuple[tuple[WorkerRow, ...], int]:
    """(the first BUSY_WORKERS_SHOWN rows that hold a request, how many do)."""
    busy = [w for w in workers or () if w.status in BUSY_LETTERS]
    return tuple(busy[:BUSY_WORKERS_SHOWN]), len(busy)


# -- what the dashboard derives ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One point of a chart history (one a second). For nginx, ``R`` and ``W`` are its Reading
    and Writing connections and ``parked_keep_alive`` its Waiting. ``traffic``: per traffic label,
    what the generator measured in that second."""

    t: float
    rps: float | None = None  # None at the first point: it needs two
    busy: int | None = None
    idle: int | None = None
    graceful: int | None = None  # the G slots the grid shows
    R: int | None = None
    W: int | None = None
    K: int | None = None
    C: int | None = None
    parked_keep_alive: int | None = None
    async_writing: int | None = None
    async_closing: int | None = None
    conns_total: int | None = None
    pss_mb: float | None = None
    traffic: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the MPM and the master's generation at this point: a change between two points is a switch
    # or a restart, which the charts mark
    mpm: str | None = None
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Insight:
    """"What is happening": a headline and details, at the level of the most serious rule."""

    level: Level
    headline: str
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "headline": self.headline, "details": list(self.details)}


@dataclass(frozen=True, slots=True)
class ConnCounts:
    total: int | None = None
    keep_alive: int | None = None
    writing: int | None = None
    closing: int | None = None


@dataclass(frozen=True, slots=True)
class SummaryMessage:
    """The websocket ``summary`` message of a source (the charts' and the grid's numbers)."""

    t: float
    source: str
    kind: SourceKind
    ok: bool
    type: Literal["summary"] = "summary"
    error: str | None = None
    mpm: str | None = None
    generation: int | None = None
    patterns: tuple[str, ...] = ()
    counts: StateCounts | None = None
    busy: int | None = None
    idle: int | None = None
    graceful: int | None = None
    processes: int | None = None
    stopping: int | None = None
    max_request_workers: int | None = None
    threads_per_child: int | None = None
    server_limit: int | None = None
    conns: ConnCounts = field(default_factory=ConnCounts)
    accesses: int | None = None
    connections: NginxCounts | None = None
    cannot_show: tuple[str, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    layout: GridLayout | None = None
    insight: Insight | None = None
    point: ChartPoint | None = None


@dataclass(frozen=True, slots=True)
class Tile:
    """One figure of the page's tiles: a label, the value as shown, and a note under it."""

    label: str
    value: str
    note: str
    id: str | None = None  # a DOM id, for the tiles tests and scripts read


# -- a Locust master, as a traffic source ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LocustRow:
    """One line of a Locust master's statistics (``/stats/requests``, summed over its workers);
    ``name`` "Aggregated" is the total. Times in milliseconds; a percentile Locust has no value
    for yet is None."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float  # current (Locust's sliding window)
    fail_per_s: float
    avg_ms: float
    max_ms: float
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class LocustStats:
    """One poll of a Locust master's web UI. ``ok`` False: ``error`` says why, no figures."""

    name: str
    url: str
    t: float
    ok: bool = False
    error: str | None = None
    state: str | None = None  # Locust's: ready, spawning, running, stopped, ...
    users: int | None = None
    workers: int | None = None  # None: not a master (a standalone Locust)
    rows: tuple[LocustRow, ...] = ()
    total: LocustRow | None = None
    poll_ms: float | None = None
