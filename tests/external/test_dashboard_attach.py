"""Attach mode in the dashboard, end to end: the real app (TestClient, lifespan included) with its
real embedded core AND a real Apache httpd 2.4 (event) attached; traffic from the real runner,
aimed through the API; /metrics parsed by prometheus-client; configuration through the real CLI.
Waits are polls with deadlines."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys

import pytest
from conftest import ROOT, free_port, http_get, pid_alive, status_auto, wait_for
from dashboard_fixtures import BASE, assert_core_gone, in_process_settings, ws_session
from fastapi.testclient import TestClient

from mpmcore.procs import terminate
from mpmcore.sources.attach import parse_stub_status
from mpmlab.main import create_app

pytestmark = pytest.mark.apache

SLOW = 5


@pytest.fixture(scope="module")
def dash(event_apache):
    settings = in_process_settings(mpm="event", attach=[f"apache=http://127.0.0.1:{event_apache}/server-status"],
                                   attach_interval=0.25)
    app = create_app(settings)
    with TestClient(app, base_url=BASE) as client:
        d = app.state.dashboard
        wait_for(lambda: d.sampler.summary is not None and d.sources.sources[0].frame is not None,
                 timeout=15, what="the core's and Apache's first frames")
        pids = [d.core.pid, d.traffic.pid, client.get("/api/status").json()["core"]["pid"]]
        tasks = [s.task for s in d.sources.sources]
        yield client, d
        client.post("/api/traffic/stop-all")
    # checked (and cleaned up) first: a failed check below must not leave the core running
    assert_core_gone(settings.core_listen, pids)
    # the lifespan cancelled and awaited every poller: no orphan task
    assert all(t is not None and t.done() for t in tasks)


def test_sources_lists_the_core_and_apache(dash, event_apache):
    client, _ = dash
    body = client.get("/api/sources").json()
    by = {s["name"]: s for s in body["sources"]}
    assert list(by) == ["core", "apache"] and body["interval"] == 0.25
    core, ap = by["core"], by["apache"]
    assert core["embedded"] and core["kind"] == "mpmlab" and core["frame"]["ok"]
    assert core["frame"]["summary"]["mpm"] == "event" and core["frame"]["cannot_show"] == []
    wait_for(lambda: client.get("/api/sources/apache").json()["frame"]["ok"], what="Apache polled")
    ap = client.get("/api/sources/apache").json()
    f = ap["frame"]
    assert ap["kind"] == "apache" and ap["traffic_target"] == f"http://127.0.0.1:{event_apache}/"
    assert f["summary"]["mpm"] == "event" and f["layout"]["cols"] == 10 and not f["layout"]["inferred"]
    assert f["capabilities"]["process_table"] and len(f["summary"]["procs"]) >= 2
    assert any("memory" in c for c in f["cannot_show"])
    assert ap["insight"]["headline"]  # "what is happening", read from Apache's numbers
    assert client.get("/api/sources/core").json()["embedded"]
    r = client.get("/api/sources/nope")
    assert r.status_code == 404 and "apache" in r.json()["detail"]
    wait_for(lambda: len(client.get("/api/sources/apache/history").json()["points"]) >= 2,
             what="two chart points for Apache")
    # the page: both panels, Apache's with its cannot-show list
    page = client.get("/").text
    assert 'id="panel-core"' in page and 'data-source="apache"' in page and "This source cannot show" in page
    assert 'id="traffic-target"' in page and "/static/js/sources.js" in page


def test_slowloris_at_apache_matches_apaches_own_auto(dash, event_apache):
    client, _ = dash
    # the target is chosen as a source, never as a URL in the parameters
    r = client.post("/api/traffic", json={"pattern": "slowloris", "params": {"target": f"http://127.0.0.1:{event_apache}/"}})
    assert r.status_code == 422
    assert client.post("/api/traffic", json={"pattern": "steady", "source": "nope"}).status_code == 404
    r = client.post("/api/traffic", json={"pattern": "slowloris", "source": "apache",
                                          "params": {"connections": SLOW, "interval": 10, "duration": 60}})
    assert r.status_code == 201, r.text
    assert r.json()["target"] == f"http://127.0.0.1:{event_apache}/" and r.json()["source"] == "apache"
    pid = r.json()["id"]
    try:
        def agree():
            src = client.get("/api/sources/apache").json()["frame"]
            ref = status_auto(event_apache)
            if not src["ok"]:
                return None
            mine, theirs = src["summary"]["state_counts"]["R"], ref["Scoreboard"].count("R")
            return src if mine == theirs and mine >= SLOW else None

        frame = wait_for(agree, timeout=20, interval=0.1, what="the Apache source's R count == Apache's own ?auto")
        assert frame["summary"]["busy"] >= SLOW
        # the embedded core got none of it
        assert client.get("/api/scoreboard").json()["state_counts"]["R"] == 0
        listed = {p["id"]: p for p in client.get("/api/traffic").json()["patterns"]}
        assert listed[pid]["source"] == "apache"
        # a reader's cell: its ExtendedStatus row (pid, generation, client) through the slot API, as
        # the grid's hover shows it; an idle never-used cell has no row, a cell off the grid is 404
        def reader_cell():
            f = client.get("/api/sources/apache").json()["frame"]
            placed = [w for w in f["workers"] or [] if w["status"] == "R" and w["thread"] is not None]
            return placed[0] if placed else None
        w = wait_for(reader_cell, timeout=10, interval=0.1, what="a placed R row")
        cell = client.get(f"/api/sources/apache/slots/{w['proc']}/{w['thread']}").json()
        assert cell["detail"] and cell["status"] == "R" and cell["pid"] == w["pid"] and cell["pid"] > 0
        assert cell["generation"] == w["generation"] and cell["client"] and cell["since_request_s"] is not None
        assert client.get("/api/sources/apache/slots/99/0").status_code == 404
        assert client.get("/api/sources/nope/slots/0/0").status_code == 404
        assert client.get("/api/sources/core/slots/0/0").json()["proc"] == 0  # the core's own slot detail
        # "what is happening" for Apache names the readers
        ins = client.get("/api/sources/apache").json()["insight"]
        assert any("(R)" in t for t in [ins["headline"], *ins["details"]]), ins

        # /ws/sources: every message says which source it is for
        with ws_session(client, "/ws/sources", headers={"Origin": BASE}) as ws:
            hello = json.loads(ws.receive_text())
            assert hello["type"] == "hello" and [s["name"] for s in hello["sources"]] == ["apache"]
            summary = grid = None
            for _ in range(20):
                msg = ws.receive()
                if msg.get("text"):
                    summary = json.loads(msg["text"])
                elif msg.get("bytes"):
                    grid = msg["bytes"]
                if summary and grid:
                    break
            assert summary["type"] == "summary" and summary["source"] == "apache" and summary["cannot_show"]
            assert grid[0] == 0x53 and grid[2:2 + grid[1]] == b"apache"
            g = grid[2 + grid[1]:]
            magic, version, mpm, _f, _seq, _t, _gen, rows, cols, tpc, _np = struct.unpack_from("<BBBBIdIHHHH", g)
            assert (magic, version, mpm, cols, tpc) == (0x4D, 1, 2, 10, 10)
            assert g[28:28 + rows * cols].count(3) >= SLOW  # R
    finally:
        deleted = client.delete(f"/api/traffic/{pid}")
    assert deleted.status_code == 200


def test_metrics_for_both_sources_and_the_traffic(dash, event_apache):
    from prometheus_client.parser import text_string_to_metric_families

    client, d = dash
    r = client.post("/api/traffic", json={"pattern": "steady", "source": "apache",
                                          "params": {"model": "open", "rate": 20, "duration": 20}})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    try:
        def scrape():
            resp = client.get("/metrics")
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            fams = {f.name: f for f in text_string_to_metric_families(resp.text)}
            lat = [s for s in fams["mpmlab_traffic_latency_seconds"].samples
                   if s.labels.get("id") == pid and s.name.endswith("_count") and s.value > 0]
            return fams if lat else None

        fams = wait_for(scrape, timeout=15, interval=0.25, what="latency of the steady pattern in /metrics")
        up = {s.labels["source"]: s.value for s in fams["mpmlab_source_up"].samples}
        assert up == {"core": 1.0, "apache": 1.0}
        slots = {(s.labels["source"], s.labels["state"]): s.value for s in fams["mpmlab_scoreboard_slots"].samples}
        assert slots[("core", "idle")] >= 1 and ("apache", "read") in slots and slots[("apache", "idle")] > 0
        workers = {(s.labels["source"], s.labels["state"]) for s in fams["mpmlab_workers"].samples}
        assert {("core", "busy"), ("core", "idle"), ("apache", "busy"), ("apache", "idle")} <= workers
        for fam in ("mpmlab_processes", "mpmlab_accesses", "mpmlab_sent_bytes", "mpmlab_generation", "mpmlab_async_connections"):
            assert {s.labels["source"] for s in fams[fam].samples} >= {"core", "apache"}, fam
        # memory: the embedded core only (Apache's page has none), per MPM
        assert {(s.labels["source"], s.labels["mpm"]) for s in fams["mpmlab_memory_pss_bytes"].samples} == {("core", "event")}
        reqs = {s.labels["id"]: s.value for s in fams["mpmlab_traffic_requests"].samples}
        assert reqs[pid] > 0 and fams["mpmlab_traffic_requests"].type == "counter"
        assert fams["mpmlab_traffic_latency_seconds"].type == "summary"
        # with a token, control needs it; /metrics (read-only figures) stays readable for Prometheus
        d.settings.token = "s3cret-token"
        try:
            assert client.post("/api/traffic/stop-all").status_code == 403
            assert client.get("/metrics").status_code == 200
        finally:
            d.settings.token = None
    finally:
        client.delete(f"/api/traffic/{pid}")


def test_nginx_beside_the_core_under_slowloris(real_nginx):
    """A real nginx attached beside the embedded core; slowloris aimed at nginx through the API. The
    nginx source's counts equal nginx's own stub_status at the same moment (the reference's own
    connection and request are counted in its answer, and the poller's Writing in the source's);
    the core gets none of the traffic; the page says what nginx cannot show."""
    settings = in_process_settings(mpm="event", attach_interval=0.25,
                                   attach=[f"nginx=http://127.0.0.1:{real_nginx}/nginx_status"])
    app = create_app(settings)
    pids: list[int] = []
    try:
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            pids = [d.core.pid, d.traffic.pid]  # from the start: whatever fails, they are checked and cleaned up
            wait_for(lambda: d.sampler.summary is not None and d.sources.sources[0].frame is not None,
                     timeout=15, what="the core's and nginx's first frames")
            pids.append(client.get("/api/status").json()["core"]["pid"])  # the master
            src = client.get("/api/sources/nginx").json()
            assert src["kind"] == "nginx" and src["traffic_target"] == f"http://127.0.0.1:{real_nginx}/"
            r = client.post("/api/traffic", json={"pattern": "slowloris", "source": "nginx",
                                                  "params": {"connections": SLOW, "interval": 10, "duration": 60}})
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            try:
                def agree():
                    frame = client.get("/api/sources/nginx").json()["frame"]
                    status, _, body = http_get(real_nginx, "/nginx_status")
                    assert status == 200
                    counts = parse_stub_status(body.decode())
                    assert counts is not None
                    ref = dataclasses.asdict(counts)
                    if not frame["ok"] or ref["reading"] < SLOW:
                        return None
                    c = frame["connections"]
                    same = (all(c[k] == ref[k] for k in ("active", "reading", "writing", "waiting"))
                            and all(ref[k] - c[k] == 1 for k in ("accepts", "handled", "requests")))
                    return frame if same else None

                frame = wait_for(agree, timeout=20, interval=0.05, what="the nginx source == nginx's own stub_status")
                s = frame["summary"]
                assert frame["connections"]["reading"] >= SLOW and s["conns_total"] == frame["connections"]["active"]
                assert s["state_counts"] is None and s["busy"] is None  # no scoreboard: nothing invented
                assert client.get("/api/scoreboard").json()["state_counts"]["R"] == 0  # the core got none of it
                ins = client.get("/api/sources/nginx").json()["insight"]
                assert f"{frame['connections']['reading']} reading a request" in ins["headline"], ins
                page = client.get("/").text
                assert 'data-source="nginx"' in page and "nginx has no scoreboard" in page
            finally:
                deleted = client.delete(f"/api/traffic/{pid}")
            assert deleted.status_code == 200
    finally:
        assert_core_gone(settings.core_listen, [p for p in pids if p])


def test_remote_source_is_watched_but_never_sent_traffic(event_apache):
    """--no-core with attached servers only; one of them not on loopback (allowed to be watched):
    the traffic panel refuses it, whatever --allow-remote-attach says."""
    settings = in_process_settings(start_core=False, allow_remote_attach=True, attach_interval=0.25,
                                   attach=[f"apache=http://127.0.0.1:{event_apache}/server-status",
                                           # not a loopback address by the rule; refused at once here
                                           "far=apache+http://0.0.0.0:9/server-status"])
    app = create_app(settings)
    with TestClient(app, base_url=BASE) as client:
        d = app.state.dashboard
        assert d.core is None and not d.sampler.tasks  # no embedded core, no sampler
        wait_for(lambda: all(s.frame is not None for s in d.sources.sources), what="both polled")
        names = [s["name"] for s in client.get("/api/sources").json()["sources"]]
        assert names == ["apache", "far"]
        far = client.get("/api/sources/far").json()
        assert far["traffic_target"] is None and not far["frame"]["ok"]
        assert far["frame"]["error"] in far["insight"]["headline"]  # the page says why it shows nothing
        r = client.post("/api/traffic", json={"pattern": "steady", "source": "far", "params": {"duration": 1}})
        assert r.status_code == 422 and "loopback" in r.json()["detail"]
        r = client.post("/api/traffic", json={"pattern": "steady", "source": "core"})
        assert r.status_code == 422 and "no embedded core" in r.json()["detail"]
        page = client.get("/").text
        assert 'id="scoreboard"' not in page and 'data-source="far"' in page
        assert "refused: not on loopback" in page
        metrics = client.get("/metrics").text
        assert 'mpmlab_source_up{kind="apache",source="far"} 0.0' in metrics
        runner = d.traffic.pid
    assert not pid_alive(runner)


# -- configuration: file + environment through the real CLI ---------------------------------------------
def test_config_precedence_through_the_cli(tmp_path, monkeypatch):
    import mpmlab.main
    from mpmcore import cli

    conf = tmp_path / "mpmlab.toml"
    conf.write_text('port = 8101\nmpm = "worker"\nattach_interval = 0.5\nfps = 10\n'
                    'attach = ["a=http://127.0.0.1:1/server-status"]\n[directives]\nMaxRequestWorkers = 64\n')
    seen = {}
    monkeypatch.setattr(mpmlab.main, "run_dashboard", lambda args: seen.update(vars(args)) or 0)
    for k in list(os.environ):
        if k.startswith("MPMLAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MPMLAB_PORT", "8102")
    monkeypatch.setenv("MPMLAB_MPM", "prefork")
    monkeypatch.setenv("MPMLAB_SET", "KeepAliveTimeout=3")
    # no subcommand: `mpmlab --attach ...` is the dashboard
    assert cli.main(["--config-file", str(conf), "--port", "8000", "--attach", "b=http://127.0.0.1:2/server-status",
                     "--set", "MaxRequestWorkers=32"]) == 0
    assert seen["port"] == 8000  # CLI beats env, even at the built-in default's value
    assert seen["mpm"] == "prefork"  # env beats file
    assert seen["attach_interval"] == 0.5 and seen["fps"] == 10.0  # file beats default
    assert seen["attach"] == ["b=http://127.0.0.1:2/server-status"]  # CLI replaces the file's list
    assert sorted(seen["set"]) == ["KeepAliveTimeout=3", "MaxRequestWorkers=32"]
    assert seen["config_sources"]["port"] == "cli" and seen["config_sources"]["mpm"] == "env MPMLAB_MPM"
    # a bad value stops the start with the name of where it came from: exit 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPMLAB_")}
    r = subprocess.run([sys.executable, "-m", "mpmcore.cli", "--config-file", str(conf)], cwd=str(ROOT),
                       env=dict(env, MPMLAB_ATTACH_INTERVAL="99"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "MPMLAB_ATTACH_INTERVAL" in r.stderr and "between 0.1 and 60" in r.stderr


def test_no_core_attach_only_as_a_user_starts_it(tmp_path, event_apache):
    """`MPMLAB_PORT=... mpmlab --no-core --config-file f.toml` (attach list in the file): the dashboard
    watches Apache alone; SIGTERM stops it and its traffic runner."""
    port = free_port()
    conf = tmp_path / "attach.toml"
    conf.write_text(f'attach = ["apache=http://127.0.0.1:{event_apache}/server-status"]\nattach_interval = 0.5\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPMLAB_")}
    log = open(tmp_path / "dash.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mpmcore.cli", "--no-core", "--config-file", str(conf)],
                            cwd=str(ROOT), env=dict(env, MPMLAB_PORT=str(port)), stdout=log, stderr=subprocess.STDOUT)
    try:
        def sources():
            assert proc.poll() is None, (tmp_path / "dash.log").read_text()
            try:
                st, _, body = http_get(port, "/api/sources", timeout=2)
            except OSError:
                return None
            s = json.loads(body)["sources"] if st == 200 else []
            return s if s and s[0]["frame"] and s[0]["frame"]["ok"] else None

        srcs = wait_for(sources, timeout=30, interval=0.2, what="the attach-only dashboard")
        assert [s["name"] for s in srcs] == ["apache"]
        runner = json.loads(http_get(port, "/api/dashboard")[2])["traffic_runner_pid"]
        assert "attached: apache" in (tmp_path / "dash.log").read_text()
    finally:
        terminate(proc, 30)
        log.close()
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its clean shutdown
    assert "Traceback" not in (tmp_path / "dash.log").read_text()
    wait_for(lambda: not pid_alive(runner), timeout=15, what="the traffic runner to exit")
