"""The pattern catalogue as data, and parameter validation.

``PATTERNS`` maps a pattern name to its description and parameter specs, so the dashboard can
build a form and the CLI its options from the same source. ``validate_params`` turns user input
(numbers, or strings such as "30s", "500ms", "10MiB" from forms and the command line) into a
complete, checked parameter dict, or raises ValueError naming the parameter and its allowed range.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mpmcore.traffic.limits import (
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_DURATION,
    MAX_RATE,
    MAX_TIMEOUT,
    MAX_TOTAL_REQUESTS,
)

__all__ = [
    "PATTERNS",
    "ParamSpec",
    "Pattern",
    "catalogue_json",
    "declared_connections",
    "declared_rate",
    "parse_duration",
    "parse_size",
    "validate_params",
]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # int | float | duration (seconds) | size (bytes) | str | bool | choice
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    choices: tuple[str, ...] | None = None
    live: bool = False  # may be changed while the pattern runs (update())
    required: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["choices"] is not None:
            d["choices"] = list(d["choices"])
        return d


_DUR = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")
_SIZE_MULT = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024, "m": 10**6, "mb": 10**6,
              "mi": 1 << 20, "mib": 1 << 20, "g": 10**9, "gb": 10**9, "gi": 1 << 30, "gib": 1 << 30}
_LABEL = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


def parse_duration(value: object) -> float:
    """Seconds from 30, 2.5, "30s", "500ms", "2m", "1h"."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    m = _DUR.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30, 30s, 500ms, 2m)")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def parse_size(value: object) -> int:
    """Bytes from 1024, "4k", "10MiB"."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, (int, float)):
        if float(value) != int(value):
            raise ValueError(f"not a whole number of bytes: {value!r}")
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 4096, 4k, 10MiB)")
    return int(float(m.group(1)) * _SIZE_MULT[(m.group(2) or "").lower()])


def _common(path: str, duration: float = 30.0) -> list[ParamSpec]:
    return [
        ParamSpec("target", "str", None, "URL of the server (http:// or https://); loopback only "
                  "unless allow_remote", required=True),
        ParamSpec("path", "str", path, "request path (and query) on the target", live=True),
        ParamSpec("duration", "duration", duration, "stop by itself after this long", 0.1, MAX_DURATION,
                  "s", live=True),
        ParamSpec("max_requests", "int", MAX_TOTAL_REQUESTS, "stop by itself after this many requests",
                  1, MAX_TOTAL_REQUESTS, "requests", live=True),
        ParamSpec("timeout", "duration", 10.0, "connect timeout, and response timeout after the "
                  "request is sent", 0.05, MAX_TIMEOUT, "s", live=True),
        ParamSpec("allow_remote", "bool", False, "allow a target that is not a loopback address"),
        ParamSpec("tls_verify", "bool", False, "verify the server certificate (https targets); off "
                  "by default for self-signed loopback certificates"),
        ParamSpec("tls_cafile", "str", None, "CA bundle for tls_verify"),
        ParamSpec("label", "str", None, "value of the X-Traffic-Pattern header (default: the "
                  "pattern name); letters, digits, . _ -"),
    ]


def _conns(default: int, help: str = "connections") -> ParamSpec:
    return ParamSpec("connections", "int", default, help, 1, MAX_CONNECTIONS, "connections", live=True)


def _open_model(rate: float, connections: int) -> list[ParamSpec]:
    return [
        ParamSpec("rate", "float", rate, "open model: requests per second, whatever the server's "
                  "speed", 0.01, MAX_RATE, "req/s", live=True),
        ParamSpec("arrivals", "choice", "poisson", "open model: arrival process (poisson: random "
                  "exponential gaps; uniform: evenly spaced)", choices=("poisson", "uniform"), live=True),
        _conns(connections, "open model: connections, i.e. most requests in flight at once"),
        ParamSpec("max_pending", "int", 1000, "open model: arrivals waiting for a free connection; "
                  "arrivals beyond are counted dropped", 0, 1_000_000, "requests", live=True),
        ParamSpec("late_ms", "float", 10.0, "open model: an arrival sent this much after its intended "
                  "time is counted late", 0, 60_000, "ms", live=True),
    ]


@dataclass(frozen=True)
class Pattern:
    name: str
    description: str
    params: dict[str, ParamSpec]  # by name, in form order


_P: dict[str, Pattern] = {}


def _pattern(name: str, description: str, params: list[ParamSpec]) -> None:
    _P[name] = Pattern(name, description, {p.name: p for p in params})


_pattern("steady", "Steady load. Closed model: N clients each send a request, wait for the answer, "
         "think, repeat (the rate follows the server). Open model: R requests/s arrive whatever the "
         "server does; latency is measured from the intended send time (corrected for coordinated "
         "omission, like wrk2) beside the uncorrected figure.",
         _common("/") + [
             ParamSpec("model", "choice", "closed", "closed (N clients) or open (R requests/s)",
                       choices=("closed", "open")),
             ParamSpec("clients", "int", 10, "closed model: simulated clients, one keep-alive "
                       "connection each", 1, MAX_CONNECTIONS, "clients", live=True),
             ParamSpec("think_time", "duration", 0.0, "closed model: pause between a response and "
                       "the next request", 0, 3600, "s", live=True),
             ParamSpec("keepalive", "bool", True, "reuse connections (false: one connection per "
                       "request)", live=True),
         ] + _open_model(100.0, 64))

_pattern("burst", "Bursts: M requests sent at the same instant every T seconds (each on its own "
         "connection). A burst slot still busy from the previous burst counts as dropped.",
         _common("/") + [
             ParamSpec("size", "int", 50, "requests per burst (M)", 1, MAX_CONNECTIONS, "requests", live=True),
             ParamSpec("every", "duration", 1.0, "time between bursts (T)", 0.01, 3600, "s", live=True),
             ParamSpec("keepalive", "bool", False, "keep the M connections open between bursts "
                       "(false: new connections for every burst)", live=True),
         ])

_pattern("browsers", "Browsers: each opens up to 6 keep-alive connections, fetches a page and then "
         "its assets in parallel, then idles for a think time keeping its connections open (the "
         "load that fills worker/prefork with K slots).",
         _common("/") + [
             ParamSpec("clients", "int", 10, "browsers (B)", 1, MAX_CONNECTIONS, "browsers", live=True),
             ParamSpec("connections_per_browser", "int", 6, "keep-alive connections per browser", 1,
                       16, "connections", live=True),
             ParamSpec("assets", "int", 12, "asset requests per page view", 0, 1000, "requests", live=True),
             ParamSpec("asset_path", "str", "/bytes/4096", "path of every asset (use /index.html "
                       "against real Apache)", live=True),
             ParamSpec("think_time", "duration", 5.0, "idle time between page views, connections "
                       "kept open", 0, 3600, "s", live=True),
         ])

_pattern("ajax", "AJAX polling: clients each poll an endpoint every interval over one keep-alive "
         "connection.",
         _common("/") + [
             ParamSpec("clients", "int", 20, "polling clients", 1, MAX_CONNECTIONS, "clients", live=True),
             ParamSpec("interval", "duration", 1.0, "poll interval (accepts 500ms)", 0.001, 3600, "s",
                       live=True),
         ])

_pattern("slowloris", "Slowloris: connections that send a partial request, then one more header "
         "line every interval, never finishing; reconnects when the server closes (counted).",
         _common("/") + [
             _conns(100, "connections held (S)"),
             ParamSpec("interval", "duration", 10.0, "time between header lines (I)", 0.01, 3600, "s",
                       live=True),
         ])

_pattern("slow-post", "Slow POST (R.U.D.Y.): a POST announcing a large Content-Length whose body "
         "trickles in a few bytes every interval; reconnects when the server closes (counted).",
         _common("/") + [
             _conns(50, "connections held"),
             ParamSpec("content_length", "size", 1 << 20, "announced body size", 1, MAX_BODY_BYTES,
                       "bytes", live=True),
             ParamSpec("chunk", "size", 1, "body bytes sent per interval", 1, 1 << 20, "bytes", live=True),
             ParamSpec("interval", "duration", 1.0, "time between body chunks", 0.01, 3600, "s", live=True),
         ])

_pattern("slow-read", "Slow read: requests a large response (/bytes/N) and reads it slowly through "
         "a small receive buffer, so the server's send blocks on a full TCP window.",
         _common("/bytes/{size}") + [
             _conns(20, "connections"),
             ParamSpec("size", "size", 10 << 20, "response size asked for (fills {size} in path)", 1,
                       MAX_BODY_BYTES, "bytes", live=True),
             ParamSpec("rcvbuf", "size", 4096, "socket receive buffer (SO_RCVBUF), set before "
                       "connecting", 1024, 1 << 20, "bytes", live=True),
             ParamSpec("read_bytes", "size", 1024, "bytes read per interval", 1, 1 << 20, "bytes", live=True),
             ParamSpec("interval", "duration", 1.0, "reading interval", 0.01, 3600, "s", live=True),
         ])

_pattern("cpu", "CPU-bound requests (/cpu?ms=) at a rate (open model).",
         _common("/cpu") + [ParamSpec("ms", "int", 50, "CPU time the server burns per request", 0,
                                      60_000, "ms", live=True)] + _open_model(10.0, 64))

_pattern("io", "I/O-bound requests (/sleep?ms=) at a rate (open model): the server waits, holding "
         "a worker.",
         _common("/sleep") + [ParamSpec("ms", "int", 200, "time the server sleeps per request", 0,
                                        600_000, "ms", live=True)] + _open_model(20.0, 256))

#: pattern name -> its description and parameter specs
PATTERNS: dict[str, Pattern] = _P


def catalogue_json() -> dict[str, Any]:
    """PATTERNS as plain JSON-able data (for the dashboard's forms and the control API)."""
    return {n: {"name": n, "description": p.description,
                "params": [s.as_dict() for s in p.params.values()]} for n, p in PATTERNS.items()}


def _fmt_range(spec: ParamSpec) -> str:
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    return f"between {_num(spec.min)} and {_num(spec.max)}{unit}"


def _num(x: float | None) -> str:
    if x is None:
        return "none"
    return str(int(x)) if float(x) == int(x) else f"{x:g}"


def _coerce(pattern: str, spec: ParamSpec, value: object) -> Any:
    where = f"{pattern}: parameter {spec.name!r}"
    if value is None:
        if spec.required:
            raise ValueError(f"{where} is required")
        return None if spec.default is None else spec.default
    t = spec.type
    v: Any
    try:
        if t == "bool":
            if isinstance(value, bool):
                v = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                v = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                v = False
            else:
                raise ValueError
        elif t == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            f = float(value)
            if f != int(f):
                raise ValueError
            v = int(f)
        elif t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            v = float(value)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError
        elif t == "duration":
            v = parse_duration(value)
        elif t == "size":
            v = parse_size(value)
        elif t in ("str", "choice"):
            if not isinstance(value, str):
                raise ValueError
            v = value
        else:  # pragma: no cover
            raise AssertionError(t)
    except (ValueError, TypeError, OverflowError):
        expect = {"bool": "true or false", "int": "a whole number", "float": "a number",
                  "duration": "a duration (e.g. 30, 30s, 500ms)", "size": "a size (e.g. 4096, 4k, 1MiB)",
                  "str": "a string", "choice": "a string"}[t]
        raise ValueError(f"{where} must be {expect}, got {value!r}") from None
    if spec.choices is not None and v not in spec.choices:
        raise ValueError(f"{where} must be {_fmt_range(spec)}, got {v!r}")
    if (spec.min is not None and spec.max is not None and t in ("int", "float", "duration", "size")
            and not (spec.min <= v <= spec.max)):
        raise ValueError(f"{where} must be {_fmt_range(spec)}, got {value!r}")
    # a request target goes on the wire as it is: printable ASCII, no space (RFC 9112 request-line)
    if spec.name in ("path", "asset_path") and not (v.startswith("/") and v.isascii() and v.isprintable()
                                                     and " " not in v):
        raise ValueError(f"{where} must start with / and be printable ASCII without spaces "
                         f"(percent-encode the rest), got {v!r}")
    if spec.name == "label" and not _LABEL.match(v):
        raise ValueError(f"{where} must be 1-40 letters, digits, '.', '_' or '-', got {v!r}")
    return v


def validate_params(pattern: str, params: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Check ``params`` for ``pattern``.

    ``partial=False`` (start): returns the full dict, defaults filled in.
    ``partial=True`` (update): returns only the given parameters, checked, and refuses those that
    cannot change while a pattern runs.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    specs = PATTERNS[pattern].params
    unknown = [k for k in params if k not in specs]
    if unknown:
        raise ValueError(f"{pattern}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(specs)}")
    if partial:
        out: dict[str, Any] = {}
        for k, v in params.items():
            if not specs[k].live:
                raise ValueError(f"{pattern}: parameter {k!r} cannot be changed while the pattern "
                                 "runs; stop it and start a new one")
            if v is None and specs[k].default is None:
                out[k] = None
                continue
            out[k] = _coerce(pattern, specs[k], v)
        return out
    return {name: _coerce(pattern, spec, params.get(name)) for name, spec in specs.items()}


def declared_connections(pattern: str, p: dict[str, Any]) -> int:
    """Most connections a pattern with these parameters opens (for the MAX_CONNECTIONS check)."""
    if pattern == "steady":
        return int(p["clients"] if p["model"] == "closed" else p["connections"])
    if pattern in ("burst",):
        return int(p["size"])
    if pattern == "browsers":
        return int(p["clients"] * p["connections_per_browser"])
    if pattern == "ajax":
        return int(p["clients"])
    return int(p["connections"])


def declared_rate(pattern: str, p: dict[str, Any]) -> float:
    """Requests per second a pattern asks for, 0 when the rate is closed-loop (for MAX_RATE)."""
    if pattern in ("cpu", "io") or (pattern == "steady" and p["model"] == "open"):
        return float(p["rate"])
    if pattern == "burst":
        return float(p["size"] / p["every"])
    if pattern == "ajax":
        return float(p["clients"] / p["interval"])
    return 0.0
