"""The runner's typed reports and their JSON: what goes over the control socket keeps its field names,
its key order and its values through to_json() and back through from_json()."""

from __future__ import annotations

import json

from mpmcore.traffic.runstats import (
    COUNTERS,
    ERROR_KINDS,
    STATUS_CLASSES,
    Figures,
    FrameTotals,
    LatencySummary,
    RunInfo,
    RunState,
    StatsFrame,
    StopReason,
)
from mpmcore.traffic.stats import PatternStats

FIGURE_KEYS = [*COUNTERS[:-1], "status", "errors", "errors_total", "seconds", "rps", "requests_per_s",
               "latency_ms", "corrected_latency_ms", "ttfb_ms", "connect_ms", "corrupted"]
#: the totals' extra keys (the latency histograms' buckets and sums for /metrics); live figures have none
TOTAL_KEYS = [*FIGURE_KEYS, "latency_buckets", "corrected_buckets", "latency_sum_s", "corrected_sum_s"]
RUN_KEYS = ["id", "pattern", "label", "state", "stop_reason", "error", "target", "address", "started_at",
            "elapsed", "params", "active_connections", "peak_connections"]


def _figures() -> Figures:
    s = PatternStats()
    s.connected(0.002)
    for ms in (1, 2, 3, 50):
        s.response(200, ms / 1000, ms / 2000, 100, corrected=ms / 500)
    s.response(503, 0.004, 0.001, 10)
    s.error("refused")
    s.fold(s.started + 0.25)
    return s.total(s.started + 0.25, elapsed=0.25)


def _run(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(
        id="steady-1", pattern="steady", label="steady", state=RunState.RUNNING, stop_reason=None, error=None,
        target="http://127.0.0.1:8080/", address="127.0.0.1", started_at=1700000000.5, elapsed=0.25,
        params={"clients": 2, "path": "/"}, active_connections=1, peak_connections=1)
    base.update(kw)
    return RunInfo(**base)


def test_figures_json_keys_in_wire_order_and_round_trip():
    f = _figures()
    d = f.to_json()
    assert list(d) == TOTAL_KEYS
    assert list(d["status"]) == list(STATUS_CLASSES) and d["status"]["2xx"] == 4 and d["status"]["5xx"] == 1
    assert list(d["errors"]) == list(ERROR_KINDS) and d["errors"]["refused"] == 1 == d["errors_total"]
    assert d["responses"] == 5 and d["bytes_in"] == 0 and d["connections_opened"] == 1
    lat = d["latency_ms"]
    assert list(lat) == ["p50", "p90", "p99", "p99.9", "max", "mean", "count"] and lat["count"] == 5
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert 49.9 <= lat["max"] <= 50.1 and d["corrected_latency_ms"]["count"] == 4
    back = Figures.from_json(json.loads(json.dumps(d)))
    assert back == f and back is not None and back.to_json() == d


def test_corrupted_counter_is_the_last_key_and_old_frames_read_as_zero():
    assert COUNTERS[-1] == "corrupted"
    s = PatternStats()
    s.response(200, 0.001, 0.0005, 10)
    s.counts["corrupted"] += 1  # what ClientConnection does for an X-Unsafe-Corrupted: 1 reply
    s.fold(s.started + 0.25)
    d = s.total(s.started + 0.25, elapsed=0.25).to_json()
    # the last of the figures' keys; the totals-only histogram keys follow it
    assert list(d)[:len(FIGURE_KEYS)] == FIGURE_KEYS and FIGURE_KEYS[-1] == "corrupted" and d["corrupted"] == 1
    del d["corrupted"]  # a frame from a runner older than the counter
    old = Figures.from_json(d)
    assert old is not None and old.corrupted == 0


def test_empty_histograms_are_null():
    f = PatternStats().total(elapsed=0.0)
    d = f.to_json()
    assert d["latency_ms"] is None and d["connect_ms"] is None and d["rps"] == 0.0
    assert Figures.from_json(d) == f and LatencySummary.from_json(None) is None


def test_run_info_carries_live_and_total_only_when_present():
    described = _run()
    assert list(described.to_json()) == RUN_KEYS  # an update() answer
    f = _figures()
    summary = _run(state=RunState.FINISHED, stop_reason=StopReason.STOPPED, total=f, active_connections=0)
    d = summary.to_json()
    assert list(d) == [*RUN_KEYS, "total"] and d["state"] == "finished" and d["stop_reason"] == "stopped"
    assert type(d["state"]) is str and type(d["stop_reason"]) is str  # plain JSON strings on the wire
    framed = _run(live=f, total=f).to_json()
    assert list(framed) == [*RUN_KEYS, "live", "total"]
    back = RunInfo.from_json(json.loads(json.dumps(d)))
    assert back == summary and back.state is RunState.FINISHED and not back.running


def test_stats_frame_round_trip():
    f = _figures()
    frame = StatsFrame(seq=7, time=1700000001.25, interval=0.25, patterns=[_run(live=f, total=f)],
                       totals=FrameTotals(running=1, active_connections=1, rps=20.0))
    d = frame.to_json()
    assert list(d) == ["type", "seq", "time", "interval", "patterns", "totals"] and d["type"] == "stats"
    assert d["totals"] == {"running": 1, "active_connections": 1, "rps": 20.0}
    assert StatsFrame.from_json(json.loads(json.dumps(d))) == frame
