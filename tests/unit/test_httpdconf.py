"""A whole httpd.conf as people paste it: Debian's apache2.conf with its MPM blocks applies the MPM
and core directives, lists every other line with its number and why, and reports every error
once, each with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpmcore.httpdconf import read_httpd_conf

DEBIAN = (Path(__file__).parent.parent / "data" / "debian-apache2.conf").read_text()


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("mpm", "expected"), [
    ("event", {"StartServers": "2", "ThreadsPerChild": "25", "MaxRequestWorkers": "150", "ThreadLimit": "64"}),
    ("worker", {"StartServers": "2", "MinSpareThreads": "25", "MaxSpareThreads": "75"}),
    ("prefork", {"StartServers": "5", "MinSpareServers": "5", "MaxSpareServers": "10", "MaxRequestWorkers": "150"}),
])
def test_debian_apache2_conf(mpm, expected):
    conf = read_httpd_conf(DEBIAN, mpm)
    assert conf.errors == ()
    core = {"Timeout": "300", "KeepAlive": "On", "MaxKeepAliveRequests": "100", "KeepAliveTimeout": "5"}
    assert conf.settings.items() >= (core | expected).items()
    assert conf.lines["Timeout"] == _line_of(DEBIAN, "Timeout 300")
    # the two other MPMs' blocks, each named with its line
    others = {b.directive: b for b in conf.other_mpm_blocks}
    assert set(others) == {f"<IfModule mpm_{m}_module>" for m in ("prefork", "worker", "event") if m != mpm}
    for name, block in others.items():
        assert block.line == _line_of(DEBIAN, name) and f"{mpm} is running" in block.reason
    ignored = {(i.line, i.directive) for i in conf.ignored}
    for needle, directive in [("DefaultRuntimeDir", "DefaultRuntimeDir"), ("Include ports.conf", "Include"),
                              ("LogFormat \"%h %l %u %t \\\"%r\\\" %>s %O\" common", "LogFormat"),
                              ("ServerAdmin", "ServerAdmin"), ("AllowOverride None", "AllowOverride")]:
        assert (_line_of(DEBIAN, needle), directive) in ignored, needle
    reasons = {i.directive: i.reason for i in conf.ignored}
    assert reasons["ServerAdmin"].startswith("inside <VirtualHost *:80>")
    assert "paste the included file's MPM part" in reasons["Include"]
    # every non-comment, non-section line is accounted for exactly once: applied, ignored or in a skipped block
    held = sum(int(b.reason.split("(")[1].split()[0]) for b in conf.other_mpm_blocks)
    directives = [ln for ln in DEBIAN.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "<"))]
    assert len(conf.lines) + len(conf.ignored) + held == len(directives)  # (no directive is set twice here)


def test_every_error_once_with_its_line():
    text = ("MaxRequestWorkers\n"            # 1: no value
            "ThreadsPerChild zero\n"        # 2: not a number
            "KeepAliveTimout 5\n"           # 3: a typo
            "<Directory /var/www>\n"        # 4
            "  Require all granted\n"
            "</VirtualHost>\n"              # 6: closes the wrong section
            "</Directory>\n"
            "<IfModule mpm_event_module>\n")  # 8: never closed
    conf = read_httpd_conf(text, "event")
    assert [str(e) for e in conf.errors] == [
        "line 1: MaxRequestWorkers: missing value",
        str(conf.errors[1]),
        "line 3: KeepAliveTimout: unknown directive; did you mean KeepAliveTimeout?",
        "line 6: </VirtualHost> closes <Directory /var/www> of line 4",
        "line 8: <IfModule mpm_event_module> is never closed",
    ]
    second = str(conf.errors[1])
    assert second.startswith("line 2: ThreadsPerChild: ") and "zero" in second and second.count("ThreadsPerChild") == 1


def test_empty_text():
    (err,) = read_httpd_conf("  \n", "event").errors
    assert str(err) == "the text is empty: paste an httpd.conf or a part of one"


def test_continuation_lines_and_negated_blocks():
    text = "KeepAliveTimeout \\\n   7\n<IfModule !mpm_prefork_module>\nThreadsPerChild 16\n</IfModule>\n"
    assert read_httpd_conf(text, "event").settings == {"KeepAliveTimeout": "7", "ThreadsPerChild": "16"}
    pf = read_httpd_conf(text, "prefork")
    assert pf.settings == {"KeepAliveTimeout": "7"}
    assert pf.other_mpm_blocks[0].reason.startswith("for MPMs other than prefork (1 directive)")


def test_other_mpm_directive_at_top_level_is_listed():
    conf = read_httpd_conf("MinSpareServers 5\nKeepAlive Off\n", "event")
    assert conf.settings == {"KeepAlive": "Off"}
    (i,) = conf.ignored
    assert (i.line, i.directive, i.reason) == (1, "MinSpareServers", "a prefork directive: not used by the event MPM")
