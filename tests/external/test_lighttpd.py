"""Attach mode against a real lighttpd (Debian's, tests/real_lighttpd_fixtures.py): the source reads
lighttpd's own ``?auto`` exactly, the dashboard shows it beside the embedded core (API, page,
/metrics, Chromium), and the traffic panel aims at it.

Each comparison polls the source, then fetches lighttpd's own ``?auto``, and repeats until they
agree (with a deadline). Every answer sees its own connection in ``h`` (handle-req), so the state
counts of the two are equal when nothing else moved in between.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from browser_fixtures import PageErrors
from conftest import ROOT, http_get, wait_for
from dashboard_fixtures import BASE, DashboardProcess, assert_core_gone, in_process_settings
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from real_lighttpd_fixtures import LIGHTTPD_MAX_CONNECTIONS

from mpmcore.model import LighttpdCounts
from mpmcore.procs import terminate
from mpmcore.sources.attach import (
    GRID_HEADER,
    ApacheSource,
    AutoSource,
    LighttpdSource,
    grid_frame,
    make_source,
    parse_lighttpd_auto,
)
from mpmcore.sources.grid import GRID_NO_MPM
from mpmlab.main import create_app

SLOW = 5  # slowloris connections: each holds one of lighttpd's connection slots in r (read)


def own_auto(port: int) -> LighttpdCounts:
    status, _, body = http_get(port, "/server-status?auto")
    assert status == 200
    lt = parse_lighttpd_auto(body.decode("latin-1"))
    assert lt is not None, body[:200]
    return lt


@pytest.fixture
def slowloris():
    procs: list[subprocess.Popen] = []

    def start(port: int) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "mpmcore.cli", "traffic", "slowloris",
                              "--target", f"http://127.0.0.1:{port}/", "--connections", str(SLOW),
                              "--duration", "20", "--quiet", "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
        procs.append(p)
        return p

    yield start
    for p in procs:
        terminate(p, 10, signal.SIGINT)


def test_lighttpd_source_matches_lighttpds_own_auto(real_lighttpd, slowloris):
    port = real_lighttpd
    url = f"http://127.0.0.1:{port}/server-status"
    source = make_source(url)
    assert isinstance(source, AutoSource)  # detected from the page (lighttpd's Server header and heading)
    first = source.poll()
    assert first.ok, first.error
    assert source.kind == "lighttpd" and first.kind == "lighttpd"
    slowloris(port)
    wait_for(lambda: own_auto(port).states["r"] >= SLOW, timeout=15, what="slowloris connections in r")

    def agree():
        frame = source.poll()
        ref = own_auto(port)
        if not frame.ok or frame.summary is None or frame.summary.lighttpd is None:
            return None
        lt = frame.summary.lighttpd
        same = (lt.states == ref.states and lt.busy_servers == ref.busy_servers
                and lt.idle_servers == ref.idle_servers and 0 <= ref.accesses - lt.accesses <= 2)
        return frame if same else None

    frame = wait_for(agree, timeout=15, interval=0.05, what="source and lighttpd's ?auto agree")
    s = frame.summary
    lt = s.lighttpd
    assert s.mpm == "lighttpd" and s.server_version.startswith("lighttpd/")
    # one letter per connection slot; the open ones are BusyServers, the free ones IdleServers (_)
    assert len(lt.scoreboard) == LIGHTTPD_MAX_CONNECTIONS == lt.busy_servers + lt.idle_servers
    assert lt.states["r"] >= SLOW and lt.states["h"] == 1  # the slowloris readers; the poll itself
    # mapped onto Apache's letters: readers in R, the poll in W, free slots _
    assert s.count("R") == lt.states["."] + lt.states["q"] + lt.states["r"] >= SLOW
    assert s.count("W") >= 1 and s.count("_") == lt.idle_servers
    assert s.busy == lt.busy_servers and s.idle == lt.idle_servers and s.conns_total == lt.busy_servers
    assert s.processes is None and s.mpm_generation is None and s.proc_sum.pss_kb is None  # not shown: not invented
    assert frame.raw["Scoreboard"] == lt.scoreboard and frame.letters == s.scoreboard
    assert any("connection slot" in c for c in frame.cannot_show)
    assert frame.traffic_target == f"http://127.0.0.1:{port}/"
    g = grid_frame(frame)
    assert g is not None
    head = GRID_HEADER.unpack_from(g)
    assert head[2] == GRID_NO_MPM and head[7] * head[8] >= LIGHTTPD_MAX_CONNECTIONS


def test_lighttpd_kind_detection_and_errors(real_lighttpd):
    port = real_lighttpd
    explicit = make_source(f"lt=lighttpd+http://127.0.0.1:{port}/server-status")
    assert isinstance(explicit, LighttpdSource) and explicit.name == "lt"
    assert explicit.poll().ok
    # a page that is not a status page: a clear error, no exception
    for src in (AutoSource(f"http://127.0.0.1:{port}/"), LighttpdSource(f"http://127.0.0.1:{port}/")):
        f = src.poll()
        assert not f.ok and f.error_kind in ("not-status-page", "http-status") and f.error, (type(src).__name__, f.error)
    f = LighttpdSource(f"http://127.0.0.1:{port}/missing").poll()
    assert not f.ok and f.error_kind == "http-status" and "status.status-url" in f.error
    # attached as Apache, lighttpd's page (Apache's words, other meanings) is refused with the way out
    a = ApacheSource(f"http://127.0.0.1:{port}/server-status").poll()
    assert not a.ok and a.error_kind == "not-status-page" and "attach it as lighttpd" in a.error


def test_lighttpd_beside_the_core_in_the_dashboard(real_lighttpd):
    """The real app with its embedded core and lighttpd attached: slowloris aimed at lighttpd through
    the API fills lighttpd's readers (equal to its own ?auto), the core gets none of it, the page has
    lighttpd's panel with what it cannot show, and /metrics exports its slots."""
    port = real_lighttpd
    settings = in_process_settings(mpm="event", attach_interval=0.25,
                                   attach=[f"lighttpd=http://127.0.0.1:{port}/server-status"])
    app = create_app(settings)
    pids: list[int] = []
    try:
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            pids = [d.core.pid, d.traffic.pid]
            wait_for(lambda: d.sampler.summary is not None and d.sources.sources[0].frame is not None,
                     timeout=15, what="the core's and lighttpd's first frames")
            pids.append(client.get("/api/status").json()["core"]["pid"])
            src = client.get("/api/sources/lighttpd").json()
            assert src["kind"] == "lighttpd" and src["traffic_target"] == f"http://127.0.0.1:{port}/"
            r = client.post("/api/traffic", json={"pattern": "slowloris", "source": "lighttpd",
                                                  "params": {"connections": SLOW, "interval": 10, "duration": 60}})
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            try:
                def agree():
                    frame = client.get("/api/sources/lighttpd").json()["frame"]
                    ref = own_auto(port)
                    if not frame["ok"] or ref.states["r"] < SLOW:
                        return None
                    lt = frame["summary"]["lighttpd"]
                    # the source's poll and the reference each see their own connection in h
                    return frame if lt["states"] == ref.states else None

                frame = wait_for(agree, timeout=20, interval=0.05, what="the lighttpd source == lighttpd's ?auto")
                assert frame["summary"]["state_counts"]["R"] >= SLOW
                assert client.get("/api/scoreboard").json()["state_counts"]["R"] == 0  # the core got none of it
                ins = client.get("/api/sources/lighttpd").json()["insight"]
                assert "reading a request" in ins["headline"] and "open connection" in ins["headline"], ins
                page = client.get("/").text
                assert 'data-source="lighttpd"' in page and "one cell per connection slot" in page
                assert "its scoreboard has a cell per connection slot" in page  # what it cannot show
                text = client.get("/metrics").text
                fams = {f.name: f for f in text_string_to_metric_families(text)}
                slots = {s.labels["state"]: s.value for s in fams["mpmlab_scoreboard_slots"].samples
                         if s.labels["source"] == "lighttpd"}
                assert slots["read"] >= SLOW and slots["idle"] > 0
                up = [s for s in fams["mpmlab_source_up"].samples if s.labels["source"] == "lighttpd"]
                assert up and up[0].labels["kind"] == "lighttpd" and up[0].value == 1
            finally:
                deleted = client.delete(f"/api/traffic/{tid}")
            assert deleted.status_code == 200
    finally:
        assert_core_gone(settings.core_listen, [p for p in pids if p])


@pytest.mark.browser
def test_lighttpd_panel_in_chromium(tmp_path, real_lighttpd, browser):
    from playwright import sync_api

    d = DashboardProcess(tmp_path, mpm="event", extra_args=[
        "--attach", f"lighttpd=http://127.0.0.1:{real_lighttpd}/server-status", "--attach-interval", "0.5"])
    try:
        errors = PageErrors(console=())
        page = errors.watch(browser.new_page(viewport={"width": 1600, "height": 1200}))
        try:
            page.goto(d.url + "/")
            page.wait_for_function("window.mpmSources && window.mpmSources.lighttpd.frames > 0", timeout=15_000)
            lay = page.evaluate("window.mpmSources.lighttpd.layout")
            assert lay["cols"] == 50 and lay["rows"] * lay["cols"] >= LIGHTTPD_MAX_CONNECTIONS
            panel = page.locator('.source-panel[data-source="lighttpd"]')
            sync_api.expect(panel.locator(".kind-tag")).to_have_text("lighttpd")
            sync_api.expect(panel.locator(".cannot")).to_contain_text("connection slot", timeout=10_000)
            sync_api.expect(panel.locator('[id$="grid-caption"]')).to_contain_text("connection slots")
            counts = page.evaluate("window.mpmSources.lighttpd.counts()")
            assert counts["_"] > 0 and counts["W"] >= 1, counts  # free slots; the poll itself
        finally:
            page.close()
        assert not errors.lines, errors.lines
    finally:
        d.stop()
        d.assert_clean()
