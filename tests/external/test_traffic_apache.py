"""Traffic generator against a real Apache (event MPM, its defaults) on loopback: what the generator
counts is what Apache served and shows in its scoreboard.

The runner runs as its real subprocess (TrafficRunner) and is driven through TrafficClient,
exactly as the dashboard and CLI do.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import async_wait_for, status_auto
from real_apache_fixtures import start_apache, stop_apache
from traffic_fixtures import established, frames_until, run_coro


# -- real Apache ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_apache(tmp_path_factory):
    """A real Apache (event, its defaults), stopped by its pid."""
    port, pid = start_apache(tmp_path_factory.mktemp("apache"), "event", {})
    yield port
    stop_apache(port, pid)


@pytest.mark.apache
def test_steady_closed_matches_apache_total_accesses(default_apache, runner):
    """What the generator counts is what Apache served: Total Accesses within 10%."""
    async def go():
        async with await runner.client() as tc:
            before = int(status_auto(default_apache)["Total Accesses"])
            pid = await tc.start("steady", target=f"http://127.0.0.1:{default_apache}/", path="/index.html",
                                 clients=16, duration=2)
            frames = await frames_until(tc, pid, lambda p: p.state == "finished", 10)
            after = int(status_auto(default_apache)["Total Accesses"])
            total = frames[-1].total
            assert frames[-1].stop_reason == "duration"
            assert total.status["2xx"] > 500
            served = after - before - 1  # minus our own first status request
            assert abs(served - total.responses) <= 0.1 * served, (served, total.responses)
            assert total.latency_ms.p50 <= total.latency_ms.p99 <= total.latency_ms.max
            assert frames[-1].active_connections == 0
    run_coro(go())


@pytest.mark.apache
def test_slowloris_holds_connections_in_R_and_stop_closes_them(default_apache, runner):
    s = 30

    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("slowloris", target=f"http://127.0.0.1:{default_apache}/", connections=s,
                                 interval=0.5, duration=30)
            await async_wait_for(lambda: established(runner.pid, default_apache) == s, 10, f"{s} connections")
            # Apache's own scoreboard: s workers reading a request that never ends.
            await async_wait_for(lambda: status_auto(default_apache)["Scoreboard"].count("R") >= s, 10,
                                 "R slots in Apache's scoreboard")
            await asyncio.sleep(1.2)  # a couple of header lines later, still held
            assert established(runner.pid, default_apache) == s
            summary = await tc.stop(pid)
            assert summary.state == "finished" and summary.stop_reason == "stopped"
            assert summary.active_connections == 0
            assert summary.total.requests >= s
            await async_wait_for(lambda: established(runner.pid, default_apache) == 0, 5, "connections closed")
            await async_wait_for(lambda: status_auto(default_apache)["Scoreboard"].count("R") <= 1, 10,
                                 "R slots released")
    run_coro(go())


@pytest.mark.apache
def test_browsers_hold_six_connections_each(default_apache, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("browsers", target=f"http://127.0.0.1:{default_apache}/", path="/index.html",
                                 asset_path="/index.html", clients=3, assets=12, think_time=30,
                                 duration=30)
            await async_wait_for(lambda: established(runner.pid, default_apache) == 18, 10, "3 x 6 connections")
            info = next(p for p in await tc.list() if p.id == pid)
            assert info.active_connections == 18
            # Page + 12 assets per browser, then idle (think time) with the connections open.
            async def page_views_done():
                info = next(p for p in await tc.list() if p.id == pid)
                return info.total.status["2xx"] == 3 * 13 and info
            info = await async_wait_for(page_views_done, 5, "3 page views of 13 requests")
            assert info.total.connections_opened == 18
            assert established(runner.pid, default_apache) == 18  # idle, still open
            await tc.stop(pid)
            await async_wait_for(lambda: established(runner.pid, default_apache) == 0, 5, "connections closed")
    run_coro(go())


@pytest.mark.apache
def test_live_update_changes_the_rate(default_apache, runner):
    async def go():
        async with await runner.client() as tc:
            pid = await tc.start("steady", target=f"http://127.0.0.1:{default_apache}/", path="/index.html",
                                 model="open", rate=50, arrivals="uniform", connections=8, duration=20)
            frames = await frames_until(tc, pid, lambda p: p.elapsed > 1.8, 5)
            before = [p.live.rps for p in frames if p.elapsed > 0.8]
            desc = await tc.update(pid, rate=400)
            assert desc.params["rate"] == 400.0
            t0 = frames[-1].elapsed
            frames = await frames_until(tc, pid, lambda p: p.elapsed > t0 + 1.6, 5)
            after = [p.live.rps for p in frames if p.elapsed > t0 + 0.5]
            await tc.stop(pid)
            mean_before = sum(before) / len(before)
            mean_after = sum(after) / len(after)
            assert 40 <= mean_before <= 60, before
            assert 340 <= mean_after <= 460, after
    run_coro(go())
