"""Shared pieces of the benchmarks: start/stop servers by pid, run wrk, read memory."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from mpmcore.procs import ProcessIdentity, stop_pid, terminate

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(1, str(ROOT / "tests"))  # apache_launcher.py, the launcher the tests use too

import apache_launcher  # noqa: E402


def stop_apache(port: int) -> None:
    """Stop the Apache on ``port`` by the pid in its pid file (SIGTERM; after 15 s SIGKILL of its
    process group: `-k start` makes the master a session leader), and remove its files in /tmp."""
    run_dir = apache_launcher.apache_dir(port)
    try:
        master = ProcessIdentity.from_pidfile(apache_launcher.pidfile(port), {"apache2"})
        if master is None:
            apache_launcher.signal_stop(port)
        else:
            if stop_pid(master, 15):
                print(f"Apache {master.pid} on :{port} did not stop within 15s: killed its process group",
                      file=sys.stderr)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def tree_pss_kb(pid: int) -> tuple[int, int]:
    """Sum of PSS over process ``pid`` and its descendants (KiB), and how many processes."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0
    for pr in procs:
        try:
            with open(f"/proc/{pr.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total, len(procs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    """Poll ``pred`` until it returns something truthy (returned), or stop the bench after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def wait_port(port: int, path: str = "/", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


class Proc:
    """A server process started by a benchmark, stopped by its pid."""

    def __init__(self, args: list[str], port: int, path: str = "/", env: dict | None = None):
        self.args, self.port = args, port
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT),
                                  env={**os.environ, **(env or {})})
        try:
            wait_port(port, path)
        except BaseException:  # it never answered (or we were interrupted): stop it, then report
            terminate(self.p, 20)
            raise

    def stop(self) -> None:
        terminate(self.p, 20)

    def tree_pss_mb(self) -> tuple[float, int]:
        """Sum of PSS over the process and its descendants (MB), and how many processes."""
        kb, n = tree_pss_kb(self.p.pid)
        return kb / 1024, n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def mpmlab(mpm: str, port: int, settings: dict) -> Proc:
    args = [PY, "-m", "mpmcore.cli", "serve", "--mpm", mpm, "--listen", f"127.0.0.1:{port}", "--log-level", "error"]
    for k, v in settings.items():
        args += ["--set", f"{k}={v}"]
    return Proc(args, port, "/health")


def wait_children(port: int, n_slots: int, timeout: float = 60.0) -> None:
    """Wait until the server's scoreboard shows ``n_slots`` idle slots (all children started)."""
    from mpmcore.scoreboard import ScoreboardReader, segment_name
    deadline = time.monotonic() + timeout
    with ScoreboardReader(segment_name(f"127.0.0.1:{port}")) as r:
        while time.monotonic() < deadline:
            if r.snapshot().letters().count("_") >= n_slots:
                return
            time.sleep(0.1)
    raise RuntimeError(f"fewer than {n_slots} idle slots after {timeout}s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, connections: int = 64, duration: int = 10, threads: int = 1) -> dict:
    try:
        out = subprocess.run(["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{duration}s", url],
                             capture_output=True, text=True, timeout=duration + 30).stdout
    except subprocess.TimeoutExpired:  # wrk cannot finish when none of its connections is served
        return {"rps": 0.0, "errors": f"wrk got no answer in {duration + 30}s", "non2xx": 0}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[f"p{pct}"] = float(val) * _UNITS[unit]
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, **lat, "errors": errors.group(1) if errors else "none",
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def fmt_row(name: str, r: dict) -> str:
    errors = f"{r['errors']}, non-2xx {r['non2xx']}" if r["non2xx"] else r["errors"]
    return f"{name:<44} {r['rps']:>10.0f} {r.get('p50', 0):>9.2f} {r.get('p99', 0):>9.2f}  {errors}"


HEADER = f"{'server':<44} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}  errors"


# -- the dashboard as a bench starts it -------------------------------------------------------------
#: The benches' dashboard control token (docs/security.md), given to it in MPMLAB_TOKEN.
TOKEN = secrets.token_urlsafe(32)
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
#: 4,096 worker slots under event: ServerLimit 64 x ThreadsPerChild 64, every child kept
SLOTS_SETTINGS = {"ServerLimit": 64, "ThreadLimit": 64, "ThreadsPerChild": 64, "MaxRequestWorkers": 4096,
                  "StartServers": 64, "MinSpareThreads": 64, "MaxSpareThreads": 4096}


def api(base: str, path: str, body=None, method: str | None = None):
    """A JSON API call to the bench's dashboard, with its token."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", "X-Mpmlab-Token": TOKEN})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def start_dashboard(args: list[str], settings: dict | None = None, log=subprocess.DEVNULL,
                    ready_path: str = "/api/scoreboard") -> tuple[subprocess.Popen, str, int]:
    """``mpmlab dashboard`` on free loopback ports with ``args`` and ``--set`` for each of
    ``settings``, started and answering ``ready_path``: (process, base URL, core port). The caller
    stops it by pid (``terminate(proc, ...)`` in a finally); a dashboard that exits or never answers
    is stopped here and ends the bench."""
    port, core_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [PY, "-m", "mpmcore.cli", "dashboard", "--port", str(port), "--core-listen", f"127.0.0.1:{core_port}",
           *args]
    for k, v in (settings or {}).items():
        cmd += ["--set", f"{k}={v}"]
    print("command:", " ".join(cmd[1:]))
    dash = subprocess.Popen(cmd, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MPMLAB_TOKEN": TOKEN})

    def ready():
        if dash.poll() is not None:
            tail = Path(log.name).read_text(errors="replace")[-2000:] if isinstance(getattr(log, "name", None), str) else ""
            raise SystemExit(f"dashboard exited with {dash.returncode}" + (f": {tail}" if tail else ""))
        try:
            with urllib.request.urlopen(base + ready_path, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        wait_until(ready, 60, "the dashboard", interval=0.1)
    except BaseException:
        terminate(dash, 30)
        raise
    return dash, base, core_port
