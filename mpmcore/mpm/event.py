"""event: worker plus a listener that parks idle connections (docs/apache-behaviour.md section 5).

Threads are busy only while a request is in flight. After a reply, the worker gives the connection
back to the listener thread, which keeps it in one of three timeout queues and polls it with the
listening sockets:

* keep-alive (KeepAliveTimeout): idle between requests; readable -> an idle worker, at once;
* write completion (Timeout): the reply did not fit in the socket buffer; the listener finishes
  writing it as the client reads;
* lingering close (2 s): half-closed, draining what the client still sends.

The accept rule (Apache's connections_above_limit): a child accepts only while it has an idle worker
and (connections - lingering) < ThreadsPerChild + idle_workers x floor(AsyncRequestWorkerFactor).
"""

from __future__ import annotations

import collections
import enum
import math
import os
import queue
import select
import threading
import time
from collections.abc import Callable

from mpmcore import scoreboard as sb
from mpmcore.http import conn as cn
from mpmcore.mpm.common import ChildEnv
from mpmcore.mpm.worker import start_slot


class Queue(enum.Enum):
    """The listener's timeout queues (Apache's keepalive_q, write_completion_q, linger_q)."""

    KEEPALIVE = "keepalive"
    WRITE = "write"
    LINGER = "linger"


KA, WRITE, LINGER = Queue.KEEPALIVE, Queue.WRITE, Queue.LINGER
# Lingering close under event: the listener drains for at most this long (Apache's
# SECONDS_TO_LINGER for the async path).
ASYNC_LINGER_SECONDS = 2.0
# The listener's longest sleep: timeouts are checked at least this often.
POLL_CEILING = 0.1


class Wake:
    """A task that only wakes an idle worker (a graceful stop: should it leave early?)."""


class Counters:
    """A child's idle workers and connection counts, under one lock. Every change is one named
    operation that publishes the result (``publish`` writes the child's scoreboard record), so a
    caller cannot move a counter the listener and the workers do not agree on."""

    def __init__(self, publish: Callable[[Counters], None]):
        self._publish = publish
        self.lock = threading.Lock()
        self.idle = 0  # workers waiting for a task
        self.connections = 0  # every connection this child owns, parked or in a worker
        self.queued = dict.fromkeys(Queue, 0)  # parked, per timeout queue
        self.not_accepting = False

    def publish(self) -> None:
        with self.lock:
            self._publish(self)

    def worker_idle(self) -> None:
        with self.lock:
            self.idle += 1
            self._publish(self)

    def take_idle_worker(self) -> bool:
        """Reserve an idle worker for a task; False when there is none."""
        with self.lock:
            if self.idle <= 0:
                return False
            self.idle -= 1
            self._publish(self)
            return True

    def connection_opened(self) -> None:
        with self.lock:
            self.connections += 1
            self._publish(self)

    def connection_closed(self, worker_idle: bool = False) -> None:
        with self.lock:
            self.connections -= 1
            self.idle += worker_idle
            self._publish(self)

    def parked(self, q: Queue, worker_idle: bool = False) -> None:
        """Parked in ``q``; with ``worker_idle``, the worker that parked it counts itself idle in
        the same step (one publish per request instead of two)."""
        with self.lock:
            self.queued[q] += 1
            self.idle += worker_idle
            self._publish(self)

    def unparked_to_worker(self, q: Queue) -> bool:
        """Out of ``q`` and, when there is one, an idle worker reserved for it, in one publish."""
        with self.lock:
            self.queued[q] -= 1
            took = self.idle > 0
            self.idle -= took
            self._publish(self)
            return took

    def unparked(self, q: Queue) -> None:
        with self.lock:
            self.queued[q] -= 1
            self._publish(self)

    def closed_from_queue(self, q: Queue, n: int) -> None:
        """``n`` connections parked in ``q`` closed at once: one publish for all of them."""
        with self.lock:
            self.queued[q] -= n
            self.connections -= n
            self._publish(self)

    def set_accepting(self, accepting: bool) -> None:
        with self.lock:
            self.not_accepting = not accepting
            self._publish(self)

    def accepting_allowed(self, threads_per_child: int, factor: int) -> bool:
        """Apache's connections_above_limit, negated: an idle worker, and fewer connections (not
        counting lingering ones) than ThreadsPerChild + idle workers x AsyncRequestWorkerFactor."""
        with self.lock:
            if self.idle <= 0:
                return False
            return (self.connections - self.queued[LINGER]) < threads_per_child + self.idle * factor


class EventChild:
    def __init__(self, env: ChildEnv):
        self.env = env
        self.pid = os.getpid()  # this child's: published with every counter change
        self.ctx = env.server_context()
        self.tpc = env.config["ThreadsPerChild"]
        self.factor = math.floor(env.config["AsyncRequestWorkerFactor"])
        self.sync_tls = bool(env.config.values.get("SSLSyncEventMPM", False))
        # None: exit. SimpleQueue (C): a put/get costs a fraction of queue.Queue's Condition dance
        self.tasks: queue.SimpleQueue[tuple[cn.Conn, bool] | Wake | None] = queue.SimpleQueue()
        self.returns: collections.deque[tuple[cn.Conn, cn.Served]] = collections.deque()  # from workers
        self.child_record = env.scoreboard.child_counters(env.proc)
        self.counters = Counters(self._publish)
        self.ret_r, self.ret_w = os.pipe()
        os.set_blocking(self.ret_r, False)
        os.set_blocking(self.ret_w, False)
        self.workers_were_busy = False
        # the workers' slot writers: at a graceful stop the main thread marks them all G (under
        # slot_lock, which they share), as event.c's close_listeners does
        self.slot_lock = threading.Lock()
        self.slots: list[sb.SlotWriter] = []
        self.threads_shutdown = 0  # workers that left early while the child finishes (under counters.lock)
        # set by the listener once it will accept no more: before that a worker must not leave
        # early, or a connection accepted in the same poll as the stop would find no worker
        self.accept_closed = threading.Event()
        # The pollset and the timeout queues. Workers park kept-alive connections themselves, as
        # Apache's do (no wake-up of the listener per request); the listener does the rest.
        # qlock guards ``parked`` and ``queues``; lock order: qlock, then counters.lock.
        self.ep = select.epoll()
        self.qlock = threading.Lock()
        self.parked: dict[int, tuple[cn.Conn, Queue]] = {}  # fd -> (conn, queue); deadlines in self.queues
        # One ordered queue per kind (fd -> deadline): every entry of a queue has the same timeout,
        # so deadlines come out in insertion order and expiry looks only at the head. Leaving a
        # queue early removes the entry at once: no stale entries pile up (they would keep
        # connections alive and feed the garbage collector hundreds of thousands of objects).
        self.queues: dict[Queue, collections.OrderedDict[int, float]] = {
            q: collections.OrderedDict() for q in Queue}

    # -- counters (published on every change: current, unlike Apache's lagging ones) --------------
    def _publish(self, c: Counters) -> None:
        """Counters' publish (its lock held): the child's record in the scoreboard."""
        q = c.queued
        self.child_record.publish(self.pid, 1 if c.not_accepting else 0, c.connections, q[WRITE], q[LINGER], q[KA])

    # -- the timeout queues (callers hold qlock) --------------------------------------------------
    def _park(self, c: cn.Conn, kind: Queue, worker_idle: bool = False) -> None:
        """Into a queue and the pollset. EPOLLONESHOT: an event disarms the fd, so handing it on
        needs no epoll call; the next park re-arms it with one. Closing the socket removes it.
        ``worker_idle``: the calling worker counts itself idle in the same counters step (it holds
        qlock, so the listener cannot hand the connection on before that)."""
        fd = c.sock.fileno()
        now = time.monotonic()
        if kind == KA:
            deadline, mask = now + self.ctx.keep_alive_timeout, select.EPOLLIN | select.EPOLLRDHUP
        elif kind == WRITE:
            deadline, mask = now + self.ctx.timeout, select.EPOLLOUT
        else:
            deadline, mask = now + ASYNC_LINGER_SECONDS, select.EPOLLIN | select.EPOLLRDHUP
        self.parked[fd] = (c, kind)  # before arming: the listener may see it at once
        try:
            try:
                self.ep.modify(fd, mask | select.EPOLLONESHOT)
            except FileNotFoundError:
                self.ep.register(fd, mask | select.EPOLLONESHOT)
        except (OSError, ValueError):
            del self.parked[fd]
            self.counters.connection_closed(worker_idle)
            cn.close_quietly(c)
            return
        self.queues[kind][fd] = deadline
        self.counters.parked(kind, worker_idle)

    def _unpark(self, fd: int) -> tuple[cn.Conn, Queue]:
        c, kind = self.parked.pop(fd)
        del self.queues[kind][fd]
        self.counters.unparked(kind)
        return c, kind

    def _close(self, c: cn.Conn) -> None:
        cn.close_quietly(c)  # also takes it out of the pollset
        self.counters.connection_closed()

    def _to_linger(self, c: cn.Conn) -> None:
        if cn.start_lingering(c):
            self._park(c, LINGER)
        else:
            self.counters.connection_closed()

    def _close_keepalive_queue(self) -> None:
        """Close every parked keep-alive connection (the caller holds qlock); the counters move
        once for all of them: with thousands parked, one publish instead of thousands."""
        ka = self.queues[KA]
        fds = list(ka)
        ka.clear()
        for fd in fds:
            cn.close_quietly(self.parked.pop(fd)[0])
        if fds:
            self.counters.closed_from_queue(KA, len(fds))

    # -- workers ------------------------------------------------------------------------------
    def exit_early(self) -> bool:
        """A worker of a stopping child leaves at once while fewer connections remain than the
        workers that would be left (event.c ``worker_thread_should_exit_early``); its slot goes
        `.` while its busy siblings finish. It was idle: it leaves the idle count too."""
        if not self.accept_closed.is_set():
            return False
        with self.counters.lock:
            if self.counters.connections >= self.tpc - self.threads_shutdown or self.counters.idle <= 0:
                return False
            self.threads_shutdown += 1
            self.counters.idle -= 1
            self.counters._publish(self.counters)
            return True

    def may_exit_early(self) -> bool:
        """Would an idle worker leave now (exit_early's rule, without taking it)?"""
        if not self.accept_closed.is_set():
            return False
        with self.counters.lock:
            return self.counters.idle > 0 and self.counters.connections < self.tpc - self.threads_shutdown

    def mark_graceful(self) -> None:
        with self.slot_lock:
            slots = list(self.slots)
        for slot in slots:
            slot.mark_graceful()

    def worker(self, thread: int) -> None:
        slot = start_slot(self.env, thread)
        if slot is None:
            return
        slot.lock, slot.sticky = self.slot_lock, self.env.stopping
        with self.slot_lock:
            self.slots.append(slot)
        if self.env.stopping.is_set():
            slot.mark_graceful()
        self.counters.worker_idle()
        try:
            while True:
                if self.env.stopping.is_set() and self.exit_early():
                    break
                task = self.tasks.get()  # dispatch() already counted this thread as taken
                if task is None:
                    break
                if isinstance(task, Wake):
                    continue
                c, fresh = task
                if fresh:
                    slot.new_connection(c.client, sb.BUSY_READ, tls=c.tls)
                else:
                    slot.set(sb.BUSY_READ)
                    slot.set_pattern(None)  # this slot's last request was another connection's
                hold = c.tls and self.sync_tls  # Apache before 2.4.7: TLS behaves as under worker
                outcome = cn.serve(c, slot, self.ctx, hold=hold, readable=not fresh)
                if hold and outcome is cn.Served.CLOSE:
                    cn.lingering_close(c, slot)
                    outcome = cn.Served.GONE
                slot.set(sb.READY)
                # Count ourselves idle before the connection can be seen again: it may be readable
                # at once (a pipelining or fast client) and must find a free worker. Parking it
                # here does both in one step, under qlock (the listener waits for it).
                if outcome is cn.Served.PARK_KEEPALIVE:
                    with self.qlock:
                        if not self.env.stopping.is_set():
                            self._park(c, KA, worker_idle=True)
                            continue
                self.counters.worker_idle()
                self._give_back(c, outcome)
        finally:
            slot.release(sb.DEAD)

    def _give_back(self, c: cn.Conn, outcome: cn.Served) -> None:
        self.returns.append((c, outcome))
        try:
            os.write(self.ret_w, b"x")
        except BlockingIOError:
            pass  # the listener has wake-ups pending already

    # -- listener -----------------------------------------------------------------------------
    def accepting_allowed(self) -> bool:
        return self.counters.accepting_allowed(self.tpc, self.factor)

    def dispatch(self, c: cn.Conn, fresh: bool) -> bool:
        # reserve the worker before anything else looks at the count
        if not self.counters.take_idle_worker():
            return False
        self.tasks.put((c, fresh))
        return True

    def listener(self) -> None:
        env, ep, qlock = self.env, self.ep, self.qlock
        lfds = {lst.sock.fileno(): lst for lst in env.listeners}
        listening = False
        ep.register(self.ret_r, select.EPOLLIN)
        ep.register(env.wake_r, select.EPOLLIN)
        max_conns = env.config["MaxConnectionsPerChild"]
        accepted = 0
        dying = False
        try:
            while True:
                # Start or stop polling the listening sockets (not_accepting).
                want = not dying and not env.stopping.is_set() and self.accepting_allowed()
                if want != listening:
                    for fd in lfds:
                        if want:
                            ep.register(fd, select.EPOLLIN)
                        else:
                            ep.unregister(fd)
                    listening = want
                    self.counters.set_accepting(want)
                if not listening and (dying or env.stopping.is_set()):
                    self.accept_closed.set()  # every accept of this child is behind us, and dispatched
                if (dying or env.stopping.is_set()) and self.counters.connections == 0:
                    break
                now = time.monotonic()
                with qlock:
                    heads = [next(iter(q.values())) for q in self.queues.values() if q]
                timeout = max(0.0, min(min(heads, default=now + POLL_CEILING) - now, POLL_CEILING))
                try:
                    events = ep.poll(timeout)
                except InterruptedError:
                    continue
                for fd, _ in events:
                    if fd in lfds:
                        if not listening or env.stopping.is_set():
                            continue  # stopping: the next turn of the loop stops polling the listeners
                        c = env.accept(lfds[fd], self.ctx)
                        if c is None:
                            continue
                        self.counters.connection_opened()
                        accepted += 1
                        if not self.dispatch(c, True):
                            self._close(c)  # cannot happen while the accept rule holds; never leak it
                        if max_conns and accepted >= max_conns:
                            env.stop()
                    elif fd == self.ret_r:
                        try:
                            while os.read(self.ret_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                    elif fd == env.wake_r:
                        if not dying:
                            dying = True
                            # The wake pipe stays readable (other waits in this child rely on
                            # it): level-triggered, it would wake every poll at once and spin
                            # the listener for as long as the child finishes its connections.
                            ep.unregister(env.wake_r)
                            # Graceful child exit: close the keep-alive queue, stop accepting,
                            # run until every connection is finished.
                            with qlock:
                                self._close_keepalive_queue()
                    else:
                        with qlock:
                            self._ready(fd, dying)
                # Connections coming back from workers.
                while self.returns:
                    c, outcome = self.returns.popleft()
                    with qlock:
                        if outcome is cn.Served.PARK_KEEPALIVE:
                            if dying or env.stopping.is_set():
                                self._to_linger(c)
                            else:
                                self._park(c, KA)
                        elif outcome is cn.Served.PARK_WRITE:
                            self._park(c, WRITE)
                        elif outcome is cn.Served.CLOSE:
                            self._to_linger(c)
                        else:  # GONE: closed by the worker
                            self.counters.connection_closed()
                with qlock:
                    if self.workers_were_busy:
                        self.workers_were_busy = False
                        self._close_keepalive_queue()
                    self._expire(time.monotonic())
        finally:
            with qlock:
                for fd in list(self.parked):
                    c, _ = self._unpark(fd)
                    self._close(c)
            ep.close()

    def _ready(self, fd: int, dying: bool) -> None:
        """A parked connection's event (the caller holds qlock)."""
        entry = self.parked.get(fd)
        if entry is None:
            return  # closed meanwhile
        c, kind = entry
        if kind == KA:
            del self.parked[fd]
            del self.queues[KA][fd]
            if dying:
                self.counters.unparked(KA)
            elif self.counters.unparked_to_worker(KA):  # one counters step for both
                self.tasks.put((c, False))  # the worker is reserved already
                return
            # Dying, or no idle worker: close it (the client reconnects), and since workers ran
            # out, the whole keep-alive queue goes too.
            self._close(c)
            self.workers_were_busy = True
        elif kind == WRITE:
            done = cn.write_some(c)
            self._unpark(fd)
            if done is cn.Written.PARTIAL:
                self._park(c, WRITE)  # re-arm (one-shot), with a fresh Timeout: it made progress
            elif done is cn.Written.FAILED:
                self._close(c)
            elif c.http.keep_alive and not dying:
                self._park(c, KA)
            else:
                self._to_linger(c)
        else:  # LINGER: drain; once the client closed, close; else re-arm, keeping its 2 s deadline
            if cn.drain(c):
                self._unpark(fd)
                self._close(c)
                return
            try:
                self.ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT)
            except (OSError, ValueError):
                self._unpark(fd)
                self._close(c)

    def _expire(self, now: float) -> None:
        for q in self.queues.values():
            while q:
                fd, deadline = next(iter(q.items()))
                if deadline > now:
                    break
                c, _ = self._unpark(fd)
                self._close(c)


def run_child(env: ChildEnv) -> int:
    env.install_signals()
    child = EventChild(env)
    env.scoreboard.clear_child(env.proc)
    threads = [threading.Thread(target=child.worker, args=(t,), name=f"worker-{t}", daemon=True)
               for t in range(child.tpc)]
    for t in threads:
        t.start()
    lt = threading.Thread(target=child.listener, name="listener", daemon=True)
    lt.start()
    while not env.stopping.wait(1.0):
        pass
    child.mark_graceful()
    for _ in threads:
        child.tasks.put(Wake())  # idle workers look whether to leave early
    # Connections keep ending while the child finishes (the listener closes its keep-alive queue
    # concurrently with the wake-ups above): each time fewer remain, one more idle worker may leave.
    while lt.is_alive():
        lt.join(0.1)
        if child.may_exit_early():
            child.tasks.put(Wake())
    for _ in threads:
        child.tasks.put(None)
    for t in threads:
        t.join()
    return 0
