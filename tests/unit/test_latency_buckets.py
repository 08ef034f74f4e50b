"""The runner's cumulative latency buckets (for /metrics' histograms): filled from the same
HDR-quantized values as the histograms, per fold, carried in ``total`` over the wire and never in
``live``."""

from __future__ import annotations

from mpmcore.traffic.runstats import LATENCY_BUCKETS_S, Figures
from mpmcore.traffic.stats import PatternStats


def test_buckets_count_each_latency_once_up_to_its_bound():
    ps = PatternStats()
    lat_ms = (0.3, 0.5, 0.7, 3.0, 3.0, 40.0, 200.0, 2000.0, 70_000.0)
    for ms in lat_ms[:4]:
        ps.response(200, ms / 1000, ms / 2000, 10)
    ps.fold()
    for ms in lat_ms[4:]:
        ps.response(200, ms / 1000, ms / 2000, 10, corrected=ms / 1000 * 2)
    live = ps.fold()
    t = ps.total()
    assert live.latency_buckets is None and live.corrected_buckets is None  # live figures: none
    assert t.latency_buckets is not None and len(t.latency_buckets) == len(LATENCY_BUCKETS_S) + 1
    assert sum(t.latency_buckets) == len(lat_ms) == t.latency_ms.count
    want = [0] * (len(LATENCY_BUCKETS_S) + 1)
    for ms in lat_ms:
        i = next((i for i, b in enumerate(LATENCY_BUCKETS_S) if ms / 1000 <= b), len(LATENCY_BUCKETS_S))
        want[i] += 1
    assert list(t.latency_buckets) == want  # 0.5 ms exactly is in le=0.0005
    assert t.corrected_buckets is not None and sum(t.corrected_buckets) == 5
    assert t.latency_sum_s is not None and abs(t.latency_sum_s - sum(lat_ms) / 1000) < 1e-3
    # over the wire and back
    back = Figures.from_json(t.to_json())
    assert back == t
    assert "latency_buckets" not in live.to_json() and Figures.from_json(live.to_json()) == live
