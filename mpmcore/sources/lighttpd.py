"""lighttpd's mod_status (``status.status-url``), read into the typed model.

``LighttpdSource(url)`` asks ``URL?auto``, which lighttpd answers in the shape of Apache's
(lighttpd's src/mod_status.c, ``mod_status_handle_server_status_text``)::

    Total Accesses: 12
    Total kBytes: 3
    Uptime: 40
    BusyServers: 2
    IdleServers: 62
    Scoreboard: hk______________...

The words are Apache's, the meanings are not. lighttpd is one event-driven process: its
scoreboard has one letter per *connection slot* (server.max-connections of them), not per
worker; BusyServers is the number of open connections, IdleServers the free connection slots.
Its letters are its own request states (lighttpd's src/request.c, ``http_request_state_short``):

====  ==========  ================================  =============================
 lt    state       meaning                           shown in the grid as (Apache)
====  ==========  ================================  =============================
 .     connect     just accepted                     R  reading request
 q     req-start   waiting for the request line      R
 r     read        reading the request headers       R
 Q     req-end     request read, not yet handled     W  sending reply (busy)
 R     readpost    reading the request body          W  (Apache's handler reads a
                                                        body while its worker is W)
 h     handle-req  a handler works on it             W
 s     resp-start  the response begins               W
 W     write       writing the response              W
 S     resp-end    the response is written           W
 E     error       failed, about to close            C  closing
 C     close       closing                           C
 x     (unknown)   a state lighttpd does not name    W
 k     keep-alive  idle keep-alive connection        K  (held by no worker: what
                                                        event parks)
 _     (free)      a connection slot not in use      _
====  ==========  ================================  =============================

lighttpd's own letters and its count per letter stay in ``summary.lighttpd`` (and the frame's
``raw``); the grid and ``state_counts`` use the mapped Apache letters so that the same canvas,
charts and ``/metrics`` series read it. ``CANNOT_LIGHTTPD`` says, in words, what is lost.
"""

from __future__ import annotations

import dataclasses
import math

from mpmcore.model import (
    Capabilities,
    GridLayout,
    LighttpdCounts,
    ProcSum,
    SourceFrame,
    StateLetter,
    Summary,
    Totals,
    count_states,
)
from mpmcore.netloc import Target
from mpmcore.sources.client import SourceError, get
from mpmcore.sources.frames import HTTPSource
from mpmcore.status.aprfmt import show_time

#: lighttpd's state letters in its own order (``http_request_state_short``), then keep-alive
#: and free slot, with the state names its HTML page uses.
LIGHTTPD_STATES: tuple[tuple[str, str], ...] = (
    (".", "connect"), ("q", "req-start"), ("r", "read"), ("Q", "req-end"), ("R", "readpost"),
    ("h", "handle-req"), ("s", "resp-start"), ("W", "write"), ("S", "resp-end"), ("E", "error"),
    ("C", "close"), ("x", "unknown"), ("k", "keep-alive"), ("_", "free"),
)
#: lighttpd letter -> the Apache letter the grid shows (see the module's table).
TO_APACHE: dict[str, StateLetter] = {
    ".": "R", "q": "R", "r": "R",
    "Q": "W", "R": "W", "h": "W", "s": "W", "W": "W", "S": "W", "x": "W",
    "E": "C", "C": "C",
    "k": "K", "_": "_",
}
#: Cells per grid row: lighttpd's own HTML page prints its scoreboard 50 to a line.
ROW_WIDTH = 50

CANNOT_LIGHTTPD = (
    "lighttpd is one event-driven process: its scoreboard has a cell per connection slot "
    "(server.max-connections), not per worker; BusyServers counts open connections and IdleServers "
    "free connection slots (_), not idle workers",
    "lighttpd's states are finer than Apache's letters and are shown mapped: connect, req-start and "
    "read as R; req-end, readpost (a request body), handle-req, resp-start, write and resp-end as W; "
    "error and close as C; keep-alive as K (an idle keep-alive connection holds no worker, as event "
    "parks it); lighttpd's own letters are in the raw Scoreboard",
    "lighttpd's mod_status has no processes, PIDs, MPM, generation or worker table: the grid's rows "
    "are 50 connection slots each, not processes",
    "with server.max-worker above 1 every lighttpd process keeps its own counts: the page shows the "
    "one process that answered the poll",
    "lighttpd's ?auto has no memory, CPU, load or request-duration figures, and its HTML page's "
    "connection table is not read",
    "lighttpd adds finished requests and bytes to Total Accesses and Total kBytes once a second "
    "(its mod_status trigger): those two lag by up to a second",
    "each poll is itself a request: one connection (h) and one access are the poller's own",
)

_INT_KEYS = ("Total Accesses", "Total kBytes", "Uptime", "BusyServers", "IdleServers")


def parse_lighttpd_auto(text: str) -> LighttpdCounts | None:
    """lighttpd's ``?auto`` as counts, or None when ``text`` is not one (Apache's ``?auto`` has
    BusyWorkers, not BusyServers, so the two are told apart)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if any(k not in fields for k in (*_INT_KEYS, "Scoreboard")):
        return None
    try:
        n = {k: int(fields[k]) for k in _INT_KEYS}
    except ValueError:
        return None
    letters = fields["Scoreboard"]
    if any(ch not in TO_APACHE for ch in letters):
        return None
    return LighttpdCounts(
        accesses=n["Total Accesses"], kbytes=n["Total kBytes"], uptime=n["Uptime"],
        busy_servers=n["BusyServers"], idle_servers=n["IdleServers"], scoreboard=letters,
        states={ch: letters.count(ch) for ch, _ in LIGHTTPD_STATES})


def looks_like_lighttpd(text: str, server_header: str | None) -> bool:
    """The status page (HTML, without ``?auto``) is lighttpd's."""
    return "lighttpd" in (server_header or "").lower() or "Server-Status (lighttpd" in text


def lighttpd_frame(frame: SourceFrame, lt: LighttpdCounts, server_header: str | None) -> SourceFrame:
    """``frame`` (a poll's start) filled from lighttpd's ``?auto``."""
    letters = "".join(TO_APACHE[ch] for ch in lt.scoreboard)
    rows = math.ceil(len(letters) / ROW_WIDTH) if letters else 0
    summary = Summary(
        server_version=server_header, mpm="lighttpd", current_time=frame.t,
        restart_time=frame.t - lt.uptime, uptime=lt.uptime, uptime_text=show_time(lt.uptime).strip(),
        extended_status=True,
        busy=lt.busy_servers, idle=lt.idle_servers,
        scoreboard=letters, state_counts=count_states(letters),
        conns_total=lt.busy_servers,
        proc_sum=ProcSum(connections=lt.busy_servers, keep_alive=lt.states.get("k", 0)),
        totals=Totals(accesses=lt.accesses, kbytes=lt.kbytes, bytes=lt.kbytes * 1024),
        lighttpd=lt,
    )
    raw = {"Total Accesses": str(lt.accesses), "Total kBytes": str(lt.kbytes), "Uptime": str(lt.uptime),
           "BusyServers": str(lt.busy_servers), "IdleServers": str(lt.idle_servers), "Scoreboard": lt.scoreboard}
    return dataclasses.replace(
        frame, ok=True, summary=summary, letters=letters,
        layout=GridLayout(rows=rows, cols=ROW_WIDTH, threads_per_child=ROW_WIDTH, inferred=False),
        raw=raw, capabilities=Capabilities(scoreboard=True, workers=False, totals=True, connections=True),
        cannot_show=CANNOT_LIGHTTPD)


class LighttpdSource(HTTPSource):
    """lighttpd's mod_status at ``url`` (``http://127.0.0.1:8083/server-status``)."""

    kind = "lighttpd"

    def _poll(self, target: Target, frame: SourceFrame) -> SourceFrame:
        ans = get(target, self.path + "?auto", self.timeout)
        if ans.status != 200:
            raise SourceError("http-status", f"{self.url}?auto answered {ans.status}: not a lighttpd status page "
                                             "(is status.status-url set to this path, mod_status loaded?)")
        lt = parse_lighttpd_auto(ans.body.decode("latin-1"))
        if lt is None:
            raise SourceError("not-status-page", f"{self.url}?auto is not lighttpd's mod_status "
                                                 "(no BusyServers/IdleServers/Scoreboard lines)")
        return lighttpd_frame(frame, lt, ans.headers.get("server"))
