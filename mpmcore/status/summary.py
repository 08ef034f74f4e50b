"""The embedded core's summary: a scoreboard Snapshot counted by mod_status' rules, as the typed
model (``mpmcore.model.Summary``, ``WorkerRow``).

What Apache 2.4 does (modules/generators/mod_status.c, status_handler()), reproduced:

* Counting: only process slots with a pid that are not quiescing count. Idle = READY in the running
  generation; Graceful = G; Busy = every other state except DEAD, STARTING and IDLE_KILL.
* The scoreboard string shows every slot of the first MaxRequestWorkers/ThreadsPerChild processes'
  first ThreadsPerChild threads, plus any live slot beyond (old generations' children, threads of
  a child that ran with a larger ThreadsPerChild); dead slots beyond are left out.
* Event's per-child counters (ConnsTotal, ConnsAsync*) are current, not lagging (a deliberate
  difference: docs/apache-differences.md).
* FastCGI-pool process records (kind ``KIND_FCGI``) are not MPM children: they are never counted
  as workers or processes; their slots still show in the scoreboard string.

Speed: ``summarize`` runs at up to 20 Hz on 256 x 64 worker records, so every per-record pass is a
bytes operation or a strided memoryview, never a Python loop over records.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from typing import Any, Literal

from mpmcore import scoreboard as sb
from mpmcore.model import ProcessRow, ProcSum, Summary, Totals, WorkerRow, count_states
from mpmcore.scoreboard import (
    DEAD,
    GRACEFUL,
    IDLE_KILL,
    KIND_FCGI,
    LETTERS,
    READY,
    STARTING,
    STATE_NAMES,
    W_SIZE,
    Snapshot,
    WorkerRecord,
)
from mpmcore.status.aprfmt import CLK_TCK, KBYTE, f32, fdiv, ht_time, show_time, ticks


@dataclass
class ServerInfo:
    server_name: str  # the first line of ?auto
    server_version: str  # "mpmlab/0.1.0 (Unix)"
    built: str  # "Nov 26 2026 10:00:00"
    mpm: str
    max_request_workers: int
    threads_per_child: int  # 1 for prefork
    server_limit: int
    extended_status: bool = True
    config_generation: int | None = None  # None: the scoreboard's global record
    mpm_generation: int | None = None  # None: the scoreboard's running_generation
    local_ip: str | None = None  # "(via ...)" in the HTML heading; None: server_name


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


# -- whole-array record reads ----------------------------------------------------------------
_CODES: dict[type[Any], str] = {
    ctypes.c_uint8: "B", ctypes.c_int8: "b", ctypes.c_uint16: "H", ctypes.c_int16: "h",
    ctypes.c_uint32: "I", ctypes.c_int32: "i", ctypes.c_uint64: "Q", ctypes.c_int64: "q",
    ctypes.c_double: "d", ctypes.c_float: "f"}
_PROC_FIELDS = ("seq", "pid", "generation", "mpm", "kind", "quiescing", "_pad", "threads", "start_time",
                "pss_kb", "rss_kb", "mem_time")
_CHILD_FIELDS = ("seq", "pid", "not_accepting", "connections", "write_completion", "lingering_close",
                 "keep_alive", "suspended", "wait_io", "_pad")


def _struct_for(cls: type[ctypes.Structure]) -> struct.Struct | None:
    """The record as a native struct, when its fields are plain numbers in the order we read them."""
    try:
        fmt = "@" + "".join(_CODES[f[1]] for f in cls._fields_)
    except KeyError:
        return None
    st = struct.Struct(fmt)
    return st if st.size == ctypes.sizeof(cls) else None


_STRUCTS: dict[type, struct.Struct | None] = {}


def _records(arr: ctypes.Array[Any], fields: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """All records of ``arr`` as tuples in ``fields`` order: one C-level unpack of the whole array
    instead of a ctypes attribute read per field per record."""
    cls = arr._type_
    if cls not in _STRUCTS:
        st = _struct_for(cls)
        _STRUCTS[cls] = st if st and tuple(f[0] for f in cls._fields_) == fields else None
    st = _STRUCTS[cls]
    if st is not None and len(arr):
        return list(st.iter_unpack(memoryview(arr).cast("B")))
    return [tuple(getattr(r, f) for f in fields) for r in arr]


# -- strided views of the worker array -----------------------------------------------------
def column(snap: Snapshot, name: str, fmt: Literal["Q", "d"]) -> memoryview[Any]:
    """One field of every worker record as a strided memoryview (no per-record Python work)."""
    size = struct.calcsize(fmt)
    off: int = getattr(WorkerRecord, name).offset
    assert off % size == 0 and W_SIZE % size == 0, "record layout no longer aligned for strided reads"
    mv = memoryview(snap.workers).cast("B")
    if not len(mv):
        return mv
    typed: memoryview[Any] = mv.cast("Q") if fmt == "Q" else mv.cast("d")
    return typed[off // size::W_SIZE // size]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _mpm_name(mpm_id: int) -> str:
    return sb.MPM_NAMES[mpm_id] if mpm_id < len(sb.MPM_NAMES) else "?"


# -- the numbers ---------------------------------------------------------------------------
def summarize(snap: Snapshot, info: ServerInfo, now: float | None = None, detail: bool = True) -> Summary:
    """Everything mod_status shows, by Apache's counting rules.

    ``detail=False`` leaves out the per-process rows (``procs``, ``fcgi_procs``): what ``?auto``
    needs, at a fraction of the cost."""
    now = snap.taken_at if now is None else now
    g = snap.glob
    tc = snap.thread_capacity
    nprocs = len(snap.procs)
    tpc = max(1, info.threads_per_child)
    max_servers = info.max_request_workers // tpc  # Apache's max daemons (MAX_DAEMONS query)
    mpm_gen = g.running_generation if info.mpm_generation is None else info.mpm_generation
    config_gen = g.config_generation if info.config_generation is None else info.config_generation
    statuses = snap.statuses()

    # The displayed scoreboard: the first max_servers x ThreadsPerChild slots, plus live ones beyond.
    if tc <= tpc:
        head = statuses[:max_servers * tc]
        shown = [head] if tc == tpc else [statuses[i * tc:(i + 1) * tc] for i in range(min(max_servers, nprocs))]
    else:
        shown = []
        for i in range(min(max_servers, nprocs)):
            row = statuses[i * tc:(i + 1) * tc]
            shown.append(row[:tpc])
            rest = row[tpc:]
            if rest.count(DEAD) != len(rest):
                shown.append(rest.replace(b"\x00", b""))
    beyond = statuses[max_servers * tc:]
    if beyond.count(DEAD) != len(beyond):
        shown.append(beyond.replace(b"\x00", b""))

    idle = busy = graceful = idle_any = 0
    n_procs = n_stopping = 0
    conns = a_wait = a_write = a_ka = a_close = a_susp = pss_sum = rss_sum = 0
    procs_out: list[ProcessRow] = []
    fcgi_out: list[ProcessRow] = []
    procs = _records(snap.procs, _PROC_FIELDS)
    children = _records(snap.children, _CHILD_FIELDS)
    for i in range(nprocs):
        (_, pid, gen, mpm_id, kind, quiescing, _, threads, start_time, pss_kb, rss_kb, mem_time) = procs[i]
        if not pid:
            continue
        (_, c_pid, not_accepting, connections, writing, closing, keep_alive, suspended, wait_io, _) = children[i]
        if c_pid and c_pid != pid:
            # a squatter shares the slot: counters written by another pid are not this child's
            not_accepting = connections = writing = closing = keep_alive = suspended = wait_io = 0
        if kind == KIND_FCGI:
            if detail:
                fcgi_out.append(ProcessRow(
                    slot=i, pid=pid, generation=gen, mpm=_mpm_name(mpm_id), kind="fcgi", stopping=bool(quiescing),
                    old_gen=gen != mpm_gen, threads=threads, start_time=start_time, connections=0,
                    accepting=False, busy=0, graceful=0, idle=0, wait_io=0, writing=0, keep_alive=0, closing=0,
                    suspended=0, pss_kb=pss_kb, rss_kb=rss_kb, mem_time=mem_time))
            continue
        n_busy = n_g = n_ready = 0
        if not quiescing:
            row = statuses[i * tc:(i + 1) * tc]
            n_ready, n_g = row.count(READY), row.count(GRACEFUL)
            n_busy = tc - n_ready - n_g - row.count(DEAD) - row.count(STARTING) - row.count(IDLE_KILL)
            # Apache: per-process idle counts READY of any generation, the total only the current one
            busy += n_busy
            graceful += n_g
            idle_any += n_ready
            if gen == mpm_gen:
                idle += n_ready
        n_procs += 1
        n_stopping += 1 if quiescing else 0
        conns += connections
        a_wait += wait_io
        a_write += writing
        a_ka += keep_alive
        a_close += closing
        a_susp += suspended
        pss_sum += pss_kb
        rss_sum += rss_kb
        if detail:
            procs_out.append(ProcessRow(
                slot=i, pid=pid, generation=gen, mpm=_mpm_name(mpm_id), kind="child", stopping=bool(quiescing),
                old_gen=gen != mpm_gen, threads=threads, start_time=start_time, connections=connections,
                accepting=not not_accepting, busy=n_busy, graceful=n_g, idle=n_ready, wait_io=wait_io,
                writing=writing, keep_alive=keep_alive, closing=closing, suspended=suspended, pss_kb=pss_kb,
                rss_kb=rss_kb, mem_time=mem_time))
    sums = ProcSum(processes=n_procs, stopping=n_stopping, connections=conns, busy=busy, graceful=graceful,
                   idle=idle_any, wait_io=a_wait, writing=a_write, keep_alive=a_ka, closing=a_close,
                   suspended=a_susp, pss_kb=pss_sum, rss_kb=rss_sum)

    letters = b"".join(shown).translate(sb._LETTER_TABLE).decode("latin-1")
    state_counts = count_states(letters)
    uptime = max(0, int(now - g.restart_time)) & 0xFFFFFFFF
    return Summary(
        server_name=info.server_name, server_version=info.server_version, server_built=info.built,
        mpm=info.mpm, current_time=now, restart_time=g.restart_time,
        current_time_text=ht_time(now), restart_time_text=ht_time(g.restart_time),
        config_generation=config_gen, mpm_generation=mpm_gen,
        uptime=uptime, uptime_text=show_time(uptime).strip(),
        load=_loadavg(), extended_status=info.extended_status,
        server_limit=info.server_limit, threads_per_child=info.threads_per_child,
        max_request_workers=info.max_request_workers,
        busy=busy, graceful=graceful, idle=idle,
        scoreboard=letters, state_counts=state_counts,
        processes=n_procs, stopping=n_stopping,
        conns_total=conns, conns_async_wait_io=a_wait, conns_async_writing=a_write,
        conns_async_keep_alive=a_ka, conns_async_closing=a_close,
        procs=tuple(procs_out), proc_sum=sums, fcgi_procs=tuple(fcgi_out),
        totals=_totals(snap, uptime) if info.extended_status else None,
        graceful_shown=state_counts["G"],
    )


def _totals(snap: Snapshot, uptime: int) -> Totals:
    """Apache sums records with accesses or a non-idle state; the others hold zero counters, so a
    sum over all records is the same and costs one strided pass per field."""
    accesses: int
    nbytes: int
    dur_us: int
    if not len(snap.workers):
        accesses = nbytes = dur_us = 0
        cpu_u = cpu_s = 0.0
    else:
        accesses = sum(column(snap, "access_count", "Q"))
        nbytes = sum(column(snap, "bytes_served", "Q"))
        dur_us = sum(column(snap, "duration_us", "Q"))
        cpu_u = sum(column(snap, "cpu_user", "d"))
        cpu_s = sum(column(snap, "cpu_system", "d"))
    g = snap.glob
    kbytes = nbytes >> 10
    dur_ms = dur_us // 1000
    tu, ts = ticks(g.parent_cpu_user) + ticks(cpu_u), ticks(g.parent_cpu_system) + ticks(cpu_s)
    tcu, tcs = ticks(g.children_cpu_user), ticks(g.children_cpu_system)
    cpu = tu + ts + tcu + tcs
    return Totals(
        accesses=accesses, bytes=nbytes, kbytes=kbytes, duration_ms=dur_ms,
        cpu_user=fdiv(tu, CLK_TCK), cpu_system=fdiv(ts, CLK_TCK),
        cpu_children_user=fdiv(tcu, CLK_TCK), cpu_children_system=fdiv(tcs, CLK_TCK),
        cpu_ticks=cpu,
        cpu_load=fdiv(fdiv(cpu, CLK_TCK), uptime) * 100.0 if cpu else None,
        req_per_sec=fdiv(accesses, uptime) if uptime > 0 else None,
        bytes_per_sec=fdiv(f32(KBYTE * f32(kbytes)), uptime) if uptime > 0 else None,
        bytes_per_req=fdiv(f32(KBYTE * f32(kbytes)), accesses) if accesses > 0 else None,
        duration_per_req=fdiv(dur_ms, accesses) if accesses > 0 else None,
    )


# -- per-worker rows ------------------------------------------------------------------------
def worker_rows(snap: Snapshot, now: float | None = None, all_live: bool = True) -> list[WorkerRow]:
    """Per-worker rows. ``all_live``: every slot that is not DEAD or has served requests (the
    dashboard's view); otherwise Apache's table rule (served requests, or neither READY nor DEAD)."""
    now = snap.taken_at if now is None else now
    statuses = snap.statuses()
    if not statuses:
        return []
    acc = column(snap, "access_count", "Q").tolist()
    tc = snap.thread_capacity
    skip = (DEAD,) if all_live else (DEAD, READY)
    rows = []
    for idx, st in enumerate(statuses):
        if st in skip and not acc[idx]:
            continue
        proc, thread = divmod(idx, tc)
        rows.append(worker_row(snap, proc, thread, snap.workers[idx], now))
    return rows


def worker_row(snap: Snapshot, proc: int, thread: int, w: WorkerRecord, now: float) -> WorkerRow:
    p = snap.procs[proc]
    pid, gen = (w.pid, w.generation) if w.pid else (p.pid, p.generation)
    req_ms = 0 if not w.start_time else max(0, int((w.stop_time - w.start_time) * 1000))
    last = w.last_used or w.state_since
    return WorkerRow(
        proc=proc, thread=thread, pid=pid, tid=w.tid, generation=gen,
        status=LETTERS.get(w.status, "?"), state=STATE_NAMES.get(w.status, "?"),
        conn_count=w.conn_count, my_access_count=w.my_access_count, access_count=w.access_count,
        conn_bytes=w.conn_bytes, my_bytes_served=w.my_bytes_served, bytes_served=w.bytes_served,
        cpu=w.cpu_user + w.cpu_system, ss=max(0, int(now - last)) if last else 0,
        req_ms=req_ms, last_req_ms=w.last_req_us // 1000, duration_ms=w.duration_us // 1000,
        state_since=w.state_since, tls=bool(w.tls),
        client=_text(w.client), protocol=_text(w.protocol), vhost=_text(w.vhost),
        request=_text(w.request), pattern=_text(w.pattern),
    )
