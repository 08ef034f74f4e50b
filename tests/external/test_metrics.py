"""/metrics: the collector over a real embedded core (and its ?auto read as an attached Apache, and a
real nginx), with real traffic frames from the traffic runner, parsed with prometheus-client's own
parser. Every advertised family must be there with sane values."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import prometheus_client
from conftest import async_wait_for, free_port, http_get, wait_for
from exporter_fixtures import scrape
from prometheus_client.parser import text_string_to_metric_families

from mpmcore.content.server import server_info
from mpmcore.sources.attach import SUMMARY_KEYS, ApacheSource, NginxSource, frame_from_summary
from mpmcore.status.modstatus import summarize
from mpmcore.traffic import RunInfo, StatsFrame, TrafficRunner
from mpmlab.metrics import (
    BUCKET_LE,
    FAMILIES,
    SCOREBOARD_STATES,
    TrafficTotals,
    build_registry,
    make_metrics_response,
)

TRAFFIC_SECONDS = 1.5


def _embedded_frame(server) -> tuple:
    snap = server.snapshot()
    s = summarize(snap, server_info(snap, "127.0.0.1"))
    return s, frame_from_summary("embedded", s, url=f"http://{server.listen}/")


async def _steady_traffic(url: str) -> TrafficTotals:
    """A short steady pattern through the real runner; every stats frame goes into TrafficTotals."""
    totals = TrafficTotals()
    seen: list[RunInfo] = []

    def on_frame(frame: StatsFrame) -> None:
        totals.update(frame)
        seen.extend(p for p in frame.patterns if not p.running)

    runner = TrafficRunner()
    await asyncio.to_thread(runner.start)
    try:
        client = await runner.client()
        try:
            await client.on_frame(on_frame)
            rid = await client.start("steady", target=url, clients=4, duration=TRAFFIC_SECONDS)
            await async_wait_for(lambda: any(p.id == rid for p in seen), TRAFFIC_SECONDS + 10,
                                 "the pattern to finish")
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(runner.close)
    return totals


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(fam, name: str | None = None, **labels) -> list:
    return [s for s in fam.samples if (name is None or s.name == name)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def assert_histogram(fam, labels: dict[str, str], count: int) -> None:
    """``fam``'s series for ``labels``: every bound of LATENCY_BUCKETS_S then +Inf, cumulative
    (never decreasing), +Inf equal to ``_count`` and to ``count``."""
    name = fam.name
    buckets = [(s.labels["le"], s.value) for s in _samples(fam, name + "_bucket", **labels)]
    assert [le for le, _ in buckets] == list(BUCKET_LE), buckets
    values = [v for _, v in buckets]
    assert all(a <= b for a, b in itertools.pairwise(values)), values
    (c,) = _samples(fam, name + "_count", **labels)
    assert values[-1] == c.value == count > 0, (values, c.value, count)


def test_metrics_over_embedded_core_attached_sources_and_traffic(server_factory, real_nginx):
    server = server_factory(mpm="event", settings={"ServerLimit": 4, "ThreadsPerChild": 10, "MaxRequestWorkers": 40,
                                                   "StartServers": 2})
    totals = asyncio.run(_steady_traffic(f"http://{server.listen}/"))
    runs = totals.patterns()
    assert len(runs) == 1 and runs[0].state != "running"
    done = runs[0].total
    assert done.responses > 0 and done.status["2xx"] > 0

    # wait until the last response of the pattern is counted by the server (counted after logging)
    wait_for(lambda: (summarize(server.snapshot(), server_info(server.snapshot(), "127.0.0.1")).totals.accesses
                      >= done.status["2xx"]), timeout=10, what="server counted the traffic")
    # the same server read two ways (shared memory, and its ?auto as an attached Apache); taken
    # again until no child came or went between the two reads (maintenance may still adjust)
    source = ApacheSource(f"http://{server.listen}/server-status", "embedded-auto")

    def both():
        summary, embedded = _embedded_frame(server)
        as_apache = source.poll()
        assert as_apache.ok, as_apache.error
        return (summary, embedded, as_apache) if as_apache.summary.processes == summary.processes else None

    summary, embedded, as_apache = wait_for(both, timeout=10, what="a quiet moment")
    # one model for every source: the embedded core's summary and an attached server's are the same type
    assert type(summary) is type(as_apache.summary) and {f.name for f in dataclasses.fields(summary)} >= set(SUMMARY_KEYS)
    nginx = NginxSource(f"http://127.0.0.1:{real_nginx}/nginx_status", "nginx").poll()
    assert nginx.ok, nginx.error
    dead = ApacheSource(f"http://127.0.0.1:{free_port()}/server-status", "down").poll()

    def broken():
        raise RuntimeError("a bug in one callable")

    frames = [embedded, as_apache, nginx, dead]
    registry = build_registry(lambda: frames, totals)
    body, ctype = make_metrics_response(registry)
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    fams = _families(body.decode())

    # every advertised family is there (a counter is announced without its _total suffix)
    assert set(FAMILIES) <= set(fams), set(FAMILIES) - set(fams)
    up = {s.labels["source"]: s.value for s in fams["mpmlab_source_up"].samples}
    assert up == {"embedded": 1.0, "embedded-auto": 1.0, "nginx": 1.0, "down": 0.0}

    for src, fr in (("embedded", embedded), ("embedded-auto", as_apache)):
        slots = {s.labels["state"]: s.value for s in _samples(fams["mpmlab_scoreboard_slots"], source=src)}
        assert set(slots) == set(SCOREBOARD_STATES.values())
        assert sum(slots.values()) == len(fr.letters) and all(v >= 0 for v in slots.values())
        workers = {s.labels["state"]: s.value for s in _samples(fams["mpmlab_workers"], source=src)}
        assert set(workers) == {"busy", "idle", "graceful"} and workers["idle"] > 0
        assert workers["busy"] + workers["idle"] + workers["graceful"] <= sum(slots.values())
        (procs,) = _samples(fams["mpmlab_processes"], source=src)
        assert procs.value >= 2
        asyncs = {s.labels["state"]: s.value for s in _samples(fams["mpmlab_async_connections"], source=src)}
        assert set(asyncs) == {"keepalive", "writing", "closing"} and all(v >= 0 for v in asyncs.values())
        (acc,) = _samples(fams["mpmlab_accesses"], "mpmlab_accesses_total", source=src)
        assert acc.value >= done.status["2xx"]
        (nbytes,) = _samples(fams["mpmlab_sent_bytes"], "mpmlab_sent_bytes_total", source=src)
        assert nbytes.value > 0
        # generation by kind, as apache_exporter's apache_generation{type}
        gens = {s.labels["kind"]: s.value for s in _samples(fams["mpmlab_generation"], source=src)}
        assert gens == {"config": fr.summary.config_generation, "mpm": fr.summary.mpm_generation}, (src, gens)
        assert gens["mpm"] == summary.mpm_generation and gens["config"] == summary.config_generation
        (started,) = _samples(fams["mpmlab_restart_start_time_seconds"], source=src)
        assert 0 <= fr.summary.current_time - started.value < 3600
        assert abs(started.value + fr.summary.uptime - fr.summary.current_time) <= 2
        (info,) = _samples(fams["mpmlab_server_info"], source=src)
        assert info.value == 1 and info.labels["mpm"] == "event" and info.labels["kind"] == fr.kind
        assert info.labels["generation"] == str(summary.mpm_generation)
    procs = {s.labels["source"]: s.value for s in fams["mpmlab_processes"].samples}
    assert procs["embedded"] == procs["embedded-auto"], procs

    # memory per MPM: the embedded core only (Apache's page has none)
    pss = _samples(fams["mpmlab_memory_pss_bytes"])
    assert [(s.labels["source"], s.labels["mpm"]) for s in pss] == [("embedded", "event")]
    assert 1 << 20 < pss[0].value < 4 << 30
    (rss,) = _samples(fams["mpmlab_memory_rss_bytes"])
    assert rss.value >= pss[0].value

    # the info metric names what each source runs (nginx included), for a panel of MPM over time
    kinds = {s.labels["source"]: (s.labels["kind"], s.labels["mpm"]) for s in fams["mpmlab_server_info"].samples}
    assert kinds["nginx"][0] == "nginx" and "down" not in kinds

    # nginx: connections and its counters, no scoreboard
    conns = {s.labels["state"]: s.value for s in _samples(fams["mpmlab_connections"], source="nginx")}
    assert set(conns) == {"total", "reading", "writing", "waiting"} and conns["writing"] >= 1
    ev = {s.labels["event"]: s.value for s in _samples(fams["mpmlab_nginx_connections"], source="nginx")}
    assert ev["accepted"] >= ev["handled"] >= 1
    assert not _samples(fams["mpmlab_scoreboard_slots"], source="nginx")
    assert _samples(fams["mpmlab_accesses"], "mpmlab_accesses_total", source="nginx")[0].value >= 1
    assert not [s for f in fams.values() for s in f.samples if s.labels.get("source") == "down"
                and s.name != "mpmlab_source_up"]

    # traffic: per pattern run, cumulative; without a name for its target, the target is host:port
    labels = {"id": runs[0].id, "pattern": "steady", "label": "steady", "target": server.listen}
    (req,) = _samples(fams["mpmlab_traffic_requests"], "mpmlab_traffic_requests_total", **labels)
    assert req.value == done.requests > 0
    resp = {s.labels["class"]: s.value for s in _samples(fams["mpmlab_traffic_responses"], **labels)}
    assert resp["2xx"] == done.status["2xx"] and set(resp) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    errs = {s.labels["kind"]: s.value for s in _samples(fams["mpmlab_traffic_errors"], **labels)}
    assert set(errs) >= {"refused", "reset", "timeout"} and all(v >= 0 for v in errs.values())
    (rx,) = _samples(fams["mpmlab_traffic_received_bytes"], "mpmlab_traffic_received_bytes_total", **labels)
    (tx,) = _samples(fams["mpmlab_traffic_sent_bytes"], "mpmlab_traffic_sent_bytes_total", **labels)
    assert rx.value == done.bytes_in > 0 and tx.value == done.bytes_out > 0
    lat = fams["mpmlab_traffic_latency_seconds"]
    assert lat.type == "summary"
    q = {s.labels["quantile"]: s.value for s in _samples(lat, "mpmlab_traffic_latency_seconds", **labels)}
    assert list(q) == ["0.5", "0.9", "0.99", "0.999"]
    assert 0 < q["0.5"] <= q["0.9"] <= q["0.99"] <= q["0.999"] < 10
    (count,) = _samples(lat, "mpmlab_traffic_latency_seconds_count", **labels)
    (total,) = _samples(lat, "mpmlab_traffic_latency_seconds_sum", **labels)
    assert count.value == done.latency_ms.count > 0
    assert 0 < total.value / count.value < 10
    (mx,) = _samples(fams["mpmlab_traffic_latency_max_seconds"], **labels)
    assert mx.value >= q["0.999"]
    assert _samples(fams["mpmlab_traffic_ttfb_seconds"], "mpmlab_traffic_ttfb_seconds_count", **labels)
    # the histogram: buckets from the runner's HDR values, cumulative, +Inf == _count == the summary's count
    hist = fams["mpmlab_traffic_request_duration_seconds"]
    assert hist.type == "histogram"
    assert_histogram(hist, labels, done.latency_ms.count)
    (hsum,) = _samples(hist, "mpmlab_traffic_request_duration_seconds_sum", **labels)
    assert abs(hsum.value - total.value) <= 0.001 * count.value + 1e-6  # the same latencies, summed exactly
    # a closed-model run has no corrected latency: no series, not a zero
    assert not _samples(fams["mpmlab_traffic_corrected_request_duration_seconds"], **labels)
    assert not _samples(fams["mpmlab_traffic_corrected_latency_seconds"], **labels)
    assert not _samples(fams["mpmlab_traffic_active_connections"])  # the run has finished

    # nothing leaked into prometheus-client's global registry; a broken callable costs its part only
    assert not any(n.startswith("mpmlab_") for n in (m.name for m in prometheus_client.REGISTRY.collect()))
    body2, _ = make_metrics_response(build_registry(broken, lambda: {"patterns": "garbage"}))
    assert set(FAMILIES) <= set(_families(body2.decode()))
    # a runner frame works as the traffic input too
    body3, _ = make_metrics_response(build_registry(lambda: [("embedded", summary)],
                                                    lambda: StatsFrame(seq=1, time=0.0, interval=0.25, patterns=runs)))
    assert 'mpmlab_traffic_requests_total{id="%s"' % runs[0].id in body3.decode()


def test_apache_exporter_and_metrics_read_the_embedded_core_alike(server_factory, exporter):
    """Debian's apache_exporter scrapes the embedded core's ?auto; our scoreboard state names are its
    names, and the counts that do not move between two reads agree."""
    server = server_factory(mpm="worker", settings={"ServerLimit": 2, "ThreadsPerChild": 10,
                                                    "MaxRequestWorkers": 20, "StartServers": 2})
    # both children up first: while their threads start, the open slots move between the two reads
    wait_for(lambda: server.count_states()["_"] == 20, what="20 idle threads")
    port = exporter(f"http://{server.listen}/server-status?auto")
    values = wait_for(lambda: (v := scrape(port)) and v["apache_up"] == 1 and v, timeout=10,
                      what="apache_exporter scraping the embedded core")
    prefix = 'apache_scoreboard{state="'
    theirs = {name[len(prefix):-2]: v for name, v in values.items() if name.startswith(prefix)}
    assert set(theirs) == set(SCOREBOARD_STATES.values())
    frame = ApacheSource(f"http://{server.listen}/server-status", "core").poll()
    ours = _families(make_metrics_response(build_registry(lambda: [frame]))[0].decode())
    mine = {s.labels["state"]: s.value for s in ours["mpmlab_scoreboard_slots"].samples}
    assert mine["open_slot"] == theirs["open_slot"] and sum(mine.values()) == sum(theirs.values())
    assert http_get(server.port, "/health")[0] == 200


def test_a_real_dashboards_metrics_in_text_and_openmetrics():
    """The real app (embedded core, an attached server that never answers, an open-model pattern
    aimed at the core through the API), scraped as Prometheus does: the text format by default,
    OpenMetrics when asked for, both parsed by prometheus-client's own parsers."""
    from dashboard_fixtures import BASE, assert_core_gone, in_process_settings
    from fastapi.testclient import TestClient
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

    from mpmlab.main import create_app

    settings = in_process_settings(mpm="event", attach_interval=0.2,
                                   attach=[f"down=apache+http://127.0.0.1:{free_port()}/server-status"])
    app = create_app(settings)
    pids: list[int] = []
    try:
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            pids = [d.core.pid, d.traffic.pid]
            wait_for(lambda: d.sampler.summary is not None, timeout=15, what="the core's first summary")
            pids.append(client.get("/api/status").json()["core"]["pid"])
            r = client.post("/api/traffic", json={"pattern": "steady",
                                                  "params": {"model": "open", "rate": 50, "duration": 30}})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            labels = {"id": rid, "pattern": "steady", "label": "steady", "target": "core"}
            try:
                def scraped():
                    resp = client.get("/metrics")
                    assert resp.status_code == 200
                    fams = _families(resp.text)
                    hist = fams["mpmlab_traffic_corrected_request_duration_seconds"]
                    fails = _samples(fams["mpmlab_source_scrape_failures"], source="down")
                    ok = (_samples(hist, hist.name + "_count", **labels) and fails and fails[0].value >= 2)
                    return (resp, fams) if ok else None

                resp, fams = wait_for(scraped, timeout=20, interval=0.25,
                                      what="the open-model run's histograms and the failed polls in /metrics")
                r2 = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0; "
                                                               "charset=utf-8,text/plain;version=0.0.4;q=0.5"})
            finally:
                assert client.delete(f"/api/traffic/{rid}").status_code == 200
    finally:
        assert_core_gone(settings.core_listen, [p for p in pids if p])

    # the text format, as before
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert set(FAMILIES) <= set(fams), set(FAMILIES) - set(fams)
    (fail,) = _samples(fams["mpmlab_source_scrape_failures"], "mpmlab_source_scrape_failures_total", source="down")
    assert fail.labels["kind"] == "apache" and fail.value >= 2
    assert _samples(fams["mpmlab_source_up"], source="down")[0].value == 0
    # traffic labelled by its target: the embedded core is "core"
    runs = {s.labels["target"] for s in fams["mpmlab_traffic_requests"].samples}
    assert runs == {"core"}, runs
    for name in ("mpmlab_traffic_request_duration_seconds", "mpmlab_traffic_corrected_request_duration_seconds"):
        fam = fams[name]
        (c,) = _samples(fam, name + "_count", **labels)
        assert fam.type == "histogram"
        assert_histogram(fam, labels, int(c.value))
    # corrected beside raw, as summaries too
    q = {s.labels["quantile"]: s.value for s in _samples(fams["mpmlab_traffic_corrected_latency_seconds"],
                                                         "mpmlab_traffic_corrected_latency_seconds", **labels)}
    assert list(q) == ["0.5", "0.9", "0.99", "0.999"] and 0 < q["0.5"] <= q["0.999"]
    # the dashboard's own process
    assert fams["process_cpu_seconds"].samples[0].value > 0
    assert fams["process_resident_memory_bytes"].samples[0].value > 10 << 20
    assert fams["process_start_time_seconds"].samples[0].value > 1e9
    # naming: counters end in _total, no uptime gauge, units as suffixes
    for f in fams.values():
        if f.type == "counter":
            assert all(s.name == f.name + "_total" or s.name == f.name + "_created" for s in f.samples), f.name
        assert "uptime" not in f.name, f.name
    assert not any(n.endswith("_bytes_total") and "sent" not in n and "received" not in n
                   for n in (s.name for f in fams.values() for s in f.samples if s.name.startswith("mpmlab_")))

    # OpenMetrics when asked for, ending in # EOF, parsed by the OpenMetrics parser
    assert r2.status_code == 200 and r2.headers["content-type"].startswith("application/openmetrics-text")
    assert r2.text.endswith("# EOF\n")
    om = {f.name: f for f in om_families(r2.text)}
    assert set(FAMILIES) <= set(om), set(FAMILIES) - set(om)
    assert om["mpmlab_traffic_requests"].type == "counter"
    hist = om["mpmlab_traffic_request_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [s.value for s in _samples(hist, hist.name + "_bucket", **labels)]
    assert len(buckets) == len(BUCKET_LE) and buckets == sorted(buckets) and buckets[-1] > 0
    assert om["mpmlab_server_info"].samples[0].labels["source"] == "core"
