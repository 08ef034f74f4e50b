"""Per-pattern measurements: counters and HDR latency histograms, live (per frame) and cumulative.

Hot path: ``response()`` and ``error()`` are called once per request; they only bump integers and
record into the *interval* histograms. ``fold()`` runs once per frame (250 ms): it turns the
interval into the live figures, adds it into the cumulative histograms and starts a new interval.
"""

from __future__ import annotations

import bisect
import time

from hdrh.histogram import HdrHistogram

from mpmcore.traffic.limits import HIST_HIGHEST_US, HIST_LOWEST_US, HIST_SIGNIFICANT_FIGURES
from mpmcore.traffic.runstats import (
    COUNTERS,
    ERROR_KINDS,
    LATENCY_BUCKETS_S,
    STATUS_CLASSES,
    Figures,
    LatencySummary,
)

__all__ = ["PERCENTILES", "PatternStats"]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
HISTOGRAMS = ("latency", "corrected", "ttfb", "connect")
#: The histograms whose cumulative bucket counts the totals carry (for Prometheus histograms).
BUCKETED = ("latency", "corrected")
_BOUNDS_US = tuple(round(b * 1_000_000) for b in LATENCY_BUCKETS_S)


def _hist() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGNIFICANT_FIGURES)


def _clamp_us(seconds: float) -> int:
    us = int(seconds * 1_000_000)
    if us < HIST_LOWEST_US:
        return HIST_LOWEST_US
    if us > HIST_HIGHEST_US:
        return HIST_HIGHEST_US
    return us


def _quantize(us: int) -> int:
    """The lowest value HDR (3 significant figures: 2048 sub-buckets) treats as equivalent to
    ``us``. Recording goes through a dict of these, flushed into the histogram once per frame:
    ~0.2 us per response instead of ~2 us for HdrHistogram.record_value in pure Python, with
    exactly the same histogram at the end."""
    shift = us.bit_length() - 11
    return us if shift <= 0 else (us >> shift) << shift


def _summary(h: HdrHistogram, total_us: float) -> LatencySummary | None:
    # (HdrHistogram.get_mean_value() walks every bucket in Python: ~70 ms. The mean comes from
    # a running sum instead.)
    count: int = h.get_total_count()
    if count == 0:
        return None
    pct = h.get_percentile_to_value_dict(list(PERCENTILES))
    p50, p90, p99, p99_9 = (round(pct[p] / 1000.0, 3) for p in PERCENTILES)
    return LatencySummary(p50=p50, p90=p90, p99=p99, p99_9=p99_9, max=round(h.get_max_value() / 1000.0, 3),
                          mean=round(total_us / count / 1000.0, 3), count=count)


#: the four latency summaries of a window, as Figures' fields
Summaries = tuple[LatencySummary | None, LatencySummary | None, LatencySummary | None, LatencySummary | None]


#: how old total()'s cached percentiles may be
TOTAL_SUMMARY_EVERY = 1.0


class _Window:
    __slots__ = ("buckets", "counts", "errors", "hists", "pending", "status", "sums")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.status = [0] * 6  # index = status // 100 (0 unused)
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.hists = {name: _hist() for name in HISTOGRAMS}
        self.sums: dict[str, int] = dict.fromkeys(HISTOGRAMS, 0)  # microseconds, for the means
        self.pending: dict[str, dict[int, int]] = {name: {} for name in HISTOGRAMS}  # quantized value -> count
        # per LATENCY_BUCKETS_S bucket (+Inf last), filled from the pending values: the totals' only
        self.buckets: dict[str, list[int]] = {name: [0] * (len(_BOUNDS_US) + 1) for name in BUCKETED}

    def count_buckets(self, into: _Window) -> None:
        """Add the pending values to ``into``'s bucket counts (before ``flush``): one bisect per
        distinct HDR-quantized value, a value counted up to the first bound at or above it."""
        for name in BUCKETED:
            b = into.buckets[name]
            for v, c in self.pending[name].items():
                b[bisect.bisect_left(_BOUNDS_US, v)] += c

    def flush(self) -> None:
        for name, pend in self.pending.items():
            if pend:
                h = self.hists[name]
                for v, c in pend.items():
                    h.record_value(v, c)
                pend.clear()


class PatternStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self._iv = _Window()  # current interval
        self._tot = _Window()  # cumulative (folded intervals)
        self._iv_started = self.started
        self.active_connections = 0
        self.peak_connections = 0
        self.live: Figures = self._figures(self._iv, 0.0)
        self._tot_summaries: Summaries | None = None  # total()'s percentiles, and when they were computed
        self._tot_summaries_at = 0.0
        self._tot_stale = True  # a fold added latencies since total()'s percentiles were computed
        # Hot-path aliases into the interval window (swapped by fold()).
        self._bind()

    def _bind(self) -> None:
        iv = self._iv
        self.counts = iv.counts
        self._status = iv.status
        self._sums = iv.sums
        self._errors = iv.errors
        h = iv.pending
        self._h_lat = h["latency"]
        self._h_cor = h["corrected"]
        self._h_ttfb = h["ttfb"]
        self._h_conn = h["connect"]

    # -- hot path ---------------------------------------------------------------------------
    def response(self, status: int, total: float, ttfb: float, nbytes: int,
                 corrected: float | None = None) -> None:
        c = self.counts
        c["responses"] += 1
        cls = status // 100
        if 0 < cls < 6:
            self._status[cls] += 1
        sums = self._sums
        us = _clamp_us(total)
        q = _quantize(us)
        h = self._h_lat
        h[q] = h.get(q, 0) + 1
        sums["latency"] += us
        if ttfb > 0:
            us = _clamp_us(ttfb)
            q = _quantize(us)
            h = self._h_ttfb
            h[q] = h.get(q, 0) + 1
            sums["ttfb"] += us
        if corrected is not None:
            us = _clamp_us(corrected)
            q = _quantize(us)
            h = self._h_cor
            h[q] = h.get(q, 0) + 1
            sums["corrected"] += us

    def status_only(self, status: int) -> None:
        """A response without timings (e.g. a 408 sent to a slowloris connection)."""
        self.counts["responses"] += 1
        cls = status // 100
        if 0 < cls < 6:
            self._status[cls] += 1

    def error(self, kind: str) -> None:
        self._errors[kind] += 1

    def connected(self, seconds: float) -> None:
        self.counts["connections_opened"] += 1
        us = _clamp_us(seconds)
        q = _quantize(us)
        self._h_conn[q] = self._h_conn.get(q, 0) + 1
        self._sums["connect"] += us
        self.active_connections += 1
        if self.active_connections > self.peak_connections:
            self.peak_connections = self.active_connections

    def disconnected(self) -> None:
        self.active_connections -= 1

    # -- once per frame ---------------------------------------------------------------------
    def _figures(self, w: _Window, seconds: float, summaries: Summaries | None = None) -> Figures:
        c = w.counts
        lat, cor, ttfb, conn = summaries if summaries is not None else self._summaries(w)
        total = w is self._tot
        return Figures(
            requests=c["requests"], responses=c["responses"], bytes_in=c["bytes_in"], bytes_out=c["bytes_out"],
            arrivals=c["arrivals"], dropped=c["dropped"], late=c["late"], reconnects=c["reconnects"],
            connections_opened=c["connections_opened"], throttled=c["throttled"],
            status={STATUS_CLASSES[i - 1]: w.status[i] for i in range(1, 6)},
            errors=dict(w.errors), errors_total=sum(w.errors.values()), seconds=round(seconds, 3),
            rps=round(c["responses"] / seconds, 2) if seconds > 0 else 0.0,
            requests_per_s=round(c["requests"] / seconds, 2) if seconds > 0 else 0.0,
            latency_ms=lat, corrected_latency_ms=cor, ttfb_ms=ttfb, connect_ms=conn, corrupted=c["corrupted"],
            latency_buckets=tuple(w.buckets["latency"]) if total else None,
            corrected_buckets=tuple(w.buckets["corrected"]) if total and cor is not None else None,
            latency_sum_s=w.sums["latency"] / 1e6 if total else None,
            corrected_sum_s=w.sums["corrected"] / 1e6 if total and cor is not None else None)

    @staticmethod
    def _summaries(w: _Window) -> Summaries:
        h, s = w.hists, w.sums
        return (_summary(h["latency"], s["latency"]), _summary(h["corrected"], s["corrected"]),
                _summary(h["ttfb"], s["ttfb"]), _summary(h["connect"], s["connect"]))

    def fold(self, now: float | None = None) -> Figures:
        """Close the current interval: return its figures, add it to the totals."""
        now = time.monotonic() if now is None else now
        iv, tot = self._iv, self._tot
        iv.count_buckets(tot)
        iv.flush()
        live = self._figures(iv, now - self._iv_started)
        for k, v in iv.counts.items():
            tot.counts[k] += v
            iv.counts[k] = 0
        for i in range(6):
            tot.status[i] += iv.status[i]
            iv.status[i] = 0
        for k, v in iv.errors.items():
            tot.errors[k] += v
            iv.errors[k] = 0
        for name, h in list(iv.hists.items()):
            tot.sums[name] += iv.sums[name]
            iv.sums[name] = 0
            if h.get_total_count():
                tot.hists[name].add(h)
                self._tot_stale = True
                # A fresh histogram costs 0.1 ms; HdrHistogram.reset() loops in Python (1.7 ms).
                iv.hists[name] = _hist()
        self._bind()
        self._iv_started = now
        self.live = live
        return live

    def total(self, now: float | None = None, elapsed: float | None = None, cached: bool = False) -> Figures:
        """Cumulative figures up to the last fold. ``cached`` (the running frames, 4 a second):
        the counts are exact, the percentiles may be up to TOTAL_SUMMARY_EVERY old; a percentile
        walk of a full histogram costs ~1 ms, four of them per pattern per frame would take a
        good share of the generator's one core. Percentiles no fold has changed (a finished run's,
        listed again and again) are never walked twice."""
        now = time.monotonic() if now is None else now
        seconds = elapsed if elapsed is not None else (now - self.started)
        if self._tot_stale and (not cached or self._tot_summaries is None
                                or now - self._tot_summaries_at >= TOTAL_SUMMARY_EVERY):
            self._tot_summaries, self._tot_summaries_at = self._summaries(self._tot), now
            self._tot_stale = False
        return self._figures(self._tot, seconds, self._tot_summaries)

    def encoded_histograms(self) -> dict[str, str]:
        """The cumulative HDR histograms up to the last fold, each as ``HdrHistogram.encode()``'s
        base64 text (``HdrHistogram.decode`` reads it back), keyed by HISTOGRAMS' names; empty ones
        left out."""
        out: dict[str, str] = {}
        for name in HISTOGRAMS:
            h = self._tot.hists[name]
            if h.get_total_count():
                enc = h.encode()
                out[name] = enc.decode("ascii") if isinstance(enc, bytes) else str(enc)
        return out
