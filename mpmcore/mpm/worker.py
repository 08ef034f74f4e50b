"""worker: ThreadsPerChild threads per child, each owning its connection for life
(docs/apache-behaviour.md section 4).

A listener thread accepts only when a worker is idle and hands the socket over a queue; the worker
then serves the connection to its end, keep-alive wait (K) and lingering close (C) included. That
is the point to see: an idle keep-alive client holds a whole thread.
"""

from __future__ import annotations

import os
import queue
import threading
import time

from mpmcore import scoreboard as sb
from mpmcore.http import conn as cn
from mpmcore.mpm.common import ChildEnv

# How often a thread whose slot an old child still holds (squatting) looks again.
SQUAT_POLL_SECONDS = 0.1

# accepted connections from the listener to the workers; None tells a worker to exit
ConnQueue = queue.Queue[cn.Conn | None]


class IdleCount:
    """Idle workers, and a way for the listener to wait for one."""

    def __init__(self) -> None:
        self.n = 0
        self.cond = threading.Condition()

    def add(self, d: int) -> None:
        with self.cond:
            self.n += d
            if self.n > 0:
                self.cond.notify()

    def wait_for_idle(self, stopping: threading.Event) -> bool:
        with self.cond:
            while self.n <= 0 and not stopping.is_set():
                self.cond.wait(0.5)
            return self.n > 0


def wait_for_slot(env: ChildEnv, thread: int) -> bool:
    """A squatting child reuses a thread slot only once the old child's thread has let it go."""
    rec = env.scoreboard.worker(env.proc, thread)
    while not env.stopping.is_set():
        pid = rec.pid
        if rec.status == sb.DEAD or pid == os.getpid() or not sb.pid_alive(pid):
            return True
        time.sleep(SQUAT_POLL_SECONDS)
    return False


def start_slot(env: ChildEnv, thread: int) -> sb.SlotWriter | None:
    """Take thread slot ``thread`` (once a finishing child lets it go) and show it ready."""
    if not wait_for_slot(env, thread):
        return None
    slot = env.scoreboard.slot(env.proc, thread)
    slot.claim(os.getpid(), threading.get_native_id(), env.generation, sb.STARTING)
    slot.set(sb.READY)
    return slot


def worker_thread(env: ChildEnv, ctx: cn.ServerContext, thread: int, q: ConnQueue, idle: IdleCount) -> None:
    slot = start_slot(env, thread)
    if slot is None:
        return
    idle.add(1)
    try:
        while True:
            c = q.get()  # the listener already counted this thread as taken
            if c is None:
                break
            slot.new_connection(c.client, sb.BUSY_READ, tls=c.tls)
            if cn.serve(c, slot, ctx, hold=True) is cn.Served.CLOSE:
                cn.lingering_close(c, slot)
            slot.set(sb.READY)
            idle.add(1)
    finally:
        slot.release(sb.DEAD)


def listener_thread(env: ChildEnv, ctx: cn.ServerContext, q: ConnQueue, idle: IdleCount) -> None:
    ep, by_fd = env.listener_poll()
    max_conns = env.config["MaxConnectionsPerChild"]
    accepted = 0
    try:
        while not env.stopping.is_set():
            # Accept only with a worker free to take the connection at once.
            if not idle.wait_for_idle(env.stopping):
                break
            for fd, _ in ep.poll():
                lst = by_fd.get(fd)
                if lst is None or env.stopping.is_set():
                    continue
                c = env.accept(lst, ctx)
                if c is None:
                    continue
                idle.add(-1)  # reserve the worker now, before the next accept looks at the count
                q.put(c)
                accepted += 1
                if max_conns and accepted >= max_conns:
                    env.stop()  # MaxConnectionsPerChild counts across the child's threads
                break
    finally:
        ep.close()


def run_child(env: ChildEnv) -> int:
    tpc = env.config["ThreadsPerChild"]
    env.install_signals()
    ctx = env.server_context()
    q: ConnQueue = queue.Queue()
    idle = IdleCount()
    threads = [threading.Thread(target=worker_thread, args=(env, ctx, t, q, idle), name=f"worker-{t}", daemon=True)
               for t in range(tpc)]
    for t in threads:
        t.start()
    lt = threading.Thread(target=listener_thread, args=(env, ctx, q, idle), name="listener", daemon=True)
    lt.start()
    # The main thread only waits for the stop signal (Python runs signal handlers here).
    while not env.stopping.wait(1.0):
        pass
    lt.join()
    for _ in threads:
        q.put(None)  # after every connection already queued: those are still served
    for t in threads:
        t.join()
    return 0
