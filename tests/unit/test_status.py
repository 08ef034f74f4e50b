"""mod_status from a real shared-memory scoreboard: Apache's counting rules, ?auto exactly as
Apache 2.4.71 prints it (checked by Prometheus' apache_exporter), HTML escaping, JSON, options."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid

import pytest
from conftest import wait_for
from exporter_fixtures import scrape

from mpmcore import scoreboard as sb
from mpmcore.http.protocol import Request
from mpmcore.scoreboard import BUSY_KEEPALIVE, BUSY_READ, GRACEFUL, READY, Scoreboard, ScoreboardReader
from mpmcore.status import aprfmt
from mpmcore.status import modstatus as status

GEN = 2  # the running generation in these scoreboards


@pytest.fixture
def board(request):
    """make(procs, threads, mpm) -> a fresh real scoreboard; unlinked and closed afterwards."""
    made = []

    def make(procs: int, threads: int, mpm: str = "event", **glob) -> Scoreboard:
        board = Scoreboard.create(f"/mpmlab_test_{uuid.uuid4().hex[:12]}", procs, threads)
        made.append(board)
        fields = dict(mpm=sb.MPM_IDS[mpm], server_limit=procs, thread_limit=threads, running_generation=GEN,
                      config_generation=GEN + 1)
        fields.update(glob)
        board.update_global(**fields)
        return board

    yield make
    for b in made:
        b.unlink()
        b.close()


def snap_of(board: Scoreboard, graceful_view: bool = False) -> sb.Snapshot:
    """The raw states as the threads wrote them: Apache's counting rules are tested on those (the
    reader's graceful view, which shows old-generation slots G, has its own test below)."""
    with ScoreboardReader(board.name) as reader:
        return reader.snapshot(graceful_view=graceful_view)


def fill(board: Scoreboard, proc: int, pid: int, gen: int, states: str, quiescing: bool = False) -> None:
    """Process ``proc`` with ``pid`` and each thread slot in the state of its letter in ``states``."""
    board.update_proc(proc, pid=pid, generation=gen, quiescing=int(quiescing), mpm=board.glob.mpm,
                      threads=len(states))
    by_letter = {v: k for k, v in sb.LETTERS.items()}
    for t, letter in enumerate(states):
        slot = board.slot(proc, t)
        slot.claim(pid, 1000 * proc + t, gen)
        slot.set(by_letter[letter])


def info_for(mpm: str, mrw: int, tpc: int, server_limit: int, **kw) -> status.ServerInfo:
    return status.ServerInfo(server_name="127.0.0.1", server_version="mpmlab/0.1.0 (Unix)",
                             built="Nov 26 2026 10:00:00", mpm=mpm, max_request_workers=mrw,
                             threads_per_child=tpc, server_limit=server_limit, **kw)


def parse_auto(text: str) -> tuple[str, list[tuple[str, str]]]:
    """As apache_exporter reads it: every line split at the first ': ' (the first line is the name)."""
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    pairs = []
    for line in lines[1:]:
        if line == "ServerUptime:":  # Apache prints nothing after it for a zero uptime
            pairs.append(("ServerUptime", ""))
            continue
        key, sep, value = line.partition(": ")
        assert sep, f"line without ': ' {line!r}"
        pairs.append((key, value))
    return lines[0], pairs


HEAD_KEYS = ["ServerVersion", "ServerMPM", "Server Built", "CurrentTime", "RestartTime",
             "ParentServerConfigGeneration", "ParentServerMPMGeneration", "ServerUptimeSeconds", "ServerUptime",
             "Load1", "Load5", "Load15"]
EXT_KEYS = ["Total Accesses", "Total kBytes", "Total Duration", "CPUUser", "CPUSystem", "CPUChildrenUser",
            "CPUChildrenSystem"]
EVENT_KEYS = ["Processes", "Stopping", "ConnsTotal", "ConnsAsyncWaitIO", "ConnsAsyncWriting",
              "ConnsAsyncKeepAlive", "ConnsAsyncClosing"]
# APR's %g: no leading zero, no trailing zeros, at most 6 significant digits
APR_G = re.compile(r"^(0|[1-9]\d*(\.\d*[1-9])?|\.\d*[1-9]|\d\.\d*e[+-]\d+)$")


def event_board(board):
    """4 process slots x 4 threads, event, ThreadsPerChild 4, MaxRequestWorkers 12 (3 children)."""
    b = board(4, 4, "event")
    fill(b, 0, 100, GEN, "__WS")  # current: 2 idle, 1 busy, S is neither
    fill(b, 1, 101, GEN - 1, "_KGR")  # old generation, not quiescing: READY not idle; G graceful; K, R busy
    fill(b, 2, 102, GEN - 1, "WWG_", quiescing=True)  # quiescing: counts nothing
    # slot 3 is beyond MaxRequestWorkers: its pid is gone but one thread still finishes (event's old child)
    b.slot(3, 1).claim(103, 3001, GEN - 1)
    b.slot(3, 1).set(GRACEFUL)
    b.update_child(0, pid=100, connections=7, keep_alive=3, write_completion=1, lingering_close=2, wait_io=1)
    b.update_child(1, pid=101, connections=2, not_accepting=1)
    b.update_child(2, pid=999, connections=50)  # written by another child: not this one's
    return b


# -- counting ---------------------------------------------------------------------------------
def test_counting_rules_follow_apache(board):
    b = event_board(board)
    s = status.summarize(snap_of(b), info_for("event", 12, 4, 4))
    assert (s.busy, s.idle, s.graceful) == (3, 2, 1)
    assert s.scoreboard == "__WS" + "_KGR" + "WWG_" + "G"
    assert s.state_counts["G"] == 3 and s.state_counts["_"] == 4 and s.state_counts["."] == 0
    assert (s.processes, s.stopping) == (3, 1)
    assert s.conns_total == 7 + 2 + 0  # slot 2's counters came from pid 999
    assert (s.conns_async_keep_alive, s.conns_async_writing, s.conns_async_closing,
            s.conns_async_wait_io) == (3, 1, 2, 1)
    rows = {p.slot: p for p in s.procs}
    assert (rows[0].busy, rows[0].graceful, rows[0].idle, rows[0].accepting) == (1, 0, 2, True)
    # per-process idle counts READY of any generation (Apache's thread_idle_buffer)
    assert (rows[1].busy, rows[1].graceful, rows[1].idle, rows[1].accepting) == (2, 1, 1, False)
    assert rows[1].old_gen and not rows[0].old_gen
    assert rows[2].stopping and (rows[2].busy, rows[2].idle) == (0, 0)
    assert 3 not in rows


def test_readers_show_what_each_mpm_writes_during_a_graceful_restart(board):
    b = event_board(board)
    s = status.summarize(snap_of(b, graceful_view=True), info_for("event", 12, 4, 4))
    # G is written by the children themselves, per MPM (docs/graceful-restart.md); a reader no
    # longer paints every old-generation slot G, so old-generation K, R and W stay as written
    assert s.scoreboard == "__WS" + "_KGR" + "WWG_" + "G"
    assert s.scoreboard == status.summarize(snap_of(b), info_for("event", 12, 4, 4)).scoreboard


def test_fcgi_processes_are_not_workers(board):
    b = board(3, 2, "worker")
    fill(b, 0, 200, GEN, "_W")
    fill(b, 1, 201, GEN, "WW")
    b.update_proc(1, kind=sb.KIND_FCGI)
    s = status.summarize(snap_of(b), info_for("worker", 6, 2, 3))
    assert (s.busy, s.idle, s.processes) == (1, 1, 1)
    assert [p.pid for p in s.fcgi_procs] == [201]


def test_scoreboard_string_length_rules(board):
    # prefork after a live switch from worker: capacity 8 x 4, MaxRequestWorkers 5, ThreadsPerChild 1
    b = board(8, 4, "prefork")
    fill(b, 0, 300, GEN, "W")
    fill(b, 1, 301, GEN, "_")
    b.slot(1, 2).claim(290, 2, GEN - 1)  # a worker-MPM thread still finishing in slot 1
    b.slot(1, 2).set(GRACEFUL)
    b.slot(6, 0).claim(296, 0, GEN - 1)  # a live child beyond MaxRequestWorkers
    b.slot(6, 0).set(BUSY_KEEPALIVE)
    info = info_for("prefork", 5, 1, 8)
    s = status.summarize(snap_of(b), info)
    assert s.scoreboard == "W" + "_G" + "..." + "K"
    assert len(s.scoreboard) == 5 + 2

    # threaded: exactly MaxRequestWorkers letters when nothing lives beyond; ThreadLimit > ThreadsPerChild
    b = board(4, 8, "worker")
    fill(b, 0, 400, GEN, "___W")
    info = info_for("worker", 12, 4, 4)
    letters = status.summarize(snap_of(b), info).scoreboard
    assert letters == "___W" + "." * 8
    auto = status.render_auto(snap_of(b), info)
    assert auto.endswith(f"\nScoreboard: {letters}\n")
    html_page = status.render_html(snap_of(b), info)
    assert f"<pre>{letters}</pre>" in html_page


def test_html_scoreboard_rows_of_64(board):
    b = board(4, 64, "worker")
    for p in range(3):
        fill(b, p, 500 + p, GEN, "_" * 64)
    page = status.render_html(snap_of(b), info_for("worker", 200, 50, 4))
    pre = page.split("<pre>", 1)[1].split("</pre>", 1)[0]
    # ThreadsPerChild 50 of ThreadLimit 64: the 14 extra threads are live, so they show; slot 3 shows 50
    assert pre.split("\n") == ["_" * 64] * 3 + ["." * 50]


# -- ?auto --------------------------------------------------------------------------------------
def serve_requests(board, proc: int, thread: int, sizes: list[int], cpu: tuple[float, float] = (0.0, 0.0)) -> None:
    slot = board.slot(proc, thread)
    for n in sizes:
        slot.new_connection("127.0.0.1", BUSY_READ)
        slot.request_started("GET / HTTP/1.1", "localhost:80", "http/1.1", None)
        slot.request_finished(n, *cpu)
        slot.set(READY)


def test_auto_key_order_and_formats_event(board):
    b = event_board(board)
    serve_requests(b, 0, 0, [1000, 2000, 3000], cpu=(0.5, 0.25))
    serve_requests(b, 1, 0, [4000])
    restart = time.time() - 3723
    b.update_global(restart_time=restart, parent_cpu_user=0.1)
    info = info_for("event", 12, 4, 4)
    snap = snap_of(b)
    name, pairs = parse_auto(status.render_auto(snap, info, now=restart + 3723.4))
    assert name == "127.0.0.1"
    keys = [k for k, _ in pairs]
    assert keys == HEAD_KEYS + EXT_KEYS + ["CPULoad", "Uptime", "ReqPerSec", "BytesPerSec", "BytesPerReq",
                                           "DurationPerReq", "BusyWorkers", "GracefulWorkers", "IdleWorkers"] \
        + EVENT_KEYS + ["Scoreboard"]
    v = dict(pairs)
    assert v["ServerVersion"] == "mpmlab/0.1.0 (Unix)" and v["ServerMPM"] == "event"
    assert v["Server Built"] == "Nov 26 2026 10:00:00"
    assert (v["ParentServerConfigGeneration"], v["ParentServerMPMGeneration"]) == (str(GEN + 1), str(GEN))
    assert v["ServerUptimeSeconds"] == v["Uptime"] == "3723"
    assert v["ServerUptime"] == "1 hour 2 minutes 3 seconds"
    assert re.fullmatch(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \d\d-"
                        r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{4} \d\d:\d\d:\d\d \S+",
                        v["CurrentTime"])
    for k in ("Load1", "Load5", "Load15"):
        assert re.fullmatch(r"\d+\.\d\d", v[k])
    assert v["Total Accesses"] == "4"
    assert v["Total kBytes"] == str(10000 // 1024)  # an integer, bytes >> 10
    assert re.fullmatch(r"\d+", v["Total Duration"])
    # a slot's CPU is its thread's running total (the last write), plus the parent's
    assert v["CPUUser"] == ".6" and v["CPUSystem"] == ".25" and v["CPUChildrenUser"] == "0"
    assert v["CPULoad"] == ".0228311"  # 85 ticks / 100 / 3723 s * 100
    assert v["ReqPerSec"] == ".0010744"  # 4 / 3723 in C float, APR's %g
    assert APR_G.match(v["ReqPerSec"]) and v["ReqPerSec"].startswith(".")  # no leading zero, like Apache
    assert v["BytesPerSec"] == status.apr_g(9 * 1024 / 3723) == "2.47542"
    assert v["BytesPerReq"] == "2304"
    for k in ("CPULoad", "ReqPerSec", "BytesPerSec", "BytesPerReq", "DurationPerReq"):
        assert APR_G.match(v[k]), (k, v[k])
    assert (v["BusyWorkers"], v["GracefulWorkers"], v["IdleWorkers"]) == ("3", "1", "2")
    assert (v["Processes"], v["Stopping"], v["ConnsTotal"], v["ConnsAsyncKeepAlive"]) == ("3", "1", "9", "3")
    assert v["Scoreboard"] == "__WS_KGRWWG_G"


def test_auto_optional_keys_and_other_mpms(board):
    b = board(2, 1, "prefork")
    fill(b, 0, 600, GEN, "_")
    b.update_global(restart_time=time.time())
    snap = snap_of(b)
    info = info_for("prefork", 2, 1, 2)
    _, pairs = parse_auto(status.render_auto(snap, info, now=snap.glob.restart_time + 0.5))
    keys = [k for k, _ in pairs]
    # no CPU, zero uptime, no accesses: CPULoad, the rates and the per-request figures are left out
    assert keys == HEAD_KEYS + EXT_KEYS + ["Uptime", "BusyWorkers", "GracefulWorkers", "IdleWorkers", "Scoreboard"]
    assert dict(pairs)["ServerUptime"] == "" and dict(pairs)["Scoreboard"] == "_."

    for mpm in ("worker", "prefork"):
        text = status.render_auto(snap, info_for(mpm, 2, 1, 2))
        assert not any(line.split(":")[0] in EVENT_KEYS for line in text.splitlines())

    no_ext = status.render_auto(snap, info_for("prefork", 2, 1, 2, extended_status=False))
    keys = [k for k, _ in parse_auto(no_ext)[1]]
    assert keys == HEAD_KEYS + ["BusyWorkers", "GracefulWorkers", "IdleWorkers", "Scoreboard"]


def test_apr_number_formats_match_apache():
    # values read off a real Apache/2.4.71 status page, fed the same counters
    assert status.apr_g(aprfmt.fdiv(26, 36)) == ".722222"
    assert status.apr_g(aprfmt.fdiv(aprfmt.f32(1024 * 18), 26)) == "708.923"
    assert status.apr_g(aprfmt.fdiv(2, 26)) == ".0769231"
    assert status.apr_g(aprfmt.fdiv(20, 3)) == "6.66667"
    assert status.apr_g(aprfmt.fdiv(9 * 1024, 3)) == "3072"
    assert status.apr_g(aprfmt.fdiv(9 * 1024, 20)) == "460.8"
    assert status.apr_g(aprfmt.fdiv(21, 31), 3) == ".677"
    assert status.apr_g(0.0) == "0" and status.apr_g(1e6) == "1.e+6"
    assert status.apr_f(0.02, 2) == "0.02" and status.apr_f(0, 2) == "0.00" and status.apr_f(7.66, 2) == "7.66"
    assert status.format_byte_out(330) == "330 B" and status.format_kbyte_out(10) == "10 kB"
    assert status.show_time(0) == "" and status.show_time(86400 + 61) == " 1 day 1 minute 1 second"


# -- HTML -----------------------------------------------------------------------------------------
def test_html_escapes_hostile_scoreboard_strings(board):
    b = board(2, 2, "event")
    fill(b, 0, 700, GEN, "__")
    slot = b.slot(0, 1)
    slot.new_connection('<img src=x onerror="alert(1)">', BUSY_READ)
    slot.request_started('GET /<script>alert("x")</script>?a=1&b=2\x1b[31m HTTP/1.1', 'evil"host:80',
                         "<b>proto", "<svg/onload=alert(2)>")
    page = status.render_html(snap_of(b), info_for("event", 4, 2, 2))
    for raw in ("<script>", "<img", "<svg", "<b>proto", 'evil"host', "\x1b"):
        assert raw not in page
    assert "&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;?a=1&amp;b=2\\x1b[31m" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "&lt;svg/onload=alert(2)&gt;" in page  # the mpmlab Pattern column
    assert "<th>Pattern</th>" in page and "mpmlab addition" in page
    # event's per-process table and the counts line, as Apache prints them
    assert ("<tr><td>0</td><td>700</td><td>no</td><td>0</td><td>yes</td><td>1</td><td>0</td><td>1</td>"
            in page)
    assert "1 requests currently being processed, 0 workers gracefully restarting, 1 idle workers" in page
    assert "<td><b>0-2</b></td><td>700</td><td>0/0/0</td><td><b>W</b>\n</td>" in page

    notable = status.render_html(snap_of(b), info_for("event", 4, 2, 2), notable=True, refresh=5)
    assert "<script>" not in notable and "<h2>Server Details</h2>" in notable and "<th>Srv</th>" not in notable
    assert '<meta http-equiv="refresh" content="5">' in notable


def test_html_memory_table_and_no_extended_status(board):
    b = board(2, 1, "prefork")
    fill(b, 0, 800, GEN, "W")
    b.update_proc(0, pss_kb=10240, rss_kb=20480)
    page = status.render_html(snap_of(b), info_for("prefork", 2, 1, 2))
    assert "Processes (mpmlab addition)" in page and "<td>10.0</td><td>20.0</td>" in page
    assert "<table rules=\"all\" cellpadding=\"1%\">\n<tr><th rowspan" not in page  # event only
    plain = status.render_html(snap_of(b), info_for("prefork", 2, 1, 2, extended_status=False))
    assert "PID Key" in plain and "800 in state: W" in plain and "ExtendedStatus On" in plain
    assert "Total accesses" not in plain


# -- JSON -----------------------------------------------------------------------------------------
def test_json_shape(board):
    b = event_board(board)
    serve_requests(b, 0, 0, [100])
    b.slot(0, 2).request_started("GET /slow HTTP/1.1", "localhost:80", "http/1.1", "slowloris")
    doc = json.loads(json.dumps(status.render_json(snap_of(b), info_for("event", 12, 4, 4))))
    for key in ("busy", "idle", "graceful", "scoreboard", "state_counts", "processes", "stopping", "conns_total",
                "conns_async_writing", "procs", "proc_sum", "totals", "workers", "uptime", "load", "mpm"):
        assert key in doc
    assert doc["totals"]["accesses"] == 1 and doc["totals"]["bytes"] == 100
    workers = {(w["proc"], w["thread"]): w for w in doc["workers"]}
    assert workers[(0, 2)]["pattern"] == "slowloris" and workers[(0, 2)]["status"] == "W"
    assert workers[(0, 0)]["access_count"] == 1 and workers[(0, 0)]["pid"] == 100
    assert (3, 0) not in workers and (3, 1) in workers  # dead slots left out
    assert {"pid", "generation", "client", "request", "vhost", "protocol", "ss", "req_ms", "duration_ms",
            "cpu", "conn_count", "my_access_count", "state"} <= set(workers[(0, 0)])


# -- the handler ----------------------------------------------------------------------------------
def call(board_, info, target: str, method: str = "GET", headers=()):
    req = Request(method=method, target=target, headers=[(k.lower(), v) for k, v in headers])
    return status.handle_status_request(req, lambda: snap_of(board_), lambda: info)


def test_handler_options_and_errors(board):
    b = event_board(board)
    info = info_for("event", 12, 4, 4)
    hdr = lambda r, n: dict((k.lower(), v) for k, v in r.headers).get(n.lower())  # noqa: E731

    r = call(b, info, "/server-status?auto&refresh=5")
    assert r.status == 200 and hdr(r, "content-type").startswith("text/plain") and hdr(r, "refresh") == "5"
    assert r.body.decode().startswith("127.0.0.1\nServerVersion: ")

    r = call(b, info, "/server-status")
    assert r.status == 200 and hdr(r, "content-type").startswith("text/html") and hdr(r, "refresh") is None
    assert b"<table border=\"0\">" in r.body

    r = call(b, info, "/server-status?refresh")
    assert hdr(r, "refresh") == "10"  # Apache's default
    r = call(b, info, "/server-status?notable;refresh=3600")
    assert hdr(r, "refresh") == "3600" and b"Server Details" in r.body

    for bad in ("refresh=0", "refresh=3601", "refresh=abc", "auto&refresh=-2"):
        r = call(b, info, f"/server-status?{bad}")
        assert r.status == 400 and b"refresh" in r.body, bad

    r = call(b, info, "/server-status?json")
    assert hdr(r, "content-type") == "application/json" and json.loads(r.body)["busy"] == 3
    r = call(b, info, "/server-status", headers=[("Accept", "application/json")])
    assert hdr(r, "content-type") == "application/json"
    r = call(b, info, "/server-status?auto", headers=[("Accept", "application/json")])
    assert hdr(r, "content-type").startswith("text/plain")

    r = call(b, info, "/server-status?auto", method="HEAD")
    assert r.status == 200 and hdr(r, "content-type").startswith("text/plain")
    for method in ("POST", "DELETE"):
        r = call(b, info, "/server-status", method=method)
        assert r.status == 405 and hdr(r, "allow") == "GET, HEAD"


# -- Prometheus' apache_exporter against our ?auto ------------------------------------------------
@pytest.fixture
def auto_server(request):
    """A tiny real HTTP server on loopback answering /server-status?auto with render_auto(...)."""
    holder = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = status.render_auto(holder["snap"](), holder["info"]).encode("latin-1")
            self.send_response(200)
            self.send_header("Content-Type", status.AUTO_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    holder["port"] = server.server_address[1]
    yield holder
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_prometheus_apache_exporter_reads_our_auto(board, auto_server, exporter):
    b = event_board(board)
    serve_requests(b, 0, 0, [1500] * 6)
    serve_requests(b, 1, 0, [700] * 3)
    info = info_for("event", 12, 4, 4)
    auto_server["snap"] = lambda: snap_of(b)
    auto_server["info"] = info
    port = exporter(f"http://127.0.0.1:{auto_server['port']}/server-status?auto")
    values = wait_for(lambda: scrape(port), timeout=10, what="the exporter's metrics")
    s = status.summarize(snap_of(b), info)
    assert values["apache_up"] == 1
    assert values['apache_workers{state="busy"}'] == s.busy == 3
    assert values['apache_workers{state="idle"}'] == s.idle == 2
    assert values["apache_accesses_total"] == 9
    assert values["apache_sent_kilobytes_total"] == (6 * 1500 + 3 * 700) >> 10
    letters = s.scoreboard
    for state, letter in (("idle", "_"), ("startup", "S"), ("read", "R"), ("reply", "W"), ("keepalive", "K"),
                          ("graceful_stop", "G"), ("open_slot", "."), ("closing", "C")):
        assert values[f'apache_scoreboard{{state="{state}"}}'] == letters.count(letter), state
    assert values['apache_processes{state="all"}'] == 3 and values['apache_processes{state="stopping"}'] == 1
    assert values['apache_connections{state="keepalive"}'] == 3
    assert values['apache_generation{type="mpm"}'] == GEN
    assert values['apache_info{mpm="event",version="mpmlab/0.1.0 (Unix)"}'] == 1


def test_reader_retries_a_record_caught_mid_write(board, monkeypatch):
    """A writer inside a record when the copy begins (odd sequence) that finishes just after the
    copy: both sequence reads are odd and equal, the live one is even again. The copy is torn and
    must be read again, not accepted because the record looks quiet by the time it is checked."""
    b = board(1, 2)
    reader = ScoreboardReader(b.name)
    try:
        rec = b.worker(0, 1)
        rec.seq += 1  # the writer is in: odd
        rec.access_count, rec.bytes_served = 7, 0  # half of its update done
        real_seqs, calls = sb._seqs, []

        def seqs_then_finish(*a):
            out = real_seqs(*a)
            calls.append(out)
            if len(calls) == 2:  # right after the copy's second sequence read: the writer finishes
                rec.bytes_served = 7
                rec.seq += 1
            return out
        monkeypatch.setattr(sb, "_seqs", seqs_then_finish)
        w = reader._copy_region(sb.WorkerRecord, reader._w_off, 2, sb.W_SIZE)[1]
        assert len(calls) == 2 and calls[0] == calls[1]  # both reads saw the same odd sequence
        assert (w.access_count, w.bytes_served) == (7, 7) and w.seq % 2 == 0
    finally:
        reader.close()
