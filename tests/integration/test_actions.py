"""Each user action through both of its doors, the JSON API and the page's htmx route, against one real
dashboard (the app with its lifespan, a real embedded core, the real traffic runner): the same action
must leave the core in the same state, read back through the API, and refuse the same bad input with
the same message (mpmlab.services.actions is the one implementation both call)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from dashboard_fixtures import BASE, assert_core_gone, in_process_settings
from fastapi.testclient import TestClient

from mpmlab.dashboard import Dashboard
from mpmlab.main import create_app

Dash = tuple[TestClient, Dashboard]


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    settings = in_process_settings(mpm="event")
    app = create_app(settings)
    with TestClient(app, base_url=BASE) as client:
        d = app.state.dashboard
        wait_for(lambda: d.sampler.summary is not None, timeout=10, what="the first summary")
        assert d.core is not None
        pids = [d.core.pid, d.traffic.pid, client.get("/api/status").json()["core"]["pid"]]
        yield client, d
    assert_core_gone(settings.core_listen, [p for p in pids if p])


# -- reading the outcome back through the API ---------------------------------------------------------
def generation(client: TestClient) -> int:
    g: int = client.get("/api/mpm").json()["generation"]
    return g


def running_mpm(client: TestClient) -> str:
    m: str = client.get("/api/mpm").json()["mpm"]
    return m


def directive(client: TestClient, name: str) -> Any:
    rows = client.get("/api/directives").json()["directives"]
    return next(r["value"] for r in rows if r["name"] == name)


def logged(client: TestClient, text: str) -> None:
    wait_for(lambda: text in "\n".join(client.get("/api/log").json()["lines"]), timeout=10,
             what=f"{text!r} in the error log")


def found(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text[:800]!r}"
    return m.group(1)


def page_form(client: TestClient, **changes: str) -> dict[str, str]:
    """The directives form as the browser posts it: every directive of the running MPM at its
    current value (as the form shows it), with ``changes``."""
    frag = client.get("/ui/directives").text
    form = {m.group(1): html.unescape(m.group(2)) for m in re.finditer(r'<input id="d-[^"]+" name="([^"]+)" value="([^"]*)"', frag)}
    for m in re.finditer(r'<select id="d-[^"]+" name="([^"]+)">(.*?)</select>', frag):
        form[m.group(1)] = found(r"<option selected>([^<]*)</option>", m.group(2))
    assert "MaxRequestWorkers" in form and "KeepAlive" in form, frag[:500]
    form.update(changes)
    return form


def page_message(page: str, element_id: str | None = None) -> str:
    """The text of the page's message (its error beside a field with ``element_id``), unescaped."""
    pattern = (rf'id="{element_id}"[^>]*>(.*?)</div>' if element_id
               else r'<div class="msg error"[^>]*>(.*?)</div>')
    m = re.search(pattern, page, re.S)
    assert m, page[:1500]
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip()


def settled(client: TestClient, mpm: str) -> None:
    wait_for(lambda: client.get("/api/scoreboard").json()["mpm"] == mpm, timeout=20, what=f"the scoreboard on {mpm}")


# -- MPM --------------------------------------------------------------------------------------------------
def test_switch_mpm(dash: Dash) -> None:
    client, _ = dash
    try:
        gen = generation(client)
        r = client.post("/api/mpm", json={"mpm": "worker"})
        assert r.status_code == 200, r.text
        assert (running_mpm(client), generation(client)) == ("worker", gen + 1) == (r.json()["mpm"], r.json()["generation"])
        settled(client, "worker")
        r = client.post("/ui/mpm", data={"mpm": "event"})
        assert r.status_code == 200 and 'id="switch-event" class="on"' in r.text, r.text[:500]
        assert (running_mpm(client), generation(client)) == ("event", gen + 2)
        assert f"generation {gen + 2}: switching to event" in r.text
        settled(client, "event")
        # the same bad MPM: refused both ways, nothing restarts
        assert client.post("/api/mpm", json={"mpm": "apache1"}).status_code == 422
        r = client.post("/ui/mpm", data={"mpm": "apache1"})
        assert "unknown MPM 'apache1'" in html.unescape(r.text) and 'class="flash show error"' in r.text
        assert (running_mpm(client), generation(client)) == ("event", gen + 2)
    finally:
        if running_mpm(client) != "event":
            client.post("/api/mpm", json={"mpm": "event"})
        settled(client, "event")


# -- directives -------------------------------------------------------------------------------------------
def test_apply_directives(dash: Dash) -> None:
    client, _ = dash
    try:
        gen = generation(client)
        r = client.post("/api/directives", json={"settings": {"KeepAliveTimeout": "7"}})
        assert r.status_code == 200 and r.json()["generation"] == gen + 1, r.text
        assert (directive(client, "KeepAliveTimeout"), generation(client)) == (7, gen + 1)
        logged(client, f"graceful restart: generation {gen + 1}")
        r = client.post("/ui/directives", data=page_form(client, KeepAliveTimeout="9"))
        assert r.status_code == 200 and f"by graceful restart: generation {gen + 2}" in r.text, r.text[:800]
        assert (directive(client, "KeepAliveTimeout"), generation(client)) == (9, gen + 2)
        logged(client, f"graceful restart: generation {gen + 2}")
        # the hard restart, both ways
        r = client.post("/api/directives", json={"settings": {"KeepAliveTimeout": "6"}, "restart": "hard"})
        assert r.status_code == 200 and r.json()["generation"] == gen + 3, r.text
        logged(client, f"] restart: generation {gen + 3}")
        r = client.post("/ui/directives", data=page_form(client, KeepAliveTimeout="8", restart="hard"))
        assert r.status_code == 200 and f"by hard restart: generation {gen + 4}" in r.text, r.text[:800]
        assert (directive(client, "KeepAliveTimeout"), generation(client)) == (8, gen + 4)
        logged(client, f"] restart: generation {gen + 4}")
    finally:
        client.post("/api/directives", json={"settings": {"KeepAliveTimeout": "5"}})
    assert directive(client, "KeepAliveTimeout") == 5


@pytest.mark.parametrize(("name", "value"), [
    ("MaxRequestWorkers", "-5"),  # refused by the dashboard's validation
    ("ThreadsPerChild", "zero"),
    ("ServerLimit", "999"),  # refused by the master: beyond the scoreboard allocated at start
])
def test_bad_directive_is_refused_the_same_way(dash: Dash, name: str, value: str) -> None:
    client, _ = dash
    gen = generation(client)
    r = client.post("/api/directives", json={"settings": {name: value}})
    assert r.status_code == 422 and r.json()["directive"] == name, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{name}: ")
    r = client.post("/ui/directives", data=page_form(client, **{name: value}))
    assert r.status_code == 422, r.text[:500]
    assert page_message(r.text, f"error-{name}") == detail.removeprefix(f"{name}: ")
    assert generation(client) == gen


def test_check_directives_changes_nothing(dash: Dash) -> None:
    """The page has no check of its own: the action is the API's, and it must not restart."""
    client, _ = dash
    gen = generation(client)
    r = client.post("/api/directives/check", json={"settings": {"MaxRequestWorkers": "110"}})
    assert r.status_code == 200 and any("ThreadsPerChild" in w for w in r.json()["warnings"]), r.text
    assert r.json()["config"]["directives"]["MaxRequestWorkers"] == 100
    r = client.post("/api/directives/check", json={"settings": {"MaxRequestWorkers": "-5"}})
    assert r.status_code == 422 and r.json()["directive"] == "MaxRequestWorkers"
    assert generation(client) == gen and directive(client, "MaxRequestWorkers") == 400


# -- httpd.conf -------------------------------------------------------------------------------------------
def test_httpd_conf(dash: Dash) -> None:
    client, _ = dash
    try:
        gen = generation(client)
        r = client.post("/api/httpd-conf", json={"text": "<IfModule mpm_event_module>\nMaxSpareThreads 200\n</IfModule>"})
        assert r.status_code == 200 and r.json()["applied"] and r.json()["generation"] == gen + 1, r.text
        assert (directive(client, "MaxSpareThreads"), generation(client)) == (200, gen + 1)
        r = client.post("/ui/httpd-conf", data={"text": "<IfModule mpm_event_module>\nMaxSpareThreads 225\n</IfModule>"})
        assert r.status_code == 200 and f"applied 1 directive(s) for event by graceful restart: generation {gen + 2}" in r.text
        assert (directive(client, "MaxSpareThreads"), generation(client)) == (225, gen + 2)
    finally:
        client.post("/api/directives", json={"settings": {"MaxSpareThreads": "250"}})
    assert directive(client, "MaxSpareThreads") == 250


@pytest.mark.parametrize(("text", "name"), [
    # no directive for the running MPM: refused both ways, naming the MPM (it used to restart via the API)
    ("<IfModule mpm_prefork_module>\nMaxRequestWorkers 10\n</IfModule>", "httpd.conf"),
    ("", "httpd.conf"),
    ("MaxRequestWorkers\nThreadsPerChild zero\n", "httpd.conf"),
    ("<IfModule mpm_event_module>\nThreadsPerChild zero\n</IfModule>", "ThreadsPerChild"),
    ("MaxClientz 5", "MaxClientz"),
])
def test_bad_httpd_conf_is_refused_the_same_way(dash: Dash, text: str, name: str) -> None:
    client, _ = dash
    gen = generation(client)
    for apply in (True, False):
        r = client.post("/api/httpd-conf", json={"text": text, "apply": apply})
        assert r.status_code == 422 and r.json()["directive"] == name, r.text
    detail = r.json()["detail"]
    assert detail.count(name) <= 1, detail  # never "X: X: ..."
    if not text:
        assert detail == "the text is empty: paste an httpd.conf or a part of one"
    elif name == "httpd.conf" and "zero" in text:  # several errors: each once, with its line
        assert detail == "2 errors in the text: nothing applied"
        errors = r.json()["errors"]
        assert errors[0] == "line 1: MaxRequestWorkers: missing value" and errors[1].startswith("line 2: ThreadsPerChild: ")
    elif name == "httpd.conf":
        assert "no directive for the event MPM" in detail
    r = client.post("/ui/httpd-conf", data={"text": text})
    assert r.status_code == 422
    assert page_message(r.text, "conf-message") == detail
    if "zero" in text and name == "httpd.conf":
        assert "line 1: MaxRequestWorkers: missing value" in r.text
    assert generation(client) == gen


def test_whole_debian_apache2_conf_applies(dash: Dash) -> None:
    """Debian's apache2.conf with its three MPM blocks: the event block and the core directives are
    applied; the other blocks and the ignored lines are listed with their line numbers."""
    client, _ = dash
    text = (Path(__file__).parent.parent / "data" / "debian-apache2.conf").read_text()
    gen = generation(client)
    try:
        r = client.post("/api/httpd-conf", json={"text": text, "apply": False})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["applied"] is False and body["settings"]["MaxRequestWorkers"] == "150"
        assert {b["directive"] for b in body["other_mpm_blocks"]} == {"<IfModule mpm_prefork_module>",
                                                                      "<IfModule mpm_worker_module>"}
        assert any(i["directive"] == "DefaultRuntimeDir" and i["line"] > 0 for i in body["ignored"])
        assert generation(client) == gen
        r = client.post("/ui/httpd-conf", data={"text": text})
        assert r.status_code == 200 and "by graceful restart" in r.text, r.text
        assert 'id="conf-ignored"' in r.text and "DefaultRuntimeDir" in r.text and "mpm_prefork_module" in r.text
        assert (directive(client, "MaxRequestWorkers"), directive(client, "ThreadsPerChild")) == (150, 25)
        assert generation(client) == gen + 1
    finally:
        client.post("/api/directives", json={"settings": {"MaxRequestWorkers": "400", "ThreadsPerChild": "25",
                                                          "Timeout": "60", "StartServers": "3",
                                                          "MaxSpareThreads": "250", "MinSpareThreads": "75",
                                                          "ThreadLimit": "64"}})


# -- restarts ---------------------------------------------------------------------------------------------
def test_restart(dash: Dash) -> None:
    client, _ = dash
    gen = generation(client)
    for n, (door, kind) in enumerate([("api", "graceful"), ("page", "graceful"), ("api", "hard"), ("page", "hard")], 1):
        if door == "api":
            r = client.post("/api/restart", json={"graceful": kind == "graceful"})
            assert r.status_code == 200 and r.json()["generation"] == gen + n, r.text
        else:
            r = client.post("/ui/restart", data={"kind": kind})
            assert r.status_code == 200 and f"restart: generation {gen + n}" in r.text, r.text
        assert generation(client) == gen + n
        logged(client, f"{'graceful restart' if kind == 'graceful' else '] restart'}: generation {gen + n}")
    settled(client, "event")


# -- traffic ----------------------------------------------------------------------------------------------
def running(client: TestClient) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in client.get("/api/traffic").json()["patterns"] if p["state"] == "running"}


def test_traffic(dash: Dash) -> None:
    client, d = dash
    core = f"http://{d.settings.core_listen}"
    try:
        r = client.post("/api/traffic", json={"pattern": "steady", "params": {"rate": 2, "duration": 120}})
        assert r.status_code == 201, r.text
        by_api = r.json()["id"]
        r = client.post("/ui/traffic/start", data={"pattern": "steady", "rate": "2", "duration": "120"})
        assert r.status_code == 200, r.text[:500]
        by_page = found(r"started (steady-\d+) → core", r.text)
        now = running(client)
        for pid in (by_api, by_page):
            assert now[pid]["pattern"] == "steady" and now[pid]["target"].startswith(core)
            assert now[pid]["params"]["rate"] == 2 and now[pid]["source"] == "core"
        # re-tune: the API one from the page and the page one from the API
        r = client.post(f"/ui/traffic/{by_api}/update", data={"rate": "3"})
        assert r.status_code == 200 and f"re-tuned {by_api}" in r.text, r.text[:500]
        r = client.patch(f"/api/traffic/{by_page}", json={"params": {"rate": 4}})
        assert r.status_code == 200, r.text
        assert client.get(f"/api/traffic/{by_api}").json()["params"]["rate"] == 3
        assert client.get(f"/api/traffic/{by_page}").json()["params"]["rate"] == 4
        # presets, both ways
        r = client.post("/api/traffic/presets/one-at-a-time")
        assert r.status_code == 201, r.text
        preset_api = r.json()["id"]
        r = client.post("/ui/traffic/preset/one-at-a-time")
        assert r.status_code == 200, r.text[:500]
        preset_page = found(r"started (steady-\d+) → core", r.text)
        now = running(client)
        assert now[preset_api]["params"]["clients"] == now[preset_page]["params"]["clients"] == 1
        # stop one each way
        r = client.delete(f"/api/traffic/{by_api}")
        assert r.status_code == 200 and r.json()["state"] == "finished"
        r = client.post(f"/ui/traffic/{by_page}/stop")
        assert r.status_code == 200 and (f"stopped {by_page}" in r.text or f"stopping {by_page}" in r.text)
        # the page's stop answers within its budget; a slower stop finishes in the background
        wait_for(lambda: client.get(f"/api/traffic/{by_page}").json()["state"] == "finished", timeout=10,
                 what=f"{by_page} finished")
        assert set(running(client)) == {preset_api, preset_page}
        # stop-all, both ways
        r = client.post("/ui/traffic/stop-all")
        assert r.status_code == 200 and ("stopped 2 pattern(s)" in r.text or "stopping 2 pattern(s)" in r.text)
        wait_for(lambda: not running(client), timeout=10, what="every pattern stopped")
        client.post("/api/traffic/presets/ajax")
        r = client.post("/api/traffic/stop-all")
        assert r.status_code == 200 and len(r.json()["stopped"]) == 1
        assert not running(client)
    finally:
        client.post("/api/traffic/stop-all")


@pytest.mark.parametrize(("api", "page", "status"), [
    (("POST", "/api/traffic", {"pattern": "steady", "params": {"rate": -1}}),
     ("/ui/traffic/start", {"pattern": "steady", "rate": "-1"}), 422),
    (("POST", "/api/traffic", {"pattern": "steady", "params": {}, "source": "nowhere"}),
     ("/ui/traffic/start", {"pattern": "steady", "source": "nowhere"}), 404),
    (("POST", "/api/traffic/presets/nope", None), ("/ui/traffic/preset/nope", {}), 404),
    (("PATCH", "/api/traffic/steady-999999", {"params": {"rate": 1}}), ("/ui/traffic/steady-999999/update", {"rate": "1"}), 404),
    (("DELETE", "/api/traffic/steady-999999", None), ("/ui/traffic/steady-999999/stop", {}), 404),
])
def test_bad_traffic_is_refused_the_same_way(dash: Dash, api: tuple[str, str, Any], page: tuple[str, dict[str, str]],
                                             status: int) -> None:
    client, _ = dash
    before = set(running(client))
    method, path, body = api
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    r = client.post(page[0], data=page[1])
    assert r.status_code == 422  # the status the page's htmx swaps in
    assert page_message(r.text) == detail
    assert set(running(client)) == before


def test_openapi_documents_every_control_route(dash: Dash) -> None:
    """Every /api route that changes something declares its result's schema and its error body."""
    client, _ = dash
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["ErrorBody"]["properties"]) == {"detail", "directive", "errors"}
    # (the experiments' routes, /api/{experiments,runs,claims,record}, answer 204/409/503 and files:
    # tests/integration/test_dashboard_experiments.py checks them)
    experiments = ("/api/experiments", "/api/runs", "/api/claims", "/api/record")
    control = [(path, method, op) for path, ops in spec["paths"].items() if path.startswith("/api/")
               and not path.startswith(experiments)
               for method, op in ops.items() if method in ("post", "put", "patch", "delete")]
    assert len(control) == 10, [(p, m) for p, m, _ in control]
    for path, method, op in control:
        ok = next(op["responses"][c] for c in ("200", "201") if c in op["responses"])
        schema = ok["content"]["application/json"]["schema"]
        refs = [s["$ref"] for s in schema.get("anyOf", [schema])]
        assert refs and all(r.split("/")[-1] in schemas for r in refs), (path, method, schema)
        for code in ("403", "422") if path != "/api/traffic/stop-all" else ("403", "503"):
            body = op["responses"][code]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, code, body)
    change = schemas["Change"]["properties"]
    assert {"generation", "mpm", "warnings", "config"} <= set(change)
