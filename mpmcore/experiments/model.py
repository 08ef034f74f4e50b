"""The typed model of experiments: a plan, its targets, what a run records, what a comparison and a
claim's verdict say.

An experiment runs one traffic **plan** (stages of pattern mixes, warm-up, rounds, thresholds)
against several **targets** (the embedded core under each MPM, a real Apache under each MPM, nginx,
lighttpd, an attached server), one after another, each given the same **capacity budget** in its own
terms. Everything a target run records goes into the run store (``mpmcore.experiments.store``) and
comes back as these types; the report, the claims, the CLI and the dashboard read them, never dicts.

Producers: ``plan`` (TOML -> Plan), ``targets`` (TargetSpec -> a started server and its
EffectiveConfig), ``runner`` and ``recorder`` (the recorded types). Consumers: ``store``,
``report`` (Comparison, exports), ``claims`` (ClaimResult), ``app`` (the experiments pages).
docs/experiments.md describes the whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from mpmcore.model import StateCounts

__all__ = [
    "MPMS", "TARGET_KINDS", "Budget", "ClaimResult", "Comparison", "EffectiveConfig", "FrameRecord",
    "LogLine", "Mark", "PatternResult", "PatternSecond", "PatternUse", "Plan", "PlanError", "Progress",
    "RunKind", "RunMeta", "RunStatus", "SecondSample", "Stage", "StoredRun", "TargetFigures", "TargetKind",
    "TargetRun", "TargetSpec", "Verdict",
]

TargetKind: TypeAlias = Literal["core", "apache", "nginx", "lighttpd", "attach"]
TARGET_KINDS: tuple[TargetKind, ...] = ("core", "apache", "nginx", "lighttpd", "attach")
MPMS = ("prefork", "worker", "event")
RunKind: TypeAlias = Literal["experiment", "recording"]
#: A run or target run: "running" while it records; "incomplete" when the process that recorded it
#: died before it ended (found so at the next open of the store); "failed": the target would not
#: start or the run raised; "skipped": the target is not available here (its package is missing).
RunStatus: TypeAlias = Literal["running", "complete", "incomplete", "failed", "skipped", "stopped"]
Verdict: TypeAlias = Literal["holds", "holds partly", "does not hold here", "not comparable", "not run"]
MarkKind: TypeAlias = Literal["stage", "round", "switch", "restart", "warmup", "threshold", "note"]


class PlanError(ValueError):
    """A plan file that cannot be used: its message names the file, the key and what is wrong."""


# -- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PatternUse:
    """One pattern of a stage's mix: a traffic catalogue pattern and its parameters, checked by
    ``catalogue.validate_params`` except ``target`` and ``duration``, which the runner sets (the
    target's URL, the stage's duration). ``label`` names it in the figures (default: the pattern)."""

    pattern: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.pattern


@dataclass(frozen=True, slots=True)
class Stage:
    """Patterns that run together for ``duration`` seconds."""

    name: str
    duration: float
    mix: tuple[PatternUse, ...]


@dataclass(frozen=True, slots=True)
class Budget:
    """The capacity each target gets in its own terms (``targets.effective_config`` says how):
    ``slots`` request slots (prefork: MaxRequestWorkers; worker/event: ``processes`` x
    slots/processes threads; nginx/lighttpd: their worker counts and connection limits), the same
    keep-alive timeout and request-read timeout (Apache's RequestReadTimeout syntax)."""

    slots: int = 64
    processes: int = 2
    keepalive_timeout: float = 5.0
    max_keepalive_requests: int = 100
    request_read_timeout: str = "header=20-40,MinRate=500 body=20,MinRate=500"
    timeout: float = 60.0
    tls: bool = False  # serve https (targets that can); "tls_mode" options select pre-2.4.7 behaviour


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Where a plan's traffic goes: ``core:event``, ``apache:worker``, ``nginx``, ``lighttpd``,
    ``attach:http://127.0.0.1:8080/server-status``. ``options`` are per-target settings written
    ``core:event?tls_mode=pre-2.4.7`` (``targets.parse_target`` checks them)."""

    kind: TargetKind
    mpm: str | None = None
    url: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = self.kind if self.mpm is None else f"{self.kind}:{self.mpm}"
        if self.kind == "attach":
            base = f"attach:{self.url}"
        if self.options:
            base += "?" + "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return base


@dataclass(frozen=True, slots=True)
class Plan:
    """An experiment as its TOML file describes it (``plan.load_plan``). ``source`` is the TOML text,
    kept with every run so that a run can be repeated exactly."""

    name: str
    title: str
    description: str
    stages: tuple[Stage, ...]
    targets: tuple[TargetSpec, ...]
    budget: Budget = field(default_factory=Budget)
    warmup: float = 0.0
    rounds: int = 1
    thresholds: str = ""  # the ``--fail-on`` syntax of mpmlab traffic, checked per target
    claim: str | None = None  # the claim (claims.CLAIMS key) whose verdict rule reads this plan's runs
    server_directives: dict[str, str] = field(default_factory=dict)  # extra Apache/core directives
    source: str = ""
    path: str | None = None  # the file it came from; None for a built-in's packaged text

    @property
    def duration(self) -> float:
        """Seconds of traffic per target per round (warm-up included)."""
        return self.warmup + sum(s.duration for s in self.stages)


# -- what a target is, as started -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """A started target's configuration as it was applied: ``settings`` in the budget's terms
    (``{"MaxRequestWorkers": "64", "ThreadsPerChild": "32", ...}`` or nginx's names), the config
    file text it ran with, its version string, and what it cannot do of the plan (``not_comparable``:
    pattern label -> reason, e.g. "nginx has no CPU-heavy handler")."""

    target: str
    kind: TargetKind
    mpm: str | None
    version: str
    settings: dict[str, str]
    config_text: str = ""
    url: str = ""  # the base URL traffic went to
    status_url: str | None = None  # where the recorder read its scoreboard/connections
    not_comparable: dict[str, str] = field(default_factory=dict)


# -- what a run records ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PatternSecond:
    """One pattern's figures over one second of a target run."""

    rps: float
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    corrected_p99_ms: float | None = None
    connections: int = 0


@dataclass(frozen=True, slots=True)
class SecondSample:
    """A target run's state over one second. ``t``: seconds since the target run began. The
    scoreboard fields are None where the target cannot show them (nginx has no slots)."""

    t: float
    stage: str
    rps: float  # responses/s of every pattern
    errors: int
    states: StateCounts | None = None
    busy: int | None = None  # at the second's last read of the status page
    idle: int | None = None
    processes: int | None = None  # server processes (children; the master not counted)
    threads: int | None = None  # worker threads over every child (prefork: = processes)
    connections: int | None = None  # connections the server reports (ConnsTotal / nginx Active)
    parked: int | None = None  # kept-alive connections no worker holds (event's listener, nginx Waiting)
    pss_bytes: int | None = None  # PSS of the target's whole process tree
    rss_bytes: int | None = None
    cpu_seconds: float | None = None  # cumulative user+system CPU of the tree since the target started
    client_connections: int = 0  # the generator's open connections
    patterns: dict[str, PatternSecond] = field(default_factory=dict)
    #: the most slots busy at any of the second's reads (~10): event's short requests leave most
    #: single instants with none busy although slots are used all the time
    busy_max: int | None = None

    @property
    def peak_busy(self) -> int | None:
        """Busy slots over the second: ``busy_max`` where recorded (older runs: ``busy``)."""
        return self.busy_max if self.busy_max is not None else self.busy


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One scoreboard frame: ``grid`` is ``mpmcore.sources.grid.grid_frame``'s binary frame (the
    dashboard's scoreboard.js draws it as is), ``t`` seconds since the target run began."""

    t: float
    grid: bytes


@dataclass(frozen=True, slots=True)
class LogLine:
    t: float
    source: str  # "error_log", "stderr", "runner"
    text: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Something that happened at ``t``: a stage began, a round, an MPM switch or restart (recorded
    live sessions), a threshold failed."""

    t: float
    kind: MarkKind
    label: str


@dataclass(frozen=True, slots=True)
class PatternResult:
    """One pattern's whole figures in one target run. ``histograms``: HDR histograms as
    ``HdrHistogram.encode()`` gives them (base64 text), keyed "latency", "corrected", "ttfb",
    "connect" (those recorded). ``total`` is ``traffic.runstats.Figures.to_json()``'s dict shape."""

    label: str
    pattern: str
    stage: str
    params: dict[str, Any]
    total: dict[str, Any]
    histograms: dict[str, str] = field(default_factory=dict)
    comparable: bool = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class TargetRun:
    """One target in one round of a run: its configuration and its whole figures. The series
    (samples, frames, logs, marks) are read separately from the store (they are large)."""

    id: int
    run_id: int
    target: str
    round: int
    status: RunStatus
    started_at: float  # wall clock
    ended_at: float | None
    config: EffectiveConfig | None
    patterns: tuple[PatternResult, ...] = ()
    message: str = ""  # why it failed or was skipped
    thresholds_failed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunMeta:
    id: int
    kind: RunKind
    name: str  # the plan's name, or the recording's
    title: str
    status: RunStatus
    started_at: float
    ended_at: float | None
    plan_source: str  # the TOML text ("" for a live recording)
    targets: tuple[str, ...]
    host: dict[str, str] = field(default_factory=dict)  # mpmlab version, cpu count, Python, kernel
    notes: str = ""


@dataclass(frozen=True, slots=True)
class StoredRun:
    meta: RunMeta
    targets: tuple[TargetRun, ...]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running experiment is, for the page and stderr."""

    run_id: int
    target: str
    round: int
    rounds: int
    stage: str
    target_index: int  # 0-based among this round's targets
    targets: int
    elapsed: float  # seconds into this target's run
    target_seconds: float  # its planned length
    seconds_left: float  # for the whole experiment
    state: Literal["starting", "warmup", "running", "stopping", "done", "failed"] = "running"
    message: str = ""


# -- what a comparison and a claim say ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TargetFigures:
    """One target's row of a compare table: medians over rounds, with their spread (max - min)."""

    target: str
    rounds: int
    rps: float | None
    rps_spread: float | None
    p50_ms: float | None
    p99_ms: float | None
    p99_9_ms: float | None
    corrected_p50_ms: float | None
    corrected_p99_ms: float | None
    corrected_p99_9_ms: float | None
    errors: int
    error_rate: float | None
    errors_by_kind: dict[str, int]
    peak_busy: int | None
    peak_processes: int | None
    peak_threads: int | None
    peak_pss_bytes: int | None
    pss_per_connection_bytes: float | None
    cpu_seconds: float | None
    config: EffectiveConfig | None
    per_pattern: dict[str, dict[str, float | None]] = field(default_factory=dict)
    not_comparable: dict[str, str] = field(default_factory=dict)
    status: str = ""  # the target runs' status when they agree; "partly" when only some were measured
    message: str = ""  # why it was skipped or failed (the target runs' messages)


@dataclass(frozen=True, slots=True)
class Comparison:
    run_id: int
    name: str
    rows: tuple[TargetFigures, ...]


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """A claim of the essay, as measured: its verdict, the conditions it was measured under and
    the figures behind it, linked to the run it read."""

    claim: str  # claims.CLAIMS key, e.g. "worker-keepalive-holds-threads"
    number: int  # 1..9, the essay's order
    title: str
    verdict: Verdict
    why: str  # one or two sentences with the figures
    figures: dict[str, float | int | str | None]
    conditions: str
    run_id: int | None
