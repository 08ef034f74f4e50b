"""Dead children are replaced as Apache replaces them, and their scoreboard records repaired.

* SIGKILL of random children under keep-alive load: clients that retry as a browser does (one new
  connection after a reset) see no failed request, and no stretch without an answer longer than a
  maintenance tick (the master's TICK, plus a fork).
* A writer killed in the middle of writing its record leaves an odd sequence number: once the
  master reaps the child, readers get a verified copy again.
* The same kills against a real Apache 2.4 (external layer): the figure in docs/graceful-restart.md.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]  # CPython's shm_open, as mpmcore.scoreboard uses
import itertools
import mmap
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from conftest import pid_alive, read_response, wait_for

from mpmcore import scoreboard as sb
from mpmcore.master.arbiter import TICK

DIRECTIVES = {
    "prefork": {"StartServers": 4, "MinSpareServers": 2, "MaxSpareServers": 6, "MaxRequestWorkers": 12},
    "worker": {"ServerLimit": 4, "ThreadsPerChild": 4, "MaxRequestWorkers": 16, "StartServers": 2,
               "MinSpareThreads": 2, "MaxSpareThreads": 12},
}
DIRECTIVES["event"] = DIRECTIVES["worker"]
CLIENTS = 3
KILL_EVERY = 0.5
KILL_FOR = 5.0
FORK_ALLOWANCE = 0.5  # a fork, an interpreter's child start-up and its first accept, on a busy machine


@dataclass
class Load:
    """Keep-alive clients that retry once on a new connection when theirs dies (a browser does)."""

    port: int
    path: str
    stop: threading.Event = field(default_factory=threading.Event)
    answered: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> None:
        s: socket.socket | None = None
        while not self.stop.is_set():
            for attempt in (1, 2):
                try:
                    if s is None:
                        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    status, hdrs, _ = read_response(s)
                    if status != 200:
                        raise ConnectionError(f"status {status}")
                    with self.lock:
                        self.answered.append(time.monotonic())
                    if hdrs.get("connection", "").lower() == "close":
                        s.close()
                        s = None
                    break
                except OSError as e:
                    if s is not None:
                        s.close()
                        s = None
                    if attempt == 2:
                        with self.lock:
                            self.failed.append(repr(e))
            time.sleep(0.02)
        if s is not None:
            s.close()

    def longest_gap(self, since: float, until: float) -> float:
        with self.lock:
            times = sorted(t for t in self.answered if since <= t <= until)
        marks = [since, *times, until]
        return max(b - a for a, b in itertools.pairwise(marks))


def kill_children(pids_of, rounds: int, rng: random.Random) -> list[int]:
    """SIGKILL one random child every KILL_EVERY s, ``rounds`` times; returns the pids killed."""
    killed = []
    for _ in range(rounds):
        pids = pids_of()
        if pids:
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(KILL_EVERY)
    return killed


def run_kills(port: int, path: str, pids_of, seed: int) -> tuple[Load, list[int], float]:
    load = Load(port, path)
    threads = [threading.Thread(target=load.client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(load.answered) >= CLIENTS, timeout=10, what="the load running")
        t0 = time.monotonic()
        killed = kill_children(pids_of, int(KILL_FOR / KILL_EVERY), random.Random(seed))
        time.sleep(TICK + FORK_ALLOWANCE)  # the last kill's replacement
        gap = load.longest_gap(t0, time.monotonic())
    finally:
        load.stop.set()
        for t in threads:
            t.join(10)
    return load, killed, gap


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_sigkill_of_random_children_under_keepalive_load_loses_nothing(mpm, server_factory):
    srv = server_factory(mpm=mpm, settings={**DIRECTIVES[mpm], "KeepAliveTimeout": 5})

    def pids() -> list[int]:
        return [p.pid for p in srv.live_children() if p.kind == sb.KIND_CHILD]

    load, killed, gap = run_kills(srv.port, "/", pids, seed=14)
    assert len(killed) >= 8, killed
    assert not load.failed, f"{len(load.failed)} requests failed after a retry: {load.failed[:3]}"
    assert gap <= TICK + FORK_ALLOWANCE, f"{mpm}: {gap:.2f} s without an answer"
    # and the server came back to its spares, every killed child reaped
    wait_for(lambda: len(pids()) >= 1 and not any(pid_alive(p) for p in killed), timeout=5,
             what="killed children reaped")


def _writable(name: str) -> mmap.mmap:
    fd = _posixshmem.shm_open(name, os.O_RDWR, 0)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def test_record_left_mid_write_by_a_killed_child_is_repaired_on_reap(server_factory):
    """Forge what a kill inside a SlotWriter write leaves (an odd sequence, the writer gone): the
    reader cannot verify that record; after the master reaps the child it can, and the slot is `.`
    or a new child's."""
    srv = server_factory(mpm="worker", settings={**DIRECTIVES["worker"], "StartServers": 1})
    wait_for(lambda: srv.count_states()["_"] == 4, what="one worker child ready")
    proc = next(p for p in range(len(srv.snapshot().procs)) if srv.snapshot().procs[p].pid)
    pid = srv.snapshot().procs[proc].pid
    tc = srv.reader.thread_capacity
    index = proc * tc + 2
    mm = _writable(srv.shm_name)
    try:
        rec = sb.WorkerRecord.from_buffer(mm, srv.reader._w_off + index * sb.W_SIZE)
        os.kill(pid, signal.SIGSTOP)  # no write of its own may race the forgery
        rec.seq |= 1
        rec.status = sb.BUSY_WRITE
        assert index in srv.snapshot().unverified
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: index not in (s := srv.snapshot()).unverified and s.workers[index].pid != pid,
                 timeout=5, what="the record verified again after the reap")
        assert not rec.seq & 1
        del rec
    finally:
        mm.close()
    assert "repaired 1 scoreboard record" in srv.log_text()


def test_repair_dead_child_makes_every_record_of_the_child_even_and_dead():
    board = sb.Scoreboard.create(f"/mpmlab_test_repair_{os.getpid()}", 2, 3)
    try:
        for t in range(3):
            board.slot(1, t).claim(4242, 1, 1, sb.READY)
        board.slot(0, 0).claim(777, 1, 1, sb.BUSY_READ)  # another child's: untouched
        board.worker(1, 1).seq |= 1  # killed inside a write
        board.worker(1, 1).status = sb.BUSY_WRITE
        board.children[1].seq |= 1  # and inside update_child
        board.children[1].pid = 4242
        reader = sb.ScoreboardReader(board.name)
        try:
            assert reader.snapshot(graceful_view=False).unverified == (1 * 3 + 1,)
            assert board.repair_dead_child(1, 4242, owns_slot=True) == 2
            snap = reader.snapshot(graceful_view=False)
            assert snap.unverified == ()
            assert [snap.worker(1, t).status for t in range(3)] == [sb.DEAD] * 3
            assert snap.worker(0, 0).status == sb.BUSY_READ
            assert not board.children[1].seq & 1 and board.children[1].pid == 0
        finally:
            reader.close()
    finally:
        board.unlink()
        board.close()


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_respawn_beside_real_apache(mpm, real_apache, server_factory, capsys):
    """The same kills against a real Apache 2.4 and mpmcore; the figures go to docs/graceful-restart.md
    (run with -s to see them). mpmcore may not be worse than a tick and a fork."""
    directives = {**DIRECTIVES[mpm], "KeepAliveTimeout": 5}
    ours = server_factory(mpm=mpm, settings=directives)
    apache_port = real_apache(mpm, directives)

    def apache_pids() -> list[int]:
        master = int(open(f"/tmp/real-apache-{apache_port}/httpd.pid").read())
        with open(f"/proc/{master}/task/{master}/children") as f:
            return [int(p) for p in f.read().split()]

    def our_pids() -> list[int]:
        return [p.pid for p in ours.live_children() if p.kind == sb.KIND_CHILD]

    a_load, a_killed, a_gap = run_kills(apache_port, "/index.html", apache_pids, seed=14)
    o_load, o_killed, o_gap = run_kills(ours.port, "/", our_pids, seed=14)
    with capsys.disabled():
        print(f"\n{mpm}: Apache {len(a_killed)} kills, {len(a_load.failed)} failed, longest gap {a_gap:.2f} s, "
              f"{len(apache_pids())} children after; mpmcore {len(o_killed)} kills, {len(o_load.failed)} failed, "
              f"longest gap {o_gap:.2f} s")
    assert not o_load.failed
    assert o_gap <= max(a_gap, TICK) + FORK_ALLOWANCE
