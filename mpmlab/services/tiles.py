"""The page's tiles (the figures under the grid), made from the typed model: every number and
every note a tile shows is computed here, so the templates only lay them out and the API can
return the same tiles (``/api/status``)."""

from __future__ import annotations

from mpmcore.model import SourceFrame, Summary, Tile


def kb(kb: int | float | None) -> str:
    """Kilobytes for people: "1.5 MB", "2.00 GB", an en dash for nothing."""
    if not kb:
        return "\u2013"  # an en dash
    mb = kb / 1024
    return f"{mb:.1f} MB" if mb < 1024 else f"{mb / 1024:.2f} GB"


def _graceful(s: Summary, id: str | None = None) -> Tile:
    """The G slots the grid shows; mod_status' GracefulWorkers (0 while old children finish: it
    skips stopping ones) is named beside it when it differs."""
    g = s.graceful_shown if s.graceful_shown is not None else s.graceful
    note = (f"G in the grid; GracefulWorkers {s.graceful}: mod_status skips stopping children"
            if g != s.graceful else "finishing (G)")
    return Tile("graceful", str(g), note, id)


def rate(rps: float | None) -> str:
    """Requests a second for people: "1,683/s", "4.5/s", an en dash when not known yet."""
    if rps is None:
        return "\u2013"
    return f"{rps:,.0f}/s" if rps >= 10 else f"{rps:.1f}/s"


def core_tiles(s: Summary, rps: float | None = None) -> tuple[Tile, ...]:
    """The embedded core's tiles; ``rps``: the request rate of the last chart second (the requests
    tile shows it, with the lifetime figures beside it)."""
    t = s.totals
    if s.mpm == "event":
        conns = Tile("connections", str(s.conns_total), "ConnsTotal", "tile-connections")
    else:
        # worker and prefork: a busy worker holds one; only event children count theirs (old ones after a switch)
        held = s.conns_total or 0
        note = "one per busy worker"
        if held:
            note += f" + {held} held by stopping event children"
        elif s.stopping:
            note += "; stopping children's not counted"
        conns = Tile("connections", str((s.busy or 0) + held), note, "tile-connections")
    return (
        Tile("busy", str(s.busy), f"of {s.max_request_workers} MaxRequestWorkers"),
        Tile("idle", str(s.idle), "ready (_)"),
        _graceful(s, "tile-graceful"),
        Tile("processes", str(s.processes), f"{s.stopping} stopping"),
        conns,
        Tile("parked keep-alive", str(s.conns_async_keep_alive),
             f"writing {s.conns_async_writing} · closing {s.conns_async_closing}"),
        Tile("requests", rate(rps),
             f"now; {(t.accesses if t else None) or 0:,} total, {(t.req_per_sec if t else None) or 0:.1f}/s since restart",
             "tile-requests"),
        Tile("memory", kb(s.proc_sum.pss_kb), "children PSS"),
    )


def source_tiles(f: SourceFrame | None) -> tuple[Tile, ...]:
    """An attached server's tiles: only the figures its page shows."""
    if f is None or not f.ok or f.summary is None:
        return ()
    s = f.summary
    nginx = f.kind == "nginx"
    lighttpd = f.kind == "lighttpd"
    out: list[Tile] = []
    if s.busy is not None:
        out.append(Tile("busy", str(s.busy), "BusyServers: open connections" if lighttpd else "BusyWorkers"))
    if s.idle is not None:
        out.append(Tile("idle", str(s.idle), "IdleServers: free connection slots (_)" if lighttpd else "ready (_)"))
    if s.graceful is not None:
        out.append(_graceful(s))
    if s.processes is not None:
        out.append(Tile("processes", str(s.processes),
                        f"{s.stopping} stopping" if s.stopping is not None else "from the scoreboard"))
    if s.conns_total is not None and not lighttpd:  # lighttpd's open connections are its busy tile
        out.append(Tile("connections", str(s.conns_total), "Active" if nginx else "ConnsTotal"))
    if s.lighttpd is not None:
        out.append(Tile("keep-alive", str(s.lighttpd.states.get("k", 0)), "idle keep-alive (k): no worker held"))
    if s.conns_async_keep_alive is not None:
        out.append(Tile("waiting" if nginx else "parked keep-alive", str(s.conns_async_keep_alive),
                        "idle keep-alive" if nginx else
                        f"writing {s.conns_async_writing} · closing {s.conns_async_closing}"))
    if f.connections is not None:
        out.append(Tile("reading / writing", f"{f.connections.reading} / {f.connections.writing}", "stub_status"))
    t = s.totals  # None when Apache's ExtendedStatus is Off: no Total Accesses line
    if t is not None and t.accesses is not None:
        out.append(Tile("requests", str(t.accesses), f"{t.req_per_sec:.1f}/s since restart"
                        if t.req_per_sec is not None else "since start"))
    if t is not None and t.kbytes is not None:
        out.append(Tile("traffic", kb(t.kbytes), "Total kBytes"))
    return tuple(out)
