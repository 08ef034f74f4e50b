"""mod_status: the server-status page, ``?auto`` and JSON, computed from a scoreboard Snapshot.

What Apache 2.4 does (SPEC section 2, modules/generators/mod_status.c), reproduced:

* Counting: only process slots with a pid that are not quiescing count. Idle = READY in the running
  generation; Graceful = G; Busy = every other state except DEAD, STARTING and IDLE_KILL.
* ``?auto`` prints its keys in Apache 2.4.71's order, with Apache's number formats. Apache prints
  through APR's own printf (``apr_vformatter``), not libc's, and its ``%g`` differs from C's: no
  leading zero (``.722222``) and a different switch to exponent form. Its rates are computed in
  C ``float``. Both are emulated here (``apr_g``, ``apr_f``, ``_f32``) so that our numbers read
  exactly as Apache's would for the same counters.
* The scoreboard string shows every slot of the first MaxRequestWorkers/ThreadsPerChild processes'
  first ThreadsPerChild threads, plus any live slot beyond (old generations' children, threads of
  a child that ran with a larger ThreadsPerChild); dead slots beyond are left out.

Deliberate differences, each visible in the output:

* Event's per-child counters (ConnsTotal, ConnsAsync*) are current, not lagging (SPEC section 1).
* Query options are parsed as ``name[=value]`` pairs (Apache searches substrings); a bad
  ``refresh`` value is a 400 naming the parameter (Apache falls back to 10 s); ``?json`` (or
  ``Accept: application/json``) is mpmlab's; methods other than GET/HEAD get 405 (Apache declines
  to 404).
* The HTML page has two mpmlab additions, labelled as such: a Pattern column (the
  X-Traffic-Pattern the slot holds) in the worker table, and a per-process memory table (PSS/RSS).
* FastCGI-pool process records (kind ``KIND_FCGI``) are not MPM children: they are never counted
  as workers or processes; their slots still show in the scoreboard string.

Speed: ``summarize``/``render_auto`` run at up to 20 Hz on 256 x 64 worker records, so every
per-record pass is a bytes operation or a strided memoryview, never a Python loop over records.
"""

from __future__ import annotations

import ctypes
import html
import json
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from mpmcore import scoreboard as sb
from mpmcore.scoreboard import (
    BUSY_DNS,
    BUSY_KEEPALIVE,
    BUSY_LOG,
    BUSY_READ,
    BUSY_WRITE,
    CLOSING,
    DEAD,
    GRACEFUL,
    IDLE_KILL,
    KIND_FCGI,
    LETTERS,
    READY,
    STARTING,
    STATE_LETTERS,
    STATE_NAMES,
    W_SIZE,
    Snapshot,
    WorkerRecord,
)

KBYTE = 1024
MBYTE = 1048576
GBYTE = 1073741824
STATUS_MAXLINE = 64  # scoreboard letters per line on the HTML page, as Apache
REFRESH_DEFAULT = 10  # Apache 2.4's Refresh when ?refresh has no usable value
REFRESH_MIN, REFRESH_MAX = 1, 3600
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # Apache's times() tick

AUTO_TYPE = "text/plain; charset=ISO-8859-1"
HTML_TYPE = "text/html; charset=ISO-8859-1"
JSON_TYPE = "application/json"


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


# -- APR's printf, as Apache prints numbers -------------------------------------------------
_NDIG = 80


def _cvt(arg: float, ndigits: int, eflag: bool) -> tuple[str, int, bool]:
    """APR's apr_cvt (the UNIX V7 algorithm): digits, decimal point position, sign.

    ``eflag``: ``ndigits`` significant digits (ecvt); otherwise ``ndigits`` after the point (fcvt).
    Digits come from repeated modf, so they round exactly as APR's do."""
    if ndigits >= _NDIG - 1:
        ndigits = _NDIG - 2
    r2 = 0
    sign = arg < 0
    if sign:
        arg = -arg
    buf = ["0"] * (_NDIG + 1)
    p = 0
    arg, fi = math.modf(arg)
    if fi != 0:
        ints = []
        while len(ints) < _NDIG and fi != 0:
            fj, fi = math.modf(fi / 10)
            ints.append(chr(int((fj + .03) * 10) + 48))
            r2 += 1
        for ch in reversed(ints):
            buf[p] = ch
            p += 1
    elif arg > 0:
        while arg * 10 < 1:
            arg *= 10
            r2 -= 1
    p1 = ndigits if eflag else ndigits + r2
    if p1 < 0:
        return "", -ndigits, sign
    decpt = r2
    while p <= p1 and p < _NDIG:
        arg, fj = math.modf(arg * 10)
        buf[p] = chr(int(fj) + 48)
        p += 1
    if p1 >= _NDIG:
        return "".join(buf[:_NDIG - 1]), decpt, sign
    p = p1
    buf[p1] = chr(ord(buf[p1]) + 5)
    while buf[p1] > "9":
        buf[p1] = "0"
        if p1 > 0:
            p1 -= 1
            buf[p1] = chr(ord(buf[p1]) + 1)
        else:
            buf[p1] = "1"
            decpt += 1
            if not eflag:
                if p > 0:
                    buf[p] = "0"
                p += 1
    return "".join(buf[:p]), decpt, sign


def apr_g(x: float, ndigit: int = 6) -> str:
    """``%g`` (``%.Ng``) as APR prints it: ``.5`` not ``0.5``; exponent form only when the point
    is more than 4 places right of the digits or 4 left of the first one ("1.e+6", "1.5e-5")."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    digits, decpt, sign = _cvt(x, ndigit, True)
    out = ["-"] if sign else []
    nd = ndigit
    i = nd - 1
    while i > 0 and digits[i] == "0":
        nd -= 1
        i -= 1
    if (decpt >= 0 and decpt - nd > 4) or (decpt < 0 and decpt < -3):
        decpt -= 1
        out += [digits[0], ".", digits[1:nd], "e"]
        if decpt < 0:
            decpt = -decpt
            out.append("-")
        else:
            out.append("+")
        if decpt // 100 > 0:
            out.append(str(decpt // 100))
        if decpt // 10 > 0:
            out.append(str((decpt % 100) // 10))
        out.append(str(decpt % 10))
    else:
        if decpt <= 0:
            if digits[0] != "0":
                out.append(".")
            out.append("0" * -decpt)
            decpt = 0
        for i in range(1, nd + 1):
            out.append(digits[i - 1])
            if i == decpt:
                out.append(".")
        if nd < decpt:
            out.append("0" * (decpt - nd) + ".")
    s = "".join(out)
    return s[:-1] if s.endswith(".") else s


def apr_f(x: float, prec: int) -> str:
    """``%.Nf`` as APR prints it (a leading zero, like C's)."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf"
    digits, decpt, sign = _cvt(x, prec, False)
    if decpt <= 0:
        s = "0" + ("." + "0" * -decpt if prec > 0 else "") + digits
    else:
        s = digits[:decpt] + ("." if prec > 0 else "") + digits[decpt:]
    return ("-" + s) if sign else s


_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """Round to C float: mod_status computes its rates in single precision."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _fdiv(a: float, b: float) -> float:
    """C float division, division by zero included (inf, as the C code would give)."""
    a, b = _f32(a), _f32(b)
    if b == 0:
        return math.nan if a == 0 else math.inf
    return _f32(a / b)


def _ticks(seconds: float) -> int:
    return int(round(seconds * CLK_TCK))


def format_byte_out(nbytes: int) -> str:
    if nbytes < 5 * KBYTE:
        return f"{int(nbytes)} B"
    if nbytes < MBYTE / 2:
        return f"{apr_f(_fdiv(nbytes, KBYTE), 1)} kB"
    if nbytes < GBYTE / 2:
        return f"{apr_f(_fdiv(nbytes, MBYTE), 1)} MB"
    return f"{apr_f(_fdiv(nbytes, GBYTE), 1)} GB"


def format_kbyte_out(kbytes: int) -> str:
    if kbytes < KBYTE:
        return f"{int(kbytes)} kB"
    if kbytes < MBYTE:
        return f"{apr_f(_fdiv(kbytes, KBYTE), 1)} MB"
    return f"{apr_f(_fdiv(kbytes, MBYTE), 1)} GB"


def show_time(seconds: int) -> str:
    """Apache's uptime words: " 1 hour 2 minutes 3 seconds" (leading space; zero parts left out)."""
    secs = seconds % 60
    seconds //= 60
    mins = seconds % 60
    seconds //= 60
    hrs = seconds % 24
    days = seconds // 24
    out = []
    for n, unit in ((days, "day"), (hrs, "hour"), (mins, "minute"), (secs, "second")):
        if n:
            out.append(f" {n} {unit}{'' if n == 1 else 's'}")
    return "".join(out)


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def ht_time(t: float) -> str:
    """ap_ht_time(t, "%A, %d-%b-%Y %H:%M:%S %Z", local): C-locale names whatever the locale."""
    tm = time.localtime(t)
    return (f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d}-{_MONTHS[tm.tm_mon - 1]}-{tm.tm_year} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tm.tm_zone}")


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


# -- whole-array record reads ----------------------------------------------------------------
_CODES = {ctypes.c_uint8: "B", ctypes.c_int8: "b", ctypes.c_uint16: "H", ctypes.c_int16: "h",
          ctypes.c_uint32: "I", ctypes.c_int32: "i", ctypes.c_uint64: "Q", ctypes.c_int64: "q",
          ctypes.c_double: "d", ctypes.c_float: "f"}
_PROC_FIELDS = ("seq", "pid", "generation", "mpm", "kind", "quiescing", "_pad", "threads", "start_time",
                "pss_kb", "rss_kb", "mem_time")
_CHILD_FIELDS = ("seq", "pid", "not_accepting", "connections", "write_completion", "lingering_close",
                 "keep_alive", "suspended", "wait_io", "_pad")


def _struct_for(cls) -> struct.Struct | None:
    """The record as a native struct, when its fields are plain numbers in the order we read them."""
    try:
        fmt = "@" + "".join(_CODES[t] for _, t in cls._fields_)
    except KeyError:
        return None
    st = struct.Struct(fmt)
    return st if st.size == ctypes.sizeof(cls) else None


_STRUCTS: dict[type, struct.Struct | None] = {}


def _records(arr: ctypes.Array, fields: tuple[str, ...]) -> list[tuple]:
    """All records of ``arr`` as tuples in ``fields`` order: one C-level unpack of the whole array
    instead of a ctypes attribute read per field per record."""
    cls = arr._type_
    if cls not in _STRUCTS:
        st = _struct_for(cls)
        _STRUCTS[cls] = st if st and tuple(n for n, _ in cls._fields_) == fields else None
    st = _STRUCTS[cls]
    if st is not None and len(arr):
        return list(st.iter_unpack(memoryview(arr).cast("B")))
    return [tuple(getattr(r, f) for f in fields) for r in arr]


# -- strided views of the worker array -----------------------------------------------------
def _column(snap: Snapshot, field: str, fmt: str) -> memoryview:
    """One field of every worker record as a strided memoryview (no per-record Python work)."""
    size = struct.calcsize(fmt)
    off = getattr(WorkerRecord, field).offset
    assert off % size == 0 and W_SIZE % size == 0, "record layout no longer aligned for strided reads"
    mv = memoryview(snap.workers).cast("B")
    if not len(mv):
        return mv
    return mv.cast(fmt)[off // size::W_SIZE // size]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def escape_logitem(raw: bytes) -> str:
    """ap_escape_logitem: control bytes, bytes >= 0x7f, quotes and backslashes as escapes, so a
    request line from a client is printable ASCII before it is HTML-escaped."""
    out = []
    for b in raw:
        if b == 0x22:
            out.append('\\"')
        elif b == 0x5C:
            out.append("\\\\")
        elif b == 0x08:
            out.append("\\b")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x09:
            out.append("\\t")
        elif b == 0x0B:
            out.append("\\v")
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\x{b:02x}")
        else:
            out.append(chr(b))
    return "".join(out)


def _esc(raw: bytes) -> str:
    return html.escape(_text(raw), quote=True)


# -- the numbers ---------------------------------------------------------------------------
def summarize(snap: Snapshot, info: ServerInfo, now: float | None = None, detail: bool = True) -> dict[str, Any]:
    """Everything mod_status shows, as plain data, by Apache's counting rules.

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
    procs_out: list[dict[str, Any]] = []
    fcgi_out: list[dict[str, Any]] = []
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
                fcgi_out.append(_proc_row(i, pid, gen, mpm_id, kind, quiescing, threads, start_time, pss_kb, rss_kb,
                                          mem_time, mpm_gen, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0))
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
            procs_out.append(_proc_row(i, pid, gen, mpm_id, kind, quiescing, threads, start_time, pss_kb, rss_kb,
                                       mem_time, mpm_gen, n_busy, n_g, n_ready, connections, not_accepting,
                                       wait_io, writing, keep_alive, closing, suspended))
    sums = dict(processes=n_procs, stopping=n_stopping, connections=conns, busy=busy, graceful=graceful,
                idle=idle_any, wait_io=a_wait, writing=a_write,
                keep_alive=a_ka, closing=a_close, suspended=a_susp, pss_kb=pss_sum, rss_kb=rss_sum)

    letters = b"".join(shown).translate(sb._LETTER_TABLE).decode("latin-1")
    state_counts = {ch: letters.count(ch) for ch in STATE_LETTERS}

    uptime = max(0, int(now - g.restart_time)) & 0xFFFFFFFF
    load = _loadavg()
    out: dict[str, Any] = {
        "server_name": info.server_name, "server_version": info.server_version, "server_built": info.built,
        "mpm": info.mpm, "current_time": now, "restart_time": g.restart_time,
        "current_time_text": ht_time(now), "restart_time_text": ht_time(g.restart_time),
        "config_generation": config_gen, "mpm_generation": mpm_gen,
        "uptime": uptime, "uptime_text": show_time(uptime).strip(),
        "load": list(load),
        "extended_status": info.extended_status,
        "server_limit": info.server_limit, "threads_per_child": info.threads_per_child,
        "max_request_workers": info.max_request_workers,
        "busy": busy, "graceful": graceful, "idle": idle,
        "scoreboard": letters, "state_counts": state_counts,
        "processes": sums["processes"], "stopping": sums["stopping"],
        "conns_total": sums["connections"], "conns_async_wait_io": sums["wait_io"],
        "conns_async_writing": sums["writing"], "conns_async_keep_alive": sums["keep_alive"],
        "conns_async_closing": sums["closing"],
        "procs": procs_out, "proc_sum": sums, "fcgi_procs": fcgi_out,
        "totals": None,
    }
    if info.extended_status:
        out["totals"] = _totals(snap, uptime)
    return out


def _proc_row(slot, pid, gen, mpm_id, kind, quiescing, threads, start_time, pss_kb, rss_kb, mem_time, mpm_gen,
              n_busy, n_g, n_ready, connections, not_accepting, wait_io, writing, keep_alive, closing,
              suspended) -> dict[str, Any]:
    return {
        "slot": slot, "pid": pid, "generation": gen,
        "mpm": sb.MPM_NAMES[mpm_id] if mpm_id < len(sb.MPM_NAMES) else "?",
        "kind": "fcgi" if kind == KIND_FCGI else "child",
        "stopping": bool(quiescing), "old_gen": gen != mpm_gen,
        "threads": threads, "start_time": start_time,
        "connections": connections, "accepting": not not_accepting,
        "busy": n_busy, "graceful": n_g, "idle": n_ready,
        "wait_io": wait_io, "writing": writing, "keep_alive": keep_alive, "closing": closing,
        "suspended": suspended, "pss_kb": pss_kb, "rss_kb": rss_kb, "mem_time": mem_time,
    }


def _totals(snap: Snapshot, uptime: int) -> dict[str, Any]:
    """Apache sums records with accesses or a non-idle state; the others hold zero counters, so a
    sum over all records is the same and costs one strided pass per field."""
    if not len(snap.workers):
        accesses = nbytes = dur_us = 0
        cpu_u = cpu_s = 0.0
    else:
        accesses = sum(_column(snap, "access_count", "Q"))
        nbytes = sum(_column(snap, "bytes_served", "Q"))
        dur_us = sum(_column(snap, "duration_us", "Q"))
        cpu_u = sum(_column(snap, "cpu_user", "d"))
        cpu_s = sum(_column(snap, "cpu_system", "d"))
    g = snap.glob
    kbytes = nbytes >> 10
    dur_ms = dur_us // 1000
    tu, ts = _ticks(g.parent_cpu_user) + _ticks(cpu_u), _ticks(g.parent_cpu_system) + _ticks(cpu_s)
    tcu, tcs = _ticks(g.children_cpu_user), _ticks(g.children_cpu_system)
    cpu = tu + ts + tcu + tcs
    t = {
        "accesses": accesses, "bytes": nbytes, "kbytes": kbytes, "duration_ms": dur_ms,
        "cpu_user": _fdiv(tu, CLK_TCK), "cpu_system": _fdiv(ts, CLK_TCK),
        "cpu_children_user": _fdiv(tcu, CLK_TCK), "cpu_children_system": _fdiv(tcs, CLK_TCK),
        "cpu_ticks": cpu,
        "cpu_load": _fdiv(_fdiv(cpu, CLK_TCK), uptime) * 100.0 if cpu else None,
        "req_per_sec": _fdiv(accesses, uptime) if uptime > 0 else None,
        "bytes_per_sec": _fdiv(_f32(KBYTE * _f32(kbytes)), uptime) if uptime > 0 else None,
        "bytes_per_req": _fdiv(_f32(KBYTE * _f32(kbytes)), accesses) if accesses > 0 else None,
        "duration_per_req": _fdiv(dur_ms, accesses) if accesses > 0 else None,
    }
    return t


# -- ?auto -----------------------------------------------------------------------------------
def render_auto(snap: Snapshot, info: ServerInfo, now: float | None = None, summary: dict | None = None) -> str:
    s = summary or summarize(snap, info, now, detail=False)
    l1, l5, l15 = s["load"]
    lines = [
        info.server_name,
        f"ServerVersion: {info.server_version}",
        f"ServerMPM: {info.mpm}",
        f"Server Built: {info.built}",
        f"CurrentTime: {s['current_time_text']}",
        f"RestartTime: {s['restart_time_text']}",
        f"ParentServerConfigGeneration: {s['config_generation']}",
        f"ParentServerMPMGeneration: {s['mpm_generation']}",
        f"ServerUptimeSeconds: {s['uptime']}",
        f"ServerUptime:{show_time(s['uptime'])}",
        f"Load1: {apr_f(l1, 2)}",
        f"Load5: {apr_f(l5, 2)}",
        f"Load15: {apr_f(l15, 2)}",
    ]
    t = s["totals"]
    if t is not None:
        lines += [
            f"Total Accesses: {t['accesses']}",
            f"Total kBytes: {t['kbytes']}",
            f"Total Duration: {t['duration_ms']}",
            f"CPUUser: {apr_g(t['cpu_user'])}",
            f"CPUSystem: {apr_g(t['cpu_system'])}",
            f"CPUChildrenUser: {apr_g(t['cpu_children_user'])}",
            f"CPUChildrenSystem: {apr_g(t['cpu_children_system'])}",
        ]
        if t["cpu_load"] is not None:
            lines.append(f"CPULoad: {apr_g(t['cpu_load'])}")
        lines.append(f"Uptime: {s['uptime']}")
        if t["req_per_sec"] is not None:
            lines.append(f"ReqPerSec: {apr_g(t['req_per_sec'])}")
            lines.append(f"BytesPerSec: {apr_g(t['bytes_per_sec'])}")
        if t["bytes_per_req"] is not None:
            lines.append(f"BytesPerReq: {apr_g(t['bytes_per_req'])}")
            lines.append(f"DurationPerReq: {apr_g(t['duration_per_req'])}")
    lines += [f"BusyWorkers: {s['busy']}", f"GracefulWorkers: {s['graceful']}", f"IdleWorkers: {s['idle']}"]
    if info.mpm == "event":
        lines += [
            f"Processes: {s['processes']}",
            f"Stopping: {s['stopping']}",
            f"ConnsTotal: {s['conns_total']}",
            f"ConnsAsyncWaitIO: {s['conns_async_wait_io']}",
            f"ConnsAsyncWriting: {s['conns_async_writing']}",
            f"ConnsAsyncKeepAlive: {s['conns_async_keep_alive']}",
            f"ConnsAsyncClosing: {s['conns_async_closing']}",
        ]
    lines.append(f"Scoreboard: {s['scoreboard']}")
    return "\n".join(lines) + "\n"


# -- JSON ------------------------------------------------------------------------------------
def worker_rows(snap: Snapshot, info: ServerInfo, now: float | None = None, all_live: bool = True) -> list[dict]:
    """Per-worker rows. ``all_live``: every slot that is not DEAD or has served requests (the
    dashboard's view); otherwise Apache's table rule (served requests, or neither READY nor DEAD)."""
    now = snap.taken_at if now is None else now
    statuses = snap.statuses()
    if not statuses:
        return []
    acc = _column(snap, "access_count", "Q").tolist()
    tc = snap.thread_capacity
    skip = (DEAD,) if all_live else (DEAD, READY)
    rows = []
    for idx, st in enumerate(statuses):
        if st in skip and not acc[idx]:
            continue
        proc, thread = divmod(idx, tc)
        rows.append(_worker_row(snap, proc, thread, snap.workers[idx], now))
    return rows


def _worker_row(snap: Snapshot, proc: int, thread: int, w: WorkerRecord, now: float) -> dict[str, Any]:
    p = snap.procs[proc]
    pid, gen = (w.pid, w.generation) if w.pid else (p.pid, p.generation)
    req_ms = 0 if not w.start_time else max(0, int((w.stop_time - w.start_time) * 1000))
    last = w.last_used or w.state_since
    return {
        "proc": proc, "thread": thread, "pid": pid, "tid": w.tid, "generation": gen,
        "status": LETTERS.get(w.status, "?"), "state": STATE_NAMES.get(w.status, "?"),
        "conn_count": w.conn_count, "my_access_count": w.my_access_count, "access_count": w.access_count,
        "conn_bytes": w.conn_bytes, "my_bytes_served": w.my_bytes_served, "bytes_served": w.bytes_served,
        "cpu": w.cpu_user + w.cpu_system, "ss": max(0, int(now - last)) if last else 0,
        "req_ms": req_ms, "last_req_ms": w.last_req_us // 1000, "duration_ms": w.duration_us // 1000,
        "state_since": w.state_since, "tls": bool(w.tls),
        "client": _text(w.client), "protocol": _text(w.protocol), "vhost": _text(w.vhost),
        "request": _text(w.request), "pattern": _text(w.pattern),
    }


def render_json(snap: Snapshot, info: ServerInfo, now: float | None = None) -> dict[str, Any]:
    out = summarize(snap, info, now)
    out["workers"] = worker_rows(snap, info, now) if info.extended_status else []
    return out


# -- HTML ------------------------------------------------------------------------------------
_KEY = ("<p>Scoreboard Key:<br />\n"
        "\"<b><code>_</code></b>\" Waiting for Connection, \n"
        "\"<b><code>S</code></b>\" Starting up, \n"
        "\"<b><code>R</code></b>\" Reading Request,<br />\n"
        "\"<b><code>W</code></b>\" Sending Reply, \n"
        "\"<b><code>K</code></b>\" Keepalive (read), \n"
        "\"<b><code>D</code></b>\" DNS Lookup,<br />\n"
        "\"<b><code>C</code></b>\" Closing connection, \n"
        "\"<b><code>L</code></b>\" Logging, \n"
        "\"<b><code>G</code></b>\" Gracefully finishing,<br /> \n"
        "\"<b><code>I</code></b>\" Idle cleanup of worker, \n"
        "\"<b><code>.</code></b>\" Open slot with no current process<br />\n"
        "</p>\n")

_WORKER_LEGEND = (
    "</table>\n <hr /> <table>\n"
    " <tr><th>Srv</th><td>Child Server number - generation</td></tr>\n"
    " <tr><th>PID</th><td>OS process ID</td></tr>\n"
    " <tr><th>Acc</th><td>Number of accesses this connection / this child / this slot</td></tr>\n"
    " <tr><th>M</th><td>Mode of operation</td></tr>\n"
    "<tr><th>CPU</th><td>CPU usage, number of seconds</td></tr>\n"
    "<tr><th>SS</th><td>Seconds since beginning of most recent request</td></tr>\n"
    " <tr><th>Req</th><td>Milliseconds required to process most recent request</td></tr>\n"
    " <tr><th>Dur</th><td>Sum of milliseconds required to process all requests</td></tr>\n"
    " <tr><th>Conn</th><td>Kilobytes transferred this connection</td></tr>\n"
    " <tr><th>Child</th><td>Megabytes transferred this child</td></tr>\n"
    " <tr><th>Slot</th><td>Total megabytes transferred this slot</td></tr>\n"
    " <tr><th>Pattern</th><td>mpmlab addition: X-Traffic-Pattern of the request holding the slot</td></tr>\n"
    " </table>\n")

_NOTABLE_STATE = {READY: "Ready", STARTING: "Starting", BUSY_READ: "<b>Read</b>", BUSY_WRITE: "<b>Write</b>",
                  BUSY_KEEPALIVE: "<b>Keepalive</b>", BUSY_LOG: "<b>Logging</b>", BUSY_DNS: "<b>DNS lookup</b>",
                  CLOSING: "<b>Closing</b>", DEAD: "Dead", GRACEFUL: "Graceful", IDLE_KILL: "Dying"}
_TABLE_MODE = {READY: "_", STARTING: "<b>S</b>", BUSY_READ: "<b>R</b>", BUSY_WRITE: "<b>W</b>",
               BUSY_KEEPALIVE: "<b>K</b>", BUSY_LOG: "<b>L</b>", BUSY_DNS: "<b>D</b>", CLOSING: "<b>C</b>",
               DEAD: ".", GRACEFUL: "G", IDLE_KILL: "I"}


def render_html(snap: Snapshot, info: ServerInfo, now: float | None = None, refresh: int | None = None,
                notable: bool = False) -> str:
    now = snap.taken_at if now is None else now
    s = summarize(snap, info, now)
    e = html.escape
    out: list[str] = []
    w = out.append
    w('<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
      "<html><head>\n")
    if refresh:
        # the Refresh header does the work; the meta tag keeps it when the page is saved or proxied
        w(f'<meta http-equiv="refresh" content="{int(refresh)}">\n')
    w("<title>Apache Status</title>\n</head><body>\n")
    w(f"<h1>Apache Server Status for {e(info.server_name)} (via {e(info.local_ip or info.server_name)})</h1>\n\n")
    w(f"<dl><dt>Server Version: {e(info.server_version)}</dt>\n")
    w(f"<dt>Server MPM: {e(info.mpm)}</dt>\n")
    w(f"<dt>Server Built: {e(info.built)}\n</dt></dl><hr /><dl>\n")
    w(f"<dt>Current Time: {s['current_time_text']}</dt>\n")
    w(f"<dt>Restart Time: {s['restart_time_text']}</dt>\n")
    w(f"<dt>Parent Server Config. Generation: {s['config_generation']}</dt>\n")
    w(f"<dt>Parent Server MPM Generation: {s['mpm_generation']}</dt>\n")
    w(f"<dt>Server uptime: {show_time(s['uptime'])}</dt>\n")
    l1, l5, l15 = s["load"]
    w(f"<dt>Server load: {apr_f(l1, 2)} {apr_f(l5, 2)} {apr_f(l15, 2)}</dt>\n")
    t = s["totals"]
    if t is not None:
        w(f"<dt>Total accesses: {t['accesses']} - Total Traffic: {format_kbyte_out(t['kbytes'])}"
          f" - Total Duration: {t['duration_ms']}</dt>\n")
        w(f"<dt>CPU Usage: u{apr_g(t['cpu_user'])} s{apr_g(t['cpu_system'])} "
          f"cu{apr_g(t['cpu_children_user'])} cs{apr_g(t['cpu_children_system'])}")
        w(f" - {apr_g(t['cpu_load'], 3)}% CPU load</dt>\n" if t["cpu_load"] is not None else "</dt>\n")
        w("<dt>")
        if t["req_per_sec"] is not None:
            w(f"{apr_g(t['req_per_sec'], 3)} requests/sec - {format_byte_out(_c_ulong(t['bytes_per_sec']))}/second")
        if t["bytes_per_req"] is not None:
            if t["req_per_sec"] is not None:
                w(" - ")
            w(f"{format_byte_out(_c_ulong(t['bytes_per_req']))}/request - {apr_g(t['duration_per_req'])} ms/request")
        w("</dt>\n")
    w(f"<dt>{s['busy']} requests currently being processed, {s['graceful']} workers gracefully restarting, "
      f"{s['idle']} idle workers</dt>\n</dl>")

    if info.mpm == "event":
        w("\n\n<table rules=\"all\" cellpadding=\"1%\">\n"
          "<tr><th rowspan=\"2\">Slot</th><th rowspan=\"2\">PID</th><th rowspan=\"2\">Stopping</th>"
          "<th colspan=\"2\">Connections</th>\n"
          "<th colspan=\"3\">Threads</th><th colspan=\"4\">Async connections</th></tr>\n"
          "<tr><th>total</th><th>accepting</th><th>busy</th><th>graceful</th><th>idle</th><th>wait-io</th>"
          "<th>writing</th><th>keep-alive</th><th>closing</th></tr>\n")
        for p in s["procs"]:
            w(f"<tr><td>{p['slot']}</td><td>{p['pid']}</td>"
              f"<td>{'yes' if p['stopping'] else 'no'}{' (old gen)' if p['old_gen'] else ''}</td>"
              f"<td>{p['connections']}</td><td>{'yes' if p['accepting'] else 'no'}</td>"
              f"<td>{p['busy']}</td><td>{p['graceful']}</td><td>{p['idle']}</td>"
              f"<td>{p['wait_io']}</td><td>{p['writing']}</td><td>{p['keep_alive']}</td><td>{p['closing']}</td>"
              "</tr>\n")
        m = s["proc_sum"]
        w(f"<tr><td>Sum</td><td>{m['processes']}</td><td>{m['stopping']}</td><td>{m['connections']}</td>"
          f"<td>&nbsp;</td><td>{m['busy']}</td><td>{m['graceful']}</td><td>{m['idle']}</td>"
          f"<td>{m['wait_io']}</td><td>{m['writing']}</td><td>{m['keep_alive']}</td><td>{m['closing']}</td>"
          "</tr>\n</table>\n")

    letters = s["scoreboard"]
    w("<pre>")
    for i in range(0, len(letters), STATUS_MAXLINE):
        chunk = letters[i:i + STATUS_MAXLINE]
        w(chunk + ("\n" if len(chunk) == STATUS_MAXLINE else ""))
    w("</pre>\n")
    w(_KEY)

    if not info.extended_status:
        w("PID Key: <br />\n<pre>\n")
        k = 0
        for row in worker_rows(snap, info, now):
            if row["status"] == ".":
                continue
            w(f"   {row['pid']} in state: {row['status']} ")
            k += 1
            if k >= 3:
                w("\n")
                k = 0
            else:
                w(",")
        w("\n</pre>\n")
    _html_mpmlab_procs(w, s)
    if info.extended_status:
        _html_workers(w, snap, info, now, notable)
    else:
        w("<hr />To obtain a full report with current status information you need to use the "
          "<code>ExtendedStatus On</code> directive.\n")
    w("</body></html>\n")
    return "".join(out)


def _c_ulong(x: float) -> int:
    return int(x) if math.isfinite(x) else 0


def _html_mpmlab_procs(w: Callable[[str], None], s: dict) -> None:
    """mpmlab addition: every process with its generation and memory (Apache has no such table)."""
    rows = s["procs"] + s["fcgi_procs"]
    if not rows:
        return
    w("<h2>Processes (mpmlab addition)</h2>\n"
      "<table rules=\"all\" cellpadding=\"1%\" class=\"mpmlab\">\n"
      "<tr><th>Slot</th><th>PID</th><th>Kind</th><th>MPM</th><th>Generation</th><th>Stopping</th>"
      "<th>PSS (MB)</th><th>RSS (MB)</th></tr>\n")
    for p in rows:
        w(f"<tr><td>{p['slot']}</td><td>{p['pid']}</td><td>{p['kind']}</td><td>{p['mpm']}</td>"
          f"<td>{p['generation']}{' (old gen)' if p['old_gen'] else ''}</td>"
          f"<td>{'yes' if p['stopping'] else 'no'}</td>"
          f"<td>{p['pss_kb'] / 1024:.1f}</td><td>{p['rss_kb'] / 1024:.1f}</td></tr>\n")
    m = s["proc_sum"]
    w(f"<tr><td>Sum</td><td>{len(rows)}</td><td colspan=\"4\">&nbsp;</td>"
      f"<td>{(m['pss_kb'] + sum(p['pss_kb'] for p in s['fcgi_procs'])) / 1024:.1f}</td>"
      f"<td>{(m['rss_kb'] + sum(p['rss_kb'] for p in s['fcgi_procs'])) / 1024:.1f}</td></tr>\n</table>\n")


def _html_workers(w: Callable[[str], None], snap: Snapshot, info: ServerInfo, now: float, notable: bool) -> None:
    statuses = snap.statuses()
    acc = _column(snap, "access_count", "Q").tolist() if statuses else []
    tc = snap.thread_capacity
    if notable:
        w("<hr /><h2>Server Details</h2>\n\n")
    else:
        w("\n\n<table border=\"0\"><tr><th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n</th>"
          "<th>SS</th><th>Req</th><th>Dur</th><th>Conn</th><th>Child</th><th>Slot</th><th>Client</th>"
          "<th>Protocol</th><th>VHost</th><th>Request</th><th>Pattern</th></tr>\n\n")
    for idx, st in enumerate(statuses):
        if not acc[idx] and st in (READY, DEAD):
            continue
        proc, thread = divmod(idx, tc)
        r = snap.workers[idx]
        p = snap.procs[proc]
        pid, gen = (r.pid, r.generation) if r.pid else (p.pid, p.generation)
        req_ms = 0 if not r.start_time else max(0, int((r.stop_time - r.start_time) * 1000))
        last = r.last_used or r.state_since
        ss = max(0, int(now - last)) if last else 0
        dur = r.duration_us // 1000
        client, proto, vhost = _esc(r.client), _esc(r.protocol), _esc(r.vhost)
        request, pattern = html.escape(escape_logitem(r.request), quote=True), _esc(r.pattern)
        if notable:
            who = "-" if st == DEAD else str(pid)
            w(f"<b>Server {proc}-{gen}</b> ({who}): {r.conn_count}|{r.my_access_count}|{r.access_count} ["
              f"{_NOTABLE_STATE.get(st, '?STATE?')}] u{apr_g(_fdiv(_ticks(r.cpu_user), CLK_TCK))} "
              f"s{apr_g(_fdiv(_ticks(r.cpu_system), CLK_TCK))} cu0 cs0\n {ss} {req_ms} {dur}("
              f"{format_byte_out(r.conn_bytes)}|{format_byte_out(r.my_bytes_served)}|"
              f"{format_byte_out(r.bytes_served)})\n"
              f" <i>{client} {{{request}}}</i> <i>({proto})</i> <b>[{vhost}]</b>"
              f"{f' <i>pattern: {pattern}</i>' if pattern else ''}<br />\n\n")
        else:
            who = "-" if st == DEAD else str(pid)
            cpu = _fdiv(_ticks(r.cpu_user) + _ticks(r.cpu_system), CLK_TCK)
            w(f"<tr><td><b>{proc}-{gen}</b></td><td>{who}</td>"
              f"<td>{r.conn_count}/{r.my_access_count}/{r.access_count}</td><td>{_TABLE_MODE.get(st, '?')}\n"
              f"</td><td>{apr_f(cpu, 2)}</td><td>{ss}</td><td>{req_ms}</td><td>{dur}</td>"
              f"<td>{apr_f(_fdiv(r.conn_bytes, KBYTE), 1)}</td><td>{apr_f(_fdiv(r.my_bytes_served, MBYTE), 2)}</td>"
              f"<td>{apr_f(_fdiv(r.bytes_served, MBYTE), 2)}\n"
              f"</td><td>{client}</td><td>{proto}</td><td nowrap>{vhost}</td>"
              f"<td nowrap>{request}</td><td nowrap>{pattern}</td></tr>\n\n")
    if not notable:
        w(_WORKER_LEGEND)


# -- the handler -----------------------------------------------------------------------------
class StatusOptionError(ValueError):
    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass
class StatusOptions:
    auto: bool = False
    json: bool = False
    notable: bool = False
    refresh: int | None = None


def parse_options(query: str) -> StatusOptions:
    """``auto``, ``json``, ``notable``, ``refresh[=N]``, combined with ``&`` (or ``;``) as Apache
    combines them; unknown names are ignored, as Apache ignores them."""
    opts = StatusOptions()
    for part in query.replace(";", "&").split("&"):
        if not part:
            continue
        name, has_value, value = part.partition("=")
        name = unquote_plus(name).strip().lower()
        value = unquote_plus(value).strip()
        if name == "auto":
            opts.auto = True
        elif name == "json":
            opts.json = True
        elif name == "notable":
            opts.notable = True
        elif name == "refresh":
            if not has_value or value == "":
                opts.refresh = REFRESH_DEFAULT
                continue
            try:
                n = int(value)
            except ValueError:
                raise StatusOptionError("refresh", f"must be an integer number of seconds "
                                                   f"({REFRESH_MIN}..{REFRESH_MAX}), not {value[:40]!r}") from None
            if not REFRESH_MIN <= n <= REFRESH_MAX:
                raise StatusOptionError("refresh", f"{n} is out of range "
                                                   f"(allowed: {REFRESH_MIN}..{REFRESH_MAX} seconds)")
            opts.refresh = n
    return opts


def _wants_json(request) -> bool:
    accept = (request.header("accept") or "").lower()
    return "application/json" in accept and "text/html" not in accept


def handle_status_request(request, snapshot: Callable[[], Snapshot], info: Callable[[], ServerInfo]):
    """/server-status: GET and HEAD; ``?auto`` text, ``?json`` (or Accept: application/json),
    otherwise the HTML page; ``refresh`` adds a Refresh header to any of them."""
    from mpmcore.http.protocol import Response  # protocol imports nothing from here; keeps the module importable alone

    if request.method not in ("GET", "HEAD"):
        return Response(405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8")],
                        f"405 Method Not Allowed: {request.method[:20]} (server-status takes GET or HEAD)\n"
                        .encode("utf-8", "replace"))
    try:
        opts = parse_options(request.query or "")
    except StatusOptionError as err:
        return Response(400, [("Content-Type", "text/plain; charset=utf-8")],
                        f"400 Bad Request: {err}\n".encode("utf-8", "replace"))
    snap, inf = snapshot(), info()
    headers: list[tuple[str, str]] = []
    if opts.json or (not opts.auto and _wants_json(request)):
        body = json.dumps(render_json(snap, inf), separators=(",", ":")).encode()
        headers.append(("Content-Type", JSON_TYPE))
    elif opts.auto:
        body = render_auto(snap, inf).encode("latin-1", "replace")
        headers.append(("Content-Type", AUTO_TYPE))
    else:
        body = render_html(snap, inf, refresh=opts.refresh, notable=opts.notable).encode("latin-1", "xmlcharrefreplace")
        headers.append(("Content-Type", HTML_TYPE))
    if opts.refresh:
        headers.append(("Refresh", str(opts.refresh)))
    return Response(200, headers, body)
