"""The dashboard's API, fragments and websockets through the real app (lifespan included) with a
real embedded core on a free port, and the real traffic runner (targets: the core, on loopback)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys

import pytest
from conftest import ROOT, wait_for
from dashboard_fixtures import BASE, WS, assert_core_gone, in_process_settings, ws_session
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from mpmlab.main import create_app
from mpmlab.settings import DashboardSettings

EVIL = {"Origin": "http://evil.example"}


@pytest.fixture(scope="module")
def dash():
    settings = in_process_settings(mpm="event")
    app = create_app(settings)
    with TestClient(app, base_url=BASE) as client:
        d = app.state.dashboard
        wait_for(lambda: d.sampler.summary is not None, timeout=10, what="the first summary")
        pids = [d.core.pid, d.traffic.pid, client.get("/api/status").json()["core"]["pid"]]
        yield client, d
    assert_core_gone(settings.core_listen, pids)


def scoreboard(client):
    return client.get("/api/scoreboard").json()


def back_to_event(client) -> None:
    """The module's one dashboard back on event: in a finally, so that a failed switch test does not
    leave the tests after it on another MPM."""
    if client.get("/api/mpm").json()["mpm"] != "event":
        r = client.post("/api/mpm", json={"mpm": "event"})
        assert r.status_code == 200, r.text
    wait_for(lambda: scoreboard(client)["mpm"] == "event", timeout=20, what="back to event")


def test_status_scoreboard_processes(dash):
    client, d = dash
    st = client.get("/api/status").json()
    assert st["core"]["mpm"] == "event" and st["core"]["listen"] == d.settings.core_listen
    assert st["insight"]["headline"]
    sb = wait_for(lambda: (s := scoreboard(client))["state_counts"]["_"] >= 75 and s, what="75 idle threads")
    assert sb["max_request_workers"] == 400 and sb["threads_per_child"] == 25
    procs = client.get("/api/processes").json()["processes"]
    assert len(procs) >= 3 and all(p["mpm"] == "event" and p["accepting"] for p in procs)
    slot = client.get("/api/slots/0/0").json()
    assert slot["pid"] == procs[0]["pid"] and slot["status"] in "_SRWKC"
    assert client.get("/api/slots/9999/0").status_code == 404
    assert client.get("/openapi.json").json()["paths"]["/api/mpm"]


def test_page_and_fragments(dash):
    client, _ = dash
    page = client.get("/").text
    assert '<canvas id="scoreboard"' in page and 'ws-connect="/ws/live"' in page
    for letter in "_SRWKLDCGI.":
        assert f'data-letter="{letter}"' in page
    assert "/server-status?auto" in page and "MaxRequestWorkers" in page
    frag = client.get("/ui/directives").text
    assert 'name="AsyncRequestWorkerFactor"' in frag and "<html" not in frag
    form = client.get("/ui/traffic/form", params={"pattern": "slowloris"}).text
    assert 'name="connections"' in form and 'name="target"' not in form


def test_server_status_proxy(dash):
    client, _ = dash
    r = client.get("/api/core/server-status?auto")
    assert r.status_code == 200 and "ServerMPM: event" in r.text and "Scoreboard: " in r.text


def test_bad_directive_is_422_naming_it(dash):
    client, _ = dash
    r = client.post("/api/directives", json={"settings": {"MaxRequestWorkers": "-5"}})
    assert r.status_code == 422 and r.json()["directive"] == "MaxRequestWorkers"
    r = client.post("/api/directives", json={"settings": {"MaxClientz": "5"}})
    assert r.status_code == 422 and r.json()["directive"] == "MaxClientz"
    r = client.post("/api/directives", json={"settings": {"ServerLimit": "999"}})  # beyond the scoreboard
    assert r.status_code == 422 and r.json()["directive"] == "ServerLimit"
    # the htmx form: every bad field gets its error beside it, nothing is applied
    gen = client.get("/api/mpm").json()["generation"]
    r = client.post("/ui/directives", data={"MaxRequestWorkers": "lots", "KeepAliveTimeout": "-1", "Timeout": "60"})
    assert r.status_code == 422
    assert 'id="error-MaxRequestWorkers"' in r.text and 'id="error-KeepAliveTimeout"' in r.text
    assert "error-Timeout" not in r.text
    assert client.get("/api/mpm").json()["generation"] == gen
    r = client.post("/api/httpd-conf", json={"text": "<IfModule mpm_event_module>\n  ThreadsPerChild zero\n</IfModule>"})
    assert r.status_code == 422 and r.json()["directive"] == "ThreadsPerChild"


def test_cross_origin_control_is_refused(dash):
    client, _ = dash
    gen = client.get("/api/mpm").json()["generation"]
    for method, path, body in [("POST", "/api/mpm", {"mpm": "worker"}),
                               ("POST", "/api/directives", {"settings": {"KeepAliveTimeout": "3"}}),
                               ("POST", "/api/traffic", {"pattern": "steady", "params": {}}),
                               ("POST", "/api/traffic/stop-all", None)]:
        r = client.request(method, path, json=body, headers=EVIL)
        assert r.status_code == 403, (path, r.text)
        assert "cross-origin" in r.json()["detail"]
    r = client.post("/ui/mpm", data={"mpm": "worker"}, headers={"Origin": "null"})
    assert r.status_code == 403
    r = client.post("/ui/mpm", data={"mpm": "worker"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert client.get("/api/mpm").json()["generation"] == gen
    # websockets check the Origin too (cross-site websocket hijacking)
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(WS + "/ws/scoreboard", headers=EVIL) as ws:
        ws.receive()
    # DNS rebinding: a loopback-bound dashboard answers to loopback names only
    assert client.get("/api/status", headers={"Host": "evil.example:8000"}).status_code == 403
    # the same origin passes
    r = client.post("/api/directives/check", json={"settings": {"MaxRequestWorkers": "110"}},
                    headers={"Origin": BASE})
    assert r.status_code == 200 and r.json()["warnings"]


def test_token_protects_control(dash):
    client, d = dash
    d.settings.token = "s3cret-token"
    try:
        assert client.post("/api/restart", json={"graceful": True}).status_code == 403
        assert client.post("/api/traffic/stop-all", headers={"Authorization": "Bearer wrong-token"}).status_code == 403
        r = client.post("/api/traffic/stop-all", headers={"X-Mpmlab-Token": "s3cret-token"})
        assert r.status_code == 200
        assert client.get("/api/status").status_code == 200  # reading needs no token
        r = client.get("/?token=s3cret-token", follow_redirects=False)
        assert r.status_code == 303 and "mpmlab_token_8000=s3cret-token" in r.headers["set-cookie"]
    finally:
        d.settings.token = None
        client.cookies.clear()


def test_refuses_non_loopback_without_token():
    with pytest.raises(ValueError, match="token"):
        create_app(DashboardSettings(host="0.0.0.0"))
    r = subprocess.run([sys.executable, "-m", "mpmcore.cli", "dashboard", "--host", "0.0.0.0", "--port", "1"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--token" in r.stderr


def test_directives_apply_with_adjustment_warning(dash):
    client, _ = dash
    gen = client.get("/api/mpm").json()["generation"]
    r = client.post("/api/directives", json={"settings": {"MaxRequestWorkers": 110}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generation"] == gen + 1
    assert any("not an integer multiple of ThreadsPerChild" in w for w in body["warnings"])
    assert client.get("/api/directives").json()["directives"][[x["name"] for x in client.get("/api/directives").json()["directives"]].index("MaxRequestWorkers")]["value"] == 100
    wait_for(lambda: scoreboard(client)["max_request_workers"] == 100, what="MaxRequestWorkers 100 in the scoreboard")
    # the htmx form shows the warning, and the conf paste applies too
    r = client.post("/ui/httpd-conf", data={"text": "<IfModule mpm_event_module>\nMaxRequestWorkers 400\n</IfModule>\n"
                                                    "<IfModule mpm_prefork_module>\nMaxRequestWorkers 1\n</IfModule>"})
    assert r.status_code == 200 and "applied 1 directive" in r.text
    wait_for(lambda: scoreboard(client)["max_request_workers"] == 400, what="MaxRequestWorkers back to 400")


def test_switch_mpm_and_back(dash):
    client, _ = dash
    try:
        gen = client.get("/api/mpm").json()["generation"]
        r = client.post("/api/mpm", json={"mpm": "worker"})
        assert r.status_code == 200 and r.json()["mpm"] == "worker" and r.json()["generation"] == gen + 1
        wait_for(lambda: scoreboard(client)["mpm"] == "worker", what="the scoreboard to show worker")
        wait_for(lambda: all(p["mpm"] == "worker" for p in client.get("/api/processes").json()["processes"]),
                 timeout=20, what="old event children to finish")
        wait_for(lambda: "switched: generation" in "\n".join(client.get("/api/log").json()["lines"]),
                 what="the switch in the error log (followed every 250 ms)")
        assert client.post("/api/mpm", json={"mpm": "apache1"}).status_code == 422
        r = client.post("/ui/mpm", data={"mpm": "event"})
        assert r.status_code == 200 and 'id="switch-event" class="on"' in r.text and 'hx-swap-oob="true"' in r.text
        wait_for(lambda: scoreboard(client)["mpm"] == "event", what="back to event")
    finally:
        back_to_event(client)


def test_graceful_tile_counts_the_G_the_grid_shows(dash):
    """During a switch, old children finishing their connections show G in the grid; mod_status'
    GracefulWorkers skips stopping children (0, as Apache's), so the tile and the chart count the
    grid's G and say what mod_status says."""
    client, d = dash
    port = int(d.settings.core_listen.rsplit(":", 1)[1])
    try:
        held = []
        try:
            for _ in range(3):  # half-sent requests: each holds an old worker in R through the switch
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            wait_for(lambda: scoreboard(client)["state_counts"]["R"] >= 3, what="3 R slots")
            assert client.post("/api/mpm", json={"mpm": "worker"}).status_code == 200

            def tile(st: dict, tile_id: str) -> dict:
                return next(t for t in st["tiles"] if t["id"] == tile_id)

            def shown():
                st = client.get("/api/status").json()
                g, graceful = st["summary"]["state_counts"]["G"], st["summary"]["graceful"]
                t = tile(st, "tile-graceful")
                return (graceful, t, st) if g >= 3 and int(t["value"]) >= 3 else None
            graceful, t, st = wait_for(shown, timeout=15, interval=0.2, what="the old slots as G, on the tile")
            assert graceful == 0 and "GracefulWorkers 0" in t["note"], (graceful, t)
            # the connections the old event children still hold are counted under worker too
            conns = tile(st, "tile-connections")
            assert int(conns["value"]) >= 3 and "held by stopping event children" in conns["note"], conns
            # and the page shows the same tile
            assert 'id="tile-graceful"><span>graceful</span><b>' in client.get("/").text
            point = wait_for(lambda: [p for p in client.get("/api/history?seconds=3").json()["points"]
                                      if p["graceful"] >= 3], timeout=5, what="a chart point with the G slots")
            assert point[-1]["busy"] is not None
        finally:
            for s in held:
                s.close()
        wait_for(lambda: all(p["mpm"] == "worker" for p in client.get("/api/processes").json()["processes"]),
                 timeout=20, what="old event children gone once their connections closed")
        assert client.post("/api/mpm", json={"mpm": "event"}).status_code == 200
        wait_for(lambda: scoreboard(client)["mpm"] == "event", what="back to event")
    finally:
        back_to_event(client)


def test_scoreboard_websocket_frames(dash):
    client, _ = dash
    with ws_session(client, "/ws/scoreboard", headers={"Origin": BASE}) as ws:
        hello = json.loads(ws.receive_text())
        assert hello["type"] == "hello" and hello["grid_hz"] == 20
        got_frame = got_summary = None
        ready = mpm_id = 0
        # StartServers 3 x 25 threads: 75 READY once every child is up. The first frame is the last
        # one the sampler offered, which after the switch tests before this one may still be a
        # worker frame, and on a loaded machine the last child may not be up yet: read on (at 20
        # frames/s, 200 messages are ~10 s) until a frame shows event with all of them
        for _ in range(200):
            msg = ws.receive()
            if msg.get("bytes"):
                got_frame = msg["bytes"]
                mpm_id = got_frame[2]
                rows, cols = struct.unpack_from("<HH", got_frame, 20)
                ready = got_frame[28:28 + rows * cols].count(2)
            elif msg.get("text"):
                got_summary = json.loads(msg["text"])
            if got_frame and got_summary and ready >= 75 and mpm_id == 2:
                break
        assert got_frame and got_summary, ("no grid frame and summary in 200 messages", got_frame, got_summary)
        magic, version, mpm, _flags, _seq, _t_ms, _gen, rows, cols, tpc, _np = struct.unpack_from("<BBBBIdIHHHH", got_frame)
        assert (magic, version, mpm) == (0x4D, 1, 2) and cols == tpc == 25 and rows >= 16
        assert ready >= 75, ready  # READY
        assert got_summary["type"] == "summary" and got_summary["mpm"] == "event" and got_summary["insight"]
    with ws_session(client, "/ws/live") as ws:  # htmx fragments
        # first the error log's last lines, replacing the page's: a reconnecting page misses none
        log = ws.receive_text()
        assert log.startswith('<div id="log-lines" hx-swap-oob="innerHTML">'), log[:200]
        assert "resuming normal operations" in log
        html = ws.receive_text()
        assert 'id="insight" hx-swap-oob' in html and 'id="procs"' in html


def test_traffic_start_retune_stop(dash):
    client, d = dash
    cat = client.get("/api/traffic/patterns").json()
    assert {"steady", "burst", "browsers", "ajax", "slowloris", "slow-post", "slow-read", "cpu", "io"} <= set(cat)
    assert all(p["name"] != "target" for p in cat["steady"]["params"])
    assert set(client.get("/api/traffic/presets").json()) == {"browsers", "slowloris", "ajax", "one-at-a-time"}
    # the target is always the embedded core
    r = client.post("/api/traffic", json={"pattern": "steady", "params": {"target": "http://example.com/"}})
    assert r.status_code == 422 and "embedded server" in r.json()["detail"]
    r = client.post("/api/traffic", json={"pattern": "io", "params": {"rate": -1}})
    assert r.status_code == 422 and "rate" in r.json()["detail"]
    r = client.post("/api/traffic", json={"pattern": "io", "params": {"rate": 40, "ms": 400, "duration": 60}})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    wait_for(lambda: scoreboard(client)["state_counts"]["W"] >= 3, what="W slots from the io pattern")
    # the grid knows which pattern holds the slots
    wait_for(lambda: "io" in (d.sampler.grid.patterns if d.sampler.grid else []), what="the io pattern in the grid")
    r = client.patch(f"/api/traffic/{pid}", json={"params": {"rate": 5}})
    assert r.status_code == 200 and r.json()["params"]["rate"] == 5
    assert client.patch(f"/api/traffic/{pid}", json={"params": {"model": "open"}}).status_code == 422
    assert client.get("/api/traffic").json()["patterns"][0]["target"].startswith(f"http://{d.settings.core_listen}")
    wait_for(lambda: any("io" in (p.get("traffic") or {}) for p in client.get("/api/history").json()["points"]),
             what="io latency in the chart history")
    r = client.delete(f"/api/traffic/{pid}")
    assert r.status_code == 200 and r.json()["state"] == "finished"
    assert client.delete("/api/traffic/nope-1").status_code == 404
    # a preset through the htmx route
    r = client.post("/ui/traffic/preset/ajax")
    assert r.status_code == 200 and "ajax-" in r.text and "stop" in r.text
    r = client.post("/ui/traffic/stop-all")
    assert r.status_code == 200 and "stopped" in r.text
