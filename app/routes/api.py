"""The JSON API: everything the page does, under /api (OpenAPI at /docs).

Reads come from the sampler's latest summary (never a new snapshot per request, except one slot
for /api/slots). Control calls go through ``control_guard`` (Origin and token), then the action of
``app.services.actions`` that the page's htmx routes call too; the API serialises its result. Every
error body is ``app.routes.errors.ErrorBody``; a refused directive comes back as 422 naming it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from app.dashboard import Dashboard
from app.routes.deps import Control, Dash
from app.routes.errors import error_responses
from app.routes.views import attached_slot_detail, current_config, slot_detail
from app.services import actions
from app.services.actions import (
    Change,
    Check,
    ConfApplied,
    ConfChecked,
    PatternInfo,
    PresetStarted,
    Restart,
    TrafficStarted,
    TrafficStopped,
)
from app.services.traffic import PRESETS, pattern_catalogue, target_key
from app.settings import CORE_SOURCE
from mpmcore.directives import MPMS, catalogue

router = APIRouter(prefix="/api", tags=["api"])

#: What a control route may answer besides its result: the guard's 403, and the action's errors.
CHANGE_ERRORS = error_responses(403, 409, 422, 503)
TRAFFIC_ERRORS = error_responses(403, 404, 422, 503)


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


@router.post("/mpm", summary="Switch MPM live (a graceful restart into a new generation)", dependencies=[Control],
             response_model=Change, responses=CHANGE_ERRORS)
async def switch_mpm(body: SwitchBody, d: Dashboard = Dash) -> Change:
    return await actions.switch_mpm(d, body.mpm, body.settings)


@router.get("/directives", summary="Directives of an MPM with Apache's names, defaults, ranges and current values")
async def get_directives(mpm: Literal["prefork", "worker", "event"] | None = None, d: Dashboard = Dash) -> dict[str, Any]:
    cur_mpm, values, explicit = current_config(d.sampler)
    mpm = mpm or cur_mpm
    rows = catalogue(mpm)
    for r in rows:
        r["value"] = values.get(r["name"]) if mpm == cur_mpm else r["default"]
    return {"mpm": mpm, "running": mpm == cur_mpm, "directives": rows, "explicit": explicit}


@router.post("/directives", summary="Set directives of the running MPM; graceful (or hard) restart",
             dependencies=[Control], response_model=Change, responses=CHANGE_ERRORS)
async def set_directives(body: DirectivesBody, d: Dashboard = Dash) -> Change:
    return await actions.apply_directives(d, body.settings, Restart(body.restart))


@router.post("/directives/check", summary="Validate directives without applying them (adjustments as warnings)",
             dependencies=[Control], response_model=Check, responses=CHANGE_ERRORS)
async def check_directives(body: CheckBody, d: Dashboard = Dash) -> Check:
    return await actions.check_directives(d, body.settings, body.mpm)


@router.post("/httpd-conf", summary="Apply (or only check) the MPM part of an httpd.conf excerpt; a text with "
             "no directive for the running MPM is refused (422)", dependencies=[Control],
             response_model=ConfApplied | ConfChecked, responses=CHANGE_ERRORS)
async def httpd_conf(body: ConfBody, d: Dashboard = Dash) -> ConfApplied | ConfChecked:
    if body.apply:
        return await actions.apply_httpd_conf(d, body.text, Restart(body.restart))
    return await actions.check_httpd_conf(d, body.text)


@router.post("/restart", summary="Graceful (USR1) or hard (HUP) restart", dependencies=[Control],
             response_model=Change, responses=CHANGE_ERRORS)
async def restart(body: RestartBody, d: Dashboard = Dash) -> Change:
    return await actions.restart(d, Restart.GRACEFUL if body.graceful else Restart.HARD)


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
             "attached server on loopback", dependencies=[Control], response_model=TrafficStarted,
             responses=TRAFFIC_ERRORS)
async def traffic_start(body: TrafficStart, d: Dashboard = Dash) -> TrafficStarted:
    return await actions.start_traffic(d, body.pattern, body.params, body.source)


@router.post("/traffic/presets/{name}", status_code=201, summary="Start a preset", dependencies=[Control],
             response_model=PresetStarted, responses=TRAFFIC_ERRORS)
async def traffic_preset(name: str, source: str | None = Query(None, description="'core' or an attached server"),
                         d: Dashboard = Dash) -> PresetStarted:
    return await actions.start_preset(d, name, source)


@router.get("/traffic/{pattern_id}", summary="One pattern with its cumulative figures")
async def traffic_get(pattern_id: str, d: Dashboard = Dash) -> dict[str, Any]:
    try:
        return (await d.traffic.get(pattern_id)).to_json()
    except (ValueError, KeyError) as e:
        raise _traffic_errors(e) from None


# The runner's description of a pattern is passed on as it is: exclude_unset keeps its fields, and
# only its fields (a re-tuned pattern has no "total"; a stopped one has).
@router.patch("/traffic/{pattern_id}", summary="Re-tune a running pattern (live parameters)",
              dependencies=[Control], response_model=PatternInfo, response_model_exclude_unset=True,
              responses=TRAFFIC_ERRORS)
async def traffic_update(pattern_id: str, body: TrafficUpdate, d: Dashboard = Dash) -> PatternInfo:
    return await actions.retune_traffic(d, pattern_id, body.params)


@router.delete("/traffic/{pattern_id}", summary="Stop a pattern", dependencies=[Control], response_model=PatternInfo,
               response_model_exclude_unset=True, responses=TRAFFIC_ERRORS)
async def traffic_stop(pattern_id: str, d: Dashboard = Dash) -> PatternInfo:
    return await actions.stop_traffic(d, pattern_id)


@router.post("/traffic/stop-all", summary="Stop every pattern", dependencies=[Control],
             response_model=TrafficStopped, responses=error_responses(403, 503))
async def traffic_stop_all(d: Dashboard = Dash) -> TrafficStopped:
    return await actions.stop_all_traffic(d)


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
