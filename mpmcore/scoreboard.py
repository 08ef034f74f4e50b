"""The scoreboard: Apache's shared-memory picture of every process and thread slot.

Layout (docs/apache-behaviour.md section 1): one global record, then ``proc_capacity`` process records, then
``proc_capacity x thread_capacity`` worker records, in one named POSIX shared-memory segment that
the master creates and every child inherits across fork(). Other processes (the dashboard) attach
by name, read-only.

Consistency without locks: every record has a single writer (the master for the global and process
records, the owning thread for a worker record) and a sequence counter. The writer makes it odd
before a change and even after; a reader copies the record and retries when the counter was odd or
moved during the copy (a seqlock). Readers therefore never block writers, and writers never wait.

Capacity versus limits: the segment is sized once, at start, from the largest ServerLimit and
ThreadLimit any MPM may use in this run (so a live switch prefork -> worker fits without re-creating
it). The *effective* ServerLimit/ThreadLimit live in the global record, as Apache's do.
"""

from __future__ import annotations

# CPython's own shm_open/shm_unlink (what multiprocessing.shared_memory uses); a private module without stubs
import _posixshmem  # type: ignore[import-not-found]
import ctypes
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mpmcore.procs import PIDFILE_CLOCK_SLACK, NotOurProcess, ProcessIdentity

MAGIC = 0x4D504D4C  # "MPML"
LAYOUT_VERSION = 3

# Apache's worker states (include/scoreboard.h), in its numbering.
DEAD, STARTING, READY, BUSY_READ, BUSY_WRITE, BUSY_KEEPALIVE, BUSY_LOG, BUSY_DNS, CLOSING, GRACEFUL, IDLE_KILL = range(11)
LETTERS = {DEAD: ".", STARTING: "S", READY: "_", BUSY_READ: "R", BUSY_WRITE: "W", BUSY_KEEPALIVE: "K",
           BUSY_LOG: "L", BUSY_DNS: "D", CLOSING: "C", GRACEFUL: "G", IDLE_KILL: "I"}
STATE_LETTERS = "".join(LETTERS[i] for i in range(11))
STATE_NAMES = {DEAD: "Open slot with no current process", STARTING: "Starting up", READY: "Waiting for Connection",
               BUSY_READ: "Reading Request", BUSY_WRITE: "Sending Reply", BUSY_KEEPALIVE: "Keepalive (read)",
               BUSY_LOG: "Logging", BUSY_DNS: "DNS Lookup", CLOSING: "Closing connection",
               GRACEFUL: "Gracefully finishing", IDLE_KILL: "Idle cleanup of worker"}

MPM_NAMES = ("prefork", "worker", "event")
MPM_IDS = {name: i for i, name in enumerate(MPM_NAMES)}
# Process records beyond the MPM children: the FastCGI-style pool for /unsafe shows up with this kind.
KIND_CHILD, KIND_FCGI = 0, 1

CLIENT_LEN, REQUEST_LEN, VHOST_LEN, PROTOCOL_LEN, PATTERN_LEN = 64, 64, 32, 16, 24


class GlobalRecord(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("magic", ctypes.c_uint32),
        ("layout_version", ctypes.c_uint32),
        ("superseded", ctypes.c_uint32),  # set when a hard restart re-creates the segment: readers re-attach
        ("master_pid", ctypes.c_int32),
        ("mpm", ctypes.c_uint32),
        ("proc_capacity", ctypes.c_uint32),
        ("thread_capacity", ctypes.c_uint32),
        ("server_limit", ctypes.c_uint32),
        ("thread_limit", ctypes.c_uint32),
        ("threads_per_child", ctypes.c_uint32),
        ("max_request_workers", ctypes.c_uint32),
        ("running_generation", ctypes.c_uint32),
        ("config_generation", ctypes.c_uint32),
        ("restart_time", ctypes.c_double),  # wall clock, seconds
        ("start_time", ctypes.c_double),
        ("parent_cpu_user", ctypes.c_double),
        ("parent_cpu_system", ctypes.c_double),
        ("children_cpu_user", ctypes.c_double),
        ("children_cpu_system", ctypes.c_double),
        ("listen", ctypes.c_char * 64),
        ("tls_listen", ctypes.c_char * 64),
    ]


class ProcessRecord(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("pid", ctypes.c_int32),  # 0 = free slot
        ("generation", ctypes.c_uint32),
        ("mpm", ctypes.c_uint8),
        ("kind", ctypes.c_uint8),
        ("quiescing", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("threads", ctypes.c_uint32),  # worker slots this child uses
        ("start_time", ctypes.c_double),
        ("pss_kb", ctypes.c_uint64),  # sampled by the master from /proc (smaps_rollup)
        ("rss_kb", ctypes.c_uint64),
        ("mem_time", ctypes.c_double),
    ]


class ChildRecord(ctypes.Structure):
    """Written by the child itself (under a lock inside the child, so one writer at a time):
    event's per-child connection counters, kept current, unlike Apache's lagging ones."""

    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("pid", ctypes.c_int32),  # which child wrote these (a squatter may share the process slot)
        ("not_accepting", ctypes.c_uint32),
        ("connections", ctypes.c_uint32),
        ("write_completion", ctypes.c_uint32),
        ("lingering_close", ctypes.c_uint32),
        ("keep_alive", ctypes.c_uint32),
        ("suspended", ctypes.c_uint32),
        ("wait_io", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class WorkerRecord(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("status", ctypes.c_uint8),
        ("tls", ctypes.c_uint8),
        ("_pad", ctypes.c_uint16),
        ("pid", ctypes.c_int32),
        ("tid", ctypes.c_int32),
        ("thread_num", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("conn_count", ctypes.c_uint32),  # requests on this connection
        ("conn_bytes", ctypes.c_uint64),
        ("my_access_count", ctypes.c_uint64),  # this child
        ("my_bytes_served", ctypes.c_uint64),
        ("access_count", ctypes.c_uint64),  # this slot, survives graceful restarts
        ("bytes_served", ctypes.c_uint64),
        ("duration_us", ctypes.c_uint64),  # sum of request times, this slot
        ("last_req_us", ctypes.c_uint64),  # duration of the last request
        ("start_time", ctypes.c_double),  # wall clock: start of the current/last request
        ("stop_time", ctypes.c_double),
        ("last_used", ctypes.c_double),
        ("state_since", ctypes.c_double),  # wall clock of the last status change
        ("cpu_user", ctypes.c_double),
        ("cpu_system", ctypes.c_double),
        ("client", ctypes.c_char * CLIENT_LEN),
        ("request", ctypes.c_char * REQUEST_LEN),
        ("vhost", ctypes.c_char * VHOST_LEN),
        ("protocol", ctypes.c_char * PROTOCOL_LEN),
        ("pattern", ctypes.c_char * PATTERN_LEN),  # X-Traffic-Pattern of the request holding the slot
    ]


G_SIZE, P_SIZE, C_SIZE, W_SIZE = (ctypes.sizeof(GlobalRecord), ctypes.sizeof(ProcessRecord),
                                  ctypes.sizeof(ChildRecord), ctypes.sizeof(WorkerRecord))
_Rec = TypeVar("_Rec", GlobalRecord, ProcessRecord, ChildRecord, WorkerRecord)
_FIELDS: dict[type[ctypes.Structure], frozenset[str]] = {
    cls: frozenset(name for name, *_ in cls._fields_) for cls in (GlobalRecord, ProcessRecord, ChildRecord)}


def _check_fields(cls: type[ctypes.Structure], fields: dict[str, Any]) -> None:
    """A misspelt field would only set a Python attribute on the ctypes view, never the shared
    record: refuse it."""
    unknown = fields.keys() - _FIELDS[cls]
    if unknown:
        raise AttributeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")


def segment_name(listen: str) -> str:
    """The shm name for a server listening on ``listen`` ("127.0.0.1:8080")."""
    safe = "".join(c if c.isalnum() else "_" for c in listen)
    return f"/mpmlab_{safe}"


def _size(procs: int, threads: int) -> int:
    return G_SIZE + procs * (P_SIZE + C_SIZE) + procs * threads * W_SIZE


def _clip(text: str, n: int) -> bytes:
    return text.encode("utf-8", "replace")[: n - 1]


class StaleScoreboard(Exception):
    pass


class ScoreboardInUse(RuntimeError):
    """The segment's master still runs: a second master must not start (one line, exit code 1)."""


class Scoreboard:
    """The master's (and, after fork, the children's) writable mapping."""

    def __init__(self, name: str, mm: mmap.mmap, procs: int, threads: int):
        self.name, self.mm, self.proc_capacity, self.thread_capacity = name, mm, procs, threads
        self.glob = GlobalRecord.from_buffer(mm, 0)
        self.procs = (ProcessRecord * procs).from_buffer(mm, G_SIZE)
        self.children = (ChildRecord * procs).from_buffer(mm, G_SIZE + procs * P_SIZE)
        self.workers = (WorkerRecord * (procs * threads)).from_buffer(mm, G_SIZE + procs * (P_SIZE + C_SIZE))

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, procs: int, threads: int, log: Callable[[str], None] | None = None) -> Scoreboard:
        """Create the segment. A leftover segment from a crashed master is detected and replaced
        (never silently reused); one whose master still runs is an error."""
        size = _size(procs, threads)
        try:
            fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            old_pid, started = _peek_master_pid(name)
            alive, why = master_alive(old_pid, started)
            if alive:
                raise ScoreboardInUse(f"scoreboard {name} belongs to a running master (pid {old_pid}); "
                                      "stop it first (mpmlab ctl stop)") from None
            if log:
                log(f"removing stale scoreboard {name} left by a master that is gone ({why})")
            _posixshmem.shm_unlink(name)
            fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        sb = cls(name, mm, procs, threads)
        g = sb.glob
        g.magic, g.layout_version, g.master_pid = MAGIC, LAYOUT_VERSION, os.getpid()
        g.proc_capacity, g.thread_capacity = procs, threads
        g.start_time = g.restart_time = time.time()
        return sb

    def unlink(self) -> None:
        """Remove the segment name (the master, at exit). Mappings stay valid until unmapped."""
        try:
            self.glob.superseded = 1
            _posixshmem.shm_unlink(self.name)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        # ctypes views hold exported buffers: drop them before closing the mmap
        del self.glob, self.procs, self.children, self.workers
        try:
            self.mm.close()
        except BufferError:
            pass

    # -- global -----------------------------------------------------------------------------
    def update_global(self, **fields: Any) -> None:
        _check_fields(GlobalRecord, fields)
        g = self.glob
        g.seq += 1
        for k, v in fields.items():
            setattr(g, k, v.encode() if isinstance(v, str) else v)
        g.seq += 1

    # -- process records (written by the master; event children write their counters) ---------
    def update_proc(self, slot: int, **fields: Any) -> None:
        _check_fields(ProcessRecord, fields)
        p = self.procs[slot]
        p.seq += 1
        for k, v in fields.items():
            setattr(p, k, v)
        p.seq += 1

    def clear_proc(self, slot: int) -> None:
        p = self.procs[slot]
        seq = p.seq | 1  # odd while cleared, even after (also when a dead writer left it odd)
        p.seq = seq
        ctypes.memset(ctypes.addressof(p), 0, P_SIZE)
        p.seq = seq + 1

    def update_child(self, slot: int, **fields: int) -> None:
        """Only the child in ``slot`` calls this (serialised by its own lock)."""
        _check_fields(ChildRecord, fields)
        c = self.children[slot]
        c.seq += 1
        for k, v in fields.items():
            setattr(c, k, v)
        c.seq += 1

    def child_counters(self, slot: int) -> ChildCounters:
        """The writer of child ``slot``'s connection counters (event), for the child itself."""
        return ChildCounters(self.children[slot])

    def clear_child(self, slot: int) -> None:
        c = self.children[slot]
        seq = c.seq | 1  # a child killed inside update_child() left it odd: even again after this
        c.seq = seq
        ctypes.memset(ctypes.addressof(c), 0, C_SIZE)
        c.seq = seq + 1

    def repair_dead_child(self, slot: int, pid: int, owns_slot: bool) -> int:
        """The master, once it has reaped child ``pid`` of process slot ``slot``: that child was
        the only writer of its records and is gone, so the master may write them now. Every worker
        record it held becomes DEAD (``.``) with an even sequence, also one it was killed in the
        middle of writing (odd sequence: readers could never verify a copy of it again). With
        ``owns_slot`` (no other child shares the slot) odd records whatever their pid are its own
        (killed inside claim(), before its pid was written) and the child record is cleared.
        Returns how many records were left mid-write."""
        torn = 0
        for t in range(self.thread_capacity):
            w = self.worker(slot, t)
            odd = bool(w.seq & 1)
            if w.pid == pid or (odd and owns_slot):
                torn += odd
                if odd or w.status != DEAD:
                    w.seq |= 1
                    w.status = DEAD
                    w.state_since = time.time()
                    w.pattern = b""
                    w.seq += 1
        c = self.children[slot]
        if c.pid == pid or (owns_slot and c.seq & 1):
            torn += c.seq & 1
            self.clear_child(slot)
        return torn

    # -- worker records ---------------------------------------------------------------------
    def worker_index(self, proc: int, thread: int) -> int:
        return proc * self.thread_capacity + thread

    def slot(self, proc: int, thread: int) -> SlotWriter:
        return SlotWriter(self.workers[self.worker_index(proc, thread)], proc, thread)

    def worker(self, proc: int, thread: int) -> WorkerRecord:
        return self.workers[self.worker_index(proc, thread)]

    def reset_counters(self) -> None:
        """Hard restart: zero every worker record (Apache clears the scoreboard)."""
        for w in self.workers:
            seq = w.seq | 1
            w.seq = seq
            ctypes.memset(ctypes.addressof(w), 0, W_SIZE)
            w.seq = seq + 1


# An event child's counters change several times per request: one precompiled struct over the
# six adjacent fields instead of keyword arguments and a ctypes store per field (4x faster,
# docs/performance.md). The offsets come from the ctypes layout. (For a worker record's
# request counters, a read-modify-write of 14 fields, struct was measured no faster than ctypes.)
_C_COUNTERS_AT = ChildRecord.pid.offset  # pid, not_accepting, connections, write_completion, lingering_close, keep_alive
_C_COUNTERS = struct.Struct("<i5I")
_DOUBLE = struct.Struct("<d")
_W_SINCE_AT = WorkerRecord.state_since.offset
assert [n for n, *_ in ChildRecord._fields_][1:7] == ["pid", "not_accepting", "connections", "write_completion",
                                                     "lingering_close", "keep_alive"]


class ChildCounters:
    """The one writer of an event child's record (serialised by the child's counters lock)."""

    __slots__ = ("buf", "rec")

    def __init__(self, rec: ChildRecord):
        self.rec = rec
        self.buf = memoryview(rec).cast("B")

    def publish(self, pid: int, not_accepting: int, connections: int, write_completion: int,
                lingering_close: int, keep_alive: int) -> None:
        r = self.rec
        r.seq += 1
        try:
            _C_COUNTERS.pack_into(self.buf, _C_COUNTERS_AT, pid, not_accepting, connections, write_completion,
                                  lingering_close, keep_alive)
        except struct.error:  # out of range (a counter bug): wrap as the ctypes fields do, never raise here
            r.pid, r.not_accepting, r.connections = pid, not_accepting, connections
            r.write_completion, r.lingering_close, r.keep_alive = write_completion, lingering_close, keep_alive
        r.seq += 1


class SlotWriter:
    """The one writer of one worker record. All status changes of an MPM go through here.

    What a slot shows during a graceful restart is the MPM's, as in Apache (docs/graceful-restart.md):
    * prefork: G once, when the child is told (``try_mark_graceful``, Apache's parent writes it in
      prefork.c ``prefork_run``); the child's next change overwrites it;
    * worker: nothing: a busy thread keeps R/W/K until it is done, idle ones exit to `.`;
    * event: the child marks every one of its slots G at once (``mark_graceful``, event.c
      ``close_listeners``) and a busy thread keeps G (``sticky``) until it exits to `.`. Another
      thread of the child writes then, so event's writers share ``lock``: still one writer at a
      time per record.
    """

    __slots__ = ("buf", "lock", "proc", "rec", "sticky", "thread")

    def __init__(self, rec: WorkerRecord, proc: int, thread: int):
        self.rec, self.proc, self.thread = rec, proc, thread
        self.buf = memoryview(rec).cast("B")  # the same bytes, for the structs
        # event: the child's stop event; once set, every live state is written as G
        self.sticky: threading.Event | None = None
        self.lock: threading.Lock | None = None  # event: shared by the child's writers

    def _eff(self, status: int) -> int:
        st = self.sticky
        if st is not None and status != DEAD and st.is_set():
            return GRACEFUL
        return status

    def _begin(self) -> WorkerRecord:
        if self.lock is not None:
            self.lock.acquire()
        r = self.rec
        r.seq += 1
        return r

    def _end(self, r: WorkerRecord) -> None:
        r.seq += 1
        if self.lock is not None:
            self.lock.release()

    def claim(self, pid: int, tid: int, generation: int, status: int = STARTING) -> None:
        """A new process/thread takes the slot: per-child counters reset, per-slot ones kept."""
        r = self._begin()
        r.pid, r.tid, r.generation, r.thread_num = pid, tid, generation, self.thread
        r.my_access_count = r.my_bytes_served = 0
        r.conn_count = r.conn_bytes = 0
        r.status = status
        r.state_since = time.time()
        r.client = r.request = r.pattern = b""
        self._end(r)

    def set(self, status: int) -> None:
        st = self.sticky
        if st is not None and status != DEAD and st.is_set():
            status = GRACEFUL
        r = self.rec
        if r.status == status:
            return
        lock = self.lock
        if lock is not None:
            lock.acquire()
        r.seq += 1
        r.status = status
        _DOUBLE.pack_into(self.buf, _W_SINCE_AT, time.time())
        r.seq += 1
        if lock is not None:
            lock.release()

    def new_connection(self, client: str, status: int, tls: bool = False) -> None:
        r = self._begin()
        r.status = self._eff(status)
        r.state_since = time.time()
        r.client = _clip(client, CLIENT_LEN)
        r.pattern = b""
        r.conn_count = r.conn_bytes = 0
        r.tls = 1 if tls else 0
        self._end(r)

    def set_pattern(self, pattern: str | None) -> None:
        """The X-Traffic-Pattern of the request being read (known before the request is complete)."""
        value = _clip(pattern, PATTERN_LEN) if pattern else b""
        if self.rec.pattern == value:
            return  # event clears it for each handed-back connection: mostly empty already
        r = self._begin()
        r.pattern = value
        self._end(r)

    def request_started(self, request_line: str, vhost: str, protocol: str, pattern: str | None) -> None:
        """Request read: the slot goes W and shows the request, as Apache's update_child_status does."""
        now = time.time()
        r = self._begin()
        r.status = self._eff(BUSY_WRITE)
        r.state_since = r.start_time = now
        r.request = _clip(request_line, REQUEST_LEN)
        r.vhost = _clip(vhost, VHOST_LEN)
        r.protocol = _clip(protocol, PROTOCOL_LEN)
        r.pattern = _clip(pattern, PATTERN_LEN) if pattern else b""
        self._end(r)

    def request_finished(self, nbytes: int, cpu_user: float, cpu_system: float) -> None:
        """Counters move at the end of each request (after logging), like Apache."""
        now = time.time()
        r = self._begin()
        dur_us = int((now - r.start_time) * 1e6)
        r.access_count += 1
        r.my_access_count += 1
        r.conn_count += 1
        r.bytes_served += nbytes
        r.my_bytes_served += nbytes
        r.conn_bytes += nbytes
        r.duration_us += dur_us
        r.last_req_us = dur_us
        r.stop_time = r.last_used = now
        r.cpu_user, r.cpu_system = cpu_user, cpu_system
        self._end(r)

    def try_mark_graceful(self) -> None:
        """prefork, from a signal handler in the slot's own (single) thread: show G now unless the
        interrupted code is halfway through a write of this record (odd sequence); the child's
        next change of state overwrites it, as it overwrites the G Apache's parent writes."""
        r = self.rec
        if not r.seq & 1 and r.status not in (DEAD, READY, STARTING):
            r.seq += 1
            r.status = GRACEFUL
            r.state_since = time.time()
            r.seq += 1

    def mark_graceful(self) -> None:
        """event, from another thread of the child (under the shared lock): G for a live slot."""
        if self.rec.status == DEAD:
            return
        r = self._begin()
        if r.status != DEAD:
            r.status = GRACEFUL
            r.state_since = time.time()
        self._end(r)

    def release(self, status: int = DEAD) -> None:
        r = self._begin()
        r.status = status
        r.state_since = time.time()
        r.pattern = b""
        self._end(r)


# -- readers --------------------------------------------------------------------------------
def _peek_master_pid(name: str) -> tuple[int, float]:
    """(master pid, the segment's creation time) from an existing segment's global record; (0, 0.0)
    when it is gone, too short or not ours (another magic)."""
    try:
        fd = _posixshmem.shm_open(name, os.O_RDONLY, 0)
    except FileNotFoundError:
        return 0, 0.0
    try:
        if os.fstat(fd).st_size < G_SIZE:
            return 0, 0.0
        g = GlobalRecord.from_buffer_copy(os.pread(fd, G_SIZE, 0))
        return (g.master_pid, g.start_time) if g.magic == MAGIC else (0, 0.0)
    finally:
        os.close(fd)


def master_alive(pid: int, segment_created: float) -> tuple[bool, str]:
    """Whether ``pid`` is still the mpmlab master that created a segment at ``segment_created``
    (its global record's start_time), and why not. After a kill -9 the pid may name a zombie (not
    alive) or, once reaped, any new process: one created after the segment (the master made it once
    it ran; PIDFILE_CLOCK_SLACK covers the one-second precision of creation times), or one that is
    not an mpmlab master (its command line), is a reused pid."""
    if pid <= 0:
        return False, "no master pid recorded"
    try:
        who = ProcessIdentity.of(pid)
    except ProcessLookupError as e:
        return False, str(e)
    except NotOurProcess:  # cannot be inspected (another user's): taken as alive, never replaced
        return True, f"process {pid} cannot be inspected"
    if who.create_time > segment_created + PIDFILE_CLOCK_SLACK:
        return False, (f"pid {pid} now names {who.describe()}, started {who.create_time - segment_created:.1f} s "
                       "after the segment was made")
    if not any("mpm" in arg for arg in who.cmdline):
        return False, f"pid {pid} now names {who.describe()}, not an mpmlab master"
    return True, f"pid {pid} is {who.describe()}"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts: it is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Snapshot:
    """A consistent copy of the whole scoreboard at one moment (per record), plus derived views."""

    taken_at: float
    glob: GlobalRecord
    procs: ctypes.Array[ProcessRecord]  # proc_capacity long
    children: ctypes.Array[ChildRecord]  # proc_capacity long
    workers: ctypes.Array[WorkerRecord]  # proc_capacity x thread_capacity
    thread_capacity: int
    unverified: tuple[int, ...] = ()  # worker records no copy could verify (mid-write throughout)

    @property
    def mpm(self) -> str:
        return MPM_NAMES[self.glob.mpm] if self.glob.mpm < len(MPM_NAMES) else "?"

    def worker(self, proc: int, thread: int) -> WorkerRecord:
        return self.workers[proc * self.thread_capacity + thread]

    def statuses(self) -> bytes:
        """One status byte per worker record, process-major (proc_capacity x thread_capacity)."""
        return bytes(memoryview(self.workers).cast("B")[WorkerRecord.status.offset::W_SIZE])

    def letters(self) -> str:
        return self.statuses().translate(_LETTER_TABLE).decode()


_LETTER_TABLE = bytes.maketrans(bytes(range(11)), STATE_LETTERS.encode())


class ScoreboardReader:
    """Read-only attachment by name from any process; ``snapshot()`` never blocks the writers."""

    MAX_RETRIES = 50  # a record changing 50 times during one copy means a writer is spinning

    def __init__(self, name: str):
        self.name: str | None = name  # None: a reader over a mapping it was handed (from_mmap)
        self._attach()

    def _attach(self) -> None:
        fd = _posixshmem.shm_open(self.name, os.O_RDONLY, 0)
        try:
            size = os.fstat(fd).st_size
            if size < G_SIZE:
                raise StaleScoreboard(f"scoreboard {self.name} is not initialised")
            self.mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._layout()

    @classmethod
    def from_mmap(cls, mm: mmap.mmap) -> ScoreboardReader:
        """A reader over an existing mapping (a child reading the scoreboard it writes to)."""
        self = cls.__new__(cls)
        self.name = None
        self.mm = mm
        self._layout()
        return self

    def _layout(self) -> None:
        g = GlobalRecord.from_buffer_copy(self.mm, 0)
        if g.magic != MAGIC or g.layout_version != LAYOUT_VERSION:
            raise StaleScoreboard(f"scoreboard {self.name} has an unknown layout")
        self.proc_capacity, self.thread_capacity = g.proc_capacity, g.thread_capacity
        self._p_off = G_SIZE
        self._c_off = G_SIZE + self.proc_capacity * P_SIZE
        self._w_off = self._c_off + self.proc_capacity * C_SIZE
        self._end = self._w_off + self.proc_capacity * self.thread_capacity * W_SIZE

    def close(self) -> None:
        self.mm.close()

    def _copy_region(self, cls: type[_Rec], off: int, count: int, size: int,
                     unverified: list[int] | None = None) -> ctypes.Array[_Rec]:
        """Copy ``count`` records; a record is good when its sequence was even and the same just
        before and just after the copy (memcpy's internal order does not matter then). The index
        of a record no retry could verify (a writer inside it all along, or one that died inside
        it and was not repaired yet) is appended to ``unverified``; its copy is the last one read."""
        mm = self.mm
        before = _seqs(mm, off, count, size)
        arr = (cls * count).from_buffer_copy(mm, off)
        after = _seqs(mm, off, count, size)
        # odd in ``before``: a writer was inside that record when the copy began (it may have
        # finished since, so the live sequence would not tell)
        if before != after or _any_odd(before):
            b, a = memoryview(before).cast("I"), memoryview(after).cast("I")
            for i in range(count):
                if b[i] == a[i] and not b[i] & 1:
                    continue
                o = off + i * size
                for _ in range(self.MAX_RETRIES):
                    s1 = int.from_bytes(mm[o:o + 4], "little")
                    rec = cls.from_buffer_copy(mm, o)
                    if not s1 & 1 and s1 == int.from_bytes(mm[o:o + 4], "little"):
                        arr[i] = rec
                        break
                else:
                    arr[i] = rec
                    if unverified is not None:
                        unverified.append(i)
        return arr

    def read_slot(self, proc: int, thread: int) -> tuple[WorkerRecord, ProcessRecord]:
        """One worker record and its process record, each a verified copy (read under its sequence
        counter), without copying the whole scoreboard. IndexError outside the capacity."""
        if not (0 <= proc < self.proc_capacity and 0 <= thread < self.thread_capacity):
            raise IndexError(f"no slot {proc}/{thread} in a {self.proc_capacity} x {self.thread_capacity} scoreboard")
        idx = proc * self.thread_capacity + thread
        w = self._copy_region(WorkerRecord, self._w_off + idx * W_SIZE, 1, W_SIZE)[0]
        p = self._copy_region(ProcessRecord, self._p_off + proc * P_SIZE, 1, P_SIZE)[0]
        return w, p

    def snapshot(self, graceful_view: bool = True) -> Snapshot:
        """A consistent copy: the states as the children wrote them (G included: they write it
        themselves, per MPM). ``graceful_view`` is accepted for older callers and changes nothing."""
        g = GlobalRecord.from_buffer_copy(self.mm, 0)
        if g.superseded and self.name is not None:
            # the master re-created (hard restart with new limits) or removed the segment
            self.mm.close()
            self._attach()
            g = GlobalRecord.from_buffer_copy(self.mm, 0)
        procs = self._copy_region(ProcessRecord, self._p_off, self.proc_capacity, P_SIZE)
        children = self._copy_region(ChildRecord, self._c_off, self.proc_capacity, C_SIZE)
        unverified: list[int] = []
        workers = self._copy_region(WorkerRecord, self._w_off, self.proc_capacity * self.thread_capacity, W_SIZE,
                                    unverified)
        snap = Snapshot(time.time(), g, procs, children, workers, self.thread_capacity, tuple(unverified))
        return snap

    def __enter__(self) -> ScoreboardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _column(arr: ctypes.Array[Any], field: Any, record_size: int, fmt: Literal["I", "i"] = "I") -> list[int]:
    """One field of every record of a ctypes array, read at C speed (records are 8-byte aligned)."""
    return memoryview(arr).cast("B").cast(fmt)[field.offset // 4::record_size // 4].tolist()


def _seqs(mm: mmap.mmap, off: int, count: int, size: int) -> bytes:
    """The sequence counters of ``count`` records, as bytes (compared whole, at C speed).
    Records are 8-byte aligned, so the region is an array of uint32 with a seq every size//4."""
    return memoryview(mm)[off:off + count * size].cast("I")[:: size // 4].tobytes()


_ODD = bytes(i & 1 for i in range(256))


def _any_odd(seqs: bytes) -> bool:
    """Is any of these sequence counters (``_seqs``' uint32s) odd, i.e. its record mid-write?"""
    return b"\x01" in seqs[::4].translate(_ODD)  # little-endian: the low byte comes first


def live_workers(snap: Snapshot) -> Iterator[tuple[int, int, WorkerRecord]]:
    for p in range(len(snap.procs)):
        base = p * snap.thread_capacity
        for t in range(snap.thread_capacity):
            w = snap.workers[base + t]
            if w.status != DEAD:
                yield p, t, w
