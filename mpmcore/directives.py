"""Apache's MPM and core directives: names, defaults per MPM, ranges, and Apache's adjustment rules.

``resolve(mpm, values)`` turns what the user set (``--set``, a pasted httpd.conf section, the
dashboard form) into a complete, adjusted configuration. An unknown directive or a value outside
its range is a ``DirectiveError`` naming the directive and the allowed range; Apache's silent-ish
corrections (docs/apache-behaviour.md section 6) are applied and returned as warnings, worded as Apache logs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpmcore.http.protocol import RequestReadTimeout

MPMS = ("prefork", "worker", "event")

# Compiled maxima (Apache's MAX_SERVER_LIMIT / MAX_THREAD_LIMIT are 200000 / 20000). Ours are
# smaller because every slot is a real Python process or thread on a 2-core machine, and the
# scoreboard is sized from them at start.
MAX_SERVER_LIMIT = 1024
MAX_THREAD_LIMIT = 1024


class DirectiveError(ValueError):
    """A directive the server cannot take: the message names it and what it accepts."""

    def __init__(self, directive: str, message: str):
        super().__init__(f"{directive}: {message}")
        self.directive = directive
        self.message = message


@dataclass(frozen=True)
class Directive:
    name: str
    kind: str  # "int", "float", "bool", "str"
    defaults: dict[str, Any]  # per MPM; a missing MPM means "not used by that MPM"
    min: float | None = None
    max: float | None = None
    unit: str = ""
    help: str = ""
    restart_only: bool = False  # needs a full (hard) restart, as ServerLimit/ThreadLimit in Apache
    validate: Callable[[Any], None] | None = None

    def applies_to(self, mpm: str) -> bool:
        return mpm in self.defaults

    def parse(self, raw: Any) -> Any:
        name = self.name
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("on", "true", "1", "yes"):
                return True
            if text in ("off", "false", "0", "no"):
                return False
            raise DirectiveError(name, f"must be On or Off, not {raw!r}")
        if self.kind == "str":
            value = str(raw).strip()
            if self.validate:
                try:
                    self.validate(value)
                except ValueError as e:
                    raise DirectiveError(name, str(e)) from None
            return value
        number: int | float
        try:
            number = int(str(raw).strip()) if self.kind == "int" else float(str(raw).strip())
        except ValueError:
            raise DirectiveError(name, f"must be a{'n integer' if self.kind == 'int' else ' number'}"
                                       f"{self.range_text()}, not {raw!r}") from None
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            raise DirectiveError(name, f"{number} is out of range{self.range_text()}")
        return number

    def range_text(self) -> str:
        if self.min is None and self.max is None:
            return ""
        lo = "" if self.min is None else _fmt(self.min)
        hi = "" if self.max is None else _fmt(self.max)
        return f" (allowed: {lo}..{hi}{(' ' + self.unit) if self.unit else ''})"


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _check_reqtimeout(text: str) -> None:
    RequestReadTimeout.parse(text)


def _all(v: Any) -> dict[str, Any]:
    return dict.fromkeys(MPMS, v)


_DIRECTIVES = [
    # process model
    Directive("StartServers", "int", {"prefork": 5, "worker": 3, "event": 3}, 0, MAX_SERVER_LIMIT,
              help="child processes created at start"),
    Directive("MinSpareServers", "int", {"prefork": 5}, 0, MAX_SERVER_LIMIT, help="minimum idle children"),
    Directive("MaxSpareServers", "int", {"prefork": 10}, 0, MAX_SERVER_LIMIT, help="maximum idle children"),
    Directive("MinSpareThreads", "int", {"worker": 75, "event": 75}, 0, MAX_SERVER_LIMIT * MAX_THREAD_LIMIT,
              help="minimum idle threads, server-wide"),
    Directive("MaxSpareThreads", "int", {"worker": 250, "event": 250}, 0, MAX_SERVER_LIMIT * MAX_THREAD_LIMIT,
              help="maximum idle threads, server-wide"),
    Directive("ServerLimit", "int", {"prefork": 256, "worker": 16, "event": 16}, 1, MAX_SERVER_LIMIT,
              restart_only=True, help="upper bound on child processes (sizes the scoreboard)"),
    Directive("ThreadLimit", "int", {"worker": 64, "event": 64}, 1, MAX_THREAD_LIMIT,
              restart_only=True, help="upper bound on ThreadsPerChild (sizes the scoreboard)"),
    Directive("ThreadsPerChild", "int", {"worker": 25, "event": 25}, 1, MAX_THREAD_LIMIT,
              help="worker threads in each child"),
    Directive("MaxRequestWorkers", "int", {"prefork": 256, "worker": 400, "event": 400}, 1,
              MAX_SERVER_LIMIT * MAX_THREAD_LIMIT, help="simultaneous requests served"),
    Directive("MaxConnectionsPerChild", "int", _all(0), 0, 2 ** 31 - 1, help="connections before a child exits; 0 = never"),
    Directive("AsyncRequestWorkerFactor", "float", {"event": 2.0}, 0, 1000,
              help="how many connections per idle worker a child may accept beyond ThreadsPerChild"),
    Directive("GracefulShutdownTimeout", "int", _all(0), 0, 86400, "s", help="graceful stop limit; 0 = none"),
    Directive("ListenBacklog", "int", _all(511), 1, 65535, help="listen queue length"),
    Directive("SendBufferSize", "int", _all(0), 0, 16 << 20, "bytes",
              help="TCP send buffer of the listening socket (0 = the OS default); set at start"),
    # connection handling (core)
    Directive("Timeout", "int", _all(60), 1, 3600, "s", help="wait for any single read or write"),
    Directive("KeepAlive", "bool", _all(True), help="persistent connections"),
    Directive("KeepAliveTimeout", "float", _all(5.0), 0.001, 3600, "s", help="wait for the next request"),
    Directive("MaxKeepAliveRequests", "int", _all(100), 0, 2 ** 31 - 1, help="requests per connection; 0 = unlimited"),
    Directive("RequestReadTimeout", "str", _all("header=20-40,MinRate=500 body=20,MinRate=500"),
              validate=_check_reqtimeout, help="mod_reqtimeout: time and minimum rate to receive a request"),
    Directive("LimitRequestLine", "int", _all(8190), 1, 65536, "bytes", help="request line size -> 414"),
    Directive("LimitRequestFieldSize", "int", _all(8190), 1, 65536, "bytes", help="header field size -> 431"),
    Directive("LimitRequestFields", "int", _all(100), 1, 32767, help="number of header fields -> 431"),
    Directive("LimitRequestBody", "int", _all(1 << 20), 0, 64 << 20, "bytes", help="request body size -> 413"),
    Directive("ExtendedStatus", "bool", _all(True), help="per-request detail in the scoreboard"),
    # mpmlab's own (not Apache's): named in Apache's style
    Directive("SSLSyncEventMPM", "bool", {"event": False},
              help="mpmlab: TLS connections hold their worker for life under event (Apache before 2.4.7)"),
    Directive("UnsafeFastCGIPool", "int", _all(0), 0, 64,
              help="mpmlab: serve /unsafe through N single-threaded FastCGI processes (0 = in-process)"),
]
#: Why a directive matters, for the dashboard's help beside each field: what Apache does with it,
#: and what raising (or lowering) it costs. The default and range are shown beside it from the
#: Directive itself. Apache's own words: https://httpd.apache.org/docs/2.4/mod/mpm_common.html,
#: core.html, event.html, prefork.html, mod_reqtimeout.html.
WHY: dict[str, str] = {
    "StartServers": "Children the master forks at start. Only the first minutes feel it: the spare-server "
                    "rules take over at once. Raising it costs memory from the start.",
    "MinSpareServers": "prefork: fewer idle children than this and the master forks more (1, 2, 4 ... up to 32 "
                       "a second). Raising it absorbs bursts without a fork delay; each idle child costs its memory.",
    "MaxSpareServers": "prefork: more idle children than this and the master stops one a second. Raising it keeps "
                       "children for the next burst, at the price of their memory while idle.",
    "MinSpareThreads": "worker/event: fewer idle threads server-wide than this and a new child is forked. Raising it "
                       "keeps headroom for bursts; each spare child costs ThreadsPerChild threads of memory.",
    "MaxSpareThreads": "worker/event: more idle threads than this and a child is stopped gracefully. Raising it keeps "
                       "capacity around between bursts, in memory.",
    "ServerLimit": "The most child processes the scoreboard has room for, fixed at start (a graceful restart cannot "
                   "grow it). Raising it costs scoreboard memory even when unused.",
    "ThreadLimit": "The most threads per child the scoreboard has room for, fixed at start. Raising it costs "
                   "scoreboard memory for every possible child.",
    "ThreadsPerChild": "Threads in each worker/event child: the unit the master adds or removes. More threads per "
                       "child mean fewer processes, but a crash or a stop takes more requests with it.",
    "MaxRequestWorkers": "The most requests served at once (prefork: children; worker/event: threads). Beyond it new "
                         "connections wait in the listen backlog. Raising it costs memory per worker and needs the "
                         "CPU and back ends to keep up.",
    "MaxConnectionsPerChild": "A child exits after this many connections (0: never), a guard against leaks. Lowering "
                              "it costs a fork (and a cold cache) every so many connections.",
    "AsyncRequestWorkerFactor": "event: how many connections beyond ThreadsPerChild a child may hold per idle thread "
                                "before it stops accepting. Raising it parks more keep-alive connections per child; "
                                "too high and a burst finds every thread of the child busy.",
    "GracefulShutdownTimeout": "How long a graceful stop waits for requests in flight (0: as long as they take). "
                               "Lowering it cuts slow downloads off at a stop.",
    "ListenBacklog": "Connections the kernel queues for the server when every worker is busy (capped by "
                     "net.core.somaxconn). Raising it makes clients wait instead of being refused.",
    "SendBufferSize": "The TCP send buffer (0: the system's). Raising it helps large responses on long fat links, "
                      "at the price of kernel memory per connection.",
    "Timeout": "How long a read or write may wait, each time. Raising it lets slow clients hold a worker longer; "
               "lowering it cuts off slow networks.",
    "KeepAlive": "Whether a connection may carry more than one request. Off costs a TCP (and TLS) handshake per "
                 "request; On holds a worker per idle connection under prefork and worker (event parks them).",
    "KeepAliveTimeout": "How long an idle keep-alive connection waits for its next request. Under prefork and worker "
                        "an idle connection holds a worker (K) all that time; event parks it on its listener thread.",
    "MaxKeepAliveRequests": "Requests per connection before the server closes it (0: unlimited). Raising it saves "
                            "handshakes; it rarely costs anything.",
    "RequestReadTimeout": "mod_reqtimeout: the time (and the minimum rate) a client has to send its headers and body; "
                          "the defence against slowloris. Raising it lets slow clients hold workers longer.",
    "LimitRequestLine": "The longest request line (method, URL, protocol) before a 414. Raising it admits longer URLs "
                        "and costs memory per request being read.",
    "LimitRequestFieldSize": "The longest header line before the request is refused (Apache: 400; mpmcore: 431). "
                             "Raising it admits big cookies, and costs memory per request.",
    "LimitRequestFields": "The most header lines in a request before it is refused (Apache: 400; mpmcore: 431). "
                          "Raising it costs parsing time and memory.",
    "LimitRequestBody": "The largest request body before a 413 (0: unlimited). Raising it lets uploads hold a worker "
                        "as long as they take.",
    "ExtendedStatus": "Per-request detail in the scoreboard (client, request, times), as mod_status shows it. It "
                      "costs a few time calls per request; Off hides the request of every slot.",
    "SSLSyncEventMPM": "mpmlab only: TLS connections keep their worker for their whole life under event, as before "
                       "Apache 2.4.7. On shows why event once helped only plain HTTP.",
    "UnsafeFastCGIPool": "mpmlab only: /unsafe is served by N single-threaded FastCGI processes (as a PHP that is not "
                         "thread-safe behind mod_proxy_fcgi). Raising it costs one process each.",
}
DIRECTIVES: dict[str, Directive] = {d.name: d for d in _DIRECTIVES}
_BY_LOWER = {name.lower(): name for name in DIRECTIVES}
# Apache 2.2 names still accepted by 2.4
ALIASES = {"maxclients": "MaxRequestWorkers", "maxrequestsperchild": "MaxConnectionsPerChild"}


def canonical(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key).lower()
    if key not in _BY_LOWER:
        raise DirectiveError(name.strip(), f"unknown directive (known: {', '.join(sorted(DIRECTIVES))})")
    return _BY_LOWER[key]


@dataclass
class Config:
    """A complete, adjusted configuration for one MPM."""

    mpm: str
    values: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    explicit: dict[str, Any] = field(default_factory=dict)  # what the user set, as given

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def max_children(self) -> int:
        """How many child processes this configuration may run at once (Apache's max_daemons_limit)."""
        workers: int = self.values["MaxRequestWorkers"]
        if self.mpm == "prefork":
            return workers
        threads: int = self.values["ThreadsPerChild"]
        return workers // threads

    def to_dict(self) -> dict[str, Any]:
        return {"mpm": self.mpm, "directives": dict(self.values), "warnings": list(self.warnings),
                "explicit": dict(self.explicit)}


def resolve(mpm: str, settings: dict[str, Any] | None = None) -> Config:
    """Defaults for ``mpm``, overlaid with ``settings`` (name -> raw value), then Apache's adjustments.

    Directives of another MPM (MinSpareServers under event, say) are accepted and ignored with a
    warning, as a shared httpd.conf with ``<IfModule>`` blocks would be.
    """
    if mpm not in MPMS:
        raise DirectiveError("MPM", f"must be one of {', '.join(MPMS)}, not {mpm!r}")
    settings = settings or {}
    values: dict[str, Any] = {}
    warnings: list[str] = []
    explicit: dict[str, Any] = {}
    for d in DIRECTIVES.values():
        if d.applies_to(mpm):
            values[d.name] = d.defaults[mpm]
    for raw_name, raw in settings.items():
        name = canonical(raw_name)
        d = DIRECTIVES[name]
        value = d.parse(raw)
        if not d.applies_to(mpm):
            warnings.append(f"{name} is not used by the {mpm} MPM; ignored")
            continue
        values[name] = value
        explicit[name] = value
    _adjust(mpm, values, explicit, warnings)
    return Config(mpm, values, warnings, explicit)


def _adjust(mpm: str, v: dict[str, Any], explicit: dict[str, Any], warn: list[str]) -> None:
    """Apache's adjustment rules (server/mpm/*/ *.c, mpm_common.c), each with its warning."""
    if mpm == "prefork":
        v["ThreadsPerChild"] = 1
        v["ThreadLimit"] = 1
        if v["MaxRequestWorkers"] > v["ServerLimit"]:
            warn_text = (f"MaxRequestWorkers of {v['MaxRequestWorkers']} exceeds ServerLimit value of "
                         f"{v['ServerLimit']} servers, decreasing MaxRequestWorkers to {v['ServerLimit']}. "
                         "To increase, please see the ServerLimit directive.")
            warn.append(warn_text)
            v["MaxRequestWorkers"] = v["ServerLimit"]
        if v["StartServers"] < 1:
            warn.append(f"StartServers of {v['StartServers']} is below 1, increasing to 1")
            v["StartServers"] = 1
        if v["StartServers"] > v["MaxRequestWorkers"]:
            warn.append(f"StartServers of {v['StartServers']} exceeds MaxRequestWorkers of "
                        f"{v['MaxRequestWorkers']}, decreasing to {v['MaxRequestWorkers']}")
            v["StartServers"] = v["MaxRequestWorkers"]
        if v["MinSpareServers"] < 1:
            warn.append(f"MinSpareServers of {v['MinSpareServers']} is below 1, increasing to 1 "
                        "to avoid almost certain server failure. Please read the documentation.")
            v["MinSpareServers"] = 1
        if v["MaxSpareServers"] <= v["MinSpareServers"]:
            new = v["MinSpareServers"] + 1
            warn.append(f"MaxSpareServers of {v['MaxSpareServers']} is not above MinSpareServers of "
                        f"{v['MinSpareServers']}, increasing to {new}")
            v["MaxSpareServers"] = new
        return

    # worker and event
    if v["ThreadsPerChild"] > v["ThreadLimit"]:
        warn.append(f"ThreadsPerChild of {v['ThreadsPerChild']} exceeds ThreadLimit of {v['ThreadLimit']} "
                    f"threads, decreasing to {v['ThreadLimit']}. To increase, please see the ThreadLimit directive.")
        v["ThreadsPerChild"] = v["ThreadLimit"]
    tpc = v["ThreadsPerChild"]
    if v["MaxRequestWorkers"] < tpc:
        warn.append(f"MaxRequestWorkers of {v['MaxRequestWorkers']} is less than ThreadsPerChild, "
                    f"increasing to {tpc}. MaxRequestWorkers must be at least as large as the number of "
                    "threads in a single server.")
        v["MaxRequestWorkers"] = tpc
    elif v["MaxRequestWorkers"] % tpc:
        new = v["MaxRequestWorkers"] // tpc * tpc
        warn.append(f"MaxRequestWorkers of {v['MaxRequestWorkers']} is not an integer multiple of "
                    f"ThreadsPerChild of {tpc}, decreasing to nearest multiple {new}, for a maximum of "
                    f"{new // tpc} servers.")
        v["MaxRequestWorkers"] = new
    children = v["MaxRequestWorkers"] // tpc
    if children > v["ServerLimit"]:
        new = v["ServerLimit"] * tpc
        warn.append(f"MaxRequestWorkers of {v['MaxRequestWorkers']} would require {children} servers and "
                    f"would exceed ServerLimit of {v['ServerLimit']}, decreasing to {new}. To increase, "
                    "please see the ServerLimit directive.")
        v["MaxRequestWorkers"] = new
        children = v["ServerLimit"]
    if v["StartServers"] < 1:
        warn.append(f"StartServers of {v['StartServers']} is below 1, increasing to 1")
        v["StartServers"] = 1
    if v["StartServers"] > children:
        warn.append(f"StartServers of {v['StartServers']} exceeds the {children} servers MaxRequestWorkers "
                    f"allows, decreasing to {children}")
        v["StartServers"] = children
    if v["MinSpareThreads"] < 1:
        warn.append(f"MinSpareThreads of {v['MinSpareThreads']} is below 1, increasing to 1")
        v["MinSpareThreads"] = 1
    if v["MaxSpareThreads"] < v["MinSpareThreads"] + tpc:
        new = v["MinSpareThreads"] + tpc
        warn.append(f"MaxSpareThreads of {v['MaxSpareThreads']} is below MinSpareThreads + ThreadsPerChild, "
                    f"increasing to {new}")
        v["MaxSpareThreads"] = new


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``--set Directive=value`` arguments."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise DirectiveError(item, "expected Directive=value")
        name, value = item.split("=", 1)
        out[canonical(name)] = value
    return out


def catalogue(mpm: str) -> list[dict[str, Any]]:
    """What a form needs: every directive that applies to ``mpm`` with default, range and help."""
    rows = []
    for d in DIRECTIVES.values():
        if d.applies_to(mpm):
            rows.append({"name": d.name, "kind": d.kind, "default": d.defaults[mpm], "min": d.min,
                         "max": d.max, "unit": d.unit, "help": d.help, "why": WHY.get(d.name, d.help),
                         "restart_only": d.restart_only})
    return rows
