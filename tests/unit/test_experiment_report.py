"""The compare table and the exports of a stored run, built through the real run store (a tmp
SQLite file) with HDR histograms recorded from known values."""

from __future__ import annotations

import csv
import gzip
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from experiment_fixtures import CORE_RESPONSES, build_run, hist
from hdrh.log import HistogramLogReader

from mpmcore.experiments import exports, report
from mpmcore.experiments.store import RunStore


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite3")
    yield s
    s.close()


@pytest.fixture
def built(store):
    return build_run(store)


def rows(store, built):
    cmp = report.compare(store.load(built.run_id), store)
    return cmp, {r.target: r for r in cmp.rows}


def pct_ms(values, p):
    return round(hist(values).get_value_at_percentile(p) / 1000.0, 3)


def test_rps_is_the_median_over_rounds_with_its_spread(store, built):
    cmp, by = rows(store, built)
    assert [r.target for r in cmp.rows] == ["core:event", "nginx", "lighttpd"]
    core = by["core:event"]
    per_round = [n / 10.0 for n in CORE_RESPONSES]  # "cpu" is left out: nginx cannot run it
    assert core.rounds == 3
    assert core.rps == pytest.approx(statistics.median(per_round)) == pytest.approx(100.0)
    assert core.rps_spread == pytest.approx(max(per_round) - min(per_round)) == pytest.approx(30.0)
    assert by["nginx"].rps == pytest.approx(100.0) and by["nginx"].rps_spread == pytest.approx(100.0)


def test_percentiles_come_from_the_histograms_merged_over_rounds_and_patterns(store, built):
    _, by = rows(store, built)
    core = by["core:event"]
    every = built.values[("core:event", "browsers")] + built.values[("core:event", "poll")]
    for got, p in ((core.p50_ms, 50.0), (core.p99_ms, 99.0), (core.p99_9_ms, 99.9)):
        assert got == pct_ms(every, p)
    # corrected: the open-model pattern's corrected values with the closed-model pattern's plain ones
    cor = built.values[("core:event", "browsers")] + built.corrected["core:event"]
    assert core.corrected_p99_ms == pct_ms(cor, 99.0) and core.corrected_p50_ms == pct_ms(cor, 50.0)
    assert core.corrected_p99_ms > core.p99_ms
    per = core.per_pattern
    assert per["browsers"]["p99_ms"] == pct_ms(built.values[("core:event", "browsers")], 99.0)
    assert per["browsers"]["corrected_p99_ms"] is None  # a closed-model pattern alone has no schedule
    assert per["poll"]["corrected_p99_ms"] == pct_ms(built.corrected["core:event"], 99.0)
    assert per["cpu"]["p99_ms"] == pct_ms(built.values[("core:event", "cpu")], 99.0)


def test_errors_peaks_memory_and_cpu(store, built):
    _, by = rows(store, built)
    core = by["core:event"]
    assert core.errors == 9 and core.errors_by_kind == {"timeout": 6, "reset": 3}
    assert core.error_rate == pytest.approx(9 / (sum(CORE_RESPONSES) + 15))
    assert core.peak_busy == 22  # rounds' peaks 11, 22, 27
    assert core.peak_processes == 2 and core.peak_threads == 64
    assert core.peak_pss_bytes == 12_200_000
    assert core.pss_per_connection_bytes == pytest.approx(2_200_000 / 42)
    assert core.cpu_seconds == pytest.approx(2.2)
    assert core.config is not None and core.config.settings["MaxRequestWorkers"] == "64"


def test_a_target_shows_none_where_it_cannot_and_not_comparable_is_carried(store, built):
    _, by = rows(store, built)
    ng = by["nginx"]
    assert ng.peak_busy is None and ng.peak_threads is None and ng.peak_processes == 3
    assert ng.not_comparable == {"cpu": "nginx has no CPU-heavy handler"}
    assert set(ng.per_pattern["cpu"].values()) == {None}
    assert ng.per_pattern["browsers"]["rps"] is not None
    # the core's row leaves "cpu" out of its totals too, so both rows compare the same work
    assert by["core:event"].rps == pytest.approx(100.0)
    skipped = by["lighttpd"]
    assert skipped.rounds == 0 and skipped.rps is None and skipped.status == "skipped"
    assert "apt-get install lighttpd" in skipped.message


def test_format_report_prints_dashes_configs_and_not_comparable(store, built):
    cmp, _ = rows(store, built)
    text = report.format_report(cmp)
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("target"))
    ng = next(line for line in lines[head:] if line.startswith("nginx"))
    cells = ng.split()
    assert cells[report.TABLE_COLUMNS.index("busy")] == "-" and cells[report.TABLE_COLUMNS.index("threads")] == "-"
    lt = next(line for line in lines[head:] if line.startswith("lighttpd"))
    assert lt.split()[2] == "-"
    assert "cpu: not comparable (nginx has no CPU-heavy handler)" in text
    assert "MaxRequestWorkers 64" in text and "lighttpd is not installed" in text


def locust_columns(tmp_path: Path) -> dict[str, list[str]]:
    """Locust's own CSV headers, read from the installed locust (in a child: locust patches the
    interpreter with gevent when imported)."""
    code = ("import json,sys\nfrom locust.stats import StatsCSVFileWriter, PERCENTILES_TO_REPORT\n"
            "w = StatsCSVFileWriter(None, PERCENTILES_TO_REPORT, sys.argv[1])\n"
            "print(json.dumps({'stats': w.requests_csv_columns, 'history': w.stats_history_csv_columns,"
            " 'failures': w.failures_columns}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "probe")], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_csvs_have_locusts_headers_and_the_figures(store, built, tmp_path):
    cols = locust_columns(tmp_path)
    out = tmp_path / "csv"
    paths = exports.csv_exports(built.run_id, store, out)
    names = {p.name for p in paths}
    assert {"core-event_stats.csv", "core-event_stats_history.csv", "core-event_failures.csv",
            "nginx_stats.csv", "lighttpd_stats.csv"} <= names
    stats = read_csv(out / "core-event_stats.csv")
    assert stats[0] == cols["stats"]
    by_name = {r[1]: dict(zip(stats[0], r, strict=True)) for r in stats[1:]}
    assert list(by_name) == ["browsers", "poll", "cpu", "Aggregated"]
    b = by_name["browsers"]
    b_resp = sum(n * 3 // 4 for n in CORE_RESPONSES)
    assert int(b["Request Count"]) == b_resp + 15
    assert int(b["Failure Count"]) == 9 + 6  # client errors + the 5xx answers, as Locust counts them
    assert float(b["Requests/s"]) == pytest.approx((b_resp + 15) / 30.0)  # 3 rounds of 10 s
    agg_row = by_name["Aggregated"]
    assert int(agg_row["Request Count"]) == sum(int(by_name[n]["Request Count"]) for n in ("browsers", "poll", "cpu"))
    assert int(b["99%"]) == round(hist(built.values[("core:event", "browsers")]).get_value_at_percentile(99) / 1000)
    assert int(b["100%"]) == round(max(built.values[("core:event", "browsers")]) / 1000)
    assert by_name["Aggregated"]["Type"] == ""
    assert float(b["Average Content Size"]) == pytest.approx(100.0)
    hist_rows = read_csv(out / "core-event_stats_history.csv")
    assert hist_rows[0] == cols["history"]
    assert len(hist_rows) == 1 + 3 * 12 * 3  # 3 rounds x 12 seconds x (2 patterns + Aggregated)
    agg = [dict(zip(hist_rows[0], r, strict=True)) for r in hist_rows[1:] if r[3] == "Aggregated"]
    assert agg[5]["Requests/s"].startswith("50.0") and agg[5]["User Count"] == str(41)
    fails = read_csv(out / "core-event_failures.csv")
    assert fails[0] == cols["failures"]
    got = {(r[1], r[2]): int(r[3]) for r in fails[1:]}
    assert got == {("browsers", "timeout"): 6, ("browsers", "reset"): 3, ("browsers", "HTTP 5xx"): 6}
    assert read_csv(out / "nginx_stats.csv")[0] == cols["stats"]
    assert read_csv(out / "lighttpd_stats.csv")[1][1] == "Aggregated"


def test_hlogs_read_back_with_hdrhistograms_reader(store, built, tmp_path):
    paths = exports.hlog_exports(built.run_id, store, tmp_path / "h")
    names = {p.name for p in paths}
    assert {"core-event_browsers.hlog", "core-event_poll.hlog", "core-event_poll.corrected.hlog",
            "nginx_browsers.hlog"} <= names
    assert "core-event_browsers.corrected.hlog" not in names  # nothing recorded in it
    assert "nginx_cpu.hlog" not in names
    reader = HistogramLogReader(str(tmp_path / "h" / "core-event_browsers.hlog"), hist([]))
    counts, starts = [], []
    while (h := reader.get_next_interval_histogram()) is not None:
        counts.append(h.get_total_count())
        starts.append(h.get_start_time_stamp())
    assert counts == [300, 300, 300]
    assert starts == sorted(starts)
    merged = hist([])
    reader = HistogramLogReader(str(tmp_path / "h" / "core-event_browsers.hlog"), hist([]))
    while (h := reader.get_next_interval_histogram()) is not None:
        merged.add(h)
    assert merged.get_value_at_percentile(99) == hist(built.values[("core:event", "browsers")]).get_value_at_percentile(99)


def test_bundle_round_trip_replays_the_same_frames(store, built, tmp_path):
    path = exports.export_bundle(built.run_id, store, tmp_path / "run.mpmlab-run.gz")
    other = RunStore(tmp_path / "other.sqlite3")
    try:
        new_id = exports.import_bundle(path, other)
        a, b = store.load(built.run_id), other.load(new_id)
        assert b.meta.name == a.meta.name and b.meta.status == "complete" and b.meta.plan_source == a.meta.plan_source
        assert "imported from run.mpmlab-run.gz" in b.meta.notes
        assert [(t.target, t.round, t.status, t.config, t.patterns, t.message) for t in a.targets] == \
               [(t.target, t.round, t.status, t.config, t.patterns, t.message) for t in b.targets]
        for ta, tb in zip(a.targets, b.targets, strict=True):
            assert store.samples(ta.id) == other.samples(tb.id)
            assert store.marks(ta.id) == other.marks(tb.id) and store.logs(ta.id) == other.logs(tb.id)
            assert store.frame_times(ta.id) == other.frame_times(tb.id)
            for t in store.frame_times(ta.id):
                assert other.frame_at(tb.id, t) == store.frame_at(ta.id, t)
        assert len(other.frame_times(b.targets[0].id)) == 20
        assert report.compare(b, other).rows[0].p99_ms == report.compare(a, store).rows[0].p99_ms
    finally:
        other.close()


def test_a_cut_or_foreign_bundle_is_refused_and_leaves_nothing(store, built, tmp_path):
    path = exports.export_bundle(built.run_id, store, tmp_path / "run.mpmlab-run.gz")
    data = path.read_bytes()
    other = RunStore(tmp_path / "other.sqlite3")
    try:
        cut = tmp_path / "cut.gz"
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(exports.BundleError, match="cut short"):
            exports.import_bundle(cut, other)
        # a file cut at a line's end still gzips whole: the end record is what is missing
        lines = gzip.decompress(data).decode().splitlines(keepends=True)
        short = tmp_path / "short.gz"
        short.write_bytes(gzip.compress("".join(lines[:-3]).encode()))
        with pytest.raises(exports.BundleError, match="no end record"):
            exports.import_bundle(short, other)
        foreign = tmp_path / "foreign.gz"
        foreign.write_bytes(gzip.compress(b'{"hello": "world"}\n'))
        with pytest.raises(exports.BundleError, match="not an mpmlab run bundle"):
            exports.import_bundle(foreign, other)
        plain = tmp_path / "plain.txt"
        plain.write_text("name = 'a plan'\n")
        with pytest.raises(exports.BundleError, match="not a gzip file"):
            exports.import_bundle(plain, other)
        with pytest.raises(exports.BundleError, match="no such file"):
            exports.import_bundle(tmp_path / "missing.gz", other)
        assert other.list_runs() == []
    finally:
        other.close()


def test_json_export_holds_the_comparison_and_series(store, built):
    doc = json.loads(exports.json_export(built.run_id, store))
    assert doc["format"] == "mpmlab-run" and doc["meta"]["id"] == built.run_id
    rows = {r["target"]: r for r in doc["comparison"]["rows"]}
    assert rows["core:event"]["rps"] == pytest.approx(100.0) and rows["nginx"]["peak_busy"] is None
    core = [t for t in doc["targets"] if t["target"] == "core:event"]
    assert len(core) == 3 and len(core[0]["samples"]) == 12 and core[0]["marks"][1]["kind"] == "stage"


def test_write_exports_writes_every_file(store, built, tmp_path):
    paths = exports.write_exports(built.run_id, store, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"report.html", "run.json", "core-event_stats.csv", "core-event_browsers.hlog",
            f"run-{built.run_id}.mpmlab-run.gz"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths if not p.name.endswith("_failures.csv"))
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in page and "http://" not in page.replace("http://127.0.0.1:1", "")
    # 5 series x the 2 targets that ran, but nginx has no busy slots; lighttpd was skipped
    assert page.count("<svg") == 5 * 2 - 1
    assert page.count("not shown by this target") == 1 and page.count("did not run") == 5
    assert "nginx round 2: 1 log line<" in page and "[mpm_event:notice] nginx round 2 resuming" in page


def test_a_live_recording_without_patterns_reports_from_its_samples(store, tmp_path):
    from mpmcore.experiments.model import SecondSample

    rid = store.begin_run("recording", "live", "Live session", "", ["core:event"])
    tid = store.begin_target(rid, "core:event", 1)
    store.add_samples(tid, [SecondSample(t=float(i), stage="live", rps=float(10 * i), errors=0, busy=i,
                                         pss_bytes=1_000_000 * (i + 1), cpu_seconds=0.1 * i) for i in range(5)])
    store.end_target(tid, "incomplete")
    store.end_run(rid, "incomplete")
    (row,) = report.compare(store.load(rid), store).rows
    assert row.rps == pytest.approx(20.0) and row.p99_ms is None and row.peak_busy == 4
    assert row.pss_per_connection_bytes is None  # no client connection counted: nothing to divide by
    assert row.cpu_seconds == pytest.approx(0.4)
    page = exports.html_report(rid, store)
    assert "Live session" in page and page.count("<svg") == 4  # req/s, busy, PSS, CPU; no pattern p99
    path = exports.export_bundle(rid, store, tmp_path / "live.gz")
    new = exports.import_bundle(path, store)
    assert store.load(new).meta.status == "incomplete" and store.samples(store.load(new).targets[0].id) == store.samples(tid)


def test_a_damaged_histogram_is_named_and_left_out_and_refused_in_a_bundle(store, tmp_path):
    from experiment_fixtures import encoded, figures

    from mpmcore.experiments.model import PatternResult

    rid = store.begin_run("experiment", "damaged", "Damaged", "", ["core:event"])
    tid = store.begin_target(rid, "core:event", 1)
    good = PatternResult(label="good", pattern="steady", stage="s", params={}, total=figures(10, 10, 1.0),
                         histograms={"latency": encoded([1000] * 10)})
    bad = PatternResult(label="bad", pattern="steady", stage="s", params={}, total=figures(10, 10, 1.0),
                        histograms={"latency": "not-a-histogram"})
    store.end_target(tid, "complete", patterns=[good, bad])
    store.end_run(rid, "complete")
    (row,) = report.compare(store.load(rid), store).rows
    assert row.p50_ms == 1.0 and "could not be read (left out): bad latency" in row.message
    assert "<table" in exports.html_report(rid, store)
    path = exports.export_bundle(rid, store, tmp_path / "d.gz")
    other = RunStore(tmp_path / "other.sqlite3")
    try:
        with pytest.raises(exports.BundleError, match=r"not HDR histograms \(bad latency\)"):
            exports.import_bundle(path, other)
        assert other.list_runs() == []
    finally:
        other.close()


def test_a_claims_run_shows_its_verdict_in_the_html_and_json(store):
    from mpmcore.experiments import claims

    claim = next(iter(claims.CLAIMS.values()))
    built = build_run(store, name=claim.plan)
    run = store.load(built.run_id)
    (want,) = claims.verdict_for(run, store)
    page = exports.html_report(built.run_id, store)
    assert f"Claim {want.number}: " in page and f'<p class="verdict">{want.verdict}</p>' in page
    doc = json.loads(exports.json_export(built.run_id, store))
    assert doc["claims"][0]["claim"] == want.claim and doc["claims"][0]["verdict"] == want.verdict
    # a run of a plan that is no claim's has no verdict section
    other = build_run(store)
    assert "<h2>Claim" not in exports.html_report(other.run_id, store)


def test_a_target_that_never_began_and_a_failed_threshold(store):
    from experiment_fixtures import encoded, figures

    from mpmcore.experiments.model import PatternResult

    rid = store.begin_run("experiment", "partial", "Partial", "", ["core:event", "core:worker"])
    tid = store.begin_target(rid, "core:event", 1)
    pat = PatternResult(label="a", pattern="steady", stage="s", params={}, total=figures(10, 10, 1.0),
                        histograms={"latency": encoded([2000] * 10)})
    store.end_target(tid, "complete", patterns=[pat], thresholds_failed=["p99>1ms: 2.0 ms"])
    store.end_run(rid, "stopped")  # stopped before core:worker began
    cmp = report.compare(store.load(rid), store)
    by = {r.target: r for r in cmp.rows}
    assert by["core:event"].status == "complete" and by["core:event"].p99_ms == 2.0
    assert by["core:worker"].status == "not run" and by["core:worker"].rounds == 0
    page = exports.html_report(rid, store)
    assert "Thresholds failed: core:event (round 1): p99&gt;1ms: 2.0 ms" in page
