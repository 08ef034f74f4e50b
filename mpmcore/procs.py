"""Stopping a process we started: by its pid, TERM first, KILL after a deadline, always reaped."""

from __future__ import annotations

import signal
import subprocess

KILL_WAIT = 5.0  # after SIGKILL the kernel needs no more than this to let us reap it

#: The signals the master handles. It blocks them across fork(), and a child unblocks them once its
#: own handlers are in place (``child_signals_ready``): one sent in between (the master's USR1
#: "finish gracefully" right after a spawn) then waits for the child's handler, instead of reaching
#: the master's inherited one, which would only queue it in the child's copy of the master's list.
MASTER_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGWINCH,
                            signal.SIGCHLD})


def child_signals_ready() -> None:
    """In a child forked by the master, after it has set its own signal handlers."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)


def terminate(proc: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> bool:
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
