"""Attach mode against the real thing: Apache httpd 2.4 (each MPM) and nginx, under a small traffic
pattern. What a source reports must equal what the server itself says at (nearly) the same moment.

Each comparison polls the source, then fetches the server's own ``?auto`` / stub_status, and
repeats until they agree (with a deadline). They differ by exactly the poller's own requests: the
source reads ``?auto``, then its HTML page, then the reference is read; Apache counts a request
when it ends, so the reference sees two more accesses (the source's two requests); nginx counts a
request when it starts, so the reference sees one more request and one more accepted connection
(its own).
"""

from __future__ import annotations

import dataclasses
import signal
import struct
import subprocess
import sys
import time

import pytest
from conftest import ROOT, async_wait_for, free_port, http_get, pid_alive, status_auto, wait_for

from mpmcore.model import NginxCounts, ProcessRow, WorkerRow
from mpmcore.procs import terminate
from mpmcore.scoreboard import STATE_LETTERS
from mpmcore.sources import apache, attach
from mpmcore.sources.attach import (
    SUMMARY_KEYS,
    ApacheSource,
    AutoSource,
    NginxSource,
    SourceFrame,
    grid_frame,
    make_source,
    parse_auto,
    parse_spec,
    parse_status_html,
    parse_stub_status,
    summary_message,
)

SLOW = 5  # slowloris connections: each holds a worker in R (Apache) / a Reading connection (nginx)
AGREE_DEADLINE = 15.0

APACHE_DIRECTIVES = {
    "prefork": {"StartServers": 5, "MinSpareServers": 3, "MaxSpareServers": 10, "MaxRequestWorkers": 20},
    # ThreadsPerChild 25 (Apache's default): the worker grid's row width is inferred, not given
    "worker": {"ServerLimit": 4, "ThreadsPerChild": 25, "MaxRequestWorkers": 100, "StartServers": 2,
               "MinSpareThreads": 10, "MaxSpareThreads": 75},
    "event": {"ServerLimit": 4, "ThreadsPerChild": 10, "MaxRequestWorkers": 40, "StartServers": 2,
              "MinSpareThreads": 5, "MaxSpareThreads": 20},
}


# -- servers -------------------------------------------------------------------------------------
@pytest.fixture
def slowloris():
    procs: list[subprocess.Popen] = []

    def start(port: int) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "mpmcore.cli", "traffic", "slowloris",
                              "--target", f"http://127.0.0.1:{port}/", "--connections", str(SLOW),
                              "--duration", "20", "--quiet", "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
        procs.append(p)
        return p

    yield start
    for p in procs:
        terminate(p, 10, signal.SIGINT)  # the CLI stops its pattern and its runner on Ctrl-C


def _counts(letters: str) -> dict[str, int]:
    return {ch: letters.count(ch) for ch in STATE_LETTERS}


# -- Apache, each MPM ------------------------------------------------------------------------------
@pytest.mark.apache
@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_apache_source_matches_apaches_own_auto(mpm, real_apache, slowloris):
    port = real_apache(mpm, APACHE_DIRECTIVES[mpm])
    url = f"http://127.0.0.1:{port}/server-status"
    source = make_source(url)
    assert isinstance(source, AutoSource)  # detected from the page
    first = source.poll()
    assert first.ok, first.error
    assert source.kind == "apache" and first.kind == "apache"
    slowloris(port)
    wait_for(lambda: _counts(status_auto(port)["Scoreboard"])["R"] >= SLOW, timeout=15, what="slowloris in R")

    def agree():
        frame = source.poll()
        ref = status_auto(port)
        if not frame.ok:
            return None
        s = frame.summary
        same = (s.busy == int(ref["BusyWorkers"]) and s.idle == int(ref["IdleWorkers"])
                and s.graceful == int(ref["GracefulWorkers"])
                and s.state_counts == _counts(ref["Scoreboard"])
                and s.mpm_generation == int(ref["ParentServerMPMGeneration"])
                # the reference sees the source's two requests counted, nothing else
                and s.totals is not None and int(ref["Total Accesses"]) - (s.totals.accesses or 0) == 2)
        if mpm == "event":
            same = same and all(getattr(s, k) == int(ref[a]) for k, a in (
                ("processes", "Processes"), ("stopping", "Stopping"), ("conns_total", "ConnsTotal"),
                ("conns_async_keep_alive", "ConnsAsyncKeepAlive"), ("conns_async_writing", "ConnsAsyncWriting"),
                ("conns_async_closing", "ConnsAsyncClosing")))
        return frame if same else None

    frame = wait_for(agree, timeout=AGREE_DEADLINE, interval=0.05, what="source and ?auto agree")
    s = frame.summary
    assert s.mpm == mpm and {f.name for f in dataclasses.fields(s)} >= set(SUMMARY_KEYS)
    assert s.count("R") >= SLOW
    assert frame.letters == s.scoreboard and len(frame.letters) > 0

    # the HTML page: per-worker rows (ExtendedStatus On) with the slowloris slots and live PIDs
    assert frame.capabilities.workers and frame.workers
    readers = [w for w in frame.workers if w.status == "R"]
    assert len(readers) >= SLOW
    assert all(w.pid and pid_alive(w.pid) for w in readers)
    assert all(w.proc is not None and w.generation == s.mpm_generation for w in readers)
    assert any(w.request and "/server-status" in w.request for w in frame.workers)
    # each reader is placed in its own grid cell (mod_status lists every busy slot, in slot order),
    # one the scoreboard shows in R (the slowloris slots stay R between ?auto and the page)
    cols = frame.layout.cols
    cells = [(w.proc, w.thread) for w in readers]
    assert all(t is not None for _, t in cells) and len(set(cells)) == len(cells), cells
    assert all(frame.letters[p * cols + t] == "R" and frame.worker_at(p, t).status == "R"
               for p, t in cells), (cells, frame.letters)

    lay = frame.layout
    if mpm == "prefork":
        assert lay.cols == 1 and not lay.inferred
        assert s.processes == len(frame.letters) - frame.letters.count(".")
    elif mpm == "worker":
        assert lay.cols == 25 and lay.inferred  # Apache's default, inferred from the scoreboard
        assert any("ThreadsPerChild" in c and "inferred" in c for c in frame.cannot_show)
    else:
        # event's per-process table: the real ThreadsPerChild, one row per child, live PIDs
        assert lay.cols == 10 and not lay.inferred and s.threads_per_child == 10
        assert frame.capabilities.process_table and len(s.procs) == s.processes
        assert all(pid_alive(p.pid) for p in s.procs)
        assert sum(p.busy for p in s.procs) >= SLOW
        assert any("lag" in c for c in frame.cannot_show)
    assert any("memory" in c for c in frame.cannot_show)
    assert frame.traffic_target == f"http://127.0.0.1:{port}/"

    # the same frame drives the page: the grid frame, the summary message, "what is happening"
    g = grid_frame(frame, seq=7, now_ms=1000.0)
    head = attach.GRID_HEADER.unpack_from(g)
    assert head[0] == attach.GRID_MAGIC and head[4] == 7
    rows, cols = head[7], head[8]
    assert (rows, cols) == (lay.rows, lay.cols)
    statuses = g[attach.GRID_HEADER.size: attach.GRID_HEADER.size + rows * cols]
    assert "".join(STATE_LETTERS[b] for b in statuses).rstrip(".") == frame.letters[: rows * cols].rstrip(".")
    msg = summary_message(frame)
    assert msg.busy == s.busy and msg.counts == s.state_counts and msg.source == frame.source
    from mpmlab.services.insights import describe  # the dashboard's reading, on an attached Apache's summary
    insight = describe(s)
    assert "no child process" not in insight.headline
    assert any("reading requests" in t for t in [insight.headline, *insight.details]), insight


# -- nginx ---------------------------------------------------------------------------------------
def test_nginx_source_matches_stub_status(real_nginx, slowloris):
    port = real_nginx
    source = make_source(f"http://127.0.0.1:{port}/nginx_status")
    assert isinstance(source, NginxSource)
    slowloris(port)

    def own() -> NginxCounts:
        status, _, body = http_get(port, "/nginx_status")
        assert status == 200
        counts = parse_stub_status(body.decode())
        assert counts is not None
        return counts

    wait_for(lambda: own().reading >= SLOW, timeout=15, what="slowloris connections reading")

    def agree():
        frame = source.poll()
        ref = own()
        if not frame.ok:
            return None
        c = frame.connections
        same = (c is not None and all(getattr(c, k) == getattr(ref, k) for k in ("active", "reading", "writing",
                                                                                   "waiting"))
                # the reference's own connection and request are counted in its own answer
                and all(getattr(ref, k) - getattr(c, k) == 1 for k in ("accepts", "handled", "requests")))
        return frame if same else None

    frame = wait_for(agree, timeout=AGREE_DEADLINE, interval=0.05, what="source and stub_status agree")
    s = frame.summary
    assert frame.kind == "nginx" and s.mpm == "nginx" and {f.name for f in dataclasses.fields(s)} >= set(SUMMARY_KEYS)
    assert frame.connections.reading >= SLOW
    assert s.conns_total == frame.connections.active
    assert s.conns_async_keep_alive == frame.connections.waiting
    assert s.totals is not None and s.totals.accesses == frame.connections.requests
    assert s.state_counts is None and s.busy is None and frame.letters is None
    assert grid_frame(frame) is None
    assert not frame.capabilities.scoreboard
    assert any("nginx has no scoreboard" in c for c in frame.cannot_show)
    assert s.server_version.startswith("nginx")


def test_attach_detects_nginx_and_refuses_a_non_status_page(real_nginx):
    port = real_nginx
    auto = make_source(f"http://127.0.0.1:{port}/nginx_status", kind=None)
    assert auto.poll().ok
    detected = AutoSource(f"http://127.0.0.1:{port}/nginx_status")
    frame = detected.poll()
    assert frame.ok and frame.kind == "nginx" and detected.kind == "nginx"
    # a page that is not a status page: clear error, no exception
    for src in (AutoSource(f"http://127.0.0.1:{port}/"), ApacheSource(f"http://127.0.0.1:{port}/"),
                NginxSource(f"http://127.0.0.1:{port}/")):
        f = src.poll()
        assert not f.ok and f.error_kind == "not-status-page", (type(src).__name__, f.error)
    f = ApacheSource(f"http://127.0.0.1:{port}/nginx_status").poll()
    assert not f.ok and "nginx" in f.error


# -- errors: never an exception, always a sentence -------------------------------------------------
def test_poll_errors_become_frames():
    closed = free_port()
    cases = {
        f"http://127.0.0.1:{closed}/server-status": "unreachable",
        "http://192.0.2.1/server-status": "not-allowed",  # TEST-NET-1: refused before any packet
        "ftp://127.0.0.1/server-status": "bad-url",
        "http://127.0.0.1:70000/server-status": "bad-url",
        "http:///server-status": "bad-url",
        "http://user:pw@127.0.0.1:1/server-status": "bad-url",
    }
    for url, kind in cases.items():
        for src in (ApacheSource(url), NginxSource(url), AutoSource(url)):
            t0 = time.monotonic()
            f = src.poll()
            assert time.monotonic() - t0 < 2.0
            assert not f.ok and f.error_kind == kind, (url, type(src).__name__, f.error_kind, f.error)
            assert f.error and f.summary is None
    f = ApacheSource("http://192.0.2.1/server-status").poll()
    assert "MPMLAB_ALLOW_REMOTE_ATTACH" in f.error


def test_poll_loop_keeps_going():
    """The dashboard's poller: errors are frames, a failing handler is logged, cancel stops it."""
    import asyncio

    from mpmcore.sources.attach import poll_loop

    frames = []

    def on_frame(f):
        frames.append(f)
        if len(frames) == 2:
            raise RuntimeError("a bug in the handler")

    async def run():
        task = asyncio.create_task(poll_loop(ApacheSource(f"http://127.0.0.1:{free_port()}/server-status"),
                                             0.02, on_frame))
        def four_frames() -> bool:
            assert not task.done(), "the poll loop ended"
            return len(frames) >= 4
        await async_wait_for(four_frames, 10, "4 frames from the poll loop", interval=0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task

    task = asyncio.run(run())
    assert task.cancelled()
    assert all(not f.ok and f.error_kind == "unreachable" for f in frames)


def test_spec_and_options():
    assert parse_spec("ev=apache+http://127.0.0.1:1/server-status#threads_per_child=25") == (
        "apache", "ev", "http://127.0.0.1:1/server-status", {"threads_per_child": 25})
    assert parse_spec("http://[::1]:8081/server-status") == (None, None, "http://[::1]:8081/server-status", {})
    with pytest.raises(ValueError, match="threads_per_child"):
        parse_spec("http://127.0.0.1:1/s#threads_per_child=x")
    src = make_source("w=http://127.0.0.1:1/server-status#threads_per_child=16")
    assert src.name == "w" and src.kw["threads_per_child"] == 16
    assert isinstance(make_source("http://127.0.0.1:1/stub_status"), NginxSource)
    assert isinstance(make_source("apache+http://127.0.0.1:1/x"), ApacheSource)


# -- the HTML page parser on its own (hostile and odd input) -------------------------------------------
def test_status_html_parser_is_robust():
    none = attach.StatusTables()
    assert parse_status_html("") == none
    assert parse_status_html("<html><table><tr><td>x") == none
    assert parse_status_html("<<<>>></table></tr><td>") == none
    assert parse_status_html("<pre>not a scoreboard</pre>") == none
    assert parse_status_html("<pre>__W_\n_R..\n</pre>").letters == "__W__R.."
    # an older Apache (no Slot, no graceful, no wait-io columns), unclosed cells, entities
    old = ("<table><tr><th rowspan=2>PID</th><th rowspan=2>Stopping</th><th colspan=2>Connections</th>"
           "<th colspan=2>Threads</th><th colspan=3>Async connections</th></tr>"
           "<tr><th>total<th>accepting<th>busy<th>idle<th>writing<th>keep-alive<th>closing</tr>"
           "<tr><td>123<td>yes (old gen)<td>4<td>no<td>2<td>23<td>0<td>3<td>1</tr>"
           "<tr><td>Sum<td>1<td>1<td>4<td>&nbsp;<td>2<td>23<td>0<td>3<td>1</tr></table>"
           "<table border=0><tr><th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>Client</th>"
           "<th>VHost</th><th>Request</th></tr>"
           "<tr><td><b>0-2</b></td><td>123</td><td>1/2/3</td><td><b>R</b></td><td>::1</td>"
           "<td nowrap>a&amp;b:80</td><td nowrap>GET /&lt;script&gt; HTTP/1.1</td></tr></table>")
    t = parse_status_html(old)
    assert t.procs == (ProcessRow(slot=None, pid=123, generation=None, mpm="?", stopping=True, old_gen=True,
                                  connections=4, accepting=False, busy=2, idle=23, writing=0, keep_alive=3,
                                  closing=1),)
    assert t.workers is not None
    (w,) = t.workers
    assert (w.proc, w.generation, w.pid, w.status) == (0, 2, 123, "R")
    assert (w.conn_count, w.my_access_count, w.access_count) == (1, 2, 3)
    assert w.vhost == "a&b:80" and w.request == "GET /<script> HTTP/1.1" and w.client == "::1"


def _rows(*spec: str) -> tuple[WorkerRow, ...]:
    """Worker-table rows from "proc:letter" strings, in the page's order."""
    return tuple(WorkerRow(proc=int(p), thread=None, pid=None, status=ch) for p, ch in (x.split(":") for x in spec))


def _place(letters: str, tpc: int, rows: tuple[WorkerRow, ...]) -> tuple[int, list[int | None]]:
    """(how many were placed, the thread of each row) by assign_threads."""
    placed_rows, n = attach.assign_threads(letters, tpc, rows)
    assert placed_rows is not None
    return n, [w.thread for w in placed_rows]


def test_worker_rows_are_placed_only_where_certain():
    # every slot listed (all served before): placed one to one
    assert _place("_R_W", 4, _rows("0:_", "0:R", "0:_", "0:W")) == (4, [0, 1, 2, 3])
    # busy slots anchor; a gap with as many idle rows as idle slots is placed, a gap with fewer is
    # not (which idle slot served before is unknown), a gap with none has nothing to place
    assert _place("R__K___W", 8, _rows("0:R", "0:_", "0:_", "0:K", "0:_", "0:W")) == (5, [0, 1, 2, 3, None, 7])
    # a dead slot that served ('.') is listed too; alone in its gap it is placed, among never-used
    # idle and dead slots it is not
    assert _place("W_..R.", 3, _rows("0:W", "1:.", "1:R")) == (3, [0, 0, 1])
    assert _place("W_.._._R", 4, _rows("0:W", "1:.", "1:R")) == (2, [0, None, 3])
    # the page and the scoreboard disagree about process 1 (a request ended in between): it is
    # left alone, process 0 is not
    assert _place("R___WW", 3, _rows("0:R", "1:W", "1:K")) == (1, [0, None, None])
    assert _place("R_K_", 2, _rows("0:R", "1:W")) == (1, [0, None])
    # prefork: one slot a process
    assert _place("_.R", 1, _rows("0:_", "2:R")) == (2, [0, 0])
    # a process beyond the scoreboard, no rows, no letters: nothing placed, nothing raised
    assert _place("R", 1, _rows("9:R")) == (0, [None])
    assert attach.assign_threads("", 4, ()) == ((), 0) and attach.assign_threads("R", 1, None) == (None, 0)


def test_auto_parser_reads_like_apache_exporter():
    name, f = parse_auto("::1\nServerMPM: event\nTotal kBytes: 12\nCPULoad: .5\nnot a field\n"
                         "Scoreboard: __W..\nWeird Key:: x\n")
    assert name == "::1" and f["ServerMPM"] == "event" and f["Scoreboard"] == "__W.."
    assert f["Weird Key"] == ": x" and "not a field" not in f
    assert apache._float_field(f, "CPULoad") == 0.5


def test_grid_header_is_the_dashboards():
    from mpmlab.services.grid import HEADER, MAGIC, VERSION
    assert attach.GRID_HEADER.format == HEADER.format
    assert (attach.GRID_MAGIC, attach.GRID_VERSION) == (MAGIC, VERSION)
    assert struct.calcsize(attach.GRID_HEADER.format) == HEADER.size


def test_attach_over_https_to_a_tls_core(server_factory):
    """A status page behind TLS (mpmcore's --tls, self-signed): the source reads it like the plain
    one, with one client TLS context for every poll."""
    attach._tls_context.cache_clear()  # counted from this test on, whatever ran before
    srv = server_factory(mpm="worker", tls=True)
    url = f"https://127.0.0.1:{srv.tls_port}/server-status"
    for src in (ApacheSource(url), AutoSource(url)):
        def good(src: ApacheSource | AutoSource = src) -> SourceFrame | None:
            fr = src.poll()
            return fr if fr.ok else None
        f = wait_for(good, timeout=15, interval=0.2, what=f"a good poll of {url} by {type(src).__name__}")
        assert f.summary is not None and f.summary.mpm == "worker" and f.summary.count("_") >= 1, f.summary
        src.close()
    info = attach._tls_context.cache_info()
    assert info.misses == 1 and info.hits >= 1, info  # made once, by the first poll; reused by every other
