"""The experiments pages in headless Chromium (Debian's /usr/bin/chromium) against `mpmlab dashboard`
started as a user would, with its own run store (--runs-db in tmp) and its own plans directory:
run a short experiment from the page (the core's three MPMs, 1 s each) and see progress then
the compare table; record the live session, stop, replay and scrub: the grid shown at t is the
stored frame for t, byte for byte; two targets replay in sync on one clock; the claims page shows
the verdict of a stored claim run, linked to it. No console errors on any page."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from browser_fixtures import LIVE, PageErrors, http_refusal
from conftest import artifact_path, update_docs_screenshot, wait_for
from dashboard_fixtures import DashboardProcess
from experiment_fixtures import user_plans_dir

pytestmark = pytest.mark.browser

from playwright import sync_api  # noqa: E402 (pinned in pyproject; Chromium is Debian's)

QUICK = """
name = "ui-quick"
title = "Quick: worker and event"
description = "Two MPMs of the core, one second of steady traffic each."
targets = ["core:worker", "core:event"]
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

#: Claim 2's plan, shortened: the user's file of that name is run in place of the built-in.
CLAIM = """
name = "claim-prefork-queues"
title = "Claim 2 (short): prefork queues requests beyond its processes"
description = "12 clients on /sleep?ms=200 against prefork with 4 processes."
claim = "prefork-queues"
targets = ["core:prefork"]
[budget]
slots = 4
processes = 1
[[stage]]
name = "queue"
duration = "2s"
  [[stage.pattern]]
  pattern = "steady"
  label = "queue"
  clients = 12
  keepalive = false
  path = "/sleep?ms=200"
"""


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash-exp")
    with user_plans_dir(tmp, {"ui-quick": QUICK, "claim-prefork-queues": CLAIM}):  # inherited by the dashboard
        d = DashboardProcess(tmp, mpm="event", extra_args=["--runs-db", str(tmp / "runs.sqlite3")])
    yield d
    d.stop()
    d.assert_clean()


@pytest.fixture
def page_errors():
    return PageErrors(console=("error",))


@pytest.fixture
def page(browser, dashboard, page_errors):
    pg = page_errors.watch(browser.new_page(viewport={"width": 1500, "height": 1100}))
    yield pg
    pg.close()
    assert not page_errors.unexpected(), page_errors.lines


def frame_at(dashboard, run_id: int, tid: int, t: float) -> tuple[float, bytes] | None:
    """The stored frame for t (None before the target run's first frame)."""
    try:
        with urllib.request.urlopen(f"{dashboard.url}/api/runs/{run_id}/targets/{tid}/frame?t={t}", timeout=10) as r:
            return float(r.headers["X-Frame-Time"]), r.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def check_shown_is_stored(page, dashboard, run_id: int, tids: list[int], t: float) -> None:
    """Every target's card shows the stored frame for the clock's t, byte for byte."""
    page.wait_for_function("window.mpmReplay.settled()", timeout=10_000)
    clock = float(page.locator("#clock").get_attribute("data-t"))
    assert abs(clock - t) < 0.01, (clock, t)
    # the store is asked for the page's own clock, not the clock's 3-decimal label: at t = 0.8668 a
    # frame stored at 0.867 is not yet due, though the label reads 0.867 (this once failed CI)
    exact = page.evaluate("window.mpmReplay.t")
    assert abs(exact - clock) <= 0.0005 + 1e-9, (exact, clock)
    for tid in tids:
        got = frame_at(dashboard, run_id, tid, exact)
        if got is None:  # before this target's first frame: the page says so
            sync_api.expect(page.locator(f"#rt-{tid}-empty")).to_be_visible()
            continue
        want_t, want = got
        sync_api.expect(page.locator(f"#rt-{tid}-empty")).to_be_hidden()
        card = page.locator(f"#rt-{tid}")
        assert abs(float(card.get_attribute("data-t")) - want_t) < 1e-3, (tid, card.get_attribute("data-t"), want_t)
        assert card.get_attribute("data-exact") == "1"
        shown = bytes(page.evaluate(f"window.mpmReplay.shownBytes({tid})"))
        assert shown == want, f"target run {tid} at {t}: the page drew another frame"
        # and the grid view holds that frame (the seq in its header)
        seq = int.from_bytes(want[4:8], "little")
        assert int(card.get_attribute("data-seq")) == seq
        assert page.evaluate(f"window.mpmReplay.targets[{tid}].view.frame.seq") == seq


def test_run_from_page_progress_then_compare_and_sync_replay(page, dashboard, page_errors):
    page.goto(dashboard.url + "/experiments")
    form = page.locator("#plan-ui-quick")
    sync_api.expect(form).to_be_visible()
    assert form.locator("input[value='core:worker']").is_checked()
    assert form.locator("input[value='core:event']").is_checked()
    assert not form.locator("input[value='core:prefork']").is_checked()
    form.locator("input[value='core:prefork']").check()  # the core's three MPMs
    form.locator("button.run-btn").click()
    # progress: the running card names a target, then the run ends complete
    page.wait_for_function("""() => { const t = document.querySelector('#exp-progress.running #prog-target');
        return t && /core:(worker|event)/.test(t.textContent); }""", timeout=30_000)
    page.screenshot(path=str(artifact_path("experiments-progress.png")), full_page=True)
    # a second Run while it runs: refused (409) with the reason, in the page
    page_errors.expect(http_refusal(409, "Conflict"))
    page.locator("#plan-mixed button.run-btn").click()
    sync_api.expect(page.locator("#exp-error")).to_contain_text("already running", timeout=10_000)
    sync_api.expect(page.locator("#exp-done-status")).to_have_text("complete", timeout=90_000)
    # the runs list was refreshed with it
    sync_api.expect(page.locator("#runs tr[data-run]").first).to_contain_text("ui-quick", timeout=10_000)
    page.locator("#exp-progress a.run-link").first.click()
    page.wait_for_url("**/runs/*")
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    rows = page.locator("#compare-table tbody tr")
    sync_api.expect(rows).to_have_count(3)
    assert {rows.nth(i).get_attribute("data-target") for i in range(3)} == {"core:prefork", "core:worker", "core:event"}
    page.wait_for_function("window.mpmCompare && window.mpmCompare.ready", timeout=10_000)
    assert page.evaluate("window.mpmCompare.rows.rps.charts") == 3
    assert page.locator(".multiples-row[data-kind=workers] canvas").count() == 3
    page.screenshot(path=str(artifact_path("experiments-compare.png")), full_page=True)

    # both targets side by side on one clock
    run = dashboard.api(f"/api/runs/{run_id}")
    tids = [t["id"] for t in run["targets"] if t["target"] in ("core:worker", "core:event")]
    page.goto(f"{dashboard.url}/runs/{run_id}/replay?targets=core:worker,core:event")
    page.wait_for_function("window.mpmReplay && window.mpmReplay.ready", timeout=10_000)
    assert page.locator(".replay-target").count() == 2
    duration = page.evaluate("window.mpmReplay.duration")
    assert duration > 0.5
    for t in (0.3 * duration, 0.75 * duration, 0.5 * duration):
        page.evaluate(f"window.mpmReplay.seek({t})")
        check_shown_is_stored(page, dashboard, run_id, tids, t)
    # playing moves one clock for both: each card stays on its own frame for that clock
    page.evaluate("window.mpmReplay.seek(0)")
    page.select_option("#speed", "4")
    page.click("#play")
    page.wait_for_function(f"window.mpmReplay.t >= {0.4 * duration}", timeout=10_000)
    page.click("#play")  # pause
    t = page.evaluate("window.mpmReplay.t")
    assert not page.evaluate("window.mpmReplay.playing")
    check_shown_is_stored(page, dashboard, run_id, tids, t)


def test_record_stop_replay_scrub(page, dashboard):
    page.goto(dashboard.url + "/")
    page.wait_for_function(LIVE, timeout=10_000)
    page.click("#record-btn")
    sync_api.expect(page.locator("#record-info")).to_contain_text("frames", timeout=10_000)
    # traffic, so that the grid changes while it records
    page.click("#preset-slowloris")
    wait_for(lambda: dashboard.api("/api/record")["frames"] >= 25 and dashboard.api("/api/record")["samples"] >= 3,
             timeout=30, interval=0.2, what="3 s of recording")
    page.click("#record-btn")
    sync_api.expect(page.locator("#record-replay")).to_be_visible(timeout=10_000)
    dashboard.api("/api/traffic/stop-all", method="POST", body={})
    page.click("#record-replay")
    page.wait_for_url("**/replay")
    run_id = int(page.url.split("/runs/")[1].split("/")[0])
    run = dashboard.api(f"/api/runs/{run_id}")
    assert run["meta"]["kind"] == "recording" and run["meta"]["status"] == "complete"
    tid = run["targets"][0]["id"]
    page.wait_for_function("window.mpmReplay && window.mpmReplay.ready", timeout=10_000)
    duration = page.evaluate("window.mpmReplay.duration")
    # scrub with the slider as a user does: the grid at t is the stored frame for t
    for v in (900, 150, 600, 400):
        page.locator("#slider").fill(str(v))
        check_shown_is_stored(page, dashboard, run_id, [tid], duration * v / 1000)
    # color by traffic pattern, as the live page: the recording carried the pattern table
    page.click("#mode-pattern")
    assert page.evaluate(f"window.mpmReplay.targets[{tid}].view.mode") == "pattern"
    page.locator("#slider").fill("1000")
    page.wait_for_function("window.mpmReplay.settled()", timeout=10_000)
    assert "slowloris" in page.evaluate(f"window.mpmReplay.targets[{tid}].patternsAt()")
    page.click("#color-mode [data-mode=state]")
    # the tiles show the sample at t, the charts their cursor and marks
    sync_api.expect(page.locator(f"#rt-{tid}-tiles .tile").first).to_be_visible()
    assert page.locator(f"#rt-{tid}-charts canvas").count() >= 4
    # play at 8x to the end
    page.select_option("#speed", "8")
    page.click("#play")
    page.wait_for_function("!window.mpmReplay.playing && window.mpmReplay.t >= window.mpmReplay.duration",
                           timeout=20_000)
    check_shown_is_stored(page, dashboard, run_id, [tid], duration)
    shot = artifact_path("experiments-replay.png")
    page.screenshot(path=str(shot), full_page=True)
    update_docs_screenshot(shot, "screenshot-replay.png")


def test_claims_page_shows_a_stored_claim_run(page, dashboard):
    page.goto(dashboard.url + "/claims")
    claim2 = page.locator("#claim-2")
    sync_api.expect(claim2.locator(".verdict")).to_have_text("not run")
    r = dashboard.api("/api/experiments/claim-prefork-queues/run", method="POST", body={})
    assert r["running"], r
    wait_for(lambda: not dashboard.api("/api/experiments/progress")["running"], timeout=60, interval=0.3,
             what="the claim's run to end")
    state = dashboard.api("/api/experiments/progress")
    assert state["status"] == "complete", state
    run_id = state["run_ids"][0]
    page.reload()
    verdict = claim2.locator(".verdict")
    sync_api.expect(verdict).not_to_have_text("not run")
    assert verdict.inner_text() in ("holds", "holds partly", "does not hold here")
    sync_api.expect(claim2.locator(".why")).to_contain_text("prefork")
    link = claim2.locator("a.claim-run")
    assert link.get_attribute("href") == f"/runs/{run_id}"
    assert page.locator(".claim").count() == 9
    page.screenshot(path=str(artifact_path("experiments-claims.png")), full_page=True)
    shown = verdict.inner_text()
    assert dashboard.api("/api/claims")[1]["verdict"] == shown
    link.click()
    page.wait_for_url(f"**/runs/{run_id}")
    sync_api.expect(page.locator("#run-claim .verdict")).to_have_text(shown)
