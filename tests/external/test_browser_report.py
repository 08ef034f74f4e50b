"""The exported HTML report opens offline: headless Chromium (Debian's) loads it from a file:// URL
with every request that is not the file itself aborted and counted; none is made, and the page
shows the compare table, the charts and each target's configuration."""

from __future__ import annotations

import pytest
from browser_fixtures import PageErrors
from conftest import artifact_path
from experiment_fixtures import build_run

from mpmcore.experiments import exports
from mpmcore.experiments.store import RunStore

pytestmark = pytest.mark.browser

from playwright import sync_api  # noqa: E402 (pinned in pyproject; Chromium is Debian's)


def test_html_report_opens_from_file_with_no_network(browser, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite3")
    try:
        built = build_run(store)
        paths = exports.write_exports(built.run_id, store, tmp_path / "out")
    finally:
        store.close()
    page_path = next(p for p in paths if p.name == "report.html")
    url = page_path.resolve().as_uri()
    errors = PageErrors(console=())
    pg = errors.watch(browser.new_page(viewport={"width": 1400, "height": 1000}))
    requests: list[str] = []
    aborted: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))

    def route(r):
        if r.request.url == url:
            r.continue_()
        else:
            aborted.append(r.request.url)
            r.abort()

    pg.route("**/*", route)
    try:
        pg.goto(url)
        table = pg.locator("table.compare")
        sync_api.expect(table.locator("tbody tr")).to_have_count(3)
        cells = table.locator("tbody tr").first.locator("td")
        assert cells.nth(0).inner_text() == "core:event"
        assert cells.nth(2).inner_text() == "100.0"  # req/s, the median of 100, 120, 90
        nginx = table.locator("tbody tr").nth(1).locator("td")
        assert nginx.nth(10).inner_text() == "-"  # busy slots: nginx has none
        # charts drawn: polylines with points inside each small multiple
        assert pg.locator("svg.chart").count() == 9
        assert pg.locator("svg.chart polyline").count() > 9
        assert pg.evaluate("[...document.querySelectorAll('svg.chart')].every(s => s.getBBox().width > 100)")
        sync_api.expect(pg.locator("body")).to_contain_text("MaxRequestWorkers")
        sync_api.expect(pg.locator("body")).to_contain_text("cpu: not comparable (nginx has no CPU-heavy handler)")
        sync_api.expect(pg.locator("body")).to_contain_text("lighttpd is not installed")
        pg.screenshot(path=str(artifact_path("experiment-report.png")), full_page=True)
    finally:
        pg.close()
    assert requests == [url], requests
    assert aborted == [] and errors.lines == []
