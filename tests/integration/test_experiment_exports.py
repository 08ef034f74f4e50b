"""A real short experiment (the core under event and prefork, real traffic) run with
``mpmlab experiment run --out``, then ``report``, ``export`` and ``import`` as a user types them:
the exports hold every target's figures, and the imported run replays the same frames."""

from __future__ import annotations

import csv

from experiment_fixtures import run_experiment_cli

from mpmcore.experiments import report
from mpmcore.experiments.store import RunStore

PLAN = """name = "exports-it"
title = "Exports, end to end"
targets = ["core:event", "core:prefork"]
warmup = "1s"
rounds = 1
[budget]
slots = 8
processes = 2
[[stage]]
name = "load"
duration = "3s"
  [[stage.pattern]]
  pattern = "steady"
  label = "four"
  clients = 4
"""


def test_a_real_experiment_exports_imports_and_replays(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    db, out = tmp_path / "runs.sqlite3", tmp_path / "out"
    done = run_experiment_cli("run", str(plan), "--runs-db", str(db), "--out", str(out), "--quiet", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "report.html").is_file() and (out / "run.json").is_file()
    for target in ("core-event", "core-prefork"):
        with (out / f"{target}_stats.csv").open(newline="") as f:
            rows = {r["Name"]: r for r in csv.DictReader(f)}
        assert int(rows["four"]["Request Count"]) > 0 and rows["four"]["99%"] != "N/A"
        assert (out / f"{target}_four.hlog").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert "core:event" in page and "core:prefork" in page and "MaxRequestWorkers" in page

    store = RunStore(db)
    try:
        run = store.list_runs()[0]
        cmp = report.compare(store.load(run.id), store)
        by = {r.target: r for r in cmp.rows}
        assert set(by) == {"core:event", "core:prefork"}
        for r in by.values():
            assert r.rounds == 1 and r.rps is not None and r.rps > 0
            assert r.p50_ms is not None and r.p99_ms is not None and r.p99_ms >= r.p50_ms
            assert r.peak_busy is not None
            assert r.peak_processes is not None and r.peak_pss_bytes is not None and r.cpu_seconds is not None
            assert r.config is not None and r.config.settings
        assert by["core:prefork"].config.settings.get("MaxRequestWorkers") == "8"
        # prefork holds a slot per kept-alive connection (K) between requests; event parks them,
        # so its busy count at the sampled instants may be 0
        assert by["core:prefork"].peak_busy >= 1
        src_frames = {tr.target: store.frame_times(tr.id) for tr in store.load(run.id).targets}
        assert all(len(t) >= 10 for t in src_frames.values()), {k: len(v) for k, v in src_frames.items()}
    finally:
        store.close()

    shown = run_experiment_cli("report", "last", "--runs-db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "core:event" in shown.stdout and "core:prefork" in shown.stdout and "p99 ms" in shown.stdout

    bundle = tmp_path / "run.mpmlab-run.gz"
    assert run_experiment_cli("export", str(run.id), str(bundle), "--runs-db", str(db)).returncode == 0
    other = tmp_path / "other.sqlite3"
    imp = run_experiment_cli("import", str(bundle), "--runs-db", str(other))
    assert imp.returncode == 0, imp.stderr
    a, b = RunStore(db), RunStore(other)
    try:
        ra, rb = a.load(run.id), b.load(b.list_runs()[0].id)
        for ta, tb in zip(ra.targets, rb.targets, strict=True):
            times = a.frame_times(ta.id)
            assert b.frame_times(tb.id) == times
            for t in (times[0], times[len(times) // 2], times[-1]):
                assert b.frame_at(tb.id, t) == a.frame_at(ta.id, t)
            assert b.samples(tb.id) == a.samples(ta.id)
    finally:
        a.close()
        b.close()

    cut = tmp_path / "cut.gz"
    cut.write_bytes(bundle.read_bytes()[:-200])
    bad = run_experiment_cli("import", str(cut), "--runs-db", str(other))
    assert bad.returncode == 2 and "cut short" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = run_experiment_cli("report", "999", "--runs-db", str(db))
    assert missing.returncode == 2 and "no run 999" in missing.stderr
