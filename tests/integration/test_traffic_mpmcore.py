"""The traffic generator against the embedded server: what each pattern holds shows in its scoreboard,
slot by slot, with the pattern's name (X-Traffic-Pattern) recorded in the slot that serves it."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, wait_for

from mpmcore import scoreboard as sb
from mpmcore.procs import terminate


def traffic(pattern: str, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mpmcore.cli", "traffic", pattern, "--target",
                             f"http://127.0.0.1:{port}/", "--json", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))


def finish(p: subprocess.Popen, timeout: float = 60) -> dict:
    """The generator's JSON summary once it exits; stopped by its pid if it does not in time."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate(p, 10)
        p.stdout.close()
        p.stderr.close()
        raise
    assert p.returncode == 0, err
    return json.loads(out)


def slots_by_pattern(srv, state: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, _, w in sb.live_workers(srv.snapshot()):
        if w.status == state:
            key = w.pattern.decode()
            out[key] = out.get(key, 0) + 1
    return out


def test_slowloris_holds_threads_in_R_under_event_too(server_factory):
    srv = server_factory(mpm="event", settings={"ServerLimit": 1, "ThreadsPerChild": 10, "MaxRequestWorkers": 10,
                                                "StartServers": 1, "MinSpareThreads": 1, "MaxSpareThreads": 10})
    wait_for(lambda: srv.count_states()["_"] == 10, what="10 idle threads")
    # the first trickled header line would come after 30 s, past the run's 6 s: what the slots show
    # comes from the partial head sent at the start
    p = traffic("slowloris", srv.port, "--connections", "6", "--interval", "30", "--duration", "6")
    try:
        # reading a request happens in a worker under every MPM: 6 threads held in R
        wait_for(lambda: srv.count_states()["R"] == 6, timeout=15, what="6 R slots")
        # the pattern is known from its header line, before the request is complete (and before any
        # further line: the pattern header is not the head's last line, see request_bytes)
        wait_for(lambda: slots_by_pattern(srv, sb.BUSY_READ) == {"slowloris": 6}, timeout=4,
                 what="R slots tagged slowloris")
    finally:
        summary = finish(p)
    # it ran its 6 s, each of its 6 connections with its one never-finished request
    assert summary["pattern"] == "slowloris" and summary["stop_reason"] == "duration", summary
    total = summary["total"]
    assert total["connections_opened"] >= 6 and total["requests"] >= total["connections_opened"], total
    wait_for(lambda: srv.count_states()["R"] == 0, what="R slots released when the pattern stopped")


def test_browsers_hold_six_connections_each_and_pattern_names_in_slots(server_factory):
    srv = server_factory(mpm="worker", settings={"ServerLimit": 2, "ThreadsPerChild": 16, "MaxRequestWorkers": 32,
                                                 "StartServers": 2, "MinSpareThreads": 1, "MaxSpareThreads": 32,
                                                 "KeepAliveTimeout": 30})
    wait_for(lambda: srv.count_states()["_"] == 32, what="32 idle threads")
    p = traffic("browsers", srv.port, "--clients", "3", "--think-time", "10", "--duration", "5",
                "--asset-path", "/bytes/2048")
    try:
        # under worker every kept-alive browser connection holds a thread in K, tagged "browsers"
        held = wait_for(lambda: (k := slots_by_pattern(srv, sb.BUSY_KEEPALIVE)).get("browsers", 0) == 18 and k,
                        timeout=15, what="18 K slots held by browsers")
        assert held == {"browsers": 18}
    finally:
        finish(p)


def test_steady_rate_matches_what_the_server_counted(server_factory):
    srv = server_factory(mpm="event", settings={"StartServers": 1})
    before = int(srv.auto()["Total Accesses"])
    summary = finish(traffic("steady", srv.port, "--model", "open", "--rate", "200", "--duration", "3",
                             "--path", "/bytes/512"))
    total = summary["patterns"][0]["total"] if "patterns" in summary else summary["total"]
    after = int(srv.auto()["Total Accesses"])
    counted = after - before - 1  # minus the first ?auto request itself
    assert total["responses"] > 400
    assert abs(total["responses"] - counted) <= 0.1 * counted, (total["responses"], counted)


def _unsafe_settings(mpm: str, pool: int) -> dict[str, int]:
    if mpm == "prefork":
        return {"StartServers": 8, "MinSpareServers": 8, "MaxSpareServers": 16, "UnsafeFastCGIPool": pool}
    return {"ServerLimit": 1, "ThreadsPerChild": 8, "MaxRequestWorkers": 8, "StartServers": 1,
            "MinSpareThreads": 1, "MaxSpareThreads": 8, "UnsafeFastCGIPool": pool}


def test_corrupted_counts_unsafe_answers_with_another_requests_state(server_factory):
    # /unsafe answers X-Unsafe-Corrupted: 1 when its module globals were overwritten by a concurrent
    # request (content/unsafe.py): the generator's "corrupted" counter is how many such answers came
    counted = {}
    for mpm, pool in (("prefork", 0), ("worker", 0), ("worker", 2)):
        srv = server_factory(mpm=mpm, settings=_unsafe_settings(mpm, pool))
        wait_for(lambda s=srv: s.count_states()["_"] >= 8, what="8 idle slots")
        summary = finish(traffic("steady", srv.port, "--clients", "6", "--path", "/unsafe?ms=30",
                                 "--max-requests", "120", "--duration", "20"))
        total = summary["total"]
        assert total["status"]["2xx"] == total["responses"] >= 120 and total["errors_total"] == 0, total
        # counted with its response, never apart (a stop between the two once made 1496 of 1491)
        assert total["corrupted"] <= total["responses"], total
        counted[(mpm, pool)] = total["corrupted"]
        srv.stop()
    assert counted[("prefork", 0)] == 0 and counted[("worker", 2)] == 0, counted
    assert counted[("worker", 0)] > 0, counted
