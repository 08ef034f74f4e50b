"""What the traffic runner reports, typed: a pattern run's figures, its description, a stats frame.

The runner builds these and sends ``to_json()`` on its control socket; ``TrafficClient`` turns the
JSON back into them with ``from_json()``. The JSON is the wire format the dashboard's API, its
websockets, the browser and the CLI read, so each field keeps its JSON name and the dicts keep
their key order (``Figures.to_json`` lists the counters first, as they always were).

Shared by the engine (which produces them), the control client and the dashboard (which consume
them); the module imports nothing else of the traffic generator, so every side can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "COUNTERS",
    "ERROR_KINDS",
    "LATENCY_BUCKETS_S",
    "STATUS_CLASSES",
    "Figures",
    "FrameTotals",
    "Json",
    "LatencySummary",
    "RunInfo",
    "RunState",
    "StatsFrame",
    "StopReason",
]

#: A JSON object as it goes over the control socket.
Json = dict[str, Any]

#: Every client-side error is counted under one of these kinds.
ERROR_KINDS = ("refused", "reset", "timeout", "closed", "tls", "protocol", "cap", "other")
#: Response status classes, the keys of ``Figures.status``.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
#: Upper bounds (seconds) of the latency histograms' buckets (``Figures.latency_buckets``), from
#: 0.5 ms to a minute; a last bucket holds what is above (+Inf). Fixed, so that a Prometheus
#: ``histogram_quantile`` can add the buckets of every run and every rate window.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     60.0)
#: Counters summed per interval and in total (the first fields of ``Figures``, in this order, but
#: for ``corrupted``, added later and so the last field, after the latency summaries).
COUNTERS = ("requests", "responses", "bytes_in", "bytes_out", "arrivals", "dropped", "late",
            "reconnects", "connections_opened", "throttled", "corrupted")


class RunState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"


class StopReason(StrEnum):
    DURATION = "duration"  # its duration ran out
    MAX_REQUESTS = "max_requests"  # its request budget is used and every answer is in
    COMPLETED = "completed"  # the scenario ended by itself
    STOPPED = "stopped"  # stop() or stop_all()
    ERROR = "error"  # the scenario raised (RunInfo.error says what)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """An HDR histogram's summary, in milliseconds (``count`` values recorded)."""

    p50: float
    p90: float
    p99: float
    p99_9: float  # "p99.9" in JSON
    max: float
    mean: float
    count: int

    def to_json(self) -> Json:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "p99.9": self.p99_9, "max": self.max,
                "mean": self.mean, "count": self.count}

    @classmethod
    def from_json(cls, d: Json | None) -> LatencySummary | None:
        if d is None:
            return None
        return cls(p50=d["p50"], p90=d["p90"], p99=d["p99"], p99_9=d["p99.9"], max=d["max"], mean=d["mean"],
                   count=d["count"])


_SUMMARY_FIELDS = ("latency_ms", "corrected_latency_ms", "ttfb_ms", "connect_ms")
_OPTIONAL_FIELDS = ("latency_buckets", "corrected_buckets", "latency_sum_s", "corrected_sum_s")


def _buckets(v: Any) -> tuple[int, ...] | None:
    return None if v is None else tuple(int(x) for x in v)


@dataclass(frozen=True, slots=True)
class Figures:
    """A pattern's figures over one interval (``live``: the last frame's 250 ms) or since it started
    (``total``). ``rps`` counts responses, ``requests_per_s`` requests sent, both over ``seconds``."""

    requests: int
    responses: int
    bytes_in: int
    bytes_out: int
    arrivals: int  # open model: arrivals scheduled
    dropped: int  # open model: arrivals beyond max_pending; burst: slots still busy
    late: int  # open model: sent more than late_ms after their intended time
    reconnects: int
    connections_opened: int
    throttled: int  # requests held back by the runner-wide MAX_RATE
    status: dict[str, int]  # STATUS_CLASSES -> responses
    errors: dict[str, int]  # ERROR_KINDS -> errors
    errors_total: int
    seconds: float
    rps: float
    requests_per_s: float
    latency_ms: LatencySummary | None  # request written -> response complete
    corrected_latency_ms: LatencySummary | None  # open model: intended send time -> response complete
    ttfb_ms: LatencySummary | None  # request written -> first response byte
    connect_ms: LatencySummary | None  # socket created -> connected (TLS handshake included)
    #: responses carrying ``X-Unsafe-Corrupted: 1``: /unsafe answered with another request's state
    #: (a thread-unsafe module under a threaded MPM). Last, so the JSON keeps its key order.
    corrupted: int = 0
    #: cumulative only (``total``): responses per LATENCY_BUCKETS_S bucket (not cumulative: each
    #: counts the latencies above the previous bound up to its own, the last one above every
    #: bound), from the same HDR-quantized values as the histograms; and their sum in seconds
    latency_buckets: tuple[int, ...] | None = None
    corrected_buckets: tuple[int, ...] | None = None
    latency_sum_s: float | None = None
    corrected_sum_s: float | None = None

    def to_json(self) -> Json:
        out: Json = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _SUMMARY_FIELDS:
                v = None if v is None else v.to_json()
            elif isinstance(v, dict):
                v = dict(v)
            elif isinstance(v, tuple):
                v = list(v)
            elif v is None and f.name in _OPTIONAL_FIELDS:
                continue  # live figures: no buckets
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, d: Json | None) -> Figures | None:
        if d is None:
            return None
        return cls(requests=d["requests"], responses=d["responses"], bytes_in=d["bytes_in"],
                   bytes_out=d["bytes_out"], arrivals=d["arrivals"], dropped=d["dropped"], late=d["late"],
                   reconnects=d["reconnects"], connections_opened=d["connections_opened"],
                   throttled=d["throttled"], status=d["status"], errors=d["errors"],
                   errors_total=d["errors_total"], seconds=d["seconds"], rps=d["rps"],
                   requests_per_s=d["requests_per_s"], latency_ms=LatencySummary.from_json(d["latency_ms"]),
                   corrected_latency_ms=LatencySummary.from_json(d["corrected_latency_ms"]),
                   ttfb_ms=LatencySummary.from_json(d["ttfb_ms"]),
                   connect_ms=LatencySummary.from_json(d["connect_ms"]), corrupted=d.get("corrupted", 0),
                   latency_buckets=_buckets(d.get("latency_buckets")),
                   corrected_buckets=_buckets(d.get("corrected_buckets")),
                   latency_sum_s=d.get("latency_sum_s"), corrected_sum_s=d.get("corrected_sum_s"))


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One pattern run: what it is, where it goes, its state. ``total`` is in listings, stop/get
    answers and frames; ``live`` only in frames; an update() answer has neither."""

    id: str
    pattern: str
    label: str
    state: RunState
    stop_reason: StopReason | None
    error: str | None
    target: str  # the URL as given
    address: str  # the checked address it connects to
    started_at: float  # wall clock (time.time())
    elapsed: float
    params: dict[str, Any]  # the checked parameters (catalogue.validate_params)
    active_connections: int
    peak_connections: int
    live: Figures | None = None
    total: Figures | None = None

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING

    def to_json(self) -> Json:
        out: Json = {"id": self.id, "pattern": self.pattern, "label": self.label, "state": str(self.state),
                     "stop_reason": None if self.stop_reason is None else str(self.stop_reason),
                     "error": self.error, "target": self.target, "address": self.address,
                     "started_at": self.started_at, "elapsed": self.elapsed, "params": dict(self.params),
                     "active_connections": self.active_connections, "peak_connections": self.peak_connections}
        if self.live is not None:
            out["live"] = self.live.to_json()
        if self.total is not None:
            out["total"] = self.total.to_json()
        return out

    @classmethod
    def from_json(cls, d: Json) -> RunInfo:
        reason = d["stop_reason"]
        return cls(id=d["id"], pattern=d["pattern"], label=d["label"], state=RunState(d["state"]),
                   stop_reason=None if reason is None else StopReason(reason), error=d["error"],
                   target=d["target"], address=d["address"], started_at=d["started_at"], elapsed=d["elapsed"],
                   params=d["params"], active_connections=d["active_connections"],
                   peak_connections=d["peak_connections"], live=Figures.from_json(d.get("live")),
                   total=Figures.from_json(d.get("total")))


@dataclass(frozen=True, slots=True)
class FrameTotals:
    running: int  # patterns running
    active_connections: int  # the runner's open connections, every pattern's
    rps: float  # responses/s of the running patterns over the frame's interval

    def to_json(self) -> Json:
        return {"running": self.running, "active_connections": self.active_connections, "rps": self.rps}


@dataclass(frozen=True, slots=True)
class StatsFrame:
    """What the runner pushes to subscribers every FRAME_INTERVAL: every running pattern, and each
    pattern that finished since the last frame (once, with its final figures)."""

    seq: int
    time: float  # wall clock
    interval: float
    patterns: list[RunInfo] = field(default_factory=list)
    totals: FrameTotals = field(default_factory=lambda: FrameTotals(0, 0, 0.0))

    TYPE: ClassVar[str] = "stats"  # the "type" of a frame line on the control socket (replies have none)

    def to_json(self) -> Json:
        return {"type": self.TYPE, "seq": self.seq, "time": self.time, "interval": self.interval,
                "patterns": [p.to_json() for p in self.patterns], "totals": self.totals.to_json()}

    @classmethod
    def from_json(cls, d: Json) -> StatsFrame:
        t = d["totals"]
        return cls(seq=d["seq"], time=d["time"], interval=d["interval"],
                   patterns=[RunInfo.from_json(p) for p in d["patterns"]],
                   totals=FrameTotals(running=t["running"], active_connections=t["active_connections"],
                                      rps=t["rps"]))
