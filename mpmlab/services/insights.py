""""What is happening": the scoreboard read in words, by rules, from a status summary.

Each rule looks at the numbers mod_status shows (a ``mpmcore.model.Summary``, of the embedded core or of
an attached Apache) and, when it
applies, says what the server is doing and why, in the terms of Apache's documentation. The first
rule that applies gives the headline; the others that apply follow as details.
"""

from __future__ import annotations

from typing import Any

from mpmcore.model import Insight, Level, LighttpdCounts, NginxCounts, Summary

OK: Level = "ok"
INFO: Level = "info"
WARN: Level = "warn"
CRIT: Level = "crit"

__all__ = ["CRIT", "INFO", "OK", "WARN", "Insight", "describe", "describe_lighttpd", "describe_nginx"]


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def describe_nginx(c: NginxCounts) -> Insight:
    """nginx has no scoreboard: its stub_status counts, said as they are, and nothing inferred."""
    return Insight(INFO, f"{_plural(c.active, 'connection')}: {c.reading} reading a request, "
                         f"{c.writing} writing a reply, {c.waiting} idle keep-alive (waiting)",
                   ("nginx has no scoreboard: the words the dashboard reads from Apache's numbers do not "
                    "apply; these are stub_status' own counts",))


def describe_lighttpd(c: LighttpdCounts) -> Insight:
    """lighttpd's connection slots in its own states' words; nothing inferred about workers (it has none)."""
    st = c.states
    reading = st.get(".", 0) + st.get("q", 0) + st.get("r", 0)
    body = st.get("R", 0)
    replying = sum(st.get(x, 0) for x in "QhsWSx")
    closing = st.get("E", 0) + st.get("C", 0)
    parts = [f"{reading} reading a request", f"{body} reading a request body", f"{replying} handling or writing a reply",
             f"{st.get('k', 0)} idle keep-alive", f"{closing} closing"]
    level = WARN if c.idle_servers == 0 else INFO
    head = f"{_plural(c.busy_servers, 'open connection')} of {c.busy_servers + c.idle_servers} slots: " + ", ".join(parts)
    details = ["lighttpd is one event-driven process: a slow client holds a connection slot, never a worker; "
               "these are its own states' counts (the grid shows them as Apache's letters)"]
    if level == WARN:
        details.insert(0, "no free connection slot: lighttpd accepts no new connection until one closes "
                          "(server.max-connections)")
    return Insight(level, head, tuple(details))


def describe(s: Summary, config: dict[str, Any] | None = None, rps: float | None = None) -> Insight:
    """``s``: a status summary; ``config``: the master's current directives (or None); ``rps``: the
    requests served per second over the last second (None: not known yet). The board is one
    instant: at 2,000 short requests a second most slots are idle at any instant although the server
    is far from idle, so the words read the rate too."""
    d: dict[str, Any] = (config or {}).get("directives", {}) if config else {}
    mpm = s.mpm
    k, r, w, c, g = (s.count(x) for x in ("K", "R", "W", "C", "G"))
    starting = s.count("S")
    busy, idle, graceful = s.busy or 0, s.idle or 0, s.graceful or 0
    mrw = s.max_request_workers or 0  # None for an attached Apache: mod_status does not print it
    of_mrw = f" of MaxRequestWorkers {mrw}" if mrw else ""
    live = s.children
    unit = "processes" if mpm == "prefork" else "threads"
    kat = d.get("KeepAliveTimeout")
    found: list[tuple[Level, str]] = []

    def add(level: Level, text: str) -> None:
        found.append((level, text))

    if not live:
        return Insight(WARN, "no child process is running: the server is starting, stopping, or was stopped")

    old = [p for p in live if p.old_gen or p.stopping]
    # Each MPM writes G its own way (docs/graceful-restart.md): worker's busy old threads keep R/W/K,
    # so an old generation is a restart in progress even with no G on the board.
    if old and (g or graceful or any(p.old_gen for p in old)):
        new_gen = s.mpm_generation
        old_mpms = sorted({p.mpm for p in old})
        switch = f" (switch from {', '.join(old_mpms)} to {mpm})" if old_mpms != [mpm] else ""
        where = f"in {_plural(g, 'G slot')}" if g else "in the slots they hold (worker keeps their R/W/K)"
        verb = "finishes its requests" if len(old) == 1 else "finish their requests"
        text = (f"graceful restart in progress{switch}: {_plural(len(old), 'old child', 'old children')} "
                f"{verb} {where} while generation {new_gen} takes new clients")
        if "prefork" in old_mpms:
            # the one measured, deliberate difference from Apache here (docs/apache-differences.md)
            text += ("; requests still being read are answered (Apache's prefork would answer them 400 "
                     "when the restart signal interrupts its read)")
        add(INFO, text)

    saturated = bool(mrw) and idle == 0 and busy >= mrw
    if saturated or (idle == 0 and busy and not starting):
        total = busy
        if k >= 0.5 * total and mpm != "event":
            add(CRIT, f"all {total} {unit} hold idle keep-alive connections (K): new clients wait in the listen "
                      f"backlog until one times out (KeepAliveTimeout {kat if kat is not None else 5}s); "
                      "event would park them in its listener")
        elif r >= 0.5 * total:
            add(CRIT, f"all {total} {unit} are stuck reading requests (R) that never finish: a slowloris-like "
                      "client; every MPM reads requests in a worker, so event does not help here; "
                      "mod_reqtimeout (RequestReadTimeout) is Apache's defence")
        elif w >= 0.5 * total:
            add(CRIT, f"all {total} {unit} are busy sending replies (W): the server is at MaxRequestWorkers"
                      + (f" ({mrw})" if mrw else "") + "; new connections queue in the listen backlog")
        else:
            add(CRIT, f"no idle {unit[:-1] if mpm != 'prefork' else 'process'} left ({busy} busy{of_mrw}): "
                      "new connections wait in the listen backlog")
    elif mrw and busy >= 0.8 * mrw:
        add(WARN, f"{busy} of {mrw} {unit} busy ({100 * busy // mrw}% of MaxRequestWorkers): close to saturation")

    if mpm == "event":
        current = [p for p in live if not p.stopping]
        # None: not known (an attached Apache whose process table could not be read), not "no"
        not_acc = [p for p in current if p.accepting is False]
        if not_acc and len(not_acc) == len(current) and not saturated:
            limit = d.get("ServerLimit")
            why = ""
            if limit:  # known for the embedded core; mod_status does not print it
                why = (f"; their idle threads are not spare, so the master starts more children "
                       f"({len(live)} of ServerLimit {limit})" if len(live) < limit else
                       f"; ServerLimit {limit} reached: no more children can start")
            add(CRIT, f"every child stopped accepting (not_accepting): each holds ThreadsPerChild + idle workers x "
                      f"AsyncRequestWorkerFactor connections, so new clients wait in the listen backlog although "
                      f"{idle} workers are idle" + why)
        elif not_acc:
            add(WARN, f"{_plural(len(not_acc), 'child', 'children')} stopped accepting new connections "
                      "(not_accepting): each holds more connections than ThreadsPerChild + idle workers x "
                      "AsyncRequestWorkerFactor")
        ka = s.conns_async_keep_alive or 0
        if ka:
            add(OK, f"{_plural(ka, 'keep-alive connection')} parked in the listener (ConnsAsyncKeepAlive): "
                    "they cost no worker thread until the next request arrives")
        wr = s.conns_async_writing or 0
        if wr:
            add(INFO, f"{_plural(wr, 'connection')} in write completion: the listener finishes sending "
                      "replies the client reads slowly")
    elif k and not saturated and k >= max(1, busy // 2):
        add(INFO, f"{k} of {busy} busy {unit} only wait for the next request on a keep-alive connection (K); "
                  f"under {mpm} an idle keep-alive client holds a {unit[:-1] if mpm != 'prefork' else 'process'}")

    if r and not saturated and r >= max(2, busy // 2):
        add(WARN, f"{r} {unit} are reading requests (R): slow or incomplete clients hold them")
    if c and c >= max(2, busy // 2):
        add(INFO, f"{c} {unit} in lingering close (C)")
    if starting:
        add(INFO, f"{_plural(starting, 'slot')} starting (S): maintenance is spawning children")

    if rps is not None and rps >= 1:
        # Little's law: slots busy on average = rate x time each request holds one; a board that shows
        # few busy at this rate says each request is short, not that the server has nothing to do
        add(OK, f"serving {rps:,.0f} requests/s with {busy} busy and {idle} idle {unit} at this instant: "
                f"each request holds a {unit[:-1] if mpm != 'prefork' else 'process'} only while it is in "
                "flight, so short requests leave most slots idle between them")
    elif not found:
        if busy == 0:
            add(OK, f"idle: {idle} {unit} wait for connections (_), nothing to do")
        else:
            add(OK, f"serving: {busy} busy, {idle} idle {unit}{of_mrw}")
    order = {CRIT: 0, WARN: 1, INFO: 2, OK: 3}
    found.sort(key=lambda x: order[x[0]])
    level, headline = found[0]
    return Insight(level, headline, tuple(t for _, t in found[1:]))
