"""The JSON API: everything the page does, under /api (OpenAPI at /docs).

Reads come from the sampler's latest summary (never a new snapshot per request, except one slot
for /api/slots). Control calls go through ``control_guard`` (Origin and token) and the master's
control socket; a refused directive comes back as 422 naming it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from app.main import Dashboard
from app.routes.views import attached_slot_detail, current_config, slot_detail
from app.security import control_guard
from app.services.traffic import PRESETS, pattern_catalogue, target_key
from app.settings import CORE_SOURCE
from mpmcore.directives import DIRECTIVES, MPMS, canonical, catalogue, parse_httpd_conf

router = APIRouter(prefix="/api", tags=["api"])


def get_dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


#: The dependencies every route takes (also app.routes.ui's): the Dashboard, and for a control call the
#: Origin and token check.
Dash = Depends(get_dashboard)
Control = Depends(control_guard)


# -- models ---------------------------------------------------------------------------------------
class SwitchBody(BaseModel):
    mpm: Literal["prefork", "worker", "event"]
    settings: dict[str, str] = Field(default_factory=dict, description="directives to set with the switch")


class DirectivesBody(BaseModel):
    settings: dict[str, str | int | float | bool] = Field(description="Apache directive name -> value")
    restart: Literal["graceful", "hard"] = "graceful"


class CheckBody(BaseModel):
    mpm: Literal["prefork", "worker", "event"] | None = None
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ConfBody(BaseModel):
    text: str = Field(description="an httpd.conf excerpt: <IfModule mpm_event_module> blocks and top-level directives")
    apply: bool = True
    restart: Literal["graceful", "hard"] = "graceful"


class RestartBody(BaseModel):
    graceful: bool = True


class TrafficStart(BaseModel):
    pattern: str
    params: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, description="where to send it: 'core' (the default) or the name of an "
                                                 "attached server on loopback (see /api/sources)")


class TrafficUpdate(BaseModel):
    params: dict[str, Any]


def _need_summary(d: Dashboard) -> dict[str, Any]:
    s = d.sampler.summary
    if s is None:
        raise HTTPException(503, "no scoreboard yet: the embedded server is not running")
    return s


def _settings_str(settings: dict[str, Any]) -> dict[str, str]:
    return {k: ("On" if v is True else "Off" if v is False else str(v)) for k, v in settings.items()}


async def _after_change(d: Dashboard, answer: dict[str, Any]) -> dict[str, Any]:
    await d.sampler.refresh_core_state()
    return {"ok": True, "generation": answer.get("generation"), "mpm": answer.get("mpm"),
            "warnings": answer.get("warnings", []), "config": answer.get("config")}


# -- reading ----------------------------------------------------------------------------------------
@router.get("/status", summary="The server now: core, counts by state, processes, what is happening")
async def status(d: Dashboard = Dash) -> dict[str, Any]:
    s = _need_summary(d)
    core = d.sampler.core_state or {}
    return {"core": {k: core.get(k) for k in ("pid", "listen", "mpm", "generation", "config", "capacity")},
            "dashboard_pids": {"core": d.core.pid if d.core else None, "traffic_runner": d.traffic.pid},
            "insight": d.sampler.insight, "summary": s}


@router.get("/scoreboard", summary="Apache's scoreboard letters and counts by state")
async def scoreboard(d: Dashboard = Dash) -> dict[str, Any]:
    s = _need_summary(d)
    return {"mpm": s["mpm"], "generation": s["mpm_generation"], "scoreboard": s["scoreboard"],
            "state_counts": s["state_counts"], "busy": s["busy"], "idle": s["idle"], "graceful": s["graceful"],
            "max_request_workers": s["max_request_workers"], "threads_per_child": s["threads_per_child"]}


@router.get("/processes", summary="Per child process: pid, generation, threads by state, connections, PSS")
async def processes(d: Dashboard = Dash) -> dict[str, Any]:
    s = _need_summary(d)
    return {"processes": s["procs"], "sum": s["proc_sum"], "fcgi": s["fcgi_procs"]}


@router.get("/slots/{proc}/{thread}", summary="One worker slot: pid, generation, request, client, time in state")
async def slot(proc: int, thread: int, d: Dashboard = Dash) -> dict[str, Any]:
    row = slot_detail(d.sampler, proc, thread)
    if row is None:
        raise HTTPException(404, f"no slot {proc}/{thread} in the scoreboard")
    return row


@router.get("/insight", summary='"What is happening", in words')
async def insight(d: Dashboard = Dash) -> dict[str, Any]:
    _need_summary(d)
    return d.sampler.insight


@router.get("/history", summary="Chart points, one a second (requests/s, workers, connections, latency, memory)")
async def history(seconds: float | None = Query(None, gt=0, le=3600), d: Dashboard = Dash) -> dict[str, Any]:
    return {"interval": 1.0, "points": d.sampler.history.since(seconds)}


@router.get("/log", summary="The master's error log, last lines")
async def error_log(lines: int = Query(200, ge=1, le=2000), d: Dashboard = Dash) -> dict[str, Any]:
    return {"path": d.control.error_log, "lines": list(d.sampler.log_lines)[-lines:]}


@router.get("/dashboard", summary="The dashboard itself: sampler cost, clients, dropped frames, pids")
async def dashboard_stats(d: Dashboard = Dash) -> dict[str, Any]:
    return {"sampler": d.sampler.stats(), "grid_hz": d.settings.grid_hz, "summary_hz": d.settings.summary_hz,
            "core_pid": d.core.pid if d.core else None, "traffic_runner_pid": d.traffic.pid,
            "core_listen": d.settings.core_listen, "attached": d.sources.stats()}


# -- sources: the embedded core and the attached servers -----------------------------------------------
def _core_entry(d: Dashboard) -> dict[str, Any]:
    return {"name": CORE_SOURCE, "key": CORE_SOURCE, "kind": "mpmlab", "url": d.settings.core_url,
            "embedded": True, "traffic_target": d.settings.core_url, "insight": d.sampler.insight,
            "frame": d.sampler.frame.to_dict()}


@router.get("/sources", summary="Every source watched (embedded core, attached Apache/nginx) with its latest frame")
async def sources(d: Dashboard = Dash) -> dict[str, Any]:
    out = [_core_entry(d)] if d.settings.watch_core else []
    out += [s.to_dict() for s in d.sources.sources]
    return {"interval": d.settings.attach_interval, "allow_remote_attach": d.settings.allow_remote_attach,
            "sources": out}


def _source(d: Dashboard, name: str):
    src = d.sources.get(name)
    if src is None:
        known = ([CORE_SOURCE] if d.settings.watch_core else []) + [s.name for s in d.sources.sources]
        raise HTTPException(404, f"no source {name!r}; known: {', '.join(known) or 'none'}")
    return src


@router.get("/sources/{name}", summary="One source: its latest frame (summary, letters, layout, workers, "
                                       "what it cannot show)")
async def source(name: str, d: Dashboard = Dash) -> dict[str, Any]:
    if name == CORE_SOURCE and d.settings.watch_core:
        return _core_entry(d)
    return _source(d, name).to_dict()


@router.get("/sources/{name}/slots/{proc}/{thread}",
            summary="One grid cell of a source: for an attached Apache, its ExtendedStatus row when its place is certain")
async def source_slot(name: str, proc: int, thread: int, d: Dashboard = Dash) -> dict[str, Any]:
    if name == CORE_SOURCE and d.settings.watch_core:
        return await slot(proc, thread, d)
    src = _source(d, name)
    frame = src.last_ok
    if frame is None or frame.letters is None:
        raise HTTPException(404, f"source {name!r} has no scoreboard to point into")
    row = attached_slot_detail(frame, proc, thread)
    if row is None:
        raise HTTPException(404, f"no slot {proc}/{thread} in {name!r}'s scoreboard")
    return row


@router.get("/sources/{name}/history", summary="One source's chart points, one a second")
async def source_history(name: str, seconds: float | None = Query(None, gt=0, le=3600),
                         d: Dashboard = Dash) -> dict[str, Any]:
    if name == CORE_SOURCE and d.settings.watch_core:
        return {"interval": 1.0, "points": d.sampler.history.since(seconds)}
    return {"interval": 1.0, "points": _source(d, name).history.since(seconds)}


# -- MPM and directives --------------------------------------------------------------------------------
@router.get("/mpm", summary="The running MPM and generation")
async def get_mpm(d: Dashboard = Dash) -> dict[str, Any]:
    st = await d.sampler.refresh_core_state() or {}
    return {"mpm": st.get("mpm"), "generation": st.get("generation"), "available": list(MPMS)}


@router.post("/mpm", summary="Switch MPM live (a graceful restart into a new generation)", dependencies=[Control])
async def switch_mpm(body: SwitchBody, d: Dashboard = Dash) -> dict[str, Any]:
    return await _after_change(d, await d.control.switch(body.mpm, body.settings or None))


@router.get("/directives", summary="Directives of an MPM with Apache's names, defaults, ranges and current values")
async def get_directives(mpm: Literal["prefork", "worker", "event"] | None = None, d: Dashboard = Dash) -> dict[str, Any]:
    cur_mpm, values, explicit = current_config(d.sampler)
    mpm = mpm or cur_mpm
    rows = catalogue(mpm)
    for r in rows:
        r["value"] = values.get(r["name"]) if mpm == cur_mpm else r["default"]
    return {"mpm": mpm, "running": mpm == cur_mpm, "directives": rows, "explicit": explicit}


@router.post("/directives", summary="Set directives of the running MPM; graceful (or hard) restart",
             dependencies=[Control])
async def set_directives(body: DirectivesBody, d: Dashboard = Dash) -> dict[str, Any]:
    mpm, values, _ = current_config(d.sampler)
    settings = _settings_str(body.settings)
    for name in settings:  # every name and value checked here first: 422 names the directive
        DIRECTIVES[canonical(name)].parse(settings[name])
    if body.restart == "hard":
        answer = await d.control.restart(settings)
    else:
        answer = await d.control.graceful(settings)
    return await _after_change(d, answer)


@router.post("/directives/check", summary="Validate directives without applying them (adjustments as warnings)",
             dependencies=[Control])
async def check_directives(body: CheckBody, d: Dashboard = Dash) -> dict[str, Any]:
    mpm = body.mpm or current_config(d.sampler)[0]
    answer = await d.control.check(mpm, _settings_str(body.settings))
    return {"ok": True, "mpm": mpm, "warnings": answer.get("warnings", []), "config": answer.get("config")}


@router.post("/httpd-conf", summary="Apply (or only parse) the MPM part of an httpd.conf excerpt",
             dependencies=[Control])
async def httpd_conf(body: ConfBody, d: Dashboard = Dash) -> dict[str, Any]:
    mpm = current_config(d.sampler)[0]
    settings = parse_httpd_conf(body.text, mpm)
    if not body.apply:
        answer = await d.control.check(mpm, settings)
        return {"ok": True, "applied": False, "settings": settings, "warnings": answer.get("warnings", [])}
    answer = await (d.control.restart(settings) if body.restart == "hard" else d.control.graceful(settings))
    out = await _after_change(d, answer)
    out.update(applied=True, settings=settings)
    return out


@router.post("/restart", summary="Graceful (USR1) or hard (HUP) restart", dependencies=[Control])
async def restart(body: RestartBody, d: Dashboard = Dash) -> dict[str, Any]:
    answer = await (d.control.graceful() if body.graceful else d.control.restart())
    return await _after_change(d, answer)


# -- traffic --------------------------------------------------------------------------------------------
@router.get("/traffic/patterns", summary="The generator's patterns and their parameters (for forms)")
async def traffic_patterns() -> dict[str, Any]:
    return pattern_catalogue()


@router.get("/traffic/presets", summary="Ready-made traffic: browsers, slowloris, AJAX polling, one at a time")
async def traffic_presets() -> dict[str, Any]:
    return {n: {"title": p.title, "pattern": p.pattern, "params": p.params, "teaches": p.teaches}
            for n, p in PRESETS.items()}


@router.get("/traffic", summary="Running and recently finished patterns, and where traffic may be aimed")
async def traffic_list(d: Dashboard = Dash) -> dict[str, Any]:
    names = d.target_names()
    patterns = []
    for run in await d.traffic.list():
        p = run.to_json()
        p["source"] = names.get(target_key(run.target))
        patterns.append(p)
    return {"target": d.settings.core_url if d.settings.watch_core else None,
            "targets": d.traffic_targets(), "patterns": patterns}


def _traffic_errors(e: Exception) -> HTTPException:
    if isinstance(e, KeyError):
        return HTTPException(404, e.args[0] if e.args else "no such pattern")
    return HTTPException(422, str(e))


@router.post("/traffic", status_code=201, summary="Start a pattern against the embedded server or an "
             "attached server on loopback", dependencies=[Control])
async def traffic_start(body: TrafficStart, d: Dashboard = Dash) -> dict[str, Any]:
    try:
        name, url = d.traffic_target(body.source)
        pid = await d.traffic.start_pattern(body.pattern, body.params, target=url)
    except (ValueError, KeyError) as e:
        raise _traffic_errors(e) from None
    return {"id": pid, "pattern": body.pattern, "source": name, "target": url}


@router.post("/traffic/presets/{name}", status_code=201, summary="Start a preset", dependencies=[Control])
async def traffic_preset(name: str, source: str | None = Query(None, description="'core' or an attached server"),
                         d: Dashboard = Dash) -> dict[str, Any]:
    try:
        src, url = d.traffic_target(source)
        pid = await d.traffic.start_preset(name, target=url)
    except (ValueError, KeyError) as e:
        raise _traffic_errors(e) from None
    return {"id": pid, "preset": name, "pattern": PRESETS[name].pattern, "source": src, "target": url}


@router.get("/traffic/{pattern_id}", summary="One pattern with its cumulative figures")
async def traffic_get(pattern_id: str, d: Dashboard = Dash) -> dict[str, Any]:
    try:
        return (await d.traffic.get(pattern_id)).to_json()
    except (ValueError, KeyError) as e:
        raise _traffic_errors(e) from None


@router.patch("/traffic/{pattern_id}", summary="Re-tune a running pattern (live parameters)",
              dependencies=[Control])
async def traffic_update(pattern_id: str, body: TrafficUpdate, d: Dashboard = Dash) -> dict[str, Any]:
    try:
        return (await d.traffic.update(pattern_id, body.params)).to_json()
    except (ValueError, KeyError) as e:
        raise _traffic_errors(e) from None


@router.delete("/traffic/{pattern_id}", summary="Stop a pattern", dependencies=[Control])
async def traffic_stop(pattern_id: str, d: Dashboard = Dash) -> dict[str, Any]:
    try:
        return (await d.traffic.stop(pattern_id)).to_json()
    except (ValueError, KeyError) as e:
        raise _traffic_errors(e) from None


@router.post("/traffic/stop-all", summary="Stop every pattern", dependencies=[Control])
async def traffic_stop_all(d: Dashboard = Dash) -> dict[str, Any]:
    return {"stopped": [p.id for p in await d.traffic.stop_all()]}


# -- the embedded server's own mod_status ---------------------------------------------------------------
async def fetch_core(listen: str, path: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """One GET to the embedded server (no extra HTTP client dependency): status, content type, body."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    ctype = next((ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("content-type:")),
                 "text/plain")
    return status, ctype, body


@router.get("/core/server-status", summary="The embedded server's /server-status (query passed on: ?auto, ?json)",
            response_class=PlainTextResponse)
async def core_server_status(request: Request, d: Dashboard = Dash) -> Response:
    q = request.url.query
    try:
        status_code, ctype, body = await fetch_core(d.settings.core_listen, "/server-status" + (f"?{q}" if q else ""))
    except (TimeoutError, OSError, ValueError, IndexError) as e:
        raise HTTPException(502, f"the embedded server did not answer: {e}") from None
    return Response(body, status_code=status_code, media_type=ctype)
