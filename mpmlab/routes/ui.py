"""The page and its htmx fragments. Each control route reads its form, calls the same action of
``mpmlab.services.actions`` as the matching /api route, and renders the result as HTML; a refused action
comes back as the same fragment with the error beside the field (HTTP 422, or 503 when the server or
the traffic generator is down: the statuses the page's htmx configuration swaps in)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mpmcore.directives import DIRECTIVES
from mpmcore.traffic import TrafficError
from mpmlab.dashboard import Dashboard
from mpmlab.routes.deps import Control, Dash
from mpmlab.routes.views import current_config, directive_rows, num_text
from mpmlab.security import given_token
from mpmlab.services import actions
from mpmlab.services.actions import ActionError, Restart
from mpmlab.services.traffic import HIDDEN_PARAMS, PRESETS, pattern_catalogue
from mpmlab.settings import LOG_BACKLOG

router = APIRouter(include_in_schema=False)
log = logging.getLogger("mpmlab.dashboard")
T = TypeVar("T")

#: How long a control's answer waits for the traffic runner. A stop that takes longer (at 256
#: prefork children closing hundreds of connections took seconds) is answered "stopping" at once and
#: finishes in the background; the running list and the grid follow it over /ws/live.
ANSWER_BUDGET = 0.25
_background: set[asyncio.Task[Any]] = set()


def _background_done(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a traffic stop finished with an error: %s", task.exception())


async def _within_budget(coro: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
    """(True, its result) when ``coro`` finished within ANSWER_BUDGET (its exception raised here),
    else (False, None) with it left running in the background."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=ANSWER_BUDGET)
    if task in done:
        return True, task.result()
    _background.add(task)
    task.add_done_callback(_background_done)
    return False, None


def _render(d: Dashboard, request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    return d.templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _status(e: ActionError) -> int:
    """The page's status for a refused action: htmx swaps only 422 and 503 (the live page's htmx-config, fragments/_head.html)."""
    return 503 if e.status == 503 else 422


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


def _core_links(d: Dashboard) -> dict[str, str]:
    base = f"http://{d.settings.core_listen}"
    return {"html": f"{base}/server-status", "auto": f"{base}/server-status?auto", "json": f"{base}/server-status?json",
            "proxy_html": "/api/core/server-status", "proxy_auto": "/api/core/server-status?auto"}


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, d: Dashboard = Dash) -> Response:
    # /?token=... (the URL printed at start) is answered before this: mpmlab.security.token_link
    st = (d.sampler.core_state or await d.sampler.refresh_core_state() or {}) if d.settings.watch_core else {}
    mpm, values, _ = current_config(d.sampler)
    return _render(d, request, "index.html", mpm=mpm, core=st, links=_core_links(d),
                   rows=directive_rows(mpm, values), catalogue=pattern_catalogue(), presets=PRESETS,
                   running=d.traffic.patterns, recent=d.traffic.recent(), traffic_error=d.traffic.error,
                   sources=d.sources.sources, targets=d.traffic_targets(), locust_masters=d.locust.masters,
                   target_names=d.target_names(),
                   log_lines=list(d.sampler.log_lines)[-LOG_BACKLOG:], live=d.sampler.live_context(),
                   settings=d.settings, needs_token=d.settings.token is not None and
                   not d.settings.token_ok(given_token(request, d.settings)))


# -- MPM ------------------------------------------------------------------------------------------
@router.post("/ui/mpm", response_class=HTMLResponse, dependencies=[Control])
async def ui_switch(request: Request, d: Dashboard = Dash) -> Response:
    mpm = (await _form(request)).get("mpm", "")
    try:
        change = await actions.switch_mpm(d, mpm)  # it reads the master's state back
        message, level = f"generation {change.generation}: switching to {mpm} by graceful restart", "ok"
    except ActionError as e:
        message, level = e.message, "error"
        await d.sampler.refresh_core_state()
    st = d.sampler.core_state or {}
    cur, values, _ = current_config(d.sampler)
    return _render(d, request, "fragments/_switch_result.html", mpm=cur, core=st, message=message, level=level,
                   rows=directive_rows(cur, values))


# -- directives -------------------------------------------------------------------------------------
@router.get("/ui/directives", response_class=HTMLResponse)
async def ui_directives(request: Request, d: Dashboard = Dash) -> Response:
    mpm, values, _ = current_config(d.sampler)
    return _render(d, request, "fragments/_directives.html", mpm=mpm, rows=directive_rows(mpm, values))


def _changed(mpm: str, values: dict[str, Any], parsed: dict[str, Any], form: dict[str, str]) -> dict[str, str]:
    """The form's fields whose value differs from the running configuration. The form shows every
    directive of the MPM; one of another MPM can only come from a form older than a switch."""
    return {name: form[name].strip() for name, v in parsed.items()
            if DIRECTIVES[name].applies_to(mpm) and v != values.get(name, DIRECTIVES[name].defaults[mpm])}


def _applied_text(settings: dict[str, str], values: dict[str, Any]) -> str:
    """What was applied, with the value that runs: "MaxRequestWorkers=200 (asked 210)" when Apache's
    rules adjusted it (the warning says why)."""
    out = []
    for name, asked in settings.items():
        adjusted = name in values and DIRECTIVES[name].parse(asked) != values[name]
        out.append(f"{name}={num_text(values[name])} (asked {asked})" if adjusted else f"{name}={asked}")
    return ", ".join(out)


@router.post("/ui/directives", response_class=HTMLResponse, dependencies=[Control])
async def ui_apply_directives(request: Request, d: Dashboard = Dash) -> Response:
    form = await _form(request)
    hard = form.pop("restart", "graceful") == "hard"
    mpm, values, _ = current_config(d.sampler)
    # the adjustments of the running configuration: said when they were made, not again at every Apply
    before = set(((d.sampler.core_state or {}).get("config") or {}).get("warnings") or ())
    try:
        # every field checked at once, so that each bad one gets its error beside it
        settings = _changed(mpm, values, actions.validate_directives(form), form)
        if not settings and not hard:
            return _render(d, request, "fragments/_directives.html", mpm=mpm, rows=directive_rows(mpm, values),
                           message="nothing changed", level="info")
        change = await actions.apply_directives(d, settings, Restart.HARD if hard else Restart.GRACEFUL)
    except ActionError as e:
        errors = e.field_errors or ({e.directive: e.reason} if e.directive else {})
        n = len(e.field_errors)
        message = f"{n} invalid value{'s' if n > 1 else ''}: nothing applied" if n else e.message
        return _render(d, request, "fragments/_directives.html", _status(e), mpm=mpm,
                       rows=directive_rows(mpm, values, form, errors), message=message, level="error")
    mpm, values, _ = current_config(d.sampler)
    what = "hard restart" if hard else "graceful restart"
    return _render(d, request, "fragments/_directives.html", rows=directive_rows(mpm, values), mpm=mpm,
                   message=f"applied {_applied_text(settings, values) or 'the configuration'} "
                           f"by {what}: generation {change.generation}",
                   level="ok", warnings=[w for w in change.warnings if w not in before])


@router.post("/ui/httpd-conf", response_class=HTMLResponse, dependencies=[Control])
async def ui_httpd_conf(request: Request, d: Dashboard = Dash) -> Response:
    text = (await _form(request)).get("text", "")
    try:
        result = await actions.apply_httpd_conf(d, text)
    except ActionError as e:
        return _render(d, request, "fragments/_httpd_conf.html", _status(e), text=text, level="error",
                       message=e.message, errors=e.errors if len(e.errors) > 1 else ())
    mpm, values, _ = current_config(d.sampler)
    return _render(d, request, "fragments/_httpd_conf.html", text=text, level="ok",
                   message=f"applied {len(result.settings)} directive(s) for {mpm} by graceful restart: "
                           f"generation {result.generation}",
                   warnings=result.warnings, applied=result.settings, rows=directive_rows(mpm, values),
                   ignored=result.ignored, other_mpm_blocks=result.other_mpm_blocks, mpm=mpm, refresh_form=True)


@router.post("/ui/restart", response_class=HTMLResponse, dependencies=[Control])
async def ui_restart(request: Request, d: Dashboard = Dash) -> Response:
    graceful = (await _form(request)).get("kind", "graceful") != "hard"
    try:
        change = await actions.restart(d, Restart.GRACEFUL if graceful else Restart.HARD)
        msg, level = f"{'graceful ' if graceful else ''}restart: generation {change.generation}", "ok"
    except ActionError as e:
        msg, level = e.message, "error"
        await d.sampler.refresh_core_state()
    return _render(d, request, "fragments/_flash.html", message=msg, level=level)


# -- traffic -----------------------------------------------------------------------------------------
@router.get("/ui/traffic/form", response_class=HTMLResponse)
async def ui_traffic_form(request: Request, pattern: str = "steady", d: Dashboard = Dash) -> Response:
    cat = pattern_catalogue()
    if pattern not in cat:
        pattern = "steady"
    return _render(d, request, "fragments/_traffic_form.html", pattern=cat[pattern], values={}, error=None,
                   sources=d.sources.sources)


def _number(text: str) -> int | float | str:
    """A number field's text as the number a JSON client would send, so that the generator checks
    (and words its refusal of) the same value either way; text that is no number is passed on as it is."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _pattern_form(form: dict[str, str], pattern: str) -> dict[str, Any]:
    specs = {p["name"]: p for p in pattern_catalogue()[pattern]["params"]}
    out: dict[str, Any] = {}
    for k, v in form.items():
        if k in specs and k not in HIDDEN_PARAMS:
            if specs[k]["type"] == "bool":
                out[k] = v in ("on", "true", "1")
            elif v.strip() != "":
                out[k] = _number(v.strip()) if specs[k]["type"] in ("int", "float") else v.strip()
    for k, s in specs.items():  # unchecked checkboxes are not sent
        if s["type"] == "bool" and k not in form and f"{k}__present" in form:
            out[k] = False
    return out


async def _traffic_panel(request: Request, d: Dashboard, status_code: int = 200,
                         stopping: tuple[str, ...] = (), **ctx: Any) -> HTMLResponse:
    if stopping:
        # the runner answers nothing else until its stop is done: the last frame's list it is
        running = list(d.traffic.patterns)
    else:
        try:
            running = [p for p in await d.traffic.list() if p.running]
        except TrafficError:
            running = []
    return _render(d, request, "fragments/_traffic_running.html", status_code, running=running, recent=d.traffic.recent(),
                   catalogue=pattern_catalogue(), target_names=d.target_names(), stopping=stopping, **ctx)


async def _traffic_refused(request: Request, d: Dashboard, e: ActionError) -> HTMLResponse:
    return await _traffic_panel(request, d, _status(e), message=e.message, level="error")


@router.post("/ui/traffic/start", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_start(request: Request, d: Dashboard = Dash) -> Response:
    form = await _form(request)
    pattern = form.pop("pattern", "")
    if pattern not in pattern_catalogue():
        return await _traffic_panel(request, d, 422, message=f"unknown pattern {pattern!r}", level="error")
    source = form.pop("source", None)
    try:
        started = await actions.start_traffic(d, pattern, _pattern_form(form, pattern), source)
    except ActionError as e:
        return await _traffic_refused(request, d, e)
    return await _traffic_panel(request, d, message=f"started {started.id} → {started.source}", level="ok")


@router.post("/ui/traffic/preset/{name}", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_preset(request: Request, name: str, d: Dashboard = Dash) -> Response:
    source = (await _form(request)).get("source") or None
    try:
        started = await actions.start_preset(d, name, source)
    except ActionError as e:
        return await _traffic_refused(request, d, e)
    return await _traffic_panel(request, d, message=f"started {started.id} → {started.source}: "
                                                    f"{PRESETS[name].teaches}", level="ok")


@router.post("/ui/traffic/{pattern_id}/update", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_update(request: Request, pattern_id: str, d: Dashboard = Dash) -> Response:
    form = await _form(request)
    try:
        pattern = (await actions.describe_pattern(d, pattern_id)).pattern
        # the re-tune form shows the live parameters only; the rest of the pattern form is not sent
        live = {p["name"] for p in pattern_catalogue()[pattern]["params"] if p["live"]}
        params = {k: v for k, v in _pattern_form(form, pattern).items() if k in live}
        await actions.retune_traffic(d, pattern_id, params)
    except ActionError as e:
        return await _traffic_refused(request, d, e)
    return await _traffic_panel(request, d, message=f"re-tuned {pattern_id}", level="ok")


@router.post("/ui/traffic/{pattern_id}/stop", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_stop(request: Request, pattern_id: str, d: Dashboard = Dash) -> Response:
    try:
        done, _ = await _within_budget(actions.stop_traffic(d, pattern_id))
    except ActionError as e:
        return await _traffic_refused(request, d, e)
    if not done:
        return await _traffic_panel(request, d, stopping=(pattern_id,), level="info",
                                    message=f"stopping {pattern_id}: its connections close in the background")
    return await _traffic_panel(request, d, message=f"stopped {pattern_id}", level="ok")


@router.post("/ui/traffic/stop-all", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_stop_all(request: Request, d: Dashboard = Dash) -> Response:
    ids = tuple(p.id for p in d.traffic.patterns)
    try:
        done, stopped = await _within_budget(actions.stop_all_traffic(d))
    except ActionError as e:
        return await _traffic_refused(request, d, e)
    if not done or stopped is None:
        return await _traffic_panel(request, d, stopping=ids, level="info",
                                    message=f"stopping {len(ids)} pattern(s): their connections close in the "
                                            "background; the list and the grid follow")
    return await _traffic_panel(request, d, message=f"stopped {len(stopped.stopped)} pattern(s)", level="ok")


# -- Locust masters (attach locust+URL), beside our own patterns -------------------------------------
@router.get("/ui/locust", response_class=HTMLResponse)
async def ui_locust(request: Request, d: Dashboard = Dash) -> Response:
    return _render(d, request, "fragments/_locust.html", masters=d.locust.masters, stats=d.locust.stats())
