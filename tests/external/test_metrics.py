"""/metrics: the collector over a real embedded core (and its ?auto read as an attached Apache, and a
real nginx), with real traffic frames from the traffic runner, parsed with prometheus-client's own
parser. Every advertised family must be there with sane values."""

from __future__ import annotations

import asyncio
import dataclasses

import prometheus_client
from conftest import async_wait_for, free_port, http_get, wait_for
from exporter_fixtures import scrape
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import FAMILIES, SCOREBOARD_STATES, TrafficTotals, build_registry, make_metrics_response
from mpmcore.content.server import server_info
from mpmcore.sources.attach import SUMMARY_KEYS, ApacheSource, NginxSource, frame_from_summary
from mpmcore.status.modstatus import summarize
from mpmcore.traffic import RunInfo, StatsFrame, TrafficRunner

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
        (nbytes,) = _samples(fams["mpmlab_bytes"], "mpmlab_bytes_total", source=src)
        assert nbytes.value > 0
        (gen,) = _samples(fams["mpmlab_generation"], source=src)
        assert gen.value == fr.summary.mpm_generation == summary.mpm_generation, (src, gen.value)
        (uptime,) = _samples(fams["mpmlab_uptime_seconds"], source=src)
        assert 0 <= uptime.value < 3600
        (started,) = _samples(fams["mpmlab_restart_start_time_seconds"], source=src)
        assert abs(started.value + uptime.value - fr.summary.current_time) <= 2
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

    # traffic: per pattern run, cumulative
    labels = {"id": runs[0].id, "pattern": "steady", "label": "steady"}
    (req,) = _samples(fams["mpmlab_traffic_requests"], "mpmlab_traffic_requests_total", **labels)
    assert req.value == done.requests > 0
    resp = {s.labels["class"]: s.value for s in _samples(fams["mpmlab_traffic_responses"], **labels)}
    assert resp["2xx"] == done.status["2xx"] and set(resp) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    errs = {s.labels["kind"]: s.value for s in _samples(fams["mpmlab_traffic_errors"], **labels)}
    assert set(errs) >= {"refused", "reset", "timeout"} and all(v >= 0 for v in errs.values())
    byts = {s.labels["direction"]: s.value for s in _samples(fams["mpmlab_traffic_bytes"], **labels)}
    assert byts["in"] > 0 and byts["out"] > 0
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
