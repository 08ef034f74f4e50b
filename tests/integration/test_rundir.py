"""The run directory, pid files and stale scoreboards, attacked from outside with real processes:

- a run directory planted by another user (owned by nobody, its ``error_log`` and ``master.pid``
  symbolic links to victim files) is refused with one clear line, the victims untouched;
- a pid file naming an unrelated process is never signalled (procs.ProcessIdentity);
- a stale scoreboard whose master pid now names an unrelated process, or a zombie, is replaced
  and ``mpmlab serve`` starts clean; one whose master still runs is one line, exit code 1.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port, http_get, pid_alive, wait_for

from mpmcore import scoreboard as sb
from mpmcore.procs import NotOurProcess, ProcessIdentity, stop_pid, terminate

NOBODY = 65534
SERVE_TIMEOUT = 20.0

STARTED: list[Serve] = []  # every Serve of the running test, stopped by stop_every_serve

#: only root can make a directory owned by another user (os.chown) to plant
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's directory needs root")


class Serve:
    """``mpmlab serve`` (the real CLI) with its own TMPDIR; stopped by its pid (by the test, or at
    the latest by ``stop_every_serve`` when the test failed first)."""

    def __init__(self, tmpdir: Path, port: int, extra_env: dict[str, str] | None = None):
        self.port = port
        self.listen = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env.update({"TMPDIR": str(tmpdir), **(extra_env or {})})
        self.out = tmpdir.parent / f"serve-{self.port}-{time.monotonic_ns()}.out"
        self.outf = open(self.out, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mpmcore.cli", "serve", "--mpm", "worker", "--listen", self.listen,
             "--set", "StartServers=1"], stdout=self.outf, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        STARTED.append(self)

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def exited(self) -> int:
        """Its exit code, waited for with a deadline."""
        try:
            return self.proc.wait(SERVE_TIMEOUT)
        finally:
            self.outf.close()

    def serving(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.text()[-1500:]}"
            try:
                return http_get(self.port, "/health", timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(up, timeout=SERVE_TIMEOUT, what=f"mpmlab serve on {self.listen}")

    def stop(self) -> int:
        terminate(self.proc, 20)
        self.outf.close()
        return self.proc.returncode


@pytest.fixture(autouse=True)
def stop_every_serve():
    """Whatever a test asserted, every server it started is stopped by its pid, and a segment left
    for its address (planted by the test, or by a server killed) is removed."""
    yield
    while STARTED:
        srv = STARTED.pop()
        terminate(srv.proc, 20)
        srv.outf.close()
        Path("/dev/shm" + sb.segment_name(srv.listen)).unlink(missing_ok=True)


@pytest.fixture
def shared_tmp():
    """A /tmp of its own (short: socket paths must fit in 108 bytes): world-writable with the
    sticky bit, as a shared /tmp is."""
    d = Path(tempfile.mkdtemp(prefix="rd-"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _victims(tmp_path: Path) -> dict[Path, tuple[bytes, float]]:
    out = {}
    for name in ("victim-log", "victim-pid", "victim-info"):
        p = tmp_path / name
        p.write_bytes(f"{name}: must stay as it is\n".encode())
        os.utime(p, (1_000_000_000, 1_000_000_000))
        out[p] = (p.read_bytes(), p.stat().st_mtime)
    return out


def _plant(d: Path, victims: dict[Path, tuple[bytes, float]], owner: int | None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    v = sorted(victims)
    for name, target in (("error_log", v[1]), ("master.pid", v[2]), ("info.json", v[0])):
        (d / name).symlink_to(target)
        if owner is not None:
            os.lchown(d / name, owner, owner)
    if owner is not None:
        os.chown(d, owner, owner)
        os.chown(d.parent, owner, owner)


def _untouched(victims: dict[Path, tuple[bytes, float]]) -> None:
    for p, (data, mtime) in victims.items():
        assert (p.read_bytes(), p.stat().st_mtime) == (data, mtime), f"{p} was written to"


def _no_segment(listen: str) -> bool:
    return not Path("/dev/shm" + sb.segment_name(listen)).exists()


@needs_root
@pytest.mark.parametrize("where", ["root", "listen"])
def test_a_run_directory_planted_by_another_user_is_refused(tmp_path, shared_tmp, where):
    victims = _victims(tmp_path)
    port = free_port()
    root = shared_tmp / f"mpmlab-{os.geteuid()}"
    name = f"127_0_0_1_{port}"
    if where == "root":  # another user made /tmp/mpmlab-0 before us, links inside
        _plant(root / name, victims, NOBODY)
    else:  # our root, but the listen directory inside is somebody else's
        root.mkdir(mode=0o700)
        _plant(root / name, victims, None)
        os.chown(root / name, NOBODY, NOBODY)
    _plant(shared_tmp / "mpmlab" / name, victims, NOBODY)  # and where older versions looked
    srv = Serve(shared_tmp, port)
    code = srv.exited()
    out = srv.text()
    _untouched(victims)
    assert code == 1, out
    bad = root if where == "root" else root / name
    assert f"refusing to use the run directory {bad}: it belongs to uid {NOBODY}" in out, out
    assert "Traceback" not in out and _no_segment(srv.listen)


def test_links_in_our_own_run_directory_are_never_followed(tmp_path, shared_tmp):
    victims = _victims(tmp_path)
    port = free_port()
    d = shared_tmp / f"mpmlab-{os.geteuid()}" / f"127_0_0_1_{port}"
    d.parent.mkdir(mode=0o755)  # made by mkdir with the umask (as the dashboard does): tightened
    _plant(d, victims, None)
    (d / "error_log").unlink()
    (d / "error_log").symlink_to(sorted(victims)[1])
    # a link as error_log: refused (O_NOFOLLOW), one line
    srv = Serve(shared_tmp, port)
    code = srv.exited()
    _untouched(victims)
    assert code == 1 and f"refusing to open {d / 'error_log'}: it is a symbolic link" in srv.text(), srv.text()
    assert stat.S_IMODE(d.parent.stat().st_mode) == 0o700
    # links as master.pid and info.json only: replaced by files of ours (rename), victims untouched
    (d / "error_log").unlink()
    srv = Serve(shared_tmp, port)
    try:
        srv.serving()
        _untouched(victims)
        for name in ("master.pid", "info.json"):
            assert not (d / name).is_symlink() and (d / name).is_file()
        assert (d / "master.pid").read_text().strip() == str(srv.proc.pid)
        assert stat.S_IMODE(os.lstat(d / "ctl.sock").st_mode) == 0o600
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    finally:
        code = srv.stop()
    assert code == 0, srv.text()
    _untouched(victims)
    assert not (d / "master.pid").exists() and _no_segment(srv.listen)


@needs_root
def test_xdg_runtime_dir_is_preferred_when_it_is_private(shared_tmp):
    xdg = shared_tmp / "run-user"
    xdg.mkdir(mode=0o700)
    port = free_port()
    srv = Serve(shared_tmp, port, {"XDG_RUNTIME_DIR": str(xdg)})
    try:
        srv.serving()
        assert (xdg / "mpmlab" / f"127_0_0_1_{port}" / "ctl.sock").exists()
        assert not (shared_tmp / f"mpmlab-{os.geteuid()}").exists()
    finally:
        code = srv.stop()
    assert code == 0, srv.text()
    os.chown(xdg, NOBODY, NOBODY)  # not ours: TMPDIR instead
    srv = Serve(shared_tmp, port, {"XDG_RUNTIME_DIR": str(xdg)})
    try:
        srv.serving()
        assert (shared_tmp / f"mpmlab-{os.geteuid()}" / f"127_0_0_1_{port}" / "ctl.sock").exists()
    finally:
        code = srv.stop()
    assert code == 0, srv.text()


# -- pid files ---------------------------------------------------------------------------------------
#: a process that counts the signals it gets and reports them on request
SIGNAL_COUNTER = """
import signal, sys
got = []
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, lambda n, f: got.append(n))
print("ready", flush=True)
for line in sys.stdin:
    print(",".join(map(str, got)) or "none", flush=True)
"""


@pytest.fixture
def bystander():
    """An unrelated process (it counts the signals it receives), stopped by the test by its pid."""
    p = subprocess.Popen([sys.executable, "-c", SIGNAL_COUNTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready"

    def signals_received() -> str:
        p.stdin.write("?\n")
        p.stdin.flush()  # a signal sent before this is handled before the read returns (PEP 475)
        return p.stdout.readline().strip()
    p.signals_received = signals_received
    yield p
    p.stdin.close()
    terminate(p, 10, signal.SIGKILL)


def test_a_pid_file_naming_another_program_is_not_signalled(tmp_path, bystander):
    pidfile = tmp_path / "httpd.pid"
    pidfile.write_text(f"{bystander.pid}\n")
    with pytest.raises(NotOurProcess, match=rf"names process {bystander.pid} is python.*not apache2.*nothing signalled"):
        ProcessIdentity.from_pidfile(pidfile, {"apache2"})
    assert bystander.signals_received() == "none" and bystander.poll() is None


def test_a_pid_file_older_than_its_process_is_not_signalled(tmp_path, bystander):
    """Same executable, but the process started after the file was written: the pid was reused."""
    pidfile = tmp_path / "master.pid"
    pidfile.write_text(f"{bystander.pid}\n")
    os.utime(pidfile, (time.time() - 60, time.time() - 60))
    exe = os.path.basename(os.path.realpath(sys.executable))
    with pytest.raises(NotOurProcess, match=r"started later.*the pid was reused, nothing signalled"):
        ProcessIdentity.from_pidfile(pidfile, {exe})
    assert bystander.signals_received() == "none"


def test_stop_pid_checks_the_process_before_each_signal(tmp_path, bystander):
    who = ProcessIdentity.of(bystander.pid)
    assert who.running()
    elsewhere = dataclasses.replace(who, exe="/usr/sbin/apache2")  # recorded as another program
    assert not elsewhere.running()
    assert stop_pid(elsewhere, 1) is False
    assert bystander.signals_received() == "none"
    # the very process recorded: TERM (it only counts it), KILL after the deadline
    assert stop_pid(who, 0.5, group=False) is True
    assert not Path(f"/proc/{bystander.pid}").exists()  # killed and reaped (stop_pid reaps a child of ours)
    assert not who.running() and stop_pid(who, 1) is False  # gone: nothing signalled, no error
    # a pid file naming a process that is gone, or no pid file: nothing to stop
    pidfile = tmp_path / "gone.pid"
    assert ProcessIdentity.from_pidfile(pidfile, {"apache2"}) is None
    pidfile.write_text(f"{bystander.pid}\n")
    assert ProcessIdentity.from_pidfile(pidfile, {"apache2"}) is None
    pidfile.write_text("garbage\n")
    with pytest.raises(NotOurProcess, match="not a pid"):
        ProcessIdentity.from_pidfile(pidfile, {"apache2"})


# -- stale scoreboards ------------------------------------------------------------------------------------
def _plant_segment(listen: str, master_pid: int, created: float) -> None:
    board = sb.Scoreboard.create(sb.segment_name(listen), 4, 4)
    board.glob.master_pid = master_pid
    board.glob.start_time = created
    board.close()  # left behind, as by a master killed with -9


@pytest.mark.parametrize("who", ["unrelated", "zombie"])
def test_a_stale_scoreboard_with_a_reused_master_pid_is_replaced(shared_tmp, who):
    if who == "unrelated":
        other = subprocess.Popen(["sleep", "30"])
    else:
        other = subprocess.Popen(["true"])
        wait_for(lambda: not pid_alive(other.pid) and Path(f"/proc/{other.pid}").exists(), timeout=10,
                 what="a zombie (exited, not reaped)")
    port = free_port()
    listen = f"127.0.0.1:{port}"
    _plant_segment(listen, other.pid, time.time() - 60)
    srv = Serve(shared_tmp, port)
    try:
        srv.serving()
        text = srv.text()
        assert "removing stale scoreboard" in text and "Traceback" not in text, text
        assert ("not an mpmlab master" in text or "after the segment was made" in text) if who == "unrelated" \
            else "a zombie" in text, text
        if who == "unrelated":
            assert other.poll() is None  # never signalled
    finally:
        code = srv.stop()
        terminate(other, 5, signal.SIGKILL)
    assert code == 0, srv.text()
    assert _no_segment(listen)


def test_a_scoreboard_whose_master_runs_is_one_line(server_factory, shared_tmp):
    live = server_factory(mpm="prefork", settings={"StartServers": 1})
    port = free_port()
    listen = f"127.0.0.1:{port}"
    _plant_segment(listen, live.proc.pid, time.time() + 5)  # made by that master, after it started
    try:
        srv = Serve(shared_tmp, port)
        code = srv.exited()
        lines = [ln for ln in srv.text().splitlines() if ln.startswith("mpmlab:")]
        assert code == 1 and "Traceback" not in srv.text(), srv.text()
        assert lines == [f"mpmlab: scoreboard {sb.segment_name(listen)} belongs to a running master "
                         f"(pid {live.proc.pid}); stop it first (mpmlab ctl stop)"], srv.text()
    finally:
        Path("/dev/shm" + sb.segment_name(listen)).unlink(missing_ok=True)


def test_the_dashboards_core_log_in_the_runtime_root_never_follows_a_link(tmp_path, shared_tmp, monkeypatch):
    from mpmlab.services.core import CoreError, EmbeddedCore

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    victims = _victims(tmp_path)
    core = EmbeddedCore(f"127.0.0.1:{free_port()}", "worker", {})
    core.run_dir.parent.mkdir(mode=0o700)
    core.stderr_path.symlink_to(sorted(victims)[0])  # planted where the dashboard writes the core's stderr
    with pytest.raises(CoreError, match="it is a symbolic link"):  # one line for the dashboard to print
        core.start()
    assert core.proc is None  # nothing was started
    _untouched(victims)
