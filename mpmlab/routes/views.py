"""Small helpers shared by the JSON API and the htmx fragments: form contexts, slot detail, filters."""

from __future__ import annotations

import time
from typing import Any

from fastapi.templating import Jinja2Templates

from mpmcore import scoreboard as sb
from mpmcore.directives import DIRECTIVES, MPMS, DirectiveError, catalogue
from mpmcore.model import NO_REQUEST_LETTERS, AttachedSlotDetail, SlotDetail, SourceFrame
from mpmlab.services.sampler import Sampler
from mpmlab.services.tiles import kb

STATE_CSS = {".": "dead", "S": "starting", "_": "ready", "R": "read", "W": "write", "K": "keepalive",
             "L": "log", "D": "dns", "C": "closing", "G": "graceful", "I": "idle-kill"}
LEGEND = [(sb.LETTERS[i], sb.STATE_NAMES[i], STATE_CSS[sb.LETTERS[i]]) for i in
          (sb.READY, sb.STARTING, sb.BUSY_READ, sb.BUSY_WRITE, sb.BUSY_KEEPALIVE, sb.BUSY_LOG, sb.BUSY_DNS,
           sb.CLOSING, sb.GRACEFUL, sb.IDLE_KILL, sb.DEAD)]


def num_text(v: Any) -> str:
    if isinstance(v, bool):
        return "On" if v else "Off"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _loglevel(line: str) -> str:
    """CSS class of an error-log line by its [module:level] field."""
    try:
        level = line.split("] [", 2)[1].split(":", 1)[1].split("]", 1)[0]
    except IndexError:
        return ""
    return {"emerg": "l-crit", "alert": "l-crit", "crit": "l-crit", "error": "l-error", "warn": "l-warn",
            "notice": "l-notice"}.get(level, "l-info")


def _fig(v: Any) -> str:
    """A figure of the compare table: an en dash for none, 3 significant digits at most."""
    if v is None:
        return "\u2013"
    if isinstance(v, (bool, int)):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 1:
            return str(int(v))
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _mb(v: float | int | None) -> str:
    return "\u2013" if v is None else f"{v / 1048576:.1f} MB"


def _kib(v: float | int | None) -> str:
    return "\u2013" if v is None else f"{v / 1024:.1f} KiB"


def _when(v: float | None) -> str:
    return "\u2013" if v is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))


def setup_templates(t: Jinja2Templates) -> None:
    from mpmlab.services.traffic import target_key
    t.env.filters["tkey"] = target_key
    t.env.filters["loglevel"] = _loglevel
    t.env.filters["kb"] = kb
    t.env.filters["num"] = num_text
    t.env.filters.update(fig=_fig, mb=_mb, kib=_kib, when=_when)  # the experiments pages
    t.env.globals.update(legend=LEGEND, state_css=STATE_CSS, mpms=MPMS)


def current_config(sampler: Sampler) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(mpm, current directive values, explicitly set values) from the master's last status."""
    st = sampler.core_state or {}
    cfg = st.get("config") or {}
    return cfg.get("mpm") or st.get("mpm") or "event", cfg.get("directives") or {}, cfg.get("explicit") or {}


def directive_rows(mpm: str, values: dict[str, Any], form: dict[str, str] | None = None,
                   errors: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for d in catalogue(mpm):
        name = d["name"]
        cur = values.get(name, d["default"])
        rows.append(dict(d, value=(form or {}).get(name, num_text(cur)), current=num_text(cur),
                         default_text=num_text(d["default"]), changed=cur != d["default"],
                         error=(errors or {}).get(name)))
    return rows


def changed_settings(mpm: str, values: dict[str, Any], form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields whose value differs from the running configuration, and per-field errors
    (each field checked on its own, so every bad field is shown at once)."""
    settings: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, raw in form.items():
        d = DIRECTIVES.get(name)
        if d is None or not d.applies_to(mpm):
            continue
        raw = str(raw).strip()
        try:
            v = d.parse(raw)
        except DirectiveError as e:
            errors[name] = e.message
            continue
        if v != values.get(name, d.defaults[mpm]):
            settings[name] = raw
    return settings, errors


def slot_detail(sampler: Sampler, proc: int, thread: int) -> SlotDetail | None:
    """One worker slot, read under its sequence counter (not a whole snapshot)."""
    r = sampler.reader
    if r is None:
        return None
    try:
        w, p = r.read_slot(proc, thread)
    except IndexError:
        return None
    now = time.time()
    pid, gen = (w.pid, w.generation) if w.pid else (p.pid, p.generation)
    busy = w.status not in (sb.DEAD, sb.READY, sb.STARTING)

    def text(raw: bytes) -> str:
        return raw.decode("utf-8", "replace")

    return SlotDetail(
        proc=proc, thread=thread, pid=pid, tid=w.tid, generation=gen,
        mpm=sb.MPM_NAMES[p.mpm] if p.pid and p.mpm < len(sb.MPM_NAMES) else None,
        status=sb.LETTERS.get(w.status, "?"), state=sb.STATE_NAMES.get(w.status, "?"),
        seconds_in_state=round(now - w.state_since, 1) if w.state_since else None,
        client=text(w.client) if busy else "", request=text(w.request) if busy else "",
        # the X-Traffic-Pattern the record holds (the tooltip's "pattern" line)
        pattern=text(w.pattern) if busy else "", vhost=text(w.vhost), protocol=text(w.protocol),
        tls=bool(w.tls), conn_count=w.conn_count, access_count=w.access_count,
        my_access_count=w.my_access_count, bytes_served=w.bytes_served,
        last_request_ms=w.last_req_us // 1000, last_request=text(w.request),
        process_stopping=bool(p.quiescing),
    )


def attached_slot_detail(frame: SourceFrame, proc: int, thread: int) -> AttachedSlotDetail | None:
    """A grid cell of an attached Apache: its letter, and its ExtendedStatus row when
    ``mpmcore.sources.apache.assign_threads`` could place it (``detail`` says which)."""
    layout, letters = frame.layout, frame.letters
    if layout is None or letters is None or not (0 <= proc < layout.rows and 0 <= thread < layout.cols):
        return None
    idx = proc * layout.cols + thread
    if idx >= len(letters):
        return None
    w = frame.worker_at(proc, thread)
    if w is None:
        return AttachedSlotDetail(proc=proc, thread=thread, status=letters[idx])
    letter = w.status or letters[idx]  # the row's own letter: read with it, from the HTML page
    busy = letter not in NO_REQUEST_LETTERS
    return AttachedSlotDetail(
        proc=proc, thread=thread, status=letter, detail=True, pid=w.pid, generation=w.generation,
        # mod_status' SS: seconds since the slot's most recent request began
        since_request_s=w.ss,
        client=w.client if busy else "", request=w.request if busy else "",
        vhost=w.vhost, protocol=w.protocol,
        conn_count=w.conn_count, access_count=w.access_count, my_access_count=w.my_access_count,
        last_request="" if busy else (w.request or ""), last_request_ms=w.req_ms,
    )
