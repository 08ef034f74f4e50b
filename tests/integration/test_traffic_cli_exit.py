"""``mpmlab traffic``'s exit status, as CI jobs and shells read it: 99 when a --fail-on threshold
failed, 0 when none did, 130 after Ctrl-C (with the summary still printed), 2 for a bad condition,
all against the embedded server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT

from mpmcore import scoreboard as sb
from mpmcore.procs import terminate


def cli(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mpmcore.cli", "traffic", "steady", "--target",
                             f"http://127.0.0.1:{port}/", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))


def finish(p: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate(p, 10)
        raise
    return p.returncode, out, err


def test_thresholds_decide_the_exit_status(server_factory):
    srv = server_factory(mpm="event")
    # p99 > 0 ms always holds: the run fails its threshold; errors > 50 % does not hold
    code, out, err = finish(cli(srv.port, "--clients", "2", "--duration", "1s", "--quiet", "--json",
                                "--fail-on", "p99>0ms,errors>50%"))
    assert code == 99, err
    doc = json.loads(out)
    assert doc["total"]["responses"] > 0
    assert [(t["condition"], t["failed"]) for t in doc["thresholds"]] == [("p99>0ms", True), ("errors>50%", False)]
    assert doc["thresholds"][0]["measured"] > 0

    code, out, err = finish(cli(srv.port, "--clients", "2", "--duration", "1s", "--quiet",
                                "--fail-on", "errors>50%,p99>10s"))
    assert code == 0, err
    assert "thresholds (--fail-on)" in out
    assert out.count("\nok ") == 2 and "FAIL" not in out


def test_a_bad_condition_is_a_usage_error_before_any_traffic(server_factory):
    srv = server_factory(mpm="event")
    code, out, err = finish(cli(srv.port, "--fail-on", "latency>200ms"), timeout=20)
    assert code == 2
    assert "unknown metric 'latency'" in err and out == ""
    # no request of the pattern reached the server (each slot keeps its last request's pattern)
    assert not [w for _, _, w in sb.live_workers(srv.snapshot()) if w.pattern == b"steady"]


def test_ctrl_c_stops_the_run_prints_the_summary_and_exits_130(server_factory):
    srv = server_factory(mpm="event")
    p = cli(srv.port, "--clients", "2", "--duration", "60s", "--fail-on", "errors>50%")
    assert p.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the first progress line means the pattern is running
        line = p.stderr.readline()
        if "resp/s" in line or not line:
            break
    assert "resp/s" in line, "no progress line within 20 s"
    os.kill(p.pid, signal.SIGINT)
    code, out, err = finish(p, timeout=20)
    assert code == 130, err
    assert "ended        stopped after" in out
    assert "thresholds (--fail-on)" in out
