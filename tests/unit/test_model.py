"""The typed model (mpmcore/model.py) from its producers, without a process or a socket:
``summarize`` on synthetic scoreboards, Apache's ``?auto`` and HTML page into a frame, nginx's
stub_status into a frame, and the frames compared with what the dict-based code before the
model produced for the same input (tests/unit/data/attach_golden/, captured from main)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from status_scenarios import GEN, NOW, SCENARIOS, event_busy, prefork_idle, wide_old_gen, worker_off

from mpmcore.model import (
    BUSY_WORKERS_SHOWN,
    NginxCounts,
    SourceFrame,
    Summary,
    WorkerRow,
    count_states,
    to_jsonable,
)
from mpmcore.sources import attach
from mpmcore.sources.frames import with_workers
from mpmcore.status import modstatus as status

GOLDEN = Path(__file__).parent / "data" / "status_golden"
ATTACH_GOLDEN = Path(__file__).parent / "data" / "attach_golden"
URL = "http://127.0.0.1:1/server-status"


def _info(sc: Any) -> status.ServerInfo:
    return status.ServerInfo(server_name="127.0.0.1", server_version="mpmlab/0.1.0 (Unix)",
                             built="Nov 26 2026 10:00:00", mpm=sc.mpm, max_request_workers=sc.max_request_workers,
                             threads_per_child=sc.threads_per_child, server_limit=sc.server_limit,
                             extended_status=sc.extended_status)


def _apache(name: str, html: bool = True) -> SourceFrame:
    auto = (GOLDEN / f"{name}.auto.txt").read_text("latin-1")
    page = (GOLDEN / f"{name}.html").read_text("latin-1")
    server, fields = attach.parse_auto(auto)
    tables = attach.parse_status_html(page) if html else attach.StatusTables()
    return attach.apache_frame(SourceFrame("a", "apache", URL, NOW), server, fields, tables, None, None, html)


# -- summarize ---------------------------------------------------------------------------------
def test_summarize_counts_by_apaches_rules() -> None:
    s = status.summarize(event_busy().snap, _info(event_busy()), NOW)
    assert isinstance(s, Summary) and s.mpm == "event" and s.mpm_generation == GEN
    assert (s.busy, s.idle, s.graceful) == (4, 2, 1)
    assert s.scoreboard == "__WR" + "_KGW" + "WW._" + "W"  # the FastCGI process' slot shows, beyond MRW
    assert s.state_counts == count_states(s.scoreboard) and s.count("W") == 5 and s.graceful_shown == 1
    assert (s.processes, s.stopping, s.conns_total) == (3, 1, 9)  # the squatter's 5 are not counted
    by_slot = {p.slot: p for p in s.procs}
    assert by_slot[1].old_gen and by_slot[1].accepting is False and by_slot[2].stopping
    assert [p.pid for p in s.fcgi_procs] == [201] and all(p.kind == "child" for p in s.procs)
    assert s.proc_sum.pss_kb == 10240 + 8192 + 4096  # children only; the pool's is apart
    t = s.totals
    assert t is not None and t.accesses == 15 and t.kbytes == t.bytes >> 10  # type: ignore[operator]  # bytes is set for the core


def test_summarize_without_extended_status_has_no_totals() -> None:
    sc = worker_off()
    s = status.summarize(sc.snap, _info(sc), NOW)
    assert s.totals is None and not s.extended_status and s.scoreboard == "W_KR.."


def test_summarize_shows_live_slots_beyond_threads_per_child() -> None:
    sc = wide_old_gen()
    s = status.summarize(sc.snap, _info(sc), NOW)
    assert s.scoreboard == "W_" + "WW" + "K_" + "K"  # the old child's extra threads, the child beyond MRW
    assert [p.old_gen for p in s.procs] == [False, True, True]


def test_summarize_detail_false_leaves_out_rows() -> None:
    sc = prefork_idle()
    s = status.summarize(sc.snap, _info(sc), NOW, detail=False)
    assert s.procs == () and s.fcgi_procs == () and s.processes == 2
    assert s.totals is not None and s.totals.bytes_per_req is None  # no access yet: Apache leaves it out


def test_model_is_frozen() -> None:
    s = status.summarize(prefork_idle().snap, _info(prefork_idle()), NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.busy = 3  # type: ignore[misc]  # the point: it cannot be assigned


def test_worker_rows_keep_the_traffic_pattern() -> None:
    rows = status.worker_rows(event_busy().snap, NOW)
    by_cell = {(w.proc, w.thread): w for w in rows}
    assert by_cell[(0, 3)].pattern == "slowloris" and by_cell[(0, 3)].status == "R"
    assert by_cell[(0, 0)].access_count == 4 and (0, 1) in by_cell and (2, 2) not in by_cell


# -- Apache's ?auto and HTML page --------------------------------------------------------------
def test_apache_auto_and_html_into_the_model() -> None:
    f = _apache("event_busy")
    s = f.summary
    assert f.ok and s is not None and s.mpm == "event" and s.busy == 4 and s.idle == 2
    assert s.max_request_workers is None and s.threads_per_child == 4  # from event's process table
    assert f.layout is not None and (f.layout.rows, f.layout.cols, f.layout.inferred) == (4, 4, False)
    assert f.capabilities.process_table and not f.capabilities.memory
    assert [p.pid for p in s.procs] == [101, 102, 103] and s.procs[1].old_gen and s.procs[2].stopping
    assert s.totals is not None and s.totals.bytes == 6294537 * 1024
    r = f.worker_at(0, 3)
    assert r is not None and r.status == "R" and r.client == "::1" and r.request == "GET /<b>&amp HTTP/1.1"
    assert f.busy_workers_total == len(f.busy_workers) == 8  # W R K G W W W and the pool's W


def test_apache_without_the_html_page_infers_rows() -> None:
    f = _apache("worker_off", html=False)
    assert f.summary is not None and f.summary.procs and f.workers is None
    assert f.layout is not None and f.layout.inferred and f.summary.threads_per_child is None
    assert any("ExtendedStatus is Off" in c for c in f.cannot_show)


def test_busy_workers_are_cut_at_the_shown_number() -> None:
    rows = tuple(WorkerRow(proc=0, thread=i, pid=1, status="W") for i in range(BUSY_WORKERS_SHOWN + 5))
    f = with_workers(SourceFrame("a", "apache", URL, NOW), rows + (WorkerRow(0, 99, 1, status="_"),))
    assert len(f.busy_workers) == BUSY_WORKERS_SHOWN and f.busy_workers_more == 5


def test_not_a_status_page_is_an_error_frame() -> None:
    _, fields = attach.parse_auto("<html>hello</html>")
    assert "Scoreboard" not in fields and "BusyWorkers" not in fields


# -- nginx -----------------------------------------------------------------------------------------
def test_nginx_stub_status_into_the_model() -> None:
    stub = attach.parse_stub_status((ATTACH_GOLDEN / "nginx.stub.txt").read_text())
    assert stub == NginxCounts(active=3, accepts=10, handled=10, requests=25, reading=0, writing=1, waiting=2)
    f = attach.nginx_frame(SourceFrame("n", "nginx", URL, NOW), stub, "nginx/1.24.0")
    s = f.summary
    assert s is not None and s.mpm == "nginx" and s.conns_total == 3 and s.conns_async_keep_alive == 2
    assert s.busy is None and s.state_counts is None and f.letters is None and attach.grid_frame(f) is None
    assert s.totals is not None and s.totals.accesses == 25 and f.capabilities.connections
    point, _ = attach.chart_point(f, None)
    assert point is not None and (point.R, point.W) == (0, 1)
    assert attach.parse_stub_status("Active connections: x") is None


# -- the same values as before the model -------------------------------------------------------------
def _subset(old: Any, new: Any, path: str = "") -> None:
    """Every key the dict-based frame had is in the model's JSON with the same value."""
    if isinstance(old, dict):
        assert isinstance(new, dict), path
        for k in old:
            assert k in new, f"{path}.{k} missing"
            _subset(old[k], new[k], f"{path}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), path
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _subset(a, b, f"{path}[{i}]")
    else:
        assert old == new, (path, old, new)


@pytest.mark.parametrize("html", [True, False], ids=["html", "auto-only"])
@pytest.mark.parametrize("make", SCENARIOS, ids=[m.__name__ for m in SCENARIOS])
def test_apache_frames_match_the_dict_code(make: Any, html: bool) -> None:
    name = make().name
    f = _apache(name, html)
    d = f.to_dict()
    grid = attach.grid_frame(f, seq=7, now_ms=5.0)
    d["grid"] = grid.hex() if grid else None
    d["message"] = to_jsonable(attach.summary_message(f))
    d["point"] = to_jsonable(attach.chart_point(f, (NOW - 1, 3))[0])
    old = json.loads((ATTACH_GOLDEN / f"{name}{'' if html else '.nohtml'}.json").read_text())
    _subset(old, json.loads(json.dumps(d)))


def test_nginx_frame_matches_the_dict_code() -> None:
    stub = attach.parse_stub_status((ATTACH_GOLDEN / "nginx.stub.txt").read_text())
    assert stub is not None
    f = attach.nginx_frame(SourceFrame("n", "nginx", "http://127.0.0.1:2/nginx_status", NOW), stub, "nginx/1.24.0")
    d = f.to_dict()
    d["message"] = to_jsonable(attach.summary_message(f))
    d["point"] = to_jsonable(attach.chart_point(f, (NOW - 1, 20))[0])
    _subset(json.loads((ATTACH_GOLDEN / "nginx.json").read_text()), json.loads(json.dumps(d)))


def test_core_summary_as_a_frame() -> None:
    sc = event_busy()
    s = status.summarize(sc.snap, _info(sc), NOW)
    f = attach.frame_from_summary("core", s, url="http://x/", workers=tuple(status.worker_rows(sc.snap, NOW)))
    assert f.ok and f.kind == "mpmlab" and f.letters == s.scoreboard and f.capabilities.memory
    assert f.layout is not None and (f.layout.rows, f.layout.cols) == (4, 4)
    down = attach.frame_from_summary("core", None)
    assert not down.ok and down.error_kind == "unreachable" and down.summary is None
