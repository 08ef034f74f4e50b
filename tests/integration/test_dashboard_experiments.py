"""The dashboard's experiments API through the real app (lifespan included): a real embedded core,
the real traffic runner, a real run store in tmp_path, a short experiment run by the engine's runner
against the core (its own core processes, 1 s each), the record button recording the live core.
Errors: an unknown run is 404 with a message, a second run while one runs is 409, a bad target 422,
a store file that is not a run store gives 503 with the store's message while the rest runs."""

from __future__ import annotations

import json
import struct

import pytest
from conftest import wait_for
from dashboard_fixtures import BASE, assert_core_gone, in_process_settings
from experiment_fixtures import user_plans_dir
from fastapi.testclient import TestClient

from mpmcore.experiments.store import RunStore
from mpmlab.main import create_app
from mpmlab.services.experiments import PATTERNS_MARK

QUICK = """
name = "ui-quick"
title = "A quick test plan"
description = "Two MPMs of the core, one second each."
targets = ["core:worker", "core:event"]
rounds = 1
[budget]
slots = 8
processes = 2
[[stage]]
name = "steady"
duration = "1s"
  [[stage.pattern]]
  pattern = "steady"
  clients = 2
"""


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    settings = in_process_settings(mpm="event", runs_db=str(tmp / "runs.sqlite3"))
    app = create_app(settings)
    with user_plans_dir(tmp, {"ui-quick": QUICK, "broken": "name = [\n"}):
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            wait_for(lambda: d.sampler.summary is not None, timeout=10, what="the first summary")
            pids = [d.core.pid, d.traffic.pid, client.get("/api/status").json()["core"]["pid"]]
            yield client, d
        assert_core_gone(settings.core_listen, pids)


def test_lists_builtin_and_user_plans(dash):
    client, _ = dash
    ex = client.get("/api/experiments").json()
    names = {p["name"]: p for p in ex["plans"]}
    assert "mixed" in names and "ui-quick" in names
    assert names["mixed"]["origin"] == "built-in" and names["ui-quick"]["origin"].endswith("ui-quick.toml")
    quick = {t["name"]: t for t in names["ui-quick"]["targets"]}
    assert quick["core:worker"]["planned"] and quick["core:worker"]["available"]
    assert not quick["core:prefork"]["planned"]  # offered beside the plan's own
    # the broken file is listed with its error, the rest is served
    assert any("broken.toml" in p["error"] for p in ex["problems"]), ex["problems"]
    assert ex["store_error"] is None and ex["state"]["running"] is False


def test_bad_calls_get_clear_errors(dash):
    client, _ = dash
    for method, path in (("GET", "/api/runs/99999"), ("DELETE", "/api/runs/99999"), ("GET", "/runs/99999"),
                         ("GET", "/api/runs/99999/timeline"), ("GET", "/runs/99999/replay")):
        r = client.request(method, path)
        assert r.status_code == 404 and "no run 99999" in r.json()["detail"], (path, r.text)
    r = client.post("/api/experiments/no-such-plan/run", json={})
    assert r.status_code == 404 and "no-such-plan" in r.json()["detail"]
    r = client.post("/api/experiments/ui-quick/run", json={"targets": ["core:bogus"]})
    assert r.status_code == 422 and "core:bogus" in r.json()["detail"], r.text
    r = client.post("/api/experiments/ui-quick/run", json={"rounds": 0})
    assert r.status_code == 422
    r = client.post("/api/experiments/stop")
    assert r.status_code == 409 and "no experiment" in r.json()["detail"]
    assert client.post("/api/record/stop").status_code == 409


def test_run_an_experiment_then_read_replay_delete_it(dash):
    client, d = dash
    r = client.post("/api/experiments/ui-quick/run", json={"targets": ["core:event", "core:worker"]})
    assert r.status_code == 202, r.text
    try:
        second = client.post("/api/experiments/mixed/run", json={})
        assert second.status_code == 409 and "already running" in second.json()["detail"], second.text
        # progress goes through the targets, then the run ends
        seen = set()

        def done() -> dict | None:
            st = client.get("/api/experiments/progress").json()
            if st["progress"]:
                seen.add(st["progress"]["target"])
            return st if not st["running"] else None
        st = wait_for(done, timeout=90, interval=0.2, what="the experiment to end")
    finally:
        d.experiments.stop()
        d.experiments.wait(60)
    assert st["status"] == "complete", st
    assert seen & {"core:event", "core:worker"}, seen
    run_id = st["run_ids"][0]
    runs = client.get("/api/runs").json()
    assert runs[0]["id"] == run_id and runs[0]["status"] == "complete" and runs[0]["name"] == "ui-quick"
    run = client.get(f"/api/runs/{run_id}").json()
    assert {t["target"] for t in run["targets"]} == {"core:event", "core:worker"}
    assert all(t["config"]["settings"] for t in run["targets"])
    # the compare view: one row per target, its configuration, the exports
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200 and 'data-target="core:event"' in page.text and "MaxRequestWorkers" in page.text
    assert client.get(f"/runs/{run_id}/export/report.html").text.lstrip().lower().startswith("<!doctype html")
    assert client.get(f"/runs/{run_id}/export/run.json").json()["meta"]["id"] == run_id
    assert client.get(f"/runs/{run_id}/export/csv").content[:2] == b"PK"
    assert client.get(f"/runs/{run_id}/export/nope").status_code == 404
    # the replay's reads: the timeline, frame batches, the frame at t
    tl = client.get(f"/api/runs/{run_id}/timeline?targets=core:event").json()
    assert [t["target"] for t in tl["targets"]] == ["core:event"]
    tt = tl["targets"][0]
    assert tt["frame_times"] and tt["samples"] and any(m["kind"] == "stage" for m in tt["marks"])
    blob = client.get(f"/api/runs/{run_id}/targets/{tt['id']}/frames?t0=0&t1=60").content
    frames = parse_batch(blob)
    assert [t for t, _ in frames] == tt["frame_times"][:len(frames)]
    t = tt["frame_times"][len(tt["frame_times"]) // 2]
    one = client.get(f"/api/runs/{run_id}/targets/{tt['id']}/frame?t={t + 0.001}")
    assert one.status_code == 200 and one.content == dict(frames)[t]
    assert client.get(f"/api/runs/{run_id}/targets/{tt['id']}/frame?t=0").status_code in (200, 404)
    assert client.get(f"/api/runs/{run_id}/timeline?targets=nginx").status_code == 404
    assert client.get(f"/api/runs/{run_id}/targets/999999/frames").status_code == 404
    # the pages render
    assert client.get(f"/runs/{run_id}/replay?targets=core:event,core:worker").status_code == 200
    assert 'data-run="%d"' % run_id in client.get("/experiments").text
    # export as one file, import it back: a new run with the same frames
    bundle = client.get(f"/runs/{run_id}/export/bundle")
    assert bundle.status_code == 200 and "attachment" in bundle.headers["content-disposition"]
    r = client.post("/api/runs/import", files={"file": ("run.mpmlab-run", bundle.content)})
    assert r.status_code == 201, r.text
    copy = r.json()["id"]
    assert copy != run_id and r.json()["targets"] == runs[0]["targets"]
    tl2 = client.get(f"/api/runs/{copy}/timeline?targets=core:event").json()["targets"][0]
    assert tl2["frame_times"] == tt["frame_times"]
    bad = client.post("/api/runs/import", files={"file": ("notes.txt", b"not a bundle")})
    assert bad.status_code == 422 and "notes.txt" in bad.json()["detail"], bad.text
    page = client.post("/ui/runs/import", files={"file": ("run.mpmlab-run", bundle.content)})
    assert page.status_code == 200 and 'id="runs-imported"' in page.text
    # delete
    assert client.delete(f"/api/runs/{copy}").status_code == 204
    assert client.delete(f"/api/runs/{run_id}").status_code == 204
    assert client.get(f"/api/runs/{run_id}").status_code == 404


def parse_batch(blob: bytes) -> list[tuple[float, bytes]]:
    magic, n = struct.unpack_from("<II", blob)
    assert magic == 0x5250
    out, o = [], 8
    for _ in range(n):
        t, length = struct.unpack_from("<dI", blob, o)
        out.append((t, blob[o + 12:o + 12 + length]))
        o += 12 + length
    assert o == len(blob)
    return out


def test_record_the_live_session(dash):
    client, d = dash
    r = client.post("/api/record")
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    try:
        assert client.post("/api/record").status_code == 409
        wait_for(lambda: client.get("/api/record").json()["frames"] >= 3, timeout=10, interval=0.1,
                 what="frames of event recorded")
        # an MPM switch while recording is marked, and traffic starting
        assert client.post("/api/mpm", json={"mpm": "worker"}).status_code == 200
        r = client.post("/api/traffic", json={"pattern": "steady", "params": {"clients": 1, "duration": 5}})
        assert r.status_code == 201, r.text
        wait_for(lambda: (s := client.get("/api/record").json())["samples"] >= 3 and s["frames"] >= 10,
                 timeout=20, interval=0.2, what="frames and samples recorded")
        # the run shows as running while it records, and cannot be deleted then
        assert client.get(f"/api/runs/{run_id}").json()["meta"]["status"] == "running"
        assert client.delete(f"/api/runs/{run_id}").status_code == 409
    finally:
        stop = client.post("/api/record/stop")
        client.post("/api/traffic/stop-all")
        client.post("/api/mpm", json={"mpm": "event"})
    assert stop.status_code == 200 and stop.json()["last_run_id"] == run_id
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["meta"]["kind"] == "recording" and run["meta"]["status"] == "complete"
    tl = client.get(f"/api/runs/{run_id}/timeline").json()["targets"][0]
    assert len(tl["frame_times"]) >= 10 and len(tl["samples"]) >= 3
    assert any(m["kind"] == "switch" and "worker" in m["label"] for m in tl["marks"]), tl["marks"]
    assert any(m["label"] == "traffic +steady" for m in tl["marks"]), tl["marks"]
    # the grid's pattern table, for the replay's "color by traffic pattern"
    tables = [json.loads(m["label"].removeprefix(PATTERNS_MARK)) for m in tl["marks"]
              if m["label"].startswith(PATTERNS_MARK)]
    assert tables and "steady" in tables[-1], tl["marks"]
    # the master's error_log as it was written: the switch's graceful restart is in it
    assert any("graceful" in line["text"].lower() or "worker" in line["text"] for line in tl["logs"]), tl["logs"]
    page = client.get(f"/runs/{run_id}")  # a recording has a compare view like any run
    assert page.status_code == 200 and 'data-target="core:event"' in page.text
    # the frames are the live grid's: magic, version, and the MPMs it went through
    store = RunStore(d.experiments.path)
    try:
        frames = store.frames(tl["id"])
    finally:
        store.close()
    assert all(f.grid[0] == 0x4D and f.grid[1] == 1 for f in frames)
    assert {f.grid[2] for f in frames} >= {1, 2}  # worker (1) and event (2) both recorded
    assert len(frames) / max(frames[-1].t, 0.1) <= 11  # about 10 frames a second at most


def test_run_all_claims_then_stop(dash):
    client, d = dash
    r = client.post("/api/claims/run")
    assert r.status_code == 202, r.text
    try:
        assert len(r.json()["plans"]) == 9 and r.json()["plans"][0] == "claim-prefork-faster-single"
        assert client.post("/api/claims/run").status_code == 409
        assert client.post("/api/experiments/stop").json()["status"] == "stopping"
        st = wait_for(lambda: (s := client.get("/api/experiments/progress").json())["running"] is False and s,
                      timeout=60, interval=0.2, what="the suite to stop")
    finally:
        d.experiments.stop()
        d.experiments.wait(60)
    assert st["status"] == "stopped" and st["plan_index"] == 0, st  # the first plan's run, no other
    for run_id in st["run_ids"]:
        assert client.get(f"/api/runs/{run_id}").json()["meta"]["status"] in ("stopped", "failed")
    claims = client.get("/api/claims").json()
    assert [c["number"] for c in claims] == list(range(1, 10))
    # the claims page's fragment, refreshed when the progress poll says the run ended
    assert client.get("/ui/claims").text.count('class="card claim ') == 9
    assert client.get("/ui/experiments/progress").headers["HX-Trigger"] == "experiment-ended"
    # the ended poll refreshes the stored runs out of band only on the page that lists them
    on = {page: client.get("/ui/experiments/progress", headers={"HX-Request": "true", "HX-Current-URL": BASE + page})
          for page in ("/experiments", "/claims")}
    assert 'id="runs"' in on["/experiments"].text and 'hx-swap-oob="true"' in on["/experiments"].text
    assert 'id="runs"' not in on["/claims"].text, on["/claims"].text


def test_a_foreign_store_file_is_reported_not_fatal(tmp_path):
    bad = tmp_path / "not-a-store.sqlite3"
    bad.write_bytes(b"this is not a database, just a text file\n" * 10)
    settings = in_process_settings(mpm="event", runs_db=str(bad))
    app = create_app(settings)
    with TestClient(app, base_url=BASE) as client:
        d = app.state.dashboard
        pids = [d.core.pid, d.traffic.pid]
        r = client.get("/api/runs")
        assert r.status_code == 503 and str(bad) in r.json()["detail"], r.text
        assert "\n" not in r.json()["detail"]
        assert client.post("/api/record").status_code == 503
        page = client.get("/experiments")
        assert page.status_code == 200 and 'id="store-error"' in page.text
        assert client.get("/api/status").status_code == 200  # the rest of the dashboard runs
    assert_core_gone(settings.core_listen, pids)
    assert bad.read_bytes().startswith(b"this is not a database")  # nothing written to it


def test_kill_9_mid_recording_then_restart(tmp_path):
    """`mpmlab dashboard` SIGKILLed while it records: started again on the same store, the run is
    listed as incomplete, with the frames and samples it handed over (once a second) before."""
    import signal

    from dashboard_fixtures import DashboardProcess

    db = tmp_path / "runs.sqlite3"
    d = DashboardProcess(tmp_path, extra_args=["--runs-db", str(db)])
    try:
        run_id = d.api("/api/record", method="POST", body={})["run_id"]
        wait_for(lambda: d.api("/api/record")["samples"] >= 3, timeout=20, interval=0.2, what="3 s recorded")
        before = d.api(f"/api/runs/{run_id}/timeline")["targets"][0]  # what the store holds now
    finally:
        d.stop(sig=signal.SIGKILL)
    d.assert_clean(timeout=25)
    again = DashboardProcess(tmp_path, extra_args=["--runs-db", str(db)])
    try:
        (meta,) = again.api("/api/runs")
        assert meta["id"] == run_id and meta["status"] == "incomplete", meta
        tl = again.api(f"/api/runs/{run_id}/timeline")["targets"][0]
        assert tl["status"] == "incomplete"
        # everything handed over before the kill is there (and at most ~2 s more than we read)
        assert len(tl["frame_times"]) >= len(before["frame_times"]) >= 1
        assert len(tl["samples"]) >= len(before["samples"]) >= 2
        assert tl["duration"] <= before["duration"] + 3
        assert again.api("/api/record")["recording"] is False
    finally:
        again.stop()
    again.assert_clean()
