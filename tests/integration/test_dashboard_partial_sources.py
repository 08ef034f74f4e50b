"""Attached servers that show less than a full status page: the dashboard says what it has and
nothing it does not (a missing figure is neither a crash nor an alarm)."""

from __future__ import annotations

from conftest import wait_for
from dashboard_fixtures import BASE, assert_core_gone, in_process_settings, ws_session
from fastapi.testclient import TestClient

from mpmlab.main import create_app


def test_attached_apache_without_extended_status(server_factory):
    """ExtendedStatus Off: no Total Accesses / Total kBytes lines, so no totals. The page, the
    live socket and the panel render without them (the requests and traffic tiles are left out)."""
    srv = server_factory(mpm="worker", settings={"ExtendedStatus": "Off"})
    settings = in_process_settings(mpm="event", attach=[f"apache=http://127.0.0.1:{srv.port}/server-status"],
                                   attach_interval=0.25)
    app = create_app(settings)
    pids: list[int] = []
    try:
        with TestClient(app, base_url=BASE) as client:
            d = app.state.dashboard
            src = d.sources.sources[0]
            wait_for(lambda: d.sampler.summary is not None and src.frame is not None and src.frame.ok,
                     timeout=15, what="the core's and the attached server's first good frames")
            pids += [d.core.pid, d.traffic.pid, client.get("/api/status").json()["core"]["pid"]]
            assert src.frame.summary is not None and src.frame.summary.totals is None  # the case under test
            page = client.get("/")
            assert page.status_code == 200, page.text[-2000:]
            panel = page.text[page.text.index('data-source="apache"'):]
            assert "BusyWorkers" in panel and "Total kBytes" not in panel
            with ws_session(client, "/ws/live") as ws:
                first = [ws.receive_text() for _ in range(3)]  # log backlog, core panels, the source's panel
            assert any("-totals" in m and "BusyWorkers" in m for m in first), [m[:120] for m in first]
    finally:
        assert_core_gone(settings.core_listen, pids)

