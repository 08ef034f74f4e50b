"""Shared fixtures: real mpmcore servers in their own processes, real sockets, polls with deadlines."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mpmcore import scoreboard as sb
from mpmcore.master import ctl_request, run_dir_for
from mpmcore.procs import terminate

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

# The servers, dashboards and traffic runners the tests start keep their run directories (error_log,
# sockets) under one temporary directory of this session (TMPDIR, inherited by every process), which
# is removed at the end of a run that passed: nothing piles up in the machine's /tmp from run to run.
# After a failed run it is kept, and its path printed, so the servers' logs can be read.
SESSION_TMP = tempfile.mkdtemp(prefix="mpmlab-tests-")
os.chmod(SESSION_TMP, 0o755)  # Apache's children (www-data) read document roots made under it
os.environ["TMPDIR"] = SESSION_TMP
# The run store's default place (mpmcore.experiments.store.default_path) is under it too: a dashboard
# a test starts without --runs-db never writes into the user's ~/.local/share (nor reads their plans).
os.environ["XDG_DATA_HOME"] = os.path.join(SESSION_TMP, "xdg-data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(SESSION_TMP, "xdg-config")  # the user plans dir: none
tempfile.tempdir = None


# The suite is laid out by cost: tests/unit (pure code, seconds), tests/integration (real processes
# of ours: the core, the dashboard, the traffic runner), tests/external (a real Apache, nginx,
# apache_exporter, Chromium, docker-compose). Each test carries its directory's marker, so
# `-m unit` (or `./dev.sh test tests/unit`) runs the fast layer alone.
# Files are moved whole, so a file can hold a test costlier than its directory (test_status.py's
# exporter test): a test that uses a costlier layer's fixture carries that layer's marker instead.
LAYERS = ("unit", "integration", "external")
LAYER_FIXTURES = {"integration": {"server_factory", "runner"},
                  "external": {"real_apache", "event_apache", "real_nginx", "real_lighttpd", "exporter", "browser"}}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            layer = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (given on the command line): no layer
            continue
        if layer not in LAYERS:
            continue
        used = set(getattr(item, "fixturenames", ()))
        for costlier in LAYERS[LAYERS.index(layer) + 1:]:
            if used & LAYER_FIXTURES[costlier]:
                layer = costlier
        item.add_marker(getattr(pytest.mark, layer))


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(SESSION_TMP, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus != 0 and os.path.isdir(SESSION_TMP):
        terminalreporter.write_line(f"mpmlab: kept the session's temporary directory (server logs): {SESSION_TMP}")


# Debian packages the tests use; ./dev.sh test installs them. A missing one is a failure that says
# so, never a skip: a skip would hide a missing install step.
PACKAGES = {"apache2": "/usr/sbin/apache2", "nginx": "/usr/sbin/nginx", "lighttpd": "/usr/sbin/lighttpd",
            "wrk": "/usr/bin/wrk",
            "chromium": "/usr/bin/chromium", "prometheus-apache-exporter": "/usr/bin/prometheus-apache-exporter",
            "docker-compose": "/usr/bin/docker-compose"}


def need(package: str) -> str:
    """The path of a Debian package's program, or fail the test saying how to get it."""
    path = PACKAGES[package]
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: `./dev.sh test` installs Debian's {package} (as root)")
    return path


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it has exited, only its parent has not reaped it)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def answers_200(port: int, path: str) -> bool:
    """Whether a GET of ``path`` on the loopback ``port`` answers 200 (False while nothing listens)."""
    try:
        return http_get(port, path, timeout=2)[0] == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


async def async_wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
                         interval: float = 0.05) -> Any:
    """``wait_for`` inside an event loop: await until ``pred()`` (sync, or returning an awaitable) is
    truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def http_get(port: int, path: str = "/", timeout: float = 10.0, host: str = "127.0.0.1",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection, Connection: close; returns (status, headers, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n".encode())
        return read_response(s)


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (Content-Length framed) from a socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, hdrs, rest[:n]


def status_auto(port: int) -> dict[str, str]:
    """A server's /server-status?auto (ours or Apache's), split as apache_exporter does."""
    status, _, body = http_get(port, "/server-status?auto")
    assert status == 200
    out = {}
    for line in body.decode().splitlines()[1:]:
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


class MpmServer:
    """``mpmlab serve`` in its own process; stopped by its pid."""

    def __init__(self, tmp: Path, mpm: str = "prefork", settings: dict[str, Any] | None = None,
                 tls: bool = False, extra_args: list[str] | None = None):
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.tls_port = free_port() if tls else None
        self.mpm = mpm
        self.log_path = tmp / f"serve-{self.port}.log"
        args = [sys.executable, "-m", "mpmcore.cli", "serve", "--mpm", mpm, "--listen", self.listen]
        if tls:
            args += ["--tls", f"127.0.0.1:{self.tls_port}"]
        for k, v in (settings or {}).items():
            args += ["--set", f"{k}={v}"]
        args += extra_args or []
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.shm_name = sb.segment_name(self.listen)
        self.run_dir = run_dir_for(self.listen)
        self.error_log = self.run_dir / "error_log"
        self.reader: sb.ScoreboardReader | None = None
        try:
            wait_for(self._ready, timeout=20, what=f"mpmlab serve on {self.listen}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"server did not start: {self.log_path.read_text()[-2000:]}") from None
        self.reader = sb.ScoreboardReader(self.shm_name)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            return http_get(self.port, "/health", timeout=2)[0] == 200
        except OSError:
            return False

    # -- observation ---------------------------------------------------------------------------
    def snapshot(self) -> sb.Snapshot:
        return self.reader.snapshot()

    def live_children(self, snap: sb.Snapshot | None = None) -> list[sb.ProcessRecord]:
        snap = snap or self.snapshot()
        return [p for p in snap.procs if p.pid]

    def count_states(self, snap: sb.Snapshot | None = None) -> dict[str, int]:
        snap = snap or self.snapshot()
        letters = snap.letters()
        return {ch: letters.count(ch) for ch in "_SRWKLDCGI"}

    def log_text(self) -> str:
        try:
            return self.error_log.read_text()
        except FileNotFoundError:
            return ""

    def ctl(self, cmd: str, **kw) -> dict[str, Any]:
        return ctl_request(str(self.run_dir / "ctl.sock"), {"cmd": cmd, **kw})

    def auto(self) -> dict[str, str]:
        return status_auto(self.port)

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        terminate(self.proc, timeout, sig)
        self.logf.close()
        return self.proc.returncode


@pytest.fixture
def server_factory(tmp_path):
    started: list[MpmServer] = []

    def make(**kw) -> MpmServer:
        s = MpmServer(tmp_path, **kw)
        started.append(s)
        return s

    yield make
    # every server is stopped before anything is checked: one failure must not leave the others running
    errors = []
    for s in started:
        try:
            s.stop()
        except Exception as e:  # reported below, once the others are stopped
            errors.append(f"stopping {s.listen}: {e!r}")
    # the master removes its scoreboard, also after SIGTERM; a leaked one is named, then removed
    leaked = []
    for s in started:
        seg = Path("/dev/shm" + s.shm_name)
        if seg.exists():
            leaked.append(s.shm_name)
            seg.unlink(missing_ok=True)
    assert not errors, errors
    assert not leaked, f"scoreboards leaked: {leaked}"


def update_docs_screenshot(shot: Path, name: str) -> None:
    """Copy a test's screenshot into docs/ only when asked (MPMLAB_UPDATE_SCREENSHOTS=1), so a test
    run leaves the checkout as it found it."""
    if os.environ.get("MPMLAB_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / name)


def artifact_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


# The real-Apache, real-nginx, real-lighttpd, apache_exporter and Chromium fixtures, for every test
# module (imported last: they use the helpers above).
from browser_fixtures import browser  # noqa: E402,F401
from exporter_fixtures import exporter  # noqa: E402,F401
from real_apache_fixtures import event_apache, real_apache  # noqa: E402,F401
from real_lighttpd_fixtures import real_lighttpd  # noqa: E402,F401
from real_nginx_fixtures import real_nginx  # noqa: E402,F401
from traffic_fixtures import runner, tiny  # noqa: E402,F401
