"""Apache's directives: defaults per MPM, ranges, adjustment rules and their warnings, httpd.conf."""

from __future__ import annotations

import pytest

from mpmcore.directives import DirectiveError, catalogue, parse_assignments, resolve
from mpmcore.httpdconf import read_httpd_conf


@pytest.mark.parametrize("mpm,expected", [
    ("prefork", {"StartServers": 5, "MinSpareServers": 5, "MaxSpareServers": 10, "ServerLimit": 256,
                 "MaxRequestWorkers": 256}),
    ("worker", {"StartServers": 3, "MinSpareThreads": 75, "MaxSpareThreads": 250, "ServerLimit": 16,
                "ThreadLimit": 64, "ThreadsPerChild": 25, "MaxRequestWorkers": 400}),
    ("event", {"StartServers": 3, "MinSpareThreads": 75, "MaxSpareThreads": 250, "ServerLimit": 16,
               "ThreadLimit": 64, "ThreadsPerChild": 25, "MaxRequestWorkers": 400, "AsyncRequestWorkerFactor": 2.0}),
])
def test_defaults_are_apaches(mpm, expected):
    cfg = resolve(mpm)
    for k, v in expected.items():
        assert cfg[k] == v, k
    for k, v in {"MaxConnectionsPerChild": 0, "GracefulShutdownTimeout": 0, "ListenBacklog": 511, "Timeout": 60,
                 "KeepAlive": True, "KeepAliveTimeout": 5.0, "MaxKeepAliveRequests": 100}.items():
        assert cfg[k] == v, k
    assert cfg.warnings == []


def test_threaded_adjustments_with_warnings():
    cfg = resolve("worker", {"ThreadsPerChild": "100", "MaxRequestWorkers": "130"})
    assert cfg["ThreadsPerChild"] == 64  # clamped to ThreadLimit
    assert cfg["MaxRequestWorkers"] == 128  # rounded down to a multiple of ThreadsPerChild
    assert any("exceeds ThreadLimit" in w for w in cfg.warnings)
    assert any("not an integer multiple" in w for w in cfg.warnings)
    cfg = resolve("event", {"MaxRequestWorkers": 10})
    assert cfg["MaxRequestWorkers"] == 25 and "less than ThreadsPerChild" in cfg.warnings[0]
    cfg = resolve("event", {"MaxRequestWorkers": 1000})  # 40 children > ServerLimit 16
    assert cfg["MaxRequestWorkers"] == 400 and cfg.max_children == 16
    cfg = resolve("worker", {"MinSpareThreads": 100, "MaxSpareThreads": 110})
    assert cfg["MaxSpareThreads"] == 125  # >= MinSpareThreads + ThreadsPerChild
    cfg = resolve("worker", {"StartServers": 50})
    assert cfg["StartServers"] == 16


def test_prefork_adjustments_with_warnings():
    cfg = resolve("prefork", {"MaxRequestWorkers": 300})
    assert cfg["MaxRequestWorkers"] == 256 and "exceeds ServerLimit" in cfg.warnings[0]
    cfg = resolve("prefork", {"MinSpareServers": 0, "MaxSpareServers": 0})
    assert cfg["MinSpareServers"] == 1 and cfg["MaxSpareServers"] == 2
    assert len(cfg.warnings) == 2


@pytest.mark.parametrize("settings,directive,text", [
    ({"MaxRequestWorkers": "-1"}, "MaxRequestWorkers", "out of range"),
    ({"KeepAliveTimeout": "soon"}, "KeepAliveTimeout", "must be a number"),
    ({"KeepAlive": "maybe"}, "KeepAlive", "On or Off"),
    ({"ServerLimit": 5000}, "ServerLimit", "allowed: 1..1024"),
    ({"MaxClientz": 3}, "MaxClientz", "unknown directive"),
    ({"RequestReadTimeout": "header=abc"}, "RequestReadTimeout", ""),
])
def test_bad_values_name_the_directive(settings, directive, text):
    with pytest.raises(DirectiveError) as e:
        resolve("event", settings)
    assert e.value.directive == directive and text in str(e.value)


def test_aliases_other_mpms_and_catalogue():
    assert resolve("prefork", {"MaxClients": 50})["MaxRequestWorkers"] == 50  # Apache 2.2 name
    cfg = resolve("event", {"MinSpareServers": 3})
    assert "not used by the event MPM" in cfg.warnings[0]
    names = {row["name"] for row in catalogue("event")}
    assert {"ThreadsPerChild", "AsyncRequestWorkerFactor", "KeepAliveTimeout"} <= names
    assert "MinSpareServers" not in names
    assert parse_assignments(["maxrequestworkers=5"]) == {"MaxRequestWorkers": "5"}
    with pytest.raises(DirectiveError):
        parse_assignments(["MaxRequestWorkers"])


CONF = """
# an httpd.conf excerpt as people paste it
KeepAliveTimeout 3
<IfModule mpm_prefork_module>
    StartServers 2
    MaxRequestWorkers 50
</IfModule>
<IfModule mpm_event_module>
    ThreadsPerChild 32   # per child
    MaxRequestWorkers 128
</IfModule>
<IfModule !mpm_event_module>
    MaxConnectionsPerChild 1000
</IfModule>
<IfModule reqtimeout_module>
    RequestReadTimeout header=10-20,MinRate=500
</IfModule>
"""


def test_httpd_conf_sections_per_mpm():
    ev = read_httpd_conf(CONF, "event").settings
    assert ev == {"KeepAliveTimeout": "3", "ThreadsPerChild": "32", "MaxRequestWorkers": "128",
                  "RequestReadTimeout": "header=10-20,MinRate=500"}
    pf = read_httpd_conf(CONF, "prefork").settings
    assert pf["StartServers"] == "2" and pf["MaxConnectionsPerChild"] == "1000" and "ThreadsPerChild" not in pf
    assert resolve("event", ev)["MaxRequestWorkers"] == 128
    (unclosed,) = read_httpd_conf("<IfModule mpm_event_module>\nThreadsPerChild 4\n", "event").errors
    assert str(unclosed) == "line 1: <IfModule mpm_event_module> is never closed"
    (typo,) = read_httpd_conf("KeepAliveTimout 3\n", "event").errors
    assert str(typo) == "line 1: KeepAliveTimout: unknown directive; did you mean KeepAliveTimeout?"


