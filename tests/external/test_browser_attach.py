"""Attach mode in headless Chromium (Debian's /usr/bin/chromium): `mpmlab dashboard --attach ...`
with its embedded core and a real Apache httpd (event) side by side; slowloris aimed at Apache from
the traffic panel fills Apache's grid with R; the page says what Apache cannot show."""

from __future__ import annotations

import re

import pytest
from browser_fixtures import PageErrors
from conftest import artifact_path, update_docs_screenshot, wait_for
from dashboard_fixtures import DashboardProcess, hover_cell

pytestmark = [pytest.mark.browser, pytest.mark.apache]

from playwright import sync_api  # noqa: E402 (pinned in pyproject; Chromium is Debian's)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, event_apache):
    d = DashboardProcess(tmp_path_factory.mktemp("dash"), mpm="event",
                         extra_args=["--attach", f"apache=http://127.0.0.1:{event_apache}/server-status",
                                     "--attach-interval", "0.5"])
    yield d
    d.stop()
    d.assert_clean()


def test_core_and_apache_side_by_side_under_slowloris(browser, dashboard, event_apache):
    errors = PageErrors(console=())
    page = errors.watch(browser.new_page(viewport={"width": 1600, "height": 1200}))
    try:
        page.goto(dashboard.url + "/")
        page.wait_for_function("window.mpmlab && window.mpmlab.frames > 0 && window.mpmSources && "
                               "window.mpmSources.apache.frames > 0", timeout=15_000)
        # two panels, side by side
        core = page.locator("#panel-core").bounding_box()
        ap = page.locator('.source-panel[data-source="apache"]').bounding_box()
        assert ap["x"] >= core["x"] + core["width"] - 1 and abs(ap["y"] - core["y"]) < 80, (core, ap)
        lay = page.evaluate("window.mpmSources.apache.layout")
        assert lay["mpm"] == "event" and lay["cols"] == 10 and lay["rows"] == 4
        # what Apache cannot show, in words
        cannot = page.locator('.source-panel[data-source="apache"] .cannot')
        sync_api.expect(cannot).to_contain_text("This source cannot show", timeout=10_000)
        sync_api.expect(cannot).to_contain_text("memory")
        # Apache's process table came from its HTML page
        sync_api.expect(page.locator('.source-panel[data-source="apache"] .ptable tbody tr').first).to_be_visible(
            timeout=10_000)

        # slowloris from the traffic panel, aimed at Apache: 30 connections of its 40 workers, so that
        # its status page (served by a worker like any request) still answers the poller
        page.select_option("#traffic-target", "apache")
        page.select_option("#pattern-select", "slowloris")
        sync_api.expect(page.locator('#traffic-form input[name="pattern"]')).to_have_value("slowloris", timeout=10_000)
        page.fill('#traffic-form input[name="connections"]', "30")
        page.fill('#traffic-form input[name="duration"]', "120")
        page.click("#traffic-form button[type=submit]")
        sync_api.expect(page.locator("#traffic-running .tcard")).to_have_count(1, timeout=10_000)
        sync_api.expect(page.locator("#traffic-running .ttarget")).to_contain_text("apache", timeout=10_000)
        page.wait_for_function("window.mpmSources.apache.counts()['R'] >= 20", timeout=20_000)
        assert page.evaluate("window.mpmlab.counts()['R']") == 0  # the core got none of it
        sync_api.expect(page.locator('.source-panel[data-source="apache"] .source-insight')).to_contain_text(
            "(R)", timeout=10_000)
        # hovering one of Apache's reader cells shows its ExtendedStatus row (placed in the grid)
        wait_for(lambda: [w for w in dashboard.api("/api/sources/apache")["frame"]["workers"] or []
                          if w["status"] == "R" and w["thread"] is not None],
                 timeout=10, interval=0.2, what="a placed R row of Apache's")
        panel = page.locator('.source-panel[data-source="apache"]')
        text = hover_cell(page, "window.mpmSources.apache", panel.locator("canvas").first,
                          panel.locator(".tooltip"), "R", "since request start")
        assert "Reading Request" in text, text
        pids = {str(w["pid"]) for w in dashboard.api("/api/sources/apache")["frame"]["workers"] or []}
        assert re.search(r"pid\s*(\d+)", text) and re.search(r"pid\s*(\d+)", text).group(1) in pids, (text, pids)
        page.screenshot(path=str(artifact_path("dashboard-attach-hover.png")), full_page=False)
        page.mouse.move(0, 0)
        page.wait_for_function("window.mpmSources.apache.charts.points.length >= 5", timeout=15_000)
        out = artifact_path("dashboard-attach.png")
        page.screenshot(path=str(out), full_page=False)
        update_docs_screenshot(out, "screenshot-attach.png")
        page.screenshot(path=str(artifact_path("dashboard-attach-full.png")), full_page=True)
        page.click("#tab-traffic >> text=stop all")
        sync_api.expect(page.locator("#traffic-running .tcard")).to_have_count(0, timeout=15_000)
    finally:
        page.close()
    assert not errors.lines, errors.lines
