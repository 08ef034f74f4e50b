"""Experiments against real servers: a real Apache under event, nginx and lighttpd beside the core,
each started by the experiment on loopback with the same content and stopped by pid."""

from __future__ import annotations

import http.client

import psutil
import pytest
from conftest import need

from mpmcore.experiments.model import Budget
from mpmcore.experiments.plan import parse_plan
from mpmcore.experiments.runner import run_experiment
from mpmcore.experiments.store import RunStore
from mpmcore.experiments.targets import parse_target, start
from mpmcore.sources.grid import GRID_HEADER, GRID_MAGIC

PLAN = """
name = "real"
targets = ["core:event", "apache:event", "nginx", "lighttpd"]
[budget]
slots = 8
processes = 2
[[stage]]
name = "mix"
duration = "1.5s"
  [[stage.pattern]]
  pattern = "browsers"
  clients = 2
  assets = 4
  think_time = "200ms"
  [[stage.pattern]]
  pattern = "cpu"
  rate = 5
  ms = 1
"""


def _get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.split("//")[1].rstrip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


@pytest.fixture
def installed():
    for p in ("apache2", "nginx", "lighttpd"):
        need(p)


def test_every_real_server_serves_the_cores_content(tmp_path, installed):
    plan = parse_plan(PLAN, "real.toml")
    bodies = {}
    pids = []
    for name in ("core:event", "apache:event", "nginx", "lighttpd"):
        with start(parse_target(name), Budget(slots=8, processes=2), tmp_path / name, plan) as t:
            pids += t.pids()
            bodies[name] = [_get(t.url, p) for p in ("/", "/index.html", "/bytes/4096")]
    core = bodies.pop("core:event")
    assert core[0][0] == 200 and len(core[2][1]) == 4096
    for name, got in bodies.items():
        assert got == [core[0], core[0], core[2]], name  # the same bytes at the same paths
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_a_short_experiment_against_apache_nginx_and_lighttpd(tmp_path, installed):
    store = RunStore(tmp_path / "runs.sqlite3")
    run = run_experiment(parse_plan(PLAN, "real.toml"), store=store, workdir=tmp_path / "work")
    assert run.meta.status == "complete"
    by = {t.target: t for t in run.targets}
    assert set(by) == {"core:event", "apache:event", "nginx", "lighttpd"}
    for name, tr in by.items():
        assert tr.status == "complete", (name, tr.message)
        assert tr.config is not None and tr.config.version and tr.config.config_text
        pats = {p.label: p for p in tr.patterns}
        assert pats["browsers"].comparable and pats["browsers"].total["responses"] > 0
        assert pats["browsers"].total["status"]["2xx"] == pats["browsers"].total["responses"], name
        assert pats["cpu"].comparable == (name == "core:event"), name
        if name != "core:event":
            assert "CPU-heavy handler" in pats["cpu"].note and "cpu" in tr.config.not_comparable
        samples = store.samples(tr.id)
        assert samples and all(s.pss_bytes and s.pss_bytes > 0 for s in samples), name
        frames = store.frame_times(tr.id)
        if name == "nginx":  # stub_status has no scoreboard: connections instead
            assert not frames and any(s.connections for s in samples)
        else:
            assert len(frames) >= 5, name
            f = store.frame_at(tr.id, frames[-1])
            assert f is not None and GRID_HEADER.unpack_from(f.grid)[0] == GRID_MAGIC
    apache = by["apache:event"].config
    assert apache is not None and "ThreadsPerChild 4" in apache.config_text and "MaxRequestWorkers 8" in apache.config_text
    assert apache.version.startswith("Apache/2.4")
    store.close()


def test_a_target_that_cannot_run_the_plan_fails_and_the_run_goes_on(tmp_path, installed):
    plan = parse_plan('name = "tls"\ntargets = ["nginx", "core:event"]\n[budget]\nslots = 4\nprocesses = 1\n'
                      'tls = true\n[[stage]]\nduration = "1s"\n[[stage.pattern]]\npattern = "steady"\nclients = 2\n',
                      "tls.toml")
    with RunStore(tmp_path / "runs.sqlite3") as store:
        run = run_experiment(plan, store=store, workdir=tmp_path / "work")
        nginx, core = run.targets
        assert (nginx.target, nginx.status) == ("nginx", "failed")
        assert "tls = true is not supported for nginx" in nginx.message
        assert (core.target, core.status) == ("core:event", "complete")
        assert core.config is not None and core.config.url.startswith("https://127.0.0.1:")
        assert core.patterns[0].total["responses"] > 0 and core.patterns[0].total["errors_total"] == 0
        assert run.meta.status == "complete"
