"""A real Apache httpd 2.4 on a free loopback port (apache_launcher.py), stopped by its pid. Shared by
every test that compares with, or attaches to, real Apache."""

from __future__ import annotations

import shutil
from pathlib import Path

import apache_launcher
import pytest
from conftest import answers_200, free_port, need, wait_for

from mpmcore.procs import ProcessIdentity, stop_pid

#: event with 4 children x 10 threads: small enough to saturate, and a per-process table.
EVENT_DIRECTIVES = {"ServerLimit": 4, "ThreadsPerChild": 10, "MaxRequestWorkers": 40, "StartServers": 2,
                    "MinSpareThreads": 5, "MaxSpareThreads": 20}


def _apache_dir(port: int) -> Path:
    """Apache's files for ``port`` (configuration, pid file, logs, document root), always in /tmp."""
    return apache_launcher.apache_dir(port)


def apache_master(port: int) -> ProcessIdentity | None:
    """The master its pid file names, checked to be an apache2 started before the file was written
    (procs.ProcessIdentity.from_pidfile); None when there is none."""
    return ProcessIdentity.from_pidfile(apache_launcher.pidfile(port), {"apache2"})


def start_apache(tmp: Path, mpm: str = "event", directives: dict | None = None,
                 files: dict[str, bytes] | None = None) -> tuple[int, ProcessIdentity]:
    """(port, master) of a real Apache, polled until its ?auto answers. ``files`` are put in
    its document root first (name -> content)."""
    need("apache2")
    port = free_port()
    # a directory left by an earlier run on the same port (a pid file, a document root) would be
    # taken for this Apache's
    shutil.rmtree(_apache_dir(port), ignore_errors=True)
    conf = tmp / f"apache-{port}.conf"  # kept beside the test's files, for reading after a failure
    conf.write_text("".join(f"{k} {v}\n" for k, v in (EVENT_DIRECTIVES if directives is None else directives).items()))
    try:
        if files:
            htdocs = _apache_dir(port) / "htdocs"
            htdocs.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (htdocs / name).write_bytes(content)
        apache_launcher.start(mpm, port, conf.read_text())
        wait_for(lambda: answers_200(port, "/server-status?auto"), timeout=20,
                 what=f"real Apache ({mpm}) on {port}")
        master = apache_master(port)
        assert master is not None, f"real Apache on {port} answers but wrote no pid file"
        return port, master
    except BaseException as e:
        # whatever failed, an Apache that did start is stopped (by its pid file) before the error goes on
        try:
            master = apache_master(port)
            if master is None:
                apache_launcher.signal_stop(port)
            else:
                stop_apache(port, master)
        except Exception as stop_error:  # the start's error is the one to report; this one is noted
            e.add_note(f"and stopping the Apache on {port} failed too: {stop_error!r}")
        finally:
            shutil.rmtree(_apache_dir(port), ignore_errors=True)
        raise


def kill_apache(master: ProcessIdentity | None, timeout: float = 20.0) -> None:
    """Stop an Apache master (None: already gone) by its recorded identity (SIGTERM; a second one to a master already told to stop is
    harmless) and wait up to ``timeout`` s; if it has not exited, SIGKILL it with its children (its
    process group: `-k start` makes it a session leader), and fail."""
    if master is not None:
        assert not stop_pid(master, timeout), f"real Apache {master.pid} did not stop within {timeout} s: killed"


def stop_apache(port: int, master: ProcessIdentity) -> None:
    """Stop a real Apache by its pid file (SIGTERM to its master), then ``kill_apache`` it. Its
    files (configuration, logs, document root) are removed whatever happened: nothing left in /tmp."""
    try:
        apache_launcher.signal_stop(port)
        kill_apache(master, 20)
    finally:
        shutil.rmtree(_apache_dir(port), ignore_errors=True)


def stop_all(started: list[tuple[int, ProcessIdentity]]) -> None:
    """Stop every Apache in ``started`` (port, master), then raise what failed: one failure must not
    leave the others running."""
    errors = []
    for port, master in started:
        try:
            stop_apache(port, master)
        except Exception as e:
            errors.append(f"Apache on {port} (pid {master.pid}): {e!r}")
    assert not errors, errors


@pytest.fixture
def real_apache(tmp_path):
    """``start(mpm, directives, files=None) -> port``; every Apache started is stopped by its pid."""
    started: list[tuple[int, ProcessIdentity]] = []

    def start(mpm: str, directives: dict, files: dict[str, bytes] | None = None) -> int:
        port, master = start_apache(tmp_path, mpm, directives, files)
        started.append((port, master))
        return port

    yield start
    stop_all(started)


@pytest.fixture(scope="module")
def event_apache(tmp_path_factory):
    """One real Apache (event, EVENT_DIRECTIVES) for a whole test module."""
    port, master = start_apache(tmp_path_factory.mktemp("apache"))
    yield port
    stop_apache(port, master)
