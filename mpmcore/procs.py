"""Stopping a process we started: by its pid, TERM first, KILL after a deadline, always reaped.

A pid alone does not name a process for long: once it exits, the kernel may give the number to any
new process. So a process known only by its pid (a daemon's master read from its pid file) is
recorded as a ``ProcessIdentity`` (pid, creation time, executable, command line) when it is known
to be ours, and ``stop_pid`` signals it only while that same process still holds the pid.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

KILL_WAIT = 5.0  # after SIGKILL the kernel needs no more than this to let us reap it

#: The signals the master handles. It blocks them across fork(), and a child unblocks them once its
#: own handlers are in place (``install_child_signals``): one sent in between (the master's USR1
#: "finish gracefully" right after a spawn) then waits for the child's handler, instead of reaching
#: the master's inherited one, which would only queue it in the child's copy of the master's list.
MASTER_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGWINCH,
                            signal.SIGCHLD})


def install_child_signals(on_usr1: Callable[[int, FrameType | None], None] | None = None) -> None:
    """In a child forked by the master (an MPM child or a FastCGI pool process): its own signal
    handlers, then the master's signals unblocked (they were blocked across fork, see above). USR1
    calls ``on_usr1`` (None: ignored); TERM exits (default action); INT/HUP/WINCH are the master's
    business; the master's wake-up fd is not this process's."""
    signal.signal(signal.SIGUSR1, on_usr1 or signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGWINCH):
        signal.signal(s, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)


def terminate(proc: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Stop ``proc`` (one of ours) and reap it. Returns True when it had to be killed."""
    if proc.poll() is not None:
        return False
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(KILL_WAIT)
        return True


class NotOurProcess(RuntimeError):
    """A pid (from a pid file, say) that names a process we cannot attribute: it is not signalled."""


#: a process created up to this long after its pid file was written may still be the one that wrote
#: it (creation times come from the boot time, which /proc/stat gives to the second)
PIDFILE_CLOCK_SLACK = 1.0


def _exe(p: psutil.Process) -> str:
    try:
        return p.exe().removesuffix(" (deleted)")  # its binary was replaced on disk (an upgrade)
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    """One process, as it was when it was known to be ours: its pid with its creation time (the
    pair names one process for good), its executable and command line."""

    pid: int
    create_time: float  # seconds since the epoch, as psutil gives it
    exe: str
    cmdline: tuple[str, ...]
    proc: psutil.Process = field(compare=False, repr=False)  # compares (pid, creation time) itself

    @classmethod
    def of(cls, pid: int, exe_names: Collection[str] = ()) -> ProcessIdentity:
        """The process ``pid`` now. ProcessLookupError when there is none (or only a zombie);
        NotOurProcess when ``exe_names`` is given and its executable's name is not among them."""
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                raise ProcessLookupError(f"process {pid} has exited (a zombie)")
            who = cls(pid, p.create_time(), _exe(p), tuple(p.cmdline()), p)
        except psutil.NoSuchProcess:
            raise ProcessLookupError(f"no process {pid}") from None
        except psutil.AccessDenied as e:
            raise NotOurProcess(f"process {pid} cannot be inspected ({e}): not ours to signal") from None
        if exe_names and os.path.basename(who.exe) not in exe_names:
            raise NotOurProcess(f"process {pid} is {who.describe()}, not {' or '.join(sorted(exe_names))}")
        return who

    @classmethod
    def from_pidfile(cls, path: Path, exe_names: Collection[str]) -> ProcessIdentity | None:
        """The process a pid file names, when it can be the one that wrote it: it runs one of
        ``exe_names`` and was created before the file was written. None when there is no pid file
        or its process is gone; NotOurProcess (with what the pid names) otherwise."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # a link is ELOOP, an error
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotOurProcess(f"pid file {path} is a symbolic link: nothing signalled") from None
            raise
        try:
            written = os.fstat(fd).st_mtime
            text = os.read(fd, 256).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        try:
            pid = int(text.split()[0]) if text else 0
        except ValueError:
            pid = 0
        if pid <= 0:
            raise NotOurProcess(f"pid file {path} holds {text[:40]!r}, not a pid: nothing signalled")
        try:
            who = cls.of(pid, exe_names)
        except ProcessLookupError:
            return None
        except NotOurProcess as e:
            raise NotOurProcess(f"pid file {path} names {e}: the pid was reused, nothing signalled") from None
        if who.create_time > written + PIDFILE_CLOCK_SLACK:
            raise NotOurProcess(
                f"pid file {path} (written {time.ctime(written)}) names process {pid}, {who.describe()}, "
                f"started later ({time.ctime(who.create_time)}): the pid was reused, nothing signalled")
        return who

    def describe(self) -> str:
        cmd = " ".join(self.cmdline)[:120] or self.exe or "?"
        return f"{os.path.basename(self.exe) or '?'} ({cmd!r})"

    def running(self) -> bool:
        """True while this very process holds its pid and has not exited: False when it is gone, a
        zombie (reaped here when it is our child), or the pid now names another process (a new
        creation time or another executable)."""
        try:  # identity first: a reused pid is never reaped here (it may be another child of ours)
            if not self.proc.is_running():
                return False
            if self.proc.status() == psutil.STATUS_ZOMBIE:
                _gone(self.pid)  # reaps it when it is our child
                return False
            return _exe(self.proc) == self.exe
        except psutil.Error:
            return False


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs: no such process, or a zombie (reaped here when it is our child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # not our child (or already reaped): look it up
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


def _wait_gone(who: ProcessIdentity, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while who.running():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(who: ProcessIdentity, sig: int, group: bool) -> bool:
    """``sig`` to ``who`` (to its process group when ``group`` and it leads one), only while it is
    still the process recorded; False when it is not (gone or its pid reused)."""
    if not who.running():
        return False
    try:
        if group and os.getpgid(who.pid) == who.pid:
            os.killpg(who.pid, sig)
        else:
            who.proc.send_signal(sig)  # psutil checks (pid, creation time) again right before kill(2)
    except (ProcessLookupError, psutil.NoSuchProcess):  # it exited meanwhile, or its pid was reused
        return False
    return True


def stop_pid(who: ProcessIdentity, timeout: float, group: bool = True) -> bool:
    """Stop a process known by its recorded identity (not necessarily our child, e.g. a daemon's
    master read from its pid file): SIGTERM, wait up to ``timeout`` for it to be gone (a zombie
    counts as gone), else SIGKILL it, with its whole process group when ``group`` and it leads one.
    Before each signal it checks the pid still names that process: one that is gone, or whose pid
    now names another process, is never signalled (it counts as stopped). Returns True when it had
    to be killed; raises TimeoutError when even SIGKILL did not end it within ``KILL_WAIT``."""
    if not _signal(who, signal.SIGTERM, group=False):
        return False
    if _wait_gone(who, timeout):
        return False
    if not _signal(who, signal.SIGKILL, group):
        return False
    if not _wait_gone(who, KILL_WAIT):
        raise TimeoutError(f"process {who.pid} still there {KILL_WAIT}s after SIGKILL")
    return True
