"""Issue 10's first test: a short experiment (seconds per target) against the core's three MPMs, a
real Apache under event and nginx produces a report with every target's figures and
configuration, in the terminal table, the HTML page and the Locust-shaped CSVs."""

from __future__ import annotations

import csv

import pytest
from conftest import need

from mpmcore.experiments import exports, report
from mpmcore.experiments.plan import parse_plan
from mpmcore.experiments.runner import run_experiment
from mpmcore.experiments.store import RunStore

TARGETS = ["core:prefork", "core:worker", "core:event", "apache:event", "nginx"]
PLAN = f"""
name = "report-real"
title = "Report against real servers"
targets = {TARGETS!r}
warmup = "0.5s"
[budget]
slots = 8
processes = 2
[[stage]]
name = "load"
duration = "2s"
  [[stage.pattern]]
  pattern = "steady"
  label = "api"
  clients = 3
  [[stage.pattern]]
  pattern = "cpu"
  rate = 5
  ms = 1
"""


@pytest.fixture
def installed():
    for p in ("apache2", "nginx"):
        need(p)


def test_a_short_experiment_reports_every_targets_figures_and_configuration(tmp_path, installed):
    store = RunStore(tmp_path / "runs.sqlite3")
    try:
        run = run_experiment(parse_plan(PLAN, "report-real.toml"), store=store, workdir=tmp_path / "work")
        assert run.meta.status == "complete", [(t.target, t.status, t.message) for t in run.targets]
        cmp = report.compare(run, store)
        by = {r.target: r for r in cmp.rows}
        assert list(by) == TARGETS
        for name, r in by.items():
            assert r.rounds == 1 and r.status == "complete", (name, r.message)
            assert r.rps is not None and r.rps > 0, name
            assert r.p50_ms is not None and r.p99_ms is not None and r.p99_9_ms is not None, name
            assert r.errors == 0, (name, r.errors_by_kind)
            assert r.peak_pss_bytes is not None and r.peak_pss_bytes > 0, name
            assert r.cpu_seconds is not None, name
            assert r.config is not None and r.config.settings and r.config.version, name
            # "cpu" is left out of every row's totals (static servers cannot run it): same work
            assert r.per_pattern["api"]["rps"] is not None
        for name in ("core:prefork", "core:worker", "core:event", "apache:event"):
            assert by[name].peak_busy is not None and by[name].peak_threads is not None, name
            assert by[name].config.settings.get("MaxRequestWorkers") == "8", name
        # prefork and worker hold a slot per kept-alive connection (K) between requests; event
        # parks them, so its busy count at the sampled instants may be 0
        assert by["core:prefork"].peak_busy >= 1 and by["core:worker"].peak_busy >= 1
        assert by["nginx"].peak_busy is None and by["nginx"].peak_threads is None
        for name in ("apache:event", "nginx"):
            assert "cpu" in by[name].not_comparable
            assert set(by[name].per_pattern["cpu"].values()) == {None}
        assert by["core:event"].per_pattern["cpu"]["rps"] is not None
        text = report.format_report(cmp)
        for name in TARGETS:
            assert any(line.startswith(name + " ") for line in text.splitlines()), name
        assert "cpu: not comparable" in text

        paths = exports.write_exports(run.meta.id, store, tmp_path / "out")
        page = (tmp_path / "out" / "report.html").read_text()
        for name in TARGETS:
            assert f"<td>{name}</td>" in page and f"<h3>{name}</h3>" in page, name
        assert "Apache/2.4" in page and "nginx/" in page
        for stem in ("core-prefork", "core-worker", "core-event", "apache-event", "nginx"):
            with (tmp_path / "out" / f"{stem}_stats.csv").open(newline="") as f:
                rows = {r["Name"]: r for r in csv.DictReader(f)}
            assert int(rows["api"]["Request Count"]) > 0 and int(rows["api"]["Failure Count"]) == 0, stem
        assert len(paths) >= 5 * 3 + 3
    finally:
        store.close()
