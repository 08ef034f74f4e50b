"""Traffic generator: parameters, catalogue, target rule and caps (no traffic leaves loopback)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from mpmcore.traffic import (
    MAX_CONNECTIONS,
    MAX_RATE,
    TargetError,
    catalogue_json,
    parse_duration,
    parse_size,
    resolve_target_sync,
    validate_params,
)
from mpmcore.traffic.engine import Engine
from mpmcore.traffic.scenarios import SCENARIOS
from mpmcore.traffic.stats import PatternStats, _quantize

LOOP = "http://127.0.0.1:9/"


def test_catalogue_is_data_for_forms():
    data = json.loads(json.dumps(catalogue_json()))
    assert set(data) == {"steady", "burst", "browsers", "ajax", "slowloris", "slow-post", "slow-read",
                         "cpu", "io"}
    for name, pat in data.items():
        assert pat["description"]
        for spec in pat["params"]:
            assert {"name", "type", "default", "min", "max", "unit", "help", "live"} <= set(spec)
            if spec["type"] in ("int", "float", "duration", "size"):
                assert spec["min"] <= spec["default"] <= spec["max"], (name, spec)


def test_defaults_and_coercion():
    p = validate_params("steady", {"target": LOOP, "duration": "500ms", "clients": "7"})
    assert p["duration"] == 0.5 and p["clients"] == 7 and p["model"] == "closed"
    assert p["path"] == "/" and p["allow_remote"] is False
    p = validate_params("slow-post", {"target": LOOP, "content_length": "10MiB", "interval": "2s"})
    assert p["content_length"] == 10 << 20 and p["interval"] == 2.0
    assert parse_duration("2m") == 120 and parse_size("4k") == 4000 and parse_size("4KiB") == 4096


@pytest.mark.parametrize("pattern,param,value,fragment", [
    ("steady", "rate", 1e9, f"between 0.01 and {MAX_RATE}"),
    ("steady", "clients", MAX_CONNECTIONS + 1, f"between 1 and {MAX_CONNECTIONS}"),
    ("slowloris", "connections", 0, "between 1 and"),
    ("steady", "duration", "2h", "between 0.1 and 3600"),
    ("steady", "max_requests", 10**9, "between 1 and 10000000"),
    ("steady", "model", "half-open", "one of closed, open"),
    ("burst", "size", "many", "must be a whole number"),
    ("steady", "path", "no-slash", "must start with /"),
    # would not encode on the wire: every client of the run failed instead of one clear refusal
    ("steady", "path", "/caf\u20ac", "printable ASCII"),
    ("browsers", "asset_path", "/a\tb", "printable ASCII"),
    ("steady", "path", "/a b", "without spaces"),
    ("steady", "label", "bad label!", "letters, digits"),
])
def test_bad_parameter_names_parameter_and_range(pattern, param, value, fragment):
    with pytest.raises(ValueError) as ei:
        validate_params(pattern, {"target": LOOP, param: value})
    assert repr(param) in str(ei.value) and fragment in str(ei.value)


def test_unknown_parameter_and_pattern():
    with pytest.raises(ValueError, match=r"unknown parameter.*'bogus'"):
        validate_params("steady", {"target": LOOP, "bogus": 1})
    with pytest.raises(ValueError, match="unknown pattern"):
        validate_params("nope", {"target": LOOP})
    with pytest.raises(ValueError, match="'target' is required"):
        validate_params("steady", {})


def test_update_refuses_parameters_that_cannot_change_live():
    assert validate_params("steady", {"rate": "200"}, partial=True) == {"rate": 200.0}
    with pytest.raises(ValueError, match="'target' cannot be changed"):
        validate_params("steady", {"target": "http://127.0.0.2/"}, partial=True)
    with pytest.raises(ValueError, match="'model' cannot be changed"):
        validate_params("steady", {"model": "open"}, partial=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/", "http://127.7.8.9/", "http://[::1]:81/x",
                                 "https://localhost:8443/", "127.0.0.1:80"])
def test_loopback_targets_accepted(url):
    t = resolve_target_sync(url)
    assert t.address.startswith("127.") or t.address == "::1"


@pytest.mark.parametrize("url", ["http://10.0.0.1/", "http://192.168.1.1:8080/", "http://[2001:db8::1]/",
                                 "http://0.0.0.0/", "http://8.8.8.8/"])
def test_non_loopback_refused_unless_allowed(url):
    with pytest.raises(TargetError, match="allow_remote=True"):
        resolve_target_sync(url)
    # With the explicit allow the check passes (no connection is made here).
    t = resolve_target_sync(url, allow_remote=True)
    assert t.address


def test_bad_urls():
    for url in ("ftp://127.0.0.1/", "http://", "http://user:pw@127.0.0.1/", "http://127.0.0.1:99999/"):
        with pytest.raises(TargetError):
            resolve_target_sync(url)


def test_name_resolving_to_remote_is_refused(monkeypatch):
    """The resolved address is checked, not the name: a name that resolves to 10.0.0.1 is
    refused even though it says nothing suspicious."""
    real = socket.getaddrinfo

    def fake(host, *a, **kw):
        if host == "innocent.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))]
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(TargetError, match=r"10\.0\.0\.1"):
        resolve_target_sync("http://innocent.test/")


def test_engine_refuses_remote_before_connecting(monkeypatch):
    """The runner's start refuses 10.0.0.1 without opening a single socket."""
    opened = []
    real_socket = socket.socket

    class Spy(real_socket):
        def __init__(self, *a, **kw):
            opened.append(a)
            super().__init__(*a, **kw)

    async def go():
        e = Engine(SCENARIOS)
        monkeypatch.setattr(socket, "socket", Spy)
        with pytest.raises(TargetError, match="allow_remote"):
            await e.start("steady", {"target": "http://10.0.0.1:80/"})
        with pytest.raises(TargetError):
            await e.start("slowloris", {"target": "https://10.0.0.1/", "connections": 5})
        monkeypatch.setattr(socket, "socket", real_socket)
        assert e.runs == {} and e.open_connections == 0

    asyncio.run(go())
    assert [a for a in opened if a and a[0] in (socket.AF_INET, socket.AF_INET6)] == []


def test_caps_across_patterns():
    """MAX_CONNECTIONS and MAX_RATE hold across running patterns (checked before connecting)."""
    async def go():
        e = Engine(SCENARIOS)
        # Nothing listens on port 9 (discard) of 127.0.0.1 in the test sandbox: refused, backoff.
        rid = await e.start("steady", {"target": LOOP, "clients": 2, "duration": 5})
        with pytest.raises(ValueError, match="MAX_CONNECTIONS=20000"):
            await e.start("slowloris", {"target": LOOP, "connections": MAX_CONNECTIONS - 1})
        rid2 = await e.start("steady", {"target": LOOP, "model": "open", "rate": MAX_RATE - 10,
                                        "connections": 2, "duration": 5})
        e.update(rid2, {"rate": MAX_RATE})  # its own old rate does not count against it
        with pytest.raises(ValueError, match="MAX_RATE"):
            await e.start("cpu", {"target": LOOP, "rate": 20})
        assert set(e.runs) == {rid, rid2}  # nothing else disturbed
        await e.stop_all()
        assert e.open_connections == 0

    asyncio.run(go())


def test_caps_hold_for_starts_racing_each_other():
    """Two starts at once, each within the connection cap alone, not together: one is refused.
    (Resolving the target awaits; the caps are checked after it, right before the run is added.)"""
    async def go():
        e = Engine(SCENARIOS)
        half = MAX_CONNECTIONS // 2 + 1
        got = await asyncio.gather(*(e.start("slowloris", {"target": LOOP, "connections": half, "duration": 5})
                                     for _ in range(2)), return_exceptions=True)
        errors = [g for g in got if isinstance(g, Exception)]
        assert len(e.runs) == 1 and len(errors) == 1 and "MAX_CONNECTIONS" in str(errors[0]), got
        await e.stop_all()
        assert e.open_connections == 0

    asyncio.run(go())


def test_quantized_recording_matches_hdr():
    from hdrh.histogram import HdrHistogram
    s = PatternStats()
    h = HdrHistogram(1, 600_000_000, 3)
    for us in list(range(1, 5000, 7)) + list(range(5000, 50_000_000, 99_991)):
        s.response(200, us / 1e6, 0.0, 0)
        h.record_value(us)
        assert h.get_lowest_equivalent_value(us) == _quantize(us)
    s.fold()
    tot = s.total()
    assert tot.responses == h.get_total_count()
    for k, p in (("p50", 50), ("p99", 99), ("p99_9", 99.9)):
        assert getattr(tot.latency_ms, k) == round(h.get_value_at_percentile(p) / 1000, 3)


def test_running_totals_keep_exact_counts_and_refresh_percentiles_once_a_second():
    from mpmcore.traffic import stats as st
    s = PatternStats()
    t0 = s.started
    s.response(200, 0.010, 0.0, 0)
    s.fold(t0 + 0.25)
    first = s.total(t0 + 0.25, cached=True)
    assert first.responses == 1 and 9.9 <= first.latency_ms.p50 <= 10.1
    s.response(200, 0.500, 0.0, 0)
    s.fold(t0 + 0.5)
    mid = s.total(t0 + 0.5, cached=True)
    assert mid.responses == 2 and mid.latency_ms == first.latency_ms  # counts now, percentiles later
    assert s.total(t0 + 0.5).latency_ms.max >= 499  # uncached (final frames, summaries): fresh
    later = s.total(t0 + 0.5 + st.TOTAL_SUMMARY_EVERY, cached=True)
    assert later.latency_ms.count == 2 and later.latency_ms.max >= 499
