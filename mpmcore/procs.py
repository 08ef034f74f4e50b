"""Stopping a process we started: by its pid, TERM first, KILL after a deadline, always reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

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


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, timeout: float, group: bool = True) -> bool:
    """Stop a process known only by its pid (not necessarily our child, e.g. a daemon's master read
    from its pid file): SIGTERM, wait up to ``timeout`` for it to be gone (a zombie counts as gone),
    else SIGKILL it, with its whole process group when ``group`` and it leads one. A pid that is
    already gone is fine. Returns True when it had to be killed; raises TimeoutError when even
    SIGKILL did not end it within ``KILL_WAIT``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if _wait_gone(pid, timeout):
        return False
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it exited meanwhile
        return False
    if not _wait_gone(pid, KILL_WAIT):
        raise TimeoutError(f"process {pid} still there {KILL_WAIT}s after SIGKILL")
    return True
