"""The page and its htmx fragments. Each fragment route does what an /api route does and answers
with HTML; errors come back as the same fragment with the error beside the field (HTTP 422, which
the page's htmx configuration swaps in)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.main import Dashboard
from app.routes.api import Control, Dash
from app.routes.views import changed_settings, current_config, directive_rows
from app.security import TOKEN_COOKIE, given_token
from app.services.core import ControlError, CoreError
from app.services.traffic import HIDDEN_PARAMS, PRESETS, pattern_catalogue
from app.settings import LOG_BACKLOG
from mpmcore.directives import MPMS, DirectiveError, parse_httpd_conf
from mpmcore.traffic import TrafficError

router = APIRouter(include_in_schema=False)


def _render(d: Dashboard, request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    return d.templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _core_links(d: Dashboard) -> dict[str, str]:
    base = f"http://{d.settings.core_listen}"
    return {"html": f"{base}/server-status", "auto": f"{base}/server-status?auto",
            "proxy_html": "/api/core/server-status", "proxy_auto": "/api/core/server-status?auto"}


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, d: Dashboard = Dash) -> Response:
    token = request.query_params.get("token")
    if token is not None and d.settings.token_ok(token):
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp
    st = (d.sampler.core_state or await d.sampler.refresh_core_state() or {}) if d.settings.watch_core else {}
    mpm, values, _ = current_config(d.sampler)
    return _render(d, request, "index.html", mpm=mpm, core=st, links=_core_links(d),
                   rows=directive_rows(mpm, values), catalogue=pattern_catalogue(), presets=PRESETS,
                   running=d.traffic.patterns, traffic_error=d.traffic.error,
                   sources=d.sources.sources, targets=d.traffic_targets(), target_names=d.target_names(),
                   log_lines=list(d.sampler.log_lines)[-LOG_BACKLOG:], live=d.sampler.live_context(),
                   settings=d.settings, needs_token=d.settings.token is not None and
                   not d.settings.token_ok(given_token(request)))


# -- MPM ------------------------------------------------------------------------------------------
@router.post("/ui/mpm", response_class=HTMLResponse, dependencies=[Control])
async def ui_switch(request: Request, d: Dashboard = Dash) -> Response:
    form = await request.form()
    mpm = str(form.get("mpm", ""))
    message, level = "", "ok"
    if mpm not in MPMS:
        message, level = f"unknown MPM {mpm!r}", "error"
    else:
        try:
            answer = await d.control.switch(mpm)
            message = f"generation {answer['generation']}: switching to {mpm} by graceful restart"
        except (ControlError, CoreError) as e:
            message, level = str(e), "error"
    st = await d.sampler.refresh_core_state() or {}
    cur, values, _ = current_config(d.sampler)
    return _render(d, request, "fragments/_switch_result.html", mpm=cur, core=st, message=message, level=level,
                   rows=directive_rows(cur, values))


# -- directives -------------------------------------------------------------------------------------
@router.get("/ui/directives", response_class=HTMLResponse)
async def ui_directives(request: Request, d: Dashboard = Dash) -> Response:
    mpm, values, _ = current_config(d.sampler)
    return _render(d, request, "fragments/_directives.html", mpm=mpm, rows=directive_rows(mpm, values))


@router.post("/ui/directives", response_class=HTMLResponse, dependencies=[Control])
async def ui_apply_directives(request: Request, d: Dashboard = Dash) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    hard = form.pop("restart", "graceful") == "hard"
    mpm, values, _ = current_config(d.sampler)
    settings, errors = changed_settings(mpm, values, form)
    ctx: dict[str, Any] = {"mpm": mpm}
    if errors:
        return _render(d, request, "fragments/_directives.html", 422, rows=directive_rows(mpm, values, form, errors),
                       message=f"{len(errors)} invalid value{'s' if len(errors) > 1 else ''}: nothing applied",
                       level="error", **ctx)
    if not settings and not hard:
        return _render(d, request, "fragments/_directives.html", rows=directive_rows(mpm, values),
                       message="nothing changed", level="info", **ctx)
    try:
        answer = await (d.control.restart(settings) if hard else d.control.graceful(settings))
    except ControlError as e:
        errs = {e.directive: e.message.split(": ", 1)[-1]} if e.directive else {}
        return _render(d, request, "fragments/_directives.html", 422, rows=directive_rows(mpm, values, form, errs),
                       message=e.message, level="error", **ctx)
    except CoreError as e:
        return _render(d, request, "fragments/_directives.html", 503, rows=directive_rows(mpm, values, form),
                       message=str(e), level="error", **ctx)
    await d.sampler.refresh_core_state()
    mpm, values, _ = current_config(d.sampler)
    what = "hard restart" if hard else "graceful restart"
    return _render(d, request, "fragments/_directives.html", rows=directive_rows(mpm, values), mpm=mpm,
                   message=f"applied {', '.join(f'{k}={v}' for k, v in settings.items()) or 'the configuration'} "
                           f"by {what}: generation {answer.get('generation')}",
                   level="ok", warnings=answer.get("warnings", []))


@router.post("/ui/httpd-conf", response_class=HTMLResponse, dependencies=[Control])
async def ui_httpd_conf(request: Request, d: Dashboard = Dash) -> Response:
    form = await request.form()
    text = str(form.get("text", ""))
    mpm = current_config(d.sampler)[0]
    try:
        settings = parse_httpd_conf(text, mpm)
        if not settings:
            raise DirectiveError("httpd.conf", f"no directive for the {mpm} MPM in this text")
        answer = await d.control.graceful(settings)
    except DirectiveError as e:
        return _render(d, request, "fragments/_httpd_conf.html", 422, text=text, level="error",
                       message=str(e), directive=e.directive)
    except ControlError as e:
        return _render(d, request, "fragments/_httpd_conf.html", 422, text=text, level="error",
                       message=e.message, directive=e.directive)
    except CoreError as e:
        return _render(d, request, "fragments/_httpd_conf.html", 503, text=text, level="error", message=str(e))
    await d.sampler.refresh_core_state()
    mpm, values, _ = current_config(d.sampler)
    return _render(d, request, "fragments/_httpd_conf.html", text=text, level="ok",
                   message=f"applied {len(settings)} directive(s) for {mpm} by graceful restart: "
                           f"generation {answer.get('generation')}",
                   warnings=answer.get("warnings", []), settings=settings, rows=directive_rows(mpm, values),
                   mpm=mpm, refresh_form=True)


@router.post("/ui/restart", response_class=HTMLResponse, dependencies=[Control])
async def ui_restart(request: Request, d: Dashboard = Dash) -> Response:
    form = await request.form()
    graceful = form.get("kind", "graceful") != "hard"
    try:
        answer = await (d.control.graceful() if graceful else d.control.restart())
        msg, level = f"{'graceful ' if graceful else ''}restart: generation {answer.get('generation')}", "ok"
    except (ControlError, CoreError) as e:
        msg, level = str(e), "error"
    await d.sampler.refresh_core_state()
    return _render(d, request, "fragments/_flash.html", message=msg, level=level)


# -- traffic -----------------------------------------------------------------------------------------
@router.get("/ui/traffic/form", response_class=HTMLResponse)
async def ui_traffic_form(request: Request, pattern: str = "steady", d: Dashboard = Dash) -> Response:
    cat = pattern_catalogue()
    if pattern not in cat:
        pattern = "steady"
    return _render(d, request, "fragments/_traffic_form.html", pattern=cat[pattern], values={}, error=None)


def _pattern_form(form: dict[str, str], pattern: str) -> dict[str, Any]:
    specs = {p["name"]: p for p in pattern_catalogue()[pattern]["params"]}
    out: dict[str, Any] = {}
    for k, v in form.items():
        if k in specs and k not in HIDDEN_PARAMS:
            if specs[k]["type"] == "bool":
                out[k] = v in ("on", "true", "1")
            elif v.strip() != "":
                out[k] = v.strip()
    for k, s in specs.items():  # unchecked checkboxes are not sent
        if s["type"] == "bool" and k not in form and f"{k}__present" in form:
            out[k] = False
    return out


async def _traffic_panel(request: Request, d: Dashboard, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    try:
        running = [p for p in await d.traffic.list() if p.running]
    except TrafficError:
        running = []
    return _render(d, request, "fragments/_traffic_running.html", status_code, running=running,
                   catalogue=pattern_catalogue(), target_names=d.target_names(), **ctx)


@router.post("/ui/traffic/start", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_start(request: Request, d: Dashboard = Dash) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    pattern = form.pop("pattern", "")
    cat = pattern_catalogue()
    if pattern not in cat:
        return await _traffic_panel(request, d, 422, message=f"unknown pattern {pattern!r}", level="error")
    source = form.pop("source", None)
    params = _pattern_form(form, pattern)
    try:
        src, url = d.traffic_target(source)
        pid = await d.traffic.start_pattern(pattern, params, target=url)
    except (ValueError, KeyError, TrafficError) as e:
        return await _traffic_panel(request, d, 422, message=str(e).strip("'\""), level="error")
    return await _traffic_panel(request, d, message=f"started {pid} → {src}", level="ok")


@router.post("/ui/traffic/preset/{name}", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_preset(request: Request, name: str, d: Dashboard = Dash) -> Response:
    form = await request.form()
    try:
        src, url = d.traffic_target(str(form.get("source") or "") or None)
        pid = await d.traffic.start_preset(name, target=url)
    except (ValueError, KeyError, TrafficError) as e:
        return await _traffic_panel(request, d, 422, message=str(e).strip("'\""), level="error")
    return await _traffic_panel(request, d, message=f"started {pid} → {src}: {PRESETS[name].teaches}", level="ok")


@router.post("/ui/traffic/{pattern_id}/update", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_update(request: Request, pattern_id: str, d: Dashboard = Dash) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        info = await d.traffic.get(pattern_id)
        live = {p["name"] for p in pattern_catalogue()[info.pattern]["params"] if p["live"]}
        params = {k: v for k, v in _pattern_form(form, info.pattern).items() if k in live}
        await d.traffic.update(pattern_id, params)
    except (ValueError, KeyError, TrafficError) as e:
        return await _traffic_panel(request, d, 422, message=str(e).strip("'\""), level="error")
    return await _traffic_panel(request, d, message=f"re-tuned {pattern_id}", level="ok")


@router.post("/ui/traffic/{pattern_id}/stop", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_stop(request: Request, pattern_id: str, d: Dashboard = Dash) -> Response:
    try:
        await d.traffic.stop(pattern_id)
    except (ValueError, KeyError, TrafficError) as e:
        return await _traffic_panel(request, d, 422, message=str(e).strip("'\""), level="error")
    return await _traffic_panel(request, d, message=f"stopped {pattern_id}", level="ok")


@router.post("/ui/traffic/stop-all", response_class=HTMLResponse, dependencies=[Control])
async def ui_traffic_stop_all(request: Request, d: Dashboard = Dash) -> Response:
    try:
        stopped = await d.traffic.stop_all()
    except TrafficError as e:
        return await _traffic_panel(request, d, 503, message=str(e), level="error")
    return await _traffic_panel(request, d, message=f"stopped {len(stopped)} pattern(s)", level="ok")
