"""What the master knows of a child, and how it forks one.

A child is an MPM child or a FastCGI pool process. ``fork_process`` is the one place that calls
fork(): what a child inherits, and what it must drop or set up before running its body, is here.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mpmcore.errorlog import ErrorLog
from mpmcore.procs import MASTER_SIGNALS

# Linux's PR_SET_PDEATHSIG (linux/prctl.h)
PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One MPM child as the master tracks it (the scoreboard holds what it does)."""

    pid: int
    slot: int
    generation: int
    mpm: str
    threads: int
    started: float = field(default_factory=time.monotonic)
    quiescing: bool = False  # told to finish (a graceful restart, an idle stop, a stop)


def signal_pid(pid: int, sig: int) -> None:
    """Send ``sig`` to one of our children; it may have exited already (reaped next)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def fork_process(what: str, module: str, body: Callable[[], int], errorlog: ErrorLog,
                 close_in_child: Iterable[int | socket.socket]) -> int | None:
    """fork() ``what`` (a child, a pool process): it closes the master's descriptors in
    ``close_in_child``, runs ``body`` (its exit status) and exits; returns the pid, or None when
    fork failed (logged). The master's signals are blocked across the fork (see
    procs.MASTER_SIGNALS); ``body`` unblocks them once its handlers are set."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        pid = os.fork()
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        errorlog(module, "alert", f"fork: Unable to fork a new {what}: {e}")
        return None
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return pid
    code = 1

    def thread_died(args: threading.ExceptHookArgs) -> None:
        # A dead listener or worker thread would leave the child up but stuck (a frozen
        # not_accepting, parked connections never served): log it and end the child, as a
        # crash; the master reaps it and starts another.
        try:
            tb = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
            errorlog(module, "crit", f"{what} thread {args.thread.name if args.thread else '?'} died: "
                                     + tb.replace("\n", " | "))
        finally:
            os._exit(1)

    try:
        threading.excepthook = thread_died
        die_with_parent()
        signal.set_wakeup_fd(-1)
        for fd in close_in_child:
            if isinstance(fd, socket.socket):
                fd.close()
            else:
                os.close(fd)
        code = body()
    except BaseException:
        try:
            errorlog(module, "error", f"{what} failed: " + traceback.format_exc().replace("\n", " | "))
        except Exception:
            pass
    finally:
        os._exit(code)


def die_with_parent() -> None:
    """Linux: a child gets SIGTERM if the master dies (even by SIGKILL), so no orphan serves on."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def raise_nofile() -> None:
    """Event children hold thousands of parked connections: take the hard limit on descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def read_smaps_rollup(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of ``pid`` in KiB from /proc; (0, 0) when it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith(b"Rss:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss


def is_mpmlab(pid: int) -> bool:
    """Whether ``pid`` looks like an mpmlab master (a stale pid file may name a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"mpm" in f.read()
    except OSError:
        return False
