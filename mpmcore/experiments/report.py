"""A stored experiment run as a comparison: one row of figures per target, medians over rounds.

``compare(run, store)`` reads a ``StoredRun`` (its target runs' pattern results and HDR
histograms) and the store's per-second samples, and gives a ``Comparison``: one ``TargetFigures``
per target, in the run's target order. ``format_report`` prints it for the terminal.

How each figure is made (docs/experiments-report.md says the same for users):

- **req/s**: per round, the responses of every pattern over the traffic seconds (each stage's
  length, the longest pattern of the stage); the row shows the median over rounds and its spread
  (max - min).
- **p50/p99/p99.9**: from the HDR histograms merged over rounds and patterns (never an average of
  percentiles). "corrected" merges the open-model patterns' corrected histograms (latency from
  the intended send time) with the closed-model patterns' plain ones (a closed-model client has no
  schedule to be late on); it is None when no pattern of the run has a schedule.
- **errors**: client-side errors (refused, reset, timeout, ...) summed over rounds; the rate is
  their share of the requests sent.
- **peaks, PSS, CPU**: per round from the samples, then the median over rounds (``median_low``
  for counts: a value some round really had). PSS per connection is (peak PSS - PSS before
  traffic) / peak client connections. CPU seconds: the last sample's cumulative minus the first.
- The row's totals cover only the patterns every target could run: a pattern that one target
  cannot do (``EffectiveConfig.not_comparable``, or ``PatternResult.comparable`` false) is left out
  of every row's totals, so that the rows compare the same work; ``per_pattern`` still lists it,
  with None figures for the target that could not run it, and ``not_comparable`` says why.

A figure a target cannot show (nginx has no slots) is None and prints as "-".
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

from mpmcore.experiments.model import (
    Comparison,
    EffectiveConfig,
    PatternResult,
    SecondSample,
    StoredRun,
    TargetFigures,
    TargetRun,
)
from mpmcore.experiments.store import RunStore
from mpmcore.traffic.limits import HIST_HIGHEST_US, HIST_LOWEST_US, HIST_SIGNIFICANT_FIGURES

__all__ = ["MEASURED", "PATTERN_COLUMNS", "TABLE_COLUMNS", "HistogramError", "cell", "compare", "decode_histogram",
           "format_configs", "format_report", "format_table", "histogram_of", "merge_histograms", "new_histogram",
           "not_comparable_labels", "number", "pattern_rows", "table_rows", "total_count", "traffic_seconds",
           "unreadable"]

#: target-run statuses whose figures count (a skipped or failed target has none)
MEASURED = frozenset({"complete", "incomplete", "stopped"})


# -- histograms -------------------------------------------------------------------------------------
def new_histogram() -> Any:
    """An empty histogram with the traffic generator's range (microseconds)."""
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGNIFICANT_FIGURES)


class HistogramError(ValueError):
    """A stored histogram text that is not an encoded HDR histogram."""


def decode_histogram(encoded: str | bytes) -> Any:
    """An ``HdrHistogram.encode()`` text as a histogram; HistogramError when it is not one."""
    try:
        return HdrHistogram.decode(encoded.encode("ascii") if isinstance(encoded, str) else encoded)
    except Exception as e:  # hdrh raises binascii.Error, zlib.error and its own Hdr*Exception classes
        raise HistogramError(f"not an encoded HDR histogram ({type(e).__name__}: {e})") from None


def merge_histograms(encoded: Iterable[str]) -> Any:
    """One histogram holding every value of the encoded ones (HistogramError on a damaged one)."""
    out = new_histogram()
    for e in encoded:
        out.add(decode_histogram(e))
    return out


def total_count(h: Any) -> int:
    return int(h.get_total_count())


def _pct_ms(h: Any, pct: float) -> float | None:
    if total_count(h) == 0:
        return None
    return round(int(h.get_value_at_percentile(pct)) / 1000.0, 3)


def histogram_of(p: PatternResult, kind: str) -> Any | None:
    """The pattern's histogram of that kind; None when it has none, or one that cannot be read
    (``unreadable`` names those)."""
    enc = p.histograms.get(kind)
    if not enc:
        return None
    try:
        return decode_histogram(enc)
    except HistogramError:
        return None


def unreadable(patterns: Iterable[PatternResult]) -> list[str]:
    """"label kind" for every stored histogram that is not an HDR histogram."""
    out = []
    for p in patterns:
        for kind, enc in p.histograms.items():
            if enc:
                try:
                    decode_histogram(enc)
                except HistogramError:
                    out.append(f"{p.label} {kind}")
    return out


def _latency_hists(patterns: Sequence[PatternResult]) -> tuple[Any, Any | None]:
    """(plain, corrected) merged over ``patterns``; corrected is None without an open-model pattern."""
    plain = new_histogram()
    cor = new_histogram()
    scheduled = False
    for p in patterns:
        lat, c = histogram_of(p, "latency"), histogram_of(p, "corrected")
        if lat is not None:
            plain.add(lat)
        if c is not None and total_count(c) > 0:
            scheduled = True
            cor.add(c)
        elif lat is not None:
            cor.add(lat)
    return plain, cor if scheduled else None


# -- per-round figures ------------------------------------------------------------------------------
def number(total: Mapping[str, Any], key: str) -> float:
    v = total.get(key)
    return float(v) if isinstance(v, (int, float)) else 0.0


def traffic_seconds(patterns: Sequence[PatternResult]) -> float:
    """Seconds of traffic the patterns cover: per stage, its longest pattern's seconds, summed."""
    by_stage: dict[str, float] = {}
    for p in patterns:
        by_stage[p.stage] = max(by_stage.get(p.stage, 0.0), number(p.total, "seconds"))
    return sum(by_stage.values())


def _round_rps(patterns: Sequence[PatternResult], samples: Sequence[SecondSample]) -> float | None:
    secs = traffic_seconds(patterns)
    if patterns and secs > 0:
        return sum(number(p.total, "responses") for p in patterns) / secs
    counted = [s.rps for s in samples if s.stage and s.stage != "warmup"]
    return statistics.fmean(counted) if counted else None


def _peak(samples: Sequence[SecondSample], attr: str) -> int | None:
    vals = [v for s in samples if (v := getattr(s, attr)) is not None]
    return max(vals) if vals else None


def _pss_per_connection(samples: Sequence[SecondSample]) -> float | None:
    with_pss = [s for s in samples if s.pss_bytes is not None]
    if not with_pss:
        return None
    quiet = [s for s in with_pss if s.client_connections == 0]
    base = (quiet or with_pss)[0].pss_bytes
    peak = max(s.pss_bytes for s in with_pss if s.pss_bytes is not None)
    conns = max(s.client_connections for s in samples)
    if base is None or conns <= 0:
        return None
    return (peak - base) / conns


def _cpu_seconds(samples: Sequence[SecondSample]) -> float | None:
    cpu = [s.cpu_seconds for s in samples if s.cpu_seconds is not None]
    if not cpu:
        return None
    return round(cpu[-1] - cpu[0], 3)


def _median(vals: Sequence[float | None]) -> float | None:
    got = [v for v in vals if v is not None]
    return statistics.median(got) if got else None


def _median_int(vals: Sequence[int | None]) -> int | None:
    got = [v for v in vals if v is not None]
    return statistics.median_low(got) if got else None


def _spread(vals: Sequence[float | None]) -> float | None:
    got = [v for v in vals if v is not None]
    return max(got) - min(got) if got else None


def not_comparable_labels(runs: Sequence[TargetRun]) -> dict[str, str]:
    """Pattern label -> why these target runs could not run it (their configs and pattern results)."""
    out: dict[str, str] = {}
    for tr in runs:
        if tr.config is not None:
            out.update(tr.config.not_comparable)
        for p in tr.patterns:
            if not p.comparable and p.label not in out:
                out[p.label] = p.note or "this target cannot run this pattern's requests"
    return out


def _pattern_figures(label: str, runs: Sequence[TargetRun]) -> dict[str, float | None]:
    pats = [p for tr in runs for p in tr.patterns if p.label == label]
    rps = [number(p.total, "responses") / s for p in pats if (s := number(p.total, "seconds")) > 0]
    requests = sum(number(p.total, "requests") for p in pats)
    errors = sum(number(p.total, "errors_total") for p in pats)
    plain, cor = _latency_hists(pats)
    return {
        "rps": _median(rps),
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "p50_ms": _pct_ms(plain, 50.0),
        "p99_ms": _pct_ms(plain, 99.0),
        "p99_9_ms": _pct_ms(plain, 99.9),
        "corrected_p99_ms": None if cor is None else _pct_ms(cor, 99.0),
        "5xx": sum(number(p.total.get("status") or {}, "5xx") for p in pats),
    }


_EMPTY_PATTERN: dict[str, float | None] = dict.fromkeys(
    ("rps", "requests", "errors", "error_rate", "p50_ms", "p99_ms", "p99_9_ms", "corrected_p99_ms", "5xx"))


def _row(target: str, runs: Sequence[TargetRun], store: RunStore, labels: Sequence[str],
         excluded: set[str]) -> TargetFigures:
    measured = [tr for tr in runs if tr.status in MEASURED]
    config: EffectiveConfig | None = next((tr.config for tr in reversed(runs) if tr.config is not None), None)
    statuses = list(dict.fromkeys(tr.status for tr in runs))  # a target of the plan that never began: none
    status = ("not run" if not statuses else statuses[0] if len(statuses) == 1
              else "partly" if measured else ", ".join(statuses))
    messages = [tr.message for tr in runs if tr.message]
    bad = unreadable(p for tr in runs for p in tr.patterns)
    if bad:
        messages.append("histograms that could not be read (left out): " + ", ".join(dict.fromkeys(bad)))
    message = "; ".join(dict.fromkeys(messages))
    own_nc = not_comparable_labels(runs)
    rps_rounds: list[float | None] = []
    peaks: dict[str, list[int | None]] = {"peak_busy": [], "processes": [], "threads": [], "pss_bytes": []}
    per_conn: list[float | None] = []
    cpu: list[float | None] = []
    counted: list[PatternResult] = []
    for tr in measured:
        pats = [p for p in tr.patterns if p.label not in excluded]
        counted.extend(pats)
        samples = store.samples(tr.id)
        rps_rounds.append(_round_rps(pats, samples))
        for attr, lst in peaks.items():
            lst.append(_peak(samples, attr))
        per_conn.append(_pss_per_connection(samples))
        cpu.append(_cpu_seconds(samples))
    plain, cor = _latency_hists(counted)
    requests = sum(number(p.total, "requests") for p in counted)
    errors = int(sum(number(p.total, "errors_total") for p in counted))
    by_kind: dict[str, int] = {}
    for p in counted:
        for kind, n in (p.total.get("errors") or {}).items():
            if n:
                by_kind[kind] = by_kind.get(kind, 0) + int(n)
    per_pattern = {label: (dict(_EMPTY_PATTERN) if label in own_nc or not measured
                           else _pattern_figures(label, measured)) for label in labels}
    return TargetFigures(
        target=target, rounds=len(measured),
        rps=_median(rps_rounds), rps_spread=_spread(rps_rounds),
        p50_ms=_pct_ms(plain, 50.0), p99_ms=_pct_ms(plain, 99.0), p99_9_ms=_pct_ms(plain, 99.9),
        corrected_p50_ms=None if cor is None else _pct_ms(cor, 50.0),
        corrected_p99_ms=None if cor is None else _pct_ms(cor, 99.0),
        corrected_p99_9_ms=None if cor is None else _pct_ms(cor, 99.9),
        errors=errors, error_rate=errors / requests if requests else None, errors_by_kind=by_kind,
        peak_busy=_median_int(peaks["peak_busy"]), peak_processes=_median_int(peaks["processes"]),
        peak_threads=_median_int(peaks["threads"]), peak_pss_bytes=_median_int(peaks["pss_bytes"]),
        pss_per_connection_bytes=_median(per_conn), cpu_seconds=_median(cpu), config=config,
        per_pattern=per_pattern, not_comparable=own_nc, status=status, message=message)


def compare(run: StoredRun, store: RunStore) -> Comparison:
    """The run's compare table: one row per target (the run's target order, then any other)."""
    order = list(dict.fromkeys([*run.meta.targets, *(tr.target for tr in run.targets)]))
    by_target = {t: [tr for tr in run.targets if tr.target == t] for t in order}
    for runs in by_target.values():
        runs.sort(key=lambda tr: tr.round)
    labels = list(dict.fromkeys(p.label for tr in run.targets for p in tr.patterns))
    excluded: set[str] = set()
    for runs in by_target.values():
        excluded |= set(not_comparable_labels(runs))
    rows = tuple(_row(t, by_target[t], store, labels, excluded) for t in order)
    return Comparison(run_id=run.meta.id, name=run.meta.name, rows=rows)


# -- the terminal table ------------------------------------------------------------------------------
def cell(v: float | int | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _mb(v: float | int | None) -> str:
    return "-" if v is None else f"{v / 1048576:.1f}"


def _kb(v: float | int | None) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


TABLE_COLUMNS = ("target", "rounds", "req/s", "±", "p50 ms", "p99 ms", "p99.9 ms", "cor p99", "errors", "err %",
                 "busy", "procs", "threads", "PSS MB", "PSS/conn KB", "CPU s")


def table_rows(cmp: Comparison) -> list[list[str]]:
    """The compare table's cells as text ("-" where a target cannot show a figure)."""
    out = []
    for r in cmp.rows:
        out.append([r.target, str(r.rounds), cell(r.rps), cell(r.rps_spread), cell(r.p50_ms, "{:.2f}"),
                    cell(r.p99_ms, "{:.2f}"), cell(r.p99_9_ms, "{:.2f}"), cell(r.corrected_p99_ms, "{:.2f}"),
                    str(r.errors) if r.rounds else "-",
                    cell(None if r.error_rate is None else r.error_rate * 100, "{:.2f}"),
                    cell(r.peak_busy, "{}"), cell(r.peak_processes, "{}"), cell(r.peak_threads, "{}"),
                    _mb(r.peak_pss_bytes), _kb(r.pss_per_connection_bytes), cell(r.cpu_seconds, "{:.2f}")])
    return out


def format_table(cmp: Comparison) -> str:
    """The compare table as aligned text."""
    return _align(TABLE_COLUMNS, table_rows(cmp))


def format_configs(cmp: Comparison) -> str:
    """Each target's effective configuration, and what it could not run, one block per target."""
    out: list[str] = []
    for r in cmp.rows:
        c = r.config
        head = f"{r.target}: " + (f"{c.version}" if c is not None and c.version else r.status)
        out.append(head)
        if r.message:
            out.append(f"  {r.message}")
        if c is not None and c.settings:
            out.append("  " + ", ".join(f"{k} {v}" for k, v in c.settings.items()))
        for label, why in r.not_comparable.items():
            out.append(f"  {label}: not comparable ({why})")
    return "\n".join(out)


PATTERN_COLUMNS = ("target", "pattern", "req/s", "requests", "errors", "p50 ms", "p99 ms", "p99.9 ms", "cor p99",
                   "5xx")


def pattern_rows(cmp: Comparison) -> list[list[str]]:
    """Per target and pattern: its figures as text, "not comparable" where the target could not
    run it (a skipped or failed target: one row with its status)."""
    out = []
    for r in cmp.rows:
        if not r.rounds:
            out.append([r.target, "", r.status or "not run", *[""] * (len(PATTERN_COLUMNS) - 3)])
            continue
        for label, f in r.per_pattern.items():
            if label in r.not_comparable:
                out.append([r.target, label, "not comparable", *[""] * (len(PATTERN_COLUMNS) - 3)])
                continue
            out.append([r.target, label, cell(f.get("rps")), cell(f.get("requests"), "{:.0f}"),
                        cell(f.get("errors"), "{:.0f}"), cell(f.get("p50_ms"), "{:.2f}"), cell(f.get("p99_ms"), "{:.2f}"),
                        cell(f.get("p99_9_ms"), "{:.2f}"), cell(f.get("corrected_p99_ms"), "{:.2f}"),
                        cell(f.get("5xx"), "{:.0f}")])
    return out


def _align(head: Sequence[str], body: Sequence[Sequence[str]], left: int = 1) -> str:
    rows = [list(head), *[list(b) for b in body]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_report(cmp: Comparison) -> str:
    """Table, per-pattern figures and configurations: what ``mpmlab experiment report`` prints."""
    parts = [f"run {cmp.run_id}: {cmp.name}", "", format_table(cmp), "", _align(PATTERN_COLUMNS, pattern_rows(cmp), 2),
             "", format_configs(cmp)]
    excluded = sorted({label for r in cmp.rows for label in r.not_comparable})
    if excluded:
        parts += ["", "left out of every row's totals (not comparable on some target): " + ", ".join(excluded)]
    return "\n".join(parts)
