"""mod_status' three outputs, rendered from the typed model: ``?auto``, the HTML page and ``?json``.

* ``?auto`` prints its keys in Apache 2.4.71's order, with Apache's number formats
  (``mpmcore.status.aprfmt``), as modules/generators/mod_status.c, status_handler() prints them.
* The HTML page has two mpmlab additions, labelled as such: a Pattern column (the
  X-Traffic-Pattern the slot holds) in the worker table, and a per-process memory table (PSS/RSS).
* ``?json`` is mpmlab's: the summary's fields under the keys it has always had, plus the workers.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, TypeVar

from mpmcore.model import ProcessRow, Summary, WorkerRow, to_jsonable
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
    READY,
    STARTING,
    Snapshot,
)
from mpmcore.status.aprfmt import (
    CLK_TCK,
    KBYTE,
    MBYTE,
    apr_f,
    apr_g,
    c_ulong,
    escape_logitem,
    fdiv,
    format_byte_out,
    format_kbyte_out,
    show_time,
    ticks,
)
from mpmcore.status.summary import ServerInfo, column, summarize, worker_rows

STATUS_MAXLINE = 64  # scoreboard letters per line on the HTML page, as Apache

#: The keys of ``?json``'s summary, in the order they have always been written.
JSON_KEYS = (
    "server_name", "server_version", "server_built", "mpm", "current_time", "restart_time",
    "current_time_text", "restart_time_text", "config_generation", "mpm_generation", "uptime",
    "uptime_text", "load", "extended_status", "server_limit", "threads_per_child", "max_request_workers",
    "busy", "graceful", "idle", "scoreboard", "state_counts", "processes", "stopping", "conns_total",
    "conns_async_wait_io", "conns_async_writing", "conns_async_keep_alive", "conns_async_closing",
    "procs", "proc_sum", "fcgi_procs", "totals",
)

T = TypeVar("T")


def _v(x: T | None) -> T:
    """A value the embedded core's summary always has (only attached sources leave fields out)."""
    assert x is not None, "a summary of the embedded core has every field"
    return x


def _esc(raw: bytes) -> str:
    return html.escape(raw.decode("utf-8", "replace"), quote=True)


# -- ?auto -----------------------------------------------------------------------------------
def render_auto(snap: Snapshot, info: ServerInfo, now: float | None = None, summary: Summary | None = None) -> str:
    s = summary or summarize(snap, info, now, detail=False)
    l1, l5, l15 = (_v(x) for x in s.load)
    uptime = _v(s.uptime)
    lines = [
        info.server_name,
        f"ServerVersion: {info.server_version}",
        f"ServerMPM: {info.mpm}",
        f"Server Built: {info.built}",
        f"CurrentTime: {s.current_time_text}",
        f"RestartTime: {s.restart_time_text}",
        f"ParentServerConfigGeneration: {s.config_generation}",
        f"ParentServerMPMGeneration: {s.mpm_generation}",
        f"ServerUptimeSeconds: {uptime}",
        f"ServerUptime:{show_time(uptime)}",
        f"Load1: {apr_f(l1, 2)}",
        f"Load5: {apr_f(l5, 2)}",
        f"Load15: {apr_f(l15, 2)}",
    ]
    t = s.totals
    if t is not None:
        lines += [
            f"Total Accesses: {t.accesses}",
            f"Total kBytes: {t.kbytes}",
            f"Total Duration: {t.duration_ms}",
            f"CPUUser: {apr_g(_v(t.cpu_user))}",
            f"CPUSystem: {apr_g(_v(t.cpu_system))}",
            f"CPUChildrenUser: {apr_g(_v(t.cpu_children_user))}",
            f"CPUChildrenSystem: {apr_g(_v(t.cpu_children_system))}",
        ]
        if t.cpu_load is not None:
            lines.append(f"CPULoad: {apr_g(t.cpu_load)}")
        lines.append(f"Uptime: {uptime}")
        if t.req_per_sec is not None:
            lines.append(f"ReqPerSec: {apr_g(t.req_per_sec)}")
            lines.append(f"BytesPerSec: {apr_g(_v(t.bytes_per_sec))}")
        if t.bytes_per_req is not None:
            lines.append(f"BytesPerReq: {apr_g(t.bytes_per_req)}")
            lines.append(f"DurationPerReq: {apr_g(_v(t.duration_per_req))}")
    lines += [f"BusyWorkers: {s.busy}", f"GracefulWorkers: {s.graceful}", f"IdleWorkers: {s.idle}"]
    if info.mpm == "event":
        lines += [
            f"Processes: {s.processes}",
            f"Stopping: {s.stopping}",
            f"ConnsTotal: {s.conns_total}",
            f"ConnsAsyncWaitIO: {s.conns_async_wait_io}",
            f"ConnsAsyncWriting: {s.conns_async_writing}",
            f"ConnsAsyncKeepAlive: {s.conns_async_keep_alive}",
            f"ConnsAsyncClosing: {s.conns_async_closing}",
        ]
    lines.append(f"Scoreboard: {s.scoreboard}")
    return "\n".join(lines) + "\n"


# -- JSON ------------------------------------------------------------------------------------
def status_json(s: Summary, workers: list[WorkerRow]) -> dict[str, Any]:
    """``?json``'s document: the summary under its wire keys, then the worker rows."""
    out: dict[str, Any] = {k: to_jsonable(getattr(s, k)) for k in JSON_KEYS}
    out["workers"] = to_jsonable(workers)
    return out


def render_json(snap: Snapshot, info: ServerInfo, now: float | None = None) -> dict[str, Any]:
    return status_json(summarize(snap, info, now), worker_rows(snap, now) if info.extended_status else [])


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
    w(f"<dt>Current Time: {s.current_time_text}</dt>\n")
    w(f"<dt>Restart Time: {s.restart_time_text}</dt>\n")
    w(f"<dt>Parent Server Config. Generation: {s.config_generation}</dt>\n")
    w(f"<dt>Parent Server MPM Generation: {s.mpm_generation}</dt>\n")
    w(f"<dt>Server uptime: {show_time(_v(s.uptime))}</dt>\n")
    l1, l5, l15 = (_v(x) for x in s.load)
    w(f"<dt>Server load: {apr_f(l1, 2)} {apr_f(l5, 2)} {apr_f(l15, 2)}</dt>\n")
    t = s.totals
    if t is not None:
        w(f"<dt>Total accesses: {t.accesses} - Total Traffic: {format_kbyte_out(_v(t.kbytes))}"
          f" - Total Duration: {t.duration_ms}</dt>\n")
        w(f"<dt>CPU Usage: u{apr_g(_v(t.cpu_user))} s{apr_g(_v(t.cpu_system))} "
          f"cu{apr_g(_v(t.cpu_children_user))} cs{apr_g(_v(t.cpu_children_system))}")
        w(f" - {apr_g(t.cpu_load, 3)}% CPU load</dt>\n" if t.cpu_load is not None else "</dt>\n")
        w("<dt>")
        if t.req_per_sec is not None:
            w(f"{apr_g(t.req_per_sec, 3)} requests/sec - {format_byte_out(c_ulong(_v(t.bytes_per_sec)))}/second")
        if t.bytes_per_req is not None:
            if t.req_per_sec is not None:
                w(" - ")
            w(f"{format_byte_out(c_ulong(t.bytes_per_req))}/request - {apr_g(_v(t.duration_per_req))} ms/request")
        w("</dt>\n")
    w(f"<dt>{s.busy} requests currently being processed, {s.graceful} workers gracefully restarting, "
      f"{s.idle} idle workers</dt>\n</dl>")

    if info.mpm == "event":
        w("\n\n<table rules=\"all\" cellpadding=\"1%\">\n"
          "<tr><th rowspan=\"2\">Slot</th><th rowspan=\"2\">PID</th><th rowspan=\"2\">Stopping</th>"
          "<th colspan=\"2\">Connections</th>\n"
          "<th colspan=\"3\">Threads</th><th colspan=\"4\">Async connections</th></tr>\n"
          "<tr><th>total</th><th>accepting</th><th>busy</th><th>graceful</th><th>idle</th><th>wait-io</th>"
          "<th>writing</th><th>keep-alive</th><th>closing</th></tr>\n")
        for p in s.procs:
            w(f"<tr><td>{p.slot}</td><td>{p.pid}</td>"
              f"<td>{'yes' if p.stopping else 'no'}{' (old gen)' if p.old_gen else ''}</td>"
              f"<td>{p.connections}</td><td>{'yes' if p.accepting else 'no'}</td>"
              f"<td>{p.busy}</td><td>{p.graceful}</td><td>{p.idle}</td>"
              f"<td>{p.wait_io}</td><td>{p.writing}</td><td>{p.keep_alive}</td><td>{p.closing}</td>"
              "</tr>\n")
        m = s.proc_sum
        w(f"<tr><td>Sum</td><td>{m.processes}</td><td>{m.stopping}</td><td>{m.connections}</td>"
          f"<td>&nbsp;</td><td>{m.busy}</td><td>{m.graceful}</td><td>{m.idle}</td>"
          f"<td>{m.wait_io}</td><td>{m.writing}</td><td>{m.keep_alive}</td><td>{m.closing}</td>"
          "</tr>\n</table>\n")

    letters = _v(s.scoreboard)
    w("<pre>")
    for i in range(0, len(letters), STATUS_MAXLINE):
        chunk = letters[i:i + STATUS_MAXLINE]
        w(chunk + ("\n" if len(chunk) == STATUS_MAXLINE else ""))
    w("</pre>\n")
    w(_KEY)

    if not info.extended_status:
        w("PID Key: <br />\n<pre>\n")
        k = 0
        for row in worker_rows(snap, now):
            if row.status == ".":
                continue
            w(f"   {row.pid} in state: {row.status} ")
            k += 1
            if k >= 3:
                w("\n")
                k = 0
            else:
                w(",")
        w("\n</pre>\n")
    _html_mpmlab_procs(w, s)
    if info.extended_status:
        _html_workers(w, snap, now, notable)
    else:
        w("<hr />To obtain a full report with current status information you need to use the "
          "<code>ExtendedStatus On</code> directive.\n")
    w("</body></html>\n")
    return "".join(out)


def _mb(kb: int | None) -> str:
    return f"{_v(kb) / 1024:.1f}"


def _html_mpmlab_procs(w: Callable[[str], None], s: Summary) -> None:
    """mpmlab addition: every process with its generation and memory (Apache has no such table)."""
    rows: tuple[ProcessRow, ...] = s.procs + s.fcgi_procs
    if not rows:
        return
    w("<h2>Processes (mpmlab addition)</h2>\n"
      "<table rules=\"all\" cellpadding=\"1%\" class=\"mpmlab\">\n"
      "<tr><th>Slot</th><th>PID</th><th>Kind</th><th>MPM</th><th>Generation</th><th>Stopping</th>"
      "<th>PSS (MB)</th><th>RSS (MB)</th></tr>\n")
    for p in rows:
        w(f"<tr><td>{p.slot}</td><td>{p.pid}</td><td>{p.kind}</td><td>{p.mpm}</td>"
          f"<td>{p.generation}{' (old gen)' if p.old_gen else ''}</td>"
          f"<td>{'yes' if p.stopping else 'no'}</td>"
          f"<td>{_mb(p.pss_kb)}</td><td>{_mb(p.rss_kb)}</td></tr>\n")
    m = s.proc_sum
    pss = _v(m.pss_kb) + sum(_v(p.pss_kb) for p in s.fcgi_procs)
    rss = _v(m.rss_kb) + sum(_v(p.rss_kb) for p in s.fcgi_procs)
    w(f"<tr><td>Sum</td><td>{len(rows)}</td><td colspan=\"4\">&nbsp;</td>"
      f"<td>{pss / 1024:.1f}</td><td>{rss / 1024:.1f}</td></tr>\n</table>\n")


def _html_workers(w: Callable[[str], None], snap: Snapshot, now: float, notable: bool) -> None:
    statuses = snap.statuses()
    acc = column(snap, "access_count", "Q").tolist() if statuses else []
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
        proc = idx // tc
        r = snap.workers[idx]
        p = snap.procs[proc]
        pid, gen = (r.pid, r.generation) if r.pid else (p.pid, p.generation)
        req_ms = 0 if not r.start_time else max(0, int((r.stop_time - r.start_time) * 1000))
        last = r.last_used or r.state_since
        ss = max(0, int(now - last)) if last else 0
        dur = r.duration_us // 1000
        client, proto, vhost = _esc(r.client), _esc(r.protocol), _esc(r.vhost)
        request, pattern = html.escape(escape_logitem(r.request), quote=True), _esc(r.pattern)
        who = "-" if st == DEAD else str(pid)
        if notable:
            w(f"<b>Server {proc}-{gen}</b> ({who}): {r.conn_count}|{r.my_access_count}|{r.access_count} ["
              f"{_NOTABLE_STATE.get(st, '?STATE?')}] u{apr_g(fdiv(ticks(r.cpu_user), CLK_TCK))} "
              f"s{apr_g(fdiv(ticks(r.cpu_system), CLK_TCK))} cu0 cs0\n {ss} {req_ms} {dur}("
              f"{format_byte_out(r.conn_bytes)}|{format_byte_out(r.my_bytes_served)}|"
              f"{format_byte_out(r.bytes_served)})\n"
              f" <i>{client} {{{request}}}</i> <i>({proto})</i> <b>[{vhost}]</b>"
              f"{f' <i>pattern: {pattern}</i>' if pattern else ''}<br />\n\n")
        else:
            cpu = fdiv(ticks(r.cpu_user) + ticks(r.cpu_system), CLK_TCK)
            w(f"<tr><td><b>{proc}-{gen}</b></td><td>{who}</td>"
              f"<td>{r.conn_count}/{r.my_access_count}/{r.access_count}</td><td>{_TABLE_MODE.get(st, '?')}\n"
              f"</td><td>{apr_f(cpu, 2)}</td><td>{ss}</td><td>{req_ms}</td><td>{dur}</td>"
              f"<td>{apr_f(fdiv(r.conn_bytes, KBYTE), 1)}</td><td>{apr_f(fdiv(r.my_bytes_served, MBYTE), 2)}</td>"
              f"<td>{apr_f(fdiv(r.bytes_served, MBYTE), 2)}\n"
              f"</td><td>{client}</td><td>{proto}</td><td nowrap>{vhost}</td>"
              f"<td nowrap>{request}</td><td nowrap>{pattern}</td></tr>\n\n")
    if not notable:
        w(_WORKER_LEGEND)
