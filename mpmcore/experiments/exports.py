"""A stored run, exported: one offline HTML report, JSON, Locust-shaped CSVs, HDR histogram logs,
and a one-file bundle that another mpmlab imports and replays.

- ``html_report``: ONE self-contained HTML file (inline CSS and SVG, no script, a
  Content-Security-Policy that forbids any fetch): the compare table, per-pattern figures, each
  target's effective configuration, the claim's verdict when the run is a claim's, and small
  multiples of each series (req/s, p99 per pattern, busy slots, PSS, CPU) on shared axes with the
  stages marked.
- ``json_export``: the run's metadata, comparison, configurations, pattern results and series.
- ``csv_exports``: per target, ``<target>_stats.csv``, ``<target>_stats_history.csv`` and
  ``<target>_failures.csv`` in Locust's column shapes (locust/stats.py, StatsCSV), so tooling that
  reads Locust's ``--csv`` output reads these.
- ``hlog_exports``: HdrHistogram interval logs (one interval per round), per target and pattern.
- ``export_bundle``/``import_bundle``: the run with its frames in one gzip'd JSON-lines file.
- ``write_exports``: all of it into a directory (``mpmlab experiment run --out DIR`` and
  ``mpmlab experiment report RUN --out DIR``).

docs/experiments-report.md describes the files.
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import html
import importlib
import importlib.util
import json
import math
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hdrh.log import HistogramLogWriter

from mpmcore.experiments import report
from mpmcore.experiments.model import (
    ClaimResult,
    Comparison,
    FrameRecord,
    LogLine,
    Mark,
    PatternResult,
    RunMeta,
    SecondSample,
    StoredRun,
    TargetRun,
)
from mpmcore.experiments.store import (
    RunNotFound,
    RunStore,
    StoreError,
    config_from_json,
    default_path,
    patterns_from_json,
    sample_from_json,
)
from mpmcore.model import to_jsonable

__all__ = ["BUNDLE_FORMAT", "LOCUST_FAILURES_COLUMNS", "LOCUST_HISTORY_COLUMNS", "LOCUST_PERCENTILES",
           "LOCUST_STATS_COLUMNS", "BundleError", "add_report_commands", "claim_verdicts", "csv_exports", "export_bundle", "hlog_exports",
           "html_report", "import_bundle", "json_export", "run_document", "slug", "write_exports"]

BUNDLE_FORMAT = "mpmlab-run-bundle"
BUNDLE_VERSION = 1

#: Locust's reported percentiles (locust.stats.PERCENTILES_TO_REPORT) and their column names
LOCUST_PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)
_PCT_NAMES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
LOCUST_STATS_COLUMNS = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                        "Average Response Time", "Min Response Time", "Max Response Time", "Average Content Size",
                        "Requests/s", "Failures/s", *_PCT_NAMES]
LOCUST_HISTORY_COLUMNS = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *_PCT_NAMES,
                          "Total Request Count", "Total Failure Count", "Total Median Response Time",
                          "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
                          "Total Average Content Size"]
LOCUST_FAILURES_COLUMNS = ["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]
_NA = "N/A"


class BundleError(ValueError):
    """A file that is not an mpmlab run bundle, or a damaged one: the message says which."""


def slug(name: str) -> str:
    """A target name as a file-name part: ``core:event`` -> ``core-event``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return s or "target"


def _target_slugs(run: StoredRun) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in dict.fromkeys([*run.meta.targets, *(tr.target for tr in run.targets)]):
        s, n = slug(t), 2
        while s in out.values():
            s, n = f"{slug(t)}-{n}", n + 1
        out[t] = s
    return out


# -- claims (optional module) -------------------------------------------------------------------------
def claim_verdicts(run: StoredRun, store: RunStore) -> list[ClaimResult] | str:
    """The claims' verdicts when the run is a claim's (``mpmcore.experiments.claims.verdict_for``,
    when that module is there): a list (empty for a run of no claim), or a sentence when they could
    not be computed."""
    if importlib.util.find_spec("mpmcore.experiments.claims") is None:
        return []
    claims = importlib.import_module("mpmcore.experiments.claims")
    verdict_for = getattr(claims, "verdict_for", None)
    if verdict_for is None:
        return []
    try:
        got = verdict_for(run, store)
    except Exception as e:  # a verdict rule's bug must not cost the user the rest of the report
        return f"the claim's verdict could not be computed: {type(e).__name__}: {e}"
    items = got if isinstance(got, (list, tuple)) else [got]
    return [v for v in items if isinstance(v, ClaimResult)]


# -- JSON -----------------------------------------------------------------------------------------------
def run_document(run_id: int, store: RunStore, cmp: Comparison | None = None) -> dict[str, Any]:
    """The run as JSON data: metadata, comparison, each target run with its series (frames left out:
    the bundle carries them)."""
    run = store.load(run_id)
    cmp = cmp or report.compare(run, store)
    targets = []
    for tr in run.targets:
        d = to_jsonable(tr)
        d["samples"] = to_jsonable(store.samples(tr.id))
        d["marks"] = to_jsonable(store.marks(tr.id))
        d["logs"] = to_jsonable(store.logs(tr.id))
        targets.append(d)
    verdicts = claim_verdicts(run, store)
    return {"format": "mpmlab-run", "version": 1, "meta": to_jsonable(run.meta), "comparison": to_jsonable(cmp),
            "claims": to_jsonable(verdicts) if isinstance(verdicts, list) else verdicts, "targets": targets}


def json_export(run_id: int, store: RunStore) -> str:
    """``run_document`` as indented JSON text."""
    return json.dumps(_finite(run_document(run_id, store)), indent=1, allow_nan=False)


def _finite(v: Any) -> Any:
    """JSON data with NaN/inf as null (JSON has no such numbers)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


# -- CSV in Locust's shapes -----------------------------------------------------------------------------
def _ms_int(us: float) -> int:
    return round(us / 1000.0)


def _stats_row(type_: str, name: str, rounds: Sequence[Sequence[PatternResult]]) -> list[Any]:
    """One row of ``_stats.csv`` over the patterns of every round (rates over the rounds' seconds)."""
    pats = [p for r in rounds for p in r]
    requests = int(sum(report.number(p.total, "requests") for p in pats))
    failures = int(sum(_failures(p.total) for p in pats))
    responses = sum(report.number(p.total, "responses") for p in pats)
    secs = sum(report.traffic_seconds(r) for r in rounds)
    h = report.new_histogram()
    for p in pats:
        if (one := report.histogram_of(p, "latency")) is not None:
            h.add(one)
    count = report.total_count(h)
    mean_w = sum(report.number(p.total.get("latency_ms") or {}, "mean") * report.number(p.total.get("latency_ms") or {},
                                                                                     "count") for p in pats)
    avg = mean_w / count if count else 0
    size = sum(report.number(p.total, "bytes_in") for p in pats) / responses if responses else 0
    if count:
        pcts: list[Any] = [_ms_int(h.get_value_at_percentile(q * 100)) for q in LOCUST_PERCENTILES]
        med, mn, mx = pcts[0], _ms_int(h.get_min_value()), _ms_int(h.get_max_value())
    else:
        pcts, med, mn, mx = [_NA] * len(LOCUST_PERCENTILES), 0, 0, 0
    return [type_, name, requests, failures, med, avg, mn, mx, size, requests / secs if secs else 0.0,
            failures / secs if secs else 0.0, *pcts]


def _failures(total: dict[str, Any]) -> float:
    """Locust counts an error or a 4xx/5xx answer as a failure."""
    status = total.get("status") or {}
    return report.number(total, "errors_total") + report.number(status, "4xx") + report.number(status, "5xx")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def csv_exports(run_id: int, store: RunStore, out_dir: str | Path) -> list[Path]:
    """Per target: ``_stats.csv`` (each pattern over every round, then "Aggregated"),
    ``_stats_history.csv`` (one row per second and pattern, then the second's "Aggregated") and
    ``_failures.csv`` (errors by kind per pattern), in Locust's columns. Columns mpmlab does not
    measure per second are "N/A" (Locust's own word for a missing percentile)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = store.load(run_id)
    paths: list[Path] = []
    for target, s in _target_slugs(run).items():
        runs = sorted((tr for tr in run.targets if tr.target == target), key=lambda tr: tr.round)
        pats = [p for tr in runs for p in tr.patterns]
        labels = list(dict.fromkeys(p.label for p in pats))
        rows = [_stats_row("GET", label, [[p for p in tr.patterns if p.label == label] for tr in runs])
                for label in labels]
        rows.append(_stats_row("", "Aggregated", [list(tr.patterns) for tr in runs]))
        paths.append(_write_csv(out / f"{s}_stats.csv", LOCUST_STATS_COLUMNS, rows))
        paths.append(_write_csv(out / f"{s}_stats_history.csv", LOCUST_HISTORY_COLUMNS,
                                list(_history_rows(runs, labels, store))))
        fails: list[list[Any]] = []
        for label in labels:
            counts: dict[str, int] = {}
            for p in pats:
                if p.label != label:
                    continue
                for kind, n in (p.total.get("errors") or {}).items():
                    counts[kind] = counts.get(kind, 0) + int(n)
                for cls in ("4xx", "5xx"):
                    n = int(report.number(p.total.get("status") or {}, cls))
                    counts[f"HTTP {cls}"] = counts.get(f"HTTP {cls}", 0) + n
            fails += [["GET", label, kind, n, "", ""] for kind, n in counts.items() if n]
        paths.append(_write_csv(out / f"{s}_failures.csv", LOCUST_FAILURES_COLUMNS, fails))
    return paths


def _history_rows(runs: Sequence[TargetRun], labels: Sequence[str], store: RunStore) -> Iterator[list[Any]]:
    na_pcts = [_NA] * len(LOCUST_PERCENTILES)
    totals_na = [_NA] * 5
    for tr in runs:
        req_total: dict[str, float] = {}
        err_total: dict[str, int] = {}
        for smp in store.samples(tr.id):
            ts = int(tr.started_at + smp.t)
            for label in labels:
                ps = smp.patterns.get(label)
                if ps is None:
                    continue
                req_total[label] = req_total.get(label, 0.0) + ps.rps
                err_total[label] = err_total.get(label, 0) + ps.errors
                pcts: list[Any] = list(na_pcts)
                if ps.p50_ms is not None:
                    pcts[0] = round(ps.p50_ms)
                if ps.p99_ms is not None:
                    pcts[7] = round(ps.p99_ms)
                yield [ts, ps.connections, "GET", label, f"{ps.rps:2f}", f"{ps.errors:2f}", *pcts,
                       round(req_total[label]), err_total[label], *totals_na]
            yield [ts, smp.client_connections, "", "Aggregated", f"{smp.rps:2f}", f"{smp.errors:2f}", *na_pcts,
                   round(sum(req_total.values())), sum(err_total.values()), *totals_na]


# -- HDR histogram logs ---------------------------------------------------------------------------------
def hlog_exports(run_id: int, store: RunStore, out_dir: str | Path) -> list[Path]:
    """Per target and pattern, ``<target>_<pattern>.hlog`` (latency) and, for open-model patterns,
    ``<target>_<pattern>.corrected.hlog``: HdrHistogram's interval log, one interval per round,
    stamped with the round's wall-clock start and length, values in microseconds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = store.load(run_id)
    paths: list[Path] = []
    for target, s in _target_slugs(run).items():
        runs = sorted((tr for tr in run.targets if tr.target == target), key=lambda tr: tr.round)
        labels = list(dict.fromkeys(p.label for tr in runs for p in tr.patterns))
        for label in labels:
            for kind, suffix in (("latency", ""), ("corrected", ".corrected")):
                hists = [(tr, h, p) for tr in runs for p in tr.patterns
                         if p.label == label and (h := report.histogram_of(p, kind)) is not None and report.total_count(h)]
                if not hists:
                    continue
                path = out / f"{s}_{slug(label)}{suffix}.hlog"
                with path.open("w") as f:
                    w = HistogramLogWriter(f)
                    w.output_comment(f"[mpmlab run {run.meta.id} {run.meta.name}: {target}, pattern {label}, "
                                     f"{kind} latency in microseconds, one interval per round]")
                    w.output_log_format_version()
                    w.output_base_time(0)
                    w.output_legend()
                    for tr, h, p in hists:
                        start = tr.started_at
                        secs = report.number(p.total, "seconds") or ((tr.ended_at or start) - start)
                        w.output_interval_histogram(h, start_time_stamp_sec=start,
                                                    end_time_stamp_sec=start + max(secs, 0.001))
                paths.append(path)
    return paths


# -- the bundle -------------------------------------------------------------------------------------------
_CHUNK = 200


def export_bundle(run_id: int, store: RunStore, path: str | Path) -> Path:
    """The run (metadata, configurations, pattern results with histograms, samples, frames, logs,
    marks) in one gzip'd JSON-lines file: a header line, one line per record, an end line that
    counts them (a cut file is found out)."""
    run = store.load(run_id)
    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    try:
        _write_bundle(run, store, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(p)
    return p


def _write_bundle(run: StoredRun, store: RunStore, tmp: Path) -> None:
    records = 0
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:

        def put(obj: dict[str, Any]) -> None:
            nonlocal records
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")
            records += 1

        f.write(json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "exported_at": time.time(),
                            "meta": to_jsonable(run.meta)}) + "\n")
        for i, tr in enumerate(run.targets):
            put({"kind": "target", "i": i, "run": to_jsonable(tr)})
            for name, items in (("samples", to_jsonable(store.samples(tr.id))),
                                ("logs", to_jsonable(store.logs(tr.id))),
                                ("marks", to_jsonable(store.marks(tr.id)))):
                for k in range(0, len(items), _CHUNK):
                    put({"kind": name, "i": i, "items": items[k:k + _CHUNK]})
            for k, chunk in enumerate(_frame_chunks(store, tr.id)):
                put({"kind": "frames", "i": i, "n": k,
                     "items": [[fr.t, base64.b64encode(fr.grid).decode("ascii")] for fr in chunk]})
        f.write(json.dumps({"kind": "end", "records": records}) + "\n")


def _frame_chunks(store: RunStore, tid: int) -> Iterator[list[FrameRecord]]:
    """The target run's frames a few hundred at a time (a 10-minute run has 6,000): never all of
    them in memory at once."""
    times = sorted(set(store.frame_times(tid)))
    for k in range(0, len(times), _CHUNK):
        yield store.frames(tid, times[k], times[min(k + _CHUNK, len(times)) - 1])


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BundleError(f"{path}: line {n} is not JSON ({e.msg}): a damaged bundle") from None
                if not isinstance(obj, dict):
                    raise BundleError(f"{path}: line {n} is not a record: a damaged bundle")
                yield obj
    except gzip.BadGzipFile:
        raise BundleError(f"{path}: not an mpmlab run bundle (not a gzip file)") from None
    except (EOFError, zlib.error):
        raise BundleError(f"{path}: the bundle is cut short (truncated or damaged): export it again") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not an mpmlab run bundle (not UTF-8 text inside)") from None


def _meta(d: dict[str, Any]) -> RunMeta:
    return RunMeta(**{**d, "targets": tuple(d["targets"])})


def _target_run(d: dict[str, Any]) -> TargetRun:
    return TargetRun(**{**d, "config": config_from_json(d.get("config")), "patterns": patterns_from_json(d["patterns"]),
                        "thresholds_failed": tuple(d["thresholds_failed"])})


def import_bundle(path: str | Path, store: RunStore) -> int:
    """Read a bundle into ``store`` as a new run (its frames replay as they were); its id.
    A foreign, damaged or cut file raises BundleError and leaves no part of it in the store."""
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p}: no such file")
    it = _lines(p)
    try:
        head = next(it)
    except StopIteration:
        raise BundleError(f"{p}: an empty file, not an mpmlab run bundle") from None
    if head.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{p}: not an mpmlab run bundle (a gzip'd file of something else)")
    if head.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{p}: bundle version {head.get('version')!r}; this mpmlab reads version {BUNDLE_VERSION}")
    try:
        meta = _meta(head["meta"])
    except (KeyError, TypeError) as e:
        raise BundleError(f"{p}: the bundle's run description is damaged ({e})") from None
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(meta.started_at))
    notes = "\n".join(x for x in (meta.notes, f"imported from {p.name}: run {meta.id}, recorded {when}") if x)
    run_id = store.begin_run(meta.kind, meta.name, meta.title, meta.plan_source, meta.targets, dict(meta.host), notes)
    ok = False
    try:
        _import_records(p, it, store, run_id)
        store.end_run(run_id, meta.status)
        ok = True
    finally:
        if not ok:
            store.delete_run(run_id)
    return run_id


def _import_records(p: Path, it: Iterator[dict[str, Any]], store: RunStore, run_id: int) -> None:
    tids: dict[int, int] = {}
    ends: dict[int, TargetRun] = {}
    for records, obj in enumerate(it):
        kind = obj.get("kind")
        if kind == "end":
            if obj.get("records") != records:
                raise BundleError(f"{p}: the bundle says {obj.get('records')} records, it holds {records}: damaged")
            for i, tr in ends.items():
                store.end_target(tids[i], tr.status, tr.patterns, tr.message, tr.thresholds_failed)
            return
        try:
            i = int(obj["i"])
            if kind == "target":
                tr = _target_run(obj["run"])
                if bad := report.unreadable(tr.patterns):
                    raise BundleError(f"{p}: record {records + 1}: histograms that are not HDR histograms "
                                      f"({', '.join(bad)}): a damaged bundle")
                tids[i] = store.begin_target(run_id, tr.target, tr.round, tr.config)
                ends[i] = tr
            elif kind == "samples":
                store.add_samples(tids[i], [sample_from_json(d) for d in obj["items"]])
            elif kind == "frames":
                store.add_frames(tids[i], [FrameRecord(t=float(t), grid=base64.b64decode(g, validate=True))
                                           for t, g in obj["items"]])
            elif kind == "logs":
                store.add_logs(tids[i], [LogLine(**d) for d in obj["items"]])
            elif kind == "marks":
                store.add_marks(tids[i], [Mark(**d) for d in obj["items"]])
            else:
                raise BundleError(f"{p}: record {records + 1} has an unknown kind {kind!r}: damaged or newer")
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, BundleError):
                raise
            raise BundleError(f"{p}: record {records + 1} ({kind}) is damaged ({type(e).__name__}: {e})") from None
    raise BundleError(f"{p}: the bundle is cut short (no end record): export it again")


# -- the HTML report --------------------------------------------------------------------------------------
_COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d")
_W, _H, _PAD_L, _PAD_B, _PAD_T = 300, 130, 42, 18, 8


def _esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return float(m * mag)
    return float(10 * mag)


Series = list[tuple[float, float]]


def _svg(title: str, lines: Sequence[tuple[str, str, float, Series]], xmax: float, ymax: float,
         marks: Sequence[Mark], unit: str) -> str:
    """One small chart: lines (label, colour, opacity, points) on 0..xmax x 0..ymax, marks as
    dashed verticals."""
    iw, ih = _W - _PAD_L - 4, _H - _PAD_T - _PAD_B
    xmax = max(xmax, 1.0)

    def px(x: float) -> float:
        return _PAD_L + x / xmax * iw

    def py(y: float) -> float:
        return _PAD_T + ih - min(y, ymax) / ymax * ih

    out = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
           f'aria-label="{_esc(title)}"><title>{_esc(title)}</title>',
           f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{iw}" height="{ih}" class="plot"/>']
    for frac in (0.0, 0.5, 1.0):
        y = py(ymax * frac)
        out.append(f'<line x1="{_PAD_L}" x2="{_PAD_L + iw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{_PAD_L - 3}" y="{y + 3:.1f}" class="ax" text-anchor="end">{_fmt_axis(ymax * frac)}</text>')
    out.append(f'<text x="{_PAD_L}" y="{_H - 4}" class="ax">0 s</text>'
               f'<text x="{_PAD_L + iw}" y="{_H - 4}" class="ax" text-anchor="end">{xmax:.0f} s</text>'
               f'<text x="{_PAD_L + iw / 2:.0f}" y="{_H - 4}" class="ax" text-anchor="middle">{_esc(unit)}</text>')
    for m in marks:
        if m.kind in ("stage", "warmup", "switch", "restart", "threshold") and 0 <= m.t <= xmax:
            x = px(m.t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_PAD_T}" y2="{_PAD_T + ih}" class="mark">'
                       f'<title>{_esc(m.kind)}: {_esc(m.label)} at {m.t:.1f} s</title></line>'
                       f'<text x="{x + 2:.1f}" y="{_PAD_T + 9}" class="mk">{_esc(m.label)[:14]}</text>')
    for label, color, opacity, pts in lines:
        if not pts:
            continue
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-opacity="{opacity}" '
                   f'stroke-width="1.5"><title>{_esc(label)}</title></polyline>')
    out.append("</svg>")
    return "".join(out)


def _fmt_axis(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.2g}"


def _cpu_series(samples: Sequence[SecondSample]) -> Series:
    pts: Series = []
    prev: SecondSample | None = None
    for s in samples:
        if s.cpu_seconds is None:
            continue
        if prev is not None and prev.cpu_seconds is not None and s.t > prev.t:
            pts.append((s.t, max(0.0, (s.cpu_seconds - prev.cpu_seconds) / (s.t - prev.t) * 100)))
        prev = s
    return pts


def _charts(run: StoredRun, store: RunStore) -> str:
    """Small multiples: one row per series, one column per target, shared axes per row."""
    targets = list(dict.fromkeys([*run.meta.targets, *(tr.target for tr in run.targets)]))
    data: dict[str, list[tuple[TargetRun, list[SecondSample], list[Mark]]]] = {t: [] for t in targets}
    for tr in sorted(run.targets, key=lambda r: r.round):
        if tr.status in report.MEASURED:
            data[tr.target].append((tr, store.samples(tr.id), store.marks(tr.id)))
    labels = list(dict.fromkeys(p.label for tr in run.targets for p in tr.patterns))
    colors = {label: _COLORS[i % len(_COLORS)] for i, label in enumerate(labels)}
    rounds = max((tr.round for tr in run.targets), default=1)
    nc = {t: frozenset(report.not_comparable_labels([tr for tr in run.targets if tr.target == t])) for t in targets}

    def opacity(r: int) -> float:
        return 1.0 if rounds <= 1 else round(1.0 - 0.6 * (r - 1) / (rounds - 1), 2)

    def simple(attr: str, scale: float = 1.0) -> Any:
        def get(samples: list[SecondSample]) -> dict[str, Series]:
            return {"": [(s.t, v * scale) for s in samples if (v := getattr(s, attr)) is not None]}
        return get

    def p99(samples: list[SecondSample], skip: frozenset[str] = frozenset()) -> dict[str, Series]:
        return {label: [(s.t, ps.p99_ms) for s in samples if (ps := s.patterns.get(label)) is not None
                        and ps.p99_ms is not None] for label in labels if label not in skip}

    kinds: list[tuple[str, str, Any]] = [
        ("req/s", "responses/s", simple("rps")), ("p99 per pattern", "ms", p99),
        ("busy slots", "slots", simple("peak_busy")), ("PSS", "MB", simple("pss_bytes", 1 / 1048576)),
        ("CPU", "% of one core", _cpu_series_dict)]
    xmax = max((s.t for rows in data.values() for _, samples, _ in rows for s in samples), default=1.0)
    out = ['<table class="mult"><thead><tr><th></th>' + "".join(f"<th>{_esc(t)}</th>" for t in targets)
           + "</tr></thead><tbody>"]
    for title, unit, get in kinds:
        per_target: dict[str, list[tuple[str, str, float, Series]]] = {}
        for t in targets:
            lines: list[tuple[str, str, float, Series]] = []
            for tr, samples, _ in data[t]:
                got = p99(samples, nc[t]) if get is p99 else get(samples)
                for label, pts in got.items():
                    name = f"{t} round {tr.round}" + (f": {label}" if label else "")
                    lines.append((name, colors.get(label, _COLORS[0]), opacity(tr.round), pts))
            per_target[t] = lines
        ymax = _nice_max(max((y for ls in per_target.values() for *_, pts in ls for _, y in pts), default=0.0))
        cells = []
        for t in targets:
            if not data[t]:
                cells.append('<td class="none">did not run</td>')
                continue
            if not any(pts for *_, pts in per_target[t]):
                cells.append('<td class="none">not shown by this target</td>')
                continue
            marks = data[t][0][2] if data[t] else []
            cells.append(f"<td>{_svg(f'{title}: {t}', per_target[t], xmax, ymax, marks, unit)}</td>")
        out.append(f"<tr><th>{_esc(title)}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    if len(labels) > 1:
        out.append('<p class="legend">' + " ".join(f'<span style="color:{c}">&#9632;</span> {_esc(label)}'
                                                   for label, c in colors.items()) + "</p>")
    return "".join(out)


def _cpu_series_dict(samples: list[SecondSample]) -> dict[str, Series]:
    return {"": _cpu_series(samples)}


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#111}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
table.mult td,table.mult th{border:0;vertical-align:top}
.chart .plot{fill:#fafafa;stroke:#ccc}.chart .grid{stroke:#eee}.chart .ax{font-size:9px;fill:#666}
.chart .mark{stroke:#888;stroke-dasharray:3 3}.chart .mk{font-size:8px;fill:#666}
.none{color:#888;font-style:italic;text-align:center}pre{background:#f4f4f4;padding:6px;overflow:auto;max-height:20em}
table.settings td,table.figures td{text-align:left}.verdict{font-size:1.1em;font-weight:600}.nc{color:#a16207}.skip{color:#888}
"""


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    return (f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")


def _pattern_table(cmp: Comparison) -> str:
    return _table(report.PATTERN_COLUMNS, report.pattern_rows(cmp), "patterns")


def _verdict_html(verdicts: list[ClaimResult] | str) -> str:
    if isinstance(verdicts, str):
        return f'<h2>Claim</h2><p class="nc">{_esc(verdicts)}</p>'
    out = []
    for v in verdicts:
        figs = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc('-' if x is None else x)}</td></tr>"
                       for k, x in v.figures.items())
        out.append(f'<h2>Claim {v.number}: {_esc(v.title)}</h2><p class="verdict">{_esc(v.verdict)}</p>'
                   f"<p>{_esc(v.why)}</p><p><i>Conditions:</i> {_esc(v.conditions)}</p>"
                   f'<table class="figures">{figs}</table>')
    return "".join(out)


def _configs_html(cmp: Comparison) -> str:
    out = []
    for r in cmp.rows:
        c = r.config
        out.append(f"<h3>{_esc(r.target)}</h3>")
        if r.message:
            out.append(f'<p class="skip">{_esc(r.status)}: {_esc(r.message)}</p>')
        if c is None:
            continue
        out.append(f"<p>{_esc(c.version)} at {_esc(c.url)}</p>")
        if c.settings:
            out.append(_table(["setting", "value"], [[k, v] for k, v in c.settings.items()], "settings"))
        for label, why in r.not_comparable.items():
            out.append(f'<p class="nc">{_esc(label)}: not comparable ({_esc(why)})</p>')
        if c.config_text:
            out.append(f"<details><summary>configuration file</summary><pre>{_esc(c.config_text)}</pre></details>")
    return "".join(out)


LOG_LINES_SHOWN = 200


def _logs_html(run: StoredRun, store: RunStore) -> str:
    """Each target run's log lines (error log, stderr, the runner's notes), the last
    LOG_LINES_SHOWN of each, folded."""
    out = []
    for tr in sorted(run.targets, key=lambda r: (r.target, r.round)):
        lines = store.logs(tr.id)
        if not lines:
            continue
        more = len(lines) - LOG_LINES_SHOWN
        text = "\n".join(f"{x.t:7.2f} {x.source}: {x.text}" for x in lines[-LOG_LINES_SHOWN:])
        out.append(f"<details><summary>{_esc(tr.target)} round {tr.round}: {len(lines)} log line{'' if len(lines) == 1 else 's'}"
                   + (f" (the last {LOG_LINES_SHOWN})" if more > 0 else "") + f"</summary><pre>{_esc(text)}</pre></details>")
    return "<h2>Logs</h2>" + "".join(out) if out else ""


def html_report(run_id: int, store: RunStore) -> str:
    """The run as one self-contained HTML page (no script, nothing fetched: it opens offline)."""
    run = store.load(run_id)
    cmp = report.compare(run, store)
    m = run.meta
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(m.started_at))
    host = ", ".join(f"{k} {v}" for k, v in m.host.items())
    excluded = sorted({label for r in cmp.rows for label in r.not_comparable})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # nothing may be fetched: no script, no external style, images only inline
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>mpmlab run {m.id}: {_esc(m.title or m.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(m.title or m.name)}</h1>",
        f'<p>run {m.id} · plan <b>{_esc(m.name)}</b> · {_esc(m.status)} · {_esc(when)}'
        + (f" · {_esc(host)}" if host else "") + "</p>",
        _verdict_html(claim_verdicts(run, store)),
        "<h2>Compare</h2>",
        _table(list(report.TABLE_COLUMNS), report.table_rows(cmp), "compare"),
        "<p>Medians over rounds (± is the spread, max - min, of req/s); percentiles from the HDR histograms "
        "merged over rounds and patterns; - where a target cannot show a figure.</p>",
    ]
    failed = [f"{tr.target} (round {tr.round}): {t}" for tr in run.targets for t in tr.thresholds_failed]
    if failed:
        parts.append('<p class="nc" id="thresholds">Thresholds failed: ' + "; ".join(_esc(x) for x in failed) + "</p>")
    if excluded:
        parts.append(f'<p class="nc">Left out of every row\'s totals (not comparable on some target): '
                     f"{_esc(', '.join(excluded))}</p>")
    parts += ["<h2>Per pattern</h2>", _pattern_table(cmp), "<h2>Series</h2>", _charts(run, store),
              "<h2>Effective configuration</h2>", _configs_html(cmp)]
    parts.append(_logs_html(run, store))
    if m.notes:
        parts.append(f"<h2>Notes</h2><pre>{_esc(m.notes)}</pre>")
    if m.plan_source:
        parts.append(f"<details><summary>plan</summary><pre>{_esc(m.plan_source)}</pre></details>")
    parts.append(f"<p class=\"skip\">written by mpmlab at {_esc(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}"
                 "</p></body></html>")
    return "\n".join(p for p in parts if p)


# -- everything -----------------------------------------------------------------------------------------
def write_exports(run_id: int, store: RunStore, out_dir: str | Path) -> list[Path]:
    """report.html, run.json, the CSVs, the .hlog files and run.mpmlab-run.gz (the bundle) in
    ``out_dir`` (created); the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    page = out / "report.html"
    page.write_text(html_report(run_id, store), encoding="utf-8")
    paths.append(page)
    doc = out / "run.json"
    doc.write_text(json_export(run_id, store), encoding="utf-8")
    paths.append(doc)
    paths += csv_exports(run_id, store, out)
    paths += hlog_exports(run_id, store, out)
    paths.append(export_bundle(run_id, store, out / f"run-{run_id}.mpmlab-run.gz"))
    return paths


# -- mpmlab experiment report|export|import --------------------------------------------------------------
EXIT_USAGE = 2


def add_report_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``report``, ``export`` and ``import`` under ``mpmlab experiment`` (mpmcore/experiments/cli.py
    calls this with its subparsers; each sets ``experiment_func``)."""

    def db_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--runs-db", metavar="PATH", help="the run store (default: the user's data directory)")

    r = sub.add_parser("report", help="a stored run's compare table; with --out, every export (HTML, JSON, CSV, HDR logs)")
    r.add_argument("run_id", metavar="RUN_ID", help="a run's id (mpmlab experiment run prints it), or 'last'")
    r.add_argument("--out", metavar="DIR", help="write report.html, run.json, the CSVs, the .hlog files and a bundle here")
    db_opt(r)
    r.set_defaults(experiment_func=cmd_report)
    e = sub.add_parser("export", help="a stored run, frames included, into one file another mpmlab imports")
    e.add_argument("run_id", metavar="RUN_ID", help="a run's id, or 'last'")
    e.add_argument("file", metavar="FILE", help="the bundle to write (e.g. run-12.mpmlab-run.gz)")
    db_opt(e)
    e.set_defaults(experiment_func=cmd_export)
    i = sub.add_parser("import", help="a bundle written by 'mpmlab experiment export' into the run store")
    i.add_argument("file", metavar="FILE")
    db_opt(i)
    i.set_defaults(experiment_func=cmd_import)


class _CliError(Exception):
    pass


def _open_store(args: argparse.Namespace) -> RunStore:
    db = Path(args.runs_db) if args.runs_db else default_path()
    try:
        return RunStore(db)
    except StoreError as e:
        raise _CliError(str(e)) from None


def _run_id(store: RunStore, text: str) -> int:
    if text == "last":
        runs = store.list_runs(limit=1)
        if not runs:
            raise _CliError(f"no run in {store.path} yet")
        return runs[0].id
    try:
        rid = int(text)
    except ValueError:
        raise _CliError(f"RUN_ID must be a run's number or 'last', got {text!r}") from None
    try:
        store.load(rid)
    except RunNotFound:
        raise _CliError(f"no run {rid} in {store.path} (mpmlab experiment report last: the newest)") from None
    return rid


def _cli(func: Callable[[argparse.Namespace, RunStore], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            store = _open_store(args)
            try:
                return func(args, store)
            finally:
                store.close()
        except (_CliError, BundleError) as e:
            print(f"mpmlab experiment {args.experiment_command}: {e}", file=sys.stderr)
        except OSError as e:
            print(f"mpmlab experiment {args.experiment_command}: {e.filename or ''}: {e.strerror or e}",
                  file=sys.stderr)
        return EXIT_USAGE
    return wrapped


@_cli
def cmd_report(args: argparse.Namespace, store: RunStore) -> int:
    rid = _run_id(store, args.run_id)
    print(report.format_report(report.compare(store.load(rid), store)))
    if args.out:
        paths = write_exports(rid, store, args.out)
        print(f"exports: {len(paths)} files in {args.out} (open {Path(args.out) / 'report.html'})")
    return 0


@_cli
def cmd_export(args: argparse.Namespace, store: RunStore) -> int:
    rid = _run_id(store, args.run_id)
    path = export_bundle(rid, store, args.file)
    print(f"run {rid} exported to {path} ({path.stat().st_size} bytes)")
    return 0


@_cli
def cmd_import(args: argparse.Namespace, store: RunStore) -> int:
    rid = import_bundle(args.file, store)
    print(f"imported as run {rid} into {store.path}")
    return 0
