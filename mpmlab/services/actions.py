"""One implementation per user action.

The JSON API (``mpmlab.routes.api``) and the page's htmx routes (``mpmlab.routes.ui``) both call these, so
the two cannot drift apart: the API serialises the result, the page renders it. Each action takes the
``Dashboard`` and typed arguments and returns a typed result, or raises ``ActionError`` (an HTTP status,
a message, and for a refused directive its name). Directives are validated here and only here, with
``mpmcore.directives`` (the master checks them again when it resolves its configuration).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from mpmcore.directives import DIRECTIVES, MPMS, DirectiveError, canonical
from mpmcore.httpdconf import ConfLine, read_httpd_conf
from mpmcore.traffic import TrafficError
from mpmlab.dashboard import Dashboard
from mpmlab.services.core import ControlError, CoreError
from mpmlab.services.traffic import PRESETS
from mpmlab.settings import CORE_SOURCE

#: A directive's value as the master reports it (Apache's On/Off are booleans).
DirectiveValue = bool | int | float | str
#: A directive's value as a client may send it (the page sends text; JSON clients may send numbers).
DirectiveInput = str | int | float | bool


class Restart(enum.StrEnum):
    """Apache's two restarts: graceful (USR1, children finish their requests) and hard (HUP)."""

    GRACEFUL = "graceful"
    HARD = "hard"


class ActionError(Exception):
    """An action refused or failed. ``status`` is the HTTP status the API answers with; ``directive``
    names the directive at fault; ``field_errors`` has every refused directive when several were
    checked at once (the page shows each beside its field)."""

    def __init__(self, status: int, message: str, directive: str | None = None,
                 field_errors: Mapping[str, str] | None = None, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.directive = directive
        self.field_errors: dict[str, str] = dict(field_errors or {})
        #: every error when a text had several (an httpd.conf: "line 4: MaxRequestWorkers: missing value")
        self.errors = errors

    @property
    def reason(self) -> str:
        """The message without the directive's name in front (for a page that shows the name apart)."""
        prefix = f"{self.directive}: "
        return self.message[len(prefix):] if self.directive and self.message.startswith(prefix) else self.message


# -- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    """The configuration the master resolved: every directive of its MPM after Apache's adjustments,
    the adjustments' warnings, and what was set explicitly."""

    mpm: str
    directives: dict[str, DirectiveValue]
    warnings: list[str]
    explicit: dict[str, DirectiveValue]

    @classmethod
    def from_answer(cls, cfg: Mapping[str, Any]) -> ServerConfig:
        return cls(str(cfg["mpm"]), dict(cfg["directives"]), list(cfg["warnings"]), dict(cfg["explicit"]))


@dataclass(frozen=True, kw_only=True)
class Change:
    """A restart into a new generation (MPM switch, directives applied, graceful or hard restart)."""

    ok: bool = True
    generation: int
    mpm: str
    warnings: list[str]
    config: ServerConfig


@dataclass(frozen=True, kw_only=True)
class Check:
    """Directives validated and resolved for an MPM, nothing applied."""

    ok: bool = True
    mpm: str
    warnings: list[str]
    config: ServerConfig


@dataclass(frozen=True, kw_only=True)
class ConfApplied:
    """An httpd.conf excerpt applied: the change, and the directives taken from the text."""

    ok: bool = True
    generation: int
    mpm: str
    warnings: list[str]
    config: ServerConfig
    applied: bool = True
    settings: dict[str, str]
    ignored: list[ConfLine]
    other_mpm_blocks: list[ConfLine]


@dataclass(frozen=True, kw_only=True)
class ConfChecked:
    """An httpd.conf excerpt parsed and checked, nothing applied."""

    ok: bool = True
    applied: bool = False
    settings: dict[str, str]
    warnings: list[str]
    ignored: list[ConfLine]
    other_mpm_blocks: list[ConfLine]


@dataclass(frozen=True)
class TrafficStarted:
    id: str
    pattern: str
    source: str
    target: str


@dataclass(frozen=True)
class PresetStarted:
    id: str
    preset: str
    pattern: str
    source: str
    target: str


@dataclass(frozen=True)
class TrafficStopped:
    stopped: list[str]


class PatternInfo(BaseModel):
    """A traffic pattern as the runner describes it (``mpmcore.traffic.engine.PatternRun.describe``);
    a stopped one also has its cumulative ``total``. Other fields the runner adds are passed on."""

    model_config = ConfigDict(extra="allow")

    id: str
    pattern: str
    label: str | None
    state: str
    stop_reason: str | None
    error: str | None
    target: str
    address: str
    started_at: float
    elapsed: float
    params: dict[str, Any]
    active_connections: int
    peak_connections: int
    total: dict[str, Any] | None = None


# -- errors -------------------------------------------------------------------------------------------
@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """The services' exceptions as one ActionError each, with the status the API has always used."""
    try:
        yield
    except DirectiveError as e:
        raise ActionError(422, str(e), e.directive) from None
    except ControlError as e:
        raise ActionError(422 if e.directive else 409, e.message, e.directive) from None
    except (CoreError, TrafficError) as e:
        raise ActionError(503, str(e)) from None
    except KeyError as e:
        raise ActionError(404, str(e.args[0]) if e.args else "no such pattern") from None
    except ValueError as e:
        raise ActionError(422, str(e)) from None


def _as_text(v: DirectiveInput) -> str:
    return "On" if v is True else "Off" if v is False else str(v)


def validate_directives(settings: Mapping[str, DirectiveInput]) -> dict[str, Any]:
    """Every name a known directive (Apache 2.2 aliases accepted), every value one it takes: the parsed
    values by canonical name. ActionError (422) names the first refused directive and lists them all."""
    parsed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    first: DirectiveError | None = None
    for raw_name, raw in settings.items():
        try:
            name = canonical(raw_name)
            parsed[name] = DIRECTIVES[name].parse(raw)
        except DirectiveError as e:
            errors[e.directive] = e.message
            first = first or e
    if first is not None:
        raise ActionError(422, str(first), first.directive, errors)
    return parsed


def _settings(settings: Mapping[str, DirectiveInput]) -> dict[str, str]:
    validate_directives(settings)
    return {k: _as_text(v) for k, v in settings.items()}


def running_mpm(d: Dashboard) -> str:
    """The MPM of the master's last status (event before the first one)."""
    st = d.sampler.core_state or {}
    cfg = st.get("config") or {}
    return str(cfg.get("mpm") or st.get("mpm") or "event")


async def _changed(d: Dashboard, answer: Mapping[str, Any]) -> Change:
    await d.sampler.refresh_core_state()
    return Change(generation=int(answer["generation"]), mpm=str(answer["mpm"]),
                  warnings=list(answer.get("warnings", [])), config=ServerConfig.from_answer(answer["config"]))


async def _restart(d: Dashboard, restart: Restart, settings: dict[str, str] | None) -> dict[str, Any]:
    if restart is Restart.HARD:
        return await d.control.restart(settings)
    return await d.control.graceful(settings)


# -- MPM and directives --------------------------------------------------------------------------------
async def switch_mpm(d: Dashboard, mpm: str, settings: Mapping[str, DirectiveInput] | None = None) -> Change:
    """Switch the running MPM by graceful restart into a new generation (with ``settings`` set)."""
    if mpm not in MPMS:
        raise ActionError(422, f"unknown MPM {mpm!r}; one of {', '.join(MPMS)}", "MPM")
    async with _translated():
        return await _changed(d, await d.control.switch(mpm, _settings(settings or {}) or None))


async def apply_directives(d: Dashboard, settings: Mapping[str, DirectiveInput],
                           restart: Restart = Restart.GRACEFUL) -> Change:
    """Set directives of the running MPM by graceful (or hard) restart; with none, just restart."""
    async with _translated():
        return await _changed(d, await _restart(d, restart, _settings(settings)))


async def check_directives(d: Dashboard, settings: Mapping[str, DirectiveInput], mpm: str | None = None) -> Check:
    """Validate and resolve directives for ``mpm`` (default: the running one) without applying them;
    Apache's adjustments come back as warnings."""
    mpm = mpm or running_mpm(d)
    async with _translated():
        answer = await d.control.check(mpm, _settings(settings))
    return Check(mpm=mpm, warnings=list(answer.get("warnings", [])), config=ServerConfig.from_answer(answer["config"]))


def _conf_settings(text: str, mpm: str) -> tuple[dict[str, str], list[ConfLine], list[ConfLine]]:
    """What of an httpd.conf (a whole one, or a part) mpmcore applies for ``mpm``, with the lines it
    ignores and the other MPMs' blocks (mpmcore.httpdconf). Every error is reported at once; with
    any, nothing is applied. A text with no directive to apply is refused too: applying it would
    restart the server with nothing changed, which is never what someone who pasted it meant."""
    conf = read_httpd_conf(text, mpm)
    if conf.errors:
        errors = tuple(str(e) for e in conf.errors)
        first = conf.errors[0]
        if len(errors) == 1:
            raise ActionError(422, errors[0], first.directive or "httpd.conf", errors=errors)
        raise ActionError(422, f"{len(errors)} errors in the text: nothing applied", "httpd.conf", errors=errors)
    if not conf.settings:
        n = len(conf.ignored) + len(conf.other_mpm_blocks)
        raise ActionError(422, f"no directive for the {mpm} MPM in this text ({n} line{'s' if n != 1 else ''} "
                               "ignored); nothing applied", "httpd.conf")
    validate_directives(conf.settings)
    return conf.settings, list(conf.ignored), list(conf.other_mpm_blocks)


async def apply_httpd_conf(d: Dashboard, text: str, restart: Restart = Restart.GRACEFUL) -> ConfApplied:
    """Apply the running MPM's part of an httpd.conf by graceful (or hard) restart."""
    mpm = running_mpm(d)
    async with _translated():
        settings, ignored, others = _conf_settings(text, mpm)
        change = await _changed(d, await _restart(d, restart, settings))
    return ConfApplied(generation=change.generation, mpm=change.mpm, warnings=change.warnings, config=change.config,
                       settings=settings, ignored=ignored, other_mpm_blocks=others)


async def check_httpd_conf(d: Dashboard, text: str) -> ConfChecked:
    """Parse and check the running MPM's part of an httpd.conf, nothing applied."""
    mpm = running_mpm(d)
    async with _translated():
        settings, ignored, others = _conf_settings(text, mpm)
        answer = await d.control.check(mpm, settings)
    return ConfChecked(settings=settings, warnings=list(answer.get("warnings", [])), ignored=ignored,
                       other_mpm_blocks=others)


async def restart(d: Dashboard, kind: Restart = Restart.GRACEFUL) -> Change:
    """A graceful (USR1) or hard (HUP) restart, configuration unchanged."""
    async with _translated():
        return await _changed(d, await _restart(d, kind, None))


# -- traffic ----------------------------------------------------------------------------------------------
def traffic_target(d: Dashboard, source: str | None) -> tuple[str, str]:
    """(source name, base URL) for traffic aimed at ``source`` (None: the embedded core, or the only
    attached server when there is no core). 404: no such source; 422: not a permitted target."""
    if source in (None, "") and not d.settings.watch_core and len(d.sources.sources) == 1:
        source = d.sources.sources[0].name
    if source in (None, "", CORE_SOURCE):
        if not d.settings.watch_core:
            raise ActionError(422, "source: there is no embedded core (--no-core); aim at an attached server")
        return CORE_SOURCE, d.settings.core_url
    src = d.sources.get(str(source))
    if src is None:
        raise ActionError(404, f"no source {source!r}; known: " + ", ".join(t.name for t in d.traffic_targets()))
    url = src.traffic_target()
    if url is None:
        raise ActionError(422, f"source {src.name}: {src.url} is not on loopback; the traffic generator only "
                               "sends to this machine (127.0.0.0/8, ::1), even when --allow-remote-attach "
                               "lets the dashboard watch a remote server")
    return src.name, url


async def start_traffic(d: Dashboard, pattern: str, params: Mapping[str, Any],
                        source: str | None = None) -> TrafficStarted:
    """Start ``pattern`` against the embedded server or an attached server on loopback."""
    name, url = traffic_target(d, source)
    async with _translated():
        pid = await d.traffic.start_pattern(pattern, dict(params), target=url)
    return TrafficStarted(pid, pattern, name, url)


async def start_preset(d: Dashboard, preset: str, source: str | None = None) -> PresetStarted:
    """Start one of the ready-made patterns (mpmlab.services.traffic.PRESETS)."""
    name, url = traffic_target(d, source)
    async with _translated():
        pid = await d.traffic.start_preset(preset, target=url)
    return PresetStarted(pid, preset, PRESETS[preset].pattern, name, url)


async def describe_pattern(d: Dashboard, pattern_id: str) -> PatternInfo:
    async with _translated():
        return PatternInfo.model_validate((await d.traffic.get(pattern_id)).to_json())


async def retune_traffic(d: Dashboard, pattern_id: str, params: Mapping[str, Any]) -> PatternInfo:
    """Change live parameters of a running pattern (a parameter that is not live is refused, 422)."""
    async with _translated():
        return PatternInfo.model_validate((await d.traffic.update(pattern_id, dict(params))).to_json())


async def stop_traffic(d: Dashboard, pattern_id: str) -> PatternInfo:
    """Stop one pattern: its final description, with its cumulative figures."""
    async with _translated():
        return PatternInfo.model_validate((await d.traffic.stop(pattern_id)).to_json())


async def stop_all_traffic(d: Dashboard) -> TrafficStopped:
    async with _translated():
        return TrafficStopped([p.id for p in await d.traffic.stop_all()])
