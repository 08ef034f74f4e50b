"""The dashboard in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser),
driven by Playwright's sync API against `mpmlab dashboard` started as a user would start it.
Waits are polls with deadlines (wait_for_function / expect), never fixed sleeps."""

from __future__ import annotations

import signal

import pytest
from browser_fixtures import LIVE, PageErrors
from conftest import artifact_path, pid_alive, update_docs_screenshot
from dashboard_fixtures import DashboardProcess, hover_cell, shm_path

pytestmark = pytest.mark.browser

from playwright import sync_api  # noqa: E402 (pinned in pyproject; Chromium is Debian's)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    d = DashboardProcess(tmp_path_factory.mktemp("dash"), mpm="event")
    yield d
    d.stop()
    d.assert_clean()


@pytest.fixture
def page(browser, dashboard):
    errors = PageErrors(console=())
    pg = errors.watch(browser.new_page(viewport={"width": 1600, "height": 1200}))
    pg.goto(dashboard.url + "/")
    pg.wait_for_function(LIVE, timeout=10_000)
    yield pg
    pg.close()
    dashboard.reset()  # a failed test leaves no traffic or MPM switch to the next one
    assert not errors.unexpected(), errors.lines


def counts(pg) -> dict:
    return pg.evaluate("window.mpmlab.counts()")


def test_grid_fills_with_slots(page, dashboard):
    page.wait_for_function("window.mpmlab.counts()['_'] >= 75", timeout=15_000)
    lay = page.evaluate("window.mpmlab.layout")
    assert lay["mpm"] == "event" and lay["cols"] == 25 and lay["rows"] >= 16 and not lay["single"]
    assert page.evaluate("window.mpmlab.cellState(0, 0)") in ("_", "S", "R", "W", "K")
    sync_api.expect(page.locator("#insight-headline")).not_to_be_empty()
    sync_api.expect(page.locator("#procs table tbody tr")).to_have_count(3, timeout=10_000)
    sync_api.expect(page.locator("#conn-state")).to_have_text("live", timeout=10_000)
    sync_api.expect(page.locator("#log-lines")).to_contain_text("configured -- resuming normal operations",
                                                                timeout=10_000)
    # the log the page shows is the error log's end, each line once (the websocket's backlog
    # replaced the lines the page was rendered with)
    page.wait_for_function("""async () => {
        const api = (await (await fetch('/api/log?lines=200')).json()).lines;
        const shown = [...document.querySelectorAll('#log-lines .ll')].map(e => e.textContent);
        return shown.length === api.length && shown.every((l, i) => l === api[i]); }""", timeout=10_000)
    page.screenshot(path=str(artifact_path("dashboard-idle.png")), full_page=True)


def test_slowloris_preset_shows_R_cells(page, dashboard):
    idle_y = page.locator("#scoreboard").bounding_box()["y"]
    page.click("#preset-slowloris")
    sync_api.expect(page.locator("#traffic-running .tcard")).to_have_count(1, timeout=10_000)
    page.wait_for_function("window.mpmlab.counts()['R'] >= 50", timeout=20_000)
    # the legend counts what the grid shows, and the words say it
    page.wait_for_function("""parseInt(document.querySelector('#legend [data-count="R"]').textContent) >= 50""",
                           timeout=10_000)
    sync_api.expect(page.locator("#insight-box")).to_contain_text("(R)", timeout=10_000)
    # the words above the grid changed (longer, with details); the grid did not move under the mouse
    assert page.locator("#scoreboard").bounding_box()["y"] == idle_y
    # hovering an R cell tells the slot's story, with the details fetched for that slot
    text = hover_cell(page, "window.mpmlab", page.locator("#scoreboard"), page.locator("#tooltip"), "R", "in state")
    assert "Reading Request" in text and "slowloris" in text, text
    page.screenshot(path=str(artifact_path("dashboard-slowloris.png")), full_page=True)
    page.click("#tab-traffic >> text=stop all")
    sync_api.expect(page.locator("#traffic-running .tcard")).to_have_count(0, timeout=15_000)
    page.wait_for_function("window.mpmlab.counts()['R'] === 0", timeout=20_000)


def test_switch_to_prefork_changes_layout(page, dashboard):
    page.wait_for_function("window.mpmlab.layout && window.mpmlab.layout.mpm === 'event'", timeout=10_000)
    grid_y = page.locator("#scoreboard").bounding_box()["y"]
    page.click("#switch-prefork")
    # the switch's message floats over the page: the grid does not move; it goes away by itself
    flash = page.locator("#flash")
    sync_api.expect(flash).to_contain_text("switching to prefork", timeout=15_000)
    assert page.locator("#scoreboard").bounding_box()["y"] == grid_y
    sync_api.expect(flash).to_be_hidden(timeout=20_000)
    page.wait_for_function("window.mpmlab.layout.mpm === 'prefork' && window.mpmlab.layout.single", timeout=30_000)
    sync_api.expect(page.locator("#switch-prefork")).to_have_class("on", timeout=5_000)
    page.wait_for_function("window.mpmlab.counts()['_'] >= 5", timeout=15_000)
    sync_api.expect(page.locator("#log-lines")).to_contain_text("switched: generation", timeout=10_000)
    sync_api.expect(page.locator("#directives")).to_contain_text("MaxSpareServers")
    page.screenshot(path=str(artifact_path("dashboard-prefork.png")), full_page=True)
    page.click("#switch-event")
    page.wait_for_function("window.mpmlab.layout.mpm === 'event' && window.mpmlab.layout.cols === 25", timeout=30_000)


def test_bad_directive_shows_error_beside_field(page, dashboard):
    page.click(".tab[data-tab=directives]")
    page.fill("#d-MaxRequestWorkers", "lots")
    page.click("#apply-directives")
    err = page.locator("#error-MaxRequestWorkers")
    sync_api.expect(err).to_be_visible(timeout=10_000)
    sync_api.expect(err).to_contain_text("integer")
    sync_api.expect(page.locator("#row-MaxRequestWorkers input")).to_have_value("lots")
    # an adjusted value is applied with Apache's warning
    page.fill("#d-MaxRequestWorkers", "110")
    page.click("#apply-directives")
    sync_api.expect(page.locator("#directive-warnings")).to_contain_text("integer multiple", timeout=15_000)
    sync_api.expect(page.locator("#d-MaxRequestWorkers")).to_have_value("100")
    page.fill("#d-MaxRequestWorkers", "400")
    page.click("#apply-directives")
    sync_api.expect(page.locator("#directives-message")).to_contain_text("applied", timeout=15_000)


def test_docs_screenshot_under_mixed_traffic(page, dashboard):
    """A current picture for README/docs: event with keep-alive browsers, slowloris and AJAX polling."""
    for preset in ("browsers", "slowloris", "ajax"):
        page.click(f"#preset-{preset}")
    sync_api.expect(page.locator("#traffic-running .tcard")).to_have_count(3, timeout=15_000)
    page.wait_for_function("window.mpmlab.counts()['R'] >= 50 && window.mpmCharts.points.length >= 12 && "
                           "window.mpmCharts.points.slice(-3).some(p => Object.keys(p.traffic).length >= 2)",
                           timeout=40_000)
    page.click("#mode-state")
    # the picture must agree with itself: the tiles and words (4 summaries a second) caught up
    # with the grid (20 frames a second) while slowloris was still opening connections
    page.wait_for_function("""(() => { const c = window.mpmlab.counts();
        const busy = parseInt(document.querySelector('#totals .tile b').textContent);
        return Math.abs(busy - (c.R + c.W)) <= 3; })()""", timeout=20_000)
    out = artifact_path("dashboard-mixed.png")
    page.screenshot(path=str(out), full_page=False)
    update_docs_screenshot(out, "screenshot-dashboard.png")
    page.click("#mode-pattern")
    page.wait_for_function("!document.getElementById('pattern-legend').hidden", timeout=5_000)
    # slowloris holds its slots in R, tagged with its pattern from its header line on
    sync_api.expect(page.locator("#pattern-legend")).to_contain_text("slowloris", timeout=10_000)
    page.screenshot(path=str(artifact_path("dashboard-pattern-mode.png")))
    dashboard.api("/api/traffic/stop-all", method="POST", body={})


def test_api_docs_render_offline(browser, dashboard):
    """/docs is Swagger UI from the locked npm package in static/vendor: every request the page
    makes stays on the dashboard (anything else is aborted, as without internet) and it renders
    the API's operations."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    elsewhere: list[str] = []

    def only_here(route):
        if route.request.url.startswith(dashboard.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    pg.route("**/*", only_here)
    try:
        pg.goto(dashboard.url + "/docs")
        pg.wait_for_selector(".opblock", timeout=15_000)
        ops = pg.locator(".opblock").count()
        assert ops >= 15, ops
        assert pg.locator(".opblock-summary-path", has_text="/api/status").count() >= 1
        pg.screenshot(path=str(artifact_path("api-docs.png")))
    finally:
        pg.close()
    assert elsewhere == [], elsewhere


def test_killed_dashboard_leaves_no_orphan(tmp_path):
    """SIGKILL gives the dashboard no chance to clean up: the core (PR_SET_PDEATHSIG) and the
    traffic runner (its watch pipe) notice and stop; the master removes its scoreboard."""
    d = DashboardProcess(tmp_path, mpm="worker")
    try:
        assert pid_alive(d.master_pid) and shm_path(d.core_listen).exists()
    finally:
        d.stop(sig=signal.SIGKILL)
        d.assert_clean(timeout=25)  # on failure it SIGKILLs what is left and removes the scoreboard
