"""The JSON API: everything the page does, under /api (OpenAPI at /docs).

Reads come from the sampler's latest summary (never a new snapshot per request, except one slot
for /api/slots). Control calls go through ``control_guard`` (Origin and token), then the action of
``mpmlab.services.actions`` that the page's htmx routes call too; the API serialises its result. Every
error body is ``mpmlab.routes.errors.ErrorBody``; a refused directive comes back as 422 naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from mpmcore.directives import MPMS, catalogue
from mpmcore.model import AttachedSlotDetail, Insight, LocustStats, SlotDetail, Summary
from mpmcore.netloc import TargetError, resolve_target_sync
from mpmcore.sources import client
from mpmlab.dashboard import Dashboard
from mpmlab.routes.deps import Control, Dash
from mpmlab.routes.errors import error_responses
from mpmlab.routes.views import attached_slot_detail, current_config, slot_detail
from mpmlab.schemas import (
    CoreInfo,
    DashboardPids,
    DashboardStats,
    DirectivesResponse,
    HistoryResponse,
    LogResponse,
    MpmResponse,
    PresetInfo,
    ProcessesResponse,
    ScoreboardResponse,
    SourcesResponse,
    StatusResponse,
    TrafficListResponse,
    TrafficRun,
    TrafficTargetInfo,
)
from mpmlab.services import actions
from mpmlab.services.actions import (
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
from mpmlab.services.sources import AttachedSource, SourceEntry
from mpmlab.services.traffic import PRESETS, pattern_catalogue, target_key
from mpmlab.settings import CORE_SOURCE

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


def _need_summary(d: Dashboard) -> Summary:
    s = d.sampler.summary
    if s is None:
        raise HTTPException(503, "no scoreboard yet: the embedded server is not running")
    return s


#: What a read of the embedded core may answer besides its result.
CORE_ERRORS = error_responses(503)


# -- reading ----------------------------------------------------------------------------------------
@router.get("/status", summary="The server now: core, counts by state, processes, tiles, what is happening",
            response_model=StatusResponse, responses=CORE_ERRORS)
async def status(d: Dashboard = Dash) -> StatusResponse:
    s = _need_summary(d)
    core = d.sampler.core_state or {}
    return StatusResponse(
        core=CoreInfo(**{k: core.get(k) for k in ("pid", "listen", "mpm", "generation", "config", "capacity")}),
        dashboard_pids=DashboardPids(core=d.core.pid if d.core else None, traffic_runner=d.traffic.pid),
        insight=d.sampler.insight, tiles=list(d.sampler.tiles), summary=s)


@router.get("/scoreboard", summary="Apache's scoreboard letters and counts by state",
            response_model=ScoreboardResponse, responses=CORE_ERRORS)
async def scoreboard(d: Dashboard = Dash) -> ScoreboardResponse:
    s = _need_summary(d)
    return ScoreboardResponse(mpm=s.mpm, generation=s.mpm_generation, scoreboard=s.scoreboard,
                              state_counts=s.state_counts, busy=s.busy, idle=s.idle, graceful=s.graceful,
                              max_request_workers=s.max_request_workers, threads_per_child=s.threads_per_child)


@router.get("/processes", summary="Per child process: pid, generation, threads by state, connections, PSS",
            response_model=ProcessesResponse, responses=CORE_ERRORS)
async def processes(d: Dashboard = Dash) -> ProcessesResponse:
    s = _need_summary(d)
    return ProcessesResponse(processes=list(s.procs), sum=s.proc_sum, fcgi=list(s.fcgi_procs))


@router.get("/slots/{proc}/{thread}", summary="One worker slot: pid, generation, request, client, pattern, "
            "time in state", response_model=SlotDetail, responses=error_responses(404))
async def slot(proc: int, thread: int, d: Dashboard = Dash) -> SlotDetail:
    row = slot_detail(d.sampler, proc, thread)
    if row is None:
        raise HTTPException(404, f"no slot {proc}/{thread} in the scoreboard")
    return row


@router.get("/insight", summary='"What is happening", in words', response_model=Insight, responses=CORE_ERRORS)
async def insight(d: Dashboard = Dash) -> Insight:
    _need_summary(d)
    if d.sampler.insight is None:
        raise HTTPException(503, "no scoreboard yet: the embedded server is not running")
    return d.sampler.insight


@router.get("/history", summary="Chart points, one a second (requests/s, workers, connections, latency, memory)",
            response_model=HistoryResponse)
async def history(seconds: float | None = Query(None, gt=0, le=3600), d: Dashboard = Dash) -> HistoryResponse:
    return HistoryResponse(interval=1.0, points=d.sampler.history.since(seconds))


@router.get("/log", summary="The master's error log, last lines", response_model=LogResponse)
async def error_log(lines: int = Query(200, ge=1, le=2000), d: Dashboard = Dash) -> LogResponse:
    return LogResponse(path=d.control.error_log, lines=list(d.sampler.log_lines)[-lines:])


@router.get("/dashboard", summary="The dashboard itself: sampler cost, clients, dropped frames, pids",
            response_model=DashboardStats)
async def dashboard_stats(d: Dashboard = Dash) -> DashboardStats:
    return DashboardStats(sampler=d.sampler.stats(), grid_hz=d.settings.grid_hz, summary_hz=d.settings.summary_hz,
                          core_pid=d.core.pid if d.core else None, traffic_runner_pid=d.traffic.pid,
                          core_listen=d.settings.core_listen, attached=d.sources.stats())


# -- sources: the embedded core and the attached servers -----------------------------------------------
def _core_entry(d: Dashboard) -> SourceEntry:
    return SourceEntry(name=CORE_SOURCE, key=CORE_SOURCE, kind="mpmlab", url=d.settings.core_url, embedded=True,
                       traffic_target=d.settings.core_url, insight=d.sampler.insight, frame=d.sampler.frame)


@router.get("/locust", summary="Every Locust master watched (attach locust+URL): its latest statistics per request name",
            response_model=list[LocustStats])
async def locust_stats(d: Dashboard = Dash) -> list[LocustStats]:
    return d.locust.stats()


@router.get("/sources", summary="Every source watched (embedded core, attached Apache/nginx/lighttpd) with its latest frame",
            response_model=SourcesResponse)
async def sources(d: Dashboard = Dash) -> SourcesResponse:
    out = [_core_entry(d)] if d.settings.watch_core else []
    out += [s.entry() for s in d.sources.sources]
    return SourcesResponse(interval=d.settings.attach_interval, allow_remote_attach=d.settings.allow_remote_attach,
                           sources=out)


def _source(d: Dashboard, name: str) -> AttachedSource:
    src = d.sources.get(name)
    if src is None:
        known = ([CORE_SOURCE] if d.settings.watch_core else []) + [s.name for s in d.sources.sources]
        raise HTTPException(404, f"no source {name!r}; known: {', '.join(known) or 'none'}")
    return src


@router.get("/sources/{name}", summary="One source: its latest frame (summary, letters, layout, workers, "
                                       "what it cannot show)", response_model=SourceEntry,
            responses=error_responses(404))
async def source(name: str, d: Dashboard = Dash) -> SourceEntry:
    if name == CORE_SOURCE and d.settings.watch_core:
        return _core_entry(d)
    return _source(d, name).entry()


@router.get("/sources/{name}/slots/{proc}/{thread}",
            summary="One grid cell of a source: for an attached Apache, its ExtendedStatus row when its place is certain",
            response_model=SlotDetail | AttachedSlotDetail, responses=error_responses(404))
async def source_slot(name: str, proc: int, thread: int, d: Dashboard = Dash) -> SlotDetail | AttachedSlotDetail:
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


@router.get("/sources/{name}/history", summary="One source's chart points, one a second",
            response_model=HistoryResponse, responses=error_responses(404))
async def source_history(name: str, seconds: float | None = Query(None, gt=0, le=3600),
                         d: Dashboard = Dash) -> HistoryResponse:
    if name == CORE_SOURCE and d.settings.watch_core:
        return HistoryResponse(interval=1.0, points=d.sampler.history.since(seconds))
    return HistoryResponse(interval=1.0, points=_source(d, name).history.since(seconds))


# -- MPM and directives --------------------------------------------------------------------------------
@router.get("/mpm", summary="The running MPM and generation", response_model=MpmResponse)
async def get_mpm(d: Dashboard = Dash) -> MpmResponse:
    st = await d.sampler.refresh_core_state() or {}
    return MpmResponse(mpm=st.get("mpm"), generation=st.get("generation"), available=list(MPMS))


@router.post("/mpm", summary="Switch MPM live (a graceful restart into a new generation)", dependencies=[Control],
             response_model=Change, responses=CHANGE_ERRORS)
async def switch_mpm(body: SwitchBody, d: Dashboard = Dash) -> Change:
    return await actions.switch_mpm(d, body.mpm, body.settings)


@router.get("/directives", summary="Directives of an MPM with Apache's names, defaults, ranges and current values",
            response_model=DirectivesResponse)
async def get_directives(mpm: Literal["prefork", "worker", "event"] | None = None,
                         d: Dashboard = Dash) -> DirectivesResponse:
    cur_mpm, values, explicit = current_config(d.sampler)
    which: str = mpm or cur_mpm
    rows = catalogue(which)
    for r in rows:
        r["value"] = values.get(r["name"]) if which == cur_mpm else r["default"]
    return DirectivesResponse(mpm=which, running=which == cur_mpm, directives=rows, explicit=explicit)


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
@router.get("/traffic/patterns", summary="The generator's patterns and their parameters (for forms)",
            response_model=dict[str, dict[str, Any]])
async def traffic_patterns() -> dict[str, dict[str, Any]]:
    return pattern_catalogue()


@router.get("/traffic/presets", summary="Ready-made traffic: browsers, slowloris, AJAX polling, one at a time",
            response_model=dict[str, PresetInfo])
async def traffic_presets() -> dict[str, PresetInfo]:
    return {n: PresetInfo(title=p.title, pattern=p.pattern, params=p.params, teaches=p.teaches)
            for n, p in PRESETS.items()}


@router.get("/traffic", summary="Running and recently finished patterns, and where traffic may be aimed",
            response_model=TrafficListResponse, responses=error_responses(503))
async def traffic_list(d: Dashboard = Dash) -> TrafficListResponse:
    names = d.target_names()
    patterns = []
    for run in await d.traffic.list():
        p = run.to_json()
        p["source"] = names.get(target_key(run.target))
        patterns.append(TrafficRun(**p))
    return TrafficListResponse(target=d.settings.core_url if d.settings.watch_core else None,
                               targets=[TrafficTargetInfo.model_validate(t) for t in d.traffic_targets()],
                               patterns=patterns)


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


@router.get("/traffic/{pattern_id}", summary="One pattern with its cumulative figures", response_model=PatternInfo,
            responses=TRAFFIC_ERRORS)
async def traffic_get(pattern_id: str, d: Dashboard = Dash) -> PatternInfo:
    try:
        return PatternInfo(**(await d.traffic.get(pattern_id)).to_json())
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
@router.get("/core/server-status", summary="The embedded server's /server-status (query passed on: ?auto, ?json)",
            response_class=PlainTextResponse, responses=error_responses(502))
async def core_server_status(request: Request, d: Dashboard = Dash) -> Response:
    q = request.url.query
    try:
        target = resolve_target_sync(d.settings.core_url, allow_remote=True)  # the dashboard's own core
        ans = await client.get_async(target, "/server-status" + (f"?{q}" if q else ""), timeout=5.0, accept="*/*")
    except (TargetError, client.SourceError) as e:
        raise HTTPException(502, f"the embedded server did not answer: {e}") from None
    return Response(ans.body, status_code=ans.status, media_type=ans.content_type)
