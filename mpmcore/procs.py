"""Stopping a process we started: by its pid, TERM first, KILL after a deadline, always reaped."""

from __future__ import annotations

import signal
import subprocess

KILL_WAIT = 5.0  # after SIGKILL the kernel needs no more than this to let us reap it


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
