"""The ``mpmlab`` command's conventions: a bad path or file is one line on stderr and exit status 2
(never a traceback), warnings go to stderr, ``python -m mpmcore`` is the command, and ``mpmlab --help``
lists the dashboard's flags that bare ``mpmlab`` takes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


def mpmlab(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpmcore", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


@pytest.mark.parametrize(("args", "says"), [
    (["serve", "--config", "{missing}"], "No such file or directory"),
    (["serve", "--config", "{binary}"], "not a text file"),
    (["serve", "--config", "{bad}"], "MaxRequestWorkers"),
    (["serve", "--config", "{dir}"], "Is a directory"),
    (["ctl", "graceful", "--config", "{missing}"], "No such file or directory"),
    (["--config-file", "{missing}"], "not found"),
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path, args, says):
    (tmp_path / "bad.conf").write_text("<IfModule mpm_event_module>\n  MaxRequestWorkers lots\n</IfModule>\n")
    (tmp_path / "binary.conf").write_bytes(b"\xff\xfe\x00\x81 not text")
    paths = {"missing": str(tmp_path / "missing.conf"), "binary": str(tmp_path / "binary.conf"),
             "bad": str(tmp_path / "bad.conf"), "dir": str(tmp_path)}
    r = mpmlab(*[a.format(**paths) for a in args], *(["--mpm", "event"] if args[0] == "serve" else []))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr


def test_help_lists_the_dashboard_flags():
    r = mpmlab("--help")
    assert r.returncode == 0
    for flag in ("serve", "ctl", "traffic", "--port", "--core-listen", "--attach", "--config-file"):
        assert flag in r.stdout, flag


def test_ctl_warnings_go_to_stderr(server_factory):
    srv = server_factory(mpm="worker", settings={"StartServers": 1})
    r = mpmlab("ctl", "graceful", "--server", srv.listen, "--set", "MaxRequestWorkers=7", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == ["ok: graceful, generation 1 runs worker"]
    assert "warning: MaxRequestWorkers of 7 is less than ThreadsPerChild" in r.stderr
