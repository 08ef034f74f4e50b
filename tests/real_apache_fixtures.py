"""A real Apache httpd 2.4 on a free loopback port, through shared/tools/real-apache.sh (which
stops it by its pid file). Shared by every test that compares with, or attaches to, real Apache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, answers_200, free_port, need, wait_for

from mpmcore.procs import stop_pid

REAL_APACHE = ROOT.parent / "shared" / "tools" / "real-apache.sh"

#: event with 4 children x 10 threads: small enough to saturate, and a per-process table.
EVENT_DIRECTIVES = {"ServerLimit": 4, "ThreadsPerChild": 10, "MaxRequestWorkers": 40, "StartServers": 2,
                    "MinSpareThreads": 5, "MaxSpareThreads": 20}


def _apache_dir(port: int) -> Path:
    """The script's files for ``port`` (configuration, pid file, logs, document root); it always
    puts them in /tmp, whatever TMPDIR says."""
    return Path(f"/tmp/real-apache-{port}")


def _pidfile(port: int) -> Path:
    return _apache_dir(port) / "httpd.pid"


def start_apache(tmp: Path, mpm: str = "event", directives: dict | None = None,
                 files: dict[str, bytes] | None = None) -> tuple[int, int]:
    """(port, master pid) of a real Apache, polled until its ?auto answers. ``files`` are put in
    its document root first (name -> content)."""
    need("apache2")
    assert REAL_APACHE.exists(), f"{REAL_APACHE} is missing: shared/ must lie beside the checkout"
    port = free_port()
    # a directory left by an earlier run on the same port (a pid file, a document root) would be
    # taken for this Apache's
    shutil.rmtree(_apache_dir(port), ignore_errors=True)
    conf = tmp / f"apache-{port}.conf"
    conf.write_text("".join(f"{k} {v}\n" for k, v in (EVENT_DIRECTIVES if directives is None else directives).items()))
    try:
        if files:
            htdocs = _apache_dir(port) / "htdocs"
            htdocs.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (htdocs / name).write_bytes(content)
        subprocess.run(["bash", str(REAL_APACHE), "start", mpm, str(port), str(conf)], check=True,
                       capture_output=True, timeout=120)
        wait_for(lambda: answers_200(port, "/server-status?auto"), timeout=20,
                 what=f"real Apache ({mpm}) on {port}")
        return port, int(_pidfile(port).read_text().strip())
    except BaseException as e:
        # whatever failed, an Apache that did start is stopped (by its pid file) before the error goes on
        try:
            pid = int(_pidfile(port).read_text().strip())
        except (OSError, ValueError):
            pid = None
        try:
            if pid is None:
                subprocess.run(["bash", str(REAL_APACHE), "stop", str(port)], capture_output=True, timeout=60)
            else:
                stop_apache(port, pid)
        except Exception as stop_error:  # the start's error is the one to report; this one is noted
            e.add_note(f"and stopping the Apache on {port} failed too: {stop_error!r}")
        finally:
            shutil.rmtree(_apache_dir(port), ignore_errors=True)
        raise


def kill_apache(pid: int, timeout: float = 20.0) -> None:
    """Stop an Apache master by its pid (SIGTERM; a second one to a master already told to stop is
    harmless) and wait up to ``timeout`` s; if it has not exited, SIGKILL it with its children (its
    process group: `-k start` makes it a session leader), and fail."""
    assert not stop_pid(pid, timeout), f"real Apache {pid} did not stop within {timeout} s: killed"


def stop_apache(port: int, pid: int) -> None:
    """Stop a real Apache by its pid file (SIGTERM to its master), then ``kill_apache`` it. Its
    files (configuration, logs, document root) are removed whatever happened: nothing left in /tmp."""
    try:
        subprocess.run(["bash", str(REAL_APACHE), "stop", str(port)], capture_output=True, timeout=60)
        kill_apache(pid, 20)
    finally:
        shutil.rmtree(_apache_dir(port), ignore_errors=True)


def stop_all(started: list[tuple[int, int]]) -> None:
    """Stop every Apache in ``started`` (port, pid), then raise what failed: one failure must not
    leave the others running."""
    errors = []
    for port, pid in started:
        try:
            stop_apache(port, pid)
        except Exception as e:
            errors.append(f"Apache on {port} (pid {pid}): {e!r}")
    assert not errors, errors


@pytest.fixture
def real_apache(tmp_path):
    """``start(mpm, directives, files=None) -> port``; every Apache started is stopped by its pid."""
    started: list[tuple[int, int]] = []

    def start(mpm: str, directives: dict, files: dict[str, bytes] | None = None) -> int:
        port, pid = start_apache(tmp_path, mpm, directives, files)
        started.append((port, pid))
        return port

    yield start
    stop_all(started)


@pytest.fixture(scope="module")
def event_apache(tmp_path_factory):
    """One real Apache (event, EVENT_DIRECTIVES) for a whole test module."""
    port, pid = start_apache(tmp_path_factory.mktemp("apache"))
    yield port
    stop_apache(port, pid)
