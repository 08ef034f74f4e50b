"""mpmlab's patterns as Locust user classes (mpmcore/traffic/locustfile.py), run as Locust runs them
beyond one machine: a master and two workers, here as processes on loopback against the embedded
core. The scoreboard must show what the patterns cause (browsers' kept-alive connections hold worker
threads in K, slowloris holds them in R), each slot naming its pattern, and Locust's own statistics
must count the requests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, free_port

from mpmcore import scoreboard as sb
from mpmcore.procs import terminate

LOCUSTFILE = ROOT / "mpmcore" / "traffic" / "locustfile.py"


def locust(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd))


def states_by_pattern(srv) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for _, _, w in sb.live_workers(srv.snapshot()):
        key = (sb.LETTERS[w.status], w.pattern.decode())
        out[key] = out.get(key, 0) + 1
    return out


def test_master_and_two_workers_drive_the_core_with_mpmlab_patterns(server_factory, tmp_path):
    srv = server_factory(mpm="worker", settings={"ServerLimit": 2, "ThreadsPerChild": 25, "MaxRequestWorkers": 50,
                                                 "StartServers": 2, "KeepAliveTimeout": 30})
    port = free_port()
    common = ["--mpmlab-think-time", "20", "--mpmlab-interval", "1"]
    master = locust("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                    "--headless", "--expect-workers", "2", "--users", "8", "--spawn-rate", "8",
                    "--run-time", "12s", "--host", f"http://127.0.0.1:{srv.port}", "--json", *common,
                    "BrowserUser", "SlowlorisUser", cwd=tmp_path)
    workers = [locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *common,
                      "BrowserUser", "SlowlorisUser", cwd=tmp_path) for _ in range(2)]
    try:
        seen: dict[tuple[str, str], int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and master.poll() is None:
            seen = states_by_pattern(srv)
            # 4 browsers x up to 6 kept-alive connections each, and 4 slowloris connections
            if seen.get(("K", "browsers"), 0) >= 4 and seen.get(("R", "slowloris"), 0) >= 4:
                break
            time.sleep(0.1)
        assert seen.get(("K", "browsers"), 0) >= 4, seen
        assert seen.get(("R", "slowloris"), 0) >= 4, seen
        out, err = master.communicate(timeout=60)
        assert master.returncode == 0, err[-2000:]
        # the workers end by themselves when their master quits (nothing is left for us to stop)
        for w in workers:
            assert w.wait(timeout=20) == 0, w.stderr.read()[-2000:] if w.stderr else ""
    finally:
        for p in (master, *workers):
            terminate(p, 10)
    stats = {(s["method"], s["name"]): s for s in json.loads(out)}
    assert stats[("GET", "/")]["num_requests"] >= 4 and stats[("GET", "/")]["num_failures"] == 0
    assert stats[("GET", "asset")]["num_requests"] >= 4 * 12 and stats[("GET", "asset")]["num_failures"] == 0
    assert ("SLOWLORIS", "headers never end") in stats


def test_a_host_off_this_machine_is_refused_without_traffic(tmp_path):
    p = locust("--headless", "--users", "2", "--spawn-rate", "2", "--run-time", "3s", "--json",
               "--host", "http://192.0.2.1:80", "SlowlorisUser", "AjaxUser", cwd=tmp_path)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        terminate(p, 10)
    assert p.returncode == 1
    assert json.loads(out) == []  # not one request was made
    assert "only sends to loopback" in err
