"""``/metrics``: the dashboard's figures in the Prometheus text format (prometheus-client).

One custom collector reads, at scrape time, the latest frame of every source (the embedded core's
summary, attached Apache/nginx/lighttpd servers: ``mpmcore.model.SourceFrame``) and the traffic
generator's latest cumulative figures. Nothing is registered in prometheus-client's global default
registry: ``build_registry()`` makes a ``CollectorRegistry`` per app, so two apps in one process
(tests) never see each other's series.

Wiring in the dashboard (one route)::

    from mpmlab import metrics
    totals = metrics.TrafficTotals()
    dashboard.traffic.add_listener(totals.update)            # every 250 ms stats frame
    registry = metrics.build_registry(lambda: current_frames(), totals)

    @app.get("/metrics")
    def prometheus_metrics():
        body, ctype = metrics.make_metrics_response(registry)
        return Response(body, media_type=ctype)

Families (``source`` is the frame's name; a source that cannot show a figure has no series for it;
the table, the naming rules and the renames: ``docs/ecosystem.md``):

* ``mpmlab_source_up{source,kind}``: 1 when the last poll succeeded;
  ``mpmlab_source_scrape_failures_total{source,kind}``: failed polls of an attached source.
* ``mpmlab_scoreboard_slots{source,state}``: slots per state, state names as apache_exporter's
  (idle, startup, read, reply, keepalive, dns, closing, logging, graceful_stop, idle_cleanup,
  open_slot).
* ``mpmlab_workers{source,state}``: busy | idle | graceful (mod_status' counting rules).
* ``mpmlab_processes{source}``, ``mpmlab_processes_stopping{source}``.
* ``mpmlab_connections{source,state}``: total (event's ConnsTotal, nginx's Active), and nginx's
  reading | writing | waiting.
* ``mpmlab_async_connections{source,state}``: keepalive | writing | closing (event).
* ``mpmlab_accesses_total{source}``, ``mpmlab_sent_bytes_total{source}`` (counters).
* ``mpmlab_nginx_connections_total{source,event}``: accepted | handled (counters).
* ``mpmlab_generation{source,kind}``: kind config | mpm (ParentServerConfigGeneration,
  ParentServerMPMGeneration), as apache_exporter's ``apache_generation{type}``.
* ``mpmlab_restart_start_time_seconds{source}``; ``mpmlab_server_info{source,kind,mpm,generation,version}``.
* ``mpmlab_memory_pss_bytes{source,mpm}``, ``mpmlab_memory_rss_bytes{source,mpm}``: children's
  memory summed per MPM (two MPMs side by side during a live switch); embedded core only.
* traffic, per pattern run, labels ``id, pattern, label, target`` (``target``: ``core`` or the
  attached server's name the run is aimed at): ``mpmlab_traffic_requests_total``,
  ``..._responses_total{class}``, ``..._errors_total{kind}``, ``..._sent_bytes_total``,
  ``..._received_bytes_total``, ``..._active_connections``.
* latency: ``mpmlab_traffic_request_duration_seconds`` and
  ``mpmlab_traffic_corrected_request_duration_seconds`` (open model: from the intended send
  time) are **histograms**, buckets ``LATENCY_BUCKETS_S``, filled from the runner's HDR-quantized
  values (``Figures.latency_buckets``), so ``histogram_quantile`` over ``rate()`` windows works;
  ``mpmlab_traffic_latency_seconds``, ``mpmlab_traffic_corrected_latency_seconds`` and
  ``mpmlab_traffic_ttfb_seconds`` are summaries of the HDR percentiles over the whole run
  (quantiles 0.5/0.9/0.99/0.999, exact per run, not aggregatable);
  ``mpmlab_traffic_latency_max_seconds`` is the maximum.
* the dashboard's own process: prometheus-client's ``process_*`` (CPU seconds, resident memory,
  start time, open file descriptors).

``GET /metrics`` answers the Prometheus text format 0.0.4, or OpenMetrics 1.0 when the scraper's
``Accept`` asks for ``application/openmetrics-text`` (``make_metrics_response(registry, accept)``).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, TypeAlias

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mpmcore.model import SourceFrame, SourceKind, StateLetter, Summary
from mpmcore.sources.frames import frame_from_summary
from mpmcore.traffic.limits import FINISHED_HISTORY
from mpmcore.traffic.runstats import LATENCY_BUCKETS_S, LatencySummary, RunInfo, StatsFrame
from mpmlab.services.traffic import target_key

__all__ = [
    "FAMILIES",
    "SCOREBOARD_STATES",
    "MpmlabCollector",
    "TrafficTotals",
    "build_registry",
    "make_metrics_response",
]

#: Scoreboard letter -> state label, the names Prometheus' apache_exporter uses.
SCOREBOARD_STATES: dict[StateLetter, str] = {"_": "idle", "S": "startup", "R": "read", "W": "reply", "K": "keepalive", "D": "dns",
                     "C": "closing", "L": "logging", "G": "graceful_stop", "I": "idle_cleanup", ".": "open_slot"}
TRAFFIC_LABELS = ("id", "pattern", "label", "target")
#: The histograms' ``le`` bounds as exposed (the runner's buckets, then +Inf).
BUCKET_LE = tuple(f"{b:g}" for b in LATENCY_BUCKETS_S) + ("+Inf",)
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"), ("p99_9", "0.999"))  # LatencySummary fields
#: Finished patterns whose last totals stay exported (the runner keeps as many).
FINISHED_KEPT = FINISHED_HISTORY  # as many as the runner itself keeps

# name (as exposed, without _total for counters) -> (type, help)
FAMILIES: dict[str, tuple[str, str]] = {
    "mpmlab_source_up": ("gauge", "1 when the last poll of the source succeeded"),
    "mpmlab_source_scrape_failures": ("counter", "Polls of an attached source that failed (no answer, an error "
                                                 "status, not a status page)"),
    "mpmlab_scoreboard_slots": ("gauge", "Scoreboard slots per state (letters of mod_status' Scoreboard)"),
    "mpmlab_workers": ("gauge", "Workers by mod_status' counting: busy, idle, graceful"),
    "mpmlab_processes": ("gauge", "Child processes counted by mod_status (not quiescing)"),
    "mpmlab_processes_stopping": ("gauge", "Child processes stopping (event's Stopping)"),
    "mpmlab_connections": ("gauge", "Connections: total (event ConnsTotal, nginx Active), nginx reading/writing/waiting"),
    "mpmlab_async_connections": ("gauge", "event's parked connections (ConnsAsync*): keepalive, writing, closing"),
    "mpmlab_accesses": ("counter", "Requests served (Total Accesses; nginx: requests)"),
    "mpmlab_sent_bytes": ("counter", "Bytes sent to clients (Apache, lighttpd: Total kBytes x 1024)"),
    "mpmlab_nginx_connections": ("counter", "nginx connections accepted and handled"),
    "mpmlab_generation": ("gauge", "Generation by kind: config (ParentServerConfigGeneration) and mpm "
                                   "(ParentServerMPMGeneration), as apache_exporter's apache_generation"),
    "mpmlab_server_info": ("gauge", "1, labelled with what the source runs: its kind, MPM, generation and version "
                                    "(a Grafana panel can show which MPM served a time range)"),
    "mpmlab_restart_start_time_seconds": ("gauge", "Unix time of the server's last (re)start (Restart Time)"),
    "mpmlab_memory_pss_bytes": ("gauge", "Proportional set size of the children, summed per MPM"),
    "mpmlab_memory_rss_bytes": ("gauge", "Resident set size of the children, summed per MPM"),
    "mpmlab_traffic_requests": ("counter", "Requests sent by the traffic generator, per pattern run"),
    "mpmlab_traffic_responses": ("counter", "Responses received by the traffic generator, per status class"),
    "mpmlab_traffic_errors": ("counter", "Client-side errors of the traffic generator, per kind"),
    "mpmlab_traffic_sent_bytes": ("counter", "Bytes the traffic generator sent (requests)"),
    "mpmlab_traffic_received_bytes": ("counter", "Bytes the traffic generator received (responses)"),
    "mpmlab_traffic_active_connections": ("gauge", "Open connections of a running pattern"),
    "mpmlab_traffic_latency_seconds": ("summary", "Response latency (request sent to response complete), HDR "
                                                  "percentiles over the pattern's whole run"),
    "mpmlab_traffic_corrected_latency_seconds": ("summary", "Open model: latency from the intended send time "
                                                            "(corrected for coordinated omission), HDR percentiles "
                                                            "over the pattern's whole run"),
    "mpmlab_traffic_request_duration_seconds": ("histogram", "Response latency (request sent to response "
                                                             "complete), buckets from the runner's HDR values"),
    "mpmlab_traffic_corrected_request_duration_seconds": ("histogram", "Open model: latency from the intended "
                                                                       "send time, buckets from the runner's HDR "
                                                                       "values"),
    "mpmlab_traffic_latency_max_seconds": ("gauge", "Largest response latency over the pattern's whole run"),
    "mpmlab_traffic_ttfb_seconds": ("summary", "Time to first byte, HDR percentiles over the pattern's whole run"),
}


class TrafficTotals:
    """The latest cumulative figures per pattern run, fed with every runner stats frame.

    A pattern that finishes appears in one last frame only; keeping its totals here means a scrape
    that comes later still sees its final counts (FINISHED_KEPT of them, oldest dropped first).
    Thread-safe: ``update`` runs in the event loop, ``patterns`` in the scrape."""

    def __init__(self, keep: int = FINISHED_KEPT) -> None:
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict[str, RunInfo] = collections.OrderedDict()
        self.keep = keep

    def update(self, frame: StatsFrame | None) -> None:
        if not frame:
            return
        with self._lock:
            for p in frame.patterns:
                rid = p.id or p.pattern
                if not rid or p.total is None:
                    continue
                self._runs[rid] = p
                self._runs.move_to_end(rid)
            finished = [k for k, v in self._runs.items() if not v.running]
            for k in finished[: max(0, len(finished) - self.keep)]:
                del self._runs[k]

    def patterns(self) -> list[RunInfo]:
        with self._lock:
            return list(self._runs.values())


Source: TypeAlias = SourceFrame | tuple[str, Summary]
#: (host, port) of a traffic target -> the source's name (``Dashboard.target_names``).
TargetNames: TypeAlias = Mapping[tuple[str, int] | None, str]


class SourceFailures(NamedTuple):
    """An attached source's failed polls so far."""

    source: str
    kind: SourceKind
    failures: int


def _as_frames(items: Iterable[Source]) -> list[SourceFrame]:
    out = []
    for it in items or []:
        if isinstance(it, SourceFrame):
            out.append(it)
        else:  # (name, summary) of the embedded core
            out.append(frame_from_summary(it[0], it[1]))
    return out


def _add(fam: dict[str, Metric], name: str, labels: list[str], value: float | None) -> None:
    """One sample of a gauge or counter family; a figure the source cannot show (None) has none."""
    if value is None:
        return
    m = fam[name]
    assert isinstance(m, (GaugeMetricFamily, CounterMetricFamily)), name
    m.add_metric(labels, float(value))


class MpmlabCollector(Collector):
    """Reads ``sources()`` (SourceFrames, or ``(name, summary)`` pairs for the embedded core) and
    ``traffic`` (a TrafficTotals, or a callable returning the runner's latest stats frame) at
    every scrape. A failing callable costs its families, never the scrape."""

    def __init__(self, sources: Callable[[], Iterable[Source]],
                 traffic: TrafficTotals | Callable[[], StatsFrame | None] | None = None,
                 failures: Callable[[], Iterable[SourceFailures]] | None = None,
                 targets: Callable[[], TargetNames] | None = None) -> None:
        self.sources = sources
        self.traffic = traffic
        self.failures = failures
        self.targets = targets

    def describe(self) -> list[Metric]:
        return [_family(name) for name in FAMILIES]

    def collect(self) -> Iterable[Metric]:
        fam = {name: _family(name) for name in FAMILIES}
        try:
            frames = _as_frames(self.sources())
        except Exception:
            frames = []
        for fr in frames:
            self._source(fam, fr)
        try:
            failed = list(self.failures()) if self.failures is not None else []
        except Exception:
            failed = []
        for f in failed:
            _add(fam, "mpmlab_source_scrape_failures", [f.source, f.kind], f.failures)
        try:
            runs = self._traffic_runs()
        except Exception:
            runs = []
        try:
            names: TargetNames = self.targets() if self.targets is not None else {}
        except Exception:
            names = {}
        for run in runs:
            self._pattern(fam, run, names)
        return list(fam.values())

    # -- sources --------------------------------------------------------------------------------
    def _source(self, fam: dict[str, Metric], fr: SourceFrame) -> None:
        src = fr.source
        _add(fam, "mpmlab_source_up", [src, fr.kind], 1.0 if fr.ok else 0.0)
        s = fr.summary
        if not fr.ok or s is None:
            return
        if s.state_counts:
            for letter, state in SCOREBOARD_STATES.items():
                _add(fam, "mpmlab_scoreboard_slots", [src, state], s.count(letter))
        for state, v in (("busy", s.busy), ("idle", s.idle), ("graceful", s.graceful)):
            _add(fam, "mpmlab_workers", [src, state], v)
        figures: tuple[tuple[str, float | None], ...] = (
            ("mpmlab_processes", s.processes), ("mpmlab_processes_stopping", s.stopping),
            ("mpmlab_restart_start_time_seconds", s.restart_time))
        for name, figure in figures:
            _add(fam, name, [src], figure)
        _add(fam, "mpmlab_generation", [src, "config"], s.config_generation)
        _add(fam, "mpmlab_generation", [src, "mpm"], s.mpm_generation)
        gen = "" if s.mpm_generation is None else str(s.mpm_generation)
        _add(fam, "mpmlab_server_info", [src, fr.kind, s.mpm, gen, s.server_version or ""], 1.0)
        event = s.mpm == "event"  # connection counters exist for event (and nginx) only
        if event or fr.connections:
            _add(fam, "mpmlab_connections", [src, "total"], s.conns_total)
        c = fr.connections
        if c is not None:
            for state, n in (("reading", c.reading), ("writing", c.writing), ("waiting", c.waiting)):
                _add(fam, "mpmlab_connections", [src, state], n)
            _add(fam, "mpmlab_nginx_connections", [src, "accepted"], c.accepts)
            _add(fam, "mpmlab_nginx_connections", [src, "handled"], c.handled)
        elif event:  # Apache's or the embedded core's event: the parked connections
            for state, v in (("keepalive", s.conns_async_keep_alive), ("writing", s.conns_async_writing),
                             ("closing", s.conns_async_closing)):
                _add(fam, "mpmlab_async_connections", [src, state], v)
        if s.totals is not None:
            _add(fam, "mpmlab_accesses", [src], s.totals.accesses)
            _add(fam, "mpmlab_sent_bytes", [src], s.totals.bytes)
        if fr.capabilities.memory:
            pss: dict[str, float] = {}
            rss: dict[str, float] = {}
            for p in s.children:
                if p.pss_kb is None:
                    continue
                pss[p.mpm] = pss.get(p.mpm, 0.0) + p.pss_kb * 1024.0
                rss[p.mpm] = rss.get(p.mpm, 0.0) + (p.rss_kb or 0) * 1024.0
            for m in sorted(pss):
                _add(fam, "mpmlab_memory_pss_bytes", [src, m], pss[m])
                _add(fam, "mpmlab_memory_rss_bytes", [src, m], rss[m])

    # -- traffic --------------------------------------------------------------------------------
    def _traffic_runs(self) -> list[RunInfo]:
        t = self.traffic
        if t is None:
            return []
        if isinstance(t, TrafficTotals):
            return t.patterns()
        frame = t()
        return [p for p in (frame.patterns if frame else []) if p.total is not None]

    def _pattern(self, fam: dict[str, Metric], run: RunInfo, names: TargetNames) -> None:
        key = target_key(run.target)
        target = names.get(key) or (f"{key[0]}:{key[1]}" if key else run.target)
        labels = [str(run.id or run.pattern), str(run.pattern or ""), str(run.label or run.pattern or ""), target]
        tot = run.total
        if tot is None:
            return
        _add(fam, "mpmlab_traffic_requests", labels, tot.requests or 0)
        for cls, n in tot.status.items():
            _add(fam, "mpmlab_traffic_responses", labels + [cls], n or 0)
        for kind, n in tot.errors.items():
            _add(fam, "mpmlab_traffic_errors", labels + [kind], n or 0)
        _add(fam, "mpmlab_traffic_received_bytes", labels, tot.bytes_in or 0)
        _add(fam, "mpmlab_traffic_sent_bytes", labels, tot.bytes_out or 0)
        if run.running:
            _add(fam, "mpmlab_traffic_active_connections", labels, run.active_connections or 0)
        _summary(fam["mpmlab_traffic_latency_seconds"], labels, tot.latency_ms)
        _summary(fam["mpmlab_traffic_corrected_latency_seconds"], labels, tot.corrected_latency_ms)
        _summary(fam["mpmlab_traffic_ttfb_seconds"], labels, tot.ttfb_ms)
        _histogram(fam["mpmlab_traffic_request_duration_seconds"], labels, tot.latency_buckets, tot.latency_sum_s)
        _histogram(fam["mpmlab_traffic_corrected_request_duration_seconds"], labels, tot.corrected_buckets,
                   tot.corrected_sum_s)
        lat = tot.latency_ms
        if lat:
            _add(fam, "mpmlab_traffic_latency_max_seconds", labels, lat.max / 1000.0)


def _family(name: str) -> Metric:
    mtype, doc = FAMILIES[name]
    if name.startswith("mpmlab_traffic_"):
        labels = list(TRAFFIC_LABELS) + {"mpmlab_traffic_responses": ["class"],
                                         "mpmlab_traffic_errors": ["kind"]}.get(name, [])
    else:
        labels = ["source"] + {"mpmlab_source_up": ["kind"], "mpmlab_source_scrape_failures": ["kind"],
                               "mpmlab_generation": ["kind"], "mpmlab_scoreboard_slots": ["state"],
                               "mpmlab_workers": ["state"], "mpmlab_connections": ["state"],
                               "mpmlab_async_connections": ["state"], "mpmlab_nginx_connections": ["event"],
                               "mpmlab_memory_pss_bytes": ["mpm"], "mpmlab_memory_rss_bytes": ["mpm"],
                               "mpmlab_server_info": ["kind", "mpm", "generation", "version"]}.get(name, [])
    if mtype == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    if mtype == "gauge":
        return GaugeMetricFamily(name, doc, labels=labels)
    if mtype == "histogram":
        return HistogramMetricFamily(name, doc, labels=labels)
    return Metric(name, doc, "summary")


def _histogram(m: Metric, labels: list[str], buckets: tuple[int, ...] | None, sum_s: float | None) -> None:
    """The runner's per-bucket counts as a Prometheus histogram (cumulative ``le`` buckets)."""
    if not buckets or len(buckets) != len(BUCKET_LE) or not sum(buckets):
        return
    assert isinstance(m, HistogramMetricFamily)
    cum, out = 0, []
    for le, n in zip(BUCKET_LE, buckets, strict=True):
        cum += n
        out.append((le, float(cum)))
    m.add_metric(labels, out, sum_value=float(sum_s or 0.0))


def _summary(m: Metric, labels: list[str], s: LatencySummary | None) -> None:
    """HDR percentiles (ms) as a Prometheus summary (seconds)."""
    if not s or not s.count:
        return
    base = dict(zip(TRAFFIC_LABELS, labels, strict=True))  # summaries are the traffic families
    for key, q in QUANTILES:
        m.add_sample(m.name, dict(base, quantile=q), getattr(s, key) / 1000.0)
    m.add_sample(m.name + "_count", dict(base), float(s.count))
    m.add_sample(m.name + "_sum", dict(base), float(s.mean or 0.0) * s.count / 1000.0)


def build_registry(sources: Callable[[], Iterable[Source]],
                   traffic: TrafficTotals | Callable[[], StatsFrame | None] | None = None, *,
                   failures: Callable[[], Iterable[SourceFailures]] | None = None,
                   targets: Callable[[], TargetNames] | None = None,
                   process: bool = False) -> CollectorRegistry:
    """A fresh registry (never the global one) with the mpmlab collector in it; ``process``: also
    prometheus-client's process collector (``process_*``: this process' CPU, memory, start time)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(MpmlabCollector(sources, traffic, failures, targets))
    if process:
        ProcessCollector(registry=registry)
    return registry


def make_metrics_response(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) for ``GET /metrics``: the Prometheus text format 0.0.4, or OpenMetrics
    (ending ``# EOF``) when ``accept`` (the scraper's Accept header) asks for
    ``application/openmetrics-text``, as Prometheus does by default."""
    encoder, ctype = choose_encoder(accept or "")
    return encoder(registry), ctype
