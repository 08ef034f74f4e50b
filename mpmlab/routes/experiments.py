"""Experiments, runs, claims, replay and the record button: the pages, their htmx fragments and the
JSON API (docs/dashboard.md#experiments-runs-replay).

Every store read runs in a worker thread (SQLite must not stall the event loop that feeds the live
page). The experiment itself runs in ``mpmlab.services.experiments``' background thread; these routes
start it, stop it and read its progress. Control routes (POST, DELETE) go through ``Control`` like
every other (Origin and token). Errors: 404 for an unknown run, plan or target run; 409 when an
experiment (or a recording) already runs; 422 for a bad target or value; 503 when the run store could
not be opened (its one-line reason).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mpmcore.experiments.model import ClaimResult, Plan, RunMeta, StoredRun
from mpmcore.experiments.store import RunNotFound, RunStore
from mpmcore.model import to_jsonable
from mpmlab.dashboard import Dashboard
from mpmlab.routes.deps import Control, Dash
from mpmlab.routes.errors import error_responses
from mpmlab.schemas import (
    ExperimentsResponse,
    PlanInfo,
    PlanProblem,
    RecordState,
    RunBody,
    RunStateModel,
    TargetChoice,
)
from mpmlab.services import replay
from mpmlab.services.experiments import (
    Busy,
    ExperimentService,
    LiveRecorder,
    PlanEntry,
    RunState,
    Unavailable,
    claim_plans,
    find_plan,
    list_plans,
    parse_targets,
    plans_dir,
    target_options,
)

api = APIRouter(prefix="/api", tags=["experiments"])
pages = APIRouter(include_in_schema=False)

READ_ERRORS = error_responses(404, 503)
#: The uploaded run bundle of an import.
BUNDLE_FILE = File(description="the .mpmlab-run file (mpmlab experiment export's)")
CONTROL_ERRORS = error_responses(403, 404, 409, 422, 503)


# -- helpers ----------------------------------------------------------------------------------------
def _svc(d: Dashboard) -> ExperimentService:
    return d.experiments


def _store(d: Dashboard) -> RunStore:
    return d.experiments.need_store()


async def _load(d: Dashboard, run_id: int) -> StoredRun:
    store = _store(d)
    try:
        return await asyncio.to_thread(store.load, run_id)
    except RunNotFound:
        raise HTTPException(404, f"no run {run_id} in the run store") from None


def _stages(p: Plan) -> list[str]:
    out = []
    for s in p.stages:
        mix = " + ".join(f"{u.name}" + (f" ({', '.join(f'{k}={v}' for k, v in u.params.items())})" if u.params else "")
                         for u in s.mix)
        out.append(f"{s.name}: {s.duration:g} s of {mix}")
    return out


def plan_info(e: PlanEntry) -> PlanInfo:
    p = e.plan
    return PlanInfo(name=p.name, title=p.title, description=p.description, origin=e.origin, claim=p.claim,
                    duration=p.duration, rounds=p.rounds, slots=p.budget.slots, stages=_stages(p),
                    targets=[TargetChoice(name=t.name, planned=t.planned, available=t.available, why=t.why)
                             for t in target_options(p)])


def state_model(s: RunState) -> RunStateModel:
    return RunStateModel(running=s.running, plans=list(s.plans), plan_index=s.plan_index,
                         progress=to_jsonable(s.progress) if s.progress is not None else None,
                         run_ids=list(s.run_ids), status=s.status, message=s.message, started_at=s.started_at,
                         ended_at=s.ended_at)


async def _experiments(d: Dashboard) -> ExperimentsResponse:
    svc = _svc(d)
    entries, problems = await asyncio.to_thread(list_plans, plans_dir())
    infos = await asyncio.to_thread(lambda: [plan_info(e) for e in entries])
    return ExperimentsResponse(store=str(svc.path), store_error=svc.error, plans_dir=str(plans_dir()),
                               plans=infos, problems=[PlanProblem(path=p, error=m) for p, m in problems],
                               state=state_model(svc.state))


async def _start(d: Dashboard, name: str, body: RunBody) -> RunState:
    svc = _svc(d)
    try:
        plan = await asyncio.to_thread(find_plan, name, plans_dir())
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    try:
        targets = parse_targets(body.targets) if body.targets is not None else None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    if targets is not None:
        options = {t.name: t for t in await asyncio.to_thread(target_options, plan)}
        for t in targets:
            o = options.get(t.name)
            if o is not None and not o.available:
                raise HTTPException(422, f"target {t.name} cannot run here: {o.why}")
    return svc.start([plan], targets, rounds=body.rounds, slots=body.slots)


def _record_state(svc: ExperimentService) -> RecordState:
    r = svc.recorder
    if r is None:
        return RecordState(recording=False, run_id=None, seconds=None, frames=0, samples=0,
                           last_run_id=svc.last_recording)
    return RecordState(recording=True, run_id=r.run_id, seconds=round(r.seconds, 1), frames=r.frames_recorded,
                       samples=r.samples_recorded, last_run_id=svc.last_recording)


async def start_recording(d: Dashboard, title: str = "") -> RecordState:
    svc = _svc(d)
    store = _store(d)
    if not d.settings.watch_core or d.sampler.summary is None:
        raise HTTPException(409, "nothing to record: the embedded server is not running")
    if svc.recorder is not None:
        raise HTTPException(409, f"already recording (run {svc.recorder.run_id}): stop it first")
    rec = await asyncio.to_thread(LiveRecorder, store, d.sampler, title)
    svc.recorder = rec
    rec.start()
    return _record_state(svc)


async def stop_recording(d: Dashboard) -> RecordState:
    svc = _svc(d)
    rec = svc.recorder
    if rec is None:
        raise HTTPException(409, "not recording")
    svc.recorder = None
    svc.last_recording = await rec.stop()
    return _record_state(svc)


async def _claims(d: Dashboard) -> list[ClaimResult]:
    from mpmcore.experiments import claims

    store = _store(d)
    return await asyncio.to_thread(claims.latest_results, store)


# -- JSON API ---------------------------------------------------------------------------------------
@api.get("/experiments", summary="The built-in plans and the user's plan files, each target's availability, "
         "the background run's state", response_model=ExperimentsResponse)
async def get_experiments(d: Dashboard = Dash) -> ExperimentsResponse:
    return await _experiments(d)


@api.post("/experiments/{name}/run", summary="Run an experiment in the background (one at a time)",
          response_model=RunStateModel, status_code=202, responses=CONTROL_ERRORS, dependencies=[Control])
async def run_experiment(name: str, body: RunBody | None = None, d: Dashboard = Dash) -> RunStateModel:
    return state_model(await _start(d, name, body or RunBody(targets=None, rounds=None, slots=None)))


@api.get("/experiments/progress", summary="The background run: target, round, stage, time left",
         response_model=RunStateModel)
async def experiment_progress(d: Dashboard = Dash) -> RunStateModel:
    return state_model(_svc(d).state)


@api.post("/experiments/stop", summary="Stop the background run (it is stored as stopped)",
          response_model=RunStateModel, responses=error_responses(403, 409), dependencies=[Control])
async def stop_experiment(d: Dashboard = Dash) -> RunStateModel:
    if not _svc(d).stop():
        raise HTTPException(409, "no experiment is running")
    return state_model(_svc(d).state)


@api.get("/runs", summary="Stored runs, newest first", response_model=list[RunMeta], responses=error_responses(503))
async def list_runs(kind: str | None = Query(None, pattern="^(experiment|recording)$"),
                    limit: int = Query(200, ge=1, le=2000), d: Dashboard = Dash) -> list[RunMeta]:
    store = _store(d)
    return await asyncio.to_thread(store.list_runs, kind, limit)  # type: ignore[arg-type]


@api.get("/runs/{run_id}", summary="One stored run: metadata, each target run's configuration and figures",
         response_model=StoredRun, responses=READ_ERRORS)
async def get_run(run_id: int, d: Dashboard = Dash) -> StoredRun:
    return await _load(d, run_id)


@api.delete("/runs/{run_id}", summary="Delete a stored run", status_code=204, responses=CONTROL_ERRORS,
            dependencies=[Control])
async def delete_run(run_id: int, d: Dashboard = Dash) -> Response:
    await _delete(d, run_id)
    return Response(status_code=204)


async def _delete(d: Dashboard, run_id: int) -> None:
    svc = _svc(d)
    run = await _load(d, run_id)
    if run.meta.status == "running" and ((svc.busy and run_id in svc.state.run_ids) or
                                         (svc.recorder is not None and svc.recorder.run_id == run_id)):
        raise HTTPException(409, f"run {run_id} is being recorded: stop it first")
    await asyncio.to_thread(_store(d).delete_run, run_id)


async def _import(d: Dashboard, upload: UploadFile) -> int:
    """A run bundle (``mpmlab experiment export``'s file) into the store as a new run; 422 naming the
    file when it is not a bundle, damaged or cut."""
    store = _store(d)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(upload.filename or "upload").name)[:100] or "upload"

    def run() -> int:
        from mpmcore.experiments import exports

        with tempfile.TemporaryDirectory(prefix="mpmlab-import-") as tmp:
            path = Path(tmp) / name
            with path.open("wb") as f:
                shutil.copyfileobj(upload.file, f, 1 << 20)
            try:
                return exports.import_bundle(path, store)
            except exports.BundleError as e:
                raise HTTPException(422, str(e).replace(str(path), name)) from None
    return await asyncio.to_thread(run)


@api.post("/runs/import", summary="Import a run bundle (mpmlab experiment export's file): a new run, to replay",
          response_model=RunMeta, status_code=201, responses=error_responses(403, 422, 503), dependencies=[Control])
async def import_run(file: UploadFile = BUNDLE_FILE, d: Dashboard = Dash) -> RunMeta:
    run_id = await _import(d, file)
    return (await _load(d, run_id)).meta


@api.get("/runs/{run_id}/timeline", summary="What the replay needs of a run: per target run its frame times, "
         "samples and marks", response_model=replay.Timeline, responses=READ_ERRORS)
async def get_timeline(run_id: int, targets: str = Query("", description="comma-separated target names "
                       "(or name#round, or target run ids); default every target run"),
                       d: Dashboard = Dash) -> replay.Timeline:
    run = await _load(d, run_id)
    try:
        ids = replay.choose(run, [t for t in targets.split(",") if t.strip()])
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    return await asyncio.to_thread(replay.timeline, _store(d), run, ids)


def _target_run(run: StoredRun, target_run_id: int) -> None:
    if not any(t.id == target_run_id for t in run.targets):
        raise HTTPException(404, f"run {run.meta.id} has no target run {target_run_id}")


BINARY: dict[int | str, dict[str, Any]] = {200: {"content": {"application/octet-stream": {}}, "description": "binary frames"}}


@api.get("/runs/{run_id}/targets/{target_run_id}/frames", response_class=Response,
         summary="Grid frames of a time window, length-prefixed (layout: mpmlab/services/replay.py)",
         responses={**BINARY, **READ_ERRORS})
async def get_frames(run_id: int, target_run_id: int, t0: float = Query(0.0, ge=0),
                     t1: float = Query(10.0, gt=0), d: Dashboard = Dash) -> Response:
    run = await _load(d, run_id)
    _target_run(run, target_run_id)
    blob = await asyncio.to_thread(replay.frames_blob, _store(d), target_run_id, t0, t1)
    return Response(blob, media_type="application/octet-stream", headers={"Cache-Control": "private, max-age=3600"})


@api.get("/runs/{run_id}/targets/{target_run_id}/frame", response_class=Response,
         summary="The grid frame shown at t: the last one at or before it (mpmlab/services/grid.py's layout)",
         responses={**BINARY, **READ_ERRORS})
async def get_frame(run_id: int, target_run_id: int, t: float = Query(ge=0), d: Dashboard = Dash) -> Response:
    run = await _load(d, run_id)
    _target_run(run, target_run_id)
    f = await asyncio.to_thread(_store(d).frame_at, target_run_id, t)
    if f is None:
        raise HTTPException(404, f"target run {target_run_id} has no frame at or before {t:g} s")
    return Response(f.grid, media_type="application/octet-stream", headers={"X-Frame-Time": f"{f.t:.3f}"})


@api.get("/claims", summary="The essay's claims: each one's last verdict, its why and figures, its run",
         response_model=list[ClaimResult], responses=error_responses(503))
async def get_claims(d: Dashboard = Dash) -> list[ClaimResult]:
    return await _claims(d)


@api.post("/claims/run", summary="Run the claims suite (their plans, one after another) in the background",
          response_model=RunStateModel, status_code=202, responses=CONTROL_ERRORS, dependencies=[Control])
async def run_claims(d: Dashboard = Dash) -> RunStateModel:
    plans = await asyncio.to_thread(claim_plans)
    return state_model(_svc(d).start(plans))


@api.get("/record", summary="The record button: whether the live session is being recorded",
         response_model=RecordState)
async def record_state(d: Dashboard = Dash) -> RecordState:
    return _record_state(_svc(d))


@api.post("/record", summary="Record the live session into the run store (until POST /api/record/stop)",
          response_model=RecordState, status_code=201, responses=CONTROL_ERRORS, dependencies=[Control])
async def record_start(d: Dashboard = Dash) -> RecordState:
    return await start_recording(d)


@api.post("/record/stop", summary="Stop recording: the run is complete and replays like any other",
          response_model=RecordState, responses=error_responses(403, 409), dependencies=[Control])
async def record_stop(d: Dashboard = Dash) -> RecordState:
    return await stop_recording(d)


# -- pages and fragments ----------------------------------------------------------------------------
def _render(d: Dashboard, request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("settings", d.settings)
    return d.templates.TemplateResponse(request, name, ctx, status_code=status_code)


async def _runs(d: Dashboard) -> list[RunMeta]:
    store = d.experiments.store
    return [] if store is None else await asyncio.to_thread(store.list_runs, None, 200)


@pages.get("/experiments", response_class=HTMLResponse)
async def experiments_page(request: Request, d: Dashboard = Dash) -> Response:
    return _render(d, request, "experiments.html", page="experiments", ex=await _experiments(d),
                   runs=await _runs(d), state=d.experiments.state)


@pages.get("/ui/experiments/progress", response_class=HTMLResponse)
async def ui_progress(request: Request, d: Dashboard = Dash) -> Response:
    state = d.experiments.state
    # the poll that sees the run ended also refreshes the list of runs (out of band), on the page
    # that has one: the claims page polls the same fragment but has no #runs (htmx would log
    # oobErrorNoTarget there)
    on_page = urlsplit(request.headers.get("HX-Current-URL", "")).path
    runs = None if state.running or on_page != "/experiments" else await _runs(d)
    r = _render(d, request, "fragments/_exp_progress.html", state=state, runs_oob=runs)
    if not state.running:
        r.headers["HX-Trigger"] = "experiment-ended"  # the claims page refreshes its verdicts
    return r


@pages.post("/ui/experiments/{name}/run", response_class=HTMLResponse, dependencies=[Control])
async def ui_run(name: str, request: Request, d: Dashboard = Dash) -> Response:
    form = await request.form()
    body: dict[str, Any] = {"targets": [str(v) for v in form.getlist("targets")]}
    for k in ("rounds", "slots"):
        v = str(form.get(k) or "").strip()
        if v:
            body[k] = v
    error, status = None, 200
    try:
        await _start(d, name, RunBody.model_validate(body))
    except HTTPException as e:
        error, status = str(e.detail), (409 if e.status_code == 409 else 422)
    except Busy as e:
        error, status = str(e), 409
    except Unavailable as e:
        error, status = str(e), 422
    except ValueError as e:  # pydantic's ValidationError: a bad rounds/slots field
        error, status = f"bad value: {e.errors()[0]['loc'][-1]}: {e.errors()[0]['msg']}" if hasattr(e, "errors") \
            else str(e), 422
    return _render(d, request, "fragments/_exp_progress.html", status_code=status, state=d.experiments.state,
                   error=error)


@pages.post("/ui/experiments/stop", response_class=HTMLResponse, dependencies=[Control])
async def ui_stop(request: Request, d: Dashboard = Dash) -> Response:
    d.experiments.stop()
    return _render(d, request, "fragments/_exp_progress.html", state=d.experiments.state)


@pages.get("/ui/runs", response_class=HTMLResponse)
async def ui_runs(request: Request, d: Dashboard = Dash) -> Response:
    return _render(d, request, "fragments/_runs.html", runs=await _runs(d))


@pages.delete("/ui/runs/{run_id}", response_class=HTMLResponse, dependencies=[Control])
async def ui_delete(run_id: int, request: Request, d: Dashboard = Dash) -> Response:
    error = None
    try:
        await _delete(d, run_id)
    except HTTPException as e:
        error = str(e.detail)
    return _render(d, request, "fragments/_runs.html", runs=await _runs(d), error=error)


@pages.post("/ui/runs/import", response_class=HTMLResponse, dependencies=[Control])
async def ui_import(request: Request, file: UploadFile = BUNDLE_FILE, d: Dashboard = Dash) -> Response:
    error, status, imported = None, 200, None
    try:
        imported = await _import(d, file)
    except HTTPException as e:
        error, status = str(e.detail), 422
    except Unavailable as e:
        error, status = str(e), 503
    return _render(d, request, "fragments/_runs.html", status_code=status, runs=await _runs(d), error=error,
                   imported=imported)


@pages.get("/claims", response_class=HTMLResponse)
async def claims_page(request: Request, d: Dashboard = Dash) -> Response:
    error = None
    results: list[ClaimResult] = []
    try:
        results = await _claims(d)
    except Unavailable as e:
        error = str(e)
    return _render(d, request, "claims.html", page="claims", results=results, store_error=error,
                   state=d.experiments.state)


@pages.get("/ui/claims", response_class=HTMLResponse)
async def ui_claims(request: Request, d: Dashboard = Dash) -> Response:
    return _render(d, request, "fragments/_claims.html", results=await _claims(d))


@pages.post("/ui/claims/run", response_class=HTMLResponse, dependencies=[Control])
async def ui_run_claims(request: Request, d: Dashboard = Dash) -> Response:
    error, status = None, 200
    try:
        d.experiments.start(await asyncio.to_thread(claim_plans))
    except (Busy, Unavailable) as e:
        error, status = str(e), 409 if isinstance(e, Busy) else 422
    return _render(d, request, "fragments/_exp_progress.html", status_code=status, state=d.experiments.state,
                   error=error)


@pages.get("/runs/{run_id}", response_class=HTMLResponse)
async def compare_page(run_id: int, request: Request, d: Dashboard = Dash) -> Response:
    from mpmcore.experiments import report

    run = await _load(d, run_id)
    store = _store(d)
    comparison = await asyncio.to_thread(report.compare, run, store)
    claim = None
    if run.meta.kind == "experiment":
        claim = await asyncio.to_thread(_claim_for, store, run)
    return _render(d, request, "compare.html", page="runs", run=run, cmp=comparison, claim=claim)


def _claim_for(store: RunStore, run: StoredRun) -> ClaimResult | None:
    """The claim verdict of a claim plan's run (None for another run)."""
    from mpmcore.experiments import claims

    got = claims.verdict_for(run, store)
    return got[0] if got else None


@pages.get("/runs/{run_id}/series", include_in_schema=False)
async def compare_series(run_id: int, d: Dashboard = Dash) -> JSONResponse:
    """The compare view's small multiples: every target run's samples and marks (no frames)."""
    run = await _load(d, run_id)
    tl = await asyncio.to_thread(replay.timeline, _store(d), run, [t.id for t in run.targets])
    out = {"duration": tl.duration, "targets": [
        {"id": t.id, "target": t.target, "round": t.round, "samples": to_jsonable(t.samples),
         "marks": to_jsonable(t.marks)} for t in tl.targets]}
    return JSONResponse(out)


@pages.get("/runs/{run_id}/replay", response_class=HTMLResponse)
async def replay_page(run_id: int, request: Request, targets: str = "", d: Dashboard = Dash) -> Response:
    run = await _load(d, run_id)
    try:
        ids = replay.choose(run, [t for t in targets.split(",") if t.strip()])
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    chosen = [t for t in run.targets if t.id in ids]
    return _render(d, request, "replay.html", page="runs", run=run, chosen=chosen, targets=targets)


@pages.get("/ui/record", response_class=HTMLResponse)
async def ui_record_state(request: Request, d: Dashboard = Dash) -> Response:
    return _render(d, request, "fragments/_record.html", rec=_record_state(d.experiments))


@pages.post("/ui/record", response_class=HTMLResponse, dependencies=[Control])
async def ui_record(request: Request, d: Dashboard = Dash) -> Response:
    error, status = None, 200
    try:
        if d.experiments.recorder is None:
            await start_recording(d)
        else:
            await stop_recording(d)
    except HTTPException as e:
        error, status = str(e.detail), 422
    except Unavailable as e:
        error, status = str(e), 503
    return _render(d, request, "fragments/_record.html", status_code=status, rec=_record_state(d.experiments),
                   error=error)


# -- exports (the report helper's) ------------------------------------------------------------------
EXPORTS: dict[str, str] = {
    "report.html": "the self-contained HTML report (opens offline)",
    "run.json": "the run as JSON: metadata, comparison, each target run's series",
    "csv": "Locust-shaped CSVs (per target: stats, stats history, failures), zipped",
    "hlog": "HDR histogram logs per target and pattern, zipped",
    "bundle": "the whole run in one file, for `mpmlab experiment import` elsewhere",
}


@pages.get("/runs/{run_id}/export/{what}")
async def export(run_id: int, what: str, d: Dashboard = Dash) -> Response:
    run = await _load(d, run_id)
    if what not in EXPORTS:
        raise HTTPException(404, f"no export {what!r} (one of: {', '.join(EXPORTS)})")
    body, ctype, suffix = await asyncio.to_thread(_export, what, run_id, _store(d))
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run.meta.name)[:60]  # an imported run's name is anyone's
    name = f"mpmlab-run-{run_id}-{safe}{suffix}"
    disposition = "inline" if what == "report.html" else "attachment"
    return Response(body, media_type=ctype, headers={"Content-Disposition": f'{disposition}; filename="{name}"'})


def _export(what: str, run_id: int, store: RunStore) -> tuple[bytes, str, str]:
    """(body, content type, file name suffix) of one export, made by mpmcore.experiments.exports
    (the file-writing ones into a temporary directory, zipped)."""
    import io
    import zipfile

    from mpmcore.experiments import exports

    if what == "report.html":
        return exports.html_report(run_id, store).encode(), "text/html; charset=utf-8", ".html"
    if what == "run.json":
        return exports.json_export(run_id, store).encode(), "application/json", ".json"
    with tempfile.TemporaryDirectory(prefix="mpmlab-export-") as tmp:
        if what == "bundle":
            path = exports.export_bundle(run_id, store, Path(tmp) / "run.mpmlab-run")
            return path.read_bytes(), "application/octet-stream", ".mpmlab-run"
        files = exports.csv_exports(run_id, store, tmp) if what == "csv" else exports.hlog_exports(run_id, store, tmp)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in files:
                z.write(f, f.name)
        return buf.getvalue(), "application/zip", f"-{what}.zip"


__all__ = ["api", "pages"]
