"""prefork: one process, one connection at a time (docs/apache-behaviour.md section 3).

The child waits on the shared listening socket itself; whoever's accept() wins serves that client
through its whole life, keep-alive wait and lingering close included. Every idle child polls the
listener (level-triggered) and the losers of the accept race go back to waiting: a thundering herd
on each new connection, which Apache's accept mutex exists to tame. We do not use EPOLLEXCLUSIVE:
two wake-ups can land on one child, which then serves one connection for its whole life while the
other connection waits in the backlog with nobody woken for it.
"""

from __future__ import annotations

import os
import threading

from mpmcore import scoreboard as sb
from mpmcore.http import conn as cn
from mpmcore.mpm.common import ChildEnv


def run_child(env: ChildEnv) -> int:
    slot = env.scoreboard.slot(env.proc, 0)
    slot.claim(os.getpid(), threading.get_native_id(), env.generation, sb.STARTING)
    env.install_signals(on_graceful=slot.try_mark_graceful)
    ctx = env.server_context()
    max_conns = env.config["MaxConnectionsPerChild"]

    ep, by_fd = env.listener_poll()

    served = 0
    slot.set(sb.READY)
    try:
        while not env.stopping.is_set():
            try:
                events = ep.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                lst = by_fd.get(fd)
                if lst is None or env.stopping.is_set():
                    continue
                c = env.accept(lst, ctx)
                if c is None:
                    continue  # another child took it
                slot.new_connection(c.client, sb.BUSY_READ, tls=c.tls)
                served += 1
                if cn.serve(c, slot, ctx, hold=True) is cn.Served.CLOSE:
                    cn.lingering_close(c, slot)
                slot.set(sb.READY)
                if max_conns and served >= max_conns:
                    env.stop()  # MaxConnectionsPerChild: exit cleanly, maintenance replaces us
                break  # back to the poll: never hold a stale readiness event
    finally:
        slot.release(sb.DEAD)
        ep.close()
    return 0
