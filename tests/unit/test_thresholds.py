"""--fail-on conditions (mpmcore/traffic/thresholds.py): parsed as written, checked against a run's
figures, refused with a clear message when they are not conditions it knows."""

from __future__ import annotations

import pytest

from mpmcore.traffic.runstats import Figures, LatencySummary, RunInfo, RunState, StopReason
from mpmcore.traffic.thresholds import Kind, ThresholdError, check_all, parse_thresholds


def lat(p99: float) -> LatencySummary:
    return LatencySummary(p50=p99 / 4, p90=p99 / 2, p99=p99, p99_9=p99 * 1.5, max=p99 * 2, mean=p99 / 3, count=100)


def run(*, p99: float = 120.0, errors: int = 3, requests: int = 200, responses: int = 197,
        s5xx: int = 10, corrected: bool = False, corrupted: int = 0) -> RunInfo:
    total = Figures(requests=requests, responses=responses, bytes_in=0, bytes_out=0, arrivals=0, dropped=0,
                    late=0, reconnects=0, connections_opened=1, throttled=0,
                    status={"1xx": 0, "2xx": responses - s5xx, "3xx": 0, "4xx": 0, "5xx": s5xx},
                    errors={"reset": errors}, errors_total=errors, seconds=2.0, rps=responses / 2.0,
                    requests_per_s=requests / 2.0, latency_ms=lat(p99),
                    corrected_latency_ms=lat(p99 * 3) if corrected else None, ttfb_ms=lat(p99 / 2),
                    connect_ms=None, corrupted=corrupted)
    return RunInfo(id="p1", pattern="steady", label="steady", state=RunState.FINISHED,
                   stop_reason=StopReason.DURATION, error=None, target="http://127.0.0.1:1/",
                   address="127.0.0.1:1", started_at=0.0, elapsed=2.0, params={}, active_connections=0,
                   peak_connections=1, total=total)


def failed(text: str, r: RunInfo) -> list[bool]:
    return [o.failed for o in check_all(parse_thresholds(text), r)]


def test_units_and_kinds_as_written():
    ts = parse_thresholds("p99>200ms, p99.9 >= 1s ,mean<500us,errors>1%,5xx>5,rps<100,corrected_p99>2s")
    assert [(t.metric, t.op, t.value, t.kind) for t in ts] == [
        ("p99", ">", 200.0, Kind.LATENCY), ("p99.9", ">=", 1000.0, Kind.LATENCY),
        ("mean", "<", 0.5, Kind.LATENCY), ("errors", ">", 1.0, Kind.SHARE), ("5xx", ">", 5.0, Kind.COUNT),
        ("rps", "<", 100.0, Kind.RATE), ("corrected_p99", ">", 2000.0, Kind.LATENCY)]
    assert ts[1].text == "p99.9 >= 1s"


def test_latency_conditions_fail_only_when_they_hold():
    r = run(p99=120.0)
    assert failed("p99>200ms", r) == [False]
    assert failed("p99>100ms", r) == [True]
    assert failed("p99>0.1s", r) == [True]
    assert failed("max>=240", r) == [True]  # bare numbers are milliseconds; max = 240 here
    assert failed("ttfb_p99>61ms", r) == [False]  # ttfb p99 = 60


def test_shares_are_of_requests_for_errors_and_of_responses_for_status():
    r = run(errors=3, requests=200, responses=197, s5xx=10)
    assert failed("errors>1%", r) == [True]  # 1.5 %
    assert failed("errors>2%", r) == [False]
    assert failed("errors>3", r) == [False]
    assert failed("5xx>5.1%", r) == [False]  # 10 / 197 responses = 5.08 %
    assert failed("5xx>5%", r) == [True]
    assert failed("non_2xx>=10", r) == [True]
    assert failed("rps<100", r) == [True]  # 98.5 responses/s
    assert failed("responses<197", r) == [False]


def test_corrupted_answers_a_count_or_a_share_of_the_responses():
    assert failed("corrupted>0", run()) == [False]
    r = run(responses=200, corrupted=4)
    assert failed("corrupted>0", r) == [True]
    assert failed("corrupted>2%", r) == [False] and failed("corrupted>=2%", r) == [True]


def test_a_condition_on_a_figure_the_run_lacks_fails_and_says_so():
    r = run(corrected=False)
    (o,) = check_all(parse_thresholds("corrected_p99>10s"), r)
    assert o.failed and o.measured is None and "not measured" in o.line()
    assert failed("corrected_p99>10s", run(corrected=True)) == [False]


@pytest.mark.parametrize(("text", "says"), [
    ("p99", "expected METRIC OP VALUE"),
    ("p99=>200ms", "expected METRIC OP VALUE"),
    ("latency>200ms", "unknown metric 'latency'"),
    ("p99>5%", "not %"),
    ("errors>5ms", "count or a percentage"),
    ("rps<10%", "bare number"),
    (" , ", "no condition"),
])
def test_bad_conditions_are_clear_errors(text, says):
    with pytest.raises(ThresholdError, match=says):
        parse_thresholds(text)
