"""The master's side of the FastCGI pool for /unsafe (``UnsafeFastCGIPool N``).

N single-threaded processes (mpmcore/content/fcgi_pool.py) accept on one Unix socket; a threaded
MPM's children forward /unsafe to them. They show in the scoreboard as process slots of their own
kind (KIND_FCGI), taken from the top of the scoreboard so they never stand in the MPM's way. A
restart may make the pool larger or smaller; a stop or hard restart ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from mpmcore import scoreboard as sb
from mpmcore.content.fcgi_pool import run_pool_process
from mpmcore.master.children import signal_pid
from mpmcore.master.control import listen_unix
from mpmcore.mpm.common import Listener

FCGI_BACKLOG = 128

#: fork ``what`` for ``module``, running the body; the pid or None (the master's _fork)
Fork = Callable[[str, str, Callable[[], int]], int | None]
#: the master's log(level, message, module)
Log = Callable[[str, str, str], None]


class FastCGIPool:
    def __init__(self, path: Path, fork: Fork, log: Log):
        self.path = path
        self.sock: socket.socket | None = None
        self.procs: dict[int, int] = {}  # pid -> process slot
        self.retiring: dict[int, int] = {}  # told to go (pool made smaller, or stopping): pid -> slot
        self._fork = fork
        self._log = log

    def __contains__(self, pid: int) -> bool:
        return pid in self.procs or pid in self.retiring

    def slots(self) -> set[int]:
        return set(self.procs.values())

    def pids(self) -> list[int]:
        return sorted(self.procs)

    def ensure(self, want: int, board: sb.Scoreboard, busy: Iterable[int], generation: int,
               listeners: list[Listener]) -> None:
        """Make the pool ``want`` processes: open the socket once, retire the highest slots
        beyond ``want``, fork into free slots from the top (``busy``: the MPM children's)."""
        if want and self.sock is None:
            self._open()
        while len(self.procs) > want:
            pid = max(self.procs, key=lambda p: self.procs[p])
            signal_pid(pid, signal.SIGTERM)
            self.retiring[pid] = self.procs.pop(pid)
        taken = set(busy) | self.slots()
        slot = board.proc_capacity - 1
        while len(self.procs) < want and slot >= 0:
            if slot not in taken:
                self._spawn(slot, board, generation, listeners)
            slot -= 1

    def _open(self) -> None:
        self.sock = listen_unix(self.path, FCGI_BACKLOG)

    def _spawn(self, slot: int, board: sb.Scoreboard, generation: int, listeners: list[Listener]) -> None:
        sock = self.sock
        assert sock is not None  # ensure() opened it

        def body() -> int:
            for lst in listeners:  # a pool process serves the pool's socket only
                lst.sock.close()
            return run_pool_process(board, slot, generation, sock, self._log)
        pid = self._fork("pool process", "proxy_fcgi", body)
        if pid is None:
            return
        self.procs[pid] = slot
        board.update_proc(slot, pid=pid, generation=generation, mpm=0, kind=sb.KIND_FCGI,
                          quiescing=0, threads=1, start_time=time.time(), pss_kb=0, rss_kb=0)

    def reaped(self, pid: int, status: int, board: sb.Scoreboard) -> None:
        """One of ours exited: free its slot (its thread record too, if it died mid-request)."""
        slot = self.procs.pop(pid, None)
        if slot is None:
            slot = self.retiring.pop(pid)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGTERM:
            self._log("notice", f"FastCGI pool process {pid} exit signal {signal.Signals(os.WTERMSIG(status)).name}",
                      "proxy_fcgi")
        rec = board.worker(slot, 0)
        if rec.pid == pid:
            board.slot(slot, 0).release(sb.DEAD)
        board.clear_proc(slot)

    def terminate(self) -> None:
        """TERM every pool process; they are reaped as retiring."""
        for pid, slot in list(self.procs.items()):
            signal_pid(pid, signal.SIGTERM)
            self.retiring[pid] = slot
            del self.procs[pid]

    def kill_retiring(self) -> None:
        for pid in list(self.retiring):
            signal_pid(pid, signal.SIGKILL)

    def close(self) -> None:
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
