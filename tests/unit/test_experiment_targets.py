"""Experiment targets without starting anything: specs, the budget in each target's terms (the
effective configuration's values), what a static server cannot compare, availability."""

from __future__ import annotations

import pytest

from mpmcore.experiments import targets as tg
from mpmcore.experiments.cli import exit_status, format_progress
from mpmcore.experiments.model import Budget, Progress, RunMeta, StoredRun, TargetRun
from mpmcore.experiments.plan import parse_plan
from mpmcore.experiments.runner import round_order
from mpmcore.experiments.targets import TargetError, available, effective_config, parse_target


@pytest.mark.parametrize("text, name, kind, mpm", [
    ("core:event", "core:event", "core", "event"),
    ("apache:prefork", "apache:prefork", "apache", "prefork"),
    ("nginx", "nginx", "nginx", None),
    (" lighttpd ", "lighttpd", "lighttpd", None),
    ("attach:http://127.0.0.1:8080/server-status", "attach:http://127.0.0.1:8080/server-status", "attach", None),
    ("core:event?tls_mode=pre-2.4.7", "core:event?tls_mode=pre-2.4.7", "core", "event"),
])
def test_parse_target(text, name, kind, mpm):
    spec = parse_target(text)
    assert (spec.name, spec.kind, spec.mpm) == (name, kind, mpm)


@pytest.mark.parametrize("text, message", [
    ("core", "core needs an MPM"),
    ("apache:turbo", "apache needs an MPM"),
    ("nginx:event", "nginx takes no MPM"),
    ("iis", "unknown target"),
    ("attach:nowhere", "attach needs a URL"),
    ("core:event?colour=red", "unknown option 'colour'"),
    ("core:event?tls_mode=2.2", "tls_mode must be one of"),
    ("apache:event?tls_mode=pre-2.4.7", "the embedded core's event MPM only"),
])
def test_parse_target_errors(text, message):
    with pytest.raises(TargetError, match=message):
        parse_target(text)


B = Budget(slots=64, processes=2, keepalive_timeout=5.0, max_keepalive_requests=100,
           request_read_timeout="header=20-40,MinRate=500 body=30,MinRate=500", timeout=60.0)


def test_budget_under_prefork_is_64_processes():
    s = effective_config(parse_target("core:prefork"), B).settings
    assert (s["MaxRequestWorkers"], s["ServerLimit"], s["StartServers"], s["MaxSpareServers"]) == ("64",) * 4
    assert "ThreadsPerChild" not in s
    assert s["KeepAliveTimeout"] == "5" and s["RequestReadTimeout"] == B.request_read_timeout


@pytest.mark.parametrize("target", ["core:worker", "core:event", "apache:worker", "apache:event"])
def test_budget_under_threads_is_2_x_32(target):
    cfg = effective_config(parse_target(target), B)
    s = cfg.settings
    assert (s["ServerLimit"], s["ThreadsPerChild"], s["ThreadLimit"], s["MaxRequestWorkers"]) == ("2", "32", "32", "64")
    assert (s["KeepAlive"], s["MaxKeepAliveRequests"], s["Timeout"]) == ("On", "100", "60")
    assert cfg.mpm == target.split(":")[1] and cfg.target == target


def test_budget_for_nginx_and_lighttpd():
    plan = parse_plan('name = "p"\n[[stage]]\nduration = "1s"\n[[stage.pattern]]\npattern = "slowloris"\n'
                      'connections = 3000\n', "p.toml")
    n = effective_config(parse_target("nginx"), B, plan).settings
    assert (n["worker_processes"], n["keepalive_timeout"], n["client_header_timeout"], n["client_body_timeout"],
            n["send_timeout"]) == ("2", "5s", "20s", "30s", "60s")
    assert int(n["worker_connections"]) >= 3000 + 64  # never refuses one of the plan's connections
    assert "no request slots" in n["note"]
    lt = effective_config(parse_target("lighttpd"), B, plan).settings
    assert (lt["server.max-worker"], lt["server.max-keep-alive-idle"], lt["server.max-read-idle"]) == ("1", "5", "20")
    assert int(lt["server.max-connections"]) >= 3064
    assert "one event-driven process" in lt["note"]


def test_plan_directives_and_tls_mode_reach_the_core():
    plan = parse_plan('name = "p"\n[directives]\nMaxConnectionsPerChild = 10\n[[stage]]\nduration = "1s"\n'
                      '[[stage.pattern]]\npattern = "ajax"\n', "p.toml")
    s = effective_config(parse_target("core:event?tls_mode=pre-2.4.7"), B, plan).settings
    assert s["MaxConnectionsPerChild"] == "10" and s["SSLSyncEventMPM"] == "On"


def test_static_servers_do_not_compare_dynamic_handlers():
    plan = parse_plan('name = "p"\n[[stage]]\nduration = "1s"\n'
                      '[[stage.pattern]]\npattern = "cpu"\n'
                      '[[stage.pattern]]\npattern = "io"\n'
                      '[[stage.pattern]]\npattern = "steady"\npath = "/bytes/100"\n'
                      '[[stage.pattern]]\npattern = "browsers"\n'
                      '[[stage.pattern]]\npattern = "ajax"\npath = "/health"\n'
                      '[[stage.pattern]]\npattern = "slow-read"\nsize = "1MiB"\n', "p.toml")
    nc = effective_config(parse_target("nginx"), B, plan).not_comparable
    assert set(nc) == {"cpu", "io"}
    assert "no a CPU-heavy handler" not in nc["cpu"] and "CPU-heavy handler (/cpu)" in nc["cpu"]
    assert effective_config(parse_target("core:prefork"), B, plan).not_comparable == {}
    assert set(effective_config(parse_target("apache:event"), B, plan).not_comparable) == {"cpu", "io"}
    assert tg.plan_paths(plan)["slow-read"] == "/bytes/1048576"
    assert tg._static_files(plan) == {"bytes/100": 100, "bytes/4096": 4096, "bytes/1048576": 1048576}


def test_available_names_the_missing_package(monkeypatch):
    assert available(parse_target("core:event")) is None
    monkeypatch.setitem(tg._EXE, "nginx", "nginx-not-installed-here")
    monkeypatch.setitem(tg._EXE, "apache", "/nonexistent/apache2")
    assert available(parse_target("nginx")) == "nginx is not installed: apt-get install nginx"
    assert available(parse_target("apache:event")) == "apache2 is not installed: apt-get install apache2"


def test_round_order_rotates():
    specs = [parse_target(t) for t in ("core:prefork", "core:worker", "core:event")]
    assert [s.name for s in round_order(specs, 1)] == ["core:prefork", "core:worker", "core:event"]
    assert [s.name for s in round_order(specs, 2)] == ["core:worker", "core:event", "core:prefork"]
    assert [s.name for s in round_order(specs, 4)] == ["core:prefork", "core:worker", "core:event"]


def _run(status="complete", targets=()):
    meta = RunMeta(1, "experiment", "p", "P", status, 0.0, 1.0, "", ("core:event",))
    return StoredRun(meta, tuple(targets))


def _tr(status="complete", failed=()):
    return TargetRun(1, 1, "core:event", 1, status, 0.0, 1.0, None, thresholds_failed=tuple(failed))


def test_exit_status():
    assert exit_status(_run(targets=[_tr(), _tr("skipped")])) == 0
    assert exit_status(_run(targets=[_tr(), _tr("failed")])) == 1
    assert exit_status(_run(targets=[_tr(failed=["x: FAIL"])])) == 99
    assert exit_status(_run(targets=[_tr("failed"), _tr(failed=["x: FAIL"])])) == 1
    assert exit_status(_run("stopped")) == 130


def test_progress_line_says_target_stage_and_time_left():
    p = Progress(run_id=1, target="core:event", round=1, rounds=2, stage="browsers", target_index=1, targets=3,
                 elapsed=4.2, target_seconds=12, seconds_left=75)
    assert format_progress(p) == "[round 1/2, target 2/3] core:event: browsers 4/12 s  (1m15s left)"


def test_real_servers_get_the_cores_bytes():
    from mpmcore.content.handlers import _INDEX, _payload

    for n in (0, 1, 52, 53, 4096, 3 << 20):
        assert tg._payload(n) == bytes(_payload()[:n])
    assert tg._index_page() == _INDEX
