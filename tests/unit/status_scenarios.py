"""Fixed synthetic scoreboards (ctypes records filled by hand, no shared memory) for the
status rendering goldens and the model's unit tests. Everything that varies between runs (the
clock, the load average, the time zone) is fixed here, so the same scoreboard always renders
the same bytes."""

from __future__ import annotations

from dataclasses import dataclass

from mpmcore import scoreboard as sb

NOW = 1_790_000_000.0  # the instant every scenario is rendered at
RESTART = NOW - 3723.0
LOAD = (0.5, 1.25, 2.0)
GEN = 2

_BY_LETTER = {v: k for k, v in sb.LETTERS.items()}


@dataclass
class Scenario:
    name: str
    snap: sb.Snapshot
    mpm: str
    max_request_workers: int
    threads_per_child: int
    server_limit: int
    extended_status: bool = True


def _snapshot(mpm: str, procs: int, threads: int, mrw: int, tpc: int) -> sb.Snapshot:
    g = sb.GlobalRecord()
    g.magic, g.mpm, g.proc_capacity, g.thread_capacity = sb.MAGIC, sb.MPM_IDS[mpm], procs, threads
    g.server_limit, g.thread_limit, g.threads_per_child, g.max_request_workers = procs, threads, tpc, mrw
    g.running_generation, g.config_generation = GEN, GEN + 1
    g.restart_time = g.start_time = RESTART
    g.parent_cpu_user, g.parent_cpu_system = 0.25, 0.125
    g.children_cpu_user, g.children_cpu_system = 1.5, 0.5
    return sb.Snapshot(NOW, g, (sb.ProcessRecord * procs)(), (sb.ChildRecord * procs)(),
                       (sb.WorkerRecord * (procs * threads))(), threads)


def _proc(snap: sb.Snapshot, slot: int, pid: int, gen: int, states: str, *, quiescing: bool = False,
          kind: int = sb.KIND_CHILD, mpm: str | None = None, pss_kb: int = 0, rss_kb: int = 0) -> None:
    p = snap.procs[slot]
    p.pid, p.generation, p.kind, p.quiescing = pid, gen, kind, int(quiescing)
    p.mpm = sb.MPM_IDS[mpm or snap.mpm]
    p.threads, p.start_time, p.pss_kb, p.rss_kb, p.mem_time = len(states), RESTART + 1, pss_kb, rss_kb, NOW - 1
    for t, letter in enumerate(states):
        w = snap.workers[slot * snap.thread_capacity + t]
        w.status = _BY_LETTER[letter]
        if letter != ".":
            w.pid, w.tid, w.generation, w.thread_num = pid, 1000 * slot + t, gen, t
            w.state_since = NOW - 2.5


def _served(snap: sb.Snapshot, slot: int, thread: int, n: int, nbytes: int, *, request: bytes = b"",
            client: bytes = b"127.0.0.1", pattern: bytes = b"", vhost: bytes = b"localhost:8080") -> None:
    w = snap.workers[slot * snap.thread_capacity + thread]
    w.access_count, w.my_access_count, w.conn_count = n, n, 1
    w.bytes_served, w.my_bytes_served, w.conn_bytes = nbytes, nbytes, nbytes // 3
    w.duration_us, w.last_req_us = 1500 * n, 1500
    w.start_time, w.stop_time, w.last_used = NOW - 7.0, NOW - 6.9985, NOW - 6.9985
    w.cpu_user, w.cpu_system = 0.03 * n, 0.01 * n
    w.client, w.request, w.vhost, w.protocol, w.pattern = client, request, vhost, b"HTTP/1.1", pattern


def _child(snap: sb.Snapshot, slot: int, pid: int, **counters: int) -> None:
    c = snap.children[slot]
    c.pid = pid
    for k, v in counters.items():
        setattr(c, k, v)


def event_busy() -> Scenario:
    """event, 4 x 4: a current child, an old-generation one, a quiescing one, a FastCGI pool
    process, a squatter's counters, patterns, a request line with bytes to escape."""
    s = _snapshot("event", 5, 4, 12, 4)
    _proc(s, 0, 101, GEN, "__WR", pss_kb=10240, rss_kb=20480)
    _proc(s, 1, 102, GEN - 1, "_KGW", pss_kb=8192, rss_kb=16384)
    _proc(s, 2, 103, GEN, "WW._", quiescing=True, pss_kb=4096, rss_kb=8192)
    _proc(s, 3, 201, GEN, "W", kind=sb.KIND_FCGI, pss_kb=2048, rss_kb=4096)
    _child(s, 0, 101, connections=7, keep_alive=3, write_completion=1, lingering_close=2, wait_io=1)
    _child(s, 1, 102, connections=2, not_accepting=1)
    _child(s, 2, 999, connections=5)  # a squatter's counters: not this child's
    _served(s, 0, 2, 3, 9000, request=b'GET /slow?x="q"\\\x01 HTTP/1.1', pattern=b"steady")
    _served(s, 0, 3, 1, 100, request=b"GET /<b>&amp HTTP/1.1", pattern=b"slowloris", client=b"::1")
    _served(s, 1, 3, 2, 3 << 20, request=b"GET /big HTTP/1.1", pattern=b"bulk")
    _served(s, 2, 0, 5, 6 << 30, request=b"GET / HTTP/1.1")
    _served(s, 0, 0, 4, 400)  # idle but has served: listed
    return Scenario("event_busy", s, "event", 12, 4, 4)


def worker_off() -> Scenario:
    """worker with ExtendedStatus Off: no totals, the PID key instead of the worker table."""
    s = _snapshot("worker", 3, 2, 6, 2)
    _proc(s, 0, 301, GEN, "W_")
    _proc(s, 1, 302, GEN, "KR")
    _served(s, 1, 0, 2, 500, request=b"GET /k HTTP/1.1")
    return Scenario("worker_off", s, "worker", 6, 2, 3, extended_status=False)


def prefork_idle() -> Scenario:
    """prefork, nothing served yet (no rates: zero accesses)."""
    s = _snapshot("prefork", 4, 1, 4, 1)
    _proc(s, 0, 401, GEN, "_")
    _proc(s, 1, 402, GEN, "S")
    s.glob.parent_cpu_user = s.glob.parent_cpu_system = 0.0
    s.glob.children_cpu_user = s.glob.children_cpu_system = 0.0
    return Scenario("prefork_idle", s, "prefork", 4, 1, 4)


def wide_old_gen() -> Scenario:
    """worker after a ThreadsPerChild decrease: an old child with more threads than the current
    ThreadsPerChild, and a live slot beyond MaxRequestWorkers."""
    s = _snapshot("worker", 4, 4, 4, 2)
    _proc(s, 0, 501, GEN, "W_..")
    _proc(s, 1, 502, GEN - 1, "WWK_")
    _proc(s, 3, 503, GEN - 1, "K...")
    _served(s, 1, 1, 1, 10, request=b"GET /w HTTP/1.1", pattern=b"ajax")
    return Scenario("wide_old_gen", s, "worker", 4, 2, 4)


SCENARIOS = (event_busy, worker_off, prefork_idle, wide_old_gen)
