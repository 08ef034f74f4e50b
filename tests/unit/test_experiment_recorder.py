"""The recorder's pieces that need no server: the process-tree usage, the error-log tail, and a
second's per-pattern figures from the generator's 250 ms stats frames."""

from __future__ import annotations

import os

from mpmcore.experiments.recorder import MAX_LOG_LINE, Recorder, _LogTail, tree_usage
from mpmcore.experiments.store import RunStore
from mpmcore.traffic.runstats import Figures, RunInfo, RunState, StatsFrame
from mpmcore.traffic.stats import PatternStats


def test_tree_usage_of_this_process():
    u = tree_usage([os.getpid()])
    assert u.processes >= 1
    assert u.pss_bytes and u.rss_bytes and 0 < u.pss_bytes <= u.rss_bytes
    assert u.cpu_seconds is not None and u.cpu_seconds > 0
    gone = tree_usage([2**22 + 12345])  # no such pid (above the kernel's pid_max default)
    assert (gone.pss_bytes, gone.cpu_seconds, gone.processes) == (None, None, 0)


def test_log_tail_reads_only_new_whole_lines(tmp_path):
    log = tmp_path / "error_log"
    log.write_text("old line from before the run\n")
    tail = _LogTail(log)
    assert tail.read() == []
    with open(log, "a") as f:
        f.write("first\nsecond\npart")
    assert tail.read() == ["first", "second"]
    with open(log, "a") as f:
        f.write("ial\n\n" + "x" * (MAX_LOG_LINE + 10) + "\n")
    assert tail.read() == ["partial", "x" * MAX_LOG_LINE]
    log.write_text("rotated\n")  # shorter than what was read: read again from its start
    assert tail.read() == ["rotated"]
    assert _LogTail(None).read() == []
    missing = _LogTail(tmp_path / "none")
    assert missing.read() == []


def _window(latencies_ms: list[float]) -> Figures:
    """One 250 ms stats window of a pattern with these response times (none: an empty window)."""
    s = PatternStats()
    for ms in latencies_ms:
        s.response(200, ms / 1000, ms / 2000, 100, corrected=ms / 500)
    return s.fold(s.started + 0.25)


def _info(live: Figures) -> RunInfo:
    return RunInfo(id="b-1", pattern="browsers", label="browsers", state=RunState.RUNNING, stop_reason=None,
                   error=None, target="http://127.0.0.1:8080/", address="127.0.0.1", started_at=1700000000.0,
                   elapsed=1.0, params={}, active_connections=6, peak_connections=6, live=live)


def test_a_seconds_latency_comes_from_its_windows_with_responses(tmp_path):
    # A page view's burst lands in one 250 ms window of the second; the second's last window is
    # often empty. The sample's p99 is the highest of its windows' (once it was the last window's
    # only, so bursty patterns recorded no latency at all), p50 the last window's with responses.
    store = RunStore(tmp_path / "runs.sqlite3")
    run = store.begin_run("experiment", "t", "t", "", ["core:event"])
    rec = Recorder(store, store.begin_target(run, "core:event", 1), None, lambda: [os.getpid()])
    rec.watch("b-1", "browsers")
    for seq, lat in enumerate(([5.0, 7.0, 40.0], [2.0, 3.0], [], [])):
        rec.on_stats(StatsFrame(seq=seq, time=1700000000.0 + seq / 4, interval=0.25, patterns=[_info(_window(lat))]))
    got = rec._sample(1.0).patterns["browsers"]
    assert got.rps == 5.0 and got.p99_ms is not None and 39.0 <= got.p99_ms <= 41.0, got
    assert got.p50_ms is not None and 1.9 <= got.p50_ms <= 3.1, got
    assert got.corrected_p99_ms is not None and got.corrected_p99_ms >= got.p99_ms
    quiet = rec._sample(1.0).patterns["browsers"]  # a second with no response has no latency
    assert (quiet.rps, quiet.p50_ms, quiet.p99_ms) == (0.0, None, None), quiet
    store.close()
