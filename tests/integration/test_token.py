"""The control token (docs/security.md), end to end: `mpmlab dashboard` in its own process with its
real core, raw HTTP from this test on loopback. By default a random token is made at start and
printed in the URL; every request that is not a read needs it (Bearer, X-Mpmlab-Token, or the
per-port cookie the printed URL sets); `--no-token` opens control; the token stays out of the log."""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, wait_for
from dashboard_fixtures import DashboardProcess

from mpmcore.cli import build_parser
from mpmlab.config_file import apply_defaults
from mpmlab.main import settings_from_args
from mpmlab.settings import DashboardSettings

Reply = tuple[int, http.client.HTTPMessage, bytes]


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None) -> Reply:
    """One request on a new loopback connection, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})} if data is not None else dict(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.msg, r.read()
    finally:
        conn.close()


def cookie_name(d: DashboardProcess) -> str:
    return f"mpmlab_token_{d.port}"


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    """A dashboard with a generated token and its access log on (its output is d.log_path)."""
    d = DashboardProcess(tmp_path_factory.mktemp("tok"), mpm="event", extra_args=["--access-log"])
    yield d
    d.stop()
    d.assert_clean()


@pytest.fixture(scope="module")
def dash2(tmp_path_factory):
    """A second dashboard on the same host, its own generated token."""
    d = DashboardProcess(tmp_path_factory.mktemp("tok2"), mpm="prefork")
    yield d
    d.stop()
    d.assert_clean()


def generation(d: DashboardProcess) -> int:
    return int(d.api("/api/mpm")["generation"])


def test_printed_url_holds_a_random_token(dash, dash2):
    for d in (dash, dash2):
        assert d.start_url == f"{d.url}/?token={d.token}"
        assert d.token and len(d.token) >= 40  # secrets.token_urlsafe(32): 43 characters
    assert dash.token != dash2.token


# every kind of control request: JSON API (POST, PATCH, DELETE), the page's htmx routes, a method
# no route has, a path no route has
CONTROL = [("POST", "/api/mpm", {"mpm": "worker"}), ("POST", "/api/restart", {"graceful": False}),
           ("POST", "/api/directives", {"settings": {"MaxRequestWorkers": 64}}),
           ("POST", "/api/traffic", {"pattern": "steady", "params": {"rate": 5, "duration": 30}}),
           ("POST", "/api/traffic/presets/browsers", {}), ("POST", "/api/traffic/stop-all", {}),
           ("PATCH", "/api/traffic/p1", {"params": {"rate": 1}}), ("DELETE", "/api/traffic/p1", None),
           ("PUT", "/api/mpm", {"mpm": "worker"}), ("POST", "/api/no-such-route", {})]
UI = [("POST", "/ui/mpm"), ("POST", "/ui/restart"), ("POST", "/ui/traffic/start"), ("POST", "/ui/traffic/stop-all")]


def test_every_control_request_refused_without_token(dash):
    gen = generation(dash)
    for method, path, body in CONTROL:
        status, _, raw = request(dash.port, method, path, body=body)
        assert status == 403, (method, path, status, raw)
        assert "token is required" in json.loads(raw)["detail"], (method, path)
    for method, path in UI:  # the page's own requests get the refusal as HTML
        status, hdrs, raw = request(dash.port, method, path, {"HX-Request": "true", "Accept": "text/html",
                                                              "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 403 and hdrs["content-type"].startswith("text/html"), (path, status)
        assert b"token is required" in raw
    # nothing happened: same generation, same MPM, no traffic started
    assert generation(dash) == gen and dash.api("/api/mpm")["mpm"] == "event"
    assert not [p for p in dash.api("/api/traffic")["patterns"] if p["state"] == "running"]


def test_reads_stay_open_without_token(dash):
    for path in ("/api/status", "/api/scoreboard", "/metrics", "/api/core/server-status?auto"):
        status, _, _ = request(dash.port, "GET", path)
        assert status == 200, path
    status, _, page = request(dash.port, "GET", "/")
    assert status == 200 and b"needs a token" in page  # the page says why its buttons will be refused
    from websockets.sync.client import connect
    with connect(f"ws://127.0.0.1:{dash.port}/ws/live", origin=dash.url, open_timeout=10) as ws:
        assert ws.recv(timeout=10)  # websockets only send: reading, no token needed


def test_accepted_with_header_bearer_or_cookie(dash):
    check = ("POST", "/api/directives/check", {"settings": {"MaxRequestWorkers": "110"}})
    for headers in ({"X-Mpmlab-Token": dash.token}, {"Authorization": f"Bearer {dash.token}"},
                    {"Cookie": f"{cookie_name(dash)}={dash.token}"}):
        status, _, raw = request(dash.port, check[0], check[1], headers, check[2])
        assert status == 200 and json.loads(raw)["warnings"], (headers, raw)
    # and a real action with the cookie: a graceful restart makes a new generation
    gen = generation(dash)
    status, _, raw = request(dash.port, "POST", "/api/restart", {"Cookie": f"{cookie_name(dash)}={dash.token}"},
                             {"graceful": True})
    assert status == 200, raw
    assert json.loads(raw)["generation"] == gen + 1
    wait_for(lambda: generation(dash) == gen + 1, timeout=20, what="the new generation")
    # the page knows it may control: no "needs a token" banner with the cookie
    status, _, page = request(dash.port, "GET", "/", {"Cookie": f"{cookie_name(dash)}={dash.token}"})
    assert status == 200 and b"needs a token" not in page


def test_wrong_token_refused(dash, dash2):
    wrong = dash.token[:-4] + ("AAAA" if not dash.token.endswith("AAAA") else "BBBB")
    for headers in ({"X-Mpmlab-Token": wrong}, {"Authorization": f"Bearer {wrong}"},
                    {"Cookie": f"{cookie_name(dash)}={wrong}"},
                    {"Cookie": f"{cookie_name(dash2)}={dash.token}"},  # the right value under another port's name
                    {"Authorization": f"Basic {dash.token}"}):
        status, _, _ = request(dash.port, "POST", "/api/traffic/stop-all", headers, {})
        assert status == 403, headers
    # a control request never takes the token from its query string (it would be logged)
    status, _, _ = request(dash.port, "POST", f"/api/traffic/stop-all?token={dash.token}", body={})
    assert status == 403
    status, hdrs, page = request(dash.port, "GET", f"/?token={wrong}")
    assert status == 403 and b"wrong token" in page and hdrs.get("set-cookie") is None


def test_printed_url_sets_cookie_and_redirects_without_token(dash):
    status, hdrs, _ = request(dash.port, "GET", f"/?token={dash.token}&view=compact")
    assert status == 303 and hdrs["location"] == "/?view=compact"
    cookie = hdrs["set-cookie"]
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert cookie.startswith(f"{cookie_name(dash)}={dash.token};")
    assert "httponly" in parts and "samesite=strict" in parts and "path=/" in parts
    status, hdrs, _ = request(dash.port, "GET", f"/docs?token={dash.token}")
    assert status == 303 and hdrs["location"] == "/docs"
    # the cookie the redirect set is enough for control
    status, _, _ = request(dash.port, "POST", "/api/traffic/stop-all", {"Cookie": cookie.split(";")[0]}, {})
    assert status == 200


def test_token_not_in_the_access_log(dash):
    wrong = "not-the-token-" + dash.token[:6]
    request(dash.port, "GET", f"/?token={dash.token}")
    request(dash.port, "GET", f"/?token={wrong}")
    request(dash.port, "POST", f"/api/traffic/stop-all?token={dash.token}", body={})
    request(dash.port, "POST", "/api/traffic/stop-all", {"Authorization": f"Bearer {dash.token}"}, {})
    marker = "/api/status?after=token-log-check"
    request(dash.port, "GET", marker)

    def logged() -> str | None:
        text = dash.log_path.read_text()
        return text if marker in text else None
    log = wait_for(logged, timeout=10, what="the access log line of the last request")
    assert log.count(dash.token) == 1, log  # the start line only
    start = [ln for ln in log.splitlines() if dash.token in ln]
    assert start[0].startswith(f"mpmlab dashboard: {dash.start_url}")
    assert wrong not in log
    assert '"GET /?token=[redacted] HTTP/1.1" 303' in log
    assert '"POST /api/traffic/stop-all?token=[redacted] HTTP/1.1" 403' in log


def test_two_dashboards_two_cookies(dash, dash2):
    assert cookie_name(dash) != cookie_name(dash2)
    jar = {}
    for d in (dash, dash2):  # one browser opens both printed URLs: its jar holds both cookies
        status, hdrs, _ = request(d.port, "GET", f"/?token={d.token}")
        assert status == 303
        name, value = hdrs["set-cookie"].split(";")[0].split("=", 1)
        jar[name] = value
    both = "; ".join(f"{k}={v}" for k, v in jar.items())
    for d in (dash, dash2):
        assert request(d.port, "POST", "/api/traffic/stop-all", {"Cookie": both}, {})[0] == 200
    # each cookie opens its own dashboard only
    only_first = f"{cookie_name(dash)}={dash.token}"
    assert request(dash2.port, "POST", "/api/traffic/stop-all", {"Cookie": only_first}, {})[0] == 403


def test_no_token_opens_control(tmp_path):
    d = DashboardProcess(tmp_path, mpm="event", extra_args=["--no-token"])
    try:
        assert d.token is None and d.start_url == f"{d.url}/"
        log = d.log_path.read_text()
        assert "CONTROL IS OPEN" in log and "--no-token" in log
        assert request(d.port, "POST", "/api/traffic/stop-all", body={})[0] == 200
        # the Origin check still holds: another site's page cannot drive it
        assert request(d.port, "POST", "/api/traffic/stop-all", {"Origin": "http://evil.example"}, {})[0] == 403
        status, hdrs, _ = request(d.port, "GET", "/?token=anything")  # an old link: dropped, no cookie
        assert status == 303 and hdrs["location"] == "/" and hdrs.get("set-cookie") is None
    finally:
        d.stop()
        d.assert_clean()


def _settings(argv: list[str], env: dict[str, str], tmp_path=None, toml: str | None = None) -> DashboardSettings:
    args = build_parser().parse_args(["dashboard", *argv])
    path = None
    if toml is not None:
        path = tmp_path / "mpmlab.toml"
        path.write_text(toml)
    from mpmlab.config_file import given_options
    apply_defaults(args, env=env, path=path, given=given_options(args))
    s = settings_from_args(args)
    s.check()
    return s


def test_where_the_token_comes_from(tmp_path):
    generated = _settings([], {})
    assert generated.token_generated and generated.token and len(generated.token) >= 40
    assert _settings([], {}).token != generated.token  # a new one at every start
    given = _settings([], {"MPMLAB_TOKEN": "from-the-env-123"})
    assert given.token == "from-the-env-123" and not given.token_generated
    assert _settings(["--token", "from-the-cli-123"], {"MPMLAB_TOKEN": "from-the-env-123"}).token == "from-the-cli-123"
    assert _settings([], {}, tmp_path, 'token = "from-the-file-1"\n').token == "from-the-file-1"
    for s in (_settings(["--no-token"], {}), _settings([], {"MPMLAB_NO_TOKEN": "1"}),
              _settings([], {}, tmp_path, "no_token = true\n")):
        assert s.token is None and s.no_token and s.token_ok(None)
    assert DashboardSettings().token_generated  # safe by default also for create_app's callers
    # a bound address other machines reach needs a token the user chose
    with pytest.raises(ValueError, match="--token"):
        _settings(["--host", "0.0.0.0"], {})
    with pytest.raises(ValueError, match="--token"):
        _settings(["--host", "0.0.0.0", "--no-token"], {})
    assert _settings(["--host", "0.0.0.0"], {"MPMLAB_TOKEN": "chosen-secret"}).token == "chosen-secret"


def test_token_and_no_token_together_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "mpmcore.cli", "dashboard", "--token", "some-secret-1", "--no-token",
                        "--port", "1"], cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "contradict" in r.stderr and "Traceback" not in r.stderr
    parsed = argparse.Namespace()
    with pytest.raises(ValueError, match="true or false"):
        apply_defaults(parsed, env={"MPMLAB_NO_TOKEN": "maybe"})
