"""mpmlab's patterns as Locust user classes (mpmcore/traffic/locustfile.py), run as Locust runs them
beyond one machine: a master and two workers, here as processes on loopback against the embedded
core. The scoreboard must show what the patterns cause (browsers' kept-alive connections hold worker
threads in K, slowloris holds them in R), each slot naming its pattern, and Locust's own statistics
must count the requests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, free_port, wait_for

from mpmcore import scoreboard as sb
from mpmcore.procs import terminate

LOCUSTFILE = ROOT / "mpmcore" / "traffic" / "locustfile.py"


def locust(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd))


def states_by_pattern(srv) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for _, _, w in sb.live_workers(srv.snapshot()):
        key = (sb.LETTERS[w.status], w.pattern.decode())
        out[key] = out.get(key, 0) + 1
    return out


def test_master_and_two_workers_drive_the_core_with_mpmlab_patterns(server_factory, tmp_path):
    srv = server_factory(mpm="worker", settings={"ServerLimit": 2, "ThreadsPerChild": 25, "MaxRequestWorkers": 50,
                                                 "StartServers": 2, "KeepAliveTimeout": 30})
    port = free_port()
    common = ["--mpmlab-think-time", "20", "--mpmlab-interval", "1"]
    master = locust("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                    "--headless", "--expect-workers", "2", "--users", "8", "--spawn-rate", "8",
                    "--run-time", "12s", "--host", f"http://127.0.0.1:{srv.port}", "--json", *common,
                    "BrowserUser", "SlowlorisUser", cwd=tmp_path)
    workers = [locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *common,
                      "BrowserUser", "SlowlorisUser", cwd=tmp_path) for _ in range(2)]
    try:
        seen: dict[tuple[str, str], int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and master.poll() is None:
            seen = states_by_pattern(srv)
            # 4 browsers x up to 6 kept-alive connections each, and 4 slowloris connections
            if seen.get(("K", "browsers"), 0) >= 4 and seen.get(("R", "slowloris"), 0) >= 4:
                break
            time.sleep(0.1)
        assert seen.get(("K", "browsers"), 0) >= 4, seen
        assert seen.get(("R", "slowloris"), 0) >= 4, seen
        out, err = master.communicate(timeout=60)
        assert master.returncode == 0, err[-2000:]
        # the workers end by themselves when their master quits (nothing is left for us to stop)
        for w in workers:
            assert w.wait(timeout=20) == 0, w.stderr.read()[-2000:] if w.stderr else ""
    finally:
        for p in (master, *workers):
            terminate(p, 10)
    stats = {(s["method"], s["name"]): s for s in json.loads(out)}
    assert stats[("GET", "/")]["num_requests"] >= 4 and stats[("GET", "/")]["num_failures"] == 0
    assert stats[("GET", "asset")]["num_requests"] >= 4 * 12 and stats[("GET", "asset")]["num_failures"] == 0
    assert ("SLOWLORIS", "headers never end") in stats


def test_a_host_off_this_machine_is_refused_without_traffic(tmp_path):
    p = locust("--headless", "--users", "2", "--spawn-rate", "2", "--run-time", "3s", "--json",
               "--host", "http://192.0.2.1:80", "SlowlorisUser", "AjaxUser", cwd=tmp_path)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        terminate(p, 10)
    assert p.returncode == 1
    assert json.loads(out) == []  # not one request was made
    assert "only sends to loopback" in err


def test_the_dashboard_shows_a_locust_masters_statistics(tmp_path):
    """A Locust master (web UI on loopback, --autostart) and two workers drive the dashboard's own
    embedded core; the dashboard, attached to the master (locust+URL), shows Locust's request counts
    (equal to the master's own /stats/requests once the run stopped) in /api/locust and in the
    traffic panel's fragment, while its scoreboard shows the states the patterns cause."""
    from dashboard_fixtures import BASE, assert_core_gone, in_process_settings
    from fastapi.testclient import TestClient

    from mpmcore.netloc import resolve_target_sync
    from mpmcore.sources.client import get
    from mpmlab.main import create_app

    web, bus = free_port(), free_port()
    settings = in_process_settings(mpm="worker", attach_interval=0.25, attach=[f"locust=locust+http://127.0.0.1:{web}"],
                                   core_settings={"ServerLimit": 2, "ThreadsPerChild": 25, "MaxRequestWorkers": 50,
                                                  "StartServers": 2, "KeepAliveTimeout": 30})
    app = create_app(settings)
    common = ["--mpmlab-think-time", "20", "--mpmlab-interval", "1"]
    procs: list[subprocess.Popen[str]] = []
    pids: list[int] = []

    def own() -> dict:
        ans = get(resolve_target_sync(f"http://127.0.0.1:{web}/"), "/stats/requests", 3.0)
        assert ans.status == 200
        return json.loads(ans.body)

    try:
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            pids = [d.core.pid, d.traffic.pid, client.get("/api/status").json()["core"]["pid"]]
            # before the master runs: the poll's error is a sentence, nothing breaks
            first = wait_for(lambda: client.get("/api/locust").json(), timeout=10, what="a first Locust poll")
            assert first[0]["ok"] is False and "refused" in first[0]["error"]
            procs.append(locust("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(bus),
                                "--web-host", "127.0.0.1", "--web-port", str(web), "--autostart", "--autoquit", "20",
                                "--expect-workers", "2", "--users", "8", "--spawn-rate", "8", "--run-time", "10s",
                                "--host", settings.core_url.rstrip("/"), *common, "BrowserUser", "SlowlorisUser",
                                cwd=tmp_path))
            procs += [locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(bus), *common,
                             "BrowserUser", "SlowlorisUser", cwd=tmp_path) for _ in range(2)]

            def patterns_on_the_board():
                c = client.get("/api/scoreboard").json()["state_counts"]
                return c if c["K"] >= 4 and c["R"] >= 4 else None

            wait_for(patterns_on_the_board, timeout=30, interval=0.2, what="browsers in K and slowloris in R")
            running = wait_for(lambda: [s for s in client.get("/api/locust").json() if s["ok"] and s["state"] == "running"
                                        and s["total"] and s["total"]["requests"] > 0],
                               timeout=20, interval=0.25, what="Locust's statistics in the dashboard")
            assert running[0]["workers"] == 2 and running[0]["users"] == 8

            def stopped():
                (s,) = client.get("/api/locust").json()
                return s if s["ok"] and s["state"] == "stopped" else None

            # the first "stopped" already carries the last samples: the slowloris connections, counted as the
            # stop closed them, reach the master before the workers say they stopped
            first_stopped = wait_for(stopped, timeout=30, interval=0.1, what="the dashboard seeing the run stop")
            assert ("SLOWLORIS", "headers never end") in {(r["method"], r["name"]) for r in first_stopped["rows"]}

            def equal_to_locusts_own():
                (s,) = client.get("/api/locust").json()
                ref = own()
                mine = {(r["method"], r["name"]): r["requests"] for r in s["rows"]}
                theirs = {(r["method"], r["name"]): r["num_requests"] for r in ref["stats"] if r["name"] != "Aggregated"}
                return s if s["state"] == ref["state"] == "stopped" and mine == theirs else None

            s = wait_for(equal_to_locusts_own, timeout=10, interval=0.25, what="the run's final counts, as Locust's own")
            rows = {(r["method"], r["name"]): r for r in s["rows"]}
            # nothing arrived after the first "stopped"
            assert {k: (r["requests"], r["failures"]) for k, r in rows.items()} == \
                {(r["method"], r["name"]): (r["requests"], r["failures"]) for r in first_stopped["rows"]}
            assert rows[("GET", "/")]["requests"] >= 4 and rows[("GET", "/")]["failures"] == 0
            assert rows[("GET", "asset")]["requests"] >= 4 * 12
            assert s["total"]["requests"] == sum(r["requests"] for r in s["rows"])
            # the traffic panel: its fragment, and the page that loads it
            frag = client.get("/ui/locust").text
            assert 'data-locust="locust"' in frag and f'<td class="n requests">{rows[("GET", "asset")]["requests"]}</td>' in frag
            assert 'id="locust-stats"' in client.get("/").text
    finally:
        for p in procs:
            terminate(p, 10)
        assert_core_gone(settings.core_listen, [p for p in pids if p])
