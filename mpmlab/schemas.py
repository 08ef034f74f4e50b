"""The JSON API's response schemas for its GET routes. The figures are the typed model's own
dataclasses (``mpmcore.model``: FastAPI serves them as they are); what is here wraps them, and
types the few answers that are not about a server (the traffic catalogue, the directives, the
dashboard's own cost), so /openapi.json documents every read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mpmcore.experiments.plan import MAX_ROUNDS, MAX_SLOTS
from mpmcore.model import (
    ChartPoint,
    Insight,
    ProcessRow,
    ProcSum,
    StateCounts,
    Summary,
    Tile,
)
from mpmlab.services.actions import PatternInfo
from mpmlab.services.sources import SourceEntry


class CoreInfo(BaseModel):
    """The master's own ``status`` answer, as far as the API passes it on (None before the first)."""

    pid: int | None = None
    listen: str | None = None
    mpm: str | None = None
    generation: int | None = None
    config: dict[str, Any] | None = None
    capacity: dict[str, Any] | None = None


class DashboardPids(BaseModel):
    core: int | None
    traffic_runner: int | None


class StatusResponse(BaseModel):
    core: CoreInfo
    dashboard_pids: DashboardPids
    insight: Insight | None
    tiles: list[Tile] = Field(description="the page's tiles, each figure with its note")
    summary: Summary


class ScoreboardResponse(BaseModel):
    mpm: str
    generation: int | None
    scoreboard: str | None
    state_counts: StateCounts | None
    busy: int | None
    idle: int | None
    graceful: int | None
    max_request_workers: int | None
    threads_per_child: int | None


class ProcessesResponse(BaseModel):
    processes: list[ProcessRow]
    sum: ProcSum
    fcgi: list[ProcessRow]


class HistoryResponse(BaseModel):
    interval: float
    points: list[ChartPoint]


class LogResponse(BaseModel):
    path: str
    lines: list[str]


class DashboardStats(BaseModel):
    """What the dashboard itself costs: the sampler's CPU share, hubs, attached pollers."""

    sampler: dict[str, Any]
    grid_hz: float
    summary_hz: float
    core_pid: int | None
    traffic_runner_pid: int | None
    core_listen: str
    attached: dict[str, Any]


class SourcesResponse(BaseModel):
    interval: float
    allow_remote_attach: bool
    sources: list[SourceEntry]


class MpmResponse(BaseModel):
    mpm: str | None
    generation: int | None
    available: list[str]


class DirectivesResponse(BaseModel):
    mpm: str
    running: bool
    directives: list[dict[str, Any]] = Field(description="name, default, range, help and the current value")
    explicit: dict[str, Any]


class PresetInfo(BaseModel):
    title: str
    pattern: str
    params: dict[str, Any]
    teaches: str


class TrafficTargetInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    label: str
    url: str | None
    ok: bool
    why: str | None


class TrafficRun(PatternInfo):
    source: str | None = Field(None, description="the source the pattern is aimed at (None: elsewhere)")


class TrafficListResponse(BaseModel):
    target: str | None
    targets: list[TrafficTargetInfo]
    patterns: list[TrafficRun]


# -- experiments (mpmlab/routes/experiments.py) --------------------------------------------------------
class TargetChoice(BaseModel):
    """One target an experiment can run against, as the page's checkbox shows it."""

    name: str = Field(description="core:event, apache:worker, nginx, lighttpd, attach:URL")
    planned: bool = Field(description="the plan lists it (checked by default)")
    available: bool
    why: str | None = Field(None, description="why it cannot run here (e.g. its package is missing)")


class PlanInfo(BaseModel):
    name: str
    title: str
    description: str
    origin: str = Field(description="'built-in', or the user's plan file")
    claim: str | None
    duration: float = Field(description="seconds of traffic per target per round (warm-up included)")
    rounds: int
    slots: int
    stages: list[str] = Field(description="each stage: its name, duration and pattern mix, in words")
    targets: list[TargetChoice]


class PlanProblem(BaseModel):
    """A user plan file that could not be read: its path and the one-line error."""

    path: str
    error: str


class RunStateModel(BaseModel):
    """The background experiment: whether one runs, its last progress, how the last one ended."""

    running: bool
    plans: list[str]
    plan_index: int
    progress: dict[str, Any] | None = Field(None, description="mpmcore.experiments.model.Progress")
    run_ids: list[int]
    status: str = Field(description="idle | running | stopping | complete | stopped | failed")
    message: str
    started_at: float | None
    ended_at: float | None


class ExperimentsResponse(BaseModel):
    store: str = Field(description="the run store's file")
    store_error: str | None
    plans_dir: str = Field(description="where the user's own plan files (*.toml) are read from")
    plans: list[PlanInfo]
    problems: list[PlanProblem]
    state: RunStateModel


class RunBody(BaseModel):
    targets: list[str] | None = Field(None, description="target names (default: the plan's)")
    rounds: int | None = Field(None, ge=1, le=MAX_ROUNDS)
    slots: int | None = Field(None, ge=1, le=MAX_SLOTS, description="the capacity budget's request slots")


class RecordState(BaseModel):
    recording: bool
    run_id: int | None
    seconds: float | None
    frames: int
    samples: int
    last_run_id: int | None = Field(None, description="the recording stopped last (replay it)")
